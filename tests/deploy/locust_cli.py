"""Locust command lines as the campaign containers run them (compose and Kubernetes alike): the locustfile's path in
the image, a flag's value, and Locust's own parser with this repository's locustfile."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE_IN_IMAGE = "/app/loadtest/locustfile.py"


def arg_after(command: list[str], flag: str) -> str:
    assert flag in command, f"{flag} missing from {command}"
    return command[command.index(flag) + 1]


# Locust's own parser with the locustfile's options, in a child process: importing locust monkey-patches the
# standard library (gevent), which must not happen in the test process.
_PARSE_LOCUST = """
import contextlib, io, json, runpy, sys
from locust import events
from locust.argument_parser import get_parser
runpy.run_path(sys.argv[1], run_name="locustfile")
results = []
for args, env in json.load(sys.stdin):
    parser = get_parser(default_config_files=[])
    events.init_command_line_parser.fire(parser=parser)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            options = vars(parser.parse_args(args, env_vars=env))
    except SystemExit:
        results.append({"error": err.getvalue().strip()})
        continue
    results.append({"options": {k: v for k, v in options.items() if isinstance(v, (str, int, float, bool))}})
known = sorted({a.env_var for a in parser._actions if getattr(a, "env_var", None)})
print(json.dumps({"results": results, "env_vars": known}))
"""


def parse_locust(cases: list[tuple[list[str], dict[str, str]]]) -> tuple[list[dict], set[str]]:
    """Parse each (command line after `locust`, environment) as Locust would with loadtest/locustfile.py:
    ({"options": ...} or {"error": ...} per case, the LOCUST_* variables Locust and the locustfile read)."""
    locustfile = ROOT / "loadtest" / "locustfile.py"
    assert locustfile.is_file(), "loadtest/locustfile.py is missing"
    result = subprocess.run([sys.executable, "-c", _PARSE_LOCUST, str(locustfile)], input=json.dumps(cases),
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    return out["results"], set(out["env_vars"])
