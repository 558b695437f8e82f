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

``P_idle`` and ``a[class]`` come from :class:`PowerModel`: an online ridge least-squares fit of
``energy_j ~ P_idle * dt + sum_k a_k * tau_k`` (``tau_k``: seconds class ``k`` ran in the interval) with
exponential forgetting. A class without data takes the mean of the others, so a cold start degrades to the
time split. Invariants, per interval: every share >= 0, and ``sum(active) + sum(idle shares) + unattributed
idle == energy_j``. A request is *final* on a device once an interval ending after the request has arrived;
until then :meth:`Attributor.end` gives a *provisional* figure (covered part + model estimate of the tail).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable

import numpy as np

from service.energy.types import DeviceInfo


class PowerModel:
    """Online least squares for one device: idle watts and active watts per work class."""

    def __init__(self, *, forget: float = 0.998, ridge: float = 1e-3, max_classes: int = 256) -> None:
        self._forget, self._ridge, self._max_classes = forget, ridge, max_classes
        self._index: dict[str, int] = {}
        self._a = np.zeros((1, 1))  # normal equations over [dt, tau_1..tau_K]
        self._b = np.zeros(1)
        self._seen_s = np.zeros(1)  # seconds of data per unknown (dt for idle, tau for classes)
        self._theta = np.zeros(1)
        self._dirty = False

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

    def update(self, dt_s: float, tau_s: dict[str, float], energy_j: float) -> None:
        """Add one interval: ``dt_s`` long, class ``k`` ran ``tau_s[k]`` seconds in it, the device used ``energy_j``."""
        cols = [(self._col(k), v) for k, v in tau_s.items()]
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

    def _solve(self) -> np.ndarray:
        if self._dirty:
            n = len(self._b)
            seen = self._seen_s[1:] > 0
            prior = self._theta.copy()
            if seen.any():  # unseen classes are pulled towards the mean of the seen ones
                prior[1:][~seen] = float(np.mean(self._theta[1:][seen])) if np.any(self._theta[1:][seen]) else 0.0
            rho = self._ridge * (np.trace(self._a) / n + 1e-12)
            try:
                theta = np.linalg.solve(self._a + rho * np.eye(n), self._b + rho * prior)
            except np.linalg.LinAlgError:
                theta = prior
            self._theta = np.clip(theta, 0.0, None)
            self._dirty = False
        return self._theta

    @property
    def idle_w(self) -> float:
        return float(self._solve()[0])

    def active_w(self, work_class: str) -> float | None:
        """Learned active watts of a class; None while the class has no data (the caller uses time share)."""
        theta = self._solve()
        col = self._index.get(work_class)
        if col is None or self._seen_s[col] <= 0:
            seen = self._seen_s[1:] > 0
            return float(np.mean(theta[1:][seen])) if seen.any() else None
        return float(theta[col])

    def snapshot(self) -> dict[str, float]:
        theta = self._solve()
        return {"idle_w": float(theta[0]), **{k: float(theta[c]) for k, c in self._index.items()}}


@dataclass(frozen=True, slots=True)
class Share:
    """One request's energy on one device, joules; ``occupancy_s`` is its fair share of device time."""

    active_j: float = 0.0
    idle_j: float = 0.0
    occupancy_s: float = 0.0
    estimated_j: float = 0.0  # part of active_j + idle_j that is a model estimate, not measured
    degraded: bool = False  # an interval it overlapped had unreliable timing (meter gap)

    def plus(self, other: "Share") -> "Share":
        return Share(self.active_j + other.active_j, self.idle_j + other.idle_j,
                     self.occupancy_s + other.occupancy_s, self.estimated_j + other.estimated_j,
                     self.degraded or other.degraded)


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
    covered_until_s: float | None = None


@dataclass
class _Request:
    request_id: str
    work_class: str
    devices: frozenset[str]
    start_s: float
    end_s: float | None = None
    shares: dict[str, Share] = field(default_factory=dict)
    expired: bool = False  # finalised from estimates because a meter went stale


Overlap = tuple[_Request, float, float]  # request, overlap seconds, occupancy seconds (integral of 1/n)


def sweep(requests: Iterable[_Request], t0: float, t1: float) -> tuple[list[Overlap], float]:
    """Overlap and occupancy (time shared equally among concurrent requests) of each request in [t0, t1].

    Returns the per-request figures and the busy time (length of the union of the overlaps).
    """
    spans = []
    for req in requests:
        a = max(req.start_s, t0)
        b = t1 if req.end_s is None else min(req.end_s, t1)
        if b > a:
            spans.append((req, a, b))
    if not spans:
        return [], 0.0
    events = sorted({t for _, a, b in spans for t in (a, b)})
    occupancy = [0.0] * len(spans)
    busy = 0.0
    for lo, hi in zip(events, events[1:]):
        running = [i for i, (_, a, b) in enumerate(spans) if a <= lo and b >= hi]
        if running:
            busy += hi - lo
            for i in running:
                occupancy[i] += (hi - lo) / len(running)
    return [(req, b - a, occ) for (req, a, b), occ in zip(spans, occupancy)], busy


class Attributor:
    """Per-request energy on every device, from sampled intervals. Thread-safe.

    ``on_final(request_id, shares)`` is called (outside the lock, from the sampler thread) once every device of
    the request has covered it. ``time_share=True`` ignores the learned powers: the naive split, for comparison.
    """

    def __init__(self, devices: Iterable[DeviceInfo], on_final: Callable[[str, dict[str, Share]], None],
                 *, stale_after_s: float = 2.0, time_share: bool = False,
                 model_factory: Callable[[], PowerModel] = PowerModel) -> None:
        self.devices = {d.id: d for d in devices}
        self.models = {d: model_factory() for d in self.devices}
        self.totals = {d: DeviceTotals() for d in self.devices}
        self._on_final = on_final
        self._stale_after_s = stale_after_s
        self._time_share = time_share
        self._lock = threading.Lock()
        self._open: dict[str, _Request] = {}

    # -- request path: O(1), no meter reads -------------------------------------------------------------
    def begin(self, request_id: str, work_class: str, t_s: float, devices: Iterable[str] | None = None) -> None:
        devs = frozenset(self.devices if devices is None else (d for d in devices if d in self.devices))
        with self._lock:
            if request_id in self._open:
                raise ValueError(f"request {request_id!r} is already being metered")
            self._open[request_id] = _Request(request_id, work_class, devs, t_s)

    def end(self, request_id: str, t_s: float) -> dict[str, Share]:
        """Mark the request finished; return its provisional shares (covered part + estimated tail)."""
        with self._lock:
            req = self._open[request_id]
            req.end_s = max(t_s, req.start_s)
            concurrency = sum(1 for r in self._open.values() if r.end_s is None) + 1
            return {d: self._provisional(req, d, concurrency) for d in req.devices}

    def cancel(self, request_id: str) -> None:
        """Forget a request that never ran (e.g. its client left while it was queued)."""
        with self._lock:
            self._open.pop(request_id, None)

    def _provisional(self, req: _Request, dev: str, concurrency: int) -> Share:
        covered = self.totals[dev].covered_until_s
        tail_start = req.start_s if covered is None else max(req.start_s, covered)
        tail_s = max(0.0, (req.end_s or tail_start) - tail_start)
        share = req.shares.get(dev, Share())
        if tail_s <= 0:
            return share
        model = self.models[dev]
        active_w = model.active_w(req.work_class) or 0.0
        idle_w = model.idle_w / concurrency
        est = (active_w + idle_w) * tail_s
        return share.plus(Share(active_w * tail_s, idle_w * tail_s, tail_s / concurrency, est, False))

    # -- sampler path ------------------------------------------------------------------------------------
    def on_interval(self, dev: str, t0: float, t1: float, energy_j: float, degraded: bool = False) -> None:
        """Split one measured interval of device ``dev`` among the requests that ran in it."""
        finals: list[tuple[str, dict[str, Share]]] = []
        with self._lock:
            self._split(dev, t0, t1, max(0.0, energy_j), degraded)
            finals = self._collect_finals()
        for request_id, shares in finals:
            self._on_final(request_id, shares)

    def _split(self, dev: str, t0: float, t1: float, energy_j: float, degraded: bool) -> None:
        tot = self.totals[dev]
        tot.measured_j += energy_j
        tot.intervals += 1
        tot.degraded_intervals += degraded
        tot.covered_until_s = t1
        dt = t1 - t0
        if dt <= 0:
            tot.unattributed_idle_j += energy_j
            return
        tot.last_power_w = energy_j / dt
        model = self.models[dev]
        overlaps, busy_s = sweep((r for r in self._open.values() if dev in r.devices), t0, t1)
        if not degraded:
            tau: dict[str, float] = {}
            for req, ov, _ in overlaps:
                tau[req.work_class] = tau.get(req.work_class, 0.0) + ov
            model.update(dt, tau, energy_j)
        idle_j = min(energy_j, model.idle_w * dt) if overlaps else energy_j
        pool_j = energy_j - idle_j
        weights = [ov * (1.0 if self._time_share else (model.active_w(req.work_class) or 0.0))
                   for req, ov, _ in overlaps]
        if sum(weights) <= 0:
            weights = [ov for _, ov, _ in overlaps]
        w_sum = sum(weights)
        idle_shared = 0.0
        for (req, _, occ), w in zip(overlaps, weights):
            active = pool_j * w / w_sum
            idle = idle_j * occ / dt
            idle_shared += idle
            if req.expired:  # already final from estimates: its measured part cannot be reported any more
                tot.unattributed_idle_j += active + idle
                continue
            tot.attributed_active_j += active
            tot.attributed_idle_j += idle
            req.shares[dev] = req.shares.get(dev, Share()).plus(Share(active, idle, occ, 0.0, degraded))
        # the idle energy of the moments when nothing ran; computed as a remainder so the ledger balances exactly
        tot.unattributed_idle_j += energy_j - pool_j * (1 if overlaps else 0) - idle_shared

    def _collect_finals(self) -> list[tuple[str, dict[str, Share]]]:
        finals = []
        for request_id, req in list(self._open.items()):
            if req.end_s is None:
                continue
            if all((self.totals[d].covered_until_s or -1.0) >= req.end_s for d in req.devices):
                del self._open[request_id]
                if not req.expired:
                    finals.append((request_id, {d: req.shares.get(d, Share()) for d in req.devices}))
        return finals

    def expire(self, now_s: float) -> None:
        """Finalise requests that a stale meter cannot cover, filling the gap from the power model."""
        finals = []
        with self._lock:
            for request_id, req in self._open.items():
                if req.expired or req.end_s is None or now_s - req.end_s < self._stale_after_s:
                    continue
                shares = {}
                for d in req.devices:
                    covered = self.totals[d].covered_until_s
                    if covered is not None and covered >= req.end_s:
                        shares[d] = req.shares.get(d, Share())
                    else:
                        est = self._provisional(req, d, 1)
                        shares[d] = replace(est, degraded=True)
                req.expired = True
                finals.append((request_id, shares))
        for request_id, shares in finals:
            self._on_final(request_id, shares)

    def open_count(self) -> int:
        with self._lock:
            return len(self._open)
