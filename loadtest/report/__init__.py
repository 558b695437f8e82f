"""Campaign report: kWh and gCO2e per 1,000 inferences per model, dataset and task, beside the paper's Table 2.

Reads ``RESULTS/runs/<run_id>/{run.json,requests.jsonl,final.jsonl}`` (the runner's layout) and writes
``report.md``, CSV tables and PNG plots into an output folder. Per-request statistics are recomputed from the
request lines and the server's final records; the ``requests`` mode's total is the sum of the final records.
Output is deterministic: the same results give byte-identical files.

Modules, in dependency order: ``read`` (run folders into ``Run``), ``figures`` (a run's figures by accounting mode,
statistics, model and task rows), ``tables`` (CSV files), ``markdown`` (report.md), ``plots`` (PNGs), ``build``
(``build_report`` and the terminal summary).
"""

from loadtest.report.build import ReportResult, build_report, format_summary
from loadtest.report.figures import MODES, ModelRow, RunFigures, Stat, TaskRow, model_rows, run_figures, task_rows
from loadtest.report.read import Run, read_runs

__all__ = ["MODES", "ModelRow", "ReportResult", "Run", "RunFigures", "Stat", "TaskRow", "build_report",
           "format_summary", "model_rows", "read_runs", "run_figures", "task_rows"]
