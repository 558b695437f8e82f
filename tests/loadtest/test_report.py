"""The campaign report against result folders written by hand (tests/loadtest/conftest.py)."""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest

from loadtest.paper import TABLE2, TASK_TO_PAPER, paper_value
from loadtest.report import MODES, build_report, format_summary
from tests.loadtest.conftest import N, ResultsDir, build_campaign

TC = ("text-classification", "demo-text-classification")
FAILED = "demo-text-classification__imdb__rep04"
RUNNING = "demo-summarization__samsum__rep04"
BROKEN = "zz-broken__imdb__rep01"
LOAD = "all-MiniLM-L6-v2__imdb__load01"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One campaign, reported once for the read-only tests: (results writer, ReportResult, out dir)."""
    root = tmp_path_factory.mktemp("campaign")
    res = build_campaign(root / "results")
    return res, build_report(res.root, root / "report"), root / "report"


def _csv(path: Path) -> list[dict]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _row(result, model: str, dataset: str):
    (row,) = [m for m in result.models if m.model == model and m.dataset == dataset]
    return row


def _section(md: str, title: str) -> str:
    return md.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_requests_mode_equals_the_sum_of_final_records_per_successful_request(built):
    res, result, out = built
    summary = {(r["model"], r["dataset"], r["mode"]): r for r in _csv(out / "summary.csv")}
    runs_csv = {r["run_id"]: r for r in _csv(out / "runs.csv")}
    assert len(result.models) == 6
    for row in result.models:
        per_run = []
        for run_id in row.run_ids:
            finals = _jsonl(res.root / "runs" / run_id / "final.jsonl")
            requests = _jsonl(res.root / "runs" / run_id / "requests.jsonl")
            ok = [q for q in requests if q["status"] == 200]
            assert len(finals) == len(ok)
            total_j = math.fsum(f["energy_j"] for f in finals)
            per_run.append(total_j / len(finals) * 1000 / 3.6e6)
            assert float(runs_csv[run_id]["energy_j_requests"]) == pytest.approx(total_j, rel=1e-12)
            assert int(runs_csv[run_id]["requests_sent"]) == len(requests)
        expected = math.fsum(per_run) / len(per_run)
        assert row.kwh_per_1000["requests"].mean == pytest.approx(expected, rel=1e-12)
        assert float(summary[(row.model, row.dataset, "requests")]["kwh_per_1000_mean"]) == pytest.approx(
            expected, rel=1e-12)


def test_mean_and_sd_over_repetitions_by_hand(built):
    _, result, out = built
    row = _row(result, TC[1], "imdb")  # 3.6, 7.2, 10.8 J per request: 1e-3, 2e-3, 3e-3 kWh per 1,000
    assert row.repetitions == 3 and row.repetitions_planned == 3
    for mode, factor in (("requests", 1.0), ("device_window", 1.5), ("paper", 6.0)):
        assert row.kwh_per_1000[mode].mean == pytest.approx(2e-3 * factor, rel=1e-12)
        assert row.kwh_per_1000[mode].sd == pytest.approx(1e-3 * factor, rel=1e-12)
        assert row.g_co2e_per_1000[mode].mean == pytest.approx(2e-3 * factor * 475.0, rel=1e-12)
        assert row.g_co2e_per_1000[mode].sd == pytest.approx(1e-3 * factor * 475.0, rel=1e-12)
    summary = {(r["model"], r["dataset"], r["mode"]): r for r in _csv(out / "summary.csv")}
    paper = summary[(TC[1], "imdb", "paper")]
    assert float(paper["kwh_per_1000_mean"]) == pytest.approx(0.012, rel=1e-12)
    assert float(paper["kwh_per_1000_sd"]) == pytest.approx(0.006, rel=1e-12)
    assert "| text-classification | demo-text-classification | imdb | 3/3 | 0.002 ± 0.001 | 0.003 ± 0.0015 | " \
           "0.012 ± 0.006 | 0.95 ± 0.475 |" in (out / "report.md").read_text(encoding="utf-8")
    task = next(t for t in result.tasks if t.task == TC[0])  # a task: mean and sd over its model-dataset rows
    means = [m.kwh_per_1000["paper"].mean for m in result.models if m.task == TC[0]]
    assert task.rows == 2 and task.models == 1
    assert task.kwh_per_1000["paper"].mean == pytest.approx(statistics.mean(means), rel=1e-12)
    assert task.kwh_per_1000["paper"].sd == pytest.approx(statistics.stdev(means), rel=1e-12)


def test_one_repetition_has_no_sd(tmp_path):
    res = ResultsDir(tmp_path / "results")
    res.add_run("m", "fill-mask", "c4", 1, energies_j=[3.6, 3.6], latencies_s=[0.1, 0.2])
    result = build_report(res.root, tmp_path / "out")
    (row,) = result.models
    assert row.kwh_per_1000["requests"].mean == pytest.approx(1e-3) and row.kwh_per_1000["requests"].sd is None
    assert "| 1/3 | 0.001 ± – |" in (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert {r["kwh_per_1000_sd"] for r in _csv(tmp_path / "out" / "summary.csv")} == {""}


def test_per_request_percentiles_latency_tokens_and_counts(built):
    res, result, _ = built
    row = _row(result, TC[1], "imdb")
    assert (row.j_per_request_p50, row.j_per_request_p95) == (pytest.approx(7.2), pytest.approx(10.8))
    assert row.tokens_in_mean == pytest.approx(100 + (13 * 1 + 13 * 2) / 40)  # 100 + seq % 3 over 40 requests
    assert row.tokens_out_mean == 0
    rt = _row(result, TC[1], "rotten_tomatoes")  # repetition 2 had two connection failures
    assert (rt.requests_sent, rt.requests_ok, rt.errors) == (3 * N + 2, 3 * N, 2)
    lines = [q for run_id in rt.run_ids for q in _jsonl(res.root / "runs" / run_id / "requests.jsonl")]
    ok = [q["latency_s"] for q in lines if q["status"] == 200]
    assert rt.latency_p50_s == pytest.approx(np.percentile(ok, 50))
    assert rt.latency_p95_s == pytest.approx(np.percentile(ok, 95))
    assert rt.latency_p95_s != pytest.approx(np.percentile([q["latency_s"] for q in lines], 95))
    finals = [f["energy_j"] for run_id in rt.run_ids for f in _jsonl(res.root / "runs" / run_id / "final.jsonl")]
    assert rt.j_per_request_p95 == pytest.approx(np.percentile(finals, 95))
    assert _row(result, "demo-summarization", "samsum").tokens_out_mean == 10


def test_methods_and_markers_are_shown(built):
    _, result, out = built
    minilm, samsum = _row(result, "all-MiniLM-L6-v2", "imdb"), _row(result, "demo-summarization", "samsum")
    assert minilm.method == {"requests": "measured", "device_window": "estimated", "paper": "estimated"}
    assert samsum.method["requests"] == "mixed"  # repetition 1 measured, 2 and 3 estimated
    assert minilm.notes == "" and not minilm.demo_model
    assert _row(result, TC[1], "rotten_tomatoes").notes == "demo model (random weights); synthetic dataset"
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "per-request: measured, device window: estimated, paper mode: estimated" in md
    assert "per-request: mixed, device window: estimated" in md
    summary = {(r["model"], r["dataset"], r["mode"]): r for r in _csv(out / "summary.csv")}
    assert summary[("all-MiniLM-L6-v2", "imdb", "requests")]["energy_method"] == "measured"
    assert summary[(TC[1], "imdb", "paper")]["demo_model"] == "true"
    assert summary[(TC[1], "imdb", "paper")]["synthetic_dataset"] == "false"


def test_table2_beside_the_right_task(built):
    _, result, out = built
    tasks = {(r["task"], r["mode"]): r for r in _csv(out / "tasks.csv")}
    assert tasks[("text-classification", "paper")]["table2_kwh_per_1000"] == "0.002"
    assert tasks[("text-classification", "paper")]["table2_sd_kwh_per_1000"] == "0.001"
    assert tasks[("summarization", "requests")]["paper_task"] == "summarization"
    assert tasks[("summarization", "requests")]["table2_kwh_per_1000"] == "0.049"
    assert tasks[("feature-extraction", "paper")]["table2_kwh_per_1000"] == ""
    tc = next(t for t in result.tasks if t.task == "text-classification")
    assert tc.ratio_to_table2["paper"] == pytest.approx(tc.kwh_per_1000["paper"].mean / 0.002)
    assert float(tasks[("text-classification", "paper")]["ratio_to_table2"]) == pytest.approx(
        tc.ratio_to_table2["paper"])
    table = _section((out / "report.md").read_text(encoding="utf-8"), "Per task").split("gCO2e")[0]
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert " | 0.002 (0.001) | " in rows["text-classification"]
    assert " | 0.049 (0.01) | " in rows["summarization"]
    assert rows["feature-extraction"].split(" | ")[5] == "–"
    assert [t.task for t in result.tasks] == ["feature-extraction", "text-classification", "summarization"]


def test_paper_table_and_mapping():
    assert paper_value("question-answering") == TABLE2["extractive QA"]
    assert paper_value("fill-mask").kwh_per_1000 == 0.003
    assert paper_value("token-classification").sd_kwh_per_1000 == 0.002
    assert paper_value("text-generation").kwh_per_1000 == 0.047 and paper_value("feature-extraction") is None
    assert all(v is None or v in TABLE2 for v in TASK_TO_PAPER.values())
    assert len(TABLE2) == 10


def test_plots_are_valid_pngs_embedded_in_the_report(built):
    from matplotlib.image import imread

    _, result, out = built
    pngs = ["energy_by_task.png", "size_vs_energy.png", f"load_{LOAD}.png"]
    assert set(pngs) <= set(result.files)
    md = (out / "report.md").read_text(encoding="utf-8")
    for name in pngs:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert b"Software" not in data and b"tIME" not in data
        h, w, _ = imread(out / name).shape
        assert h > 200 and w > 400
        assert f"]({name})" in md
    assert md.index("## Plots") > md.index("## Per model and dataset")
    assert "Left out (parameters unknown): demo-summarization." in md


def test_csv_columns(built):
    _, _, out = built
    with (out / "summary.csv").open(encoding="utf-8") as f:
        header = next(csv.reader(f))
    assert header[:4] == ["task", "model", "dataset", "mode"]
    assert {"kwh_per_1000_mean", "kwh_per_1000_sd", "g_co2e_per_1000_mean", "g_co2e_per_1000_sd", "energy_method",
            "j_per_request_p50", "j_per_request_p95", "latency_p50_s", "latency_p95_s", "tokens_in_mean",
            "tokens_out_mean", "requests_sent", "errors", "table2_kwh_per_1000", "ratio_to_table2",
            "demo_model", "synthetic_dataset"} <= set(header)
    assert len(_csv(out / "summary.csv")) == 6 * len(MODES)
    assert len(_csv(out / "tasks.csv")) == 3 * len(MODES)
    assert len(_csv(out / "runs.csv")) == 6 * 3 + 4
    assert [r["users"] for r in _csv(out / "load_stages.csv")] == ["1", "2", "4"]
    md = (out / "report.md").read_text(encoding="utf-8")
    assert md.index("## Files and columns") < md.index("## Per task")
    for column in header:
        assert f"  - `{column}`: " in md


def test_report_opens_with_campaign_setup_and_accounting(built):
    _, result, out = built
    md = (out / "report.md").read_text(encoding="utf-8")
    assert result.campaign == "demo" and md.startswith("# Campaign report: demo\n")
    head = md.split("## Per task")[0]
    for text in ("wattserve 0.1.0 at http://127.0.0.1:8123 (embedded)", "Test CPU @ 2.0GHz, 2 threads",
                 "475.0 gCO2e/kWh (constant), PUE 1.0", "**Per-request (`requests`).**",
                 "**Device window (`device_window`).**", "**Paper mode (`paper`).**"):
        assert text in head


def test_failed_running_and_unreadable_runs_are_listed_not_counted(built):
    _, result, out = built
    statuses = {run_id: (status, reason) for run_id, _, status, reason in result.runs}
    assert statuses[FAILED] == ("failed", "server died: exit code -9 | OOM")
    assert statuses[RUNNING][0] == "running" and statuses[BROKEN][0] == "unreadable"
    assert all(FAILED not in m.run_ids and RUNNING not in m.run_ids for m in result.models)
    assert _row(result, TC[1], "imdb").repetitions == 3
    section = _section((out / "report.md").read_text(encoding="utf-8"), "Runs not counted")
    assert f"| {FAILED} | failed | demo-text-classification | imdb | 4 | server died: exit code -9 \\| OOM |" in section
    assert f"| {RUNNING} | incomplete (running) |" in section
    assert f"| {BROKEN} | unreadable |" in section and "JSONDecodeError" in section
    runs = {r["run_id"]: r for r in _csv(out / "runs.csv")}
    assert runs[FAILED]["status"] == "failed" and runs[FAILED]["kwh_per_1000_requests"] == ""
    assert "not counted:" in format_summary(result)


def test_load_run_has_its_stage_table_and_stays_out_of_the_energy_tables(built):
    _, result, out = built
    assert all(LOAD not in m.run_ids for m in result.models)
    section = _section((out / "report.md").read_text(encoding="utf-8"), "Load runs")
    assert f"### {LOAD}" in section
    assert "| 2 | 4 | 10 | 400 | 0 | 40 | 0.225 | 0.08 | 0.2 | 50 |" in section


def test_two_builds_are_byte_identical(built, tmp_path):
    res, result, out = built
    again = build_report(res.root, tmp_path / "again")
    assert again.files == result.files
    for name in result.files:
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes(), name


def test_no_runs_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=str(tmp_path / "nothing")):
        build_report(tmp_path / "nothing", tmp_path / "out")
    (tmp_path / "empty" / "runs").mkdir(parents=True)
    with pytest.raises(ValueError, match="no runs in .*empty"):
        build_report(tmp_path / "empty", tmp_path / "out")


def test_bad_run_files_make_that_run_unreadable_and_the_rest_is_reported(tmp_path):
    res = ResultsDir(tmp_path / "results")
    good = res.add_run("m", "fill-mask", "c4", 1, energies_j=[1.0] * 3, latencies_s=[0.1] * 3)
    torn = res.add_run("m", "fill-mask", "c4", 2, energies_j=[1.0] * 3, latencies_s=[0.1] * 3)
    gone = res.add_run("m", "fill-mask", "c4", 3, energies_j=[1.0] * 3, latencies_s=[0.1] * 3)
    with (res.root / "runs" / torn / "final.jsonl").open("a", encoding="utf-8") as f:
        f.write('{"seq": 3, "energy_j"\n')
    (res.root / "runs" / gone / "final.jsonl").unlink()
    res.add_corrupt_run("not-an-object", "[1, 2]")
    result = build_report(res.root, tmp_path / "out")
    reasons = {run_id: reason for run_id, _, status, reason in result.runs if status == "unreadable"}
    assert "final.jsonl line 4" in reasons[torn] and reasons[gone] == "final.jsonl missing"
    assert "not a JSON object" in reasons["not-an-object"]
    (row,) = result.models
    assert row.run_ids == (good,)


def test_a_run_json_total_that_disagrees_with_the_final_records_is_flagged(tmp_path):
    res = ResultsDir(tmp_path / "results")
    run_id = res.add_run("m", "fill-mask", "c4", 1, energies_j=[3.6] * 4, latencies_s=[0.1] * 4,
                         declared_requests_j=99.0)
    result = build_report(res.root, tmp_path / "out")
    assert result.models[0].kwh_per_1000["requests"].mean == pytest.approx(1e-3)  # from final.jsonl
    assert any(run_id in w and "99 J" in w for w in result.warnings)
    assert "Data checks:" in (tmp_path / "out" / "report.md").read_text(encoding="utf-8")


def test_format_summary_lists_models_and_tasks_beside_table2(built):
    _, result, _ = built
    text = format_summary(result)
    assert "demo-text-classification" in text and "all-MiniLM-L6-v2" in text
    line = next(x for x in text.splitlines() if x.startswith("text-classification ") and "(0.001)" in x)
    assert "0.002 (0.001)" in line
    assert "0.002 ± 0.001" in text


def _edit_meta(res: ResultsDir, run_id: str, **changes) -> None:
    path = res.root / "runs" / run_id / "run.json"
    path.write_text(json.dumps({**json.loads(path.read_text(encoding="utf-8")), **changes}), encoding="utf-8")


def test_wrong_types_make_that_run_unreadable(tmp_path):
    res = ResultsDir(tmp_path / "results")
    good, words, shapes = (res.add_run("m", "fill-mask", "c4", rep, energies_j=[3.6] * 2, latencies_s=[0.1] * 2)
                           for rep in (1, 2, 3))
    _edit_meta(res, words, energy_j={"requests": 7.2, "device_window": "lots", "paper": 1.0})
    _edit_meta(res, shapes, hardware="a laptop")
    result = build_report(res.root, tmp_path / "out")
    statuses = {run_id: (status, reason) for run_id, _, status, reason in result.runs}
    assert statuses[words][0] == "unreadable" and "TypeError" in statuses[words][1]
    assert statuses[shapes] == ("unreadable", "ValueError: run.json: hardware is not an object")
    assert result.models[0].run_ids == (good,)
    # no model's size known: the size plot is left out and the report says so
    assert "size_vs_energy.png" not in result.files and "energy_by_task.png" in result.files
    assert "no size plot" in (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
