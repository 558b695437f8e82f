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
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from service.energy.meters.base import Meter
from service.energy.types import DeviceInfo, Edge, Interval

log = logging.getLogger(__name__)

PHASE_GUARD, PHASE_STEP = 0.10, 0.05
SPARSE_READ_S = 1.0  # a ticking device no request may be charged on: one read a second keeps its total and power
IntervalSink = Callable[[list[Interval]], None]  # the intervals one meter read closed, all at once


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
    last_read: Edge | None = None  # when the last good read started and ended
    values: list[float] | None = None  # counter values at the last good read
    origin: list[float] | None = None  # counter values at the first good read (live meters' readers count from it)
    boundary: list[tuple[Edge, float] | None] = field(default_factory=list)  # (edge, energy_j) per device
    failing: bool = False
    errors: int = 0
    last_error: str = ""
    tick_period_s: list[float] = field(default_factory=list)  # tick meters: learned period per device
    tick_anchor_s: list[float | None] = field(default_factory=list)  # instant of the last tick located
    tick_guard_s: list[float] = field(default_factory=list)  # how early to start looking for the next one
    tick_misses: list[int] = field(default_factory=list)  # brackets in a row that did not locate their tick


class Sampler:
    """Reads meters in a daemon thread and feeds ``sink`` with intervals; keeps a bounded timeline per device."""

    def __init__(self, meters: list[Meter], sink: IntervalSink, *, clock: Callable[[], float] = time.perf_counter,
                 timeline_points: int = 4096, on_tick: Callable[[float], None] | None = None,
                 nice: int = 10) -> None:
        self._clock, self._sink, self._on_tick, self._nice = clock, sink, on_tick, nice
        # the ids of the devices requests may be charged on (None: every device; see charge)
        self.charged: frozenset[str] | None = None
        # phase lock of ticking counters, as fractions of the tick period: the first read comes ``guard`` before
        # the expected tick, then one every ``step`` until the tick is seen (or ``3 * guard`` after it)
        self.phase_guard, self.phase_step, self.sparse_read_s = PHASE_GUARD, PHASE_STEP, SPARSE_READ_S
        self._states = []
        for m in meters:
            if m.devices:
                n = len(m.devices)
                self._states.append(_MeterState(
                    m, min(d.sample_period_s for d in m.devices), boundary=[None] * n,
                    tick_period_s=[d.tick_s for d in m.devices], tick_anchor_s=[None] * n, tick_guard_s=[0.0] * n,
                    tick_misses=[0] * n))
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
        if self._nice:
            try:  # Linux: a thread has its own nice value; the request path wins any fight for a core
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self._nice)
            except (AttributeError, OSError) as exc:
                log.debug("could not lower the sampler thread's priority: %s", exc)
        while not self._stop.is_set():
            try:
                self.sample_once()
            except Exception:  # noqa: BLE001 - the sampler must outlive any bug in a sink
                log.exception("energy sampler iteration failed")
            self._stop.wait(max(0.001, self.next_due_s() - self._clock()))

    def live_readers(self) -> dict[str, Callable[[], float | None]]:
        """Per continuous-counter device of a :attr:`~Meter.live` meter: its energy since the first good read,
        read now (None before that read). The intervals count from the same origin, so this less the energy of the
        intervals closed so far is what the counter has gathered since the last closing edge."""
        readers: dict[str, Callable[[], float | None]] = {}
        for state in self._states:
            if state.meter.live:
                for i, dev in enumerate(state.meter.devices):
                    # a ticking counter's intervals start at its first tick, not its first read; a constant draw's
                    # tail is known without a read
                    if dev.tick_s == 0 and dev.constant_w is None:
                        readers[dev.id] = self._live_reader(state, i)
        return readers

    @staticmethod
    def _live_reader(state: _MeterState, i: int) -> Callable[[], float | None]:
        def read() -> float | None:
            origin = state.origin
            return None if origin is None else state.meter.read()[i] - origin[i]
        return read

    def charge(self, devices: Iterable[str]) -> None:
        """Add devices that requests may be charged on. A ticking counter of a device never added is read once
        every ``sparse_read_s``, without locating its ticks (until the first call, every device counts)."""
        self.charged = (self.charged or frozenset()) | frozenset(devices)
        for state in self._states:
            state.next_due_s = 0.0  # reschedule at the next wake-up: a newly charged device is read densely

    def sample_once(self, now_s: float | None = None, force: bool = False) -> None:
        """Read every meter that is due (all with ``force``). Safe to call from one thread at a time."""
        now = self._clock() if now_s is None else now_s
        for state in self._states:
            if force or now >= state.next_due_s:
                self._read(state, now_s)
                state.next_due_s = self._next_due(state, now)
        if self._on_tick is not None:
            self._on_tick(now)

    def next_due_s(self) -> float:
        """When the next meter read is due (the thread sleeps until then)."""
        return min((s.next_due_s for s in self._states), default=self._clock() + 1.0)

    def _next_due(self, state: _MeterState, now: float) -> float:
        """Phase-locked reading of ticking counters: skip the quiet middle of a tick period and read densely
        around the expected tick, so a tick's instant is known to a few ms for a few reads per tick. A ticking
        device that no request may be charged on (not in ``charged``; say the GPU while only CPU models are served)
        is read once every ``sparse_read_s`` instead: its energy is all idle, so only its total matters. NVML's
        counter costs ~2.7 ms of CPU per read (measured on an H200), and 40 reads a second slowed CPU inference
        on all cores by 23 %. (Reading devices sparsely while merely idle between requests was tried: a request
        after a quiet spell then shares one long interval with the idle draw's wander, and sporadic small
        requests came out +22 % instead of +6 % in simulation.)
        A counter with no tick located yet is read at the meter's plain cadence; so is a continuous counter."""
        due, charged = float("inf"), self.charged
        for dev, anchor, period, guard in zip(state.meter.devices, state.tick_anchor_s, state.tick_period_s,
                                              state.tick_guard_s, strict=True):
            if dev.tick_s > 0 and charged is not None and dev.id not in charged:  # its edges never matter
                due = min(due, now + self.sparse_read_s)
                continue
            if anchor is None:  # a continuous counter, or no tick located yet
                return now + state.period_s
            k = max(1, int((now - anchor - 3 * guard) // period) + 1)  # the first tick whose window is still open
            g = guard + 0.005 * period * (k - 1)  # the period is known to well under 1 %: allow for drift
            expected = anchor + k * period
            if now < expected - g:
                due = min(due, expected - g)
            else:
                due = min(due, now + max(0.001, self.phase_step * period))
        return due

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
        read: Edge = (t_before, t_before if now_s is not None else self._clock())
        degraded = state.failing
        closed: list[Interval] = []
        if state.failing:
            log.info("meter %s recovered", [d.id for d in state.meter.devices])
            state.failing = False
        for i, (dev, value) in enumerate(zip(state.meter.devices, values, strict=False)):
            old = state.values[i] if state.values is not None else None
            if dev.tick_s > 0:
                if old is None or value == old:
                    continue
                edge = (state.last_read[0], read[1])  # old value seen in the last read, new one in this
                if not self._learn_tick(state, i, edge):
                    continue  # ticks this bracket was not looking for: the new value is only its baseline
                if state.boundary[i] is None:  # the first change seen gives the first trustworthy edge
                    state.boundary[i] = (edge, value)
                    self.timeline[dev.id].append(TimelinePoint(0.5 * (edge[0] + edge[1]), value, False))
                    continue
            else:
                edge = read
            self._close(closed, dev.id, state.boundary, i, edge, value, degraded)
        if state.origin is None:
            state.origin = values
        state.values, state.last_read = values, read
        if closed:
            self._sink(closed)

    def _learn_tick(self, state: _MeterState, i: int, edge: Edge) -> bool:
        """Locate a tick in ``edge`` and predict the next. Returns False for a change seen by the first read of a
        bracket, when the window since the previous read spans more than ``0.3`` tick: those are ticks skipped
        while the device was idle (or one that came late); the value is the bracket's baseline, and the interval
        stays open until the bracket locates its own tick. A third such in a row means the phase has drifted: the
        lock is dropped and the next tick is found at the plain cadence."""
        period = state.tick_period_s[i]
        width = edge[1] - edge[0]
        anchor = state.tick_anchor_s[i]
        if width > 0.3 * period:
            if anchor is not None and state.boundary[i] is not None and state.tick_misses[i] < 2:
                state.tick_misses[i] += 1
                return False
            state.tick_anchor_s[i] = None  # no lock: this change closes an interval with a wide, honest edge
            state.tick_misses[i] = 0
            return True
        mid_s = 0.5 * (edge[0] + edge[1])
        if anchor is not None:
            n = round((mid_s - anchor) / period)
            if n >= 1 and abs(mid_s - anchor - n * period) < 0.2 * period:
                state.tick_period_s[i] = period = 0.8 * period + 0.2 * (mid_s - anchor) / n
        state.tick_anchor_s[i] = mid_s
        state.tick_misses[i] = 0
        state.tick_guard_s[i] = self.phase_guard * period + 0.5 * width  # the jitter, and where this tick was
        return True

    def _close(self, closed: list[Interval], dev_id: str, boundary: list, i: int, edge: Edge, value: float,
               degraded: bool) -> None:
        prev = boundary[i]
        if prev is not None and edge[1] <= prev[0][1]:
            return  # no time has passed: the energy stays in the next interval
        boundary[i] = (edge, value)
        self.timeline[dev_id].append(TimelinePoint(0.5 * (edge[0] + edge[1]), value, degraded))
        if prev is not None:
            closed.append((dev_id, prev[0], edge, value - prev[1], degraded))

    def errors(self) -> dict[str, tuple[int, str]]:
        return {d.id: (s.errors, s.last_error) for s in self._states for d in s.meter.devices}
