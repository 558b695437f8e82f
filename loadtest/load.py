"""Load campaigns: Locust ramps concurrent users through stages (data, not code) and we measure, per stage, the
joules per request, latency and device power against the offered load. Runs in one process (library mode,
from a campaign file) or distributed: a Locust master with workers (``loadtest/locustfile.py``), where the
workers send their per-request records to the master with their regular reports.

Imports locust (gevent monkey-patching): never import it in a process that runs torch.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import numpy as np
from locust import FastHttpUser, LoadTestShape, events, task
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from loadtest import accounting
from loadtest.jsonl import read_objects
from loadtest.replay import energy_fields, now_iso, write_json_atomic
from loadtest.server import JSON_HEADERS, ServerClient, ServerError, Snapshot

log = logging.getLogger(__name__)


@dataclass
class LoadPlan:
    """What a process needs to offer load: the request path and bodies, the stages, where records go."""

    path: str
    bodies: list[bytes]
    stages: list[dict[str, float]]  # {duration_s, users, spawn_rate}
    name: str = "load"
    wait_s: float = 0.0
    results: Path | None = None  # requests.jsonl (local runner or master); None on a worker
    _cursor: Any = field(default_factory=itertools.count)
    _pending: list[dict[str, Any]] = field(default_factory=list)  # a worker's records not yet reported
    _file: Any = None
    marks: list[tuple[int, int, float, Snapshot | None]] = field(default_factory=list)  # stage, users, t, counters
    client: ServerClient | None = None  # reads the device counters at stage marks (local runner or master)
    headers: dict[str, str] = field(default_factory=lambda: JSON_HEADERS)  # each request's (ServerClient's, with a key)
    meta: dict[str, Any] | None = None  # run.json (local runner or master)
    finishing: Any = None  # the greenlet that writes the results after test_stop (a master kept alive)
    finished: bool = False
    reporting: set[str] = field(default_factory=set)  # workers that sent records (master)
    flushed: set[str] = field(default_factory=set)  # workers whose final records reached the master

    def next_body(self) -> bytes:
        return self.bodies[next(self._cursor) % len(self.bodies)]  # round-robin over the samples

    def add(self, record: dict[str, Any]) -> None:
        if self.results is None:
            self._pending.append(record)
        else:
            self.write([record])

    def write(self, records: list[dict[str, Any]]) -> None:
        if self._file is None:
            self.results.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.results.open("a", encoding="utf-8")
        for r in records:
            self._file.write(json.dumps(r) + "\n")
        self._file.flush()

    def take_pending(self) -> list[dict[str, Any]]:
        out, self._pending = self._pending, []
        return out

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


# Users stop between requests, never mid-request (Locust's stop_timeout), so every request the server ran, and
# metered, is in the results.
STOP_TIMEOUT_S = 60.0


def plan_of(environment: Environment, wait_s: float = 120.0) -> LoadPlan:
    """The process's load plan. A worker reports ready to its master before its init listeners finish (they load
    the dataset and ask the server for its models), so its first users may start first: they wait for it."""
    deadline = time.monotonic() + wait_s
    while (plan := getattr(environment, "wattserve_load", None)) is None:
        if time.monotonic() > deadline:
            raise RuntimeError("no load plan: run through `wattserve campaign run` or loadtest/locustfile.py")
        gevent.sleep(0.05)
    return plan


class LoadUser(FastHttpUser):
    """One of many concurrent users, each sending samples (round-robin over the dataset) as fast as answered, or
    with a think time of ``wait_s``."""

    plan: LoadPlan

    def on_start(self) -> None:
        self.plan = plan_of(self.environment)  # once per user: a worker's plan may still be loading

    def wait_time(self) -> float:
        return self.plan.wait_s

    @task
    def send(self) -> None:
        plan = self.plan
        started_at, t0 = time.time(), time.perf_counter()
        with self.client.post(plan.path, data=plan.next_body(), headers=plan.headers, catch_response=True,
                              name=plan.name) as response:
            latency_s = time.perf_counter() - t0
            status = response.status_code or 0
            record: dict[str, Any] = {"request_id": None, "status": status, "latency_s": round(latency_s, 6),
                                      "started_at": round(started_at, 6), "users": self.environment.runner.user_count,
                                      "worker": getattr(self.environment.runner, "client_id", "local"),
                                      "error": None}
            if status == 200:
                record["request_id"] = response.headers.get("X-Request-Id")
                record.update(energy_fields(response.headers))
            else:
                record["error"] = str(response.error) if status == 0 else f"HTTP {status}"
                response.failure(record["error"])
        plan.add(record)


class StagesShape(LoadTestShape):
    """Users per stage from the plan's ``stages`` (data); with no stages, the command line's -u/-r until -t."""

    def tick(self) -> tuple[int, float] | None:
        env = self.runner.environment
        plan = getattr(env, "wattserve_load", None)
        run_time = self.get_run_time()
        if plan is None or not plan.stages:
            options = env.parsed_options
            limit = getattr(options, "run_time", None)
            if options is None or (limit and run_time > limit):
                return None
            return options.num_users, options.spawn_rate
        elapsed = 0.0
        for index, stage in enumerate(plan.stages):
            elapsed += stage["duration_s"]
            if run_time < elapsed:
                if not plan.marks or plan.marks[-1][0] != index:
                    mark_stage(plan, index, int(stage["users"]))
                return int(stage["users"]), float(stage["spawn_rate"])
        if not plan.marks or plan.marks[-1][0] != len(plan.stages):
            mark_stage(plan, len(plan.stages), 0)
        return None


def mark_stage(plan: LoadPlan, index: int, users: int) -> None:
    """Note when a stage begins, with the device counters then (read in a greenlet: tick() must not block)."""
    client = plan.client
    plan.marks.append((index, users, time.time(), None))
    if client is not None:
        slot = len(plan.marks) - 1

        def read() -> None:
            try:
                snap = client.snapshot_covering(plan.marks[slot][2], timeout_s=10)
            except ServerError as exc:
                log.warning("stage %d: no device counters: %s", index, exc)
                return
            i, u, t, _ = plan.marks[slot]
            plan.marks[slot] = (i, u, t, snap)

        gevent.spawn(read)


RECORDS = "wattserve_records"


@events.init.add_listener
def _wire_records(environment: Environment, runner=None, **_: Any) -> None:
    """Distributed: a worker's per-request records reach the master's results with its regular reports, and once
    more as a message when it stops (its next report would come after it told the master it had stopped, and be
    discarded: the requests of the last seconds were lost)."""

    def plan() -> LoadPlan | None:
        return getattr(environment, "wattserve_load", None)

    def send(client_id: str, data: dict[str, Any]) -> None:
        if (p := plan()) is not None:
            data[RECORDS] = p.take_pending()

    def receive(client_id: str, data: dict[str, Any]) -> None:
        if (p := plan()) is not None and RECORDS in data:
            p.reporting.add(client_id)
            if data[RECORDS]:
                p.write(data[RECORDS])

    def flush(**_: Any) -> None:  # on a worker, when its users have stopped: always, so the master can count
        if isinstance(environment.runner, WorkerRunner) and (p := plan()) is not None:
            environment.runner.send_message(RECORDS, p.take_pending())

    def flushed(environment: Environment, msg: Any, **_: Any) -> None:  # on the master
        receive(msg.node_id, {RECORDS: msg.data})
        if (p := plan()) is not None:
            p.flushed.add(msg.node_id)

    environment.events.report_to_master.add_listener(send)
    environment.events.worker_report.add_listener(receive)
    environment.events.test_stop.add_listener(flush)
    if isinstance(runner, MasterRunner):
        runner.register_message(RECORDS, flushed)


def await_workers(plan: LoadPlan, timeout_s: float) -> None:
    """On the master after test_stop: wait until every worker that reported has sent its last records (the
    master's own list of workers is no guide: it drops a worker when it stops, or when a heartbeat is late)."""
    deadline = time.monotonic() + timeout_s
    while not plan.reporting <= plan.flushed and time.monotonic() < deadline:
        gevent.sleep(0.05)
    if not plan.reporting <= plan.flushed:
        log.warning("workers %s sent no final records within %.0f s", sorted(plan.reporting - plan.flushed),
                    timeout_s)


def stage_stats(plan: LoadPlan, records: list[dict[str, Any]], finals: dict[str, dict[str, Any]]) -> list[dict]:
    """Per stage: requests, errors, rps, mean final J/request, latency p50/p95 and device power."""
    stages = []
    marks = plan.marks
    last = len(marks) - 2
    for k, (index, users, t0, snap0) in enumerate(marks[:-1]):
        _, _, t1, snap1 = marks[k + 1]
        # a request belongs to the stage it started in; the first and last stages also take the few that
        # started just before the first mark or finished in the graceful stop after the last one
        lo, hi = (-math.inf if k == 0 else t0), (math.inf if k == last else t1)
        inside = [r for r in records if lo <= r["started_at"] < hi]
        ok = [r for r in inside if r["status"] == 200]
        energy = [finals[r["request_id"]]["energy_j"] for r in ok if r["request_id"] in finals]
        latency = [r["latency_s"] for r in ok]
        power = None
        if snap0 is not None and snap1 is not None:
            spans = [(snap1[d].energy_j - c.energy_j, snap1[d].covered_until_s - c.covered_until_s)
                     for d, c in snap0.items() if d in snap1]
            power = sum(e / s for e, s in spans if s > 0)
        duration = t1 - t0
        stages.append({
            "stage": index, "users": users, "duration_s": round(duration, 3), "requests": len(inside),
            "errors": len(inside) - len(ok), "rps": len(inside) / duration if duration > 0 else None,
            "energy_j_per_request": float(np.mean(energy)) if energy else None,
            "latency_p50_s": float(np.percentile(latency, 50)) if latency else None,
            "latency_p95_s": float(np.percentile(latency, 95)) if latency else None,
            "device_power_w": power})
    return stages


def finish_load(plan: LoadPlan) -> dict[str, Any]:
    """After the stages: final figures of every answered request, per-stage statistics, run.json (once)."""
    meta, run_dir, client = plan.meta, plan.results.parent, plan.client
    if plan.finished:
        return meta
    plan.finished = True
    plan.close()
    deadline = time.monotonic() + 15  # the last stage mark's counter read runs in a greenlet
    while plan.marks and plan.marks[-1][3] is None and time.monotonic() < deadline:
        gevent.sleep(0.05)
    records = read_objects(plan.results) if plan.results.exists() else []
    finals: dict[str, dict[str, Any]] = {}
    reason = None
    try:
        with (run_dir / "final.jsonl").open("w", encoding="utf-8") as out:
            for seq, r in enumerate(records):
                if r["status"] == 200 and r.get("request_id"):
                    final = {"seq": seq, **client.final_record(r["request_id"])}
                    finals[r["request_id"]] = final
                    out.write(json.dumps(final) + "\n")
    except ServerError as exc:
        reason = f"could not collect the final figures: {exc}"
    meta.update(stages=stage_stats(plan, records, finals),
                stage_marks=[{"stage": i, "users": u, "at_s": t} for i, u, t, _ in plan.marks],
                requests={"sent": len(records), "ok": len(finals), "errors": len(records) - len(finals)},
                energy_j={"requests": sum(f["energy_j"] for f in finals.values())},
                status="failed" if reason or not finals else "complete",
                reason=reason or accounting.no_success(len(records), len(finals),
                                                       next((r["error"] for r in records if r.get("error")), None)),
                ended_at=now_iso())
    write_json_atomic(run_dir / "run.json", meta)
    return meta


def new_plan(campaign, prepared, entry, server_models: dict, system: dict, url: str, results: Path | None,
             stages: list[dict], *, embedded: bool = False, distributed: bool = False, wait_s: float = 0.0,
             client: ServerClient | None = None) -> LoadPlan:
    """A load plan for one entry; with ``results`` (a local runner or the master) also its run.json, written."""
    from loadtest import campaign as camp
    from loadtest.spec import run_id

    rid = run_id(entry.model, entry.dataset, None)
    plan = LoadPlan(f"/v1/models/{entry.model}/infer",
                    camp.bodies(campaign, prepared, entry.model, entry.dataset, entry.generation,
                                server_models[entry.model]),
                    stages, name=rid, wait_s=wait_s, client=client,
                    headers=client.request_headers if client is not None else JSON_HEADERS,
                    results=None if results is None else results / "requests.jsonl")
    if results is not None:
        planned = camp.PlannedRun(rid, entry.model, entry.dataset, 1, entry.generation)
        plan.meta = camp.run_metadata(campaign, prepared, planned, server_models[entry.model], system, url, embedded)
        plan.meta.update(kind="load", started_at=now_iso(), stages_spec=stages, distributed=distributed)
        results.mkdir(parents=True, exist_ok=True)
        write_json_atomic(results / "run.json", plan.meta)
    return plan


def load_run(campaign, prepared, entry, server_models, system, url, out_dir: Path, client: ServerClient,
             embedded: bool) -> dict[str, Any]:
    """One load campaign entry, in this process (library mode)."""
    import shutil

    from loadtest.spec import run_id

    run_dir = out_dir / "runs" / run_id(entry.model, entry.dataset, None)
    shutil.rmtree(run_dir, ignore_errors=True)
    plan = new_plan(campaign, prepared, entry, server_models, system, url, run_dir,
                    [s.model_dump() for s in entry.stages], embedded=embedded, client=client)
    env = Environment(user_classes=[LoadUser], shape_class=StagesShape(), host=url, stop_timeout=STOP_TIMEOUT_S)
    env.wattserve_load = plan
    runner = env.create_local_runner()
    runner.start_shape()
    wait_until_stopped(runner)
    return finish_load(plan)


def wait_until_stopped(runner) -> None:
    """A shape test stops its users at the end but keeps the runner: wait for that, then quit it."""
    from locust.runners import STATE_STOPPED

    gevent.sleep(0.5)
    while runner.state != STATE_STOPPED:
        gevent.sleep(0.1)
    runner.quit()


__all__ = ["LoadPlan", "LoadUser", "MasterRunner", "StagesShape", "WorkerRunner", "finish_load", "load_run"]
