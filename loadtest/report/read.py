"""Reading run folders: ``RESULTS/runs/<run_id>/{run.json,requests.jsonl,final.jsonl}`` into ``Run`` records.

A run whose files are missing, torn or of the wrong shape becomes an ``unreadable`` run saying why; the others are
still reported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from loadtest.jsonl import read_objects

_REQUIRED = ("run_id", "kind", "status", "model", "task", "dataset")
_OBJECTS = ("server", "hardware", "carbon", "window", "requests", "energy_j", "energy_method", "carbon_g")


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
        requests = tuple(read_objects(run_dir / "requests.jsonl")) if has_lines else ()
        finals = tuple(read_objects(run_dir / "final.jsonl")) if has_lines else ()
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


def dataset_label(meta: dict) -> str:
    ds = meta.get("dataset") or {}
    return str(ds.get("name")) + (f"/{ds['config']}" if ds.get("config") else "")
