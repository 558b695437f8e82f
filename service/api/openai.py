"""OpenAI-compatible routes, so existing OpenAI clients work unchanged. Energy rides in headers and, with
``?include_energy=true``, in ``usage.energy``."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from service.api.energy_headers import FastJSONResponse, energy_headers, energy_usage
from service.problems import Invalid, Problem, TaskMismatch
from service.tasks import EmbeddingRequest, JsonFloat, JsonInt, JsonModel, StopSequences, Texts

router = APIRouter(prefix="/v1", tags=["openai"])


def _encode(vector: list[float], encoding: str) -> list[float] | str:
    """OpenAI's base64 form: the float32 little-endian bytes of the vector."""
    if encoding == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


class EmbeddingsBody(JsonModel):
    model_config = ConfigDict(extra="allow")  # OpenAI clients send fields we do not use (user, ...)
    model: str
    input: Texts
    encoding_format: Literal["float", "base64"] = "float"  # the openai client asks for base64 by default
    dimensions: JsonInt | None = Field(None, ge=1, description="not supported: must be omitted or the model's size")


# -- response schemas (documentation: the routes build plain dicts, checked against these by the schema fuzzer)
class OpenAIUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int
    energy: dict[str, Any] | None = Field(None, description="the request's energy record: with "
                                                            "?include_energy=true, and in a stream's final event")


class EmbeddingObject(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str = Field(description="floats, or base64 of float32 little-endian")


class EmbeddingsResponse(BaseModel):
    object: Literal["list"]
    model: str
    data: list[EmbeddingObject]
    usage: OpenAIUsage


class CompletionUsage(OpenAIUsage):
    completion_tokens: int


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: None
    finish_reason: Literal["stop", "length"]


class CompletionsResponse(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: CompletionUsage


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]


class ChatCompletionsResponse(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: CompletionUsage


@router.post("/embeddings", response_model=None, responses={200: {"model": EmbeddingsResponse}})
async def embeddings(body: EmbeddingsBody, request: Request, include_energy: bool = False) -> JSONResponse:
    from service.api.app import find_model, run_observed

    app = request.app
    app.state.authorize(request)
    served = find_model(app.state.runtime, body.model, request)
    if served.task.openai != "embeddings":
        raise TaskMismatch(f"model {body.model!r} serves {served.spec.task}, not embeddings", field="model")
    size = served.runner.dimensions if served.runner is not None else None
    if body.dimensions is not None and size is not None and body.dimensions != size:  # refused before it runs
        raise Invalid(f"this model's embeddings have {size} dimensions; dimensions must be omitted or {size}",
                      field="dimensions", limit=size)
    with client_fields({"inputs": "input"}):
        outcome = await run_observed(app, served, EmbeddingRequest(inputs=body.input), request=request)
    vectors = outcome.body["embeddings"]
    usage = {"prompt_tokens": outcome.tokens_in, "total_tokens": outcome.tokens_in}
    if include_energy:
        usage["energy"] = energy_usage(outcome.record)
    data = {"object": "list", "model": body.model, "usage": usage,
            "data": [{"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
                     for i, v in enumerate(vectors)]}
    return FastJSONResponse(data, headers=energy_headers(outcome.record, outcome.queue_s, outcome.inference_s))


GREEDY_BELOW = 0.01  # OpenAI's temperature 0 is greedy; a temperature this small would sample as good as greedily
TOP_P_GREEDY_BELOW = 0.001  # OpenAI accepts top_p 0: a nucleus of the one likeliest token, which is greedy


class StreamOptions(JsonModel):
    include_usage: StrictBool = False


class _GenerationBody(JsonModel):
    """What /v1/completions and /v1/chat/completions share."""

    model_config = ConfigDict(extra="allow")
    model: str
    max_tokens: JsonInt | None = Field(None, ge=1)
    temperature: JsonFloat = Field(1.0, ge=0, le=2, description=f"below {GREEDY_BELOW}: greedy decoding")
    top_p: JsonFloat = Field(1.0, ge=0, le=1, description=f"below {TOP_P_GREEDY_BELOW}: greedy decoding (the "
                                                           "nucleus is the likeliest token)")
    n: JsonInt = Field(1, ge=1, le=1, description="only 1 is supported")
    stream: StrictBool = False
    stream_options: StreamOptions | None = Field(None, description="include_usage: a last chunk with no choices "
                                                                   "carries usage (and the energy); without it, "
                                                                   "the chunk with finish_reason does")
    seed: JsonInt | None = Field(None, ge=0, le=2**32 - 1)
    stop: StopSequences | None = Field(None, description="up to 4 sequences: the text ends before the first one "
                                                         "generated, with finish_reason stop")


# OpenAI fields this server does not implement: accepted at their no-op values, refused otherwise (never ignored)
UNSUPPORTED = {"logprobs": (None, False, 0), "top_logprobs": (None, 0), "echo": (None, False), "best_of": (None, 1),
               "suffix": (None, ""), "logit_bias": (None, {}), "presence_penalty": (None, 0),
               "frequency_penalty": (None, 0), "tools": (None, []), "tool_choice": (None, "none"),
               "functions": (None, []), "function_call": (None, "none"), "response_format": (None, {"type": "text"})}


def _include_usage(body: _GenerationBody) -> bool:  # stream_options is a no-op without stream
    return body.stream and body.stream_options is not None and body.stream_options.include_usage


def refuse_unsupported(body: _GenerationBody) -> None:
    for name, value in (body.model_extra or {}).items():
        accepted = UNSUPPORTED.get(name)
        if accepted is not None and value is not None and not any(
                value == ok and isinstance(value, bool) == isinstance(ok, bool) for ok in accepted if ok is not None):
            raise Invalid(f"{name} is not supported by this server; omit it or send {accepted[-1]!r}", field=name)


class CompletionsBody(_GenerationBody):
    prompt: Texts


class TextPart(JsonModel):
    type: Literal["text"] = Field(description="text parts only: this server serves text models")
    text: str


class ChatMessage(JsonModel):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[TextPart] = Field(description="a string, or a list of text parts (joined)")

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatBody(_GenerationBody):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: JsonInt | None = Field(None, ge=1)


def _generation(body: _GenerationBody, prompts: list[str], max_tokens: int | None, served):
    from service.tasks import GenerationRequest

    refuse_unsupported(body)
    most = served.spec.max_new_tokens_limit  # each token limit the client sent is checked, used or not
    for name in ("max_tokens", "max_completion_tokens"):
        value = getattr(body, name, None)
        if value is not None and value > most:
            raise Invalid(f"{name} {value} is over this model's limit {most}", field=name, limit=most)
    sample = body.temperature >= GREEDY_BELOW and body.top_p >= TOP_P_GREEDY_BELOW
    return GenerationRequest(inputs=prompts, max_new_tokens=max_tokens, do_sample=sample,
                             temperature=body.temperature if sample else 1.0, top_p=body.top_p if sample else 1.0,
                             seed=body.seed,
                             stop=body.stop)


@contextmanager
def client_fields(names: dict[str, str]) -> Iterator[None]:
    """Problems raised inside name the field as this route's client sent it (``prompt``, not ``inputs``)."""
    try:
        yield
    except Problem as exc:
        head, dot, rest = str(exc.extra.get("field", "")).partition(".")
        if head in names:
            exc.extra["field"] = names[head] + dot + rest
        raise


def _chat_prompt(tokenizer, messages: list[ChatMessage]) -> str:
    plain = [{"role": m.role, "content": m.text()} for m in messages]
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(plain, tokenize=False, add_generation_prompt=True)
    return "".join(f"{m['role']}: {m['content']}\n" for m in plain) + "assistant:"


def _served_generator(request: Request, name: str):
    from service.api.app import find_model

    request.app.state.authorize(request)
    served = find_model(request.app.state.runtime, name, request)
    if served.task.openai != "completions":
        raise TaskMismatch(f"model {name!r} serves {served.spec.task}, not text generation", field="model")
    return served


async def _respond(request: Request, served, gen, *, chat: bool, stream: bool, include_energy: bool,
                   include_usage: bool = False):
    from service.api.app import run_observed

    kind = "chat.completion" if chat else "text_completion"
    ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
    created = int(time.time())

    def usage(outcome, record=None):
        u = {"prompt_tokens": outcome.tokens_in, "completion_tokens": outcome.tokens_out,
             "total_tokens": outcome.tokens_in + outcome.tokens_out}
        if include_energy or stream:
            u["energy"] = energy_usage(record or outcome.record)
        return u

    # a token limit the client sent was checked under its own name (_generation); only the model's default is left
    names = {"inputs": "messages" if chat else "prompt", "max_new_tokens": "max_tokens"}
    if not stream:
        with client_fields(names):
            outcome = await run_observed(request.app, served, gen, request=request)
        choices = []
        for i, res in enumerate(outcome.body["results"]):
            body = {"message": {"role": "assistant", "content": res["generated_text"]}} if chat else \
                {"text": res["generated_text"], "logprobs": None}
            choices.append({"index": i, "finish_reason": res["finish_reason"], **body})
        data = {"id": ident, "object": kind, "created": created, "model": served.spec.name, "choices": choices,
                "usage": usage(outcome)}
        return FastJSONResponse(data, headers=energy_headers(outcome.record, outcome.queue_s, outcome.inference_s))

    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[str | None] = asyncio.Queue()
    started: asyncio.Future[str | None] = loop.create_future()

    def on_text(text: str) -> None:  # from the inference thread
        loop.call_soon_threadsafe(pieces.put_nowait, text)

    def on_start(request_id: str | None) -> None:  # from the inference thread: the input is accepted
        loop.call_soon_threadsafe(lambda: started.done() or started.set_result(request_id))

    # with request: a client that leaves while its stream waits for the device cancels it, unrun
    task = asyncio.ensure_future(run_observed(request.app, served, gen, on_text=on_text, on_start=on_start,
                                              request=request))
    task.add_done_callback(_ended_stream(pieces))
    # the status line waits until the model starts on the request: a refusal (429, 413, 422, 504 while queued)
    # is then answered with its own status and problem JSON, as without streaming
    await asyncio.wait((task, started), return_when=asyncio.FIRST_COMPLETED)
    if not started.done():
        with client_fields(names):
            task.result()  # raises the refusal
    request_id = started.result()
    chunk_kind = "chat.completion.chunk" if chat else "text_completion"

    def event(choices: list, **extra) -> str:
        payload = {"id": ident, "object": chunk_kind, "created": created, "model": served.spec.name,
                   "choices": choices, **extra}
        return f"data: {json.dumps(payload)}\n\n"

    async def events():
        if chat:
            yield event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        while (text := await pieces.get()) is not None:
            delta = {"delta": {"content": text}} if chat else {"text": text}
            yield event([{"index": 0, "finish_reason": None, **delta}])
        try:
            outcome = task.result()
        except Exception as exc:  # noqa: BLE001 - the status line is already sent: report in the stream
            error = {"message": str(exc), "type": type(exc).__name__}
            if isinstance(exc, Problem):
                error.update(code=exc.status, **{k: v for k, v in exc.extra.items() if k in ("field", "limit")})
            yield f"data: {json.dumps({'error': error})}\n\n"
            return
        finish = outcome.body["results"][0]["finish_reason"]
        last = [{"index": 0, "finish_reason": finish, **({"delta": {}} if chat else {"text": ""})}]
        # the energy of a streamed response arrives in its final event, the final figure if it comes in time: as
        # OpenAI streams usage, in a chunk with no choices when the client asked for it (stream_options
        # include_usage); else in the chunk with finish_reason, as clients that read choices[0] of every chunk expect
        final_usage = usage(outcome, await _final_record(request.app, outcome))
        if include_usage:
            yield event(last)
            yield event([], usage=final_usage)
        else:
            yield event(last, usage=final_usage)
        yield "data: [DONE]\n\n"

    # the energy is known only at the end: it arrives in the final event, and under this id at
    # /v1/requests/{id}/energy
    headers = {"Cache-Control": "no-cache", **({"X-Request-Id": request_id} if request_id else {})}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


def _ended_stream(pieces: asyncio.Queue):
    """When the inference task ends: close the stream of pieces, and take the task's error as seen (a client that
    left mid-stream never reads it, and asyncio would log it as never retrieved)."""
    def ended(task: asyncio.Task) -> None:
        if not task.cancelled():
            task.exception()
        pieces.put_nowait(None)
    return ended


async def _final_record(app, outcome, wait_s: float = 1.0):
    metering = app.state.runtime.metering
    if metering is None or outcome.request_id is None:
        return None
    deadline = time.monotonic() + wait_s
    while True:
        record = metering.record(outcome.request_id)
        if record is None or str(record.status) == "final" or time.monotonic() > deadline:
            return record
        await asyncio.sleep(0.02)


@router.post("/completions", response_model=None, responses={200: {"model": CompletionsResponse}})
async def completions(body: CompletionsBody, request: Request, include_energy: bool = False):
    served = _served_generator(request, body.model)
    if body.stream and len(body.prompt) > 1:
        raise Invalid("streaming takes one prompt", field="prompt", limit=1)
    gen = _generation(body, body.prompt, body.max_tokens, served)
    return await _respond(request, served, gen, chat=False, stream=body.stream, include_energy=include_energy,
                          include_usage=_include_usage(body))


@router.post("/chat/completions", response_model=None, responses={200: {"model": ChatCompletionsResponse}})
async def chat_completions(body: ChatBody, request: Request, include_energy: bool = False):
    served = _served_generator(request, body.model)
    if served.runner is None:
        from service.problems import NotReady

        raise NotReady(f"model {body.model!r} is {served.state}", model=body.model)
    prompt = _chat_prompt(served.runner.tokenizer, body.messages)
    gen = _generation(body, [prompt], body.max_completion_tokens or body.max_tokens, served)
    return await _respond(request, served, gen, chat=True, stream=body.stream, include_energy=include_energy,
                          include_usage=_include_usage(body))
