"""NVIDIA GPUs through NVML (the ``nvidia-ml-py`` package, imported as ``pynvml``).

Volta and newer expose a cumulative energy counter (millijoules, ticking every ~100 ms, ~4 ms per read).
Older cards have none: there the meter integrates instantaneous power (``NVML_FI_DEV_POWER_INSTANT``,
falling back to ``nvmlDeviceGetPowerUsage``) over its own read times. Only GPUs visible to this process
are metered, in CUDA's order, so ``gpu0`` is what torch calls ``cuda:0``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service.energy.meters.base import Meter
from service.energy.types import Component, DeviceInfo, MeterError, Method

log = logging.getLogger(__name__)

COUNTER_TICK_S = 0.1  # measured on H200: 97-106 ms between counter updates
COUNTER_SAMPLE_PERIOD_S = 0.02  # a fifth of the tick: tick instants known to +-10 ms
POWER_SAMPLE_PERIOD_S = 0.02


def visible_gpu_selectors(env: dict[str, str] | None = None) -> list[str] | None:
    """Parse ``CUDA_VISIBLE_DEVICES`` into selectors (NVML indices or UUID prefixes).

    Returns None when the variable is unset (every GPU is visible). Follows CUDA: the list stops at the
    first invalid entry, and ``-1`` or an empty value hides every GPU.
    """
    raw = (os.environ if env is None else env).get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return None
    selectors: list[str] = []
    for item in (part.strip() for part in raw.split(",")):
        if item.isdigit() or item.startswith("GPU-"):
            selectors.append(item)
        else:  # "-1", "", "MIG-..." (no per-instance energy): CUDA stops enumerating here
            if item.startswith("MIG-"):
                log.warning("CUDA_VISIBLE_DEVICES entry %s is a MIG instance: NVML has no per-instance energy", item)
            break
    return selectors


@dataclass
class _Gpu:
    handle: Any
    read_j: Callable[[], float]


class NvmlMeter(Meter):
    """Every visible NVIDIA GPU. Raises :class:`MeterError` at construction when NVML is unusable."""

    def __init__(self, nvml: Any | None = None, env: dict[str, str] | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        if nvml is None:
            try:
                import pynvml as nvml
            except ImportError as exc:  # pragma: no cover - nvidia-ml-py is a hard dependency
                raise MeterError("nvidia-ml-py is not installed: pip install nvidia-ml-py") from exc
        self._nvml = nvml
        self._clock = clock
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            raise MeterError(f"NVML unavailable ({exc}): no NVIDIA driver on this machine, or the container "
                             "lacks the GPU (run with --gpus all / the NVIDIA container toolkit)") from exc
        try:
            self._gpus, self.devices = self._discover(visible_gpu_selectors(env))
        except nvml.NVMLError as exc:
            nvml.nvmlShutdown()
            raise MeterError(f"NVML could not enumerate GPUs: {exc}") from exc
        if not self._gpus:
            nvml.nvmlShutdown()
            raise MeterError("NVML found no visible GPU (check CUDA_VISIBLE_DEVICES)")

    def _discover(self, selectors: list[str] | None) -> tuple[list[_Gpu], tuple[DeviceInfo, ...]]:
        nv = self._nvml
        handles = [nv.nvmlDeviceGetHandleByIndex(i) for i in range(nv.nvmlDeviceGetCount())]
        if selectors is not None:
            uuids = [_text(nv.nvmlDeviceGetUUID(h)) for h in handles]
            chosen = []
            for sel in selectors:
                if sel.isdigit():
                    if int(sel) >= len(handles):
                        break
                    chosen.append(handles[int(sel)])
                else:
                    match = [h for h, u in zip(handles, uuids, strict=False) if u.startswith(sel)]
                    if len(match) != 1:
                        break
                    chosen.append(match[0])
            handles = chosen
        gpus, infos = [], []
        for ordinal, handle in enumerate(handles):
            name = _text(nv.nvmlDeviceGetName(handle))
            read_j, tick_s, period_s, how = self._energy_reader(handle)
            gpus.append(_Gpu(handle, read_j))
            infos.append(DeviceInfo(id=f"gpu{ordinal}", component=Component.GPU, method=Method.MEASURED,
                                    name=f"{name} ({how})", tick_s=tick_s, sample_period_s=period_s))
        return gpus, tuple(infos)

    def _energy_reader(self, handle: Any) -> tuple[Callable[[], float], float, float, str]:
        nv = self._nvml
        try:
            nv.nvmlDeviceGetTotalEnergyConsumption(handle)
            return (lambda: nv.nvmlDeviceGetTotalEnergyConsumption(handle) / 1e3,
                    COUNTER_TICK_S, COUNTER_SAMPLE_PERIOD_S, "energy counter")
        except nv.NVMLError as exc:
            log.info("GPU has no energy counter (%s): integrating power", exc)
        power_w = self._power_reader(handle)
        return _PowerIntegrator(power_w, self._clock), 0.0, POWER_SAMPLE_PERIOD_S, "integrated power"

    def _power_reader(self, handle: Any) -> Callable[[], float]:
        nv = self._nvml
        field = getattr(nv, "NVML_FI_DEV_POWER_INSTANT", None)
        if field is not None:
            try:
                value = nv.nvmlDeviceGetFieldValues(handle, [field])[0]
                if value.nvmlReturn == nv.NVML_SUCCESS:
                    def instant() -> float:
                        v = nv.nvmlDeviceGetFieldValues(handle, [field])[0]
                        if v.nvmlReturn != nv.NVML_SUCCESS:
                            raise nv.NVMLError(v.nvmlReturn)
                        return v.value.uiVal / 1e3
                    return instant
            except nv.NVMLError:
                pass
        return lambda: nv.nvmlDeviceGetPowerUsage(handle) / 1e3

    def read(self) -> list[float]:
        try:
            return [gpu.read_j() for gpu in self._gpus]
        except self._nvml.NVMLError as exc:
            raise MeterError(f"NVML read failed: {exc}") from exc

    def close(self) -> None:
        if self._gpus:
            self._gpus = []
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError:
                pass


class _PowerIntegrator:
    """Cumulative joules from instantaneous watts, by the trapezoid rule over successive reads."""

    def __init__(self, power_w: Callable[[], float], clock: Callable[[], float]) -> None:
        self._power_w, self._clock = power_w, clock
        self._t_s: float | None = None
        self._p_w = 0.0
        self._energy_j = 0.0

    def __call__(self) -> float:
        p_w, t_s = self._power_w(), self._clock()
        if self._t_s is not None:
            self._energy_j += 0.5 * (p_w + self._p_w) * (t_s - self._t_s)
        self._t_s, self._p_w = t_s, p_w
        return self._energy_j


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
