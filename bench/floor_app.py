"""The floor under any Python model server on this machine (used by bench_serving.py): a bare ASGI app on uvicorn
that runs the same runner with the same single-thread hand-off as wattserve, and nothing else: no routing, no
validation beyond the task's request model, no metering, no metrics, no energy headers.

wattserve's served figure against this one is what wattserve itself costs; this one against in-process is what
loopback HTTP and two thread hand-offs cost on this machine, whichever framework serves.

    python bench/floor_app.py REGISTRY PORT
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson  # noqa: E402
import uvicorn  # noqa: E402

from service.registry import load_registry  # noqa: E402
from service.tasks import TASKS  # noqa: E402


def build(registry: str):
    spec = load_registry(Path(registry)).models[0]
    task = TASKS[spec.task]
    runner = task.load(spec, spec.device)
    executor = ThreadPoolExecutor(1)  # one inference at a time, off the event loop: as wattserve runs it

    def job(request):
        started = time.perf_counter()
        body, _ = runner.run(runner.prepare(request))
        return body, time.perf_counter() - started

    async def app(scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        body, headers = b'{"status": "ok"}', [(b"content-type", b"application/json")]
        if scope["method"] == "POST":
            request = task.request.model_validate(json.loads(raw))
            out, inference_s = await asyncio.get_running_loop().run_in_executor(executor, job, request)
            body = orjson.dumps(out)  # as wattserve encodes
            headers.append((b"server-timing", f"inference;dur={inference_s * 1e3:.3f}".encode()))
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


if __name__ == "__main__":
    uvicorn.run(build(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
