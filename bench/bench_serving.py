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


def start_server(metering: bool) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "service.cli", "serve", "--port", str(port)] + ([] if metering else ["--no-metering"])
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
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--requests", type=int, default=30, help="requests per block")
    args = ap.parse_args()
    from service.registry import load_registry
    from service.settings import EMBEDDED_REGISTRY
    from service.tasks import TASKS, EmbeddingRequest

    spec = load_registry(EMBEDDED_REGISTRY).models[0]
    runner = TASKS[spec.task].runner(spec, "cpu")
    servers = {"metered": start_server(True), "unmetered": start_server(False)}
    # the standard library's client: httpx adds ~2 ms per request here, which is the client's cost, not the server's
    clients = {k: http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1]), timeout=30)
               for k, (_, url) in servers.items()}
    try:
        def inprocess(text: str) -> None:
            runner.run(runner.prepare(EmbeddingRequest(inputs=text)))

        def over_http(name: str):
            def call(text: str) -> None:
                conn = clients[name]
                conn.request("POST", "/v1/models/all-MiniLM-L6-v2/infer", json.dumps({"inputs": text}),
                             {"content-type": "application/json"})
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}")
            return call

        ways = {"inprocess": inprocess, "metered": over_http("metered"), "unmetered": over_http("unmetered")}
        latencies: dict[str, list[float]] = {k: [] for k in ways}
        blocks: dict[str, list[float]] = {k: [] for k in ways}
        for way in ways.values():  # warm-up
            for text in SENTENCES[:10]:
                way(text)
        order = list(ways)
        for r in range(args.rounds):
            for name in order[r % 3:] + order[:r % 3]:  # rotate the order: no way always goes first
                t_block = time.perf_counter()
                for i in range(args.requests):
                    t0 = time.perf_counter()
                    ways[name](SENTENCES[(r * args.requests + i) % len(SENTENCES)])
                    latencies[name].append(time.perf_counter() - t0)
                blocks[name].append(time.perf_counter() - t_block)
        p50 = {k: statistics.median(v) * 1e3 for k, v in latencies.items()}
        per_round = [blocks["inprocess"][i] / blocks["metered"][i] for i in range(args.rounds)]
        result = {
            "served_vs_inprocess_throughput_ratio": round(statistics.median(per_round), 4),
            "metered_vs_unmetered_p50_ratio": round(p50["metered"] / p50["unmetered"], 4),
            "p50_ms": {k: round(v, 3) for k, v in p50.items()},
            "requests_per_way": args.rounds * args.requests,
            "cpu_threads": os.cpu_count(),
        }
        print(json.dumps(result))
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
