"""Where a request's energy is decided.

The sampler turns each device's cumulative counter into intervals ``[t0, t1]`` holding ``energy_j``. For every
interval this module decides who gets what:

1. **Idle baseline.** ``idle_j = min(energy_j, P_idle * dt)``: the device's static draw, present whether or not
   anything runs. The rest is the *active* pool.
2. **Active pool, by what each request draws.** Each request overlapping the interval gets
   ``pool * w_r / sum(w)`` with ``w_r = a[class_r] * overlap_r``: its class's learned active power times the
   time it ran inside the interval. A plain time split (``w_r = overlap_r``) misattributes mixed workloads
   (+80 % / -30 % measured on an H200); this is the fix.
3. **Idle share.** ``idle_j`` is also split by time among the requests running at each instant (``1/n`` of it
   while ``n`` run); the part of the interval when nothing ran stays *unattributed idle*.

Interval edges are uncertain (a tick is only known to lie between two reads), so overlaps are *expected*
overlaps under that uncertainty (:func:`sweep`); without this, low-power requests next to high-power ones
absorb the energy that spills across a misplaced edge.

``P_idle`` and ``a[class]`` come from :class:`PowerModel`: an online ridge least-squares fit of
``energy_j ~ P_idle * dt + sum_k a_k * tau_k`` (``tau_k``: seconds class ``k`` ran in the interval) with
exponential forgetting. A class without data takes the mean of the others, so a cold start degrades to the
time split. Invariants, per interval: every share >= 0, and ``sum(active) + sum(idle shares) + unattributed
idle == energy_j``. A request is *final* on a device once an interval ending after the request has arrived;
until then :meth:`Attributor.end` gives a *provisional* figure (covered part + model estimate of the tail).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import numpy as np

from service.energy.types import DeviceInfo, Edge


class PowerModel:
    """Online estimate, for one device, of its idle watts and the active watts of each work class.

    Idle: the ratio of (exponentially forgotten) energy to time over *quiet* intervals, when nothing ran. Active:
    ridge least squares of ``energy_j - P_idle * dt ~ sum_k a_k * tau_k`` over every interval, with forgetting,
    pulled towards the mean of the known classes (so a new class starts as a plain time split). Until quiet time
    has been seen, idle comes from the joint fit with ``dt`` as one more regressor.
    """

    def __init__(self, *, forget: float = 0.998, idle_forget: float = 0.995, ridge: float = 1e-3,
                 min_quiet_s: float = 0.5, max_classes: int = 256) -> None:
        self._forget, self._idle_forget, self._ridge = forget, idle_forget, ridge
        self._min_quiet_s, self._max_classes = min_quiet_s, max_classes
        self._index: dict[str, int] = {}
        self._a = np.zeros((1, 1))  # normal equations over [dt, tau_1..tau_K]
        self._b = np.zeros(1)
        self._seen_s = np.zeros(1)  # seconds of data per regressor
        self._theta = np.zeros(1)
        self._quiet_j = self._quiet_s = 0.0
        self._dirty = False
        self._idle_w, self._active_w, self._mean_w = 0.0, {}, None

    def _col(self, work_class: str) -> int | None:
        col = self._index.get(work_class)
        if col is None and len(self._index) < self._max_classes:
            col = len(self._index) + 1
            self._index[work_class] = col
            n = col + 1
            a, b, s, t = np.zeros((n, n)), np.zeros(n), np.zeros(n), np.zeros(n)
            a[:-1, :-1], b[:-1], s[:-1], t[:-1] = self._a, self._b, self._seen_s, self._theta
            self._a, self._b, self._seen_s, self._theta = a, b, s, t
        return col

    def update(self, dt_s: float, tau_s: dict[str, float], energy_j: float, quiet: bool = False) -> None:
        """Add one interval: ``dt_s`` long, class ``k`` ran ``tau_s[k]`` seconds in it, the device used ``energy_j``.
        ``quiet``: nothing ran in or near it, so it measures the idle draw alone."""
        if quiet:
            self._quiet_j = self._quiet_j * self._idle_forget + energy_j
            self._quiet_s = self._quiet_s * self._idle_forget + dt_s
        cols = [(self._col(k), v) for k, v in tau_s.items()]  # may grow the matrices first
        x = np.zeros(len(self._b))
        x[0] = dt_s
        for col, v in cols:
            if col is not None:
                x[col] += v
        self._a *= self._forget
        self._b *= self._forget
        self._a += np.outer(x, x)
        self._b += x * energy_j
        self._seen_s += x
        self._dirty = True

    def _solve(self) -> None:
        if not self._dirty:
            return
        n = len(self._b)
        seen = self._seen_s[1:] > 0
        prior = self._theta.copy()
        if seen.any():  # unseen classes are pulled towards the mean of the seen ones
            prior[1:][~seen] = float(np.mean(self._theta[1:][seen]))
        rho = self._ridge * np.diag(self._a) + 1e-12  # scale-free: relative to each regressor's own data
        a, b = self._a + np.diag(rho), self._b + rho * prior
        try:
            if self._quiet_s >= self._min_quiet_s:  # idle known from quiet time: fit the active part only
                idle = self._quiet_j / self._quiet_s
                theta = np.empty(n)
                theta[0] = idle
                if n > 1:
                    theta[1:] = np.linalg.solve(a[1:, 1:], b[1:] - a[1:, 0] * idle)
            else:
                theta = np.linalg.solve(a, b)
        except np.linalg.LinAlgError:
            theta = prior
        self._theta = np.clip(theta, 0.0, None)
        self._dirty = False
        # plain floats for the hot path: numpy scalar access costs microseconds per call
        values, seen_list = self._theta.tolist(), self._seen_s.tolist()
        self._idle_w = values[0]
        self._active_w = {k: values[c] for k, c in self._index.items() if seen_list[c] > 0}
        self._mean_w = sum(self._active_w.values()) / len(self._active_w) if self._active_w else None

    @property
    def idle_w(self) -> float:
        self._solve()
        return self._idle_w

    def active_w(self, work_class: str) -> float | None:
        """Learned active watts of a class; the mean of the known classes for a new one; None with no data."""
        self._solve()
        return self._active_w.get(work_class, self._mean_w)

    def snapshot(self) -> dict[str, float]:
        self._solve()
        return {"idle_w": self._idle_w, **self._active_w}


@dataclass(frozen=True, slots=True)
class Share:
    """One request's energy on one device, joules; ``occupancy_s`` is its fair share of device time."""

    active_j: float = 0.0
    idle_j: float = 0.0
    occupancy_s: float = 0.0
    estimated_j: float = 0.0  # part of active_j + idle_j that is a model estimate, not measured
    degraded: bool = False  # an interval it overlapped had unreliable timing (meter gap)


@dataclass
class DeviceTotals:
    """Conservation ledger of one device since start: measured == attributed_active + attributed_idle + idle."""

    measured_j: float = 0.0
    attributed_active_j: float = 0.0
    attributed_idle_j: float = 0.0
    unattributed_idle_j: float = 0.0
    intervals: int = 0
    degraded_intervals: int = 0
    last_power_w: float = 0.0
    last_edge: Edge | None = None  # the newest interval's closing edge

    @property
    def covered_until_s(self) -> float | None:
        """Requests that ended by then have all their energy on this device (the closing edge's window opens)."""
        return None if self.last_edge is None else self.last_edge[0]


class Request:
    """A request being attributed. The metering facade subclasses it to carry the record's metadata."""

    __slots__ = ("request_id", "work_class", "devices", "start_s", "end_s", "acc", "expired")

    def __init__(self, request_id: str, work_class: str, devices: frozenset[str], start_s: float) -> None:
        self.request_id, self.work_class, self.devices, self.start_s = request_id, work_class, devices, start_s
        self.end_s: float | None = None
        self.acc: dict[str, list] = {}  # device -> [active_j, idle_j, occupancy_s, degraded]
        self.expired = False  # finalised from estimates because a meter went stale

    def share(self, dev: str) -> Share:
        a = self.acc.get(dev)
        return Share(a[0], a[1], a[2], 0.0, a[3]) if a else Share()


Overlap = tuple[Request, float, float]  # request, expected overlap seconds, expected occupancy seconds


def _membership(t: float, e0: Edge, e1: Edge) -> float:
    """Probability that instant ``t`` lies inside an interval whose edges are uniform in ``e0`` and ``e1``."""
    up = 1.0 if t >= e0[1] else 0.0 if t <= e0[0] else (t - e0[0]) / (e0[1] - e0[0])
    down = 1.0 if t <= e1[0] else 0.0 if t >= e1[1] else (e1[1] - t) / (e1[1] - e1[0])
    return up * down


def sweep(requests: Iterable[Request], e0: Edge, e1: Edge) -> tuple[list[Overlap], float]:
    """Expected overlap and occupancy of each request with an interval whose edges are uncertain.

    A counter that ticks every 100 ms, read every 20 ms, tells when a tick happened only to within 20 ms. Each
    instant belongs to the interval with a probability that ramps up across the first edge's window and down
    across the last one's (the two ramps of adjacent intervals sum to 1), so a request running near a tick
    counts partly in both intervals: no class systematically absorbs its neighbours' energy. Occupancy shares
    each instant equally among the requests running then. Returns the figures and the expected busy time.
    """
    lo, hi = e0[0], e1[1]
    spans = []
    for req in requests:
        a = max(req.start_s, lo)
        b = hi if req.end_s is None else min(req.end_s, hi)
        if b > a:
            spans.append((req, a, b))
    if not spans:
        return [], 0.0
    events = [(a, 1, i) for i, (_, a, _) in enumerate(spans)] + [(b, 0, i) for i, (_, _, b) in enumerate(spans)]
    events += [(t, 2, -1) for t in (e0[1], e1[0]) if lo < t < hi]  # ramp corners: no change in who runs
    events.sort()
    overlap = [0.0] * len(spans)
    occupancy = [0.0] * len(spans)
    running: set[int] = set()
    busy, last_t, last_m = 0.0, events[0][0], _membership(events[0][0], e0, e1)
    for t, kind, i in events:
        m = _membership(t, e0, e1)
        if running and t > last_t:
            w = 0.5 * (m + last_m) * (t - last_t)  # membership is linear between events: exact
            busy += w
            each = w / len(running)
            for j in running:
                overlap[j] += w
                occupancy[j] += each
        last_t, last_m = t, m
        if kind == 1:
            running.add(i)
        elif kind == 0:
            running.discard(i)
    # a request that only touches an edge window where membership is zero has no share here
    return [(req, ov, occ) for (req, _, _), ov, occ in zip(spans, overlap, occupancy, strict=True) if ov > 0], busy


class Attributor:
    """Per-request energy on every device, from sampled intervals. Thread-safe.

    ``on_final(request, shares)`` is called (outside the lock, from the sampler thread) once every device of the
    request has covered it. ``time_share=True`` ignores the learned powers: the naive split, for comparison.
    """

    def __init__(self, devices: Iterable[DeviceInfo], on_final: Callable[[Request, dict[str, Share]], None],
                 *, stale_after_s: float = 2.0, time_share: bool = False,
                 model_factory: Callable[[], PowerModel] = PowerModel,
                 clock: Callable[[], float] | None = None) -> None:
        self._now = clock or time.perf_counter
        self.devices = {d.id: d for d in devices}
        self.all_devices = frozenset(self.devices)
        self.models = {d: model_factory() for d in self.devices}
        self.totals = {d: DeviceTotals() for d in self.devices}
        self._on_final = on_final
        self._stale_after_s = stale_after_s
        self._time_share = time_share
        self._lock = threading.Lock()
        self._open: dict[str, Request] = {}
        self._running = 0  # requests begun and not yet ended

    # -- request path: O(1), no meter reads -------------------------------------------------------------
    def begin(self, req: Request) -> None:
        with self._lock:
            if req.request_id in self._open:
                raise ValueError(f"request {req.request_id!r} is already being metered")
            self._open[req.request_id] = req
            self._running += 1

    def end(self, req: Request, t_s: float) -> None:
        """Mark the request finished (idempotent). Its final shares follow from the sampler thread."""
        with self._lock:
            if req.end_s is None:
                req.end_s = max(t_s, req.start_s)
                self._running -= 1

    def provisional(self, req: Request) -> dict[str, Share]:
        """The request's shares so far: the covered part measured, the rest estimated from the power model."""
        with self._lock:
            concurrency = self._running + (1 if req.end_s is not None else 0)
            return {d: self._provisional(req, d, max(1, concurrency)) for d in req.devices}

    def get_open(self, request_id: str) -> Request | None:
        return self._open.get(request_id)

    def cancel(self, req: Request) -> None:
        """Forget a request that never ran (e.g. its client left while it was queued)."""
        with self._lock:
            if self._open.pop(req.request_id, None) is not None and req.end_s is None:
                self._running -= 1

    def _provisional(self, req: Request, dev: str, concurrency: int) -> Share:
        tot = self.totals[dev]
        edge = tot.last_edge
        tail_start = req.start_s if edge is None else max(req.start_s, 0.5 * (edge[0] + edge[1]))
        end_s = req.end_s if req.end_s is not None else max(tail_start, self._now())
        tail_s = max(0.0, end_s - tail_start)
        share = req.share(dev)
        if tail_s <= 0:
            return share
        model = self.models[dev]
        active_w = model.active_w(req.work_class)
        idle_w = model.idle_w
        if active_w is None:  # cold start: the device's recent draw above idle
            active_w = max(0.0, tot.last_power_w - idle_w)
        idle_w /= concurrency
        est = (active_w + idle_w) * tail_s
        return Share(share.active_j + active_w * tail_s, share.idle_j + idle_w * tail_s,
                     share.occupancy_s + tail_s / concurrency, est, share.degraded)

    # -- sampler path ------------------------------------------------------------------------------------
    def on_interval(self, dev: str, e0: Edge, e1: Edge, energy_j: float, degraded: bool = False) -> None:
        """Split one measured interval of device ``dev`` (edges known to within ``e0``, ``e1``)."""
        with self._lock:
            self._split(dev, e0, e1, max(0.0, energy_j), degraded)
            finals = self._collect_finals()
        for req, shares in finals:
            self._on_final(req, shares)

    def _split(self, dev: str, e0: Edge, e1: Edge, energy_j: float, degraded: bool) -> None:
        tot = self.totals[dev]
        tot.measured_j += energy_j
        tot.intervals += 1
        tot.degraded_intervals += degraded
        tot.last_edge = e1
        dt = 0.5 * (e1[0] + e1[1]) - 0.5 * (e0[0] + e0[1])
        if dt <= 0:
            tot.unattributed_idle_j += energy_j
            return
        tot.last_power_w = energy_j / dt
        model = self.models[dev]
        overlaps, _ = sweep((r for r in self._open.values() if dev in r.devices), e0, e1)
        if not degraded:
            tau: dict[str, float] = {}
            for req, ov, _ in overlaps:
                tau[req.work_class] = tau.get(req.work_class, 0.0) + ov
            model.update(dt, tau, energy_j, quiet=not overlaps)
        if not overlaps:
            tot.unattributed_idle_j += energy_j
            return
        idle_j = min(energy_j, model.idle_w * dt)
        pool_j = energy_j - idle_j
        if self._time_share:
            weights = [ov for _, ov, _ in overlaps]
        else:
            weights = [ov * (model.active_w(req.work_class) or 0.0) for req, ov, _ in overlaps]
            if sum(weights) <= 0:
                weights = [ov for _, ov, _ in overlaps]
        w_sum = sum(weights)
        shared = 0.0
        for (req, _, occ), w in zip(overlaps, weights, strict=False):
            active = pool_j * w / w_sum
            idle = idle_j * occ / dt
            shared += active + idle
            if req.expired:  # already final from estimates: its measured part can no longer be reported
                tot.unattributed_idle_j += active + idle
                continue
            tot.attributed_active_j += active
            tot.attributed_idle_j += idle
            acc = req.acc.get(dev)
            if acc is None:
                req.acc[dev] = [active, idle, occ, degraded]
            else:
                acc[0] += active
                acc[1] += idle
                acc[2] += occ
                acc[3] = acc[3] or degraded
        # the idle draw of the moments when nothing ran: a remainder, so the ledger balances exactly
        tot.unattributed_idle_j += energy_j - shared

    def _collect_finals(self) -> list[tuple[Request, dict[str, Share]]]:
        finals = []
        covered = {d: (t.covered_until_s if t.covered_until_s is not None else float("-inf"))
                   for d, t in self.totals.items()}
        all_covered = min(covered.values(), default=float("-inf"))
        for request_id, req in list(self._open.items()):
            if req.end_s is None:
                continue
            if req.end_s <= all_covered or all(covered[d] >= req.end_s for d in req.devices):
                del self._open[request_id]
                if not req.expired:
                    finals.append((req, {d: req.share(d) for d in req.devices}))
        return finals

    def expire(self, now_s: float) -> None:
        """Finalise requests that a stale meter cannot cover, filling the gap from the power model."""
        finals = []
        with self._lock:
            for req in self._open.values():
                if req.expired or req.end_s is None or now_s - req.end_s < self._stale_after_s:
                    continue
                shares = {}
                for d in req.devices:
                    covered = self.totals[d].covered_until_s
                    if covered is not None and covered >= req.end_s:
                        shares[d] = req.share(d)
                    else:
                        shares[d] = replace(self._provisional(req, d, 1), degraded=True)
                req.expired = True
                finals.append((req, shares))
        for req, shares in finals:
            self._on_final(req, shares)

    def open_count(self) -> int:
        with self._lock:
            return len(self._open)
