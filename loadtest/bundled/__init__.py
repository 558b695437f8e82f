"""Bundled SYNTHETIC twins of the "Power Hungry Processing" text datasets, usable offline.

Each set has the column names and types of the Hub dataset the paper used (so the same column mapping
serves both) and the length profile fitted to that dataset's published statistics, but its text is
random words: it exercises models with realistic input sizes, never with real content. See
``docs/datasets.md`` for the targets, their sources and what the generated sets achieve.

    >>> from loadtest import bundled
    >>> rows = bundled.load("squad", n=1000, seed=0)   # same rows on every machine
    >>> bundled.describe("squad")["synthetic"]
    True
"""

from __future__ import annotations

from ._registry import SPECS, resolve
from ._spec import Context

__all__ = ["UnknownDatasetError", "describe", "load", "names"]


class UnknownDatasetError(KeyError):
    """No bundled set has that name; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0])


def names() -> list[str]:
    """The bundled sets, named by the Hub ids the paper used (``super_glue/record``, ``wikitext-103``)."""
    return sorted(SPECS)


def _spec(name: str):
    spec = resolve(name)
    if spec is None:
        raise UnknownDatasetError(f"no bundled dataset {name!r}; known: {', '.join(names())}")
    return spec


def load(name: str, n: int = 1000, seed: int = 0) -> list[dict]:
    """``n`` synthetic rows imitating ``name``; the same list for the same (name, n, seed) everywhere.

    A larger n extends a smaller one: ``load(name, 10) == load(name, 1000)[:10]``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    spec = _spec(name)
    return spec.make(Context(spec.name, seed), n) if n else []


def describe(name: str) -> dict:
    """Columns, the Hub dataset/config/split imitated, length targets and sources; ``synthetic: True``."""
    return _spec(name).describe()
