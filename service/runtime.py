"""Model execution: loads the registry's models, runs one inference at a time per device off the event loop,
bounds each model's queue, and wraps every inference in the metering core (the model code never meters itself)."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from service.energy import EnergyRecord, Metering
from service.energy.types import Component
from service.problems import ClientGone, NotReady, Overloaded, Timeout
from service.registry import ModelSpec, Registry
from service.settings import Settings
from service.tasks import TASKS, Runner, TaskSpec

log = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    """``auto`` is ``cuda:0`` or ``cpu`` (the registry already gives every other device one spelling)."""
    if device != "auto":
        return device
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


@dataclass
class ServedModel:
    spec: ModelSpec
    task: TaskSpec
    device: str
    meter_devices: tuple[str, ...] | None = None  # metering device ids this model's requests are charged on
    runner: Runner | None = None
    error: str | None = None
    pending: int = 0  # waiting or running
    created: int = field(default_factory=lambda: int(time.time()))  # Unix time registered here (OpenAI's field)

    @property
    def state(self) -> str:
        return "ready" if self.runner else "failed" if self.error else "loading"


@dataclass
class Outcome:
    body: dict[str, Any]
    request_id: str | None
    record: EnergyRecord | None
    queue_s: float
    inference_s: float
    tokens_in: int
    tokens_out: int


class _Skipped(Exception):
    """The client left before its request started: nothing ran, nothing is metered."""


class DeviceWorker:
    """One thread that runs a device's jobs in order, handing each result straight to an asyncio future.

    What ``loop.run_in_executor`` on a one-thread pool does, without its concurrent future and the chaining
    between the two futures: 22 instead of 51 us of event-loop time per job (measured here)."""

    def __init__(self, name: str) -> None:
        self.pending = 0  # jobs submitted and not yet settled (read and written on the event loop only)
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], Any]) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending += 1
        self._jobs.put((loop, future, job))
        return future

    def _run(self) -> None:
        while (item := self._jobs.get()) is not None:
            loop, future, job = item
            try:
                result, error = job(), None
            except BaseException as exc:  # noqa: BLE001 - handed to whoever awaits the future
                result, error = None, exc
            try:
                loop.call_soon_threadsafe(self._settle, future, result, error)
            except RuntimeError:  # the event loop is closed: nobody is waiting any more
                pass

    def _settle(self, future: asyncio.Future, result: Any, error: BaseException | None) -> None:
        self.pending -= 1
        if future.done():
            return
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
            future.exception()  # a job whose client left or timed out finishes unawaited: its error counts as seen

    def shutdown(self) -> None:
        """Finish the jobs already queued, then stop."""
        self._jobs.put(None)
        self._thread.join()


class Runtime:
    def __init__(self, settings: Settings, registry: Registry, metering: Metering | None) -> None:
        self.settings, self.metering = settings, metering
        self.models: dict[str, ServedModel] = {}
        for spec in registry.models:
            device = resolve_device(spec.device)
            served = self.models[spec.name] = ServedModel(spec, TASKS[spec.task], device, self._meter_devices(device))
            if self.metering is not None:
                self.metering.charge_on(served.meter_devices)
        self._workers: dict[str, DeviceWorker] = {}
        self._closing = False

    def _meter_devices(self, device: str) -> tuple[str, ...] | None:
        """A request on cuda:N is charged on that GPU plus the host's CPU and RAM; a CPU request on the host only."""
        if self.metering is None:
            return None
        host = [d.id for d in self.metering.devices.values() if d.component is not Component.GPU]
        if device.startswith("cuda"):
            index = device.split(":")[1] if ":" in device else "0"
            return (f"gpu{index}", *host)
        return tuple(host)

    def worker(self, device: str) -> DeviceWorker:
        # one thread per device: one inference at a time, the paper's protocol and the cleanest attribution
        if device not in self._workers:
            self._workers[device] = DeviceWorker(f"infer-{device}")
        return self._workers[device]

    def load_all(self) -> None:
        """Load every model in registry order, one at a time; stops early once :meth:`shutdown` has begun."""
        for served in self.models.values():
            if self._closing:
                break
            started = time.perf_counter()
            try:
                served.runner = served.task.load(served.spec, served.device)
                log.info("loaded %s (%s) on %s in %.1f s", served.spec.name, served.spec.task, served.device,
                         time.perf_counter() - started)
            except Exception as exc:  # noqa: BLE001 - one bad model must not stop the others
                served.error = f"{type(exc).__name__}: {exc}"
                log.error("model %s failed to load: %s", served.spec.name, served.error)

    def load(self, then: Callable[[], None] | None = None) -> None:
        """:meth:`load_all`, then ``then()`` (the service freezes the heap), with the metering's power model not
        learning meanwhile: that work is neither a request nor the idle draw (see ``Metering.learning``)."""
        if self.metering is not None:
            self.metering.learning(False)
        try:
            self.load_all()
            if then is not None and not self._closing:
                then()
        finally:
            if self.metering is not None:
                self.metering.learning(True)

    def load_in_background(self, then: Callable[[], None] | None = None) -> threading.Thread:
        """:meth:`load` in a daemon thread: the server answers ``/healthz`` (and says which model is still
        ``loading``) while models load. Shutdown does not wait for a model half loaded."""
        thread = threading.Thread(target=self.load, args=(then,), name="wattserve-load", daemon=True)
        thread.start()
        return thread

    @property
    def loading(self) -> bool:
        return any(m.state == "loading" for m in self.models.values())

    async def infer(self, served: ServedModel, request: BaseModel,
                    on_text: Callable[[str], None] | None = None,
                    disconnected: Callable[[], Awaitable[None]] | None = None,
                    on_start: Callable[[str | None], None] | None = None) -> Outcome:
        """Run one request. ``on_text`` (streaming generation) is called from the inference thread, and so is
        ``on_start``, with the request id, once the input is accepted and the model starts on it.
        ``disconnected`` returns when the client goes away: a request that has to wait for its device is then
        dropped unrun, at no cost. (One that starts at once is not watched: if it runs, it finishes and its energy
        is recorded anyway, and the watch would cost every request two more tasks on the event loop.)"""
        if served.runner is None:  # still loading (try again shortly), or failed to load
            raise NotReady(f"model {served.spec.name!r} is {served.state}" + (f": {served.error}" if served.error
                                                                              else ""), model=served.spec.name,
                           headers={"Retry-After": "5"} if served.error is None else None)
        if served.pending >= self.settings.queue_size:
            raise Overloaded(f"model {served.spec.name!r} has {served.pending} requests waiting or running (the limit)",
                             headers={"Retry-After": "1"}, limit=self.settings.queue_size)
        served.pending += 1
        arrival = time.perf_counter()
        cancelled = began = tokenised = False
        ticket = None
        # the job starting and the caller giving up (timeout, client gone) exclude each other: a 504 says truly
        # whether its request runs, and names the record of one that does
        gate = threading.Lock()

        def job() -> Outcome:
            nonlocal ticket, began, tokenised
            with gate:
                if cancelled:
                    raise _Skipped
                began = True
                started = time.perf_counter()
                if self.metering is not None:  # tokenising is the request's work too: the window opens before it
                    ticket = self.metering.begin(served.spec.name, served.spec.task, devices=served.meter_devices,
                                                 queue_s=started - arrival)
            try:
                prepared = served.runner.prepare(request)
            except BaseException:  # refused after tokenising (too long, ...): no inference ran, so no record
                if ticket is not None:  # (records count inferences); what tokenising cost stays in the device
                    self.metering.cancel(ticket)  # ledger as idle, so nothing measured is lost
                raise
            prepared.on_text = on_text
            tokenised = True
            if ticket is not None:
                ticket.input_known(prepared.tokens_in)
            if on_start is not None:
                on_start(ticket.request_id if ticket is not None else None)
            try:
                body, tokens_out = served.runner.run(prepared)
            except BaseException:
                if ticket is not None:  # energy already spent is recorded even if inference failed
                    self.metering.end(ticket, 0)
                raise
            if ticket is not None:  # tokens first: the final record may be built the moment it ends
                self.metering.end(ticket, tokens_out)
            done = time.perf_counter()
            record = self.metering.result(ticket) if ticket is not None else None
            return Outcome(body, ticket.request_id if ticket else None, record, started - arrival, done - started,
                           prepared.tokens_in, tokens_out)

        worker = self.worker(served.device)
        queued = worker.pending > 0  # another request holds the device: this one waits
        future = worker.submit(job)
        watch = asyncio.ensure_future(disconnected()) if queued and disconnected is not None else None
        try:
            async with asyncio.timeout(self.settings.request_timeout_s):
                if watch is None:
                    return await asyncio.shield(future)
                await asyncio.wait((future, watch), return_when=asyncio.FIRST_COMPLETED)
                if not future.done():  # the client left: if it was still queued, it never runs
                    with gate:
                        cancelled = True
                    raise ClientGone("the client left; its request runs to the end, and its energy is recorded"
                                     if began else "the client left while its request waited for the device")
                return future.result()
        except TimeoutError:
            with gate:
                cancelled = True
            limit = self.settings.request_timeout_s
            if not began:  # still waiting for the device: it never runs, and costs nothing
                raise Timeout(f"no result within {limit} s; it was still waiting for the device and will not run",
                              limit=limit) from None
            if ticket is None:
                raise Timeout(f"no result within {limit} s; it runs to the end", limit=limit) from None
            if not tokenised:  # its input may yet be refused (too long): then it runs no inference and has no record
                raise Timeout(f"no result within {limit} s, while its input was being read: if that is accepted, "
                              "it runs to the end and its energy is recorded under its X-Request-Id", limit=limit,
                              headers={"X-Request-Id": ticket.request_id}) from None
            raise Timeout(f"no result within {limit} s; it runs to the end, and its energy is recorded under its "
                          "X-Request-Id", limit=limit, headers={"X-Request-Id": ticket.request_id}) from None
        except asyncio.CancelledError:
            cancelled = True  # the client went away: if it was still queued, it never runs
            raise
        finally:
            served.pending -= 1
            if watch is not None:
                watch.cancel()

    def shutdown(self) -> None:
        self._closing = True
        for worker in self._workers.values():
            worker.shutdown()  # in-flight requests finish, so their energy is recorded
