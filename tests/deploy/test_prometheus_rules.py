"""Prometheus config and rules checked by promtool (syntax and hand-worked unit tests); the Grafana dashboard is
what its generator builds, and is well formed: units, datasource, variables, layout."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from tests.deploy.rule_files import RULE_FILES, rules
from tests.tools import require_tool

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))
GRAFANA = ROOT / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "wattserve-overview.json"
GRAFANA_BUILTINS = {"__rate_interval", "__range", "__interval", "__all"}


def promtool(*args: str) -> subprocess.CompletedProcess:
    tool = require_tool("promtool", "apt-get install prometheus")
    return subprocess.run([tool, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120)


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def test_config_is_valid():
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in result.stdout


def test_rules_are_valid():
    result = promtool("check", "rules", *(str(p) for p in RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass():
    assert RULE_TESTS, "no promtool unit tests in deploy/prometheus/tests"
    result = promtool("test", "rules", *(str(p) for p in RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_is_unit_tested():
    """Each recording rule is checked by a promql_expr_test; each alert has a case where it fires and one where not."""
    tested_exprs, firing, quiet = set(), set(), set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            tested_exprs |= {t["expr"].strip() for t in case.get("promql_expr_test", [])}
            for t in case.get("alert_rule_test", []):
                (firing if t.get("exp_alerts") else quiet).add(t["alertname"])
    records = {r["record"] for r in rules() if "record" in r}
    alerts = {r["alert"] for r in rules() if "alert" in r}
    assert records - tested_exprs == set(), "recording rules without a promql_expr_test"
    assert alerts - firing == set(), "alerts never tested firing"
    assert alerts - quiet == set(), "alerts never tested quiet"


def test_rule_names_and_annotations():
    recorded = {r["record"] for r in rules() if "record" in r}
    for rule in rules():
        if "record" in rule:  # level:metric:operations, the metric part wattserve_*
            level, metric, operation = rule["record"].split(":")
            assert re.fullmatch(r"[a-z_]+", level) and re.fullmatch(r"[a-z0-9_]+", operation), rule["record"]
            assert metric.startswith("wattserve_"), rule["record"]
        else:
            assert rule["labels"]["severity"] in {"page", "ticket", "warning"}, rule["alert"]
            assert {"summary", "description", "runbook"} <= set(rule["annotations"]), rule["alert"]
        # a series with colons is a recording rule: it must be one of ours (a typo would be empty for ever)
        used = set(re.findall(r"\b[a-z_]+:[a-z0-9_]+:[a-z0-9_]+\b", rule["expr"]))
        assert used <= recorded, f"{rule.get('record') or rule['alert']} reads unknown series {used - recorded}"


def test_dashboard_json_is_what_the_source_builds(tmp_path):
    generate = GRAFANA / "dashboards_src" / "generate.py"
    result = subprocess.run([sys.executable, str(generate), "--out-dir", str(tmp_path)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    built = tmp_path / DASHBOARD.name
    assert built.read_text() == DASHBOARD.read_text(), "dashboard JSON edited by hand or stale: run `make dashboards`"
    check = subprocess.run([sys.executable, str(generate), "--check"], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr


def test_dashboard_check_mode_detects_a_hand_edit(tmp_path):
    edited = json.loads(DASHBOARD.read_text())
    edited["title"] += " (edited)"
    (tmp_path / DASHBOARD.name).write_text(json.dumps(edited))
    generate = GRAFANA / "dashboards_src" / "generate.py"
    check = subprocess.run([sys.executable, str(generate), "--check", "--out-dir", str(tmp_path)],
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 1 and "make dashboards" in check.stderr


def test_every_panel_has_a_unit_and_the_provisioned_datasource():
    uid = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())[
        "datasources"][0]["uid"]
    assert panels()
    for panel in panels():
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{panel['title']}: no unit"
        assert panel["datasource"]["uid"] == uid, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(set(refs)) == len(refs) and all(refs), f"{panel['title']}: refIds {refs}"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid and target["expr"].strip(), panel["title"]
        if panel["type"] == "table":  # every value column gets its own unit and name
            overridden = {o["matcher"]["options"]: {p["id"] for p in o["properties"]}
                          for o in panel["fieldConfig"]["overrides"]}
            for ref in refs:
                assert {"unit", "displayName"} <= overridden.get(f"Value #{ref}", set()), f"{panel['title']} {ref}"


def test_variables_exist_and_are_used():
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert {"model", "task"} <= set(variables)
    exprs = [t["expr"] for p in panels() for t in p["targets"]] + [v["query"] for v in variables.values()]
    used = {name for expr in exprs for name in re.findall(r"\$(\w+)", expr)}
    assert used - GRAFANA_BUILTINS <= set(variables), f"undefined variables {used - GRAFANA_BUILTINS - set(variables)}"
    for name, variable in variables.items():
        assert re.fullmatch(r"label_values\(.+, \w+\)", variable["query"]) and variable["datasource"]["uid"], name
        assert any(f"${name}" in e for e in exprs), f"variable {name} filters nothing"


def test_layout_fits_the_grid_without_overlaps():
    cells: dict[tuple[int, int], str] = {}
    ids = [p["id"] for p in dashboard()["panels"]]
    assert len(set(ids)) == len(ids), "duplicate panel ids"
    for panel in dashboard()["panels"]:
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_provisioning_points_at_the_compose_services():
    datasource = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    scrape = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    interval = scrape["global"]["scrape_interval"]
    assert datasource["datasources"][0]["jsonData"]["timeInterval"] == interval  # $__rate_interval >= 4 scrapes
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "wattserve.yaml").read_text())
    assert provider["providers"][0]["type"] == "file"
    assert Path(provider["providers"][0]["options"]["path"]).is_absolute()
    job = next(j for j in scrape["scrape_configs"] if j["job_name"] == "wattserve")
    assert job["static_configs"][0]["targets"] == ["wattserve:8000"]

