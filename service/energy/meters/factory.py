"""Pick the meters this machine has: NVML for GPUs, RAPL for CPU/DRAM, estimates for what has no sensor.

Returns plain :class:`Meter` objects plus a note per backend saying why it is or is not used, so the service
can show it (``/v1/meters``) and nobody has to branch on ``if gpu:``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from service.energy.meters.base import Meter, NullMeter
from service.energy.meters.estimate import CpuTimeEstimateMeter
from service.energy.meters.nvml import NvmlMeter
from service.energy.meters.rapl import POWERCAP_ROOT, RaplMeter
from service.energy.types import Component, MeterError

log = logging.getLogger(__name__)


@dataclass
class MeterSelection:
    meters: list[Meter] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)  # backend -> why used / not used


def detect_meters(*, gpu: bool = True, rapl: bool = True, estimate: bool = True,
                  powercap_root: Path = POWERCAP_ROOT) -> MeterSelection:
    """Every backend that works here. CPU and RAM fall back to estimates where RAPL has no zone for them."""
    sel = MeterSelection()
    backends = [("nvml", gpu, NvmlMeter, {}), ("rapl", rapl, RaplMeter, {"root": powercap_root})]
    for name, wanted, cls, kwargs in backends:
        if not wanted:
            sel.notes[name] = "disabled by configuration"
            continue
        try:
            meter = cls(**kwargs)
        except MeterError as exc:
            sel.notes[name] = f"unavailable: {exc}"
            log.info("%s meter unavailable: %s", name, exc)
            continue
        sel.meters.append(meter)
        sel.notes[name] = "measuring " + ", ".join(d.id for d in meter.devices)
    covered = {d.component for m in sel.meters for d in m.devices}
    missing = {Component.CPU, Component.RAM} - covered
    if missing and estimate:
        try:
            meter = CpuTimeEstimateMeter(include=missing)
            sel.meters.append(meter)
            sel.notes["estimate"] = "estimating " + ", ".join(d.id for d in meter.devices)
        except MeterError as exc:
            sel.notes["estimate"] = f"unavailable: {exc}"
    elif missing:
        sel.notes["estimate"] = "disabled by configuration"
    if not sel.meters:
        sel.meters.append(NullMeter("no energy meter is available"))
    return sel
