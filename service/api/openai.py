"""OpenAI-compatible routes, so existing OpenAI clients work unchanged. Energy rides in headers and, with
``?include_energy=true``, in ``usage.energy``."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
import uuid
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ConfigDict, Field, StrictBool

from service.api.energy_headers import FastJSONResponse, energy_headers, energy_usage
from service.problems import Invalid, TaskMismatch
from service.tasks import EmbeddingRequest, JsonFloat, JsonInt, JsonModel, Texts

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


@router.post("/embeddings")
async def embeddings(body: EmbeddingsBody, request: Request, include_energy: bool = False) -> JSONResponse:
    from service.api.app import find_model, run_observed

    app = request.app
    app.state.authorize(request)
    served = find_model(app.state.runtime, body.model, request)
    if served.task.openai != "embeddings":
        raise TaskMismatch(f"model {body.model!r} serves {served.spec.task}, not embeddings", field="model")
    outcome = await run_observed(app, served, EmbeddingRequest(inputs=body.input), request=request)
    vectors = outcome.body["embeddings"]
    if body.dimensions is not None and body.dimensions != len(vectors[0]):
        raise Invalid(f"this model's embeddings have {len(vectors[0])} dimensions", field="dimensions",
                      limit=len(vectors[0]))
    usage = {"prompt_tokens": outcome.tokens_in, "total_tokens": outcome.tokens_in}
    if include_energy:
        usage["energy"] = energy_usage(outcome.record)
    data = {"object": "list", "model": body.model, "usage": usage,
            "data": [{"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
                     for i, v in enumerate(vectors)]}
    return FastJSONResponse(data, headers=energy_headers(outcome.record, outcome.queue_s, outcome.inference_s))


class _GenerationBody(JsonModel):
    """What /v1/completions and /v1/chat/completions share."""

    model_config = ConfigDict(extra="allow")
    model: str
    max_tokens: JsonInt | None = Field(None, ge=1)
    temperature: JsonFloat = Field(1.0, ge=0, le=2, description="0: greedy")
    top_p: JsonFloat = Field(1.0, ge=0.001, le=1)
    n: JsonInt = Field(1, ge=1, le=1, description="only 1 is supported")
    stream: StrictBool = False
    seed: JsonInt | None = Field(None, ge=0, le=2**32 - 1)


class CompletionsBody(_GenerationBody):
    prompt: Texts


class ChatMessage(JsonModel):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str


class ChatBody(_GenerationBody):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: JsonInt | None = Field(None, ge=1)


def _generation(prompts: list[str], max_tokens: int | None, temperature: float, top_p: float, seed: int | None):
    from service.tasks import GenerationRequest

    sample = temperature > 0
    return GenerationRequest(inputs=prompts, max_new_tokens=max_tokens, do_sample=sample,
                             temperature=temperature if sample else 1.0, top_p=top_p, seed=seed)


def _chat_prompt(tokenizer, messages: list[ChatMessage]) -> str:
    plain = [m.model_dump() for m in messages]
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


async def _respond(request: Request, served, gen, *, chat: bool, stream: bool, include_energy: bool):
    from service.api.app import run_observed

    kind = "chat.completion" if chat else "text_completion"
    ident = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    limit = served.spec.new_tokens(gen.max_new_tokens)

    def usage(outcome, record=None):
        u = {"prompt_tokens": outcome.tokens_in, "completion_tokens": outcome.tokens_out,
             "total_tokens": outcome.tokens_in + outcome.tokens_out}
        if include_energy or stream:
            u["energy"] = energy_usage(record or outcome.record)
        return u

    if not stream:
        outcome = await run_observed(request.app, served, gen, request=request)
        choices = []
        for i, res in enumerate(outcome.body["results"]):
            finish = "length" if res["tokens"] >= limit else "stop"
            body = {"message": {"role": "assistant", "content": res["generated_text"]}} if chat else \
                {"text": res["generated_text"], "logprobs": None}
            choices.append({"index": i, "finish_reason": finish, **body})
        data = {"id": ident, "object": kind, "created": created, "model": served.spec.name, "choices": choices,
                "usage": usage(outcome)}
        return FastJSONResponse(data, headers=energy_headers(outcome.record, outcome.queue_s, outcome.inference_s))

    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[str | None] = asyncio.Queue()

    def on_text(text: str) -> None:  # from the inference thread
        loop.call_soon_threadsafe(pieces.put_nowait, text)

    task = asyncio.ensure_future(run_observed(request.app, served, gen, on_text=on_text))
    task.add_done_callback(lambda _: pieces.put_nowait(None))
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
            yield f"data: {json.dumps({'error': {'message': str(exc), 'type': type(exc).__name__}})}\n\n"
            return
        finish = "length" if outcome.tokens_out >= limit else "stop"
        last = {"delta": {}} if chat else {"text": ""}
        yield event([{"index": 0, "finish_reason": finish, **last}])
        # the energy of a streamed response arrives in its final event: the final figure, if it comes in time
        yield event([], usage=usage(outcome, await _final_record(request.app, outcome)))
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


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


@router.post("/completions")
async def completions(body: CompletionsBody, request: Request, include_energy: bool = False):
    served = _served_generator(request, body.model)
    if body.stream and len(body.prompt) > 1:
        raise Invalid("streaming takes one prompt", field="prompt", limit=1)
    gen = _generation(body.prompt, body.max_tokens, body.temperature, body.top_p, body.seed)
    return await _respond(request, served, gen, chat=False, stream=body.stream, include_energy=include_energy)


@router.post("/chat/completions")
async def chat_completions(body: ChatBody, request: Request, include_energy: bool = False):
    served = _served_generator(request, body.model)
    if served.runner is None:
        from service.problems import NotReady

        raise NotReady(f"model {body.model!r} is {served.state}", model=body.model)
    prompt = _chat_prompt(served.runner.tokenizer, body.messages)
    gen = _generation([prompt], body.max_completion_tokens or body.max_tokens, body.temperature, body.top_p, body.seed)
    return await _respond(request, served, gen, chat=True, stream=body.stream, include_energy=include_energy)
