"""External tools the suite runs for real (promtool, prometheus, kubectl, podman).

Locally a missing tool skips its tests with the install command; in CI (``WATTSERVE_REQUIRE_TOOLS=1``, set by
``.ci/run`` after installing them) a missing tool fails, so a test can never silently stop running there.
"""

from __future__ import annotations

import os
import shutil

import pytest


def require_tool(name: str, install_hint: str) -> str:
    path = shutil.which(name)
    if path is not None:
        return path
    message = f"{name} not found on PATH ({install_hint})"
    if os.environ.get("WATTSERVE_REQUIRE_TOOLS") == "1":
        pytest.fail(message)
    pytest.skip(message)
