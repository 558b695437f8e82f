"""make bench-serving: what HTTP serving and metering cost. Last line: one JSON object.

One client, sequential, single sentences, the embedded all-MiniLM-L6-v2, three ways alternated in one run:
in-process (the same runner called directly), HTTP to a uvicorn server with metering on, and HTTP to one with
metering off (two server processes on 127.0.0.1; only one is busy at a time).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
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


def start_server(metering: bool, registry: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--registry", str(registry)]
    cmd += [] if metering else ["--no-metering"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not become ready")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pairs", type=int, default=3, help="fresh metered/unmetered server pairs (process noise)")
    ap.add_argument("--rounds", type=int, default=8, help="alternations per pair")
    ap.add_argument("--requests", type=int, default=25, help="requests per block")
    args = ap.parse_args()
    from service.registry import load_registry
    from service.settings import EMBEDDED_REGISTRY
    from service.tasks import TASKS, EmbeddingRequest

    spec = load_registry(EMBEDDED_REGISTRY).models[0]  # all-MiniLM-L6-v2
    runner = TASKS[spec.task].runner(spec, "cpu")
    registry = Path(tempfile.mkdtemp()) / "minilm.yaml"
    registry.write_text(f"models:\n  - name: {spec.name}\n    task: {spec.task}\n    source: {spec.source}\n"
                        f"    device: cpu\n    max_input_tokens: {spec.max_input_tokens}\n")

    def inprocess(text: str) -> None:
        runner.run(runner.prepare(EmbeddingRequest(inputs=text)))

    def over_http(conn: http.client.HTTPConnection):
        def call(text: str) -> None:
            conn.request("POST", f"/v1/models/{spec.name}/infer", json.dumps({"inputs": text}),
                         {"content-type": "application/json"})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}")
        return call

    latencies: dict[str, list[float]] = {"inprocess": [], "metered": [], "unmetered": []}
    throughput_ratios, p50_ratios = [], []
    for pair in range(args.pairs):
        order = [True, False] if pair % 2 == 0 else [False, True]  # which server starts first alternates too
        servers = {("metered" if m else "unmetered"): start_server(m, registry) for m in order}
        try:
            # the standard library's client: httpx adds ~2 ms per request here (the client's cost, not the server's)
            conns = {k: http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=30)
                     for k, (_, url) in servers.items()}
            ways = {"inprocess": inprocess, "metered": over_http(conns["metered"]),
                    "unmetered": over_http(conns["unmetered"])}
            for way in ways.values():  # warm-up
                for text in SENTENCES[:10]:
                    way(text)
            pair_lat: dict[str, list[float]] = {k: [] for k in ways}
            names = list(ways)
            for r in range(args.rounds):
                blocks = {}
                for name in names[r % 3:] + names[:r % 3]:  # rotate: no way always goes first
                    t_block = time.perf_counter()
                    for i in range(args.requests):
                        t0 = time.perf_counter()
                        ways[name](SENTENCES[(r * args.requests + i) % len(SENTENCES)])
                        pair_lat[name].append(time.perf_counter() - t0)
                    blocks[name] = time.perf_counter() - t_block
                throughput_ratios.append(blocks["inprocess"] / blocks["metered"])
            p50_ratios.append(statistics.median(pair_lat["metered"]) / statistics.median(pair_lat["unmetered"]))
            for k, v in pair_lat.items():
                latencies[k] += v
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(30)
    p50 = {k: statistics.median(v) * 1e3 for k, v in latencies.items()}
    print(json.dumps({
        "served_vs_inprocess_throughput_ratio": round(statistics.median(throughput_ratios), 4),
        "metered_vs_unmetered_p50_ratio": round(statistics.median(p50_ratios), 4),
        "metered_vs_unmetered_p50_ratio_per_pair": [round(x, 4) for x in p50_ratios],
        "p50_ms": {k: round(v, 3) for k, v in p50.items()},
        "requests_per_way": args.pairs * args.rounds * args.requests,
        "cpu_threads": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
