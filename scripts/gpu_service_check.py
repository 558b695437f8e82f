"""The service on one NVIDIA GPU (about 2 min): real NVML, real uvicorn on 127.0.0.1, real HTTP.

1. Builds a random-init BERT-base sequence classifier (RANDOM weights, a tokenizer trained offline: a timing and
   energy stand-in, its labels mean nothing) and serves it on ``cuda:0`` with every task's demo model beside it,
   through ``bench/serve_pair.py``: the same registry in two apps of one process, metering on and off.
2. Every task once on the GPU: status, energy headers (the GPU part must be measured, method ``mixed`` or
   ``measured``).
3. BERT-base, 128-token inputs, one request at a time, metered and unmetered apps in adjacent pairs of
   alternating order: the p50 latency ratio, and provisional vs final GPU joules from the lookup endpoint.
4. ``/metrics`` of the metered app: per-request joules + idle = device counter, per device.

Usage: python scripts/gpu_service_check.py [--out DIR] [--device cuda:0]. ``--device cpu`` runs the same plumbing
without a GPU (no GPU figures then: a smoke test). Prints a table; the last line is JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from bench_serving import start_pair  # noqa: E402

from loadtest.server import ServerClient  # noqa: E402

TASK_CALLS = {  # demo model -> (path, body)
    "demo-text-classification": ("/v1/models/demo-text-classification/infer", {"inputs": "a great movie"}),
    "demo-fill-mask": ("/v1/models/demo-fill-mask/infer", {"inputs": "Paris is the [MASK] of France."}),
    "demo-token-classification": ("/v1/models/demo-token-classification/infer",
                                  {"inputs": "Alice works at Hugging Face in New York."}),
    "demo-text-generation": ("/v1/completions", {"model": "demo-text-generation", "prompt": "How much energy",
                                                 "max_tokens": 8}),
    "demo-summarization": ("/v1/models/demo-summarization/infer",
                           {"inputs": "Carbon emissions follow from the energy and from the grid."}),
    "demo-question-answering": ("/v1/models/demo-question-answering/infer",
                                {"inputs": {"question": "What is the capital?",
                                            "context": "Paris is the capital of France."}}),
    "bert-base-random-embeddings": ("/v1/embeddings", {"model": "bert-base-random-embeddings", "input": "energy"}),
}
ENERGY_HEADERS = ("x-energy-joules", "x-energy-gpu-joules", "x-energy-cpu-joules", "x-energy-ram-joules",
                  "x-energy-method", "x-energy-status")


def build_bert_base(folder: Path) -> None:
    """Random-init BERT-base (110 M parameters) with the demo text-classification tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from service.models.demo import demo_model_path

    tok = AutoTokenizer.from_pretrained(demo_model_path("text-classification"))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tok), num_labels=2, id2label={0: "NEGATIVE", 1: "POSITIVE"},
                        label2id={"NEGATIVE": 0, "POSITIVE": 1})
    BertForSequenceClassification(config).save_pretrained(folder)
    tok.save_pretrained(folder)


def registry(folder: Path, device: str) -> Path:
    lines = ["models:",
             f"  - {{name: bert-base-random, task: text-classification, source: '{folder / 'bert-base'}',"
             f" device: '{device}', max_input_tokens: 512, demo: true}}"]
    for name in TASK_CALLS:
        task = name.removeprefix("demo-")
        source = f"demo:{task}"
        if name == "bert-base-random-embeddings":
            task, source = "feature-extraction", str(folder / "bert-base")
        extra = ", generation: {max_new_tokens: 8, max_new_tokens_limit: 64}" if task in (
            "text-generation", "summarization") else ""
        lines.append(f"  - {{name: {name}, task: {task}, source: '{source}', device: '{device}', demo: true,"
                     f" truncate: true{extra}}}")
    path = folder / "models.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def scrape(client: httpx.Client, url: str) -> dict[str, float]:
    out = {}
    for line in client.get(f"{url}/metrics").text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--pairs", type=int, default=300)
    args = ap.parse_args()
    report: dict = {"device": args.device}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ["WATTSERVE_DEMO_DIR"] = str(folder / "demo")
        build_bert_base(folder / "bert-base")
        reg = registry(folder, args.device)
        proc, ports = start_pair(reg)  # one process, the same registry in two apps: metering on and off
        on, off = (f"http://127.0.0.1:{ports[k]}" for k in ("metered", "unmetered"))
        try:
            with httpx.Client(timeout=60.0) as client, contextlib.closing(ServerClient(on)) as server:
                report["system"] = server.system()
                report["tasks"] = tasks = {}
                for name, (path, body) in TASK_CALLS.items():
                    r = client.post(on + path, json=body)
                    tasks[name] = {"status": r.status_code, **{h: r.headers.get(h) for h in ENERGY_HEADERS}}
                text = " ".join(["energy"] * 126)  # 126 words + [CLS] + [SEP] = 128 tokens
                infer = "/v1/models/bert-base-random/infer"
                for url in (on, off):  # warm-up: CUDA kernels, allocator
                    for _ in range(20):
                        client.post(url + infer, json={"inputs": text}).raise_for_status()
                lat: dict[str, list[float]] = {on: [], off: []}
                provisional_gpu_j: dict[str, float] = {}
                for i in range(args.pairs):
                    for url in ((on, off) if i % 2 == 0 else (off, on)):
                        t0 = time.perf_counter()
                        r = client.post(url + infer, json={"inputs": text})
                        lat[url].append(time.perf_counter() - t0)
                        r.raise_for_status()
                        if url == on:
                            provisional_gpu_j[r.headers["x-request-id"]] = float(r.headers["x-energy-gpu-joules"])
                finals = {rid: server.final_record(rid) for rid in provisional_gpu_j}
                time.sleep(0.3)  # the last finals reach /metrics
                m = scrape(client, on)
        finally:
            proc.terminate()
            proc.wait(30)
    gpu_final = [f["components"].get("gpu", {}).get("energy_j", 0.0) for f in finals.values()]
    gpu_prov = [provisional_gpu_j[rid] for rid in finals]
    total_final = [f["energy_j"] for f in finals.values()]
    report["bert"] = {
        "pairs": args.pairs,
        "p50_ms": {"metered": statistics.median(lat[on]) * 1e3, "unmetered": statistics.median(lat[off]) * 1e3},
        "metered_vs_unmetered_p50_ratio": statistics.median(lat[on]) / statistics.median(lat[off]),
        "final_statuses": sorted({f["status"] for f in finals.values()}),
        "methods": sorted({f["method"] for f in finals.values()}),
        "gpu_J_final_mean": statistics.mean(gpu_final),
        "gpu_J_provisional_mean": statistics.mean(gpu_prov),
        "total_J_final_mean": statistics.mean(total_final),
        "provisional_vs_final_gpu_ratio": statistics.mean(gpu_prov) / max(statistics.mean(gpu_final), 1e-12),
    }
    balance = {}
    devices = sorted({k.split('device="')[1].split('"')[0] for k in m
                      if k.startswith("wattserve_device_energy_joules_total{")})
    for dev in devices:
        component = dev.rstrip("0123456789")
        per_request = sum(v for k, v in m.items()
                          if k.startswith("wattserve_energy_joules_total{") and f'component="{component}"' in k)
        idle = m.get(f'wattserve_idle_energy_joules_total{{device="{dev}"}}', 0.0)
        device = next(v for k, v in m.items()
                      if k.startswith("wattserve_device_energy_joules_total{") and f'device="{dev}"' in k)
        balance[dev] = {"per_request_J": per_request, "idle_J": idle, "device_J": device,
                        "rel_error": abs(per_request + idle - device) / max(device, 1e-12)}
    report["metrics_balance"] = balance
    print(f"device {args.device}; meters: {json.dumps(report['system'].get('meters'))}")
    print(f"{'model':28s} {'status':>6s} {'J':>9s} {'GPU J':>9s} {'method':>10s} {'status':>12s}")
    for name, t in tasks.items():
        print(f"{name:28s} {t['status']:6d} {t['x-energy-joules'] or '-':>9s} {t['x-energy-gpu-joules'] or '-':>9s}"
              f" {t['x-energy-method'] or '-':>10s} {t['x-energy-status'] or '-':>12s}")
    b = report["bert"]
    print(f"bert-base 1x128: p50 metered {b['p50_ms']['metered']:.2f} ms, unmetered {b['p50_ms']['unmetered']:.2f} ms,"
          f" ratio {b['metered_vs_unmetered_p50_ratio']:.4f}; GPU J/request final {b['gpu_J_final_mean']:.4f},"
          f" provisional {b['gpu_J_provisional_mean']:.4f}; finals {b['final_statuses']} {b['methods']}")
    for dev, bal in balance.items():
        print(f"balance {dev}: per-request {bal['per_request_J']:.3f} + idle {bal['idle_J']:.3f}"
              f" vs device {bal['device_J']:.3f} J (rel error {bal['rel_error']:.1e})")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "gpu_service_check.json").write_text(json.dumps(report, indent=1, default=str))
    print(json.dumps(report, default=str))


if __name__ == "__main__":
    main()
