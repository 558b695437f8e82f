"""Two wattserve apps in one process, metering on and off, on two ports: an A/B without process-to-process noise
(used by bench_serving.py)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import uvicorn  # noqa: E402

from service.api.app import create_app  # noqa: E402
from service.settings import Settings  # noqa: E402


async def main(registry: str, port_on: int, port_off: int, unmetered_first: bool = False) -> None:
    """``unmetered_first``: build (and so load the model of) the unmetered app first. Which copy of the model
    loads first is a confound of its own; the benchmark alternates it between processes."""
    apps = [(port_on, True), (port_off, False)]
    if unmetered_first:
        apps.reverse()
    servers = [uvicorn.Server(uvicorn.Config(create_app(Settings(registry=registry, port=port, metering=on)),
                                             host="127.0.0.1", port=port, log_level="warning"))
               for port, on in apps]
    await asyncio.gather(*(s.serve() for s in servers))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), len(sys.argv) > 4 and sys.argv[4] == "1"))
