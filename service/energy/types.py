"""Vocabulary shared by every layer of the metering core.

All energies are joules, all durations seconds, all powers watts. Conversion from a backend's own units
(NVML millijoules, RAPL microjoules) happens once, inside that backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

Edge = tuple[float, float]  # when a counter changed: somewhere in [lo, hi] seconds, uniformly
Interval = tuple[str, Edge, Edge, float, bool]  # device id, first edge, last edge, joules, degraded


class Component(StrEnum):
    """What a device's energy is reported as."""

    GPU = "gpu"
    CPU = "cpu"
    RAM = "ram"


class Method(StrEnum):
    """How a figure was obtained. ``mixed`` only ever describes an aggregate of several devices; ``none`` one of
    no device at all (no meter works here: its zero joules are not a figure)."""

    MEASURED = "measured"
    ESTIMATED = "estimated"
    MIXED = "mixed"
    NONE = "none"

    @classmethod
    def combine(cls, methods: list[Method] | tuple[Method, ...] | set[Method]) -> Method:
        """One method for several figures: ``mixed`` when measured and estimated figures meet; ``none`` (no figure)
        gives way to any other."""
        kinds = set(methods) - {cls.NONE}
        if len(kinds) == 1:
            return kinds.pop()
        return cls.MIXED if kinds else cls.NONE


class Status(StrEnum):
    PROVISIONAL = "provisional"
    FINAL = "final"


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """One energy-metered device.

    ``tick_s`` is how often the device's cumulative counter advances (0 for a continuous counter,
    such as an estimate computed from CPU time). ``sample_period_s`` is how often the sampler should
    read it: a fraction of the tick, so the moment a tick happened is known to within that period.
    ``constant_w`` is set when the device's draw is known not to depend on what runs (an estimate such as
    CodeCarbon's RAM model): its energy is then all baseline, and nothing is learned for it.
    ``by_class`` says that requests of different work classes may draw differently on the device, so its active
    energy is split by each class's learned power. False splits it by time alone: for an estimate from CPU time,
    every class draws W per thread x threads busy, and learned differences between classes would be noise.
    """

    id: str
    component: Component
    method: Method
    name: str
    tick_s: float
    sample_period_s: float
    constant_w: float | None = None
    by_class: bool = True


class MeterError(RuntimeError):
    """A meter could not be read or set up. The message says what to do about it."""
