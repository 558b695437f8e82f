"""Task knowledge as data: for each task, its request schema and its runner (load, count work, infer).

A runner's ``prepare`` tokenizes and checks limits (no energy is metered for a rejected request); ``run`` does
the inference inside the metered window and returns the task-native response body and output token count.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, model_validator

from service.problems import Invalid, TooLarge

if TYPE_CHECKING:
    from service.registry import ModelSpec

class _OneOrMany:
    """Annotated marker of a list field that also takes one item (wrapped into a list before validation, so errors
    name the field rather than a union branch): documented as that item or a non-empty array of them."""

    def __get_pydantic_json_schema__(self, core_schema, handler) -> dict[str, Any]:
        array = handler(core_schema)
        return {"anyOf": [array["items"], array]}


def one_or_many(item: Any, single: type, **limits: Any) -> Any:
    """A non-empty list of ``item`` that also takes one ``single`` value (a str, a dict) on its own."""
    return Annotated[list[item], BeforeValidator(lambda v: [v] if isinstance(v, single) else v),
                     Field(min_length=1, **limits), _OneOrMany()]


Text = Annotated[str, Field(min_length=1)]
Texts = one_or_many(Text, str)  # one text or a non-empty list
MASKED = r"(\[MASK\]|<mask>)"
MaskedTexts = one_or_many(Annotated[str, Field(pattern=MASKED)], str)


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


StopSequences = one_or_many(Annotated[str, Field(min_length=1, max_length=256)], str, max_length=4)
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
    seed: JsonInt | None = Field(None, ge=0, le=2**32 - 1, description="with do_sample: the same seed, the same text")
    stop: StopSequences | None = Field(None, description="up to 4 sequences: the text ends before the first one "
                                                         "generated (finish_reason stop)")


class QuestionContext(JsonModel):
    model_config = STRICT
    question: str = Field(min_length=1)
    context: str = Field(min_length=1)


class QuestionAnsweringRequest(JsonModel):
    model_config = STRICT
    inputs: one_or_many(QuestionContext, dict) = Field(description="{question, context} or a non-empty list of them")
    max_answer_tokens: JsonInt = Field(30, ge=1, le=512)


# -- response schemas: what each task answers (documented in the OpenAPI document; the runners build plain dicts,
# which tests and the schema fuzzer check against these)
class TaskResponse(BaseModel):
    usage: dict[str, Any] | None = Field(None, description="with ?include_energy=true: {energy: the request's "
                                                           "energy record}")


class EmbeddingResponse(TaskResponse):
    embeddings: list[list[float]] = Field(description="one vector per input")
    dimensions: int


class LabelScore(BaseModel):
    label: str
    score: float


class ClassificationResponse(TaskResponse):
    results: list[list[LabelScore]] = Field(description="per input: its top_k labels, best first")


class MaskCandidate(BaseModel):
    token: int
    token_str: str
    score: float
    mask: int = Field(description="which of the input's masks, from 0")


class FillMaskResponse(TaskResponse):
    results: list[list[MaskCandidate]] = Field(description="per input: top_k candidates for each of its masks")


class Entity(BaseModel):
    entity_group: str
    score: float
    word: str
    start: int | None
    end: int | None


class TokenClassificationResponse(TaskResponse):
    results: list[list[Entity]] = Field(description="per input: its entities, words aggregated")


class _NewText(BaseModel):
    tokens: int = Field(description="new tokens generated")
    finish_reason: Literal["stop", "length"]


class Generated(_NewText):
    generated_text: str


class GenerationResponse(TaskResponse):
    results: list[Generated] = Field(description="one per prompt")


class Summary(_NewText):
    summary_text: str


class SummarizationResponse(TaskResponse):
    results: list[Summary] = Field(description="one per input")


class Answer(BaseModel):
    answer: str
    score: float
    start: int = Field(description="character offsets of the answer in its context")
    end: int


class QuestionAnsweringResponse(TaskResponse):
    results: list[Answer] = Field(description="one per {question, context}")


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
        config = self.model.config
        positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        # the model's position table (None: relative positions, no fixed table)
        self.positions: int | None = positions if isinstance(positions, int) and positions > 0 else None
        # the registry's max_input_tokens, lowered to what the model can take: its position table and its
        # tokenizer's own maximum (a registry that asks for more would otherwise crash inside the model)
        tokenizer_most = getattr(self.tokenizer, "model_max_length", 0)  # a huge sentinel means "unknown"
        self.max_input_tokens = min([self.spec.max_input_tokens, *([self.positions] if self.positions else []),
                                     *([int(tokenizer_most)] if 0 < tokenizer_most < 1_000_000 else [])])

    auto_class = "AutoModel"  # the transformers Auto class that loads this task's model

    def _load_model(self, common: dict):
        import transformers

        return getattr(transformers, self.auto_class).from_pretrained(self.path, dtype=torch_dtype(self.spec),
                                                                      **common)

    def _inputs(self, prepared: Prepared) -> dict:
        return {k: v.to(self.device) for k, v in prepared.encoded.items()}

    def _check_lengths(self, lengths: list[int], limit: int | None = None) -> None:
        """413 for an input over the model's token limit (unless the registry says to truncate)."""
        limit = self.max_input_tokens if limit is None else limit
        if max(lengths) > limit and not self.spec.truncate:
            raise TooLarge(f"input {lengths.index(max(lengths))} has {max(lengths)} tokens; this model takes at "
                           f"most {limit}", field="inputs", limit=limit)

    def _check_batch(self, inputs: list) -> None:
        if len(inputs) > self.spec.max_batch:
            raise TooLarge(f"at most {self.spec.max_batch} inputs per request, got {len(inputs)}",
                           field="inputs", limit=self.spec.max_batch)

    def prepare(self, request: BaseModel, limit: int | None = None) -> Prepared:
        texts = request.inputs
        self._check_batch(texts)
        limit = self.max_input_tokens if limit is None else limit
        encoded = self.tokenizer(texts, padding=True, truncation=False, return_tensors="pt")  # one pass, usually
        lengths = encoded["attention_mask"].sum(1).tolist()
        self._check_lengths(lengths, limit)
        if max(lengths) > limit:  # over the limit and allowed: truncate
            encoded = self.tokenizer(texts, padding=True, truncation=True, max_length=limit, return_tensors="pt")
        return Prepared(texts, encoded, int(encoded["attention_mask"].sum()), request)

    def run(self, prepared: Prepared) -> tuple[dict[str, Any], int]:
        raise NotImplementedError


class EmbeddingRunner(Runner):
    """Sentence embeddings: mean pooling over tokens, optionally L2-normalised (as sentence-transformers)."""

    auto_class = "AutoModel"

    @property
    def dimensions(self) -> int:
        """The size of this model's embeddings."""
        return self.model.config.hidden_size

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
        prepared = super().prepare(request)
        ids = prepared.encoded["input_ids"]
        lost = [] if ids.shape[1] < self.max_input_tokens else \
            (~(ids == self.tokenizer.mask_token_id).any(1)).nonzero().flatten().tolist()  # only truncation cuts one
        if lost:  # truncation cut the mask away: there is nothing left to predict
            raise TooLarge(f"input {lost[0]}'s mask token lies beyond the first {self.max_input_tokens} tokens, "
                           "which is all this model takes", field=f"inputs.{lost[0]}", limit=self.max_input_tokens)
        return prepared

    def run(self, prepared: Prepared) -> tuple[dict[str, Any], int]:
        import torch

        enc = self._inputs(prepared)
        with torch.inference_mode():
            probs = self.model(**enc).logits.float().softmax(-1).cpu()
        results = []  # one list per input: top_k candidates per mask, the masks in order (``mask``: which one)
        for row, ids in enumerate(enc["input_ids"].cpu()):
            candidates = []
            for m, pos in enumerate((ids == self.tokenizer.mask_token_id).nonzero().flatten().tolist()):
                top = probs[row, pos].topk(min(prepared.options.top_k, probs.shape[-1]))
                candidates += [{"token": int(i), "token_str": self.tokenizer.decode([int(i)]).strip(),
                                "score": float(p), "mask": m} for p, i in zip(top.values, top.indices, strict=True)]
            results.append(candidates)
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
        self.tokenizer.truncation_side = "left"  # a prompt cut to fit keeps its end, where generation continues
        return super()._load_model(common)

    decoder_only = True  # prompt and new tokens share one position table

    def prepare(self, request: BaseModel) -> Prepared:
        most = self.spec.max_new_tokens_limit
        wanted = self.spec.new_tokens(request.max_new_tokens)
        if wanted > most:
            raise Invalid(f"max_new_tokens {wanted} is over this model's limit {most}", field="max_new_tokens",
                          limit=most)
        limit = self.max_input_tokens
        if self.decoder_only and self.positions is not None and limit + wanted > self.positions:
            limit = self.positions - wanted  # the prompt leaves room for what it asks to generate
            if limit < 1:
                raise Invalid(f"max_new_tokens {wanted} leaves no room for a prompt in this model's "
                              f"{self.positions} positions", field="max_new_tokens", limit=self.positions - 1)
        try:
            return super().prepare(request, limit)
        except TooLarge as exc:
            if limit < self.max_input_tokens:
                exc.detail += f" (with max_new_tokens {wanted}, of {self.positions} positions)"
            raise

    def _sampling(self, req: BaseModel, kwargs: dict) -> None:
        if req.do_sample:
            import torch

            kwargs.update(temperature=req.temperature, top_p=req.top_p)
            if req.seed is not None:
                torch.manual_seed(req.seed)
        if req.stop:  # generation halts once a stop sequence appears in a row's text; the text is cut before it
            from transformers import StoppingCriteriaList

            kwargs["stopping_criteria"] = StoppingCriteriaList([_StopOnText(self.tokenizer, list(req.stop))])

    def _results(self, texts: list[str], lengths: list[int], key: str, stop: list[str] | None,
                 wanted: int) -> list[dict]:
        """Per text: the text cut at a stop sequence, its token count, and why it ended (OpenAI's finish_reason:
        ``length`` when it ran out of new tokens, else ``stop``)."""
        out = []
        for text, n in zip(texts, lengths, strict=True):
            text, stopped = cut_at_stop(text, stop)
            out.append({key: text, "tokens": n, "finish_reason": "stop" if stopped or n < wanted else "length"})
        return out

    def run(self, prepared: Prepared) -> tuple[dict[str, Any], int]:
        import torch

        req = prepared.options
        enc = self._inputs(prepared)
        kwargs = {"max_new_tokens": self.spec.new_tokens(req.max_new_tokens),
                  "do_sample": req.do_sample, "pad_token_id": self.tokenizer.pad_token_id}
        if req.min_new_tokens is not None:
            kwargs["min_new_tokens"] = min(req.min_new_tokens, kwargs["max_new_tokens"])
        self._sampling(req, kwargs)
        if prepared.on_text is not None:
            kwargs["streamer"] = _TextStreamer(self.tokenizer, prepared.on_text, req.stop)
        with torch.inference_mode():
            out = _generate(self.model, enc, kwargs)
        new = out[:, enc["input_ids"].shape[1]:].cpu()
        pad = self.tokenizer.pad_token_id
        lengths = [int((row != pad).sum()) if pad is not None else row.shape[0] for row in new]
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        results = self._results(texts, lengths, "generated_text", req.stop, kwargs["max_new_tokens"])
        return {"results": results}, sum(lengths)


class SummarizationRunner(GenerationRunner):
    """Sequence-to-sequence generation (transformers 5 has no summarization pipeline)."""

    auto_class = "AutoModelForSeq2SeqLM"
    _load_model = Runner._load_model  # encoder-decoder: no left padding
    decoder_only = False  # the input has the encoder's positions to itself

    def run(self, prepared: Prepared) -> tuple[dict[str, Any], int]:
        import torch

        req = prepared.options
        enc = self._inputs(prepared)
        kwargs = {"max_new_tokens": self.spec.new_tokens(req.max_new_tokens),
                  "do_sample": req.do_sample}
        min_new = req.min_new_tokens if req.min_new_tokens is not None else self.spec.generation.get("min_new_tokens")
        if min_new is not None:
            kwargs["min_new_tokens"] = min(int(min_new), kwargs["max_new_tokens"])
        self._sampling(req, kwargs)
        with torch.inference_mode():
            out = _generate(self.model, enc, kwargs).cpu()[:, 1:]  # drop the decoder start token
        pad = self.tokenizer.pad_token_id
        lengths = [int((row != pad).sum()) for row in out]
        texts = self.tokenizer.batch_decode(out, skip_special_tokens=True)
        results = self._results(texts, lengths, "summary_text", req.stop, kwargs["max_new_tokens"])
        return {"results": results}, sum(lengths)


class QuestionAnsweringRunner(Runner):
    """Extractive QA: the best context span by start x end probability (no pipeline in transformers 5)."""

    auto_class = "AutoModelForQuestionAnswering"

    def prepare(self, request: BaseModel) -> Prepared:
        pairs = request.inputs
        self._check_batch(pairs)
        questions, contexts = [p.question for p in pairs], [p.context for p in pairs]
        limit = self.max_input_tokens
        lengths = [len(ids) for ids in self.tokenizer(questions, contexts, truncation=False)["input_ids"]]
        self._check_lengths(lengths)
        if max(lengths) > limit:  # truncation cuts the context only: the question, with one context token, must fit
            room = limit - self.tokenizer.num_special_tokens_to_add(pair=True)
            long = [i for i, ids in enumerate(self.tokenizer(questions, add_special_tokens=False)["input_ids"])
                    if len(ids) + 1 > room]
            if long:
                raise TooLarge(f"question {long[0]} leaves no room for its context in this model's {limit} tokens",
                               field=f"inputs.{long[0]}.question", limit=room - 1)
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


def cut_at_stop(text: str, stop: list[str] | None) -> tuple[str, bool]:
    """``text`` up to the first stop sequence in it, and whether there was one."""
    at = min((i for i in (text.find(x) for x in stop or ()) if i >= 0), default=-1)
    return (text[:at], True) if at >= 0 else (text, False)


class _StopOnText:
    """A transformers stopping criterion: a row is done once its new text holds a stop sequence. Any text works
    (transformers' own ``stop_strings`` refuses strings that its vocabulary cannot spell token by token)."""

    def __init__(self, tokenizer, stop: list[str]) -> None:
        self.tokenizer, self.stop = tokenizer, stop
        self.prompt_len: int | None = None

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        if self.prompt_len is None:  # the first call sees one new token after the prompt
            self.prompt_len = input_ids.shape[1] - 1
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_len:], skip_special_tokens=True)
        return torch.tensor([any(x in t for x in self.stop) for t in texts], dtype=torch.bool,
                            device=input_ids.device)


class _TextStreamer:
    """transformers streamer protocol (put/end): decodes the growing output and emits only the new text."""

    def __init__(self, tokenizer, on_text: Callable[[str], None], stop: list[str] | None = None) -> None:
        self.tokenizer, self.on_text, self.stop = tokenizer, on_text, stop or []
        self.ids: list[int] = []
        self.sent = 0
        self.stopped = False
        self.prompt_seen = False

    def put(self, value) -> None:
        if not self.prompt_seen:  # generate() first passes the prompt
            self.prompt_seen = True
            return
        self.ids.extend(int(i) for i in value.flatten().tolist())
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if not text.endswith("\ufffd"):  # wait for whole UTF-8 characters
            self._emit(text, final=False)

    def end(self) -> None:
        self._emit(self.tokenizer.decode(self.ids, skip_special_tokens=True), final=True)

    def _emit(self, text: str, final: bool) -> None:
        """Send what is safe to send: nothing from a stop sequence on, and, until the end, not a tail that may
        yet grow into one."""
        if self.stopped:
            return
        text, self.stopped = cut_at_stop(text, self.stop)
        safe = len(text)
        if not (final or self.stopped):
            for x in self.stop:  # the longest tail of the text that begins a stop sequence is held back
                for k in range(min(len(x) - 1, len(text)), 0, -1):
                    if text.endswith(x[:k]):
                        safe = min(safe, len(text) - k)
                        break
        if safe > self.sent:
            self.on_text(text[self.sent:safe])
            self.sent = safe


@dataclass(frozen=True)
class TaskSpec:
    name: str
    request: type[BaseModel]
    response: type[BaseModel]
    runner: Callable[[ModelSpec, str], Runner]
    openai: str | None = None  # the OpenAI-compatible route that serves this task

    def load(self, spec: ModelSpec, device: str) -> Runner:
        """The model's runner, loaded. One load at a time per process: transformers' lazy imports are not
        thread-safe (two apps loading at once in one process failed at random)."""
        with _LOAD_LOCK:
            return self.runner(spec, device)


_LOAD_LOCK = threading.Lock()


TASKS: dict[str, TaskSpec] = {t.name: t for t in (
    TaskSpec("feature-extraction", EmbeddingRequest, EmbeddingResponse, EmbeddingRunner, openai="embeddings"),
    TaskSpec("text-classification", ClassificationRequest, ClassificationResponse, ClassificationRunner),
    TaskSpec("fill-mask", FillMaskRequest, FillMaskResponse, FillMaskRunner),
    TaskSpec("token-classification", TokenClassificationRequest, TokenClassificationResponse,
             TokenClassificationRunner),
    TaskSpec("text-generation", GenerationRequest, GenerationResponse, GenerationRunner, openai="completions"),
    TaskSpec("summarization", GenerationRequest, SummarizationResponse, SummarizationRunner),
    TaskSpec("question-answering", QuestionAnsweringRequest, QuestionAnsweringResponse, QuestionAnsweringRunner),
)}

__all__ = ["TASKS", "TaskSpec", "Runner", "Prepared", "Invalid"]
