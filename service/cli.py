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
    settings = Settings(**overrides)
    app = create_app(settings)
    url = f"http://{settings.host}:{settings.port}"
    print(f"wattserve {__version__} serving {settings.registry} on {url}\n"
          f"try:  curl -si {url}/v1/embeddings -H 'content-type: application/json' "
          "-d '{\"model\": \"all-MiniLM-L6-v2\", \"input\": \"How much energy did this take?\"}' "
          "| grep -i -E '^(x-energy|x-carbon|carbon|server-timing|x-request)'", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info" if args.verbose else "warning")
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
    serve.add_argument("--queue-size", dest="queue_size", type=int, help="waiting requests per model before 429")
    serve.add_argument("--request-timeout-s", dest="request_timeout_s", type=float)
    serve.add_argument("--max-body-bytes", dest="max_body_bytes", type=int)
    serve.add_argument("--accounting", choices=["loaded", "marginal"])
    serve.add_argument("--carbon-country", dest="carbon_country", help="ISO alpha-3, e.g. FRA (CodeCarbon data)")
    serve.add_argument("--carbon-region", dest="carbon_region", help="e.g. oregon (with --carbon-country USA)")
    serve.add_argument("--carbon-intensity", dest="carbon_intensity_g_per_kwh", type=float, help="gCO2e/kWh")
    serve.add_argument("--pue", type=float)
    serve.add_argument("--no-metering", dest="metering", action="store_false", default=None,
                       help="turn energy metering off (for overhead comparisons)")
    serve.set_defaults(func=_serve)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
