"""One background thread per process that reads every meter and turns counters into intervals.

Each meter is read at its own cadence (a fraction of its counter's tick). A counter that ticks (NVML energy:
every ~100 ms) is only trusted at its changes: the instant of a tick is estimated as the midpoint between the
last read that saw the old value and the first that saw the new one, so intervals run tick to tick. A
continuous counter (RAPL, estimates, integrated power) yields an interval at every read. A read that raises is
logged and counted; the interval that spans the gap is marked *degraded*. Energy is never lost across a gap:
the next good read closes one interval from the last good boundary, so nothing is counted twice either.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from service.energy.meters.base import Meter
from service.energy.types import DeviceInfo

log = logging.getLogger(__name__)

IntervalSink = Callable[[str, float, float, float, bool], None]  # device id, t0_s, t1_s, energy_j, degraded


@dataclass(frozen=True, slots=True)
class TimelinePoint:
    t_s: float
    energy_j: float  # cumulative, from the meter's own origin
    degraded: bool


@dataclass
class _MeterState:
    meter: Meter
    period_s: float
    next_due_s: float = 0.0
    last_read_s: float | None = None
    values: list[float] | None = None  # counter values at the last good read
    boundary: list[tuple[float, float] | None] = field(default_factory=list)  # (t_s, energy_j) per device
    primed: list[bool] = field(default_factory=list)  # tick meters: first change seen (a true tick boundary)
    failing: bool = False
    errors: int = 0
    last_error: str = ""


class Sampler:
    """Reads meters in a daemon thread and feeds ``sink`` with intervals; keeps a bounded timeline per device."""

    def __init__(self, meters: list[Meter], sink: IntervalSink, *, clock: Callable[[], float] = time.perf_counter,
                 timeline_points: int = 4096, on_tick: Callable[[float], None] | None = None) -> None:
        self._clock, self._sink, self._on_tick = clock, sink, on_tick
        self._states = [
            _MeterState(m, min(d.sample_period_s for d in m.devices),
                        boundary=[None] * len(m.devices), primed=[d.tick_s <= 0 for d in m.devices])
            for m in meters if m.devices]
        self.devices: tuple[DeviceInfo, ...] = tuple(d for s in self._states for d in s.meter.devices)
        self.timeline: dict[str, deque[TimelinePoint]] = {d.id: deque(maxlen=timeline_points) for d in self.devices}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self.sample_once()
            self._thread = threading.Thread(target=self._run, name="wattserve-sampler", daemon=True)
            self._thread.start()

    def stop(self, final_read: bool = True) -> None:
        """Stop the thread; with ``final_read`` read every meter once more so recent requests get covered."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self._stop.clear()
        if final_read:
            self.sample_once(force=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample_once()
            except Exception:  # noqa: BLE001 - the sampler must outlive any bug in a sink
                log.exception("energy sampler iteration failed")
            now = self._clock()
            wait = min((s.next_due_s for s in self._states), default=now + 1.0) - now
            self._stop.wait(max(0.001, wait))

    def sample_once(self, now_s: float | None = None, force: bool = False) -> None:
        """Read every meter that is due (all with ``force``). Safe to call from one thread at a time."""
        now = self._clock() if now_s is None else now_s
        for state in self._states:
            if force or now >= state.next_due_s:
                self._read(state, now_s)
                state.next_due_s = now + state.period_s
        if self._on_tick is not None:
            self._on_tick(now)

    def _read(self, state: _MeterState, now_s: float | None) -> None:
        t_before = self._clock() if now_s is None else now_s
        try:
            values = state.meter.read()
        except Exception as exc:  # noqa: BLE001 - MeterError, or a backend bug: never kill the sampler
            state.errors += 1
            if not state.failing:
                log.warning("meter %s failed, its intervals are degraded until it recovers: %s",
                            [d.id for d in state.meter.devices], exc)
            state.failing, state.last_error = True, str(exc)
            return
        t_read = t_before if now_s is not None else 0.5 * (t_before + self._clock())
        degraded = state.failing
        if state.failing:
            log.info("meter %s recovered", [d.id for d in state.meter.devices])
            state.failing = False
        prev_read = state.last_read_s
        for i, (dev, value) in enumerate(zip(state.meter.devices, values)):
            old = state.values[i] if state.values is not None else None
            if dev.tick_s > 0:
                if old is None or value == old:
                    continue
                t_b = t_read if prev_read is None or degraded else 0.5 * (prev_read + t_read)
                if not state.primed[i]:  # the first tick seen gives the first trustworthy boundary
                    state.primed[i] = True
                    state.boundary[i] = (t_b, value)
                    self.timeline[dev.id].append(TimelinePoint(t_b, value, False))
                    continue
            else:
                t_b = t_read
            self._close(dev.id, state.boundary, i, t_b, value, degraded)
        state.values, state.last_read_s = values, t_read

    def _close(self, dev_id: str, boundary: list, i: int, t_s: float, value: float, degraded: bool) -> None:
        prev = boundary[i]
        if prev is not None and t_s <= prev[0]:
            return  # no time has passed: the energy stays in the next interval
        boundary[i] = (t_s, value)
        self.timeline[dev_id].append(TimelinePoint(t_s, value, degraded))
        if prev is not None:
            self._sink(dev_id, prev[0], t_s, value - prev[1], degraded)

    def errors(self) -> dict[str, tuple[int, str]]:
        return {d.id: (s.errors, s.last_error) for s in self._states for d in s.meter.devices}
