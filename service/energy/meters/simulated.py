"""A simulated device with known ground truth, for tests and benchmarks.

Its true power is ``idle_w`` plus the active watts of every request class running on it (each class draws a
fixed amount while it runs). Like an NVML counter, its cumulative energy counter only advances at ticks
every ``tick_s`` (with optional jitter), so attribution can be scored against the exact truth.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Hashable

from service.energy.meters.base import Meter
from service.energy.types import Component, DeviceInfo, Method


class SimulatedDevice:
    def __init__(self, idle_w: float, class_active_w: dict[str, float], *, tick_s: float = 0.1,
                 tick_jitter_s: float = 0.0, phase_s: float = 0.0, seed: int = 0,
                 idle_wander_w: float = 0.0, clock: Callable[[], float] = time.perf_counter) -> None:
        """``idle_wander_w``: the idle draw wanders, as a real GPU's does. At every tick it takes a step of this
        standard deviation and is pulled a tenth of the way back to ``idle_w``. The wander is not active energy:
        attribution that mistakes it for a request's draw is scored as an error."""
        self.idle_w = idle_w
        self._wander_w, self._idle_now_w = idle_wander_w, idle_w
        self.class_active_w = dict(class_active_w)
        self.tick_s = tick_s
        self._jitter_s = tick_jitter_s
        self._rng = random.Random(seed)
        self._clock = clock
        self._lock = threading.Lock()
        self._running: dict[Hashable, float] = {}
        self._t_s = clock()
        self._energy_j = 0.0
        self._power_w = idle_w
        self._counter_j = 0.0
        self._next_tick_s = self._t_s + phase_s + tick_s if tick_s > 0 else float("inf")

    def begin(self, token: Hashable, work_class: str, t_s: float | None = None) -> None:
        with self._lock:
            self._advance(self._clock() if t_s is None else t_s)
            self._running[token] = self.class_active_w[work_class]
            self._power_w = self._idle_now_w + sum(self._running.values())

    def end(self, token: Hashable, t_s: float | None = None) -> None:
        with self._lock:
            self._advance(self._clock() if t_s is None else t_s)
            self._running.pop(token)
            self._power_w = self._idle_now_w + sum(self._running.values())

    def counter_j(self, t_s: float | None = None) -> float:
        """What the device's counter shows at ``t_s``: the true energy as of its last tick."""
        with self._lock:
            self._advance(self._clock() if t_s is None else t_s)
            return self._counter_j if self.tick_s > 0 else self._energy_j

    def true_energy_j(self, t_s: float | None = None) -> float:
        with self._lock:
            self._advance(self._clock() if t_s is None else t_s)
            return self._energy_j

    def _advance(self, t_s: float) -> None:
        while self._next_tick_s <= t_s:
            self._energy_j += self._power_w * (self._next_tick_s - self._t_s)
            self._t_s = self._next_tick_s
            self._counter_j = self._energy_j
            jitter = self._rng.uniform(-self._jitter_s, self._jitter_s) if self._jitter_s else 0.0
            self._next_tick_s += self.tick_s + jitter
            if self._wander_w:
                step = self._rng.gauss(0.0, self._wander_w) - 0.1 * (self._idle_now_w - self.idle_w)
                self._idle_now_w += step
                self._power_w += step
        if t_s > self._t_s:
            self._energy_j += self._power_w * (t_s - self._t_s)
            self._t_s = t_s


class SimulatedMeter(Meter):
    """Meter over simulated devices; reads the counters at the meter's clock."""

    def __init__(self, devices: dict[str, SimulatedDevice], *, component: Component = Component.GPU,
                 sample_period_s: float | None = None, clock: Callable[[], float] = time.perf_counter,
                 read_cpu_s: float = 0.0) -> None:
        """``read_cpu_s``: each read keeps the CPU busy this long, as NVML's energy counter does (~2.7 ms
        measured on an H200), so benchmarks can show what reading a costly counter does to inference."""
        self.sim = dict(devices)
        self._clock, self._read_cpu_s = clock, read_cpu_s
        self.devices = tuple(
            DeviceInfo(id=dev_id, component=component, method=Method.MEASURED, name="simulated",
                       tick_s=dev.tick_s,
                       sample_period_s=sample_period_s or (dev.tick_s / 5 if dev.tick_s else 0.02))
            for dev_id, dev in self.sim.items())

    def read(self) -> list[float]:
        if self._read_cpu_s:
            end = time.thread_time() + self._read_cpu_s
            while time.thread_time() < end:
                pass
        now = self._clock()
        return [dev.counter_j(now) for dev in self.sim.values()]
