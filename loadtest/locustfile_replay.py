"""The paper's sequential protocol with the Locust command line (one user; stops by itself when done):

    locust -f loadtest/locustfile_replay.py --headless -u 1 --host http://127.0.0.1:8000 \\
        --wattserve-model demo-text-classification --wattserve-dataset bundled:imdb --wattserve-samples 1000 \\
        --wattserve-results results/replay

Each sample once, in order, one request at a time, after --wattserve-warmup unmeasured ones; then the final
figures and run.json. For repetitions, many models and resume, use ``wattserve campaign run``.
"""

from __future__ import annotations

import logging

from locust import events

from loadtest import campaign as camp
from loadtest import locust_options
from loadtest.replay import ReplayUser, RunState

log = logging.getLogger(__name__)
__all__ = ["ReplayUser"]


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    locust_options.add_options(parser)


@events.init.add_listener
def _plan(environment, **_) -> None:
    options = environment.parsed_options
    if options is None or getattr(environment, "wattserve_run", None) is not None:
        return
    if options.num_users not in (None, 1):
        raise SystemExit("sequential replay takes exactly one user (-u 1): the paper's protocol, no concurrency")
    campaign, prepared, server_models, system, client, results = locust_options.build(
        options, environment.host, "replay")
    run = prepared.runs[0]
    payloads = camp.bodies(campaign, prepared, run.model, run.dataset, run.generation, server_models[run.model])
    meta = camp.run_metadata(campaign, prepared, run, server_models[run.model], system, environment.host, False)
    environment.wattserve_run = RunState(meta, f"/v1/models/{run.model}/infer", payloads,
                                         campaign.warmup,
                                         results, client)


@events.quitting.add_listener
def _finish(environment, **_) -> None:
    state = getattr(environment, "wattserve_run", None)
    if state is not None:
        state.end_window()
        meta = state.finish()
        log.info("wattserve: %s, %s; results in %s", meta["status"], meta.get("requests"), state.run_dir)
