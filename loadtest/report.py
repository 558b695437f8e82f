"""Campaign report: kWh and gCO2e per 1,000 inferences per model, dataset and task, beside the paper's Table 2.

Reads ``RESULTS/runs/<run_id>/{run.json,requests.jsonl,final.jsonl}`` (the runner's layout) and writes
``report.md``, CSV tables and PNG plots into an output folder. Per-request statistics are recomputed from the
request lines and the server's final records; the ``requests`` mode's total is the sum of the final records.
Output is deterministic: the same results give byte-identical files.
"""

from __future__ import annotations

import csv
import json
import math
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from loadtest.paper import CITATION, PaperValue, paper_value, task_order

MODES = ("requests", "device_window", "paper")
MODE_TITLES = {"requests": "per-request", "device_window": "device window", "paper": "paper mode"}
J_PER_KWH = 3.6e6
_REQUIRED = ("run_id", "kind", "status", "model", "task", "dataset")
_OBJECTS = ("server", "hardware", "carbon", "window", "requests", "energy_j", "energy_method", "carbon_g")


# ---------------------------------------------------------------- reading

@dataclass(frozen=True)
class Run:
    """One run folder as read. ``status``: complete | failed | running | unreadable (anything else: incomplete)."""

    run_id: str
    status: str
    reason: str | None
    meta: dict
    requests: tuple[dict, ...] = ()  # requests.jsonl, send order
    finals: tuple[dict, ...] = ()  # final.jsonl

    @property
    def kind(self) -> str:
        return str(self.meta.get("kind", ""))


def _read_jsonl(path: Path) -> tuple[dict, ...]:
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path.name} line {i}: {e}") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path.name} line {i}: not a JSON object")
            rows.append(row)
    return tuple(rows)


def _check_meta(meta: object) -> dict:
    """The shape the report relies on (the runner's schema); ValueError naming the first field that is off."""
    if not isinstance(meta, dict):
        raise ValueError("run.json is not a JSON object")
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise ValueError(f"run.json lacks {', '.join(missing)}")
    for key in ("dataset", *_OBJECTS):
        if not isinstance(meta.get(key, {}), dict | None) or (key == "dataset" and not isinstance(meta[key], dict)):
            raise ValueError(f"run.json: {key} is not an object")
    if not isinstance(meta.get("model_parameters"), int | None):
        raise ValueError("run.json: model_parameters is not an integer")
    stages = meta.get("stages") or []
    if not isinstance(stages, list) or not all(
            isinstance(st, dict) and all(isinstance(v, int | float | None) for v in st.values()) for st in stages):
        raise ValueError("run.json: stages is not a list of objects of numbers")
    return meta


def _read_run(run_dir: Path) -> Run:
    """A run, or an ``unreadable`` one saying why (never raises for a bad run: the others are still reported)."""
    try:
        meta = _check_meta(json.loads((run_dir / "run.json").read_text(encoding="utf-8")))
        if meta["status"] != "complete":
            return Run(str(meta["run_id"]), str(meta["status"]), meta.get("reason"), meta)
        has_lines = (run_dir / "requests.jsonl").exists() or meta["kind"] != "load"  # load runs: stages suffice
        requests = _read_jsonl(run_dir / "requests.jsonl") if has_lines else ()
        finals = _read_jsonl(run_dir / "final.jsonl") if has_lines else ()
    except FileNotFoundError as e:
        return Run(run_dir.name, "unreadable", f"{Path(e.filename or '?').name} missing", {})
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return Run(run_dir.name, "unreadable", f"{type(e).__name__}: {e}", {})
    return Run(str(meta["run_id"]), "complete", None, meta, requests, finals)


def read_runs(results_dir: str | Path) -> list[Run]:
    """Every run under ``results_dir/runs``, sorted by folder name. ValueError when there is none."""
    root = Path(results_dir)
    runs_dir = root / "runs"
    dirs = sorted(p for p in runs_dir.iterdir() if p.is_dir()) if runs_dir.is_dir() else []
    if not dirs:
        raise ValueError(f"no runs in {root}: expected {runs_dir}/<run_id>/run.json (is this a campaign's results "
                         "folder?)")
    return [_read_run(d) for d in dirs]


# ---------------------------------------------------------------- one run's figures

def combine_methods(methods: Iterable[str | None]) -> str:
    """One method for several figures: the common one, ``mixed`` when they differ, ``unknown`` when none."""
    kinds = {m or "unknown" for m in methods}
    return kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else "unknown")


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
    return float(final.get("energy_j") or 0.0) / J_PER_KWH * factor


def run_figures(run: Run) -> RunFigures:
    """Mode ``requests`` from final.jsonl (recomputed, cross-checked with run.json); the others from run.json."""
    meta = run.meta
    ok_lines = [q for q in run.requests if _is_ok(q)]
    ok, n = len(ok_lines), len(run.finals)
    energy = {"requests": math.fsum(float(f.get("energy_j") or 0.0) for f in run.finals)}
    carbon = {"requests": math.fsum(_operational_g(f, meta.get("carbon") or {}) for f in run.finals)}
    method = {"requests": combine_methods(str(f.get("method") or "unknown") for f in run.finals)}
    from_lines = bool(run.finals) or run.kind != "load"  # a load run may come with its stages only
    for mode in MODES if not from_lines else MODES[1:]:
        energy[mode] = (meta.get("energy_j") or {}).get(mode)
        carbon[mode] = (meta.get("carbon_g") or {}).get(mode)
        method[mode] = str((meta.get("energy_method") or {}).get(mode) or "unknown")
    per_1000 = 1000.0 / n if n else None
    kwh = {m: (e / J_PER_KWH * per_1000 if per_1000 and e is not None else None) for m, e in energy.items()}
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


def dataset_label(meta: dict) -> str:
    ds = meta.get("dataset") or {}
    return str(ds.get("name")) + (f"/{ds['config']}" if ds.get("config") else "")


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


# ---------------------------------------------------------------- the result

@dataclass(frozen=True)
class ReportResult:
    """What ``build_report`` wrote and the rows behind it (for a terminal summary)."""

    campaign: str
    out_dir: Path
    tasks: tuple[TaskRow, ...]
    models: tuple[ModelRow, ...]
    runs: tuple[tuple[str, str, str, str | None], ...]  # (run_id, kind, status, reason) per run
    warnings: tuple[str, ...]
    files: tuple[str, ...] = field(default=())  # names inside out_dir


# ---------------------------------------------------------------- CSV tables (columns as data: also documented)

SUMMARY_COLUMNS = (
    ("task", "pipeline task"), ("model", "model name in the registry"), ("dataset", "dataset name (/config)"),
    ("mode", "accounting mode: requests, device_window or paper (see above)"),
    ("repetitions", "complete repetitions averaged"), ("repetitions_planned", "repetitions the campaign asked for"),
    ("kwh_per_1000_mean", "kWh per 1,000 successful inferences, mean over repetitions"),
    ("kwh_per_1000_sd", "its sample standard deviation (empty for one repetition)"),
    ("g_co2e_per_1000_mean", "operational gCO2e per 1,000 successful inferences, mean over repetitions"),
    ("g_co2e_per_1000_sd", "its sample standard deviation"),
    ("energy_method", "measured, estimated or mixed"),
    ("table2_kwh_per_1000", "the paper's Table 2 mean for the task (empty: task not in Table 2)"),
    ("table2_sd_kwh_per_1000", "the paper's Table 2 standard deviation"),
    ("ratio_to_table2", "kwh_per_1000_mean / table2_kwh_per_1000"),
    ("j_per_request_p50", "median joules per request (final records of all repetitions; requests mode)"),
    ("j_per_request_p95", "95th percentile of joules per request"),
    ("latency_p50_s", "median client latency of successful requests, seconds"),
    ("latency_p95_s", "95th percentile client latency, seconds"),
    ("tokens_in_mean", "mean input tokens per request"), ("tokens_out_mean", "mean output tokens per request"),
    ("requests_sent", "measured requests sent, all repetitions (warm-up excluded)"),
    ("requests_ok", "successful requests"), ("errors", "failed requests"),
    ("model_parameters", "parameter count (empty: unknown)"),
    ("demo_model", "true: a demo model with random weights"), ("synthetic_dataset", "true: a synthetic dataset"))
TASKS_COLUMNS = (
    ("task", "pipeline task"), ("paper_task", "the paper's name for it (empty: not in Table 2)"),
    ("mode", "accounting mode"), ("rows", "model-dataset rows averaged"), ("models", "distinct models"),
    ("kwh_per_1000_mean", "mean over the rows of their mean kWh per 1,000 inferences"),
    ("kwh_per_1000_sd", "sample standard deviation over the rows"),
    ("g_co2e_per_1000_mean", "mean over the rows of their mean gCO2e per 1,000 inferences"),
    ("g_co2e_per_1000_sd", "sample standard deviation over the rows"),
    ("energy_method", "measured, estimated or mixed"),
    ("table2_kwh_per_1000", "the paper's Table 2 mean"), ("table2_sd_kwh_per_1000", "the paper's Table 2 sd"),
    ("ratio_to_table2", "kwh_per_1000_mean / table2_kwh_per_1000"))
RUNS_COLUMNS = (
    ("run_id", "run folder"), ("kind", "replay or load"),
    ("status", "complete, failed, running (incomplete) or unreadable"), ("reason", "why it failed or is unreadable"),
    ("model", "model"), ("task", "task"), ("dataset", "dataset"), ("repetition", "repetition number"),
    ("requests_sent", "measured requests sent"), ("requests_ok", "successful requests"), ("errors", "failed requests"),
    ("duration_s", "run window, seconds"),
    *((f"energy_j_{m}", f"joules, {m} mode") for m in MODES),
    *((f"energy_method_{m}", f"method of the {m} figure") for m in MODES),
    *((f"kwh_per_1000_{m}", f"kWh per 1,000 successful inferences, {m} mode") for m in MODES),
    ("started_at", "start, ISO 8601"), ("ended_at", "end, ISO 8601"))
STAGES_COLUMNS = (
    ("run_id", "load run"), ("stage", "stage number"), ("users", "concurrent users (offered load)"),
    ("duration_s", "stage length, seconds"), ("requests", "requests in the stage"), ("errors", "failed requests"),
    ("rps", "requests per second"), ("energy_j_per_request", "joules per request"),
    ("latency_p50_s", "median latency, seconds"), ("latency_p95_s", "95th percentile latency, seconds"),
    ("device_power_w", "mean device power, watts"))


def _csv_value(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ""
    return str(v)


def _write_csv(path: Path, columns: Sequence[tuple[str, str]], rows: Iterable[dict]) -> None:
    names = [c for c, _ in columns]
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(names)
        for row in rows:
            w.writerow([_csv_value(row.get(c)) for c in names])


def _summary_rows(models: Sequence[ModelRow]) -> Iterable[dict]:
    for m in models:
        pv = paper_value(m.task)
        for mode in MODES:
            kwh, g = m.kwh_per_1000[mode], m.g_co2e_per_1000[mode]
            yield {**{k: getattr(m, k) for k in (
                "task", "model", "dataset", "repetitions", "repetitions_planned", "j_per_request_p50",
                "j_per_request_p95", "latency_p50_s", "latency_p95_s", "tokens_in_mean", "tokens_out_mean",
                "requests_sent", "requests_ok", "errors", "demo_model", "synthetic_dataset")},
                "mode": mode, "kwh_per_1000_mean": kwh.mean, "kwh_per_1000_sd": kwh.sd, "g_co2e_per_1000_mean": g.mean,
                "g_co2e_per_1000_sd": g.sd, "energy_method": m.method[mode], "model_parameters": m.parameters,
                "table2_kwh_per_1000": pv and pv.kwh_per_1000, "table2_sd_kwh_per_1000": pv and pv.sd_kwh_per_1000,
                "ratio_to_table2": kwh.mean / pv.kwh_per_1000 if pv and kwh.mean is not None else None}


def _task_csv_rows(tasks: Sequence[TaskRow]) -> Iterable[dict]:
    for t in tasks:
        pv = t.table2
        for mode in MODES:
            kwh, g = t.kwh_per_1000[mode], t.g_co2e_per_1000[mode]
            yield {"task": t.task, "paper_task": pv and pv.paper_task, "mode": mode, "rows": t.rows,
                   "models": t.models, "kwh_per_1000_mean": kwh.mean, "kwh_per_1000_sd": kwh.sd,
                   "g_co2e_per_1000_mean": g.mean, "g_co2e_per_1000_sd": g.sd, "energy_method": t.method[mode],
                   "table2_kwh_per_1000": pv and pv.kwh_per_1000, "table2_sd_kwh_per_1000": pv and pv.sd_kwh_per_1000,
                   "ratio_to_table2": t.ratio_to_table2[mode]}


def _run_csv_rows(runs: Sequence[Run], figs: dict[str, RunFigures]) -> Iterable[dict]:
    for r in runs:
        m, f = r.meta, figs.get(r.run_id)
        declared = m.get("requests") or {}
        row = {"run_id": r.run_id, "kind": m.get("kind"), "status": r.status, "reason": r.reason,
               "model": m.get("model"), "task": m.get("task"), "dataset": dataset_label(m) if m else None,
               "repetition": m.get("repetition"), "duration_s": (m.get("window") or {}).get("duration_s"),
               "requests_sent": f.sent if f else declared.get("sent"), "requests_ok": f.ok if f else declared.get("ok"),
               "errors": f.errors if f else declared.get("errors"),
               "started_at": m.get("started_at"), "ended_at": m.get("ended_at")}
        for mode in MODES:
            row[f"energy_j_{mode}"] = f.energy_j[mode] if f else (m.get("energy_j") or {}).get(mode)
            row[f"energy_method_{mode}"] = f.method[mode] if f else (m.get("energy_method") or {}).get(mode)
            row[f"kwh_per_1000_{mode}"] = f.kwh_per_1000[mode] if f else None
        yield row


def _stage_rows(runs: Sequence[Run]) -> Iterable[dict]:
    for r in runs:
        for s in r.meta.get("stages") or ():
            yield {"run_id": r.run_id, **s}


# ---------------------------------------------------------------- report.md

ACCOUNTING_TEXT = (
    "**Per-request (`requests`).** The sum of what the server put in each answered request's final energy "
    "record: the energy the request's work drew on the metered devices and, under `loaded` accounting, its share "
    "of their idle draw while it ran. Moments when no request ran are in nobody's figure. This is what the "
    "requests themselves cost; its per-request figures give the J/request percentiles.",
    "**Device window (`device_window`).** Everything the metered devices (GPU, CPU, RAM as listed under Hardware) "
    "drew from the first measured request's start to the last one's end, idle moments included. This is what the "
    "machine spent while the run went on, whoever used it.",
    "**Paper mode (`paper`).** The same window counted the way CodeCarbon 2.3.1 counted the paper's machine: every "
    "GPU's energy (idle ones too), the CPU at a constant half of its TDP when it has no RAPL counter, RAM at a "
    "constant 3/8 W per GB installed, PUE 1. Compare this figure with Table 2 (the paper's node had 8 A100 GPUs "
    "and 1.1 TB of RAM, so the constants weighed much more there than on a small machine).",
    "kWh per 1,000 inferences = joules / successful requests x 1,000 / 3.6e6. gCO2e is operational only "
    "(kWh x grid intensity x PUE); embodied emissions are not included. A model-dataset figure is the mean ± "
    "sample standard deviation (n - 1) over its complete repetitions (– for one repetition); a task's figure is "
    "the mean ± sd over its model-dataset rows, as the paper's Table 2. Every figure carries its method: "
    "*measured* (hardware counters: NVML, RAPL), *estimated* (a power model: CPU time x CodeCarbon's TDP per "
    "thread, CodeCarbon's RAM model, paper mode's constants) or *mixed* (some of each).")


def _g(x: float | None) -> str:
    return "–" if x is None else f"{x:.3g}"


def _pm(s: Stat) -> str:
    return "–" if s.mean is None else f"{s.mean:.3g} ± {_g(s.sd)}"


def _methods(method: dict[str, str]) -> str:
    kinds = set(method.values())
    return kinds.pop() if len(kinds) == 1 else ", ".join(f"{MODE_TITLES[m]}: {method[m]}" for m in MODES)


def _cell(v: object) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines + [""]


def _distinct(values: Iterable[object]) -> str:
    seen = list(dict.fromkeys(str(v) for v in values if v not in (None, "")))
    return "; ".join(seen) if seen else "unknown"


def _md_setup(campaign: str, runs: Sequence[Run]) -> list[str]:
    metas = [r.meta for r in runs if r.meta]
    hw = [m.get("hardware") or {} for m in metas]
    counts = {s: sum(1 for r in runs if r.status == s) for s in ("complete", "failed", "unreadable")}
    loads = sum(1 for r in runs if r.status == "complete" and r.kind == "load")
    meters = (", ".join(f"{k} ({v.get('component')}, {v.get('method')})" for k, v in sorted((h.get("meters") or {})
              .items())) for h in hw)
    server = (f"wattserve {s.get('version')} at {s.get('url')}{' (embedded)' if s.get('embedded') else ''}"
              for s in (m.get("server") or {} for m in metas))
    machine = (f"{h.get('cpu_model')}, {h.get('cpu_threads')} threads, {h.get('ram_gb')} GB RAM" for h in hw)
    carbon = (f"{c.get('intensity_g_per_kwh')} gCO2e/kWh ({c.get('source')}), PUE {c.get('pue')}"
              for c in (m.get("carbon") or {} for m in metas))
    return [f"# Campaign report: {campaign}", "",
            f"- **Server:** {_distinct(server)}",
            f"- **Hardware:** {_distinct(machine)}",
            f"- **GPUs:** {_distinct(', '.join(h.get('gpus') or []) or 'none' for h in hw)}",
            f"- **Meters:** {_distinct(meters)}",
            f"- **Carbon:** {_distinct(carbon)}",
            f"- **Accounting:** {_distinct(m.get('accounting') for m in metas)} (per-request figures)",
            f"- **Protocol:** {_distinct(m.get('samples') for m in metas)} samples per run after "
            f"{_distinct(m.get('warmup') for m in metas)} warm-up requests, "
            f"{_distinct(m.get('repetitions') for m in metas)} repetitions planned",
            f"- **Runs:** {len(runs)}: {counts['complete'] - loads} complete replays, {loads} complete load runs, "
            f"{counts['failed']} failed, "
            f"{counts['unreadable']} unreadable, {len(runs) - sum(counts.values())} incomplete", ""]


def _md_columns() -> list[str]:
    lines = ["## Files and columns", "", "Numbers in the CSV files are unrounded; an empty cell has no value.", ""]
    for name, rows, cols in (("summary.csv", "model x dataset x accounting mode", SUMMARY_COLUMNS),
                             ("tasks.csv", "task x accounting mode", TASKS_COLUMNS), ("runs.csv", "run", RUNS_COLUMNS),
                             ("load_stages.csv", "stage of a load run", STAGES_COLUMNS)):
        lines += [f"- `{name}`, one row per {rows}:", *(f"  - `{c}`: {d}" for c, d in cols)]
    return lines + [""]


def _md_tasks(tasks: Sequence[TaskRow]) -> list[str]:
    head = ["task", "model x dataset", *(f"kWh/1000 {MODE_TITLES[m]}" for m in MODES), "Table 2 kWh/1000 (sd)",
            *(f"ratio {MODE_TITLES[m]}" for m in MODES), "method"]
    rows = [[t.task, t.rows, *(_pm(t.kwh_per_1000[m]) for m in MODES),
             f"{t.table2.kwh_per_1000:g} ({t.table2.sd_kwh_per_1000:g})" if t.table2 else "–",
             *(_g(t.ratio_to_table2[m]) for m in MODES), _methods(t.method)] for t in tasks]
    return ["## Per task", "", f"Mean ± sd over each task's model-dataset rows; Table 2: {CITATION} (mean, sd). "
            "Ratio: ours / Table 2; compare the paper mode first.", "", *_table(head, rows),
            "gCO2e per 1,000 inferences (operational):", "",
            *_table(["task", *(MODE_TITLES[m] for m in MODES), "method"],
                    [[t.task, *(_pm(t.g_co2e_per_1000[m]) for m in MODES), _methods(t.method)] for t in tasks])]


def _md_models(models: Sequence[ModelRow]) -> list[str]:
    def reps(m: ModelRow) -> str:
        return f"{m.repetitions}/{m.repetitions_planned}" if m.repetitions_planned else str(m.repetitions)

    energy = _table(
        ["task", "model", "dataset", "reps", *(f"kWh/1000 {MODE_TITLES[m]}" for m in MODES),
         *(f"gCO2e/1000 {MODE_TITLES[m]}" for m in MODES), "method", "notes"],
        [[m.task, m.model, m.dataset, reps(m), *(_pm(m.kwh_per_1000[k]) for k in MODES),
          *(_pm(m.g_co2e_per_1000[k]) for k in MODES), _methods(m.method), m.notes or "–"] for m in models])
    per_request = _table(
        ["task", "model", "dataset", "J/request p50", "J/request p95", "latency p50 s", "latency p95 s",
         "tokens in", "tokens out", "requests", "errors", "parameters", "method", "notes"],
        [[m.task, m.model, m.dataset, _g(m.j_per_request_p50), _g(m.j_per_request_p95), _g(m.latency_p50_s),
          _g(m.latency_p95_s), _g(m.tokens_in_mean), _g(m.tokens_out_mean), f"{m.requests_sent:,}", f"{m.errors:,}",
          f"{m.parameters:,}" if m.parameters is not None else "unknown", m.method["requests"], m.notes or "–"]
         for m in models])
    return ["## Per model and dataset", "", "Energy and carbon per 1,000 inferences, mean ± sd over complete "
            "repetitions (reps: complete/planned).", "", *energy,
            "Per request (all complete repetitions pooled; J/request from the server's final records, latency "
            "from the client's successful requests, tokens as means per request):", "", *per_request]


def _md_load(loads: Sequence[Run], plots: dict[str, str]) -> list[str]:
    if not loads:
        return []
    lines = ["## Load runs", ""]
    for r in loads:
        m = r.meta
        lines += [f"### {r.run_id}", "", f"{m.get('model')} ({m.get('task')}) on {dataset_label(m)}; energy method: "
                  f"{(m.get('energy_method') or {}).get('requests', 'unknown')}. Plot: `{plots.get(r.run_id, '–')}`.",
                  ""]
        lines += _table(["stage", "users", "duration s", "requests", "errors", "rps", "J/request", "latency p50 s",
                         "latency p95 s", "device power W"],
                        [[s.get("stage"), s.get("users"), _g(s.get("duration_s")), s.get("requests"), s.get("errors"),
                          _g(s.get("rps")), _g(s.get("energy_j_per_request")), _g(s.get("latency_p50_s")),
                          _g(s.get("latency_p95_s")), _g(s.get("device_power_w"))] for s in m.get("stages") or ()])
    return lines


def _md_not_counted(runs: Sequence[Run], warnings: Sequence[str]) -> list[str]:
    out = [r for r in runs if r.status != "complete"]
    lines = ["## Runs not counted", ""]
    if not out:
        lines += ["None: every run completed.", ""]
    else:
        lines += _table(["run", "status", "model", "dataset", "repetition", "reason"],
                        [[r.run_id, r.status if r.status in ("failed", "unreadable") else f"incomplete ({r.status})",
                          r.meta.get("model", "–"), dataset_label(r.meta) if r.meta else "–",
                          r.meta.get("repetition", "–"), r.reason or "–"] for r in out])
    if warnings:
        lines += ["Data checks:", "", *(f"- {w}" for w in warnings), ""]
    return lines


# ---------------------------------------------------------------- plots (Agg, no pyplot state, no metadata)

_FILL = {"measured": "full", "mixed": "left"}  # estimated/unknown: hollow markers


def _figure(panels: int, width_in: float = 4.2, height_in: float = 4.2, sharey: bool = False):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in * panels, height_in), dpi=100)
    FigureCanvasAgg(fig)  # Agg without pyplot: no global backend switch, no open-figure registry
    return fig, fig.subplots(1, panels, squeeze=False, sharey=sharey)[0]


def _log_axis(ax, which: str, values: Iterable[float]) -> None:
    """Whole decades around the values on ``which`` ("x"/"y"), labels on decades only (short ranges would
    otherwise get overlapping minor-tick labels)."""
    from matplotlib.ticker import LogLocator, NullLocator

    xs = [v for v in values if v > 0]
    lo, hi = (math.floor(math.log10(min(xs))), math.ceil(math.log10(max(xs)))) if xs else (0, 1)
    getattr(ax, f"set_{which}scale")("log")
    getattr(ax, f"set_{which}lim")(10.0 ** lo, 10.0 ** max(hi, lo + 1))
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_locator(LogLocator(base=10))
    axis.set_minor_locator(NullLocator())  # minor ticks cost most of the drawing time


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": None})  # no version string: identical bytes each build


def _point(ax, x: float, y: float, colour, method: str) -> None:
    ax.plot([x], [y], marker="o", linestyle="none", color=colour, markeredgecolor=colour, markersize=7,
            fillstyle=_FILL.get(method, "none"))


def _method_legend(ax, extra: Sequence = ()) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", linestyle="none", color="grey", fillstyle=_FILL.get(m, "none"), label=m)
               for m in ("measured", "estimated", "mixed")]
    ax.legend(handles=[*handles, *extra], fontsize=7, loc="best")


def _task_colours(tasks: Sequence[str]) -> dict[str, tuple]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {t: cmap(i % 10) for i, t in enumerate(tasks)}


def _positive(x: float | None) -> bool:
    return x is not None and x > 0


def plot_energy_by_task(models: Sequence[ModelRow], path: Path) -> None:
    """Like the paper's Figure: kWh per 1,000 inferences by task (log y), a point per model and dataset, per mode."""
    from matplotlib.lines import Line2D

    tasks = sorted({m.task for m in models}, key=task_order)
    colours = _task_colours(tasks)
    table2 = {t: pv for t in tasks if (pv := paper_value(t))}
    fig, axes = _figure(len(MODES), sharey=True)
    for ax, mode in zip(axes, MODES, strict=True):
        for i, task in enumerate(tasks):
            rows = [m for m in models if m.task == task and _positive(m.kwh_per_1000[mode].mean)]
            offsets = np.linspace(-0.25, 0.25, len(rows)) if len(rows) > 1 else [0.0]
            for dx, m in zip(offsets, rows, strict=True):
                _point(ax, i + float(dx), m.kwh_per_1000[mode].mean, colours[task], m.method[mode])
            if pv := table2.get(task):  # the lower whisker stops above zero on the log axis
                low = min(pv.sd_kwh_per_1000, 0.9 * pv.kwh_per_1000)
                ax.errorbar([i], [pv.kwh_per_1000], yerr=[[low], [pv.sd_kwh_per_1000]], fmt="_", color="black",
                            markersize=18, capsize=3)
        ax.set_xticks(range(len(tasks)), tasks, rotation=35, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(tasks) - 0.4)
        ax.set_title(f"{MODE_TITLES[mode]} ({combine_methods(m.method[mode] for m in models)})", fontsize=10)
        ax.grid(True, axis="y", which="major", alpha=0.3)
    values = [m.kwh_per_1000[k].mean or 0.0 for m in models for k in MODES]
    _log_axis(axes[0], "y", [*values, *(v.kwh_per_1000 + v.sd_kwh_per_1000 for v in table2.values())])
    axes[0].set_ylabel("kWh per 1,000 inferences (log)")
    _method_legend(axes[0], [Line2D([], [], marker="_", color="black", markersize=12, linestyle="none",
                                    label="paper Table 2 (mean ± sd)")])
    _save(fig, path)


def plot_size_vs_energy(models: Sequence[ModelRow], path: Path) -> list[str]:
    """Parameters against kWh per 1,000 inferences, log-log, coloured by task; returns the models left out."""
    from matplotlib.lines import Line2D

    colours = _task_colours(sorted({m.task for m in models}, key=task_order))
    known = [m for m in models if m.parameters]
    skipped = sorted({m.model for m in models if not m.parameters})
    fig, axes = _figure(len(MODES), sharey=True)
    for ax, mode in zip(axes, MODES, strict=True):
        for m in known:
            if _positive(m.kwh_per_1000[mode].mean):
                _point(ax, float(m.parameters), m.kwh_per_1000[mode].mean, colours[m.task], m.method[mode])
        _log_axis(ax, "x", [float(m.parameters) for m in known])
        ax.set_xlabel("model parameters (log)")
        ax.set_title(f"{MODE_TITLES[mode]} ({combine_methods(m.method[mode] for m in known)})", fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
    _log_axis(axes[0], "y", [m.kwh_per_1000[k].mean or 0.0 for m in known for k in MODES])
    axes[0].set_ylabel("kWh per 1,000 inferences (log)")
    shown = sorted({m.task for m in known}, key=task_order)
    _method_legend(axes[0], [Line2D([], [], marker="o", color=colours[t], linestyle="none", label=t) for t in shown])
    if skipped:
        fig.text(0.01, 0.01, f"not shown, parameters unknown: {', '.join(skipped)}", fontsize=7)
    _save(fig, path)
    return skipped


def plot_load(run: Run, path: Path) -> None:
    """A load run: J/request and latency p95 against concurrent users (offered load)."""
    stages = run.meta.get("stages") or []
    method = (run.meta.get("energy_method") or {}).get("requests") or "unknown"
    users = [float(s.get("users") or 0) for s in stages]
    fig, (left, right) = _figure(2, 4.5, 3.6)
    for ax, key, label in ((left, "energy_j_per_request", f"J per request ({method})"),
                           (right, "latency_p95_s", "latency p95 (s)")):
        pts = [(u, float(s[key])) for u, s in zip(users, stages, strict=True) if s.get(key) is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color="tab:blue",
                fillstyle=_FILL.get(method, "none") if key.startswith("energy") else "full")
        ax.set_xlabel("concurrent users (offered load)")
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"{run.run_id}: {run.meta.get('model')}", fontsize=10)
    _save(fig, path)


# ---------------------------------------------------------------- build

def _campaign_name(root: Path, runs: Sequence[Run]) -> str:
    names = _distinct(r.meta.get("campaign") for r in runs if r.meta)
    if names != "unknown":
        return names
    try:
        spec = yaml.safe_load((root / "campaign.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        spec = None
    return str(spec.get("name")) if isinstance(spec, dict) and spec.get("name") else root.name


def _energy_plots(models: Sequence[ModelRow], out: Path) -> tuple[list[str], list[str]]:
    """The two campaign plots and their report.md text; returns (markdown lines, file names)."""
    if not models:
        return ["No complete replay runs: no energy plots.", ""], []
    plot_energy_by_task(models, out / "energy_by_task.png")
    lines = ["Energy per 1,000 inferences by task (log scale), one point per model and dataset, one panel per "
             "accounting mode; black: the paper's Table 2 mean ± sd. Filled markers: measured, hollow: estimated, "
             "half: mixed.", "", "![energy by task](energy_by_task.png)", ""]
    if not any(m.parameters for m in models):
        return [*lines, "No model's parameter count is known: no size plot.", ""], ["energy_by_task.png"]
    skipped = plot_size_vs_energy(models, out / "size_vs_energy.png")
    left_out = f"Left out (parameters unknown): {', '.join(skipped)}." if skipped else "Every model's size is known."
    lines += [f"Model size against energy per 1,000 inferences (log-log), coloured by task. {left_out}", "",
              "![model size vs energy](size_vs_energy.png)", ""]
    return lines, ["energy_by_task.png", "size_vs_energy.png"]


def _write_plots(models: Sequence[ModelRow], loads: Sequence[Run], out: Path) -> tuple[list[str], dict[str, str]]:
    """Every plot and the report.md section; returns (markdown lines, file name per plot: "energy" and run ids)."""
    from matplotlib import style

    files = {r.run_id: "load_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", r.run_id) + ".png" for r in loads}
    with style.context("default"):  # the user's matplotlibrc must not change the files
        lines, energy_files = _energy_plots(models, out)
        for r in loads:
            plot_load(r, out / files[r.run_id])
            lines += [f"Load run {r.run_id}: J/request and latency p95 against concurrent users.", "",
                      f"![{r.run_id}]({files[r.run_id]})", ""]
    return ["## Plots", "", *lines], {**{f: f for f in energy_files}, **files}


def build_report(results_dir: str | Path, out_dir: str | Path) -> ReportResult:
    """Read a campaign's results; write report.md, summary.csv, tasks.csv, runs.csv, load_stages.csv and PNGs.

    Raises ValueError (naming the folder) when ``results_dir`` holds no runs; an unreadable run is listed as such
    and the others are still reported. Energy in kWh per 1,000 successful inferences, carbon in gCO2e.
    """
    root, out = Path(results_dir), Path(out_dir)
    runs, figs = checked_figures(read_runs(root))
    models = model_rows(runs, figs)
    tasks = task_rows(models)
    warnings = [w for f in figs.values() for w in f.warnings]
    loads = [r for r in runs if r.status == "complete" and r.kind == "load"]
    campaign = _campaign_name(root, runs)
    out.mkdir(parents=True, exist_ok=True)
    plot_lines, plots = _write_plots(models, loads, out)
    md = [*_md_setup(campaign, runs), "## How energy is counted", "", *(p + "\n" for p in ACCOUNTING_TEXT),
          *_md_columns(), *_md_tasks(tasks), *_md_models(models), *_md_load(loads, plots),
          *_md_not_counted(runs, warnings), *plot_lines]
    (out / "report.md").write_text("\n".join(md).rstrip("\n") + "\n", encoding="utf-8", newline="\n")
    _write_csv(out / "summary.csv", SUMMARY_COLUMNS, _summary_rows(models))
    _write_csv(out / "tasks.csv", TASKS_COLUMNS, _task_csv_rows(tasks))
    _write_csv(out / "runs.csv", RUNS_COLUMNS, _run_csv_rows(runs, figs))
    _write_csv(out / "load_stages.csv", STAGES_COLUMNS, _stage_rows(loads))
    files = ["report.md", "summary.csv", "tasks.csv", "runs.csv", "load_stages.csv", *plots.values()]
    statuses = tuple((r.run_id, r.kind or "?", r.status, r.reason) for r in runs)
    return ReportResult(campaign, out, tuple(tasks), tuple(models), statuses, tuple(warnings), tuple(files))


def _columns(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=True)]
    return ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            for row in (headers, *rows)]


def format_summary(result: ReportResult) -> str:
    """A plain-text table for the terminal: each model and dataset, then each task beside Table 2."""
    modes = [f"kWh/1000 {MODE_TITLES[m]}" for m in MODES]
    lines = [f"campaign {result.campaign}: {len(result.models)} model-dataset rows, report in {result.out_dir}", ""]
    lines += _columns(["task", "model", "dataset", "reps", *modes, "method", "notes"],
                      [[m.task, m.model, m.dataset, str(m.repetitions), *(_pm(m.kwh_per_1000[k]) for k in MODES),
                        _methods(m.method), m.notes] for m in result.models])
    lines += [""] + _columns(["task", "rows", *modes, "Table 2 (sd)", "ratio paper mode"],
                             [[t.task, str(t.rows), *(_pm(t.kwh_per_1000[k]) for k in MODES),
                               f"{t.table2.kwh_per_1000:g} ({t.table2.sd_kwh_per_1000:g})" if t.table2 else "–",
                               _g(t.ratio_to_table2["paper"])] for t in result.tasks])
    skipped = [f"{run_id} {status}" + (f": {reason}" if reason else "")
               for run_id, _kind, status, reason in result.runs if status != "complete"]
    if skipped:
        lines += ["", "not counted:", *(f"  {s}" for s in skipped)]
    return "\n".join(lines) + "\n"


__all__ = ["MODES", "ModelRow", "ReportResult", "Run", "RunFigures", "Stat", "TaskRow", "build_report",
           "format_summary", "model_rows", "read_runs", "run_figures", "task_rows"]
