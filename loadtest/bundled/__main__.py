"""python -m loadtest.bundled NAME [--n 1000] [--seed 0] [--out rows.jsonl] | --list | --describe NAME | --stats"""

from __future__ import annotations

import argparse
import json
import sys

from . import UnknownDatasetError, describe, load, names
from ._registry import SPECS
from .stats import achieved, arrow_bytes_per_row


def _stats(n: int, seed: int) -> str:
    lines = ["| set | column | metric | target mean | achieved mean | error | achieved median | "
             "Hub bytes/row | bundled bytes/row |", "|---|---|---|---|---|---|---|---|---|"]
    for name in names():
        spec = SPECS[name]
        rows = load(name, n, seed)
        size = arrow_bytes_per_row(rows)
        for k, a in enumerate(achieved(spec, rows)):
            hub = f"{spec.hub_bytes_per_row:,.1f}" if k == 0 else ""
            mine = f"{size:,.1f}" if k == 0 and size is not None else ""
            lines.append(f"| {name} | {a.target.column} | {a.target.metric} | {a.target.mean:g} | {a.mean:.1f} | "
                         f"{a.error:+.1%} | {a.median:g} | {hub} | {mine} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bundled",
                                     description="Export a bundled SYNTHETIC dataset (random words with the length "
                                                 "profile of a real one) as JSON lines.")
    parser.add_argument("name", nargs="?", help="dataset name, e.g. squad, cnn_dailymail, super_glue/record")
    parser.add_argument("--n", type=int, default=1000, help="rows (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="file to write (default: standard output)")
    parser.add_argument("--list", action="store_true", help="list the bundled sets")
    parser.add_argument("--describe", action="store_true", help="print the set's description as JSON")
    parser.add_argument("--stats", action="store_true", help="table of targeted vs achieved lengths, all sets")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(names()))
        return 0
    if args.stats:
        print(_stats(args.n, args.seed))
        return 0
    if not args.name:
        parser.error("a dataset name is required (see --list)")
    try:
        if args.describe:
            print(json.dumps(describe(args.name), indent=2))
            return 0
        rows = load(args.name, args.n, args.seed)
    except UnknownDatasetError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(describe(args.name)["notice"], file=sys.stderr)
    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
    try:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    finally:
        if args.out:
            out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
