"""Dataset sources and the deterministic selection of a run's samples.

A source is ``bundled:NAME`` (synthetic, length-matched sets shipped with wattserve), ``hub:ID`` (the Hugging Face
``datasets`` library: Hub id with config and split; works offline from its cache), or a local path: ``.jsonl``,
``.json``, ``.csv``, ``.parquet`` files, or a folder written by ``Dataset.save_to_disk``.

The selection is a seeded permutation: ``numpy.random.default_rng(seed).permutation(len(rows))[:n]``, the very
indices ``datasets.Dataset.shuffle(seed=seed).select(range(n))`` picks, so a Hub dataset here and in the paper's
style of script give the same samples in the same order.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loadtest.jsonl import read_objects

log = logging.getLogger(__name__)

FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


class DatasetError(ValueError):
    """A dataset that cannot be used: the message says which, and why, before any request is sent."""


@dataclass(frozen=True)
class Loaded:
    rows: list[dict[str, Any]]  # the selected rows, in replay order
    indices: list[int]  # their positions in the source
    available: int  # rows in the source
    columns: list[str]
    synthetic: bool
    description: str


def _read_file(path: Path) -> list[dict[str, Any]]:
    try:
        if path.suffix == ".jsonl":
            try:
                return read_objects(path)
            except ValueError as exc:
                raise DatasetError(str(exc)) from None
        if path.suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and isinstance(data.get("data"), list):
                data = data["data"]
            if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
                raise DatasetError(f"{path}: expected a JSON list of objects (or {{\"data\": [...]}})")
            return data
        if path.suffix == ".csv":
            with path.open(newline="", encoding="utf-8") as f:
                return list(csv.DictReader(f))
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
    except DatasetError:
        raise
    except (OSError, UnicodeDecodeError, ValueError, csv.Error) as exc:
        raise DatasetError(f"cannot read dataset file {path}: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - pyarrow raises its own error types for corrupt files
        raise DatasetError(f"cannot read dataset file {path}: {type(exc).__name__}: {exc}") from exc
    raise DatasetError(f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(FILE_SUFFIXES)}")


def _hf(source: str, config: str | None, split: str):
    try:
        import datasets
    except ImportError as exc:
        raise DatasetError("the `datasets` library is needed for Hub datasets and save_to_disk folders: "
                           "pip install 'wattserve[datasets]'") from exc
    try:
        if source.startswith("hub:"):
            ds = datasets.load_dataset(source[4:], config, split=split)
        else:
            ds = datasets.load_from_disk(source)
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise DatasetError(f"{source}: no split {split!r}; it has {', '.join(ds)}")
                ds = ds[split]
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001 - datasets raises many types (offline, missing config, ...)
        raise DatasetError(f"cannot load dataset {source} (config {config}, split {split}): "
                           f"{type(exc).__name__}: {exc}") from exc
    return ds


def selection(available: int, n: int, seed: int) -> list[int]:
    """The first ``n`` of a seeded permutation of ``range(available)`` (== datasets' shuffle(seed).select)."""
    return [int(i) for i in np.random.default_rng(seed).permutation(available)[:n]]


def load(source: str, n: int, *, seed: int = 0, config: str | None = None, split: str = "test",
         allow_fewer: bool = False, base_dir: Path | None = None,
         keep: Callable[[dict[str, Any]], bool] | None = None) -> Loaded:
    """The ``n`` rows a run replays. Fewer rows than ``n``: an error, or all of them with a warning if allowed.
    ``keep``: only rows it accepts are candidates (e.g. no empty texts), filtered before the selection."""
    if n < 1:
        raise DatasetError(f"samples must be at least 1, got {n}")
    synthetic, description = False, source
    if source.startswith("bundled:"):
        from loadtest import bundled

        name = source.split(":", 1)[1]
        try:  # bundled knows its names and aliases (glue/sst2, cnn_dailymail/3.0.0, ...)
            imitates = bundled.describe(name).get("imitates") or {}
        except bundled.UnknownDatasetError:
            raise DatasetError(f"no bundled dataset {name!r}; bundled: {', '.join(bundled.names())}") from None
        twin = "/".join(str(imitates[k]) for k in ("hub_id", "config", "split") if imitates.get(k)) or name
        size = max(n, 1000)
        rows: Sequence[dict[str, Any]] = bundled.load(name, n=size, seed=0)
        while keep is not None and sum(map(keep, rows)) < n and size < 64 * n:  # e.g. wikitext's empty lines
            size *= 2
            rows = bundled.load(name, n=size, seed=0)
        synthetic, description = True, f"{source} (SYNTHETIC, length-matched to {twin})"
        hf = None
    elif source.startswith("hub:") or (Path(source).is_dir() if not base_dir else (base_dir / source).is_dir()):
        path = source if source.startswith("hub:") or base_dir is None else str(base_dir / source)
        hf = _hf(path, config, split)
        rows = hf
    else:
        path = Path(source) if base_dir is None or Path(source).is_absolute() else base_dir / source
        if not path.exists():
            raise DatasetError(f"dataset file {path} does not exist (sources: bundled:NAME, hub:ID, a "
                               f"{'/'.join(FILE_SUFFIXES)} file or a save_to_disk folder)")
        rows, hf = _read_file(path), None
    positions = None
    if keep is not None:
        positions = [i for i in range(len(rows)) if keep(rows[i])]
        if not positions and len(rows):
            raise DatasetError(f"dataset {source}: every row is empty in the mapped column(s)")
    available = len(rows) if positions is None else len(positions)
    if available == 0:
        raise DatasetError(f"dataset {source} is empty")
    if available < n:
        if not allow_fewer:
            raise DatasetError(f"dataset {source} has {available} rows, fewer than the {n} samples asked for "
                               "(set allow_fewer: true to replay all of them)")
        log.warning("dataset %s has %d rows, fewer than %d: replaying all of them", source, available, n)
        n = available
    indices = selection(available, n, seed)
    if positions is not None:
        indices = [positions[i] for i in indices]
    if hf is not None:
        picked = hf.select(indices)
        selected = [dict(picked[i]) for i in range(len(picked))]
        columns = list(hf.column_names)
    else:
        selected = [dict(rows[i]) for i in indices]
        columns = list(rows[0].keys())
    return Loaded(selected, indices, available, columns, synthetic, description)
