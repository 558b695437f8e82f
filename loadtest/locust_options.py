"""What the two locustfiles share: their command-line options and building a run from them.

Every option also reads ``LOCUST_WATTSERVE_*`` from the environment (compose and Kubernetes set those).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from loadtest import campaign as camp
from loadtest.server import ServerClient
from loadtest.spec import Campaign


def add_options(parser) -> None:
    group = parser.add_argument_group("wattserve")
    group.add_argument("--wattserve-model", env_var="LOCUST_WATTSERVE_MODEL", default="",
                       help="served model to send requests to (GET /v1/models lists them)")
    group.add_argument("--wattserve-dataset", env_var="LOCUST_WATTSERVE_DATASET", default="bundled:imdb",
                       help="bundled:NAME, hub:ID, a .jsonl/.csv/.parquet file or a save_to_disk folder")
    group.add_argument("--wattserve-dataset-config", env_var="LOCUST_WATTSERVE_DATASET_CONFIG", default=None)
    group.add_argument("--wattserve-dataset-split", env_var="LOCUST_WATTSERVE_DATASET_SPLIT", default="test")
    group.add_argument("--wattserve-columns", env_var="LOCUST_WATTSERVE_COLUMNS", default="",
                       help="role=column[,role=column]: text, question, context")
    group.add_argument("--wattserve-samples", env_var="LOCUST_WATTSERVE_SAMPLES", type=int, default=1000)
    group.add_argument("--wattserve-seed", env_var="LOCUST_WATTSERVE_SEED", type=int, default=0)
    group.add_argument("--wattserve-warmup", env_var="LOCUST_WATTSERVE_WARMUP", type=int, default=10,
                       help="sequential replay: unmeasured requests first")
    group.add_argument("--wattserve-generation", env_var="LOCUST_WATTSERVE_GENERATION", default="",
                       help="request fields, key=value[,key=value], e.g. max_new_tokens=10")
    group.add_argument("--wattserve-stages", env_var="LOCUST_WATTSERVE_STAGES", default="",
                       help="load: users:seconds[:spawn_rate],... (default: -u/-r for -t)")
    group.add_argument("--wattserve-wait-s", env_var="LOCUST_WATTSERVE_WAIT_S", type=float, default=0.0,
                       help="load: think time between a user's requests")
    group.add_argument("--wattserve-results", env_var="LOCUST_WATTSERVE_RESULTS", default="",
                       help="folder for run.json, requests.jsonl, final.jsonl (default: results/locust-<time>)")
    group.add_argument("--wattserve-api-key", env_var="LOCUST_WATTSERVE_API_KEY", default=None)


def _pairs(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = item.partition("=")
        out[key.strip()] = int(value) if value.strip().lstrip("-").isdigit() else value.strip()
    return out


def stages_from(text: str, users: int | None, spawn_rate: float | None, run_time: float | None) -> list[dict]:
    stages = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        parts = item.split(":")
        if len(parts) not in (2, 3):
            raise ValueError(f"--wattserve-stages: {item!r} is not users:seconds[:spawn_rate]")
        stages.append({"users": int(parts[0]), "duration_s": float(parts[1]),
                       "spawn_rate": float(parts[2]) if len(parts) == 3 else float(parts[0])})
    if not stages:
        if not run_time:
            raise ValueError("give --wattserve-stages or -t/--run-time (and -u/-r)")
        stages = [{"users": users or 1, "duration_s": float(run_time), "spawn_rate": spawn_rate or 1.0}]
    return stages


def build(options, host: str, kind: str) -> tuple[Campaign, camp.Prepared, dict, dict, ServerClient, Path]:
    """A one-run campaign from the command line: checked, samples loaded, against the server at ``host``."""
    if not options.wattserve_model:
        raise ValueError("--wattserve-model (LOCUST_WATTSERVE_MODEL) is required")
    if not host:
        raise ValueError("--host (LOCUST_HOST) is required: the wattserve URL")
    dataset = {"source": options.wattserve_dataset, "config": options.wattserve_dataset_config,
               "split": options.wattserve_dataset_split, "columns": _pairs(options.wattserve_columns)}
    name = Path(options.wattserve_dataset.split(":", 1)[-1]).stem or "dataset"
    spec: dict[str, Any] = {"name": "locust", "server": {"url": host}, "samples": options.wattserve_samples,
                            "warmup": options.wattserve_warmup, "seed": options.wattserve_seed,
                            "datasets": {name: dataset}}
    generation = _pairs(options.wattserve_generation)
    if kind == "replay":
        spec["models"] = [{"model": options.wattserve_model, "datasets": [name], "generation": generation}]
    else:
        spec["load"] = [{"model": options.wattserve_model, "dataset": name, "generation": generation,
                         "stages": [{"users": 1, "duration_s": 1}]}]  # the real stages come from the options
    campaign = Campaign.model_validate(spec)
    campaign.base_dir = Path.cwd()
    client = ServerClient(host, options.wattserve_api_key)
    server_models = client.models_when_loaded(campaign.server.startup_timeout_s)
    prepared = camp.prepare(campaign, server_models)
    results = Path(options.wattserve_results or f"results/locust-{time.strftime('%Y%m%d-%H%M%S')}")
    return campaign, prepared, server_models, client.system(), client, results
