"""Campaign result folders written by hand, exactly as the runner's layout (RESULTS/runs/<run_id>/...)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HARDWARE = {"cpu_model": "Test CPU @ 2.0GHz", "cpu_threads": 2, "ram_gb": 23.5, "gpus": [],
            "meters": {"cpu": {"component": "cpu", "method": "estimated"},
                       "ram": {"component": "ram", "method": "estimated"}}}
CARBON = {"intensity_g_per_kwh": 475.0, "source": "constant", "pue": 1.0}
PARAMETERS = {"demo-text-classification": 1_234_567, "all-MiniLM-L6-v2": 22_713_216, "demo-summarization": None}


@dataclass
class ResultsDir:
    """Writes runs; keeps what it wrote so tests can recompute every figure by hand."""

    root: Path
    campaign: str = "demo"
    written: dict[str, dict] = field(default_factory=dict)

    def __post_init__(self) -> None:
        (self.root / "runs").mkdir(parents=True, exist_ok=True)
        (self.root / "campaign.yaml").write_text(f"name: {self.campaign}\nrepetitions: 3\n", encoding="utf-8")

    def _base(self, model: str, task: str, dataset: str, rep: int, kind: str, status: str, reason: str | None):
        run_id = f"{model}__{dataset}__{kind}{rep:02d}" if kind == "load" else f"{model}__{dataset}__rep{rep:02d}"
        return run_id, {
            "schema": 1, "run_id": run_id, "kind": kind, "status": status, "reason": reason,
            "campaign": self.campaign, "model": model, "task": task, "model_parameters": PARAMETERS.get(model),
            "model_demo": model.startswith("demo-"), "model_source": f"demo:{task}",
            "dataset": {"name": dataset, "source": f"bundled:{dataset}", "config": None, "split": "test",
                        "synthetic": dataset != "imdb", "seed": 0},
            "repetition": rep, "repetitions": 3, "samples": 40, "warmup": 2,
            "server": {"url": "http://127.0.0.1:8123", "version": "0.1.0", "embedded": True},
            "hardware": HARDWARE, "carbon": CARBON, "accounting": "loaded",
            "started_at": f"2026-11-27T08:{rep:02d}:00+00:00", "ended_at": f"2026-11-27T08:{rep:02d}:30+00:00"}

    def add_run(self, model: str, task: str, dataset: str, rep: int, *, energies_j: list[float],
                latencies_s: list[float], errors: int = 0, method: str = "estimated", tokens_in: int = 100,
                tokens_out: int = 0, window_j: float | None = None, paper_j: float | None = None,
                declared_requests_j: float | None = None) -> str:
        """A complete replay run: one ok request per energy, then ``errors`` connection failures."""
        run_id, meta = self._base(model, task, dataset, rep, "replay", "complete", None)
        t0 = 1.8e9 + rep * 100.0
        requests, finals = [], []
        for seq, (e, lat) in enumerate(zip(energies_j, latencies_s, strict=True)):
            requests.append({"seq": seq, "sample": seq, "request_id": f"{run_id}-{seq}", "status": 200,
                             "latency_s": lat, "started_at": t0 + seq, "energy_j": e, "energy_gpu_j": 0.0,
                             "energy_cpu_j": 0.8 * e, "energy_ram_j": 0.2 * e, "energy_method": method,
                             "energy_status": "provisional", "carbon_g": e / 3.6e6 * 475.0, "error": None})
            finals.append({"seq": seq, "request_id": f"{run_id}-{seq}", "status": "final", "energy_j": e,
                           "active_j": 0.9 * e, "idle_j": 0.1 * e, "method": method, "duration_s": lat * 0.9,
                           "queue_s": 0.0001, "tokens_in": tokens_in + seq % 3, "tokens_out": tokens_out,
                           "components": {"cpu": {"energy_j": 0.8 * e, "active_j": 0.7 * e, "idle_j": 0.1 * e,
                                                  "method": method}},
                           "carbon": {"intensity_g_per_kwh": 475.0, "pue": 1.0, "operational_g": e / 3.6e6 * 475.0,
                                      "embodied_g": 0.0, "sci_g": e / 3.6e6 * 475.0}})
        for k in range(errors):
            seq = len(requests)
            requests.append({"seq": seq, "sample": seq, "request_id": None, "status": 0, "latency_s": 0.001 + k,
                             "started_at": t0 + seq, "energy_j": None, "energy_gpu_j": None, "energy_cpu_j": None,
                             "energy_ram_j": None, "energy_method": None, "energy_status": None, "carbon_g": None,
                             "error": "connection refused"})
        total = sum(e for e in energies_j)
        window_j = 1.5 * total if window_j is None else window_j
        paper_j = 6.0 * total if paper_j is None else paper_j
        energy = {"requests": total if declared_requests_j is None else declared_requests_j,
                  "device_window": window_j, "paper": paper_j}
        meta.update({
            "window": {"start_s": t0, "end_s": t0 + 30.0, "duration_s": 30.0},
            "requests": {"sent": len(requests), "ok": len(finals), "errors": errors},
            "energy_j": energy, "energy_method": {"requests": method, "device_window": "estimated",
                                                  "paper": "estimated"},
            "energy_components_j": {m: {"gpu": 0.0, "cpu": 0.8 * v, "ram": 0.2 * v} for m, v in energy.items()},
            "carbon_g": {m: v / 3.6e6 * 475.0 for m, v in energy.items()},
            "tokens_in": sum(f["tokens_in"] for f in finals), "tokens_out": tokens_out * len(finals)})
        self._write(run_id, meta, requests, finals)
        return run_id

    def add_status_run(self, model: str, task: str, dataset: str, rep: int, status: str, reason: str | None) -> str:
        run_id, meta = self._base(model, task, dataset, rep, "replay", status, reason)
        self._write(run_id, meta, None, None)
        return run_id

    def add_load_run(self, model: str, task: str, dataset: str, stages: list[dict]) -> str:
        run_id, meta = self._base(model, task, dataset, 1, "load", "complete", None)
        meta.update({"stages": stages, "requests": {"sent": sum(s["requests"] for s in stages),
                                                    "ok": sum(s["requests"] - s["errors"] for s in stages),
                                                    "errors": sum(s["errors"] for s in stages)},
                     "energy_j": {"requests": 10.0, "device_window": 20.0, "paper": 80.0},
                     "energy_method": {"requests": "estimated", "device_window": "estimated", "paper": "estimated"},
                     "carbon_g": {"requests": 0.001, "device_window": 0.002, "paper": 0.008}})
        self._write(run_id, meta, [], [])
        return run_id

    def add_corrupt_run(self, name: str, text: str = "{not json") -> str:
        (self.root / "runs" / name).mkdir()
        (self.root / "runs" / name / "run.json").write_text(text, encoding="utf-8")
        return name

    def _write(self, run_id: str, meta: dict, requests: list | None, finals: list | None) -> None:
        d = self.root / "runs" / run_id
        d.mkdir()
        (d / "run.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        for name, rows in (("requests.jsonl", requests), ("final.jsonl", finals)):
            if rows is not None:
                (d / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        self.written[run_id] = {"meta": meta, "requests": requests, "finals": finals}


# Energy per request of 3.6 J is exactly 0.001 kWh per 1,000 inferences: 3.6 x 1,000 / 3.6e6.
J_FOR_1E3_KWH_PER_1000 = 3.6
N = 40  # ok requests per replay run


def _latencies(rep: int) -> list[float]:
    return [0.010 + 0.001 * ((seq * 7 + rep) % N) for seq in range(N)]


def build_campaign(root: Path) -> ResultsDir:
    """3 models of 3 tasks, 2 datasets each, 3 repetitions each; a failed, a running and a corrupt run; a load run.

    demo-text-classification on imdb: every request costs 3.6, 7.2, 10.8 J in repetitions 1, 2, 3, so its
    requests-mode figure is 1e-3, 2e-3, 3e-3 kWh per 1,000: mean 2e-3, sd 1e-3 (by hand).
    """
    res = ResultsDir(root)
    plan = [("demo-text-classification", "text-classification", "imdb", 1.0, "estimated"),
            ("demo-text-classification", "text-classification", "rotten_tomatoes", 0.5, "estimated"),
            ("all-MiniLM-L6-v2", "feature-extraction", "imdb", 0.25, "measured"),
            ("all-MiniLM-L6-v2", "feature-extraction", "rotten_tomatoes", 0.3, "measured"),
            ("demo-summarization", "summarization", "cnn_dailymail", 20.0, "estimated"),
            ("demo-summarization", "summarization", "samsum", 15.0, None)]
    for model, task, dataset, scale, method in plan:
        for rep in (1, 2, 3):
            if model == "demo-text-classification" and dataset == "imdb":
                energies = [J_FOR_1E3_KWH_PER_1000 * rep] * N
            else:
                energies = [scale * (1.0 + 0.05 * ((seq * 3 + rep) % 11)) for seq in range(N)]
            res.add_run(model, task, dataset, rep, energies_j=energies, latencies_s=_latencies(rep),
                        errors=2 if (dataset == "rotten_tomatoes" and rep == 2) else 0,
                        method=method or ("measured" if rep == 1 else "estimated"),
                        tokens_out=10 if task == "summarization" else 0)
    res.add_status_run("demo-text-classification", "text-classification", "imdb", 4, "failed",
                       "server died: exit code -9 | OOM")
    res.add_status_run("demo-summarization", "summarization", "samsum", 4, "running", None)
    res.add_corrupt_run("zz-broken__imdb__rep01")
    res.add_load_run("all-MiniLM-L6-v2", "feature-extraction", "imdb", [
        {"stage": i, "users": u, "duration_s": 10, "requests": 100 * u, "errors": 0, "rps": 10.0 * u,
         "energy_j_per_request": 0.5 / u + 0.1, "latency_p50_s": 0.02 * u, "latency_p95_s": 0.05 * u,
         "device_power_w": 30.0 + 5 * u} for i, u in enumerate((1, 2, 4))])
    return res


@pytest.fixture
def campaign_results(tmp_path: Path) -> ResultsDir:
    """The campaign of ``build_campaign`` in this test's temporary folder (e.g. for the CLI's report command)."""
    return build_campaign(tmp_path / "results")
