"""The one interface every energy meter implements, and the null meter used when there is nothing to read."""

from __future__ import annotations

from abc import ABC, abstractmethod

from service.energy.types import DeviceInfo


class Meter(ABC):
    """A set of devices whose cumulative energy counters can be read together.

    ``read()`` returns one cumulative energy in joules per device, in the order of ``devices``. Counters
    are monotonic (backends unwrap hardware wrap-around); their origin is arbitrary. A failed read raises
    :class:`~service.energy.types.MeterError`. ``read()`` may be slow (an NVML energy read blocks ~4 ms):
    only the sampler thread calls it, never a request's path.
    """

    devices: tuple[DeviceInfo, ...] = ()
    #: True when ``read()`` takes microseconds and is safe from any thread (an estimate from CPU time): a request's
    #: provisional figure then reads the counter at response time, so the part since the last sampled edge is read
    #: rather than predicted by the power model
    live: bool = False

    @abstractmethod
    def read(self) -> list[float]:
        """Cumulative joules per device, in the order of ``devices``."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release handles. Safe to call twice."""


class NullMeter(Meter):
    """No devices: stands in for hardware that is absent, so callers never branch on ``if gpu:``."""

    def __init__(self, reason: str = "no meter available") -> None:
        self.reason = reason
        self.devices = ()

    def read(self) -> list[float]:
        return []
