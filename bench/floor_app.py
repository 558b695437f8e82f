"""The floors under wattserve on this machine (used by bench_serving.py): apps that run the same runner with the
same single-thread hand-off as wattserve and nothing else (no metering, metrics, energy headers or problem
handling), served by uvicorn:

* ``bare``: a plain ASGI callable, the floor under any Python server;
* ``fastapi``: one FastAPI route doing the same, the floor under any server built on FastAPI (wattserve's stack);
* ``socket``: no asyncio, no uvicorn, no thread hand-off: a blocking socket that reads a request, runs the model
  on the connection's own thread and writes the answer (a minimal HTTP/1.1: keep-alive, Content-Length bodies). It
  is no server anyone should run, only the floor of this host itself: what a loopback round trip costs after the
  client has waited out an inference (a vCPU that idles for ~15 ms wakes slowly on a VM).

wattserve against these is what wattserve itself costs; these against in-process is what loopback HTTP, the hand-off
and the framework cost on this machine.

    python bench/floor_app.py REGISTRY PORT [bare|fastapi|socket]
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson  # noqa: E402
import uvicorn  # noqa: E402
from fastapi import FastAPI, Request, Response  # noqa: E402 - at module level: the route's annotations resolve here

from service.registry import load_registry  # noqa: E402
from service.tasks import TASKS  # noqa: E402


def _loaded(registry: str):
    """The registry's first model: its task and its runner, as the service loads them."""
    spec = load_registry(Path(registry)).models[0]
    task = TASKS[spec.task]
    return task, task.load(spec, spec.device)


def _answer(runner, request) -> tuple[bytes, bytes]:
    """Tokenize and infer (what wattserve's device thread does): the answer's JSON and its Server-Timing value."""
    started = time.perf_counter()
    out, _ = runner.run(runner.prepare(request))
    return orjson.dumps(out), f"inference;dur={(time.perf_counter() - started) * 1e3:.3f}".encode()


def build(registry: str, kind: str = "bare"):
    task, runner = _loaded(registry)
    executor = ThreadPoolExecutor(1)  # one inference at a time, off the event loop: as wattserve runs it

    async def infer(raw: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        request = task.request.model_validate(json.loads(raw))  # on the event loop, as wattserve validates
        body, timing = await asyncio.get_running_loop().run_in_executor(executor, _answer, runner, request)
        return body, [(b"server-timing", timing)]

    if kind == "fastapi":
        fastapi_app = FastAPI()

        @fastapi_app.get("/readyz")  # what bench_serving waits for
        async def alive() -> dict[str, str]:
            return {"status": "ok"}

        @fastapi_app.post("/")
        async def post(request: Request) -> Response:
            body, headers = await infer(await request.body())
            return Response(body, media_type="application/json", headers={k.decode(): v.decode() for k, v in headers})

        return fastapi_app

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
        body, headers = b'{"status": "ok"}', []
        if scope["method"] == "POST":
            body, headers = await infer(raw)
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def serve_socket(registry: str, port: int, stop: threading.Event | None = None) -> None:
    """The ``socket`` floor: one thread per connection, blocking reads and writes, the model run in place. Serves
    until ``stop`` is set (checked a few times a second), or forever."""
    task, runner = _loaded(registry)

    def connection(conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                length = next((int(v) for k, _, v in (line.partition(b":") for line in lines[1:])
                               if k.strip().lower() == b"content-length"), 0)
                while len(buf) < length:
                    buf += conn.recv(65536)
                raw, buf = buf[:length], buf[length:]
                headers = b""
                body = b'{"status": "ok"}'
                if lines[0].startswith(b"POST"):
                    body, timing = _answer(runner, task.request.model_validate(json.loads(raw)))
                    headers = b"server-timing: " + timing + b"\r\n"
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                             + str(len(body)).encode() + b"\r\n" + headers + b"\r\n" + body)

    with socket.create_server(("127.0.0.1", port)) as listener:
        listener.settimeout(0.2)
        while not (stop and stop.is_set()):
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(None)
            threading.Thread(target=connection, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[3] == "socket":
        serve_socket(sys.argv[1], int(sys.argv[2]))
    else:
        uvicorn.run(build(sys.argv[1], sys.argv[3] if len(sys.argv) > 3 else "bare"), host="127.0.0.1",
                    port=int(sys.argv[2]), log_level="warning")
