"""The OpenAPI document, made accurate: every problem response documented as application/problem+json, and the
task-native request schemas of ``/v1/models/{name}/infer`` as components (it is fuzzed by schemathesis)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

from service.energy.record import Accounting
from service.energy.types import Method, Status
from service.tasks import TASKS

INFER_PATH = "/v1/models/{name}/infer"
# the infer route reads its parameters itself (see service/api/app.py); they are documented here
INFER_PARAMETERS = [
    {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "title": "Name"}},
    {"name": "include_energy", "in": "query", "required": False,
     "schema": {"type": "boolean", "default": False, "title": "Include Energy"},
     "description": "also return the request's energy record in the body, as usage.energy"},
]
# statuses each kind of operation can answer with a problem
INFERENCE = (400, 401, 404, 413, 422, 429, 500, 503, 504)
LOOKUP = (404, 413, 422, 500)
PLAIN = (413, 500)
OPEN_PATHS = ("/healthz", "/readyz", "/metrics")  # open even with API keys


class ValidationIssue(BaseModel):
    field: str
    message: str
    limit: float | int | None = None


class OpenAIError(BaseModel):
    message: str
    type: str = Field(description="invalid_request_error, authentication_error, rate_limit_error or server_error")
    param: str | None = Field(description="the request field at fault")
    code: str = Field(description="the problem type's last segment (too-large, invalid, not-found, ...)")


class ProblemDetails(BaseModel):
    """RFC 9457 problem details, with the field at fault and its limit where there is one."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    field: str | None = Field(None, description="the request field at fault")
    limit: float | int | None = Field(None, description="the limit it broke")
    errors: list[ValidationIssue] | None = Field(None, description="every validation error")
    error: OpenAIError | None = Field(None, description="on the OpenAI-compatible routes: the same problem as "
                                                        "OpenAI's clients read it")


class ComponentFigure(BaseModel):
    energy_j: float = Field(description="under the record's accounting")
    active_j: float
    idle_j: float = Field(description="this request's share of the idle draw while it ran")
    method: Method


class CarbonFigure(BaseModel):
    intensity_g_per_kwh: float
    pue: float
    operational_g: float = Field(description="Carbon-Emissions-Scope-2")
    embodied_g: float
    sci_g: float = Field(description="operational + embodied: X-Carbon-gCO2e")


class EnergyRecord(BaseModel):
    """One request's energy: the source of its X-Energy-* headers, of usage.energy and of its Prometheus series."""

    request_id: str
    model: str
    task: str
    work_class: str
    status: Status
    accounting: Accounting
    method: Method
    started_at_s: float
    queue_s: float
    duration_s: float
    device_time_s: float
    tokens_in: int
    tokens_out: int
    energy_j: float
    active_j: float
    idle_j: float
    components: dict[str, ComponentFigure] = Field(description="by component: gpu, cpu, ram")
    carbon: CarbonFigure | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int = Field(description="Unix time the model was registered with this server (OpenAI's field)")
    owned_by: str
    task: str
    state: Literal["loading", "ready", "failed"]
    error: str | None
    demo: bool = Field(description="random weights: outputs mean nothing")
    device: str
    source: str
    max_input_tokens: int
    truncate: bool
    parameters: int | None
    mask_token: str | None
    generation: dict[str, Any]


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


class ModelState(BaseModel):
    state: Literal["loading", "ready", "failed"]
    error: str | None = None


class Readiness(BaseModel):
    ready: bool
    models: dict[str, ModelState]


class Health(BaseModel):
    status: Literal["ok"]


# GET paths whose answer has a schema here
RESPONSES: dict[str, type[BaseModel]] = {"/v1/models": ModelList, "/v1/models/{name}": ModelCard,
                                         "/v1/requests/{request_id}/energy": EnergyRecord, "/readyz": Readiness,
                                         "/healthz": Health}


def install(app: FastAPI, model_tasks: dict[str, str],
            patches: Callable[[], dict[str, dict[str, dict[str, Any]]]] = dict,
            body_patches: Callable[[], dict[str, dict[str, dict[str, Any]]]] = dict) -> None:
    """``model_tasks``: registry model name -> task. Each model gets its own documented infer path with exactly
    its task's request schema (the route itself is one template). ``patches()`` (asked once models are loaded:
    model -> field -> JSON Schema keywords) adds a model's own limits, such as its ``max_new_tokens`` maximum or
    its mask token, to its copy of the schema. ``body_patches()`` (also asked once models are loaded: OpenAI body
    component -> field -> JSON Schema keywords) does the same for the OpenAI routes, where one body serves several
    models."""
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        _, defs = models_json_schema([(m, "serialization") for m in (ProblemDetails, *RESPONSES.values())] +
                                     [(t.request, "validation") for t in TASKS.values()] +
                                     [(t.response, "serialization") for t in TASKS.values()],
                                     ref_template="#/components/schemas/{model}")
        components.update(defs.get("$defs", {}))
        # usage.energy, wherever a body carries it, is the energy record (the task and OpenAI schemas, a layer
        # below, type it as an object)
        energy = {"anyOf": [{"$ref": "#/components/schemas/EnergyRecord"}, {"type": "null"}]}
        for response in {t.response.__name__ for t in TASKS.values()}:
            usage = components[response]["properties"]["usage"]
            usage["anyOf"] = [{"type": "object", "required": ["energy"], "properties": {"energy": energy}},
                              {"type": "null"}]
        for usage in ("OpenAIUsage", "CompletionUsage"):
            components[usage]["properties"]["energy"].update(energy)
        for body, route in (("EmbeddingsBody", "embeddings"), ("CompletionsBody", "completions"),
                            ("ChatBody", "completions")):  # the models that serve each OpenAI route
            names = sorted(n for n, task in model_tasks.items() if TASKS[task].openai == route)
            if names and body in components:
                components[body]["properties"]["model"]["enum"] = names
        for body, fields in body_patches().items():  # limits the served models share (see body_patches)
            for field_name, keywords in fields.items():
                _narrow(components[body]["properties"][field_name], keywords)
        problem_ref = {"$ref": "#/components/schemas/ProblemDetails"}
        for path, operations in schema["paths"].items():
            for op in operations.values():
                for param in op.get("parameters", []):
                    if param["in"] == "path" and param["name"] == "name":  # the registry's models
                        param["schema"] = {"type": "string", "enum": sorted(model_tasks)}
                inference = path == INFER_PATH or path in ("/v1/embeddings", "/v1/completions", "/v1/chat/completions")
                codes = INFERENCE if inference else LOOKUP if "{" in path else PLAIN
                if path not in OPEN_PATHS:  # needs a key when the server has API keys
                    codes = tuple(sorted({*codes, 401}))
                op["responses"].pop("422", None)
                for code in codes:
                    op["responses"].setdefault(str(code), {
                        "description": ProblemDetails.__doc__.split(",")[0],
                        "content": {"application/problem+json": {"schema": problem_ref}}})
                if path == "/readyz":
                    op["responses"]["503"] = {"description": "no model is ready", "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Readiness"}}}}
                if path in ("/v1/completions", "/v1/chat/completions"):
                    op["responses"]["200"]["content"]["text/event-stream"] = {"schema": {  # each server-sent event
                        "type": "object", "required": ["data"], "properties": {"data": {
                            "type": "string", "description": "a JSON chunk (the last one with usage.energy), an "
                                                             "error object, or [DONE]"}}}}
                if path == "/metrics":
                    op["responses"]["200"]["content"] = {"text/plain": {"schema": {"type": "string"}}}
                if path in RESPONSES and "get" in operations:
                    op["responses"]["200"]["content"] = {"application/json": {"schema": {
                        "$ref": f"#/components/schemas/{RESPONSES[path].__name__}"}}}
        per_model = patches()
        template = schema["paths"].pop(INFER_PATH, {}).get("post")
        if template is not None:
            for name, task in model_tasks.items():
                op = copy.deepcopy(template)
                op["operationId"] = f"infer_{name}".replace("-", "_").replace(".", "_")
                op["summary"] = f"Infer with {name} ({task})"
                op["parameters"] = [p for p in op.get("parameters", []) if p["name"] != "name"]
                ref = TASKS[task].request.__name__
                if per_model.get(name):
                    variant = copy.deepcopy(components[ref])
                    for field_name, keywords in per_model[name].items():
                        _narrow(variant["properties"][field_name], keywords)
                    ref = f"{ref}_{op['operationId']}"
                    components[ref] = variant
                op["requestBody"] = {"required": True, "content": {"application/json": {"schema": {
                    "$ref": f"#/components/schemas/{ref}"}}}}
                op["responses"]["200"] = {"description": f"{task}: the answer, with the X-Energy-* headers",
                                          "content": {"application/json": {"schema": {
                                              "$ref": f"#/components/schemas/{TASKS[task].response.__name__}"}}}}
                schema["paths"][f"/v1/models/{name}/infer"] = {"post": op}
        app.openapi_schema = schema
        return schema

    app.openapi = openapi


def _narrow(prop: dict[str, Any], keywords: dict[str, Any]) -> None:
    """Add JSON Schema keywords (a model's own limits) to a property's integer or string schema, in each of its
    ``anyOf`` options and, for an array, in its items."""
    for option in prop.get("anyOf", [prop]):
        target = option.get("items", option) if option.get("type") == "array" else option
        if target.get("type") in ("integer", "string"):
            target.update(keywords)
