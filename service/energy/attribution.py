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
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from service.energy.types import DeviceInfo, Edge, Interval


def solve_linear(a: list[list[float]], b: list[float]) -> list[float]:
    """``x`` with ``a @ x == b``: Gaussian elimination with partial pivoting in plain Python for the few regressors
    a device usually has (numpy's per-call overhead dominates below ~20), numpy beyond. Raises LinAlgError."""
    n = len(b)
    if n > 20:
        return np.linalg.solve(np.array(a), np.array(b)).tolist()
    m = [row[:] + [rhs] for row, rhs in zip(a, b, strict=True)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(m[r][c]))
        if not abs(m[p][c]) > 1e-300:  # also catches NaN
            raise np.linalg.LinAlgError("singular matrix")
        m[c], m[p] = m[p], m[c]
        pivot = m[c]
        inv = 1.0 / pivot[c]
        for r in range(c + 1, n):
            row = m[r]
            k = row[c] * inv
            if k:
                for j in range(c, n + 1):
                    row[j] -= k * pivot[j]
    x = [0.0] * n
    for c in range(n - 1, -1, -1):
        row = m[c]
        x[c] = (row[n] - sum(row[j] * x[j] for j in range(c + 1, n))) / row[c]
    return x


class PowerModel:
    """Online estimate, for one device, of its idle watts and the active watts of each work class.

    Idle: the ratio of (exponentially forgotten) energy to time over *quiet* intervals, when nothing ran. Active:
    ridge least squares of ``energy_j - P_idle * dt ~ sum_k a_k * tau_k`` over every interval, with forgetting,
    pulled towards the mean of the known classes (so a new class starts as a plain time split). Until quiet time
    has been seen, idle comes from the joint fit with ``dt`` as one more regressor.
    """

    def __init__(self, *, forget: float = 0.998, idle_forget: float = 0.995, ridge: float = 1e-3,
                 min_quiet_s: float = 0.5, max_classes: int = 256, solve_every: int = 8,
                 warmup_updates: int = 100, constant_w: float | None = None) -> None:
        self._forget, self._idle_forget, self._ridge = forget, idle_forget, ridge
        self._min_quiet_s, self._max_classes = min_quiet_s, max_classes
        self._solve_every, self._warmup = solve_every, warmup_updates
        self._index: dict[str, int] = {}
        # normal equations over [dt, tau_1..tau_K], plain lists (a handful of regressors: numpy's per-call cost
        # dominates at this size), stored divided by the forgetting applied so far (``_scale``): an update then
        # touches only the regressors present in the interval, not the whole matrix
        self._a: list[list[float]] = [[0.0]]
        self._b: list[float] = [0.0]
        self._scale = 1.0
        self._seen_s = [0.0]  # seconds of data per regressor
        self._theta = [0.0]
        self._quiet_j = self._quiet_s = 0.0
        self._pending = 0  # updates since the last solve
        self._young = 0  # updates since a class was last added: the fit moves fast until it is warm
        self._grown = False  # a class was added since the last solve
        self._idle_w, self._active_w, self._mean_w = 0.0, {}, None
        self._fixed = constant_w is not None  # a known constant draw: all baseline, nothing to learn
        if self._fixed:
            self._idle_w, self._mean_w = float(constant_w), 0.0

    def _col(self, work_class: str) -> int | None:
        col = self._index.get(work_class)
        if col is None and len(self._index) < self._max_classes:
            col = len(self._index) + 1
            self._index[work_class] = col
            for row in self._a:
                row.append(0.0)
            self._a.append([0.0] * (col + 1))
            self._b.append(0.0)
            self._theta.append(0.0)
            self._seen_s.append(0.0)
            self._grown, self._young = True, 0
        return col

    def update(self, dt_s: float, tau_s: dict[str, float], energy_j: float, quiet: bool = False) -> None:
        """Add one interval: ``dt_s`` long, class ``k`` ran ``tau_s[k]`` seconds in it, the device used ``energy_j``.
        ``quiet``: nothing ran in or near it, so it measures the idle draw alone."""
        if self._fixed:
            return
        if quiet:
            self._quiet_j = self._quiet_j * self._idle_forget + energy_j
            self._quiet_s = self._quiet_s * self._idle_forget + dt_s
        x = [(0, dt_s)]
        for k, v in tau_s.items():
            col = self._col(k)
            if col is not None and v > 0:
                x.append((col, v))
        self._scale *= self._forget
        if self._scale < 1e-150:  # fold the forgetting into the sums before 1/scale overflows
            f = self._scale
            self._a = [[v * f for v in row] for row in self._a]
            self._b = [v * f for v in self._b]
            self._scale = 1.0
        w = 1.0 / self._scale  # new data, relative to the stored (unforgotten) sums
        a, b, seen = self._a, self._b, self._seen_s
        for i, xi in x:
            b[i] += w * xi * energy_j
            seen[i] += xi
            row = a[i]
            for j, xj in x:
                row[j] += w * xi * xj
        self._young += 1
        self._pending += 1

    def refresh(self, force: bool = False) -> None:
        """Re-fit if there is new data: at once with ``force``; at every update for ``warmup_updates`` after a
        class first appears (the fit moves fast then); otherwise every ``solve_every`` updates (a warm fit forgets
        slowly, so a few intervals barely move it)."""
        if not self._pending:
            return
        if force or self._grown or self._young <= self._warmup or self._pending >= self._solve_every:
            self._solve()

    def _solve(self) -> None:
        n, f, seen, old = len(self._b), self._scale, self._seen_s, self._theta
        known = [old[c] for c in range(1, n) if seen[c] > 0]
        mean = sum(known) / len(known) if known else 0.0
        prior = [old[0]] + [old[c] if seen[c] > 0 else mean for c in range(1, n)]  # unseen: the seen ones' mean
        a = [[v * f for v in row] for row in self._a]
        b = [v * f for v in self._b]
        for i in range(n):
            rho = self._ridge * a[i][i] + 1e-12  # scale-free: relative to each regressor's own data
            a[i][i] += rho
            b[i] += rho * prior[i]
        try:
            if self._quiet_s >= self._min_quiet_s:  # idle known from quiet time: fit the active part only
                idle = self._quiet_j / self._quiet_s
                theta = [idle]
                if n > 1:
                    theta += solve_linear([row[1:] for row in a[1:]], [b[i] - a[i][0] * idle for i in range(1, n)])
            else:
                theta = solve_linear(a, b)
        except np.linalg.LinAlgError:
            theta = prior
        self._theta = [v if v > 0.0 else 0.0 for v in theta]
        self._pending, self._grown = 0, False
        self._idle_w = self._theta[0]
        self._active_w = {k: self._theta[c] for k, c in self._index.items() if seen[c] > 0}
        self._mean_w = sum(self._active_w.values()) / len(self._active_w) if self._active_w else None

    def fitted(self) -> tuple[float, dict[str, float], float | None]:
        """(idle watts, active watts per class, mean active watts) as last fitted, refreshed at the cadence."""
        self.refresh()
        return self._idle_w, self._active_w, self._mean_w

    @property
    def idle_w(self) -> float:
        self.refresh(force=True)
        return self._idle_w

    def active_w(self, work_class: str) -> float | None:
        """Learned active watts of a class; the mean of the known classes for a new one; None with no data."""
        self.refresh(force=True)
        return self._active_w.get(work_class, self._mean_w)

    def snapshot(self) -> dict[str, float]:
        self.refresh(force=True)
        return {"idle_w": self._idle_w, **self._active_w}


# a live provisional figure weighs the learnt power as this many seconds of the tail: a short tail (a request
# right after a sampler read) is dominated by lumps such as the sampler's own work; a long one by what it measured.
# 0.1 s was best of 0-1 s in a simulated server timeline (provisional/final mean error 1.3 % against 2.6 % with no
# prior and 1.8 % from the model alone)
PROVISIONAL_PRIOR_S = 0.1
# a live provisional figure shares the tail with every open request; past this many (short requests at a high
# rate, ~0.3 us each) the power model's estimate of the tail is as good and cheaper
LIVE_SCAN_MAX = 32
ANY_CLASS = "*"  # the one work class of a device split by time (DeviceInfo.by_class False)


class Share(NamedTuple):
    """One request's energy on one device, joules; ``occupancy_s`` is its fair share of device time.
    (A NamedTuple: one is built per request and device on the sampler thread.)"""

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
    """A request being attributed. The metering facade subclasses it to carry the record's metadata.

    ``work_class`` may be None at :meth:`Attributor.begin`: it is then resolved by :meth:`default_work_class`
    on the sampler thread, off the request path.
    """

    __slots__ = ("request_id", "work_class", "devices", "start_s", "end_s", "acc", "expired")

    def __init__(self, request_id: str, work_class: str | None, devices: frozenset[str], start_s: float) -> None:
        self.request_id, self.work_class, self.devices, self.start_s = request_id, work_class, devices, start_s
        self.end_s: float | None = None
        self.acc: dict[str, list] | None = None  # device -> [active_j, idle_j, occupancy_s, degraded]; made lazily
        self.expired = False  # finalised from estimates because a meter went stale

    def default_work_class(self) -> str:
        return ""

    def finish(self, t_s: float) -> None:
        """Mark the request finished at ``t_s`` (idempotent; never before it started). A plain store, atomic under
        the GIL: the sampler thread sees the request either running or ended."""
        if self.end_s is None:
            self.end_s = t_s if t_s > self.start_s else self.start_s

    def resolved_class(self) -> str:
        wc = self.work_class
        if wc is None:
            wc = self.work_class = self.default_work_class()
        return wc

    def share(self, dev: str) -> Share:
        a = self.acc.get(dev) if self.acc else None
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
    if e0[1] <= e1[0]:  # the usual case, one request at a time: each instant has one runner, so no sweep
        spans.sort(key=lambda span: span[1])
        if all(spans[k][2] <= spans[k + 1][1] for k in range(len(spans) - 1)):
            found, busy = [], 0.0
            for req, a, b in spans:
                ov = _membership_integral(b, e0, e1) - _membership_integral(a, e0, e1)
                if ov > 0:
                    found.append((req, ov, ov))
                    busy += ov
            return found, busy
    return _sweep_events(spans, e0, e1)


def _membership_integral(t: float, e0: Edge, e1: Edge) -> float:
    """Integral of :func:`_membership` from the start of time to ``t``, for edges in order (``e0[1] <= e1[0]``):
    a quadratic on each ramp, linear in between."""
    p0, p1 = e0
    if t <= p0:
        return 0.0
    if t < p1:
        return (t - p0) ** 2 / (2.0 * (p1 - p0))
    area = 0.5 * (p1 - p0)
    q0, q1 = e1
    if t <= q0:
        return area + (t - p1)
    area += q0 - p1
    if t < q1:
        d = t - q0
        return area + d - d * d / (2.0 * (q1 - q0))
    return area + 0.5 * (q1 - q0)


def _sweep_events(spans: list[tuple[Request, float, float]], e0: Edge, e1: Edge) -> tuple[list[Overlap], float]:
    """The general case of :func:`sweep`: an event sweep over request starts and ends and the ramps' corners."""
    lo, hi = e0[0], e1[1]
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


def _overlap(req: Request, t0: float, t1: float) -> float:
    """Seconds of [t0, t1] during which ``req`` ran (one still running runs to t1)."""
    end_s = t1 if req.end_s is None else min(req.end_s, t1)
    return max(0.0, end_s - max(req.start_s, t0))


class Attributor:
    """Per-request energy on every device, from sampled intervals. Thread-safe.

    The request path (:meth:`begin`, :meth:`end`) takes no lock: each is one atomic dict or attribute operation
    under the GIL, so a request never waits for the sampler thread's splitting. Everything that reads the open
    requests works on a snapshot taken under ``_lock``.

    ``on_final(request, shares)`` is called (outside the lock, from the sampler thread) once every device of the
    request has covered it. ``time_share=True`` ignores the learned powers: the naive split, for comparison.
    """

    def __init__(self, devices: Iterable[DeviceInfo], on_final: Callable[[Request, dict[str, Share]], None],
                 *, stale_after_s: float = 2.0, time_share: bool = False,
                 model_factory: Callable[[], PowerModel] = PowerModel,
                 clock: Callable[[], float] | None = None, provisional_prior_s: float = PROVISIONAL_PRIOR_S) -> None:
        self._now = clock or time.perf_counter
        self.devices = {d.id: d for d in devices}
        self.all_devices = frozenset(self.devices)
        self.models = {d.id: model_factory() if d.constant_w is None else PowerModel(constant_w=d.constant_w)
                       for d in self.devices.values()}
        self.totals = {d: DeviceTotals() for d in self.devices}
        self._on_final = on_final
        self._stale_after_s = stale_after_s
        self._time_share = time_share
        self._prior_s = provisional_prior_s
        # devices whose active energy is split by time (DeviceInfo.by_class): their power model learns one class of
        # all requests, whose power is then the active watts of any request
        self._by_time = frozenset(d.id for d in self.devices.values() if not d.by_class)
        self._lock = threading.Lock()
        self._version = 0  # even when no split is under way (a sequence lock for provisional figures)
        # the power model learns only from intervals that start at or after this instant (metering clock). The service
        # sets it to +inf while it loads models, then to when loading ended (Metering.learning): that work is no
        # request's and not the idle draw either. Intervals are split and counted all the same
        self.learn_after_s = float("-inf")
        self._open: dict[Request, None] = {}  # keyed by the object itself: identity hash, no id string to hash
        # device -> its counter now, counted from the intervals' origin (Sampler.live_readers): for provisional
        # figures of devices whose meter is cheap to read from any thread
        self.live: dict[str, Callable[[], float | None]] = {}

    # -- request path: no lock; no meter reads but a live meter's, for a provisional figure -----------------------
    def begin(self, req: Request, check_id: bool = True) -> None:
        """Start attributing ``req``. ``check_id=False`` skips the scan for an open request with the same id (for
        callers whose ids are unique by construction, such as the metering facade's generated ones)."""
        if check_id and self.get_open(req.request_id) is not None:
            raise ValueError(f"request {req.request_id!r} is already being metered")
        self._open[req] = None  # one atomic store under the GIL

    def end(self, req: Request, t_s: float) -> None:
        """Mark the request finished (idempotent). Its final shares follow from the sampler thread."""
        req.finish(t_s)

    def provisional(self, req: Request) -> dict[str, Share]:
        """The request's shares so far: the covered part measured, the rest estimated from the power model.

        Lock-free on the request path (it must not wait out a sampler sweep): the sampler makes ``_version`` odd
        while it splits intervals, so a figure computed meanwhile is recomputed; after a few tries, the lock."""
        for _ in range(3):
            version = self._version
            if version % 2 == 0:
                shares = self._provisional_shares(req)
                if self._version == version:
                    return shares
        with self._lock:
            return self._provisional_shares(req)

    def _provisional_shares(self, req: Request) -> dict[str, Share]:
        open_requests = list(self._open)
        running = sum(1 for r in open_requests if r.end_s is None)
        concurrency = max(1, running + (1 if req.end_s is not None else 0))
        live = self.live if len(open_requests) <= LIVE_SCAN_MAX else {}
        return {d: self._provisional(req, d, concurrency) if d not in live
                else self._provisional_live(req, d, live[d], open_requests, concurrency) for d in req.devices}

    def get_open(self, request_id: str) -> Request | None:
        """The open request with this id (a scan: for lookups, not for the request path)."""
        return next((r for r in list(self._open) if r.request_id == request_id), None)

    def cancel(self, req: Request) -> None:
        """Forget a request that never ran (e.g. its client left while it was queued). Energy it was already
        given stays in the ledger, as unattributed idle: nothing measured is lost."""
        with self._lock:
            if req not in self._open:
                return
            del self._open[req]
            for dev, (active, idle, _, _) in (req.acc or {}).items():
                tot = self.totals[dev]
                tot.attributed_active_j -= active
                tot.attributed_idle_j -= idle
                tot.unattributed_idle_j += active + idle
            req.acc = None

    def _provisional_live(self, req: Request, dev: str, read: Callable[[], float | None],
                          open_requests: list[Request], concurrency: int) -> Share:
        """The tail since the device's last closing edge read off its live counter (:attr:`Meter.live`): measured as
        the final figure will be, and split as the sampler will split it. Above the fitted idle draw it is shared by
        the requests' time in the tail (devices split by time), or by their classes' learnt power; the idle draw by
        time, concurrent requests sharing it."""
        tot = self.totals[dev]
        edge = tot.last_edge
        energy_j = read() if edge is not None else None
        if energy_j is None:
            return self._provisional(req, dev, concurrency)
        measured_j = tot.measured_j  # read after the counter: the sequence lock rejects a split that came between
        now = self._now()
        t0 = 0.5 * (edge[0] + edge[1])
        dt = now - t0
        mine = _overlap(req, t0, now)
        share = req.share(dev)
        if dt <= 0 or mine <= 0:
            return share
        tail_j = max(0.0, energy_j - measured_j)
        idle_w, known_w, mean_w = self.models[dev].fitted()
        idle_j = min(tail_j, idle_w * dt)
        by_time = dev in self._by_time or self._time_share

        def power_w(r: Request) -> float | None:
            return known_w.get(ANY_CLASS if by_time else r.resolved_class(), mean_w)

        # each request's expected active joules in the tail (its time x its class's power); all by time alone when
        # no power is learnt yet
        others = [(r, _overlap(r, t0, now)) for r in open_requests if r is not req and dev in r.devices]
        mine_p = power_w(req)
        if mine_p is None or any(power_w(r) is None for r, _ in others):
            mine_w, total_w, prior_j = mine, mine + sum(ov for _, ov in others), 0.0
        else:
            mine_w = mine * mine_p
            total_w = mine_w + sum(ov * (power_w(r) or 0.0) for r, ov in others)
            prior_j = self._prior_s * (mean_w or mine_p)
        if total_w <= 0:
            return share
        occupancy_s = mine / concurrency
        return Share(share.active_j + mine_w * (tail_j - idle_j + prior_j) / (total_w + prior_j),
                     share.idle_j + idle_j * occupancy_s / dt, share.occupancy_s + occupancy_s, share.estimated_j,
                     share.degraded)

    def _provisional(self, req: Request, dev: str, concurrency: int) -> Share:
        tot = self.totals[dev]
        edge = tot.last_edge
        tail_start = req.start_s if edge is None else max(req.start_s, 0.5 * (edge[0] + edge[1]))
        end_s = req.end_s if req.end_s is not None else max(tail_start, self._now())
        tail_s = max(0.0, end_s - tail_start)
        share = req.share(dev)
        if tail_s <= 0:
            return share
        idle_w, known_w, mean_w = self.models[dev].fitted()  # no forced re-fit: this is on the request path
        active_w = known_w.get(ANY_CLASS if dev in self._by_time else req.resolved_class(), mean_w)
        if active_w is None:  # cold start: the device's recent draw above idle
            active_w = max(0.0, tot.last_power_w - idle_w)
        idle_w /= concurrency
        est = (active_w + idle_w) * tail_s
        return Share(share.active_j + active_w * tail_s, share.idle_j + idle_w * tail_s,
                     share.occupancy_s + tail_s / concurrency, est, share.degraded)

    # -- sampler path ------------------------------------------------------------------------------------
    def on_interval(self, dev: str, e0: Edge, e1: Edge, energy_j: float, degraded: bool = False) -> None:
        """Split one measured interval of device ``dev`` (edges known to within ``e0``, ``e1``)."""
        self.on_intervals([(dev, e0, e1, energy_j, degraded)])

    def on_intervals(self, intervals: list[Interval]) -> None:
        """Split the intervals of one meter read. Devices read together share edges, so who ran when (the sweep)
        is worked out once for all of them."""
        with self._lock:
            self._version += 1  # odd: shares and edges are changing (see provisional)
            try:
                finals = self._split_all(intervals)
            finally:
                self._version += 1
        for req, shares in finals:
            self._on_final(req, shares)

    def _split_all(self, intervals: list[Interval]) -> list[tuple[Request, dict[str, Share]]]:
        requests = list(self._open)  # a snapshot: begin() may add to the dict meanwhile
        for req in requests:
            req.resolved_class()
        sweeps: dict[tuple[Edge, Edge], list[Overlap]] = {}
        for dev, e0, e1, energy_j, degraded in intervals:
            overlaps = sweeps.get((e0, e1))
            if overlaps is None:
                overlaps = sweeps[(e0, e1)] = sweep(requests, e0, e1)[0]
            self._split(dev, e0, e1, max(0.0, energy_j), degraded, overlaps)
        return self._collect_finals(requests)

    def _split(self, dev: str, e0: Edge, e1: Edge, energy_j: float, degraded: bool,
               all_overlaps: list[Overlap]) -> None:
        tot = self.totals[dev]
        tot.measured_j += energy_j
        tot.intervals += 1
        tot.degraded_intervals += degraded
        dt = 0.5 * (e1[0] + e1[1]) - 0.5 * (e0[0] + e0[1])
        if dt <= 0:
            tot.unattributed_idle_j += energy_j
            tot.last_edge = e1
            return
        tot.last_power_w = energy_j / dt
        model = self.models[dev]
        overlaps = [o for o in all_overlaps if dev in o[0].devices]
        by_time = dev in self._by_time
        if not degraded and e0[0] >= self.learn_after_s:
            tau: dict[str, float] = {}
            for req, ov, _ in overlaps:
                wc = ANY_CLASS if by_time else req.work_class
                tau[wc] = tau.get(wc, 0.0) + ov
            model.update(dt, tau, energy_j, quiet=not overlaps)
        if not overlaps:
            tot.unattributed_idle_j += energy_j
            tot.last_edge = e1
            return
        idle_w, active_w, mean_w = model.fitted()
        idle_j = min(energy_j, idle_w * dt)
        pool_j = energy_j - idle_j
        if self._time_share or by_time:
            weights = [ov for _, ov, _ in overlaps]
        else:
            weights = [ov * (active_w.get(req.work_class, mean_w) or 0.0) for req, ov, _ in overlaps]
            if sum(weights) <= 0:
                weights = [ov for _, ov, _ in overlaps]
        w_sum = sum(weights)
        shared = 0.0
        for (req, _, occ), w in zip(overlaps, weights, strict=False):
            active = pool_j * w / w_sum
            idle = idle_j * occ / dt
            shared += active + idle
            if req.expired or req not in self._open:  # already final from estimates, or cancelled
                tot.unattributed_idle_j += active + idle
                continue
            tot.attributed_active_j += active
            tot.attributed_idle_j += idle
            accs = req.acc
            if accs is None:
                accs = req.acc = {}
            acc = accs.get(dev)
            if acc is None:
                accs[dev] = [active, idle, occ, degraded]
            else:
                acc[0] += active
                acc[1] += idle
                acc[2] += occ
                acc[3] = acc[3] or degraded
        # the idle draw of the moments when nothing ran: a remainder, so the ledger balances exactly
        tot.unattributed_idle_j += energy_j - shared
        tot.last_edge = e1  # last: a provisional figure read meanwhile never counts this interval twice

    def _collect_finals(self, requests: list[Request]) -> list[tuple[Request, dict[str, Share]]]:
        finals = []
        covered = {d: (t.covered_until_s if t.covered_until_s is not None else float("-inf"))
                   for d, t in self.totals.items()}
        all_covered = min(covered.values(), default=float("-inf"))
        for req in requests:
            end_s = req.end_s
            if end_s is None:
                continue
            if end_s <= all_covered or all(covered[d] >= end_s for d in req.devices):
                if req not in self._open:
                    continue  # cancelled meanwhile
                del self._open[req]
                if not req.expired:
                    finals.append((req, {d: req.share(d) for d in req.devices}))
        return finals

    def expire(self, now_s: float) -> None:
        """Finalise requests that a stale meter cannot cover, filling the gap from the power model."""
        finals = []
        with self._lock:
            for req in list(self._open):
                if req.expired or req.end_s is None or now_s - req.end_s < self._stale_after_s:
                    continue
                shares = {}
                for d in req.devices:
                    covered = self.totals[d].covered_until_s
                    if covered is not None and covered >= req.end_s:
                        shares[d] = req.share(d)
                    else:
                        shares[d] = self._provisional(req, d, 1)._replace(degraded=True)
                req.expired = True
                finals.append((req, shares))
        for req, shares in finals:
            self._on_final(req, shares)

    def open_count(self) -> int:
        return len(self._open)
