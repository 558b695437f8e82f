"""The PNG plots (energy by task, model size against energy, one per load run) and report.md's plots section.

Matplotlib through Agg without pyplot state, default style, no metadata: the same rows give byte-identical files.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from loadtest.accounting import combine_methods
from loadtest.paper import paper_value, task_order
from loadtest.report.figures import MODE_TITLES, MODES, ModelRow
from loadtest.report.read import Run

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


def write_plots(models: Sequence[ModelRow], loads: Sequence[Run], out: Path) -> tuple[list[str], dict[str, str]]:
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
