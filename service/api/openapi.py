"""The OpenAPI document, made accurate: every problem response documented as application/problem+json, and the
task-native request schemas of ``/v1/models/{name}/infer`` as components (it is fuzzed by schemathesis)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

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


class ProblemDetails(BaseModel):
    """RFC 9457 problem details, with the field at fault and its limit where there is one."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    field: str | None = Field(None, description="the request field at fault")
    limit: float | int | None = Field(None, description="the limit it broke")
    errors: list[dict[str, str]] | None = Field(None, description="every validation error")


def install(app: FastAPI, model_tasks: dict[str, str],
            patches: Callable[[], dict[str, dict[str, dict[str, Any]]]] = dict) -> None:
    """``model_tasks``: registry model name -> task. Each model gets its own documented infer path with exactly
    its task's request schema (the route itself is one template). ``patches()`` (asked once models are loaded:
    model -> field -> JSON Schema keywords) adds a model's own limits, such as its ``max_new_tokens`` maximum or
    its mask token, to its copy of the schema."""
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        _, defs = models_json_schema([(ProblemDetails, "serialization")] +
                                     [(t.request, "validation") for t in TASKS.values()],
                                     ref_template="#/components/schemas/{model}")
        components.update(defs.get("$defs", {}))
        problem_ref = {"$ref": "#/components/schemas/ProblemDetails"}
        for path, operations in schema["paths"].items():
            for op in operations.values():
                for param in op.get("parameters", []):
                    if param["in"] == "path" and param["name"] == "name":  # the registry's models
                        param["schema"] = {"type": "string", "enum": sorted(model_tasks)}
                inference = path == INFER_PATH or path in ("/v1/embeddings", "/v1/completions", "/v1/chat/completions")
                codes = INFERENCE if inference else LOOKUP if "{" in path else PLAIN
                op["responses"].pop("422", None)
                for code in codes:
                    op["responses"].setdefault(str(code), {
                        "description": ProblemDetails.__doc__.split(",")[0],
                        "content": {"application/problem+json": {"schema": problem_ref}}})
                if path == "/readyz":
                    op["responses"]["503"] = {"description": "no model is ready",
                                              "content": {"application/json": {"schema": {"type": "object"}}}}
                if path in ("/v1/completions", "/v1/chat/completions"):
                    op["responses"]["200"]["content"]["text/event-stream"] = {"schema": {"type": "string"}}
                if path == "/metrics":
                    op["responses"]["200"]["content"] = {"text/plain": {"schema": {"type": "string"}}}
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
                        prop = variant["properties"][field_name]
                        for option in prop.get("anyOf", [prop]):
                            target = option.get("items", option) if option.get("type") == "array" else option
                            if target.get("type") in ("integer", "string"):
                                target.update(keywords)
                    ref = f"{ref}_{op['operationId']}"
                    components[ref] = variant
                op["requestBody"] = {"required": True, "content": {"application/json": {"schema": {
                    "$ref": f"#/components/schemas/{ref}"}}}}
                schema["paths"][f"/v1/models/{name}/infer"] = {"post": op}
        app.openapi_schema = schema
        return schema

    app.openapi = openapi
