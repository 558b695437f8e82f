"""report.md: campaign setup, how energy is counted, the columns, per task, per model and dataset, load runs and
runs not counted; also the number formatting shared with the terminal summary."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from loadtest.paper import CITATION, PaperValue
from loadtest.report.figures import MODE_TITLES, MODES, ModelRow, Stat, TaskRow
from loadtest.report.read import Run, dataset_label
from loadtest.report.tables import RUNS_COLUMNS, STAGES_COLUMNS, SUMMARY_COLUMNS, TASKS_COLUMNS

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


def fmt_g(x: float | None) -> str:
    return "–" if x is None else f"{x:.3g}"


def fmt_pm(s: Stat) -> str:
    return "–" if s.mean is None else f"{s.mean:.3g} ± {fmt_g(s.sd)}"


def fmt_table2(pv: PaperValue | None) -> str:
    return "–" if pv is None else f"{pv.kwh_per_1000:g} ({pv.sd_kwh_per_1000:g})"


def fmt_methods(method: dict[str, str]) -> str:
    kinds = set(method.values())
    return kinds.pop() if len(kinds) == 1 else ", ".join(f"{MODE_TITLES[m]}: {method[m]}" for m in MODES)


def _cell(v: object) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines + [""]


def distinct(values: Iterable[object]) -> str:
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
            f"- **Server:** {distinct(server)}",
            f"- **Hardware:** {distinct(machine)}",
            f"- **GPUs:** {distinct(', '.join(h.get('gpus') or []) or 'none' for h in hw)}",
            f"- **Meters:** {distinct(meters)}",
            f"- **Carbon:** {distinct(carbon)}",
            f"- **Accounting:** {distinct(m.get('accounting') for m in metas)} (per-request figures)",
            f"- **Protocol:** {distinct(m.get('samples') for m in metas)} samples per run after "
            f"{distinct(m.get('warmup') for m in metas)} warm-up requests, "
            f"{distinct(m.get('repetitions') for m in metas)} repetitions planned",
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
    rows = [[t.task, t.rows, *(fmt_pm(t.kwh_per_1000[m]) for m in MODES),
             fmt_table2(t.table2),
             *(fmt_g(t.ratio_to_table2[m]) for m in MODES), fmt_methods(t.method)] for t in tasks]
    return ["## Per task", "", f"Mean ± sd over each task's model-dataset rows; Table 2: {CITATION} (mean, sd). "
            "Ratio: ours / Table 2; compare the paper mode first.", "", *_table(head, rows),
            "gCO2e per 1,000 inferences (operational):", "",
            *_table(["task", *(MODE_TITLES[m] for m in MODES), "method"],
                    [[t.task, *(fmt_pm(t.g_co2e_per_1000[m]) for m in MODES), fmt_methods(t.method)] for t in tasks])]


def _md_models(models: Sequence[ModelRow]) -> list[str]:
    def reps(m: ModelRow) -> str:
        return f"{m.repetitions}/{m.repetitions_planned}" if m.repetitions_planned else str(m.repetitions)

    energy = _table(
        ["task", "model", "dataset", "reps", *(f"kWh/1000 {MODE_TITLES[m]}" for m in MODES),
         *(f"gCO2e/1000 {MODE_TITLES[m]}" for m in MODES), "method", "notes"],
        [[m.task, m.model, m.dataset, reps(m), *(fmt_pm(m.kwh_per_1000[k]) for k in MODES),
          *(fmt_pm(m.g_co2e_per_1000[k]) for k in MODES), fmt_methods(m.method), m.notes or "–"] for m in models])
    per_request = _table(
        ["task", "model", "dataset", "J/request p50", "J/request p95", "latency p50 s", "latency p95 s",
         "tokens in", "tokens out", "requests", "errors", "parameters", "method", "notes"],
        [[m.task, m.model, m.dataset, fmt_g(m.j_per_request_p50), fmt_g(m.j_per_request_p95),
          fmt_g(m.latency_p50_s), fmt_g(m.latency_p95_s), fmt_g(m.tokens_in_mean), fmt_g(m.tokens_out_mean),
          f"{m.requests_sent:,}", f"{m.errors:,}",
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
                        [[s.get("stage"), s.get("users"), fmt_g(s.get("duration_s")), s.get("requests"),
                          s.get("errors"), fmt_g(s.get("rps")), fmt_g(s.get("energy_j_per_request")),
                          fmt_g(s.get("latency_p50_s")), fmt_g(s.get("latency_p95_s")), fmt_g(s.get("device_power_w"))]
                         for s in m.get("stages") or ()])
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


def report_markdown(campaign: str, runs: Sequence[Run], tasks: Sequence[TaskRow], models: Sequence[ModelRow],
                    loads: Sequence[Run], warnings: Sequence[str], plots: dict[str, str],
                    plot_lines: Sequence[str]) -> str:
    """The whole of report.md; ``plots``: file name per load run id, ``plot_lines``: the plots section."""
    md = [*_md_setup(campaign, runs), "## How energy is counted", "", *(p + "\n" for p in ACCOUNTING_TEXT),
          *_md_columns(), *_md_tasks(tasks), *_md_models(models), *_md_load(loads, plots),
          *_md_not_counted(runs, warnings), *plot_lines]
    return "\n".join(md).rstrip("\n") + "\n"
