"""What a bundled set imitates (as data) and the per-call context its generator draws from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ._random import LogNormal, Stream, name_key, weyl

NOTICE = ("SYNTHETIC text generated offline by wattserve (loadtest.bundled): random words with the "
          "length profile of {hub} - not real {hub} data, meaningless to read or to score.")
HUB_INFOS = ("https://github.com/huggingface/datasets/blob/d7dfbc83d68e87ba002c5eb2555f7a932e59038a/"
             "datasets/{script}/dataset_infos.json")


@dataclass(frozen=True)
class Target:
    """One length the set is fitted to: ``column``'s ``metric`` has mean ``mean`` (tested within ``tolerance``).

    metric: ``words`` (``len(s.split())``), ``tokens`` (words and punctuation marks, as a Penn
    Treebank-style tokenizer splits them), ``items`` (length of a list column) or ``chars``.
    """

    column: str
    metric: str
    mean: float
    published: str  # the figure as its source states it
    source: str  # URL
    dist: LogNormal | None = None  # the fitted distribution, where lengths are drawn from one
    tolerance: float = 0.10

    def describe(self) -> dict:
        out = {"column": self.column, "metric": self.metric, "mean": self.mean, "published": self.published,
               "source": self.source, "tolerance": self.tolerance}
        if self.dist is not None:
            out["distribution"] = self.dist.describe()
        return out


@dataclass(frozen=True)
class Spec:
    """A bundled set: the Hub dataset it imitates, its columns, its length targets and its generator."""

    name: str
    hub_id: str
    config: str | None
    split: str  # the split the paper drew its 1,000 samples from
    tasks: tuple[str, ...]
    columns: dict[str, str]  # column -> type, as the Hub's features declare it
    targets: tuple[Target, ...]
    hub_bytes_per_row: float  # Arrow bytes / row of that split (dataset_infos.json)
    hub_script: str  # folder of the dataset script in huggingface/datasets, for the byte figure's URL
    paper_usage: str
    make: Callable[[Context, int], list[dict]] = field(repr=False, compare=False)
    notes: str = ""

    @property
    def notice(self) -> str:
        return NOTICE.format(hub=self.hub_id + (f" ({self.config})" if self.config else ""))

    def describe(self) -> dict:
        return {
            "name": self.name,
            "synthetic": True,
            "notice": self.notice,
            "imitates": {"hub_id": self.hub_id, "config": self.config, "split": self.split},
            "tasks": list(self.tasks),
            "columns": dict(self.columns),
            "targets": [t.describe() for t in self.targets],
            "hub_arrow_bytes_per_row": {"value": self.hub_bytes_per_row,
                                        "source": HUB_INFOS.format(script=self.hub_script)},
            "paper_usage": self.paper_usage,
            "notes": self.notes,
        }


class Context:
    """Random streams for one ``load(name, n, seed)`` call.

    Row i (or group i: a shared passage, an article) always draws from its own stream keyed by
    (seed, name, kind, i), so ``load(name, n)[:k] == load(name, k)``: a longer load extends a shorter one.
    """

    def __init__(self, name: str, seed: int) -> None:
        if seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        self.seed, self._key = seed, name_key(name)
        self._offset = Stream(seed, self._key, 0xFFFF_FFFF).one()

    def stream(self, i: int, kind: int = 0) -> Stream:
        return Stream(self.seed, self._key, kind, i)

    def quantile(self, i: int, field_index: int) -> float:
        """Row i's quantile for length field ``field_index`` (an evenly spread sequence, see ``weyl``)."""
        return weyl(self._offset, field_index, i)
