"""OpenAI-compatible routes, so existing OpenAI clients work unchanged. Energy rides in headers and, with
``?include_energy=true``, in ``usage.energy``."""

from __future__ import annotations

import base64
import struct
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from service.api.energy_headers import energy_headers, energy_usage
from service.problems import Invalid, TaskMismatch
from service.tasks import EmbeddingRequest, Texts

router = APIRouter(prefix="/v1", tags=["openai"])


def _encode(vector: list[float], encoding: str) -> list[float] | str:
    """OpenAI's base64 form: the float32 little-endian bytes of the vector."""
    if encoding == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


class EmbeddingsBody(BaseModel):
    model_config = ConfigDict(extra="allow")  # OpenAI clients send fields we do not use (user, ...)
    model: str
    input: Texts
    encoding_format: Literal["float", "base64"] = "float"  # the openai client asks for base64 by default
    dimensions: int | None = Field(None, ge=1, description="not supported: must be omitted or the model's size")


@router.post("/embeddings")
async def embeddings(body: EmbeddingsBody, request: Request, include_energy: bool = False) -> JSONResponse:
    from service.api.app import find_model, run_observed

    app = request.app
    app.state.authorize(request)
    served = find_model(app.state.runtime, body.model)
    if served.task.openai != "embeddings":
        raise TaskMismatch(f"model {body.model!r} serves {served.spec.task}, not embeddings", field="model")
    outcome = await run_observed(app, served, EmbeddingRequest(inputs=body.input))
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
    return JSONResponse(data, headers=energy_headers(outcome.record, outcome.queue_s, outcome.inference_s))
