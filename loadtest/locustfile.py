"""Load campaigns with the Locust command line, on one machine or distributed (a master with workers).

    locust -f loadtest/locustfile.py --headless --host http://127.0.0.1:8000 \\
        --wattserve-model demo-text-classification --wattserve-dataset bundled:imdb \\
        --wattserve-stages 1:30,4:30,8:30 --wattserve-results results/load

Distributed: the same command with ``--master --expect-workers N`` (the master reads the device counters and
writes the results: the workers send their per-request records with their reports), and N times
``locust -f loadtest/locustfile.py --worker --master-host HOST`` with the same --wattserve-* options (or the
LOCUST_WATTSERVE_* environment). Every process loads the dataset itself (the selection is deterministic).
"""

from __future__ import annotations

import logging

import gevent
from locust import events
from locust.runners import MasterRunner, WorkerRunner

from loadtest import campaign as camp
from loadtest import locust_options
from loadtest.load import LoadPlan, LoadUser, StagesShape, finish_load
from loadtest.replay import now_iso, write_json_atomic

log = logging.getLogger(__name__)
__all__ = ["LoadUser", "StagesShape"]


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    locust_options.add_options(parser)


@events.init.add_listener
def _plan(environment, **_) -> None:
    if getattr(environment, "wattserve_load", None) is not None:
        return  # library mode: the campaign gave the plan
    options = environment.parsed_options
    if options is None:
        return
    if not environment.stop_timeout:  # stop users between requests, never mid-request: a request the server ran
        environment.stop_timeout = 60.0  # (and metered) is always in the results (workers get it from the master)
    worker = isinstance(environment.runner, WorkerRunner)
    campaign, prepared, server_models, system, client, results = locust_options.build(
        options, environment.host, "load")
    entry = campaign.load[0]
    stages = [] if worker else locust_options.stages_from(options.wattserve_stages, options.num_users,
                                                          options.spawn_rate, options.run_time)
    plan = LoadPlan(f"/v1/models/{entry.model}/infer",
                    camp.bodies(campaign, prepared, entry.model, entry.dataset, entry.generation,
                                server_models[entry.model]),
                    stages, name=entry.model, wait_s=options.wattserve_wait_s,
                    results=None if worker else results / "requests.jsonl")
    plan.client = client
    if not worker:
        rid = f"{entry.model}__{entry.dataset}__load"
        planned = camp.PlannedRun(rid, entry.model, entry.dataset, 1, entry.generation)
        meta = camp._metadata(campaign, prepared, planned, server_models[entry.model], system, environment.host,
                              False)
        meta.update(kind="load", started_at=now_iso(), stages_spec=stages,
                    distributed=isinstance(environment.runner, MasterRunner))
        results.mkdir(parents=True, exist_ok=True)
        write_json_atomic(results / "run.json", meta)
        plan.meta = meta
    environment.wattserve_load = plan


@events.test_stop.add_listener
def _stopped(environment, **_) -> None:
    """A master kept alive after its run (--autostart in Kubernetes) writes its results now; workers send their
    last records with their final report, so wait a report interval first."""
    plan = getattr(environment, "wattserve_load", None)
    if plan is None or isinstance(environment.runner, WorkerRunner) or not hasattr(plan, "meta"):
        return
    delay_s = 4.0 if isinstance(environment.runner, MasterRunner) else 0.0
    plan.finishing = gevent.spawn_later(delay_s, _finish_once, plan)


@events.quitting.add_listener
def _finish(environment, **_) -> None:
    plan = getattr(environment, "wattserve_load", None)
    if plan is None or isinstance(environment.runner, WorkerRunner) or not hasattr(plan, "meta"):
        return
    finishing = getattr(plan, "finishing", None)
    if finishing is not None:
        finishing.join()
    else:
        _finish_once(plan)


def _finish_once(plan: LoadPlan) -> None:
    if getattr(plan, "finished", False):
        return
    plan.finished = True
    meta = finish_load(plan, plan.meta, plan.results.parent, plan.client)
    log.info("wattserve: %s, %s requests; results in %s", meta["status"], meta["requests"], plan.results.parent)
