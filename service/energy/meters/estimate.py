"""Estimated CPU and RAM energy, for machines with no sensor (most VMs, laptops without RAPL access, CI).

CPU: this process's CPU time (all threads, user + system) times the power of one hardware thread, taken
from CodeCarbon's CPU TDP table for the detected CPU (TDP x sockets / logical CPUs; CodeCarbon's own
per-thread default when the model is unknown). RAM: CodeCarbon's RAM power model for this machine's memory,
a constant draw. Both are labelled ``estimated`` wherever they surface.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from service.energy.meters.base import Meter
from service.energy.types import Component, DeviceInfo, MeterError, Method

log = logging.getLogger(__name__)

# The estimate is continuous; the period is only how finely it is split among requests. Each interval costs the
# sampler a fixed amount of work besides its per-request part, so a coarse period keeps metering cheap; 0.25 s
# still puts a request's final figure within a quarter second of its end.
SAMPLE_PERIOD_S = 0.25


@dataclass(frozen=True)
class CpuPowerModel:
    cpu_model: str
    watts_per_thread: float
    source: str  # how watts_per_thread was found, for logs and /v1/meters


@dataclass(frozen=True)
class RamPowerModel:
    memory_gb: float
    power_w: float


def codecarbon_cpu_power() -> CpuPowerModel:
    """Per-thread power of this CPU from CodeCarbon's TDP table (no network is used)."""
    try:
        from codecarbon.core.cpu import DEFAULT_POWER_PER_CORE, TDP
        from codecarbon.core.util import count_cpus, count_physical_cpus
    except ImportError as exc:
        raise MeterError("codecarbon is not installed: pip install codecarbon (needed to estimate CPU power)") from exc
    tdp = TDP()
    threads = max(1, count_cpus())
    if tdp.tdp is None:
        return CpuPowerModel(tdp.model, float(DEFAULT_POWER_PER_CORE), "codecarbon default per thread")
    sockets = max(1, count_physical_cpus() or 1)
    # CodeCarbon's own fallback for unknown models is threads x default: recognise it rather than re-derive.
    if abs(tdp.tdp - threads * DEFAULT_POWER_PER_CORE) < 1e-9 and not _in_table(tdp.model):
        return CpuPowerModel(tdp.model, float(DEFAULT_POWER_PER_CORE), "codecarbon default per thread")
    return CpuPowerModel(tdp.model, float(tdp.tdp) * sockets / threads,
                         f"codecarbon TDP {tdp.tdp} W x {sockets} socket(s) / {threads} threads")


def _in_table(cpu_model: str) -> bool:
    from codecarbon.core.cpu import TDP

    try:
        return TDP._get_cpu_power_from_registry(TDP.__new__(TDP), cpu_model) is not None
    except Exception:  # noqa: BLE001 - a lookup failure only means "not in the table"
        return False


def codecarbon_ram_power() -> RamPowerModel:
    """This machine's RAM power from CodeCarbon's model (v3: per-DIMM estimate from total memory)."""
    try:
        from codecarbon.external.ram import RAM
    except ImportError as exc:
        raise MeterError("codecarbon is not installed: pip install codecarbon (needed to estimate RAM power)") from exc
    ram = RAM(tracking_mode="machine")
    return RamPowerModel(float(ram.machine_memory_GB), float(ram.total_power().W))


class CpuTimeEstimateMeter(Meter):
    """Estimated energy: ``cpu`` (process CPU time x W/thread) and ``ram`` (constant power x wall time)."""

    live = True  # two clock reads, no state: provisional figures read it at response time

    def __init__(self, cpu: CpuPowerModel | None = None, ram: RamPowerModel | None = None, *,
                 include: Iterable[Component] = (Component.CPU, Component.RAM),
                 cpu_seconds: Callable[[], float] = time.process_time,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        include = set(include)
        self.cpu = (cpu or codecarbon_cpu_power()) if Component.CPU in include else None
        self.ram = (ram or codecarbon_ram_power()) if Component.RAM in include else None
        self._cpu_seconds, self._clock = cpu_seconds, clock
        self._t0_s = clock()
        devices = []
        if self.cpu is not None:
            devices.append(DeviceInfo(id="cpu", component=Component.CPU, method=Method.ESTIMATED,
                       name=f"{self.cpu.cpu_model} ({self.cpu.watts_per_thread:.2f} W/thread, {self.cpu.source})",
                       tick_s=0.0, sample_period_s=SAMPLE_PERIOD_S, by_class=False))
        if self.ram is not None:
            devices.append(DeviceInfo(id="ram", component=Component.RAM, method=Method.ESTIMATED,
                       name=f"{self.ram.memory_gb:.1f} GB ({self.ram.power_w:.1f} W, codecarbon RAM model)",
                       tick_s=0.0, sample_period_s=SAMPLE_PERIOD_S, constant_w=self.ram.power_w))
        self.devices = tuple(devices)
        log.info("estimating energy: %s", "; ".join(f"{d.id}: {d.name}" for d in self.devices))

    def read(self) -> list[float]:
        out = []
        if self.cpu is not None:
            out.append(self._cpu_seconds() * self.cpu.watts_per_thread)
        if self.ram is not None:
            out.append((self._clock() - self._t0_s) * self.ram.power_w)
        return out
