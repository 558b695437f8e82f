"""Task knowledge as data: for each task, its request schema and its runner (load, count work, infer).

A runner's ``prepare`` tokenizes and checks limits (no energy is metered for a rejected request); ``run`` does
the inference inside the metered window and returns the task-native response body and output token count.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, WithJsonSchema, model_validator

from service.problems import Invalid, TooLarge

if TYPE_CHECKING:
    from service.registry import ModelSpec

# one text or a non-empty list; a lone string is wrapped, so errors name "inputs" rather than a union branch
Text = Annotated[str, Field(min_length=1)]
Texts = Annotated[
    list[Text], BeforeValidator(lambda v: [v] if isinstance(v, str) else v), Field(min_length=1),
    WithJsonSchema({"anyOf": [{"type": "string", "minLength": 1},
                              {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1}]}),
]
MASKED = r"(\[MASK\]|<mask>)"
MaskedTexts = Annotated[
    list[Annotated[str, Field(pattern=MASKED)]], BeforeValidator(lambda v: [v] if isinstance(v, str) else v),
    Field(min_length=1),
    WithJsonSchema({"anyOf": [{"type": "string", "pattern": MASKED},
                              {"type": "array", "items": {"type": "string", "pattern": MASKED}, "minItems": 1}]}),
]


class _NotANumber:
    """Stands in for a value that is not a JSON number, so the field's own validation rejects it by name."""

    def __repr__(self) -> str:
        return "not a JSON number"


def _json_number(value: Any, integer: bool) -> Any:
    """JSON's numbers and nothing else: no "5" for 5, no true for 1; 20.0 is the integer 20 (as JSON Schema)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _NotANumber()
    if integer and isinstance(value, float):
        return int(value) if value.is_integer() else _NotANumber()
    return value


JsonInt = int  # the checks live in JsonModel: a wrapped type would hide its limits from the JSON Schema
JsonFloat = float
STRICT = ConfigDict(extra="forbid")


class JsonModel(BaseModel):
    """Numbers must be JSON numbers: no "5" for 5 and no true for 1; 20.0 is the integer 20 (as JSON Schema)."""

    @model_validator(mode="before")
    @classmethod
    def _json_numbers(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for name, info in cls.model_fields.items():
            value = data.get(name)
            kinds = set(getattr(info.annotation, "__args__", ())) | {info.annotation}
            if value is None or not kinds & {int, float} or str in kinds:
                continue
            data = {**data, name: _json_number(value, int in kinds and float not in kinds)}
        return data


class EmbeddingRequest(JsonModel):
    model_config = STRICT
    inputs: Texts = Field(description="a text or a non-empty list of texts")
    normalize: StrictBool = Field(True, description="L2-normalise the vectors")


class ClassificationRequest(JsonModel):
    model_config = STRICT
    inputs: Texts = Field(description="a text or a non-empty list of texts")
    top_k: JsonInt = Field(1, ge=1, le=100, description="labels per text")


class FillMaskRequest(JsonModel):
    model_config = STRICT
    inputs: MaskedTexts = Field(description="texts each holding the model's mask token: [MASK] or <mask>")
    top_k: JsonInt = Field(5, ge=1, le=100)


class TokenClassificationRequest(JsonModel):
    model_config = STRICT
    inputs: Texts = Field(description="a text or a non-empty list of texts")


class GenerationRequest(JsonModel):
    model_config = STRICT
    inputs: Texts = Field(description="a prompt or a non-empty list of prompts")
    max_new_tokens: JsonInt | None = Field(None, ge=1, description="default and maximum from the model registry")
    min_new_tokens: JsonInt | None = Field(None, ge=0, description="clamped to max_new_tokens")
    do_sample: StrictBool = False
    temperature: JsonFloat = Field(1.0, ge=0.01, le=10)
    top_p: JsonFloat = Field(1.0, ge=0.001, le=1)
    seed: JsonInt | None = Field(None, ge=0, le=2**32 - 1)


class QuestionContext(JsonModel):
    model_config = STRICT
    question: str = Field(min_length=1)
    context: str = Field(min_length=1)


class QuestionAnsweringRequest(JsonModel):
    model_config = STRICT
    inputs: Annotated[list[QuestionContext], BeforeValidator(lambda v: [v] if isinstance(v, dict) else v),
                      Field(min_length=1)] = Field(description="{question, context} or a non-empty list of them")
    max_answer_tokens: JsonInt = Field(30, ge=1, le=512)


@dataclass
class Prepared:
    texts: list[str]
    encoded: Any
    tokens_in: int
    options: BaseModel
    on_text: Callable[[str], None] | None = None  # streaming: called with each new piece of generated text


def resolve_source(spec: ModelSpec) -> str:
    """``package:<module>`` (a model shipped in a Python package), ``demo:<task>`` (a random-weight demo model
    built locally), a local folder, or a Hub id."""
    if spec.source.startswith("demo:"):
        from service.models.demo import demo_model_path

        return demo_model_path(spec.source.split(":", 1)[1])
    if spec.source.startswith("package:"):
        module = importlib.import_module(spec.source.split(":", 1)[1])
        return str(module.get_model_path())
    return spec.source


def torch_dtype(spec: ModelSpec):
    import torch

    return {"auto": "auto", "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[spec.dtype]


class Runner:
    """Loads a model and tokenizer; the subclasses know one task each."""

    def __init__(self, spec: ModelSpec, device: str) -> None:
        from transformers import AutoTokenizer

        self.spec, self.device = spec, device
        self.path = resolve_source(spec)
        common = {"revision": spec.revision, "trust_remote_code": spec.trust_remote_code}
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, **common)
        self.model = self._load_model(common)
        self.model.to(device).eval()
        self.parameters = sum(p.numel() for p in self.model.parameters())  # model size, for reports

    auto_class = "AutoModel"  # the transformers Auto class that loads this task's model

    def _load_model(self, common: dict):
        import transformers

        return getattr(transformers, self.auto_class).from_pretrained(self.path, dtype=torch_dtype(self.spec),
                                                                      **common)

    def _inputs(self, prepared: Prepared) -> dict:
        return {k: v.to(self.device) for k, v in prepared.encoded.items()}

    def _check_lengths(self, lengths: list[int]) -> None:
        """413 for an input over the model's token limit (unless the registry says to truncate)."""
        limit = self.spec.max_input_tokens
        if max(lengths) > limit and not self.spec.truncate:
            raise TooLarge(f"input {lengths.index(max(lengths))} has {max(lengths)} tokens; this model takes at "
                           f"most {limit}", field="inputs", limit=limit)

    def _check_batch(self, inputs: list) -> None:
        if len(inputs) > self.spec.max_batch:
            raise TooLarge(f"at most {self.spec.max_batch} inputs per request, got {len(inputs)}",
                           field="inputs", limit=self.spec.max_batch)

    def prepare(self, request: BaseModel) -> Prepared:
        texts = request.inputs
        self._check_batch(texts)
        limit = self.spec.max_input_tokens
        encoded = self.tokenizer(texts, padding=True, truncation=False, return_tensors="pt")  # one pass, usually
        lengths = encoded["attention_mask"].sum(1).tolist()
        self._check_lengths(lengths)
        if max(lengths) > limit:  # over the limit and allowed: truncate
            encoded = self.tokenizer(texts, padding=True, truncation=True, max_length=limit, return_tensors="pt")
        return Prepared(texts, encoded, int(encoded["attention_mask"].sum()), request)

    def run(self, prepared: Prepared) -> tuple[dict[str, Any], int]:
        raise NotImplementedError


class EmbeddingRunner(Runner):
    """Sentence embeddings: mean pooling over tokens, optionally L2-normalised (as sentence-transformers)."""

    auto_class = "AutoModel"

    def run(self, prepared: Prepared) -> tuple[dict[str, Any], int]:
        import torch

        enc = self._inputs(prepared)
        with torch.inference_mode():
            hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            vectors = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            if prepared.options.normalize:
                vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
        return {"embeddings": vectors.float().cpu().tolist(), "dimensions": int(vectors.shape[1])}, 0


class ClassificationRunner(Runner):
    auto_class = "AutoModelForSequenceClassification"

    def run(self, prepared: Prepared) -> tuple[dict[str, Any], int]:
        import torch

        enc = self._inputs(prepared)
        with torch.inference_mode():
            probs = self.model(**enc).logits.float().softmax(-1).cpu()
        k = min(prepared.options.top_k, probs.shape[1])
        labels = self.model.config.id2label
        top = probs.topk(k, dim=-1)
        results = [[{"label": labels[int(i)], "score": float(s)} for s, i in zip(sv, iv, strict=True)]
                   for sv, iv in zip(top.values, top.indices, strict=True)]
        return {"results": results}, 0


class FillMaskRunner(Runner):
    auto_class = "AutoModelForMaskedLM"

    def prepare(self, request: BaseModel) -> Prepared:
        mask = self.tokenizer.mask_token
        missing = [i for i, t in enumerate(request.inputs) if mask not in t]
        if missing:
            raise Invalid(f"input {missing[0]} has no mask token {mask}", field=f"inputs.{missing[0]}")
        return super().prepare(request)

    def run(self, prepared: Prepared) -> tuple[dict[str, Any], int]:
        import torch

        enc = self._inputs(prepared)
        with torch.inference_mode():
            probs = self.model(**enc).logits.float().softmax(-1).cpu()
        results = []
        for row, ids in enumerate(enc["input_ids"].cpu()):
            for pos in (ids == self.tokenizer.mask_token_id).nonzero().flatten().tolist():
                top = probs[row, pos].topk(min(prepared.options.top_k, probs.shape[-1]))
                results.append([{"token": int(i), "token_str": self.tokenizer.decode([int(i)]).strip(),
                                 "score": float(p)} for p, i in zip(top.values, top.indices, strict=True)])
        return {"results": results}, 0


class TokenClassificationRunner(Runner):
    """Per-word entities, aggregated like the transformers pipeline's "simple" strategy."""

    auto_class = "AutoModelForTokenClassification"

    def __init__(self, spec: ModelSpec, device: str) -> None:
        from transformers import pipeline

        super().__init__(spec, device)
        # built once at load, so no request waits for it or has its construction inside its metered window
        self.pipe = pipeline("token-classification", model=self.model, tokenizer=self.tokenizer, device=self.device,
                             aggregation_strategy="simple")

    def run(self, prepared: Prepared) -> tuple[dict[str, Any], int]:
        out = self.pipe(prepared.texts)
        results = [[{"entity_group": e["entity_group"], "score": float(e["score"]), "word": e["word"],
                     "start": e["start"], "end": e["end"]} for e in entities] for entities in out]
        return {"results": results}, 0


class GenerationRunner(Runner):
    """Causal generation; ``max_new_tokens`` defaults to and is capped by the registry's ``generation``."""

    auto_class = "AutoModelForCausalLM"

    def _load_model(self, common: dict):
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left"  # decoder-only: generation continues right after the prompt
        return super()._load_model(common)

    def prepare(self, request: BaseModel) -> Prepared:
        limit = self.spec.max_new_tokens_limit
        wanted = self.spec.new_tokens(request.max_new_tokens)
        if wanted > limit:
            raise Invalid(f"max_new_tokens {wanted} is over this model's limit {limit}", field="max_new_tokens",
                          limit=limit)
        return super().prepare(request)

    def run(self, prepared: Prepared) -> tuple[dict[str, Any], int]:
        import torch

        req = prepared.options
        enc = self._inputs(prepared)
        kwargs = {"max_new_tokens": self.spec.new_tokens(req.max_new_tokens),
                  "do_sample": req.do_sample, "pad_token_id": self.tokenizer.pad_token_id}
        if req.min_new_tokens is not None:
            kwargs["min_new_tokens"] = min(req.min_new_tokens, kwargs["max_new_tokens"])
        if req.do_sample:
            kwargs.update(temperature=req.temperature, top_p=req.top_p)
            if req.seed is not None:
                torch.manual_seed(req.seed)
        if prepared.on_text is not None:
            kwargs["streamer"] = _TextStreamer(self.tokenizer, prepared.on_text)
        with torch.inference_mode():
            out = _generate(self.model, enc, kwargs)
        new = out[:, enc["input_ids"].shape[1]:].cpu()
        pad = self.tokenizer.pad_token_id
        lengths = [int((row != pad).sum()) if pad is not None else row.shape[0] for row in new]
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return ({"results": [{"generated_text": t, "tokens": n} for t, n in zip(texts, lengths, strict=True)]},
                sum(lengths))


class SummarizationRunner(GenerationRunner):
    """Sequence-to-sequence generation (transformers 5 has no summarization pipeline)."""

    auto_class = "AutoModelForSeq2SeqLM"
    _load_model = Runner._load_model  # encoder-decoder: no left padding

    def run(self, prepared: Prepared) -> tuple[dict[str, Any], int]:
        import torch

        req = prepared.options
        enc = self._inputs(prepared)
        kwargs = {"max_new_tokens": self.spec.new_tokens(req.max_new_tokens),
                  "do_sample": req.do_sample}
        min_new = req.min_new_tokens if req.min_new_tokens is not None else self.spec.generation.get("min_new_tokens")
        if min_new is not None:
            kwargs["min_new_tokens"] = min(int(min_new), kwargs["max_new_tokens"])
        if req.do_sample:
            kwargs.update(temperature=req.temperature, top_p=req.top_p)
        with torch.inference_mode():
            out = _generate(self.model, enc, kwargs).cpu()[:, 1:]  # drop the decoder start token
        pad = self.tokenizer.pad_token_id
        lengths = [int((row != pad).sum()) for row in out]
        texts = self.tokenizer.batch_decode(out, skip_special_tokens=True)
        return ({"results": [{"summary_text": t, "tokens": n} for t, n in zip(texts, lengths, strict=True)]},
                sum(lengths))


class QuestionAnsweringRunner(Runner):
    """Extractive QA: the best context span by start x end probability (no pipeline in transformers 5)."""

    auto_class = "AutoModelForQuestionAnswering"

    def prepare(self, request: BaseModel) -> Prepared:
        pairs = request.inputs
        self._check_batch(pairs)
        questions, contexts = [p.question for p in pairs], [p.context for p in pairs]
        limit = self.spec.max_input_tokens
        lengths = [len(ids) for ids in self.tokenizer(questions, contexts, truncation=False)["input_ids"]]
        self._check_lengths(lengths)
        encoded = self.tokenizer(questions, contexts, padding=True, truncation="only_second", max_length=limit,
                                 return_offsets_mapping=True, return_tensors="pt")
        return Prepared(contexts, encoded, int(encoded["attention_mask"].sum()), request)

    def run(self, prepared: Prepared) -> tuple[dict[str, Any], int]:
        import torch

        enc = dict(prepared.encoded)
        offsets = enc.pop("offset_mapping")
        inputs = {k: v.to(self.device) for k, v in enc.items()}
        with torch.inference_mode():
            out = self.model(**inputs)
        starts, ends = out.start_logits.float().softmax(-1).cpu(), out.end_logits.float().softmax(-1).cpu()
        answers = []
        for row, context in enumerate(prepared.texts):
            in_context = torch.tensor([s == 1 for s in prepared.encoded.sequence_ids(row)])
            s_p = torch.where(in_context, starts[row], torch.zeros_like(starts[row]))
            e_p = torch.where(in_context, ends[row], torch.zeros_like(ends[row]))
            scores = torch.triu(s_p[:, None] * e_p[None, :])  # start <= end
            scores = torch.tril(scores, diagonal=prepared.options.max_answer_tokens - 1)
            best = int(scores.argmax())
            i, j = divmod(best, scores.shape[1])
            lo, hi = int(offsets[row, i, 0]), int(offsets[row, j, 1])
            answers.append({"answer": context[lo:hi], "score": float(scores[i, j]), "start": lo, "end": hi})
        return {"results": answers}, 0


def _generate(model, enc: dict, kwargs: dict):
    try:
        return model.generate(**enc, **kwargs)
    except RuntimeError as exc:
        if "probability tensor" in str(exc):  # sampling settings that turn the distribution into nan/inf
            raise Invalid(f"these sampling settings give invalid probabilities: {exc}", field="temperature") from None
        raise


class _TextStreamer:
    """transformers streamer protocol (put/end): decodes the growing output and emits only the new text."""

    def __init__(self, tokenizer, on_text: Callable[[str], None]) -> None:
        self.tokenizer, self.on_text = tokenizer, on_text
        self.ids: list[int] = []
        self.sent = 0
        self.prompt_seen = False

    def put(self, value) -> None:
        if not self.prompt_seen:  # generate() first passes the prompt
            self.prompt_seen = True
            return
        self.ids.extend(int(i) for i in value.flatten().tolist())
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if len(text) > self.sent and not text.endswith("\ufffd"):  # wait for whole UTF-8 characters
            self.on_text(text[self.sent:])
            self.sent = len(text)

    def end(self) -> None:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if len(text) > self.sent:
            self.on_text(text[self.sent:])


@dataclass(frozen=True)
class TaskSpec:
    name: str
    request: type[BaseModel]
    runner: Callable[[ModelSpec, str], Runner]
    openai: str | None = None  # the OpenAI-compatible route that serves this task

    def load(self, spec: ModelSpec, device: str) -> Runner:
        """The model's runner, loaded. One load at a time per process: transformers' lazy imports are not
        thread-safe (two apps loading at once in one process failed at random)."""
        with _LOAD_LOCK:
            return self.runner(spec, device)


_LOAD_LOCK = threading.Lock()


TASKS: dict[str, TaskSpec] = {t.name: t for t in (
    TaskSpec("feature-extraction", EmbeddingRequest, EmbeddingRunner, openai="embeddings"),
    TaskSpec("text-classification", ClassificationRequest, ClassificationRunner),
    TaskSpec("fill-mask", FillMaskRequest, FillMaskRunner),
    TaskSpec("token-classification", TokenClassificationRequest, TokenClassificationRunner),
    TaskSpec("text-generation", GenerationRequest, GenerationRunner, openai="completions"),
    TaskSpec("summarization", GenerationRequest, SummarizationRunner),
    TaskSpec("question-answering", QuestionAnsweringRequest, QuestionAnsweringRunner),
)}

__all__ = ["TASKS", "TaskSpec", "Runner", "Prepared", "Invalid"]
