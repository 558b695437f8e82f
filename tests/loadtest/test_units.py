"""Dataset sources, the row -> request mapping, the campaign file and the accounting arithmetic."""

from __future__ import annotations

import json

import pytest

from loadtest import accounting
from loadtest import datasets as ds
from loadtest.mapping import MappingError, RequestBuilder, resolve_columns
from loadtest.server import DeviceCounter
from loadtest.spec import SpecError, load_campaign

ROWS = [{"text": f"review number {i} was rather good", "label": i % 2} for i in range(30)]


@pytest.fixture()
def files(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    csv = tmp_path / "d.csv"
    csv.write_text("text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in ROWS))
    js = tmp_path / "d.json"
    js.write_text(json.dumps(ROWS))
    parquet = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), parquet)
    return {"jsonl": jsonl, "csv": csv, "json": js, "parquet": parquet}


@pytest.mark.parametrize("kind", ["jsonl", "csv", "json", "parquet"])
def test_local_files_give_the_same_seeded_selection(files, kind):
    loaded = ds.load(str(files[kind]), 10, seed=3)
    expected = [ROWS[i]["text"] for i in ds.selection(30, 10, 3)]
    assert [r["text"] for r in loaded.rows] == expected
    assert loaded.available == 30 and "text" in loaded.columns and not loaded.synthetic
    assert len(set(loaded.indices)) == 10  # no sample twice


def test_selection_is_what_datasets_shuffle_select_picks(tmp_path):
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "saved"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(folder))  # a dataset saved locally: no Hub
    loaded = ds.load(str(folder), 12, seed=42)
    reference = datasets.Dataset.from_list(ROWS).shuffle(seed=42).select(range(12))
    assert [r["text"] for r in loaded.rows] == reference["text"]
    dd = tmp_path / "dict"
    datasets.DatasetDict({"validation": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(dd))
    assert len(ds.load(str(dd), 5, split="validation").rows) == 5
    with pytest.raises(ds.DatasetError, match="no split 'test'; it has validation"):
        ds.load(str(dd), 5)


def test_bad_datasets_are_refused_with_the_reason(files, tmp_path):
    with pytest.raises(ds.DatasetError, match="30 rows, fewer than the 50 samples"):
        ds.load(str(files["jsonl"]), 50)
    assert len(ds.load(str(files["jsonl"]), 50, allow_fewer=True).rows) == 30
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ds.DatasetError, match="is empty"):
        ds.load(str(empty), 5)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "ok"}\n{not json\n')
    with pytest.raises(ds.DatasetError, match="line 2: not valid JSON"):
        ds.load(str(broken), 1)
    with pytest.raises(ds.DatasetError, match="does not exist"):
        ds.load(str(tmp_path / "missing.jsonl"), 1)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(ds.DatasetError, match="cannot read dataset file"):
        ds.load(str(bad), 1)
    with pytest.raises(ds.DatasetError, match="no bundled dataset 'nope'"):
        ds.load("bundled:nope", 1)


def test_columns_resolve_by_role_and_unknown_columns_are_named():
    assert resolve_columns("text-classification", "sst2", {}, ["sentence", "label"]) == {"text": "sentence"}
    assert resolve_columns("question-answering", "sciq", {}, ["question", "support"]) == {
        "question": "question", "context": "support"}
    with pytest.raises(MappingError, match="no column 'body' for 'text'.*its columns: text, label"):
        resolve_columns("text-classification", "mine", {"text": "body"}, ["text", "label"])
    with pytest.raises(MappingError, match="takes question, context"):
        resolve_columns("question-answering", "mine", {"text": "text"}, ["text"])


def test_request_bodies_per_task():
    qa = RequestBuilder("question-answering", {"question": "q", "context": "c"})
    assert qa.body({"q": "who?", "c": "me."}, 0) == {"inputs": {"question": "who?", "context": "me."}}
    tokens = RequestBuilder("token-classification", {"text": "tokens"})
    assert tokens.body({"tokens": ["EU", "rejects", "German", "call"]}, 0) == {"inputs": "EU rejects German call"}
    gen = RequestBuilder("summarization", {"text": "t"}, "Summarize: {text}. Summary:", {"max_new_tokens": 15})
    assert gen.body({"t": "long text"}, 0) == {"inputs": "Summarize: long text. Summary:", "max_new_tokens": 15}
    fill = RequestBuilder("fill-mask", {"text": "text"}, mask_token="[MASK]")
    bodies = [fill.body({"text": "the quick brown fox jumps over the lazy dog."}, i)["inputs"] for i in range(5)]
    assert all(b.count("[MASK]") == 1 for b in bodies)
    assert bodies == [fill.body({"text": "the quick brown fox jumps over the lazy dog."}, i)["inputs"]
                      for i in range(5)]  # deterministic
    assert len(set(bodies)) > 1  # spread over positions
    with pytest.raises(MappingError, match="mask token"):
        RequestBuilder("fill-mask", {"text": "text"}).body({"text": "a b"}, 0)


def test_campaign_file_errors_name_the_field(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\ndatasets: {a: {source: a.jsonl}}\nmodels: [{model: m, datasets: [b]}]\n")
    with pytest.raises(SpecError, match="unknown dataset 'b'"):
        load_campaign(path)
    path.write_text("name: x\nsamples: 0\ndatasets: {a: {source: a.jsonl}}\nmodels: [{model: m, datasets: [a]}]\n")
    with pytest.raises(SpecError, match="samples: Input should be greater than or equal to 1"):
        load_campaign(path)
    path.write_text("name: x\ndatasets: {a: {source: a.jsonl, template: no slot}}\nmodels: []\n")
    with pytest.raises(SpecError, match="template must contain"):
        load_campaign(path)
    for preset in ("demo", "power-hungry"):
        campaign = load_campaign(preset)
        assert campaign.samples == 1000
    assert load_campaign("power-hungry").repetitions == 10


def _snap(**devices):
    return {d: DeviceCounter(e, t, c, m) for d, (e, t, c, m) in devices.items()}


def test_accounting_modes_by_hand():
    finals = [{"energy_j": 2.0, "method": "estimated",
               "components": {"cpu": {"energy_j": 1.5}, "ram": {"energy_j": 0.5}},
               "carbon": {"operational_g": 0.1, "embodied_g": 0.01}},
              {"energy_j": 4.0, "method": "estimated",
               "components": {"cpu": {"energy_j": 3.0}, "ram": {"energy_j": 1.0}},
               "carbon": {"operational_g": 0.2, "embodied_g": 0.02}}]
    before = _snap(cpu=(100.0, 10.0, "cpu", "estimated"), ram=(50.0, 10.0, "ram", "estimated"),
                   gpu0=(1000.0, 10.1, "gpu", "measured"))
    after = _snap(cpu=(105.0, 12.0, "cpu", "estimated"), ram=(52.0, 12.0, "ram", "estimated"),
                  gpu0=(1360.0, 12.1, "gpu", "measured"))
    out = accounting.run_totals(finals, before, after, 2.0, {"cpu_power_w": 42.5, "ram_power_w": 3.0}, 360.0, 1.5)
    assert out["energy_j"]["requests"] == 6.0
    assert out["energy_j"]["device_window"] == pytest.approx(5 + 2 + 360)
    assert out["energy_j"]["paper"] == pytest.approx(360 + 85 + 6)  # GPU measured + 42.5 W x 2 s + 3 W x 2 s
    assert out["energy_method"] == {"requests": "estimated", "device_window": "mixed", "paper": "mixed"}
    assert out["carbon_g"]["requests"] == pytest.approx(0.3)
    assert out["carbon_g"]["device_window"] == pytest.approx(367 / 3.6e6 * 360 * 1.5)
    assert out["carbon_g"]["paper"] == pytest.approx(451 / 3.6e6 * 360)  # PUE 1 in paper mode
    assert out["window"]["duration_s"] == pytest.approx(2.1)


def test_a_running_server_s_own_carbon_settings_and_kept_runs_from_another_are_pointed_out():
    """--server ignored the campaign's carbon settings in silence (the demo preset's 138.75 g/kWh became the
    server's 475), and a resume against another server, or the embedded one, kept runs measured elsewhere (under
    another intensity) without a word."""
    from loadtest.campaign import server_warnings

    external = load_campaign("demo", server={"url": "http://127.0.0.1:9"})
    assert external.carbon is not None
    carbon = {"intensity_g_per_kwh": 475.0, "source": "world average", "pue": 1.0}
    system = {"carbon": carbon}
    kept = [{"server": {"url": "http://127.0.0.1:8", "embedded": False}, "carbon": carbon}]
    warnings = server_warnings(external, system, kept, "http://127.0.0.1:9", embedded=False)
    assert len(warnings) == 2 and "475.0 g/kWh" in warnings[0] and "http://127.0.0.1:8" in warnings[1]
    same = [{"server": {"url": "http://127.0.0.1:9", "embedded": False}, "carbon": carbon}]
    assert len(server_warnings(external, system, same, "http://127.0.0.1:9", embedded=False)) == 1
    embedded_run = {"server": {"url": "http://127.0.0.1:4", "embedded": True}, "carbon": carbon}
    assert server_warnings(load_campaign("demo"), system, [embedded_run], "http://127.0.0.1:5", embedded=True) == []
    paper = {**embedded_run, "carbon": {**carbon, "intensity_g_per_kwh": 138.75}}
    mixed = server_warnings(load_campaign("demo"), system, [paper, *same], "http://127.0.0.1:5", embedded=True)
    assert len(mixed) == 1 and "138.75 g/kWh" in mixed[0] and "http://127.0.0.1:9" in mixed[0]


def test_a_run_that_measured_nothing_is_failed():
    """A run whose every request was refused (401 without the key) was 'complete', and a resume kept it."""
    from loadtest.accounting import no_success

    assert no_success(3, 0, "HTTP 401: a valid bearer token is required") == \
        "no request succeeded (3 errors; the first: HTTP 401: a valid bearer token is required)"
    assert no_success(0, 0, None) == "no request was answered" and no_success(3, 1, "HTTP 413") is None


def test_the_paper_preset_draws_from_the_splits_the_paper_did():
    """Six of sixteen splits differed from docs/datasets.md, whose table follows the paper's scripts (sst2 test,
    samsum train, c4 train, ...)."""
    import re
    from pathlib import Path

    table = (Path(__file__).resolve().parents[2] / "docs" / "datasets.md").read_text()
    documented = {m.group(1): m.group(2) for m in re.finditer(r"^\| (\S+) \| [^|]*, (\w+) \|", table, re.M)
                  if m.group(1) != "set"}
    preset = load_campaign("power-hungry").datasets
    assert len(documented) == len(preset) == 16
    assert {name: d.split for name, d in preset.items()} == documented
