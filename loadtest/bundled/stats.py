"""Measured length statistics of a bundled set against its targets (used by the CLI, the docs and tests)."""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass

from ._spec import Spec, Target

# Words and punctuation marks, roughly as a Penn Treebank tokenizer splits them ("1,200" and "U.S." stay whole).
TOKEN_RE = re.compile(r"\w+(?:[-'.,]\w+)*|[^\w\s]")


def measure(value, metric: str) -> int:
    """``value``'s length in ``metric`` (see ``Target``): items of a list, characters, tokens or words."""
    if metric in ("items", "chars"):
        return len(value)
    if metric == "tokens":
        return len(TOKEN_RE.findall(value))
    return len(value.split())


def column(rows: list[dict], path: str) -> list:
    """The values of ``path`` (``a.b`` reaches into a struct column such as SQuAD's answers)."""
    head, _, rest = path.partition(".")
    values = [row[head] for row in rows]
    return [v[rest] for v in values] if rest else values


@dataclass(frozen=True)
class Achieved:
    target: Target
    mean: float
    median: float

    @property
    def error(self) -> float:
        return self.mean / self.target.mean - 1.0


def achieved(spec: Spec, rows: list[dict]) -> list[Achieved]:
    out = []
    for target in spec.targets:
        lengths = [measure(v, target.metric) for v in column(rows, target.column)]
        out.append(Achieved(target, statistics.fmean(lengths), statistics.median(lengths)))
    return out


def arrow_bytes_per_row(rows: list[dict]) -> float | None:
    """Arrow bytes per row as ``datasets`` counts them (None without pyarrow)."""
    try:
        import pyarrow as pa
    except ImportError:
        return None
    return pa.Table.from_pylist(rows).nbytes / max(1, len(rows))
