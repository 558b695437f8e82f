"""Timeouts, clients that leave while queued, graceful shutdown: energy is never lost or double-counted."""

import asyncio
import time

import httpx
import pytest

from service.energy.types import Component
from service.settings import Settings
from tests.service.conftest import LiveServer, free_port

SLOW = {"inputs": ["tell me about energy"] * 16, "max_new_tokens": 128, "min_new_tokens": 128}


def registry(tmp_path_factory, monkeypatch_env):
    folder = tmp_path_factory.mktemp("lifecycle")
    monkeypatch_env.setenv("WATTSERVE_DEMO_DIR", str(folder / "demo"))
    (folder / "models.yaml").write_text("models:\n  - name: gen\n    task: text-generation\n"
                                        "    source: demo:text-generation\n    device: cpu\n    truncate: true\n"
                                        "    generation: {max_new_tokens_limit: 256}\n")
    return folder / "models.yaml"


@pytest.fixture(scope="module")
def monkeypatch_env():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def finals_count(url: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith('wattserve_request_energy_joules_count{model="gen"'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait_for(predicate, seconds=20.0):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def series(url: str, name: str) -> float:
    """The sum of a metric's samples for the model "gen" (e.g. ``wattserve_tokens_total``)."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in httpx.get(url + "/metrics").text.splitlines()
               if line.startswith(name + "{") and 'model="gen"' in line)


def test_timeout_answers_504_and_still_records_the_energy(tmp_path_factory, monkeypatch_env):
    """The inference runs on and is metered; the 504 names its record. Its duration and tokens count in /metrics
    with its energy (they counted only for 200s: joules per token read off /metrics were skewed)."""
    settings = Settings(port=free_port(), registry=registry(tmp_path_factory, monkeypatch_env), request_timeout_s=0.02)
    with LiveServer(settings) as live:
        before = finals_count(live.url)
        r = httpx.post(f"{live.url}/v1/models/gen/infer", json=SLOW, timeout=60)
        assert r.status_code == 504 and r.json()["limit"] == 0.02
        assert wait_for(lambda: finals_count(live.url) == before + 1)  # the work ran to the end and was metered
        record = httpx.get(f"{live.url}/v1/requests/{r.headers['x-request-id']}/energy").json()
        assert record["status"] == "final" and record["tokens_out"] == 16 * 128
        assert series(live.url, "wattserve_request_duration_seconds_count") == finals_count(live.url)
        assert series(live.url, "wattserve_tokens_total") == record["tokens_in"] + record["tokens_out"]
        assert series(live.url, "wattserve_request_duration_seconds_sum") == pytest.approx(record["duration_s"])
        # a timeout while the input is tokenised: the id is given, as its inference runs if the input is accepted
        # (here: it is truncated to fit); one refused instead would have no record, and the message says so
        r = httpx.post(f"{live.url}/v1/models/gen/infer", json={"inputs": "energy " * 120_000, "max_new_tokens": 1},
                       timeout=60)
        assert r.status_code == 504 and "while its input was being read" in r.json()["detail"]
        assert wait_for(lambda: httpx.get(f"{live.url}/v1/requests/{r.headers['x-request-id']}/energy")
                        .json().get("status") == "final")


def test_tokenising_is_inside_the_request_s_window(tmp_path_factory, monkeypatch_env):
    """The record's window opened after tokenising: a 0.75 MB input's seconds of tokenising went to idle and its
    record said ~10 ms, while Server-Timing's inference said seconds. Now both hold the tokenising."""
    settings = Settings(port=free_port(), registry=registry(tmp_path_factory, monkeypatch_env))
    with LiveServer(settings) as live:
        r = httpx.post(f"{live.url}/v1/models/gen/infer", timeout=60,
                       json={"inputs": "energy " * 120_000, "max_new_tokens": 1})  # cut to the model's 512 tokens
        assert r.status_code == 200, r.text
        timing = dict(part.split(";dur=") for part in r.headers["server-timing"].split(", "))
        request_id = r.headers["x-request-id"]
        assert wait_for(lambda: httpx.get(f"{live.url}/v1/requests/{request_id}/energy").json()["status"]
                        == "final")
        record = httpx.get(f"{live.url}/v1/requests/{request_id}/energy").json()
        assert float(timing["inference"]) > 50  # tokenising 120,000 words
        assert record["duration_s"] * 1e3 == pytest.approx(float(timing["inference"]), abs=1.0)


@pytest.mark.parametrize("path, body", [
    ("/v1/models/gen/infer", SLOW),
    # streams were not watched while queued: dropped ones ran in full, with records and tokens
    ("/v1/completions", {"model": "gen", "prompt": "energy", "max_tokens": 100, "stream": True})],
    ids=["infer", "stream"])
def test_client_leaving_while_queued_costs_nothing(tmp_path_factory, monkeypatch_env, caplog, path, body):
    import logging

    settings = Settings(port=free_port(), registry=registry(tmp_path_factory, monkeypatch_env))
    uvicorn_log = logging.getLogger("uvicorn.error")  # it does not propagate to the root, where caplog listens
    with LiveServer(settings) as live:
        uvicorn_log.addHandler(caplog.handler)  # after start: uvicorn's logging config resets the handlers
        before = finals_count(live.url)

        async def scenario():
            async with httpx.AsyncClient(timeout=60) as client:
                running = asyncio.create_task(client.post(f"{live.url}/v1/models/gen/infer", json=SLOW))
                await asyncio.sleep(0.05)
                async with httpx.AsyncClient(timeout=60) as other:  # its own connection, dropped while queued
                    queued = asyncio.create_task(other.post(live.url + path, json=body))
                    await asyncio.sleep(0.05)
                    queued.cancel()
                return await running

        assert asyncio.run(scenario()).status_code == 200
        assert wait_for(lambda: finals_count(live.url) >= before + 1)
        time.sleep(1.5)  # the dropped request would have run by now: ~0.5 s of work
        assert finals_count(live.url) == before + 1
    uvicorn_log.removeHandler(caplog.handler)
    # an ordinary departure, not an error with a 60-line traceback in the log
    assert not [r for r in caplog.records if "Exception in ASGI application" in r.getMessage()]


def test_graceful_shutdown_finishes_in_flight_requests_with_final_energy(tmp_path_factory, monkeypatch_env):
    settings = Settings(port=free_port(), registry=registry(tmp_path_factory, monkeypatch_env))
    live = LiveServer(settings).__enter__()
    result = {}

    def call():
        result["r"] = httpx.post(f"{live.url}/v1/models/gen/infer", json=SLOW, timeout=60)

    import threading

    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.1)
    live.__exit__(None, None, None)  # should_exit while the request runs
    t.join(60)
    r = result["r"]
    assert r.status_code == 200
    record = live.app.state.runtime.metering.record(r.headers["X-Request-Id"])
    assert record is not None and str(record.status) == "final" and record.energy_j > 0


def test_a_server_without_any_meter_says_so_in_headers_and_system(tmp_path, tiny_classifier):
    from service.energy import Metering
    from service.energy.meters.base import NullMeter

    registry = tmp_path / "models.yaml"
    registry.write_text(f"models:\n  - name: tiny\n    task: text-classification\n    source: {tiny_classifier}\n"
                        "    device: cpu\n    demo: true\n")
    metering = Metering([NullMeter("no energy meter is available")],
                        meter_notes={"estimate": "unavailable: codecarbon is not installed"})
    with LiveServer(Settings(port=free_port(), registry=registry), metering=metering) as live:
        r = httpx.post(f"{live.url}/v1/models/tiny/infer", json={"inputs": "fine"})
        system = httpx.get(f"{live.url}/v1/system").json()
    assert r.status_code == 200
    assert r.headers["X-Energy-Method"] == "none" and float(r.headers["X-Energy-Joules"]) == 0
    assert system["meters"] == {} and "codecarbon" in system["meter_notes"]["estimate"]


def test_health_answers_while_models_load_and_each_model_becomes_ready_on_its_own(tmp_path, tiny_classifier,
                                                                                monkeypatch):
    import threading

    from loadtest.server import ServerClient
    from service.tasks import TaskSpec

    gate = threading.Event()
    load = TaskSpec.load

    def gated_load(self, spec, device):
        if spec.name == "slow":
            gate.wait(60)
        return load(self, spec, device)

    monkeypatch.setattr(TaskSpec, "load", gated_load)
    registry = tmp_path / "models.yaml"
    registry.write_text("models:\n" + "".join(
        f"  - name: {name}\n    task: text-classification\n    source: {tiny_classifier}\n    device: cpu\n"
        for name in ("fast", "slow")))
    live = LiveServer(Settings(port=free_port(), registry=registry))
    live.thread.start()  # not __enter__: that waits for every model
    try:
        assert wait_for(lambda: live.server.started)
        assert httpx.get(live.url + "/healthz").status_code == 200
        assert wait_for(lambda: httpx.get(live.url + "/v1/models/fast").json()["state"] == "ready")
        ready = httpx.get(live.url + "/readyz")
        assert ready.status_code == 503 and ready.json()["models"]["slow"]["state"] == "loading"
        assert 'wattserve_model_state{model="slow",state="loading"} 1.0' in httpx.get(live.url + "/metrics").text
        assert httpx.post(live.url + "/v1/models/fast/infer", json={"inputs": "fine"}).status_code == 200
        waiting = httpx.post(live.url + "/v1/models/slow/infer", json={"inputs": "fine"})
        assert waiting.status_code == 503 and "loading" in waiting.json()["detail"]
        assert waiting.headers["Retry-After"] == "5"
        gate.set()
        models = ServerClient(live.url).models_when_loaded(timeout_s=60)  # what a campaign does first
        assert models["slow"]["state"] == "ready"
        assert httpx.get(live.url + "/readyz").status_code == 200
        assert httpx.post(live.url + "/v1/models/slow/infer", json={"inputs": "fine"}).status_code == 200
    finally:
        gate.set()
        live.__exit__(None, None, None)


def test_strict_refuses_to_serve_when_a_model_fails_to_load(tmp_path, tiny_classifier):
    registry = tmp_path / "models.yaml"
    registry.write_text(f"models:\n  - name: good\n    task: text-classification\n    source: {tiny_classifier}\n"
                        f"    device: cpu\n  - name: broken\n    task: text-classification\n"
                        f"    source: {tmp_path / 'missing'}\n")
    import threading

    live, exits = LiveServer(Settings(port=free_port(), registry=registry, strict=True)), []

    def run() -> None:
        try:
            live.server.run()
        except SystemExit as exc:
            exits.append(exc.code)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(60)  # the lifespan's startup fails: uvicorn gives up without serving
    assert not thread.is_alive() and not live.server.started and exits == [3]
    with pytest.raises(httpx.ConnectError):
        httpx.get(live.url + "/healthz")


def test_the_power_model_does_not_learn_while_models_load(tmp_path, tiny_classifier, monkeypatch):
    from service.energy import Metering
    from service.energy.meters.simulated import SimulatedDevice, SimulatedMeter
    from service.registry import load_registry
    from service.runtime import Runtime
    from service.tasks import TaskSpec

    registry = tmp_path / "models.yaml"
    registry.write_text(f"models:\n  - name: m\n    task: text-classification\n    source: {tiny_classifier}\n"
                        "    device: cpu\n")
    metering = Metering([SimulatedMeter({"cpu0": SimulatedDevice(10.0, {})}, component=Component.CPU)])
    runtime = Runtime(Settings(registry=registry), load_registry(registry), metering)
    seen = []
    load = TaskSpec.load
    monkeypatch.setattr(TaskSpec, "load", lambda self, spec, device: seen.append(
        metering.attributor.learn_after_s) or load(self, spec, device))
    before = metering.clock()
    runtime.load_in_background(then=lambda: seen.append(metering.attributor.learn_after_s)).join(60)
    # not while loading, nor while the heap is collected and frozen afterwards; again from when that was done
    assert seen == [float("inf"), float("inf")] and runtime.models["m"].state == "ready"
    assert before < metering.attributor.learn_after_s <= metering.clock()


def test_shutdown_waits_for_in_flight_requests_only_so_long(tmp_path, tiny_classifier):
    """SIGTERM with a client stuck mid-body: the server waited for it without end (20 s and more), so an
    orchestrator killed it before the shutdown steps that record the last requests' final energy could run."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    registry = tmp_path / "models.yaml"
    registry.write_text(f"models:\n  - name: tiny\n    task: text-classification\n    source: {tiny_classifier}\n"
                        "    device: cpu\n")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--registry",
                             str(registry), "--shutdown-timeout-s", "1"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "WATTSERVE_STRICT": "true"})
    try:
        assert wait_for(lambda: _ready(f"http://127.0.0.1:{port}"), 120)
        stuck = socket.create_connection(("127.0.0.1", port))
        stuck.sendall(b"POST /v1/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100\r\n\r\n{\"inputs\"")
        time.sleep(0.3)
        t0 = time.time()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        assert time.time() - t0 < 10
        stuck.close()
    finally:
        proc.kill()


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
