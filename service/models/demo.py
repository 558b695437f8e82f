"""Small demo models with RANDOM weights for the tasks that have no real offline model here.

Built locally in well under a second from a config (2 layers, hidden 32) and a tokenizer trained on a short
built-in text, then cached on disk. Their outputs are meaningless; they exist so every task, the energy
headers and the campaign driver work out of the box. ``/v1/models`` marks them ``demo: true``.
"""

from __future__ import annotations

import os
from pathlib import Path

CORPUS = """How much energy does one inference cost? Serving a model draws power on the GPU, the CPU and the
memory, even while it waits. A request for text classification is cheap; generating text or a summary costs far
more, because every new token runs the whole model again. Researchers measured one thousand inferences per task
and found that image generation used thousands of times more energy than classification. Carbon emissions follow
from the energy and from the grid that supplied it: a kilowatt hour in one country emits much more than in
another. The quick brown fox jumps over the lazy dog. Paris is the capital of France. Alice works at Hugging Face
in New York, and Bob lives in London. Questions need context; the answer is a span of the context."""

TASK_LABELS = {
    "text-classification": ["NEGATIVE", "POSITIVE"],
    "token-classification": ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"],
}


def demo_dir() -> Path:
    return Path(os.environ.get("WATTSERVE_DEMO_DIR", Path.home() / ".cache" / "wattserve" / "demo"))


def demo_model_path(task: str) -> str:
    """Folder of the demo model for ``task``, built on first use."""
    folder = demo_dir() / task
    if not (folder / "config.json").exists():
        build(task, folder)
    return str(folder)


def _wordpiece():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(CORPUS.split("\n"), trainers.WordPieceTrainer(vocab_size=400, special_tokens=specials))
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=512)


def _byte_bpe():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS.split("\n"), trainers.BpeTrainer(
        vocab_size=500, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>", pad_token="<|endoftext|>", model_max_length=512)


def _unigram():
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(CORPUS.split("\n"), trainers.UnigramTrainer(
        vocab_size=300, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>"))
    from tokenizers import processors

    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=512)


def build(task: str, folder: Path) -> Path:
    import torch
    from transformers import (
        BertConfig,
        BertForMaskedLM,
        BertForQuestionAnswering,
        BertForSequenceClassification,
        BertForTokenClassification,
        GPT2Config,
        GPT2LMHeadModel,
    )

    torch.manual_seed(0)  # the same random weights on every machine
    small = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    if task == "summarization":
        from transformers import T5Config, T5ForConditionalGeneration

        tokenizer = _unigram()
        model = T5ForConditionalGeneration(T5Config(
            vocab_size=len(tokenizer), d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
            pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    elif task == "text-generation":
        tokenizer = _byte_bpe()
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2,
                                           n_positions=512, bos_token_id=0, eos_token_id=0))
    else:
        tokenizer = _wordpiece()
        labels = TASK_LABELS.get(task, [])
        config = BertConfig(vocab_size=len(tokenizer), max_position_embeddings=512, **small,
                            **({"id2label": dict(enumerate(labels)), "label2id": {v: i for i, v in enumerate(labels)}}
                               if labels else {}))
        classes = {"text-classification": BertForSequenceClassification, "token-classification":
                   BertForTokenClassification, "fill-mask": BertForMaskedLM,
                   "question-answering": BertForQuestionAnswering}
        if task not in classes:
            raise ValueError(f"no demo model for task {task!r}")
        model = classes[task](config)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        os.replace(tmp, folder)  # atomic: a reader never sees half a model
    except OSError:  # another process built it first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return folder
