"""JSON Lines of objects, read strictly: the one reader for dataset files and campaign results."""

from __future__ import annotations

import json
from pathlib import Path


def read_objects(path: Path) -> list[dict]:
    """Every non-blank line as a JSON object; a ValueError names the file and line of the first bad one."""
    rows = []
    with Path(path).open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path} line {number}: not valid JSON: {exc}") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path} line {number}: not a JSON object")
            rows.append(row)
    return rows
