"""Campaigns end to end: a real wattserve on 127.0.0.1 (in this process) and real Locust runs in their own
processes (`wattserve campaign run`, the locustfiles), checked against what the server itself received."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from loadtest.datasets import selection
from loadtest.jsonl import read_objects as read_jsonl
from service.settings import Settings
from tests.service.conftest import LiveServer, build_tiny_classifier, free_port

ROOT = Path(__file__).resolve().parents[2]
N_ROWS = 1200


class Received:
    """ASGI middleware: every inference body the server received, in arrival order (the server-side truth)."""

    def __init__(self, app) -> None:
        self.app, self.bodies = app, []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].endswith("/infer"):
            return await self.app(scope, receive, send)
        chunks: list[bytes] = []

        async def recording():
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    self.bodies.append((scope["path"].split("/")[3], json.loads(b"".join(chunks))))
            return message

        return await self.app(scope, recording, send)

    def texts(self, model: str, since: int = 0) -> list[str]:
        """Inputs sent to ``model`` among the bodies received from position ``since`` on."""
        return [b["inputs"] for m, b in self.bodies[since:] if m == model]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, list[str]]:
    folder = tmp_path_factory.mktemp("data")
    texts = [f"sample {i} says the film was {'good' if i % 2 else 'bad'} and long" for i in range(N_ROWS)]
    path = folder / "reviews.jsonl"
    path.write_text("".join(json.dumps({"review": t, "label": i % 2}) + "\n" for i, t in enumerate(texts)))
    return path, texts


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tiny_classifier = build_tiny_classifier(tmp_path_factory.mktemp("tiny-classifier"))
    folder = tmp_path_factory.mktemp("registry")
    registry = folder / "models.yaml"
    registry.write_text(f"""
models:
  - {{name: tiny-sentiment, task: text-classification, source: {tiny_classifier}, device: cpu, demo: true,
     truncate: true, max_input_tokens: 64}}
  - {{name: demo-fill-mask, task: fill-mask, source: "demo:fill-mask", device: cpu, demo: true, truncate: true}}
""")
    received: list[Received] = []

    def wrap(app):
        received.append(Received(app))
        return received[0]

    settings = Settings(port=free_port(), registry=registry, carbon_intensity_g_per_kwh=200.0, records_kept=50_000)
    with LiveServer(settings, wrap=wrap) as live:
        live.received = received[0]
        yield live


def write_campaign(path: Path, url: str, dataset: Path, samples: int, repetitions: int, models: str,
                   warmup: int = 3) -> Path:
    path.write_text(f"""
name: test
server: {url}
samples: {samples}
repetitions: {repetitions}
warmup: {warmup}
seed: 7
datasets:
  reviews: {{source: {dataset}, columns: {{text: review}}}}
models:
{models}
""")
    return path


def wattserve(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "service.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_full_1000_sample_replay_sends_each_sample_once_in_order(server, dataset, tmp_path):
    path, texts = dataset
    spec = write_campaign(tmp_path / "c.yaml", server.url, path, 1000, 1,
                          "  - {model: tiny-sentiment, datasets: [reviews]}")
    before = len(server.received.bodies)
    out = tmp_path / "out"
    done = wattserve("campaign", "run", str(spec), "--out", str(out), "--no-progress")
    assert done.returncode == 0, done.stdout + done.stderr
    order = [texts[i] for i in selection(N_ROWS, 1000, 7)]

    # server side: 3 warm-up requests, then the 1,000 selected samples, each once, in the seeded order
    got = [b for m, b in server.received.bodies[before:] if m == "tiny-sentiment"]
    assert [b["inputs"] for b in got] == order[:3] + order

    for run in ("tiny-sentiment__reviews__rep01",):
        folder = out / "runs" / run
        meta = json.loads((folder / "run.json").read_text())
        requests, finals = read_jsonl(folder / "requests.jsonl"), read_jsonl(folder / "final.jsonl")
        assert meta["status"] == "complete" and meta["requests"] == {"sent": 1000, "ok": 1000, "errors": 0}
        assert [r["seq"] for r in requests] == list(range(1000)) and all(r["status"] == 200 for r in requests)
        assert [f["request_id"] for f in finals] == [r["request_id"] for r in requests]
        assert len({r["request_id"] for r in requests}) == 1000
        # the results match the server's own records, and the run's total is their sum
        with httpx.Client(base_url=server.url) as client:
            for f in finals[::97]:
                record = client.get(f"/v1/requests/{f['request_id']}/energy").json()
                assert record["status"] == "final" and record["energy_j"] == f["energy_j"]
        assert meta["energy_j"]["requests"] == pytest.approx(sum(f["energy_j"] for f in finals), rel=1e-12)
        assert meta["tokens_in"] == sum(f["tokens_in"] for f in finals) > 0
        # the window holds every request whole, plus the gaps between them
        assert meta["energy_j"]["device_window"] >= meta["energy_j"]["requests"] * 0.999
        paper = meta["energy_components_j"]["paper"]
        assert paper["cpu"] == pytest.approx(meta["paper_constants"]["cpu_power_w"] * meta["paper_mode"]["duration_s"])
        assert meta["energy_method"]["requests"] == "estimated"  # no sensor on this machine: said so
        assert meta["dataset"]["synthetic"] is False and meta["carbon"]["intensity_g_per_kwh"] == 200.0

    report = wattserve("campaign", "report", str(out), "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stdout + report.stderr
    with (tmp_path / "report" / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    for run in ("tiny-sentiment",):
        finals = read_jsonl(out / "runs" / f"{run}__reviews__rep01" / "final.jsonl")
        expected = sum(f["energy_j"] for f in finals) / len(finals) * 1000 / 3.6e6
        row = next(r for r in rows if r["model"] == run and r["mode"] == "requests")
        assert float(row["kwh_per_1000_mean"]) == pytest.approx(expected, rel=1e-6)


def test_dry_run_checks_everything_and_sends_nothing(server, dataset, tmp_path):
    path, _ = dataset
    before = len(server.received.bodies)
    spec = write_campaign(tmp_path / "c.yaml", server.url, path, 10, 1,
                          "  - {model: tiny-sentiment, datasets: [reviews]}")
    done = wattserve("campaign", "run", str(spec), "--out", str(tmp_path / "out"), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "todo  tiny-sentiment__reviews__rep01" in done.stdout and "nothing sent" in done.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(spec.read_text().replace("text: review", "text: body").replace("tiny-sentiment", "nope"))
    done = wattserve("campaign", "run", str(bad), "--out", str(tmp_path / "out2"))
    assert done.returncode == 2
    assert "model 'nope' is not served" in done.stderr
    assert len(server.received.bodies) == before and not (tmp_path / "out2").exists()
    bad.write_text(spec.read_text().replace("text: review", "text: body"))
    done = wattserve("campaign", "run", str(bad), "--out", str(tmp_path / "out3"))
    assert done.returncode == 2 and "no column 'body'" in done.stderr and "its columns: review, label" in done.stderr
    assert len(server.received.bodies) == before


def test_killed_campaign_resumes_without_lost_or_duplicated_samples(server, dataset, tmp_path):
    path, texts = dataset
    spec = write_campaign(tmp_path / "c.yaml", server.url, path, 150, 2,
                          "  - {model: tiny-sentiment, datasets: [reviews]}", warmup=0)
    out = tmp_path / "out"
    second = out / "runs" / "tiny-sentiment__reviews__rep02"
    before = len(server.received.bodies)
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "campaign", "run", str(spec), "--out", str(out),
                             "--no-progress"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            if (second / "requests.jsonl").exists() and len(read_jsonl(second / "requests.jsonl")) >= 20:
                break
            assert proc.poll() is None, "the campaign ended before it could be killed"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # half-way through the second repetition
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    partial = (second / "requests.jsonl").read_text().count("\n")  # whole lines (a kill may tear the last one)
    assert 20 <= partial < 150 and json.loads((second / "run.json").read_text())["status"] == "running"
    first_meta = json.loads((out / "runs" / "tiny-sentiment__reviews__rep01" / "run.json").read_text())
    assert first_meta["status"] == "complete"

    done = wattserve("campaign", "run", str(spec), "--out", str(out), "--no-progress")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 complete run(s) kept, 1 to do" in done.stdout
    again = json.loads((out / "runs" / "tiny-sentiment__reviews__rep01" / "run.json").read_text())
    assert again == first_meta  # the completed repetition was not redone
    order = [texts[i] for i in selection(N_ROWS, 150, 7)]
    for rep in ("rep01", "rep02"):
        lines = read_jsonl(out / "runs" / f"tiny-sentiment__reviews__{rep}" / "requests.jsonl")
        assert [r["seq"] for r in lines] == list(range(150))  # none lost, none twice
    # server side: rep01 whole, rep02 cut after `partial` (maybe one more in flight), then rep02 whole again
    sent = server.received.texts("tiny-sentiment", before)
    assert sent[:150] == order and sent[-150:] == order
    assert partial <= len(sent) - 300 <= partial + 1 and sent[150:-150] == order[:len(sent) - 300]


def test_sequential_replay_with_the_locust_command_line(server, dataset, tmp_path):
    path, texts = dataset
    before = len(server.received.bodies)
    done = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtest" / "locustfile_replay.py"), "--headless",
         "-u", "1", "--host", server.url, "--wattserve-model", "demo-fill-mask", "--wattserve-dataset", str(path),
         "--wattserve-columns", "text=review", "--wattserve-samples", "25", "--wattserve-warmup", "2",
         "--wattserve-seed", "1", "--wattserve-results", str(tmp_path / "res"), "--only-summary"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    meta = json.loads((tmp_path / "res" / "run.json").read_text())
    assert meta["status"] == "complete" and meta["requests"]["ok"] == 25
    order = [texts[i] for i in selection(N_ROWS, 25, 1)]
    masked = server.received.texts("demo-fill-mask", before)
    assert len(masked) == 27 and all(t.count("[MASK]") == 1 for t in masked)  # the model's own mask token
    assert [t.split()[1] for t in masked] == [t.split()[1] for t in order[:2] + order]  # "sample <i>", in order


def test_distributed_load_with_a_master_and_two_workers(server, dataset, tmp_path):
    path, _ = dataset
    port = free_port()
    common = ["-f", str(ROOT / "loadtest" / "locustfile.py"), "--host", server.url,
              "--wattserve-model", "tiny-sentiment", "--wattserve-dataset", str(path),
              "--wattserve-columns", "text=review", "--wattserve-samples", "200"]
    before = len(server.received.bodies)
    master = subprocess.Popen(
        [sys.executable, "-m", "locust", *common, "--master", "--headless", "--expect-workers", "2",
         "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port), "--wattserve-stages", "2:8,4:6",
         "--wattserve-results", str(tmp_path / "res"), "--only-summary", "--exit-code-on-error", "0"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    workers = [subprocess.Popen([sys.executable, "-m", "locust", *common, "--worker", "--master-host", "127.0.0.1",
                                 "--master-port", str(port)], cwd=tmp_path, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL) for _ in range(2)]
    try:
        log, _ = master.communicate(timeout=240)
        for w in workers:
            w.wait(60)
    finally:
        for p in (master, *workers):
            if p.poll() is None:
                p.kill()
    assert master.returncode == 0, log[-3000:]
    meta = json.loads((tmp_path / "res" / "run.json").read_text())
    records = read_jsonl(tmp_path / "res" / "requests.jsonl")
    assert meta["status"] == "complete" and meta["distributed"] is True
    assert len({r["worker"] for r in records}) == 2  # both workers' requests reached the master's results
    received = len(server.received.texts("tiny-sentiment", before))
    assert len(records) == received > 0  # every request the server got is in the results, once
    failed = [r for r in records if r["status"] != 200]
    assert not failed, failed[:5]  # (the exit code ignores request errors: they are checked here, with detail)
    assert [s["users"] for s in meta["stages"]] == [2, 4]
    assert all(s["requests"] > 0 and s["energy_j_per_request"] > 0 and s["device_power_w"] > 0
               for s in meta["stages"]), (meta["stages"], meta["stage_marks"],
                                          sorted(r["started_at"] for r in records)[:3])
    assert sum(s["requests"] for s in meta["stages"]) == len(records)


def test_a_server_that_dies_mid_run_marks_the_run_failed(dataset, tmp_path):
    import psutil

    path, _ = dataset
    tiny = build_tiny_classifier(tmp_path / "tiny")
    registry = tmp_path / "models.yaml"
    registry.write_text(f"models:\n  - {{name: tiny, task: text-classification, source: {tiny}, device: cpu}}\n")
    spec = tmp_path / "c.yaml"
    spec.write_text(f"""
name: dying
server: {{registry: {registry}}}
samples: 1000
warmup: 0
datasets:
  reviews: {{source: {path}, columns: {{text: review}}}}
models:
  - {{model: tiny, datasets: [reviews]}}
""")
    out = tmp_path / "out"
    run = out / "runs" / "tiny__reviews__rep01"
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "campaign", "run", str(spec), "--out", str(out),
                             "--no-progress"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not ((run / "requests.jsonl").exists() and len(read_jsonl(run / "requests.jsonl")) >= 10):
            assert proc.poll() is None and time.time() < deadline, "the campaign never got going"
            time.sleep(0.05)
        servers = [p for p in psutil.Process(proc.pid).children() if "serve" in p.cmdline()]
        assert len(servers) == 1
        servers[0].kill()  # the embedded server dies mid-run
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, stdout + stderr
    assert "the server is gone" in stderr
    meta = json.loads((run / "run.json").read_text())
    assert meta["status"] == "failed"
    assert "exited with code -9" in meta["reason"]
    assert 10 <= len(read_jsonl(run / "requests.jsonl")) < 1000  # what was measured is kept for inspection


def test_a_keyed_server_is_measured_with_the_key(dataset, tmp_path):
    """The drivers sent the key on their own lookups but not on the inference requests: on a keyed server every
    measured request got 401, and the run was still 'complete' (and kept as such on resume: see
    test_units.py::test_a_run_that_measured_nothing_is_failed)."""
    path, _ = dataset
    registry = tmp_path / "models.yaml"
    registry.write_text(f"models:\n  - {{name: tiny-sentiment, task: text-classification, "
                        f"source: {build_tiny_classifier(tmp_path / 'tiny')}, device: cpu, truncate: true}}\n")
    settings = Settings(port=free_port(), registry=registry, api_keys="sekrit")
    with LiveServer(settings) as live:
        spec = tmp_path / "keyed.yaml"
        spec.write_text(write_campaign(tmp_path / "c.yaml", live.url, path, 12, 1,
                                       "  - {model: tiny-sentiment, datasets: [reviews]}", warmup=1).read_text()
                        .replace(f"server: {live.url}", f"server: {{url: {live.url}, api_key_env: AUDIT_KEY}}"))
        import os

        done = subprocess.run([sys.executable, "-m", "service.cli", "campaign", "run", str(spec), "--out",
                               str(tmp_path / "out"), "--no-progress"], capture_output=True, text=True, timeout=300,
                              cwd=ROOT, env={**os.environ, "AUDIT_KEY": "sekrit"})
        assert done.returncode == 0, done.stdout + done.stderr
        meta = json.loads((tmp_path / "out" / "runs" / "tiny-sentiment__reviews__rep01" / "run.json").read_text())
        assert meta["status"] == "complete" and meta["requests"] == {"sent": 12, "ok": 12, "errors": 0}
        load = subprocess.run(
            [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtest" / "locustfile.py"), "--headless",
             "--host", live.url, "--wattserve-model", "tiny-sentiment", "--wattserve-dataset", str(path),
             "--wattserve-columns", "text=review", "--wattserve-samples", "20", "--wattserve-stages", "2:3",
             "--wattserve-api-key", "sekrit", "--wattserve-results", str(tmp_path / "load"), "--only-summary",
             "--exit-code-on-error", "0"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert load.returncode == 0, load.stderr[-3000:]
        meta = json.loads((tmp_path / "load" / "run.json").read_text())
        assert meta["status"] == "complete" and meta["requests"]["ok"] == meta["requests"]["sent"] > 0
