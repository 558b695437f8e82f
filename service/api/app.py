"""The FastAPI application: routes are thin; execution is service/runtime.py, energy is service/energy/."""

from __future__ import annotations

import gc
import hmac
import json
import logging
import re
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from service import __version__
from service.api import openapi
from service.api.energy_headers import FastJSONResponse, energy_headers, energy_usage
from service.api.openai import router as openai_router
from service.energy import (
    Accounting,
    CarbonModel,
    ConstantIntensity,
    Embodied,
    Metering,
    TimeSeriesIntensity,
    codecarbon_intensity,
)
from service.energy.machine import machine_info
from service.metrics import Metrics
from service.problems import ClientGone, HTTPProblem, Internal, Invalid, NotFound, Problem, TooLarge, Unauthorized
from service.registry import load_registry
from service.runtime import Outcome, Runtime, ServedModel
from service.settings import ConfigError, Settings

log = logging.getLogger(__name__)
PROBLEM_JSON = "application/problem+json"


def build_carbon(settings: Settings) -> CarbonModel:
    if settings.carbon_timeseries is not None:
        intensity = TimeSeriesIntensity.from_csv(settings.carbon_timeseries)
    elif settings.carbon_intensity_g_per_kwh is not None:
        intensity = ConstantIntensity(settings.carbon_intensity_g_per_kwh)
    elif settings.carbon_country is not None:
        intensity = codecarbon_intensity(settings.carbon_country, settings.carbon_region)
    else:
        intensity = ConstantIntensity(475.0, "world average (CodeCarbon's default; set WATTSERVE_CARBON_COUNTRY)")
    embodied = Embodied(settings.embodied_g, settings.embodied_lifetime_s) if settings.embodied_g else None
    return CarbonModel(intensity, settings.pue, embodied)


def build_metering(settings: Settings) -> Metering | None:
    if not settings.metering:
        return None
    from service.energy.meters.factory import detect_meters

    selection = detect_meters()
    for backend, note in selection.notes.items():
        log.info("meter %s: %s", backend, note)
    return Metering(selection.meters, build_carbon(settings), accounting=Accounting(settings.accounting),
                    store_size=settings.records_kept, meter_notes=selection.notes)


def _api_keys(settings: Settings) -> list[bytes]:
    """The bearer keys: comma-separated in WATTSERVE_API_KEYS, and one per line in the keys file, where blank lines
    and lines starting with ``#`` (a key commented out is a key revoked) are skipped. Keys asked for but none
    found is an error, not an open server."""
    keys = [k.strip() for k in (settings.api_keys or "").split(",") if k.strip()]
    if settings.api_keys_file is not None:
        try:
            lines = settings.api_keys_file.read_text().splitlines()
        except OSError as exc:
            raise ConfigError(f"cannot read the API keys file {settings.api_keys_file}: {exc.strerror or exc}") \
                from None
        keys += [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if not keys and (settings.api_keys is not None or settings.api_keys_file is not None):
        source = settings.api_keys_file or "WATTSERVE_API_KEYS"
        raise ConfigError(f"API keys were configured ({source}) but none was found in it: refusing to serve "
                          "without authentication")
    return [k.encode() for k in keys]


class BodyLimit:
    """Pure ASGI middleware: a body over ``max_bytes`` gets 413 before the app parses a byte of it."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        over = declared is not None and declared.isdigit() and int(declared) > self.max_bytes
        seen = 0

        async def limited():
            nonlocal seen
            if over:  # refused at the first read, unread: the app answers, and counts it for the model at hand
                raise _BodyTooLarge(self.max_bytes)
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _BodyTooLarge(self.max_bytes)
            return message

        try:
            await self.app(scope, limited, send)
        except _BodyTooLarge:
            await self._reject(scope, send)

    async def _reject(self, scope, send) -> None:
        problem = TooLarge(f"request body over {self.max_bytes} bytes", field="body", limit=self.max_bytes)
        body = json.dumps(problem.body(scope.get("path", ""))).encode()
        headers = [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(StarletteHTTPException):
    """Raised from ``receive``: an HTTPException, so FastAPI's body parsing lets it through (it turns any other
    error there into a 400) and the app answers it as the 413 problem."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413)
        self.problem = TooLarge(f"request body over {max_bytes} bytes", field="body", limit=max_bytes)


def create_app(settings: Settings | None = None, metering: Metering | None | bool = True) -> FastAPI:
    """``metering``: True builds one from the settings; a Metering is used as given; None turns it off."""
    settings = settings or Settings()
    registry = load_registry(settings.registry)
    if metering is True:
        metering = build_metering(settings)
    runtime = Runtime(settings, registry, metering or None)
    prom = CollectorRegistry()
    metrics = Metrics(prom, runtime.metering, lambda: {n: m.pending for n, m in runtime.models.items()},
                      {n: m.spec.task for n, m in runtime.models.items()}, settings.queue_size,
                      lambda: {n: m.state for n, m in runtime.models.items()})
    if runtime.metering is not None:
        runtime.metering.subscribe(metrics.observe_final)
    keys = _api_keys(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        import asyncio

        if runtime.metering is not None:
            runtime.metering.start()
        if settings.strict:  # all or nothing: every model loads before the server answers anything
            await asyncio.to_thread(runtime.load, _freeze_heap)
            failed = {n: m.error for n, m in runtime.models.items() if m.error}
            if failed:
                raise RuntimeError(f"--strict: models failed to load: {failed}")
        else:  # /healthz answers at once; each model is `loading` on /readyz and /v1/models until it is ready
            runtime.load_in_background(then=_freeze_heap)
        yield
        await asyncio.to_thread(runtime.shutdown)
        if runtime.metering is not None:
            await asyncio.to_thread(runtime.metering.stop)

    app = FastAPI(title="wattserve", version=__version__, lifespan=lifespan,
                  description="Hugging Face models with the energy and carbon of every request.")
    app.state.runtime, app.state.metrics, app.state.settings = runtime, metrics, settings

    def authorize(request: Request) -> None:
        if not keys:
            return
        given = request.headers.get("authorization", "")
        token = given[7:].encode() if given.lower().startswith("bearer ") else b""
        if not any(hmac.compare_digest(token, k) for k in keys):
            raise Unauthorized("a valid bearer token is required (Authorization: Bearer <key>)",
                               headers={"WWW-Authenticate": "Bearer"})

    app.state.authorize = authorize

    def _denied(request: Request) -> Unauthorized | None:
        """For refusals FastAPI raises before the route runs (body validation, size): a client without a key learns
        nothing from them, and they are not counted for the model."""
        try:
            authorize(request)
        except Unauthorized as denied:
            return denied
        return None

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem):
        served = getattr(request.state, "served", None)  # a known model's request refused before it ran
        if served is not None and not getattr(request.state, "counted", False) and exc.answered:
            metrics.observe_response(served.spec.name, served.spec.task, exc.status, None)
        body = exc.body(request.url.path)
        if is_openai_path(request.url.path):
            body["error"] = exc.openai_error()
        return JSONResponse(body, exc.status, headers=exc.headers, media_type=PROBLEM_JSON)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        if (denied := _denied(request)) is not None:
            return await _problem(request, denied)
        # an OpenAI route's body failed FastAPI's validation before the route ran: the model it names, if it is
        # one of ours, counts the refusal (an unknown name does not: the label would be unbounded)
        named = exc.body.get("model") if isinstance(exc.body, dict) else None
        if isinstance(named, str) and named in runtime.models and not hasattr(request.state, "served"):
            request.state.served = runtime.models[named]
        return await _problem(request, invalid_from(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        if isinstance(exc, _BodyTooLarge):
            return await _problem(request, _denied(request) or exc.problem)
        if exc.status_code == 400 and exc.detail == FASTAPI_BODY_ERROR:  # JSON too deep, a number too long, ...
            return await _problem(request, not_json(exc.__cause__ or exc))
        return await _problem(request, HTTPProblem(exc.status_code, str(exc.detail),
                                                   headers=dict(exc.headers or {})))  # e.g. Allow on 405

    @app.exception_handler(ClientDisconnect)  # the client left while sending its body: no one to answer or log
    async def _gone(request: Request, exc: ClientDisconnect):
        return await _problem(request, ClientGone("the client left while sending its request"))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s", request.url.path)
        return await _problem(request, Internal("internal error; the server keeps running and the failure is logged"))

    # inference first: routes are matched in order, and these take nearly all the traffic
    # request schema and parameters: service/api/openapi.py. The parameters are read here, not declared to FastAPI:
    # its dependency solving cost ~65 us of event-loop time per request on this path (measured)
    @app.post("/v1/models/{name}/infer", tags=["inference"], openapi_extra={"parameters": openapi.INFER_PARAMETERS})
    async def infer(request: Request) -> Response:
        authorize(request)
        served = find_model(runtime, request.path_params["name"], request)
        include_energy = query_flag(request, "include_energy")
        payload = await read_json(request)
        try:
            body = served.task.request.model_validate(payload)
        except ValidationError as exc:
            raise invalid_from(exc.errors()) from None
        outcome = await run_observed(app, served, body, request=request)
        data = dict(outcome.body)
        if include_energy:
            data["usage"] = {"energy": energy_usage(outcome.record)}
        return FastJSONResponse(data, headers=energy_headers(outcome.record, outcome.queue_s, outcome.inference_s))

    app.include_router(openai_router)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz():
        states = {n: {"state": m.state, **({"error": m.error} if m.error else {})} for n, m in runtime.models.items()}
        # ready once loading is over and a model serves: a pod or compose service then takes traffic it can answer
        ready = not runtime.loading and any(m.state == "ready" for m in runtime.models.values())
        return JSONResponse({"ready": ready, "models": states}, 200 if ready else 503)

    @app.get("/metrics", tags=["observability"], response_class=Response)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(prom), media_type=CONTENT_TYPE_LATEST)

    # with API keys, only health and metrics stay open (and the API's documentation): the models, the machine and
    # above all other clients' energy records need a key
    @app.get("/v1/models", tags=["models"])
    async def list_models(request: Request) -> dict[str, Any]:
        authorize(request)
        return {"object": "list", "data": [describe(m) for m in runtime.models.values()]}

    @app.get("/v1/models/{name}", tags=["models"])
    async def get_model(name: str, request: Request) -> dict[str, Any]:
        authorize(request)
        return describe(find_model(runtime, name))

    machine = machine_info()

    @app.get("/v1/system", tags=["energy"])
    async def system(request: Request) -> dict[str, Any]:
        """The serving machine, its meters and carbon settings: what a campaign records as run metadata."""
        import time

        authorize(request)
        metering = runtime.metering
        out: dict[str, Any] = {"version": __version__, "machine": machine.as_dict(), "metering": metering is not None}
        if metering is not None:
            carbon = metering.carbon
            out.update(
                accounting=str(metering.accounting),
                meters={d.id: {"component": str(d.component), "method": str(d.method), "name": d.name,
                               "tick_s": d.tick_s} for d in metering.devices.values()},
                meter_notes=metering.meter_notes,
                carbon={"intensity_g_per_kwh": carbon.intensity.intensity_g_per_kwh(time.time()),
                        "source": carbon.intensity.description, "pue": carbon.pue,
                        "embodied": carbon.embodied is not None})
        return out

    @app.get("/v1/requests/{request_id}/energy", tags=["energy"])
    async def request_energy(request_id: str, request: Request) -> dict[str, Any]:
        authorize(request)
        record = runtime.metering.record(request_id) if runtime.metering is not None else None
        if record is None:
            raise NotFound(f"no energy record for request {request_id!r} (unknown, or older than the last "
                           f"{settings.records_kept} requests)", field="request_id")
        return record.as_dict()

    openapi.install(app, {name: m.spec.task for name, m in runtime.models.items()}, lambda: schema_patches(runtime),
                    lambda: openai_schema_patches(runtime))
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    # FastAPI puts its documentation routes first; requests try routes in order, so they go last (stable sort)
    docs = {app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url}
    app.router.routes.sort(key=lambda route: getattr(route, "path", None) in docs)
    return app


def _freeze_heap() -> None:
    """Everything loaded so far (torch, transformers, models) lives as long as the process: freeze it, so the
    cyclic collector stops re-scanning ~10^5 objects as requests allocate (measured: 48 us -> 4 us/request)."""
    gc.collect()
    gc.freeze()
    log.info("models loaded")


def schema_patches(runtime: Runtime) -> dict[str, dict[str, dict[str, Any]]]:
    """Each loaded model's own limits, for its copy of the request schema in the OpenAPI document."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name, m in runtime.models.items():
        if m.spec.task in ("text-generation", "summarization"):
            out[name] = {"max_new_tokens": {"maximum": m.spec.max_new_tokens_limit}}
        if m.spec.task == "fill-mask" and m.runner is not None and m.runner.tokenizer.mask_token:
            out[name] = {"inputs": {"pattern": re.escape(m.runner.tokenizer.mask_token)}}
    return out


def openai_schema_patches(runtime: Runtime) -> dict[str, dict[str, dict[str, Any]]]:
    """The OpenAI bodies' limits that every model behind the route shares: the embedding size (the only
    ``dimensions`` accepted) and the most new tokens. Models that differ leave the limit undocumented."""
    served = [m for m in runtime.models.values() if m.runner is not None]
    sizes = {m.runner.dimensions for m in served if m.task.openai == "embeddings"}
    most = {m.spec.max_new_tokens_limit for m in served if m.task.openai == "completions"}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    if len(sizes) == 1:
        size = sizes.pop()
        out["EmbeddingsBody"] = {"dimensions": {"minimum": size, "maximum": size}}
    if len(most) == 1:
        limit = {"maximum": most.pop()}
        out["CompletionsBody"] = {"max_tokens": limit}
        out["ChatBody"] = {"max_tokens": limit, "max_completion_tokens": limit}
    return out


def describe(m: ServedModel) -> dict[str, Any]:
    runner = m.runner
    return {"id": m.spec.name, "object": "model", "created": m.created, "owned_by": "wattserve", "task": m.spec.task,
            "state": m.state,
            "error": m.error, "demo": m.spec.demo, "device": m.device, "source": m.spec.source,
            "max_input_tokens": runner.max_input_tokens if runner is not None else m.spec.max_input_tokens,
            "truncate": m.spec.truncate,
            "parameters": runner.parameters if runner is not None else None,
            "mask_token": runner.tokenizer.mask_token if runner is not None else None,
            "generation": m.spec.generation}


def find_model(runtime: Runtime, name: str, request: Request | None = None) -> ServedModel:
    """The served model ``name``. With ``request``, a refusal from here on counts in the model's
    ``wattserve_requests_total`` (an unknown name does not: it would make the label unbounded)."""
    served = runtime.models.get(name)
    if served is None:
        raise NotFound(f"no model named {name!r}; GET /v1/models lists them", field="model")
    if request is not None:
        request.state.served = served
    return served


_BOOL = TypeAdapter(bool)


def query_flag(request: Request, name: str) -> bool:
    """A boolean query parameter, parsed as FastAPI would (``true``/``1``/``yes``/``on``..., else 422)."""
    if not request.scope.get("query_string"):
        return False
    value = request.query_params.get(name)
    if value is None:
        return False
    try:
        return _BOOL.validate_python(value)
    except ValidationError as exc:
        raise invalid_from([{**e, "loc": ("query", name)} for e in exc.errors()]) from None


FASTAPI_BODY_ERROR = "There was an error parsing the body"  # FastAPI's 400 when its JSON parsing fails


def not_json(exc: BaseException) -> Invalid:
    if isinstance(exc, RecursionError):
        return Invalid("body is not valid JSON here: it nests too deep", field="body")
    return Invalid(f"body is not valid JSON: {exc}", field="body")


async def read_json(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors, as is a
        raise not_json(exc) from None          # number over Python's 4,300 digits


_LIMITS = ("le", "ge", "lt", "gt", "max_length", "min_length")  # pydantic's error context: the limit broken


def invalid_from(errors: list[dict]) -> Invalid:
    """422 from validation errors, naming the first one's field and, where it has one, its limit."""
    items = []
    for e in errors:
        item: dict[str, Any] = {"field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"),
                                "message": e.get("msg", "")}
        ctx = e.get("ctx") or {}
        limit = next((ctx[k] for k in _LIMITS if isinstance(ctx.get(k), int | float)), None)
        if limit is not None:
            item["limit"] = limit
        items.append(item)
    first = items[0] if items else {"field": "body", "message": "invalid"}
    extra = {"limit": first["limit"]} if "limit" in first else {}
    return Invalid(f"{first['field'] or 'body'}: {first['message']}", field=first["field"] or "body", errors=items,
                   **extra)


async def run_observed(app: FastAPI, served: ServedModel, body: BaseModel, on_text=None,
                       request: Request | None = None, on_start=None) -> Outcome:
    """Run one inference through the runtime and count the response in Prometheus, success or not.

    With ``request``, a client that disconnects while its request waits for the device cancels it: it never runs
    and costs nothing (one already running finishes and its energy is recorded)."""
    metrics: Metrics = app.state.metrics
    try:
        outcome = await app.state.runtime.infer(served, body, on_text,
                                                None if request is None else _disconnect_of(request), on_start)
    except Problem as exc:
        if exc.answered:
            metrics.observe_response(served.spec.name, served.spec.task, exc.status, None)
        raise
    except Exception:  # answered 500 by the app's handler: counted here, where the model is known
        metrics.observe_response(served.spec.name, served.spec.task, 500, None)
        raise
    finally:
        if request is not None:
            request.state.counted = True  # a problem raised after this is not counted again
    metrics.observe_response(served.spec.name, served.spec.task, 200, outcome.inference_s,
                             outcome.tokens_in, outcome.tokens_out)
    return outcome


def is_openai_path(path: str) -> bool:
    """The routes OpenAI's clients call: completions, chat, embeddings and the model list (not the native infer)."""
    return path in ("/v1/completions", "/v1/chat/completions", "/v1/embeddings", "/v1/models") or (
        path.startswith("/v1/models/") and path.count("/") == 3)


def _disconnect_of(request: Request):
    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    return disconnected
