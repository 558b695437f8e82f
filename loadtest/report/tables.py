"""The CSV tables (summary, tasks, runs, load_stages): their columns as data, documented in report.md, and writing.

Numbers are written unrounded (``repr``); an empty cell has no value.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

from loadtest.paper import paper_value
from loadtest.report.figures import MODES, ModelRow, RunFigures, TaskRow
from loadtest.report.read import Run, dataset_label

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


def write_tables(out: Path, runs: Sequence[Run], figs: dict[str, RunFigures], models: Sequence[ModelRow],
                 tasks: Sequence[TaskRow], loads: Sequence[Run]) -> list[str]:
    """Writes the four CSV files into ``out``; returns their names."""
    _write_csv(out / "summary.csv", SUMMARY_COLUMNS, _summary_rows(models))
    _write_csv(out / "tasks.csv", TASKS_COLUMNS, _task_csv_rows(tasks))
    _write_csv(out / "runs.csv", RUNS_COLUMNS, _run_csv_rows(runs, figs))
    _write_csv(out / "load_stages.csv", STAGES_COLUMNS, _stage_rows(loads))
    return ["summary.csv", "tasks.csv", "runs.csv", "load_stages.csv"]
