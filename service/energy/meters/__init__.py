"""Energy meters: one backend per module behind :class:`~service.energy.meters.base.Meter`."""

from service.energy.meters.base import Meter, NullMeter

__all__ = ["Meter", "NullMeter"]
