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

from loadtest import locust_options
from loadtest.load import STOP_TIMEOUT_S, LoadPlan, LoadUser, StagesShape, await_workers, finish_load, new_plan

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
    if not environment.stop_timeout:  # workers get it from the master
        environment.stop_timeout = STOP_TIMEOUT_S
    worker = isinstance(environment.runner, WorkerRunner)
    campaign, prepared, server_models, system, client, results = locust_options.build(
        options, environment.host, "load")
    stages = [] if worker else locust_options.stages_from(options.wattserve_stages, options.num_users,
                                                          options.spawn_rate, options.run_time)
    plan = new_plan(campaign, prepared, campaign.load[0], server_models, system, environment.host,
                    None if worker else results, stages, distributed=isinstance(environment.runner, MasterRunner),
                    wait_s=options.wattserve_wait_s, client=client)
    environment.wattserve_load = plan


@events.test_stop.add_listener
def _stopped(environment, **_) -> None:
    """Write the results now (a master kept alive after its run, --autostart in Kubernetes, never quits); a master
    first waits for every worker's last records, sent when its users have stopped."""
    plan = getattr(environment, "wattserve_load", None)
    if plan is not None and plan.meta is not None:
        plan.finishing = gevent.spawn(_finish, plan, (environment.stop_timeout or 0) + 30)


@events.quitting.add_listener
def _quitting(environment, **_) -> None:
    plan = getattr(environment, "wattserve_load", None)
    if plan is not None and plan.meta is not None:
        if plan.finishing is not None:
            plan.finishing.join()
        else:
            _finish(plan)


def _finish(plan: LoadPlan, timeout_s: float = 0.0) -> None:
    await_workers(plan, timeout_s)
    meta = finish_load(plan)
    log.info("wattserve: %s, %s requests; results in %s", meta["status"], meta["requests"], plan.results.parent)
