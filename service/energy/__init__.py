"""The metering core: hardware meters -> sampler -> attribution -> one frozen record per request.

Importable with only numpy and the standard library (nvidia-ml-py and codecarbon are imported by the backends
that need them), so it runs on a bare GPU host.
"""

from service.energy.attribution import Attributor, DeviceTotals, PowerModel, Share
from service.energy.carbon import CarbonModel, ConstantIntensity, Embodied, TimeSeriesIntensity, codecarbon_intensity
from service.energy.metering import Metering, Ticket, work_class
from service.energy.record import Accounting, ComponentEnergy, EnergyRecord
from service.energy.types import Component, DeviceInfo, MeterError, Method, Status

__all__ = [
    "Accounting", "Attributor", "CarbonModel", "Component", "ComponentEnergy", "ConstantIntensity", "DeviceInfo",
    "DeviceTotals", "Embodied", "EnergyRecord", "MeterError", "Metering", "Method", "PowerModel", "Share", "Status",
    "Ticket", "TimeSeriesIntensity", "codecarbon_intensity", "work_class",
]
