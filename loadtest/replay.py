"""The Locust side: a user that replays a run's samples sequentially, and one run of it (library mode).

Importing this module imports locust, which monkey-patches the process with gevent: import it first, and never in
a process that runs torch (the server runs in its own process).

The protocol of "Power Hungry Processing": each sample exactly once, in order, one request at a time, no
batching; warm-up requests (not measured) first; the device counters are read before the first and after the
last measured request, so idle time between requests is counted like the paper's CodeCarbon task window.
Every response is appended to ``requests.jsonl`` (flushed) as it arrives; the final figures follow.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gevent
from locust import FastHttpUser, constant, task
from locust.env import Environment
from locust.exception import StopUser

from loadtest import accounting
from loadtest.server import EmbeddedServer, ServerClient, ServerError

log = logging.getLogger(__name__)

MAX_CONSECUTIVE_CONNECTION_ERRORS = 3
ENERGY_HEADERS = {"energy_j": "X-Energy-Joules", "energy_gpu_j": "X-Energy-GPU-Joules",
                  "energy_cpu_j": "X-Energy-CPU-Joules", "energy_ram_j": "X-Energy-RAM-Joules",
                  "carbon_g": "X-Carbon-gCO2e"}


def energy_fields(headers: Any) -> dict[str, float | None]:
    """A response's numeric energy headers as a results line holds them (None where a header is absent)."""
    return {key: float(value) if (value := headers.get(header)) is not None else None
            for key, header in ENERGY_HEADERS.items()}


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, path)


class RunState:
    """One run: its samples, the cursor, the results file, the window and the outcome."""

    def __init__(self, meta: dict[str, Any], path: str, bodies: list[bytes], warmup: int, run_dir: Path,
                 client: ServerClient, server_alive: Callable[[], str] | None = None,
                 progress: Callable[[int], None] | None = None) -> None:
        self.meta, self.path, self.bodies = meta, path, bodies
        self.warmup = [bodies[i % len(bodies)] for i in range(warmup)]  # the run's first samples, unmeasured
        self.run_dir, self.client, self.server_alive, self.progress = run_dir, client, server_alive, progress
        self.cursor = 0
        self.failed: str | None = None
        self.before = self.after = None
        self.loop_start_s = self.loop_end_s = None
        self.ok: list[tuple[int, str]] = []  # (seq, request id) of the measured successes
        self.sent = self.errors = self._connection_errors = 0
        self.first_error: str | None = None
        self.done = False
        run_dir.mkdir(parents=True, exist_ok=True)
        self.results = (run_dir / "requests.jsonl").open("a", encoding="utf-8")
        self.meta.update(status="running", started_at=now_iso())
        write_json_atomic(run_dir / "run.json", self.meta)

    # -- the replay, called from the Locust user ---------------------------------------------------------
    def next(self) -> tuple[bool, int, bytes] | None:
        """(warm-up?, seq, body) of the next request, or None when every sample has been sent once."""
        if self.failed or self.cursor >= len(self.warmup) + len(self.bodies):
            return None
        i, self.cursor = self.cursor, self.cursor + 1
        if i < len(self.warmup):
            return True, i, self.warmup[i]
        return False, i - len(self.warmup), self.bodies[i - len(self.warmup)]

    def begin_window(self) -> None:
        self.before = self.client.snapshot_covering(time.time())
        self.loop_start_s = time.time()

    def end_window(self) -> None:
        if self.loop_start_s is None or self.loop_end_s is not None:
            return
        self.loop_end_s = time.time()
        try:
            self.after = self.client.snapshot_covering(self.loop_end_s)
        except ServerError as exc:
            self.fail(f"could not read the device counters after the run: {exc}")

    def fail(self, reason: str) -> None:
        if self.failed is None:
            self.failed = reason
            log.error("run %s failed: %s", self.meta["run_id"], reason)

    def record(self, warm: bool, seq: int, started_at: float, latency_s: float, status: int, headers: Any,
               error: str | None) -> None:
        if status == 0:
            self._connection_errors += 1
            if self._connection_errors >= MAX_CONSECUTIVE_CONNECTION_ERRORS or not self._server_up():
                self.fail(f"server died or is unreachable ({error}) {self._death_reason()}".strip())
        else:
            self._connection_errors = 0
        if warm:
            return
        line: dict[str, Any] = {"seq": seq, "sample": seq, "request_id": None, "status": status,
                                "latency_s": round(latency_s, 6), "started_at": round(started_at, 6)}
        if status == 200:
            line["request_id"] = headers.get("X-Request-Id")
            line.update(energy_fields(headers))
            line["energy_method"] = headers.get("X-Energy-Method")
            line["energy_status"] = headers.get("X-Energy-Status")
            line["error"] = None
            if line["request_id"]:
                self.ok.append((seq, line["request_id"]))
        else:
            line.update(dict.fromkeys(ENERGY_HEADERS, None), energy_method=None, energy_status=None,
                        error=error or f"HTTP {status}")
            self.errors += 1
            self.first_error = self.first_error or line["error"]
        self.sent += 1
        self.results.write(json.dumps(line) + "\n")
        self.results.flush()
        if self.progress is not None:
            self.progress(1)

    def _server_up(self) -> bool:
        return (self.server_alive() == "") if self.server_alive else self.client.healthy()

    def _death_reason(self) -> str:
        return self.server_alive() if self.server_alive else ""

    # -- after the replay --------------------------------------------------------------------------------
    def finish(self) -> dict[str, Any]:
        """Fetch the final figures, compute the three accounting modes, write run.json (complete or failed)."""
        self.results.close()
        if self.done:
            return self.meta
        self.done = True
        if not self.failed and self.sent < len(self.bodies):
            self.fail(f"only {self.sent} of {len(self.bodies)} samples were sent (the replay stopped early)")
        if not self.failed and (reason := accounting.no_success(self.sent, len(self.ok), self.first_error)):
            self.fail(reason)
        if not self.failed:
            try:
                finals = self._finals()
                totals = accounting.run_totals(
                    finals, self.before, self.after, self.loop_end_s - self.loop_start_s,
                    self.meta["paper_constants"], self.meta["carbon"]["intensity_g_per_kwh"],
                    self.meta["carbon"]["pue"])
            except (ServerError, ValueError, KeyError) as exc:
                self.fail(f"could not collect the final figures: {exc}")
            else:
                self.meta.update(totals)
                self.meta["requests"] = {"sent": self.sent, "ok": len(finals), "errors": self.errors}
                self.meta["tokens_in"] = sum(int(r.get("tokens_in", 0)) for r in finals)
                self.meta["tokens_out"] = sum(int(r.get("tokens_out", 0)) for r in finals)
                not_final = sum(1 for r in finals if r.get("status") != "final")
                if not_final:
                    self.meta["warnings"] = [f"{not_final} records were still provisional when collected"]
        self.meta.update(status="failed" if self.failed else "complete", reason=self.failed, ended_at=now_iso())
        write_json_atomic(self.run_dir / "run.json", self.meta)
        return self.meta

    def _finals(self) -> list[dict[str, Any]]:
        finals = []
        with (self.run_dir / "final.jsonl").open("w", encoding="utf-8") as out:
            for seq, request_id in self.ok:
                record = {"seq": seq, **self.client.final_record(request_id)}
                finals.append(record)
                out.write(json.dumps(record) + "\n")
        return finals


class ReplayUser(FastHttpUser):
    """Sends the run's samples one after the other (run it with exactly one user), then stops the runner."""

    wait_time = constant(0)

    @task
    def replay(self) -> None:
        state: RunState = self.environment.wattserve_run
        item = state.next()
        if item is None:
            state.end_window()
            gevent.spawn(self.environment.runner.quit)
            raise StopUser
        warm, seq, body = item
        if not warm and seq == 0:
            try:
                state.begin_window()
            except ServerError as exc:
                state.fail(f"could not read the device counters before the run: {exc}")
                return
        started_at, t0 = time.time(), time.perf_counter()
        with self.client.post(state.path, data=body, headers=state.client.request_headers, catch_response=True,
                              name=state.meta["run_id"]) as response:
            latency_s = time.perf_counter() - t0
            status = response.status_code or 0
            error = None
            if status != 200:
                error = str(response.error) if status == 0 else f"HTTP {status}: {(response.text or '')[:200]}"
                response.failure(error)
            state.record(warm, seq, started_at, latency_s, status, response.headers if status else {}, error)


def replay_run(state: RunState, host: str) -> dict[str, Any]:
    """Library mode: one Locust environment and runner with one ReplayUser; returns the run's metadata."""
    env = Environment(user_classes=[ReplayUser], host=host)
    env.wattserve_run = state
    runner = env.create_local_runner()
    try:
        runner.start(1, spawn_rate=1)
        runner.greenlet.join()
    finally:
        runner.quit()
        state.end_window()
    return state.finish()


__all__ = ["EmbeddedServer", "ReplayUser", "RunState", "replay_run"]
