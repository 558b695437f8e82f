"""make bench-metering: the metering core's overhead and attribution accuracy. Last line: one JSON object.

Attribution is scored in virtual time against a simulated device with known ground truth (idle draw plus a
per-class active draw, a counter that only advances every ``tick_s``), for a mixed workload of two request
classes whose power differs > 3x, run (a) interleaved one request at a time, as the service runs by default,
and (b) overlapping, three concurrent streams. The learned split and the plain time split see the same
intervals. Overhead is wall time of ~5 ms CPU work items with and without metering, alternated in one run.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.energy import Metering  # noqa: E402
from service.energy.meters.simulated import SimulatedDevice, SimulatedMeter  # noqa: E402
from service.energy.types import Component  # noqa: E402

IDLE_W = 80.0
IDLE_WANDER_W = 0.5  # --idle-wander-w: the idle draw's step per tick (stationary spread ~1.2 W, 1.4 % of idle)
CLASSES = {  # name: (active watts, duration range in seconds, probability)
    "small": (60.0, (0.004, 0.008), 0.75),
    "large": (500.0, (0.030, 0.050), 0.25),
}


class VirtualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


BUSY_GAP_S, SPORADIC_GAP_S = (0.0003, 0.003), (0.3, 2.0)  # quiet between one request and the next


def workload(rng: random.Random, n: int, streams: int, t0: float,
             gap_s: tuple[float, float] = BUSY_GAP_S) -> list[tuple[float, float, str]]:
    """(start, end, class) of ``n`` requests per stream; each stream is sequential with ``gap_s`` between requests
    and a pause now and then."""
    reqs = []
    names, weights = list(CLASSES), [c[2] for c in CLASSES.values()]
    for _ in range(streams):
        t = t0 + rng.uniform(0, 0.01)
        for i in range(n):
            cls = rng.choices(names, weights)[0]
            lo, hi = CLASSES[cls][1]
            dur = rng.uniform(lo, hi)
            reqs.append((t, t + dur, cls))
            t += dur + rng.uniform(*gap_s)
            if i % 300 == 299:
                t += rng.uniform(0.5, 1.5)  # the service goes quiet now and then
    return reqs


def phase_lock(metering: Metering, phase: tuple[float, float] | None) -> None:
    """--phase: the sampler's phase lock (guard, step) as fractions of a tick, for experiments."""
    if phase is not None:
        metering.sampler.phase_guard, metering.sampler.phase_step = phase


def score(n: int, streams: int, tick_s: float, seed: int, time_share: bool, *, wander_w: float = IDLE_WANDER_W,
          phase: tuple[float, float] | None = None, gap_s: tuple[float, float] = BUSY_GAP_S) -> dict:
    rng = random.Random(seed)
    clock = VirtualClock()
    device = SimulatedDevice(IDLE_W, {k: v[0] for k, v in CLASSES.items()}, tick_s=tick_s,
                             tick_jitter_s=0.03 * tick_s, phase_s=rng.uniform(0, tick_s), seed=seed, clock=clock,
                             idle_wander_w=wander_w)
    meter = SimulatedMeter({"sim0": device}, clock=clock)
    metering = Metering([meter], clock=clock, wall=clock, time_share=time_share)
    phase_lock(metering, phase)
    reqs = workload(rng, n, streams, t0=2.0, gap_s=gap_s)  # 2 s of idle first, like a service that just started
    events: list[tuple[float, int, int]] = []  # (time, order, index); order: 0 end, 1 begin
    for i, (s, e, _) in enumerate(reqs):
        events += [(s, 1, i), (e, 0, i)]
    horizon = max(e for _, e, _ in reqs) + 1.0
    events.append((0.0, 2, -1))  # the sampler's first read; it schedules the next ones itself
    heapq.heapify(events)
    tickets, finals = {}, {}
    metering.subscribe(lambda r: finals.__setitem__(r.request_id, r))
    while events:
        t, kind, i = heapq.heappop(events)
        clock.now = t
        if kind == 2:
            metering.sampler.sample_once()
            if t < horizon:  # the thread would wake when due, a little late
                heapq.heappush(events, (metering.sampler.next_due_s() + rng.uniform(0, 0.0005), 2, -1))
        elif kind == 1:
            device.begin(i, reqs[i][2], t)
            tickets[i] = metering.begin("sim", reqs[i][2], request_id=str(i), work_class_=reqs[i][2])
        else:
            device.end(i, t)
            metering.end(tickets[i])
    per_class = {}
    for cls, (active_w, _, _) in CLASSES.items():
        idx = [i for i, r in enumerate(reqs) if r[2] == cls]
        true_j = sum(active_w * (reqs[i][1] - reqs[i][0]) for i in idx)
        got_j = sum(finals[str(i)].active_j for i in idx)
        per_class[cls] = {"requests": len(idx), "true_active_j": round(true_j, 3), "attributed_active_j":
                          round(got_j, 3), "rel_error": round((got_j - true_j) / true_j, 4)}
    tot = metering.totals()["sim0"]
    ledger = tot.attributed_active_j + tot.attributed_idle_j + tot.unattributed_idle_j
    return {"per_class": per_class, "finals": len(finals), "requests": len(reqs),
            "conservation_rel_error": abs(ledger - tot.measured_j) / tot.measured_j,
            "measured_j": tot.measured_j,
            "learned_w": {k: round(v, 1) for k, v in metering.attributor.models["sim0"].snapshot().items()}}


def server_timeline(rng: random.Random, seconds: float, pause_p: float) -> tuple[list, list[float], Callable]:
    """A served CPU's work under the CPU-time estimate, in virtual time: for each request, parsing (one thread)
    before its inference (two threads, +-10 %) and the response and thread-pool spin after (one to two threads);
    a pause before a request with probability ``pause_p``; the sampler's own work at each 0.25 s read.
    Returns the requests' spans, the read instants and the cumulative energy E(t)."""
    import numpy as np

    segments, spans, t = [], [], 0.0
    while t < seconds:
        if rng.random() < pause_p:
            t += rng.uniform(0.0, 0.3)
        segments.append((t, t + 0.0015, 4.0))
        t += 0.0015
        d = rng.choice([0.005, 0.01, 0.02, 0.04]) * rng.uniform(0.8, 1.2)
        spans.append((t, t + d))
        segments.append((t, t + d, 8.0 * rng.uniform(0.9, 1.1)))
        t += d
        segments.append((t, t + 0.002, 4.0 + 4.0 * rng.random()))
        t += 0.0023
    reads = [0.25 * k for k in range(int(t / 0.25) + 3)]
    segments += [(r, r + 0.002, 4.0) for r in reads]
    idle_w = 0.05
    points = np.array(sorted({a for a, _, _ in segments} | {b for _, b, _ in segments}))
    power = np.zeros(len(points))
    for a, b, w in segments:
        power[np.searchsorted(points, a):np.searchsorted(points, b)] += w
    cumulative = np.concatenate([[0.0], np.cumsum(power[:-1] * np.diff(points))])

    def energy_j(x: float) -> float:
        i = max(0, int(np.searchsorted(points, x, side="right")) - 1)
        return float(cumulative[i] + power[i] * (x - points[i]) + idle_w * x)
    return spans, reads, energy_j


def provisional_error(timeline: tuple[list, list[float], Callable], live: bool, prior_s: float) -> dict:
    """Provisional figure at response time over the final one, per request, on a :func:`server_timeline` (the
    CPU-time estimate: split by time). ``live`` reads the counter at response time (Meter.live); else the tail is
    the learnt power's estimate. The first five requests (no power learnt yet) are reported apart."""
    from service.energy.attribution import Attributor, Request
    from service.energy.types import DeviceInfo, Method

    spans, reads, energy_j = timeline
    clock = VirtualClock()
    finals: dict[int, float] = {}
    cpu = DeviceInfo("cpu", Component.CPU, Method.ESTIMATED, "simulated", tick_s=0.0, sample_period_s=0.25,
                     by_class=False)
    att = Attributor([cpu], lambda r, sh: finals.__setitem__(int(r.request_id), sh["cpu"].active_j + sh["cpu"].idle_j),
                     clock=clock, provisional_prior_s=prior_s)
    if live:
        att.live = {"cpu": lambda: energy_j(clock.now)}
    provisional: dict[int, float] = {}
    k = 1

    def read_until(t: float) -> None:
        nonlocal k
        while k < len(reads) and reads[k] <= t:
            att.on_interval("cpu", (reads[k - 1],) * 2, (reads[k],) * 2, energy_j(reads[k]) - energy_j(reads[k - 1]))
            k += 1
    att.on_interval("cpu", (0.0, 0.0), (0.0, 0.0), 0.0)
    for i, (start, end) in enumerate(spans):
        read_until(start)
        req = Request(str(i), "x", att.all_devices, start)
        att.begin(req)
        read_until(end)
        att.end(req, end)
        clock.now = end + 0.0005
        share = att.provisional(req)["cpu"]
        provisional[i] = share.active_j + share.idle_j
    read_until(float("inf"))
    ratios = sorted(provisional[i] / finals[i] for i in provisional if i >= 50)
    return {"first5": [round(provisional[i] / finals[i], 3) for i in range(5)],
            "p05_p50_p95": [round(ratios[int(f * (len(ratios) - 1))], 3) for f in (0.05, 0.5, 0.95)],
            "mean_abs_error": round(statistics.mean(abs(x - 1) for x in ratios), 4)}


def overhead(block_s: float, rounds: int, meters: str = "auto", charge: str = "host",
             phase: tuple[float, float] | None = None) -> dict:
    """Wall time of blocks of ~5 ms work items, metered vs not, in adjacent pairs of alternating order.

    A metered block is everything metering costs: the sampler thread is started, every item is tracked, and the
    sampler is stopped with its final read (which finalises the block's last requests) inside the timed region.
    Blocks last ``block_s`` (about ten sampler wake-ups), so the sampler's work is inside them, not around them.
    """
    import torch

    from service.energy.meters.factory import detect_meters

    a = torch.randn(256, 256)
    reps = 1

    def work() -> None:
        for _ in range(reps):
            a @ a

    def item_s() -> float:
        times = []
        for _ in range(30):
            t = time.perf_counter()
            work()
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    for _ in range(3):  # calibrate: one item ~ 5 ms
        reps = max(1, round(reps * 0.005 / max(item_s(), 1e-6)))
    items = max(20, round(block_s / item_s()))
    if meters == "sim-nvml":  # a GPU counter that ticks every 100 ms and costs 2.7 ms of CPU per read
        found = [SimulatedMeter({"gpu0": SimulatedDevice(80.0, {}, tick_s=0.1)}, read_cpu_s=0.0027)]
    else:
        found = detect_meters(gpu=meters != "estimate", rapl=meters == "auto", estimate=meters != "nvml").meters
    metering = Metering(found)
    phase_lock(metering, phase)
    # CPU work is charged on the host's devices, as the service charges a model on the CPU: a GPU counter on the
    # same machine is then read sparsely ("charge all" keeps every device busy, as for GPU work)
    host = None if charge == "all" else tuple(d.id for d in metering.devices.values()
                                               if d.component is not Component.GPU)
    if host is not None:
        metering.charge_on(host)

    def block(metered: bool) -> float:
        t0 = time.perf_counter()
        if metered:
            metering.sampler.start()
            for _ in range(items):
                with metering.track("bench", "matmul", tokens_in=256, devices=host):
                    work()
            metering.sampler.stop()
        else:
            for _ in range(items):
                work()
        return time.perf_counter() - t0

    block(False), block(True)  # warm up
    # as a server does after start-up (wattserve does it once models are loaded): freeze the long-lived objects
    # (torch, models, meters) so the collector stops re-scanning them; otherwise every allocation on the hot path
    # brings the next full collection of ~170,000 objects nearer (measured: begin+end 48 us -> 4 us)
    gc.collect()
    gc.freeze()
    ratios, null_ratios, plain = [], [], []
    for r in range(rounds):  # adjacent pairs, order alternating: slow drifts of a shared machine cancel
        first, second = (False, True) if r % 2 == 0 else (True, False)
        x, y = block(first), block(second)
        m, p = (y, x) if second else (x, y)
        ratios.append(m / p)
        plain.append(p)
        if r % 2 == 0:  # the same measurement with nothing to find: the noise floor
            null_ratios.append(block(False) / block(False))
    # the provisional figure is computed on demand (the service asks for it once, for the response headers)
    metering.sampler.start()
    costs = []
    for _ in range(200):
        work()
        with metering.track("bench", "matmul", tokens_in=256, devices=host) as ticket:
            pass
        t0 = time.perf_counter()
        metering.result(ticket)
        costs.append(time.perf_counter() - t0)
    metering.stop(timeout_s=1.0)
    ratios.sort()
    k = len(ratios) // 4
    return {"item_ms": round(statistics.median(plain) / items * 1e3, 3),
            "items_per_block": items,
            "provisional_us": round(statistics.median(costs) * 1e6, 1),
            "overhead_ratio": statistics.median(ratios),
            "overhead_ratio_iqr": [round(ratios[k], 4), round(ratios[-k - 1], 4)],
            "noise_floor_ratio": statistics.median(null_ratios),
            "devices": [d.id for d in metering.devices.values()]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=3000, help="requests per stream")
    ap.add_argument("--tick-s", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--overhead-block-s", type=float, default=1.0)
    ap.add_argument("--overhead-rounds", type=int, default=30)
    ap.add_argument("--meters", choices=("auto", "nvml", "estimate", "sim-nvml"), default="auto",
                    help="meters for the overhead blocks (auto: what this machine has; sim-nvml: a simulated GPU "
                         "counter whose reads cost 2.7 ms of CPU, as NVML's do)")
    ap.add_argument("--charge", choices=("host", "all"), default="host",
                    help="devices the CPU work items are charged on (all: every device stays busy)")
    ap.add_argument("--phase", help="GUARD,STEP: the sampler's phase lock as fractions of a tick (experiments)")
    ap.add_argument("--skip", choices=("attribution", "overhead", "provisional"), action="append", default=[])
    ap.add_argument("--idle-wander-w", type=float, default=IDLE_WANDER_W,
                    help="the simulated idle draw's random step per tick, in watts (0: a constant idle draw)")
    args = ap.parse_args()
    phase = tuple(float(x) for x in args.phase.split(",")) if args.phase else None
    report: dict = {"tick_s": args.tick_s, "scenarios": {}}
    worst, worst_ts, cons = 0.0, 0.0, 0.0
    out: dict = {}
    if "overhead" not in args.skip:
        oh = overhead(args.overhead_block_s, args.overhead_rounds, args.meters, args.charge, phase)
        print(f"overhead: {oh}")
        out.update({"overhead_ratio": round(oh["overhead_ratio"], 4), "overhead_item_ms": oh["item_ms"],
                    "overhead_ratio_iqr": oh["overhead_ratio_iqr"],
                    "overhead_noise_floor_ratio": round(oh["noise_floor_ratio"], 4),
                    "provisional_figure_us": oh["provisional_us"]})
    if "attribution" not in args.skip:
        for name, streams in (("interleaved", 1), ("overlapping", 3)):
            knobs = {"wander_w": args.idle_wander_w, "phase": phase}
            learned = score(args.requests, streams, args.tick_s, args.seed, time_share=False, **knobs)
            naive = score(args.requests, streams, args.tick_s, args.seed, time_share=True, **knobs)
            report["scenarios"][name] = {"learned": learned, "time_share": naive}
            worst = max([worst] + [abs(c["rel_error"]) for c in learned["per_class"].values()])
            worst_ts = max([worst_ts] + [abs(c["rel_error"]) for c in naive["per_class"].values()])
            cons = max(cons, learned["conservation_rel_error"], naive["conservation_rel_error"])
            for label, result in (("learned", learned), ("time share", naive)):
                errors = "  ".join(f"{k}: {v['rel_error']:+.2%}" for k, v in result["per_class"].items())
                print(f"{name:12s} {label:10s} {errors}   power model {result['learned_w']}")
        # sporadic traffic: every request finds its device idle, so each one's interval follows a sparsely read
        # stretch (ARCHITECTURE.md, "read sparsely"); reported apart from the two scenarios the target is set on
        sporadic = score(max(100, args.requests // 6), 1, args.tick_s, args.seed, time_share=False,
                         wander_w=args.idle_wander_w, phase=phase, gap_s=SPORADIC_GAP_S)
        report["scenarios"]["sporadic"] = {"learned": sporadic}
        errors = "  ".join(f"{k}: {v['rel_error']:+.2%}" for k, v in sporadic["per_class"].items())
        print(f"{'sporadic':12s} {'learned':10s} {errors}   power model {sporadic['learned_w']}")
        out.update({"attribution_max_rel_error": round(worst, 4), "time_share_max_rel_error": round(worst_ts, 4),
                    "sporadic_max_rel_error": round(max(abs(c["rel_error"]) for c in sporadic["per_class"].values()),
                                                    4),
                    "conservation_rel_error": cons, "tick_s": args.tick_s,
                    "true_power_ratio": (IDLE_W + CLASSES["large"][0]) / (IDLE_W + CLASSES["small"][0]),
                    "requests_per_scenario": {k: v["learned"]["requests"] for k, v in report["scenarios"].items()}})
    if "provisional" not in args.skip:
        from service.energy.attribution import PROVISIONAL_PRIOR_S

        # provisional over final figures on a simulated server's CPU (the CPU-time estimate), steady and with pauses;
        # each timeline is built once and scored three ways
        timelines = {p: server_timeline(random.Random(args.seed), 60.0, p) for p in (0.0, 0.15)}
        for label, live, prior_s in (("live", True, PROVISIONAL_PRIOR_S), ("live_no_prior", True, 0.0),
                                     ("model", False, 0.0)):
            runs = {f"pauses_{p}": provisional_error(timeline, live, prior_s) for p, timeline in timelines.items()}
            print(f"provisional {label:14s} {runs}")
            out[f"provisional_{label}_mean_abs_error"] = max(r["mean_abs_error"] for r in runs.values())
            out[f"provisional_{label}_first5"] = runs["pauses_0.0"]["first5"]
    if "overhead" not in args.skip:
        out["overhead_devices"] = oh["devices"]
    if phase is not None:
        out["phase_lock"] = phase
    print(json.dumps(out))


if __name__ == "__main__":
    main()
