"""A campaign: check everything, then run models x datasets x repetitions one after the other, resumably.

Resume: a run whose ``run.json`` says ``complete`` (for the same samples, seed, dataset and arguments) is skipped;
any other run folder (interrupted, failed) is deleted and the run redone from its start, so no result ever mixes
two attempts.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from loadtest import datasets as ds
from loadtest.mapping import MappingError, RequestBuilder, resolve_columns, text_of
from loadtest.server import EmbeddedServer, ServerClient, ServerError
from loadtest.spec import Campaign, run_id

log = logging.getLogger(__name__)


class CampaignError(RuntimeError):
    """The campaign cannot run as written: the message says what to fix. Nothing has been sent."""


@dataclass
class PlannedRun:
    run_id: str
    model: str
    dataset: str
    repetition: int
    generation: dict[str, Any]


@dataclass
class Prepared:
    """Everything checked before the first request: per (model, dataset), the request bodies."""

    runs: list[PlannedRun]
    tasks: dict[str, str]
    loaded: dict[str, ds.Loaded] = field(default_factory=dict)
    columns: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)


def plan(campaign: Campaign) -> list[PlannedRun]:
    return [PlannedRun(run_id(entry.model, name, rep), entry.model, name, rep, entry.generation)
            for entry in campaign.models for name in entry.datasets for rep in range(1, campaign.repetitions + 1)]


def _registry_tasks(campaign: Campaign) -> dict[str, str]:
    from service.registry import RegistryError, load_registry
    from service.settings import EMBEDDED_REGISTRY

    path = campaign.server.registry or EMBEDDED_REGISTRY
    try:
        return {m.name: m.task for m in load_registry(path).models}
    except RegistryError as exc:
        raise CampaignError(str(exc)) from exc


def model_problems(campaign: Campaign, server_models: dict[str, dict[str, Any]] | None,
                   registry_tasks: dict[str, str] | None = None) -> list[str]:
    """Every campaign model must be served (and, when the server is asked, ready). Without the server's models,
    ``registry_tasks`` (an embedded server's registry) says what will be served."""
    tasks = ({name: m["task"] for name, m in server_models.items()} if server_models is not None
             else registry_tasks or {})
    problems = []
    for entry in [*campaign.models, *campaign.load]:
        if entry.model not in tasks:
            problems.append(f"model {entry.model!r} is not served (served: {', '.join(sorted(tasks))})")
        elif server_models is not None and server_models[entry.model].get("state") != "ready":
            m = server_models[entry.model]
            problems.append(f"model {entry.model!r} is {m.get('state')}: {m.get('error') or ''}".strip())
    return problems


def _raise(problems: list[str]) -> None:
    if problems:
        raise CampaignError("the campaign cannot run:\n  - " + "\n  - ".join(problems))


def prepare(campaign: Campaign, server_models: dict[str, dict[str, Any]] | None) -> Prepared:
    """Check every model, dataset and column; load the samples. Raises CampaignError naming every problem."""
    tasks = ({name: m["task"] for name, m in server_models.items()} if server_models is not None
             else _registry_tasks(campaign))
    problems = model_problems(campaign, server_models, tasks)
    prepared = Prepared(plan(campaign), tasks)
    pairs = {(e.model, n) for e in campaign.models for n in e.datasets} | {(e.model, e.dataset) for e in campaign.load}
    for name in sorted({n for _, n in pairs}):
        spec = campaign.datasets[name]
        try:
            prepared.loaded[name] = ds.load(spec.source, campaign.samples, seed=campaign.seed, config=spec.config,
                                            split=spec.split, allow_fewer=campaign.allow_fewer,
                                            base_dir=campaign.base_dir)
        except ds.DatasetError as exc:
            problems.append(f"dataset {name}: {exc}")
    for model, name in sorted(pairs):
        if model not in tasks or name not in prepared.loaded:
            continue
        try:
            prepared.columns[(model, name)] = resolve_columns(tasks[model], name, campaign.datasets[name].columns,
                                                              prepared.loaded[name].columns)
        except MappingError as exc:
            problems.append(f"{model} on {exc}")
    for name in list(prepared.loaded):  # again, without rows whose mapped text is empty
        used = {c for (m, n), cols in prepared.columns.items() if n == name for c in cols.values()}
        if not campaign.datasets[name].skip_empty or not used:
            continue
        def keep(row: dict[str, Any], used=used) -> bool:
            return all(text_of(row.get(c)).strip() for c in used)
        if not all(map(keep, prepared.loaded[name].rows)):
            spec = campaign.datasets[name]
            try:
                prepared.loaded[name] = ds.load(spec.source, campaign.samples, seed=campaign.seed,
                                                config=spec.config, split=spec.split,
                                                allow_fewer=campaign.allow_fewer, base_dir=campaign.base_dir,
                                                keep=keep)
            except ds.DatasetError as exc:
                problems.append(f"dataset {name} (empty rows skipped): {exc}")
    _raise(problems)
    return prepared


def bodies(campaign: Campaign, prepared: Prepared, model: str, dataset: str, generation: dict[str, Any],
           server_model: dict[str, Any]) -> list[bytes]:
    builder = RequestBuilder(prepared.tasks[model], prepared.columns[(model, dataset)],
                             campaign.datasets[dataset].template, generation, server_model.get("mask_token"))
    try:
        return [json.dumps(builder.body(row, i)).encode() for i, row in enumerate(prepared.loaded[dataset].rows)]
    except MappingError as exc:
        raise CampaignError(f"{model} on {dataset}: {exc}") from exc


def describe_plan(campaign: Campaign, prepared: Prepared, out_dir: Path | None) -> str:
    lines = [f"campaign {campaign.name}: {len(prepared.runs)} replay runs ({campaign.samples} samples, "
             f"{campaign.warmup} warm-up, {campaign.repetitions} repetition(s)), {len(campaign.load)} load run(s); "
             f"server: {campaign.server.url or 'embedded (started here)'}"]
    for name, loaded in prepared.loaded.items():
        lines.append(f"  dataset {name:18s} {len(loaded.rows):5d} of {loaded.available} rows  {loaded.description}")
    for run in prepared.runs:
        done = out_dir is not None and _completed(out_dir / "runs" / run.run_id, campaign, run) is not None
        cols = prepared.columns[(run.model, run.dataset)]
        lines.append(f"  {'done' if done else 'todo'}  {run.run_id:60s} {prepared.tasks[run.model]:20s} "
                     f"columns {cols}")
    for entry in campaign.load:
        stages = ", ".join(f"{s.users}u/{s.duration_s:g}s" for s in entry.stages)
        lines.append(f"  load  {entry.model} on {entry.dataset}: {stages}")
    return "\n".join(lines)


def _expected(campaign: Campaign, run: PlannedRun) -> dict[str, Any]:
    spec = campaign.datasets[run.dataset]
    return {"samples": campaign.samples, "seed": campaign.seed, "warmup": campaign.warmup,
            "source": spec.source, "config": spec.config, "split": spec.split, "generation": run.generation}


def _completed(run_dir: Path, campaign: Campaign, run: PlannedRun) -> dict[str, Any] | None:
    try:
        meta = json.loads((run_dir / "run.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return meta if meta.get("status") == "complete" and meta.get("plan") == _expected(campaign, run) else None


def server_warnings(campaign: Campaign, system: dict[str, Any], kept: list[dict[str, Any]], url: str,
                    embedded: bool) -> list[str]:
    """What a running server changes about the campaign's figures: the campaign's carbon settings are only given
    to an embedded server (a running one keeps its own, and those are what the figures use), and runs kept from
    another server were measured there."""
    out = []
    carbon = system.get("carbon") or {}
    if not embedded and campaign.carbon is not None:
        out.append(f"the campaign's carbon settings ({campaign.carbon.model_dump(exclude_none=True)}) apply to an "
                   f"embedded server only; {url} uses its own: {carbon.get('intensity_g_per_kwh')} g/kWh "
                   f"({carbon.get('source')}), PUE {carbon.get('pue')}, and the figures follow them")
    here = _measured_where({"server": {"url": url, "embedded": embedded}, "carbon": carbon})
    elsewhere = sorted({where for m in kept if (where := _measured_where(m)) != here})
    if elsewhere:
        out.append(f"runs kept from earlier were measured elsewhere ({'; '.join(elsewhere)}), not as now ({here}); "
                   "use another --out to keep them apart")
    return out


def _measured_where(meta: dict[str, Any]) -> str:
    """Where and under which carbon settings a run was measured: an embedded server, or a running one's URL."""
    server, carbon = meta.get("server") or {}, meta.get("carbon") or {}
    return (f"{'an embedded server' if server.get('embedded') else server.get('url')}, "
            f"{carbon.get('intensity_g_per_kwh')} g/kWh, PUE {carbon.get('pue')}")


def _progress(total: int, desc: str, position: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, position=position, leave=position == 0, unit="req", dynamic_ncols=True,
                disable=not enabled, file=sys.stderr)


def run_campaign(campaign: Campaign, out_dir: Path, *, dry_run: bool = False, progress: bool = True,
                 echo: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Run (or with ``dry_run`` only check and print) the campaign; returns every run's metadata."""
    out_dir = Path(out_dir)
    api_key = os.environ.get(campaign.server.api_key_env) if campaign.server.api_key_env else None
    if campaign.server.embedded:
        prepared = prepare(campaign, None)
    else:
        client = ServerClient(campaign.server.url, api_key)
        try:
            prepared = prepare(campaign, client.models())
        except ServerError as exc:
            raise CampaignError(f"cannot reach the server: {exc}") from exc
        finally:
            client.close()
    echo(describe_plan(campaign, prepared, out_dir))
    if dry_run:
        echo("dry run: everything checked, nothing sent")
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "campaign.yaml").write_text(yaml.safe_dump(campaign.model_dump(mode="json"), sort_keys=False))
    kept = {r.run_id: _completed(out_dir / "runs" / r.run_id, campaign, r) for r in prepared.runs}
    todo = [r for r in prepared.runs if kept[r.run_id] is None]
    results = [m for m in kept.values() if m is not None]
    if results:
        echo(f"resuming: {len(results)} complete run(s) kept, {len(todo)} to do")
    if not todo and not campaign.load:
        return results
    from loadtest import load, replay  # imports locust (gevent): only now that something will be sent

    embedded = None
    if campaign.server.embedded:
        echo("starting the embedded server ...")
        carbon = campaign.carbon.model_dump() if campaign.carbon else None
        embedded = EmbeddedServer(out_dir / "server.log", registry=campaign.server.registry,
                                  accounting=campaign.server.accounting, carbon=carbon,
                                  startup_timeout_s=campaign.server.startup_timeout_s).__enter__()
        url = embedded.url
    else:
        url = campaign.server.url
    client = ServerClient(url, api_key)
    try:
        server_models = client.models_when_loaded(campaign.server.startup_timeout_s)
        system = client.system()
        for warning in server_warnings(campaign, system, results, url, embedded is not None):
            echo(f"warning: {warning}")
        # the datasets are loaded and checked; the models now as served (an embedded one may have failed to load)
        _raise(model_problems(campaign, server_models))
        overall = _progress(len(todo) * campaign.samples, "campaign", 0, progress)
        for run in todo:
            run_dir = out_dir / "runs" / run.run_id
            shutil.rmtree(run_dir, ignore_errors=True)
            payloads = bodies(campaign, prepared, run.model, run.dataset, run.generation, server_models[run.model])
            meta = run_metadata(campaign, prepared, run, server_models[run.model], system, url, embedded is not None)
            per_run = _progress(len(payloads), run.run_id[:40], 1, progress)

            def advance(n: int, per_run=per_run) -> None:
                per_run.update(n)
                overall.update(n)

            state = replay.RunState(meta, f"/v1/models/{run.model}/infer", payloads,
                                    campaign.warmup, run_dir, client,
                                    embedded.exit_reason if embedded else None, advance)
            result = replay.replay_run(state, url)
            per_run.close()
            results.append(result)
            if result["status"] != "complete":
                echo(f"run {run.run_id} failed: {result['reason']}")
                if not client.healthy():
                    raise CampaignError(f"the server is gone; stopping the campaign (re-run to resume): "
                                        f"{result['reason']}")
        overall.close()
        for entry in campaign.load:
            results.append(load.load_run(campaign, prepared, entry, server_models, system, url, out_dir, client,
                                           embedded is not None))
    finally:
        client.close()
        if embedded is not None:
            embedded.__exit__(None, None, None)
    return results


def run_metadata(campaign: Campaign, prepared: Prepared, run: PlannedRun, model: dict[str, Any],
              system: dict[str, Any], url: str, embedded: bool) -> dict[str, Any]:
    spec, loaded = campaign.datasets[run.dataset], prepared.loaded[run.dataset]
    machine = system["machine"]
    meters = system.get("meters", {})
    return {
        "schema": 1, "run_id": run.run_id, "kind": "replay", "status": "running", "reason": None,
        "campaign": campaign.name, "model": run.model, "task": prepared.tasks[run.model],
        "model_parameters": model.get("parameters"), "model_demo": bool(model.get("demo")),
        "model_source": model.get("source"),
        "dataset": {"name": run.dataset, "source": spec.source, "config": spec.config, "split": spec.split,
                    "synthetic": loaded.synthetic, "seed": campaign.seed, "available": loaded.available,
                    "columns": prepared.columns[(run.model, run.dataset)]},
        "repetition": run.repetition, "repetitions": campaign.repetitions, "samples": len(loaded.rows),
        "warmup": campaign.warmup, "generation": run.generation,
        "plan": _expected(campaign, run),
        "server": {"url": url, "version": system.get("version"), "embedded": embedded},
        "hardware": {"cpu_model": machine["cpu_model"], "cpu_threads": machine["cpu_threads"],
                     "ram_gb": machine["ram_gb"], "platform": machine["platform"],
                     "gpus": [m["name"] for m in meters.values() if m["component"] == "gpu"],
                     "meters": {d: {"component": m["component"], "method": m["method"]} for d, m in meters.items()}},
        "carbon": system.get("carbon") or {"intensity_g_per_kwh": 0.0, "source": "server without metering",
                                           "pue": 1.0},
        "accounting": system.get("accounting"),
        "paper_constants": machine["paper_mode"],
    }
