"""Write every dashboard's JSON into grafana/dashboards/ from its source here (``make dashboards``).

``--check`` writes nothing and exits 1 if a committed file differs from what its source builds now.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import overview
from grafana_foundation_sdk.cog.encoder import JSONEncoder

DASHBOARDS = {"wattserve-overview.json": overview.build}
OUT_DIR = Path(__file__).resolve().parent.parent / "dashboards"


def render(build) -> str:
    """Stable text: sorted keys, two-space indent, one trailing newline (so diffs stay readable)."""
    return json.dumps(build().build(), cls=JSONEncoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    parser.add_argument("--check", action="store_true", help="compare with the files instead of writing them")
    args = parser.parse_args(argv)
    stale = []
    for name, build in DASHBOARDS.items():
        path, text = args.out_dir / name, render(build)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    for path in stale:
        print(f"{path} differs from its source in grafana/dashboards_src/: run `make dashboards` (and never edit "
              "the JSON by hand)", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
