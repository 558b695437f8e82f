"""The ``wattserve`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from service import __version__


def _meters(args: argparse.Namespace) -> int:
    """Show which meters this machine has, then meter it for a few seconds."""
    from service.energy import Metering
    from service.energy.meters.factory import detect_meters

    selection = detect_meters(gpu=not args.no_gpu, rapl=not args.no_rapl)
    for backend, note in selection.notes.items():
        print(f"{backend:9s} {note}")
    metering = Metering(selection.meters)
    for dev in metering.devices.values():
        print(f"{dev.id:9s} {dev.component:4s} {dev.method:10s} tick {dev.tick_s * 1e3:5.0f} ms  {dev.name}")
    if not metering.devices or args.seconds <= 0:
        return 0
    metering.start()
    time.sleep(args.seconds)
    metering.stop()
    totals = {d: {"energy_j": round(t.measured_j, 3), "power_w": round(t.last_power_w, 2),
                  "intervals": t.intervals} for d, t in metering.totals().items()}
    print(json.dumps({"seconds": args.seconds, "devices": totals}))
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.api.app import create_app
    from service.settings import Settings

    overrides = {k: v for k, v in vars(args).items() if k in Settings.model_fields and v is not None}
    try:
        settings = Settings(**overrides)
        app = create_app(settings)
    except (ValueError, OSError) as exc:  # a setting, the registry, a keys or intensity file: one line, no traceback
        logging.getLogger(__name__).debug("start-up failed", exc_info=True)
        print(f"wattserve serve: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    url = f"http://{settings.host}:{settings.port}"
    loading = "" if settings.strict else f" (models load in the background: {url}/readyz says when they serve)"
    print(f"wattserve {__version__} serving {settings.registry} on {url}{loading}\n"
          f"try:  curl -si {url}/v1/embeddings -H 'content-type: application/json' "
          "-d '{\"model\": \"all-MiniLM-L6-v2\", \"input\": \"How much energy did this take?\"}' "
          "| grep -i -E '^(x-energy|x-carbon|carbon|server-timing|x-request)'", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info" if args.verbose else "warning",
                timeout_graceful_shutdown=settings.graceful_shutdown_s)
    return 0


def _one_line(exc: BaseException) -> str:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):  # "queue_size: Input should be greater than or equal to 1 (got 0)"
        return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']} (got {e['input']!r})"
                         if e["loc"] else e["msg"].removeprefix("Value error, ") for e in exc.errors())
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc)


def _campaign_run(args: argparse.Namespace) -> int:
    if not args.dry_run:
        import locust  # noqa: F401 - gevent monkey-patches the process: before httpx/ssl are imported

    from pathlib import Path

    from loadtest.campaign import CampaignError, run_campaign
    from loadtest.spec import SpecError, load_campaign

    try:
        campaign = load_campaign(args.campaign, samples=args.samples, repetitions=args.repetitions,
                                 warmup=args.warmup, server={"url": args.server} if args.server else None)
        out = Path(args.out or f"results/{campaign.name}")
        results = run_campaign(campaign, out, dry_run=args.dry_run, progress=not args.no_progress)
    except (SpecError, CampaignError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        return 0
    failed = [r for r in results if r.get("status") != "complete"]
    print(f"{len(results) - len(failed)} run(s) complete, {len(failed)} failed; results in {out}")
    for r in failed:
        print(f"  failed: {r['run_id']}: {r.get('reason')}")
    if args.report and results:
        return _report(out, out / "report")
    return 1 if failed else 0


def _report(results: object, out: object) -> int:
    from pathlib import Path

    from loadtest.report import build_report, format_summary

    try:
        result = build_report(Path(str(results)), Path(str(out)))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_summary(result))
    print(f"report: {Path(str(out)) / 'report.md'}")
    return 0


def _campaign_report(args: argparse.Namespace) -> int:
    return _report(args.results, args.out)


def _campaign_presets(args: argparse.Namespace) -> int:
    from loadtest.spec import load_campaign, presets

    for name, path in presets().items():
        print(f"{name:14s} {load_campaign(path).description}  ({path})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wattserve", description=__doc__)
    parser.add_argument("--version", action="version", version=f"wattserve {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    meters = sub.add_parser("meters", help="list the energy meters found here and read them for a while")
    meters.add_argument("--seconds", type=float, default=2.0, help="how long to meter (0: only list)")
    meters.add_argument("--no-gpu", action="store_true", help="do not use NVML")
    meters.add_argument("--no-rapl", action="store_true", help="do not use RAPL")
    meters.set_defaults(func=_meters)
    serve = sub.add_parser("serve", help="serve the registry's models over HTTP (settings: WATTSERVE_* or flags)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--registry", help="model registry YAML (default: the embedded default)")
    serve.add_argument("--strict", action="store_true", default=None, help="exit if any model fails to load")
    serve.add_argument("--queue-size", dest="queue_size", type=int,
                       help="requests per model, the one running included, before 429")
    serve.add_argument("--request-timeout-s", dest="request_timeout_s", type=float)
    serve.add_argument("--shutdown-timeout-s", dest="shutdown_timeout_s", type=float,
                       help="on SIGTERM, the longest in-flight requests may take to finish (default: the request "
                            "timeout + 5 s)")
    serve.add_argument("--max-body-bytes", dest="max_body_bytes", type=int)
    serve.add_argument("--accounting", choices=["loaded", "marginal"])
    serve.add_argument("--carbon-country", dest="carbon_country", help="ISO alpha-3, e.g. FRA (CodeCarbon data)")
    serve.add_argument("--carbon-region", dest="carbon_region", help="e.g. oregon (with --carbon-country USA)")
    serve.add_argument("--carbon-intensity", dest="carbon_intensity_g_per_kwh", type=float, help="gCO2e/kWh")
    serve.add_argument("--pue", type=float)
    serve.add_argument("--carbon-timeseries", dest="carbon_timeseries", help="CSV of grid intensity over time")
    serve.add_argument("--embodied-g", dest="embodied_g", type=float, help="embodied gCO2e of the machine (SCI M)")
    serve.add_argument("--embodied-lifetime-s", dest="embodied_lifetime_s", type=float,
                       help="the machine's lifetime for the embodied share")
    serve.add_argument("--api-keys-file", dest="api_keys_file",
                       help="bearer keys, one per line (keys themselves: WATTSERVE_API_KEYS, never a flag)")
    serve.add_argument("--records-kept", dest="records_kept", type=int, help="recent records kept for lookup")
    serve.add_argument("--no-metering", dest="metering", action="store_false", default=None,
                       help="turn energy metering off (for overhead comparisons)")
    serve.set_defaults(func=_serve)
    campaign = sub.add_parser("campaign", help="replay datasets against a server and report kWh/gCO2e per 1,000")
    csub = campaign.add_subparsers(dest="campaign_command", required=True)
    crun = csub.add_parser("run", help="run a campaign file or preset (re-running resumes)")
    crun.add_argument("campaign", help="campaign YAML, or a preset name (wattserve campaign presets)")
    crun.add_argument("--out", help="results folder (default: results/<campaign name>)")
    crun.add_argument("--dry-run", action="store_true", help="print the plan and check everything; send nothing")
    crun.add_argument("--samples", type=int, help="override samples per run")
    crun.add_argument("--repetitions", type=int, help="override repetitions")
    crun.add_argument("--warmup", type=int, help="override warm-up requests per run")
    crun.add_argument("--server", help="use this running server (URL) instead of the campaign's")
    crun.add_argument("--report", action="store_true", help="write the report to <out>/report afterwards")
    crun.add_argument("--no-progress", action="store_true", help="no progress bars")
    crun.set_defaults(func=_campaign_run)
    creport = csub.add_parser("report", help="markdown + CSV + PNG report of a results folder")
    creport.add_argument("results", help="results folder of a campaign")
    creport.add_argument("--out", required=True, help="report folder")
    creport.set_defaults(func=_campaign_report)
    cpresets = csub.add_parser("presets", help="list the bundled campaign presets")
    cpresets.set_defaults(func=_campaign_presets)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
