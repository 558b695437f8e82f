"""Figures: one run's energy and carbon per 1,000 inferences by accounting mode, statistics, model and task rows.

Energy in joules (``energy_j``) and kWh per 1,000 successful inferences; carbon in operational gCO2e.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from loadtest.accounting import JOULES_PER_KWH, combine_methods
from loadtest.paper import PaperValue, paper_value, task_order
from loadtest.report.read import Run, dataset_label

MODES = ("requests", "device_window", "paper")
MODE_TITLES = {"requests": "per-request", "device_window": "device window", "paper": "paper mode"}


# ---------------------------------------------------------------- one run's figures

@dataclass(frozen=True)
class RunFigures:
    """A complete run's figures; energy and carbon are per 1,000 successful inferences."""

    sent: int
    ok: int
    errors: int
    energy_j: dict[str, float | None]
    kwh_per_1000: dict[str, float | None]
    g_co2e_per_1000: dict[str, float | None]
    method: dict[str, str]
    warnings: tuple[str, ...]
    energy_j_per_request: tuple[float, ...] = ()  # final records
    latency_s: tuple[float, ...] = ()  # successful requests
    tokens_in: tuple[float, ...] = ()  # final records
    tokens_out: tuple[float, ...] = ()


def _is_ok(line: dict) -> bool:
    return 200 <= int(line.get("status") or 0) < 300


def _operational_g(final: dict, carbon: dict) -> float:
    """A final record's operational gCO2e; from its energy, the grid intensity and PUE where the record lacks it."""
    g = (final.get("carbon") or {}).get("operational_g")
    if g is not None:
        return float(g)
    factor = float(carbon.get("intensity_g_per_kwh") or 0.0) * float(carbon.get("pue") or 1.0)
    return float(final.get("energy_j") or 0.0) / JOULES_PER_KWH * factor


def run_figures(run: Run) -> RunFigures:
    """Mode ``requests`` from final.jsonl (recomputed, cross-checked with run.json); the others from run.json."""
    meta = run.meta
    ok_lines = [q for q in run.requests if _is_ok(q)]
    ok, n = len(ok_lines), len(run.finals)
    energy = {"requests": math.fsum(float(f.get("energy_j") or 0.0) for f in run.finals)}
    carbon = {"requests": math.fsum(_operational_g(f, meta.get("carbon") or {}) for f in run.finals)}
    method = {"requests": combine_methods(str(f.get("method") or "unknown") for f in run.finals)
              if run.finals else "unknown"}  # the report writes "unknown" where accounting says "none"
    from_lines = bool(run.finals) or run.kind != "load"  # a load run may come with its stages only
    for mode in MODES if not from_lines else MODES[1:]:
        energy[mode] = (meta.get("energy_j") or {}).get(mode)
        carbon[mode] = (meta.get("carbon_g") or {}).get(mode)
        method[mode] = str((meta.get("energy_method") or {}).get(mode) or "unknown")
    per_1000 = 1000.0 / n if n else None
    kwh = {m: (e / JOULES_PER_KWH * per_1000 if per_1000 and e is not None else None) for m, e in energy.items()}
    grams = {m: (g * per_1000 if per_1000 and g is not None else None) for m, g in carbon.items()}
    warnings = []
    if n != ok:
        warnings.append(f"{run.run_id}: {n} final records for {ok} successful requests")
    declared = (meta.get("energy_j") or {}).get("requests")
    if from_lines and declared is not None and not math.isclose(declared, energy["requests"], rel_tol=1e-6,
                                                                abs_tol=1e-9):
        warnings.append(f"{run.run_id}: run.json energy_j.requests {declared:.6g} J but final.jsonl sums to "
                        f"{energy['requests']:.6g} J (the report uses final.jsonl)")
    if from_lines and n == 0:
        warnings.append(f"{run.run_id}: no final records, no energy per inference")
    return RunFigures(
        len(run.requests), ok, len(run.requests) - ok, energy, kwh, grams, method, tuple(warnings),
        energy_j_per_request=tuple(float(f["energy_j"]) for f in run.finals if f.get("energy_j") is not None),
        latency_s=tuple(float(q["latency_s"]) for q in ok_lines if q.get("latency_s") is not None),
        tokens_in=tuple(float(f.get("tokens_in") or 0) for f in run.finals),
        tokens_out=tuple(float(f.get("tokens_out") or 0) for f in run.finals))


def checked_figures(runs: Sequence[Run]) -> tuple[list[Run], dict[str, RunFigures]]:
    """Each complete run's figures; a run whose fields are not numbers where numbers belong becomes unreadable."""
    out, figs = [], {}
    for r in runs:
        if r.status == "complete":
            try:
                figs[r.run_id] = run_figures(r)
            except (TypeError, ValueError, KeyError, AttributeError) as e:
                r = Run(r.run_id, "unreadable", f"{type(e).__name__}: {e}", r.meta)
        out.append(r)
    return out, figs


# ---------------------------------------------------------------- aggregation

@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (n - 1); ``sd`` is None for fewer than two values."""

    mean: float | None
    sd: float | None
    n: int


def stat(values: Iterable[float | None]) -> Stat:
    xs = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not xs:
        return Stat(None, None, 0)
    return Stat(math.fsum(xs) / len(xs), statistics.stdev(xs) if len(xs) > 1 else None, len(xs))


def _pct(xs: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(xs, dtype=float), q)) if len(xs) else None


def _mean(xs: Sequence[float]) -> float | None:
    return math.fsum(xs) / len(xs) if len(xs) else None


@dataclass(frozen=True)
class ModelRow:
    """One model on one dataset over its complete replay repetitions (energy per 1,000 inferences, by mode)."""

    task: str
    model: str
    dataset: str
    parameters: int | None
    demo_model: bool
    synthetic_dataset: bool
    repetitions: int
    repetitions_planned: int | None
    kwh_per_1000: dict[str, Stat]
    g_co2e_per_1000: dict[str, Stat]
    method: dict[str, str]
    j_per_request_p50: float | None  # pooled final records of all repetitions
    j_per_request_p95: float | None
    latency_p50_s: float | None  # pooled successful requests
    latency_p95_s: float | None
    tokens_in_mean: float | None  # per request
    tokens_out_mean: float | None
    requests_sent: int
    requests_ok: int
    errors: int
    run_ids: tuple[str, ...]

    @property
    def notes(self) -> str:
        return "; ".join(n for n, on in (("demo model (random weights)", self.demo_model),
                                         ("synthetic dataset", self.synthetic_dataset)) if on)


@dataclass(frozen=True)
class TaskRow:
    """A task: the mean (and sd) over its model-dataset rows, as Table 2, with the paper's value and our ratio."""

    task: str
    rows: int
    models: int
    kwh_per_1000: dict[str, Stat]
    g_co2e_per_1000: dict[str, Stat]
    method: dict[str, str]
    table2: PaperValue | None
    ratio_to_table2: dict[str, float | None]


def _model_row(runs: list[Run], figs: dict[str, RunFigures]) -> ModelRow:
    first = runs[0].meta
    fs = [figs[r.run_id] for r in runs]
    energies, latencies = [x for f in fs for x in f.energy_j_per_request], [x for f in fs for x in f.latency_s]
    params = next((r.meta["model_parameters"] for r in runs if r.meta.get("model_parameters") is not None), None)
    return ModelRow(
        task=str(first["task"]), model=str(first["model"]), dataset=dataset_label(first), parameters=params,
        demo_model=any(bool(r.meta.get("model_demo")) for r in runs),
        synthetic_dataset=any(bool(r.meta["dataset"].get("synthetic")) for r in runs),
        repetitions=len(runs), repetitions_planned=first.get("repetitions"),
        kwh_per_1000={m: stat(f.kwh_per_1000[m] for f in fs) for m in MODES},
        g_co2e_per_1000={m: stat(f.g_co2e_per_1000[m] for f in fs) for m in MODES},
        method={m: combine_methods(f.method[m] for f in fs) for m in MODES},
        j_per_request_p50=_pct(energies, 50), j_per_request_p95=_pct(energies, 95),
        latency_p50_s=_pct(latencies, 50), latency_p95_s=_pct(latencies, 95),
        tokens_in_mean=_mean([x for f in fs for x in f.tokens_in]),
        tokens_out_mean=_mean([x for f in fs for x in f.tokens_out]),
        requests_sent=sum(f.sent for f in fs), requests_ok=sum(f.ok for f in fs), errors=sum(f.errors for f in fs),
        run_ids=tuple(r.run_id for r in runs))


def model_rows(runs: Sequence[Run], figs: dict[str, RunFigures]) -> list[ModelRow]:
    """Complete replay runs grouped by task, model and dataset, in the paper's task order."""
    groups: dict[tuple[str, str, str], list[Run]] = {}
    for r in runs:
        if r.status == "complete" and r.kind != "load":
            groups.setdefault((str(r.meta["task"]), str(r.meta["model"]), dataset_label(r.meta)), []).append(r)
    keys = sorted(groups, key=lambda k: (task_order(k[0]), k[1], k[2]))
    return [_model_row(groups[k], figs) for k in keys]


def task_rows(models: Sequence[ModelRow]) -> list[TaskRow]:
    out = []
    for task in sorted({m.task for m in models}, key=task_order):
        rows = [m for m in models if m.task == task]
        kwh = {mode: stat(r.kwh_per_1000[mode].mean for r in rows) for mode in MODES}
        pv = paper_value(task)
        out.append(TaskRow(
            task=task, rows=len(rows), models=len({r.model for r in rows}), kwh_per_1000=kwh,
            g_co2e_per_1000={mode: stat(r.g_co2e_per_1000[mode].mean for r in rows) for mode in MODES},
            method={mode: combine_methods(r.method[mode] for r in rows) for mode in MODES}, table2=pv,
            ratio_to_table2={mode: (kwh[mode].mean / pv.kwh_per_1000 if pv and kwh[mode].mean is not None
                                    else None) for mode in MODES}))
    return out
