"""The metering facade: meters -> sampler -> attributor -> one frozen record per request.

One :class:`Metering` per process. The request path calls :meth:`begin` and :meth:`end` (a few microseconds,
no meter reads); :meth:`result` gives the best figure at response time (*provisional* until the timeline covers
the request). The *final* record follows from the sampler thread once every device's timeline covers the
request, lands in a bounded store (:meth:`record`) and goes to subscribers.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from types import MappingProxyType

from service.energy.attribution import Attributor, DeviceTotals, Request, Share
from service.energy.carbon import CarbonModel, ConstantIntensity
from service.energy.meters.base import Meter
from service.energy.record import Accounting, ComponentEnergy, EnergyRecord
from service.energy.sampler import Sampler
from service.energy.types import Component, DeviceInfo, Method, Status

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=4096)  # called once per request, on the sampler thread: a lookup, not a format
def work_class(model: str, task: str, tokens: int = 0) -> str:
    """Power-model class of a request: model, task and a power-of-two bucket of its token count."""
    bucket = 1 << max(0, math.ceil(math.log2(tokens))) if tokens > 0 else 0
    return f"{model}|{task}|{bucket}"


class Ticket(Request):
    """A request being metered, with what its record needs besides energy."""

    __slots__ = ("model", "task", "device_order", "queue_s", "tokens_in", "tokens_out", "_clock", "_rid", "_seq",
                 "_key")

    def __init__(self, request_id: str | None, model: str, task: str, work_class_: str | None,
                 devices: tuple[str, ...], device_set: frozenset[str], clock: Callable[[], float], queue_s: float,
                 tokens_in: int, seq: int = 0, key: bytes = b"") -> None:
        # every slot set here, the base's too: one call on the request path, no super() chain
        self.start_s = clock()
        self._rid, self._seq, self._key = request_id, seq, key
        self.work_class, self.devices, self._clock = work_class_, device_set, clock
        self.end_s, self.acc, self.expired = None, None, False
        self.model, self.task, self.device_order = model, task, devices
        self.queue_s, self.tokens_in, self.tokens_out = queue_s, tokens_in, 0

    @property
    def request_id(self) -> str:  # type: ignore[override]
        """The given id, or 20 hex digits made when first asked for: the request's sequence number hashed with the
        process's secret key. Unique, and not enumerable: with API keys, one client cannot walk through the ids
        (and so the records) of the others, as it could when ids were a process prefix and a counter (~1 us)."""
        rid = self._rid
        if rid is None:
            rid = self._rid = hashlib.blake2b(self._seq.to_bytes(8, "little"), key=self._key,
                                              digest_size=10).hexdigest()
        return rid

    def default_work_class(self) -> str:
        return work_class(self.model, self.task, self.tokens_in)

    def input_known(self, tokens_in: int) -> None:
        """The request's input is tokenised (inside its window: the service begins metering before it): set its
        count, and let the sampler work its derived class out again (it may have resolved one from no tokens
        meanwhile). For tickets begun without an explicit ``work_class_``."""
        self.tokens_in = tokens_in
        if self.work_class is not None and self.work_class != self.default_work_class():
            self.work_class = None

    # a context manager itself (no generator-based wrapper: this sits on every request's path)
    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.finish(self._clock())


class Metering:
    def __init__(self, meters: Iterable[Meter], carbon: CarbonModel | None = None, *,
                 accounting: Accounting = Accounting.LOADED, store_size: int = 10_000,
                 clock: Callable[[], float] = time.perf_counter, wall: Callable[[], float] = time.time,
                 stale_after_s: float | None = None, time_share: bool = False,
                 meter_notes: dict[str, str] | None = None) -> None:
        self._clock, self._wall = clock, wall
        self.carbon = carbon or CarbonModel(ConstantIntensity(475.0, "world average (CodeCarbon's default)"))
        self.accounting = Accounting(accounting)
        self.meters = [m for m in meters if m.devices]
        devices = [d for m in self.meters for d in m.devices]
        if stale_after_s is None:
            stale_after_s = max([2.0] + [20 * d.tick_s for d in devices])
        self.attributor = Attributor(devices, self._finalise, stale_after_s=stale_after_s, time_share=time_share,
                                     clock=clock)
        self.sampler = Sampler(self.meters, self.attributor.on_intervals, clock=clock, on_tick=self._on_tick)
        self.attributor.live = self.sampler.live_readers()
        self.devices: dict[str, DeviceInfo] = {d.id: d for d in devices}
        self._device_ids = tuple(self.devices)
        self._device_sets: dict[tuple[str, ...], tuple[tuple[str, ...], frozenset[str]]] = {}
        # Unix time = metering clock + offset; refreshed on every sampler wake-up, so the request path reads
        # one clock, not two
        self._wall_offset_s = wall() - clock()
        self._id_key = secrets.token_bytes(32)  # per process: ids of two processes never meet either
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._store: OrderedDict[str, EnergyRecord] = OrderedDict()
        self._store_size = store_size
        self._subscribers: list[Callable[[EnergyRecord], None]] = []
        self.meter_notes = dict(meter_notes or {})  # backend -> why it is used or not (from whoever picked meters)

    # -- lifecycle ----------------------------------------------------------------------------------------
    def start(self) -> None:
        self.sampler.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop sampling after waiting (up to ``timeout_s``) for open requests to get their final figures."""
        deadline = self._clock() + timeout_s
        while self.attributor.open_count() and self._clock() < deadline:
            time.sleep(0.02)
        self.sampler.stop()
        for meter in self.meters:
            meter.close()

    def charge_on(self, devices: Iterable[str]) -> None:
        """Declare devices that requests may be charged on (the service: each model's devices). A ticking counter
        of a device nobody declared is read once a second (``Sampler.sparse_read_s``): no request ever needs its
        edges, and each NVML read keeps a core busy ~2.7 ms. Until the first call, every device counts."""
        self.sampler.charge(devices)

    def learning(self, on: bool) -> None:
        """Pause (False) or resume the power model's learning. The service pauses it while models load (and the heap
        is frozen after): that keeps a core busy for seconds, and learnt as the idle draw it put the first requests'
        CPU energy all in idle (seen: active CPU energy 0 in final records minutes after start; with the pause, the
        first requests' finals are active and within ~10 % of their provisional figures). The energy is still
        counted, as unattributed idle. Resuming learns only from intervals that start after now: the interval under
        way still holds the paused work."""
        self.attributor.learn_after_s = self._clock() if on else float("inf")

    def subscribe(self, callback: Callable[[EnergyRecord], None]) -> None:
        """Call ``callback(record)`` for every final record (from the sampler thread: keep it short)."""
        self._subscribers.append(callback)

    # -- request path -------------------------------------------------------------------------------------
    def begin(self, model: str, task: str, *, request_id: str | None = None, tokens_in: int = 0,
              work_class_: str | None = None, devices: Iterable[str] | None = None, queue_s: float = 0.0) -> Ticket:
        """Start metering a request. The work class defaults to :func:`work_class` (model, task, token bucket),
        worked out later on the sampler thread. The token count may come later (:meth:`Ticket.input_known`)."""
        if devices is None:
            devs, dev_set = self._device_ids, self.attributor.all_devices
        else:
            devs_key = devices if isinstance(devices, tuple) else tuple(devices)
            known = self._device_sets.get(devs_key)
            if known is None:
                devs = tuple(d for d in devs_key if d in self.devices)
                known = self._device_sets.setdefault(devs_key, (devs, frozenset(devs)))
            devs, dev_set = known
        ticket = Ticket(request_id, model, task, work_class_, devs, dev_set, self._clock, queue_s, tokens_in,
                        next(self._ids), self._id_key)
        self.attributor.begin(ticket, check_id=request_id is not None)  # generated ids are unique
        return ticket

    #: ``with metering.track(...) as ticket:`` begins the request; leaving the block ends it (set
    #: ``ticket.tokens_out`` inside the block). The same call as :meth:`begin`: no extra frame on the request path.
    track = begin

    def end(self, ticket: Ticket, tokens_out: int = 0) -> None:
        """Mark the request finished: a timestamp and a counter, nothing more on the request path."""
        ticket.tokens_out = tokens_out
        ticket.finish(self._clock())

    def result(self, ticket: Ticket) -> EnergyRecord:
        """The best figure now: the final record if the timeline already covers the request, else a provisional
        one (measured part + model estimate of the tail), computed on demand."""
        with self._lock:
            final = self._store.get(ticket.request_id)
        if final is not None:
            return final
        return self._build(ticket, self.attributor.provisional(ticket), Status.PROVISIONAL)

    def cancel(self, ticket: Ticket) -> None:
        """Drop a request that did not run: it costs nothing and is never reported."""
        self.attributor.cancel(ticket)

    # -- results ------------------------------------------------------------------------------------------
    def record(self, request_id: str) -> EnergyRecord | None:
        """Record of a recent request: final when known, provisional while it is still being attributed."""
        with self._lock:
            final = self._store.get(request_id)
        if final is not None:
            return final
        ticket = self.attributor.get_open(request_id)
        return self.result(ticket) if isinstance(ticket, Ticket) and not ticket.expired else None

    def clock(self) -> float:
        """Now on the metering clock (the one edges and ``covered_until_s`` are on)."""
        return self._clock()

    def totals(self) -> dict[str, DeviceTotals]:
        return self.attributor.totals

    def _on_tick(self, now_s: float) -> None:
        self._wall_offset_s = self._wall() - self._clock()
        self.attributor.expire(now_s)

    def _put(self, record: EnergyRecord) -> None:
        self._store[record.request_id] = record  # ids are unique: a new key lands at the end
        if len(self._store) > self._store_size:
            self._store.popitem(last=False)

    def _finalise(self, ticket: Request, shares: dict[str, Share]) -> None:
        assert isinstance(ticket, Ticket)
        record = self._build(ticket, shares, Status.FINAL)
        with self._lock:
            self._put(record)
        for callback in self._subscribers:
            try:
                callback(record)
            except Exception:  # noqa: BLE001 - a subscriber must not stop finalisation
                log.exception("energy record subscriber failed")

    def _build(self, ticket: Ticket, shares: dict[str, Share], status: Status) -> EnergyRecord:
        """The record of a request from its shares: one per request, on the sampler thread, so kept lean."""
        final = status is Status.FINAL
        loaded = self.accounting is Accounting.LOADED
        components: dict[Component, ComponentEnergy] = {}
        energy_j = 0.0
        for dev_id, (active, idle, _, estimated, degraded) in shares.items():
            info = self.devices[dev_id]
            component, method = info.component, info.method
            if degraded or (final and estimated > 0):
                method = Method.ESTIMATED
            energy_j += active + idle if loaded else active
            prev = components.get(component)
            if prev is not None:  # several devices of one kind (GPUs): add up; measured + estimated is mixed
                active, idle = prev.active_j + active, prev.idle_j + idle
                method = prev.method if prev.method is method else Method.MIXED
            components[component] = ComponentEnergy(active, idle, method)
        device_time_s = shares[ticket.device_order[0]].occupancy_s if ticket.device_order else 0.0
        end_s = ticket.end_s if ticket.end_s is not None else ticket.start_s
        started_at_s = ticket.start_s + self._wall_offset_s
        return EnergyRecord(
            ticket.request_id, ticket.model, ticket.task, ticket.resolved_class(), status, self.accounting,
            started_at_s, ticket.queue_s, end_s - ticket.start_s, device_time_s,
            ticket.tokens_in, ticket.tokens_out, MappingProxyType(components),
            self.carbon.assess(energy_j, started_at_s, device_time_s))
