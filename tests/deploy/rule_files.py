"""The committed Prometheus rules (deploy/prometheus/rules/*.yml), read for promtool's checks and the live stack."""

from __future__ import annotations

from pathlib import Path

import yaml

RULE_FILES = sorted((Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules").glob("*.yml"))


def rules() -> list[dict]:
    """Every recording and alerting rule, in file and group order."""
    return [rule for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"]]
