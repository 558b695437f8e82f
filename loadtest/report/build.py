"""``build_report`` (a campaign's results folder to report.md, CSVs and PNGs) and its terminal summary."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from loadtest.report.figures import MODE_TITLES, MODES, ModelRow, TaskRow, checked_figures, model_rows, task_rows
from loadtest.report.markdown import distinct, fmt_g, fmt_methods, fmt_pm, fmt_table2, report_markdown
from loadtest.report.plots import write_plots
from loadtest.report.read import Run, read_runs
from loadtest.report.tables import write_tables


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


def _campaign_name(root: Path, runs: Sequence[Run]) -> str:
    names = distinct(r.meta.get("campaign") for r in runs if r.meta)
    if names != "unknown":
        return names
    try:
        spec = yaml.safe_load((root / "campaign.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        spec = None
    return str(spec.get("name")) if isinstance(spec, dict) and spec.get("name") else root.name


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
    plot_lines, plots = write_plots(models, loads, out)
    md = report_markdown(campaign, runs, tasks, models, loads, warnings, plots, plot_lines)
    (out / "report.md").write_text(md, encoding="utf-8", newline="\n")
    tables = write_tables(out, runs, figs, models, tasks, loads)
    files = ["report.md", *tables, *plots.values()]
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
                      [[m.task, m.model, m.dataset, str(m.repetitions), *(fmt_pm(m.kwh_per_1000[k]) for k in MODES),
                        fmt_methods(m.method), m.notes] for m in result.models])
    lines += [""] + _columns(["task", "rows", *modes, "Table 2 (sd)", "ratio paper mode"],
                             [[t.task, str(t.rows), *(fmt_pm(t.kwh_per_1000[k]) for k in MODES),
                               fmt_table2(t.table2), fmt_g(t.ratio_to_table2["paper"])] for t in result.tasks])
    skipped = [f"{run_id} {status}" + (f": {reason}" if reason else "")
               for run_id, _kind, status, reason in result.runs if status != "complete"]
    if skipped:
        lines += ["", "not counted:", *(f"  {s}" for s in skipped)]
    return "\n".join(lines) + "\n"
