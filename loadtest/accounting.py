"""The three accounting modes of a run, side by side (pure functions: the numbers a report stands on).

(a) ``requests``: the sum of the final per-request figures (what each response's record says, under the server's
    accounting, ``loaded`` by default: active energy plus each request's share of idle draw while it ran).
(b) ``device_window``: everything the server's meters counted between the run's first and last request, idle
    gaps between requests included (the device counters of ``/metrics`` before and after).
(c) ``paper``: machine-level, as CodeCarbon 2.3.1 counted for "Power Hungry Processing": GPU energy of every GPU
    over the window, CPU at a constant half TDP and RAM at 3/8 W per GB for the window's duration, PUE 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from loadtest.server import Snapshot
from service.energy.types import Method

JOULES_PER_KWH = 3.6e6
COMPONENTS = ("gpu", "cpu", "ram")


def combine_methods(methods: Iterable[str]) -> str:
    """The server's own rule (``Method.combine``) on method names; ``none`` when there is no figure at all."""
    return str(Method.combine({Method(m) for m in methods}))


def carbon_g(energy_j: float, intensity_g_per_kwh: float, pue: float) -> float:
    return energy_j / JOULES_PER_KWH * intensity_g_per_kwh * pue


def requests_mode(finals: list[Mapping[str, Any]]) -> dict[str, Any]:
    components = dict.fromkeys(COMPONENTS, 0.0)
    operational = embodied = 0.0
    for record in finals:
        for name, part in record.get("components", {}).items():
            components[name] = components.get(name, 0.0) + part["energy_j"]
        carbon = record.get("carbon")
        if carbon:
            operational += carbon["operational_g"]
            embodied += carbon["embodied_g"]
    return {"energy_j": sum(r["energy_j"] for r in finals), "components": components,
            "method": combine_methods(r["method"] for r in finals), "carbon_g": operational, "embodied_g": embodied}


def window_mode(before: Snapshot, after: Snapshot) -> dict[str, Any]:
    missing = sorted(set(before) ^ set(after))
    if missing:
        raise ValueError(f"device counters appeared or vanished during the run: {', '.join(missing)}")
    components = dict.fromkeys(COMPONENTS, 0.0)
    for dev, b in before.items():
        components[b.component] = components.get(b.component, 0.0) + (after[dev].energy_j - b.energy_j)
    starts = [c.covered_until_s for c in before.values() if c.covered_until_s is not None]
    ends = [c.covered_until_s for c in after.values() if c.covered_until_s is not None]
    start, end = (min(starts), max(ends)) if starts and ends else (None, None)
    return {"energy_j": sum(components.values()), "components": components,
            "method": combine_methods(c.method for c in before.values()),
            "window": {"start_s": start, "end_s": end,
                       "duration_s": (end - start) if start is not None and end is not None else None}}


def paper_mode(before: Snapshot, after: Snapshot, duration_s: float, paper: Mapping[str, float]) -> dict[str, Any]:
    gpu = sum(after[d].energy_j - b.energy_j for d, b in before.items() if b.component == "gpu")
    gpu_methods = {b.method for b in before.values() if b.component == "gpu"}
    components = {"gpu": gpu, "cpu": paper["cpu_power_w"] * duration_s, "ram": paper["ram_power_w"] * duration_s}
    return {"energy_j": sum(components.values()), "components": components,
            "method": combine_methods(gpu_methods | {"estimated"}), "duration_s": duration_s}


def run_totals(finals: list[Mapping[str, Any]], before: Snapshot, after: Snapshot, loop_s: float,
               paper: Mapping[str, float], intensity_g_per_kwh: float, pue: float) -> dict[str, Any]:
    """The ``energy_j`` / ``energy_method`` / ``energy_components_j`` / ``carbon_g`` blocks of run.json."""
    a, b, c = requests_mode(finals), window_mode(before, after), paper_mode(before, after, loop_s, paper)
    return {
        "window": b["window"],
        "energy_j": {"requests": a["energy_j"], "device_window": b["energy_j"], "paper": c["energy_j"]},
        "energy_method": {"requests": a["method"], "device_window": b["method"], "paper": c["method"]},
        "energy_components_j": {"requests": a["components"], "device_window": b["components"],
                                "paper": c["components"]},
        "carbon_g": {"requests": a["carbon_g"], "device_window": carbon_g(b["energy_j"], intensity_g_per_kwh, pue),
                     "paper": carbon_g(c["energy_j"], intensity_g_per_kwh, 1.0)},
        "embodied_g": {"requests": a["embodied_g"]},
        "paper_mode": {**paper, "duration_s": loop_s, "pue": 1.0},
    }


def no_success(sent: int, ok: int, first_error: str | None) -> str | None:
    """Why a run measured nothing, or None if it measured something: no request answered, or every answer an error
    (on a keyed server without its key, every one a 401). Such a run is failed, so a resume runs it again."""
    if ok:
        return None
    if not sent:
        return "no request was answered"
    return f"no request succeeded ({sent} errors; the first: {first_error})"
