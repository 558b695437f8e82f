"""GPU check of the metering core (<= 5 min on one NVIDIA GPU). Prints a table; last line is JSON.

1. Idle power, then standalone references for two request shapes of a random-init BERT-base (1x128 and 8x512
   tokens): the NVML counter over >= 3 s of back-to-back requests, so J/request includes the idle draw.
2. A mixed workload (75 % small, 25 % large, one at a time, as the service runs) through the metering core:
   the learned split and, on the very same intervals, the plain time split.
3. Overhead: blocks of small requests with metering (sampler running, each request registered) vs without,
   alternated.

Usage: python scripts/gpu_check.py [--out DIR]. ``--simulate`` runs the same plumbing on the CPU with a tiny
model and a simulated meter (a smoke test: its energies are not measurements).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from transformers import BertConfig, BertForSequenceClassification  # noqa: E402

from service.energy import Metering  # noqa: E402
from service.energy.attribution import Attributor, Request  # noqa: E402

SHAPES = {"small": (1, 128), "large": (8, 512)}


def meter_timing(meter, seconds: float = 1.5) -> dict:
    """The meter as the sampler sees it: cost of one read, and the period between counter updates."""
    costs, cpu, changes, last = [], [], [], None
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0, c0 = time.perf_counter(), time.thread_time()
        value = meter.read()[0]
        t1 = time.perf_counter()
        costs.append(t1 - t0)
        cpu.append(time.thread_time() - c0)
        if last is not None and value != last:
            changes.append(t1)
        last = value
        time.sleep(0.002)
    meter.close()
    periods = [b - a for a, b in zip(changes, changes[1:], strict=False)]
    return {"read_ms_median": statistics.median(costs) * 1e3, "read_ms_max": max(costs) * 1e3,
            "read_cpu_ms_median": statistics.median(cpu) * 1e3,
            "update_period_ms_median": statistics.median(periods) * 1e3 if periods else None,
            "updates_seen": len(changes), "name": meter.devices[0].name}


def time_share_replay(metering: Metering, tickets: list, kinds: dict[str, str], batches: list[list]) -> dict:
    """The mixed run's requests and intervals again, in the order they happened, through a time-share split."""
    naive: dict[str, dict] = {}
    ts = Attributor(metering.devices.values(), lambda r, s: naive.__setitem__(r.request_id, s), time_share=True)
    events = []  # (time, order, kind, item): at equal times, ends before intervals before begins
    for t in tickets:
        req = Request(t.request_id, kinds[t.request_id], ts.all_devices, t.start_s)
        events += [(t.start_s, 2, "begin", req), (t.end_s, 0, "end", req)]
    events += [(max(iv[2][1] for iv in batch), 1, "intervals", batch) for batch in batches]
    for when, _, kind, item in sorted(events, key=lambda e: e[:2]):
        if kind == "begin":
            ts.begin(item)
        elif kind == "end":
            ts.end(item, when)
        else:
            ts.on_intervals(item)
    return naive


def power_field_sync(seconds: float = 2.0) -> dict:
    """Does the cheap instantaneous-power field (~µs a read) change when the energy counter (~ms a read) ticks?
    One thread reads the counter back to back, another polls the field every 0.5 ms; both note change times."""
    import threading

    import pynvml

    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    field = pynvml.NVML_FI_DEV_POWER_INSTANT
    counter_changes: list[float] = []
    stop = threading.Event()

    def counter() -> None:
        last = None
        while not stop.is_set():
            v = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            if last is not None and v != last:
                counter_changes.append(time.perf_counter())
            last = v

    thread = threading.Thread(target=counter)
    thread.start()
    field_changes, costs, last = [], [], None
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        v = pynvml.nvmlDeviceGetFieldValues(handle, [field])[0].value.uiVal
        t1 = time.perf_counter()
        costs.append(t1 - t0)
        if last is not None and v != last:
            field_changes.append(t1)
        last = v
        time.sleep(0.0005)
    stop.set()
    thread.join()
    offsets = [min((f - c for f in field_changes), key=abs) for c in counter_changes] if field_changes else []
    periods = [b - a for a, b in zip(field_changes, field_changes[1:], strict=False)]
    return {"field_read_us_median": statistics.median(costs) * 1e6,
            "field_update_period_ms_median": statistics.median(periods) * 1e3 if periods else None,
            "counter_updates": len(counter_changes), "field_updates": len(field_changes),
            "field_minus_counter_change_ms": sorted(round(o * 1e3, 1) for o in offsets)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--requests", type=int, default=1500)
    ap.add_argument("--simulate", action="store_true", help="CPU smoke run with a simulated meter")
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.simulate:
        from service.energy.meters.simulated import SimulatedDevice, SimulatedMeter

        device = "cpu"
        config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
        sim = SimulatedDevice(80.0, {"small": 120.0, "large": 480.0}, tick_s=0.1)
        meter_factory = lambda: SimulatedMeter({"gpu0": sim})  # noqa: E731
        counter_j = sim.counter_j
        hooks = (sim.begin, sim.end)
        global SHAPES
        SHAPES = {"small": (1, 16), "large": (4, 64)}
    else:
        import pynvml

        from service.energy.meters.nvml import NvmlMeter

        device = "cuda"
        config = BertConfig(num_labels=2)
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        meter_factory = NvmlMeter
        counter_j = lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1e3  # noqa: E731
        hooks = None
    model = BertForSequenceClassification(config).to(device).eval()
    inputs = {k: torch.randint(1000, 20000, shape, device=device) for k, shape in SHAPES.items()}

    def infer(kind: str) -> None:
        if hooks:
            hooks[0](id(kind), kind)
        with torch.inference_mode():
            model(input_ids=inputs[kind])
        if device == "cuda":
            torch.cuda.synchronize()
        if hooks:
            hooks[1](id(kind))

    report: dict = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu (simulated meter)"}
    report["meter"] = meter_timing(meter_factory())
    if not args.simulate:
        try:
            report["power_field"] = power_field_sync()
        except Exception as exc:  # noqa: BLE001 - a probe: report, do not stop the check
            report["power_field"] = {"error": repr(exc)}
    for kind in SHAPES:
        for _ in range(10):
            infer(kind)
    # 1. idle and standalone references
    e0, t0 = counter_j(), time.perf_counter()
    time.sleep(3.0)
    idle_w = (counter_j() - e0) / (time.perf_counter() - t0)
    refs = {}
    for kind in SHAPES:
        n, e0, t0 = 0, counter_j(), time.perf_counter()
        while time.perf_counter() - t0 < 3.0:
            infer(kind)
            n += 1
        secs, joules = time.perf_counter() - t0, counter_j() - e0
        refs[kind] = {"J": joules / n, "ms": secs / n * 1e3, "W": joules / secs,
                      "active_J": (joules - idle_w * secs) / n}
    report["idle_W"], report["reference"] = idle_w, refs
    # 2. mixed workload through the metering core. The intervals are kept and replayed afterwards through a
    # time-share attributor, so the comparison costs the run nothing (a second attributor live would slow it)
    meter = meter_factory()
    read, reads = meter.read, []
    meter.read = lambda: reads.append(None) or read()  # how often the sampler reads the counter
    metering = Metering([meter])
    batches: list[list] = []
    learned_sink = metering.sampler._sink
    metering.sampler._sink = lambda batch: (learned_sink(batch), batches.append(batch))
    finals: dict[str, object] = {}
    metering.subscribe(lambda rec: finals.__setitem__(rec.request_id, rec))
    metering.start()
    t_mixed = time.perf_counter()
    time.sleep(2.0)  # quiet time: the idle baseline
    rng = random.Random(1)
    kinds, tickets = {}, []
    for _ in range(args.requests):
        kind = "large" if rng.random() < 0.25 else "small"
        ticket = metering.begin("bert-base", "text-classification", work_class_=kind)
        infer(kind)
        metering.end(ticket)
        kinds[ticket.request_id] = kind
        tickets.append(ticket)
    metering.stop(timeout_s=5.0)
    report["sampler_reads_per_s"] = len(reads) / (time.perf_counter() - t_mixed)
    naive = time_share_replay(metering, tickets, kinds, batches)
    mixed = {}
    for kind in SHAPES:
        ids = [i for i, k in kinds.items() if k == kind and i in finals]
        loaded = statistics.mean(finals[i].energy_j for i in ids)
        active = statistics.mean(finals[i].active_j for i in ids)
        naive_loaded = statistics.mean(sum(s.active_j + s.idle_j for s in naive[i].values()) for i in ids if i in naive)
        mixed[kind] = {"n": len(ids), "ms": statistics.mean(finals[i].duration_s for i in ids) * 1e3,
                       "attributed_J": loaded, "ref_J": refs[kind]["J"],
                       "rel_error": loaded / refs[kind]["J"] - 1, "active_J": active,
                       "ref_active_J": refs[kind]["active_J"], "time_share_J": naive_loaded,
                       "time_share_rel_error": naive_loaded / refs[kind]["J"] - 1}
    tot = next(iter(metering.totals().values()))
    report["mixed"] = mixed
    report["conservation_rel_error"] = abs(tot.attributed_active_j + tot.attributed_idle_j
                                           + tot.unattributed_idle_j - tot.measured_j) / tot.measured_j
    report["power_model"] = next(iter(metering.attributor.models.values())).snapshot()
    # 3. overhead: alternate metered and plain blocks of small requests
    metering = Metering([meter_factory()])
    ratios = []
    for r in range(10):
        times = {}
        for metered in ((False, True) if r % 2 == 0 else (True, False)):
            if metered:
                metering.sampler.start()
            t0 = time.perf_counter()
            for _ in range(60 if args.simulate else 250):  # ~1 s on a GPU: ten ticks, the phase lock in force
                if metered:
                    with metering.track("bert-base", "text-classification", work_class_="small"):
                        infer("small")
                else:
                    infer("small")
            times[metered] = time.perf_counter() - t0
            if metered:
                metering.sampler.stop()
        ratios.append(times[True] / times[False])
    metering.stop(timeout_s=2.0)
    report["overhead_ratio"] = statistics.median(ratios)
    mt = report["meter"]
    print(f"device: {report['device']}   idle {idle_w:.1f} W   meter {mt['name']}: read {mt['read_ms_median']:.2f} ms"
          f" (max {mt['read_ms_max']:.2f}, CPU {mt['read_cpu_ms_median']:.2f}), counter updates every"
          f" {mt['update_period_ms_median'] or 0:.1f} ms")
    if "power_field" in report:
        print(f"power field: {report['power_field']}")
    heads = ("ref ms", "mixed ms", "ref J", "attributed J", "error", "time-share J", "error")
    print(f"{'class':6s} " + " ".join(f"{h:>{w}s}" for h, w in zip(heads, (7, 9, 9, 13, 8, 13, 8), strict=True)))
    for kind, m in mixed.items():
        print(f"{kind:6s} {refs[kind]['ms']:7.2f} {m['ms']:9.2f} {m['ref_J']:9.3f} {m['attributed_J']:13.3f}"
              f" {m['rel_error']:+8.1%}"
              f" {m['time_share_J']:13.3f} {m['time_share_rel_error']:+8.1%}")
    print(f"overhead ratio {report['overhead_ratio']:.4f}   conservation {report['conservation_rel_error']:.2e}"
          f"   sampler reads/s {report['sampler_reads_per_s']:.1f}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    print(json.dumps(report, default=str))


if __name__ == "__main__":
    main()
