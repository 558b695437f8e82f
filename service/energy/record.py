"""The one frozen per-request energy record: the single source for headers, metrics, logs and results."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Any, NamedTuple

from service.energy.carbon import Carbon
from service.energy.types import Component, Method, Status


class Accounting(StrEnum):
    """Which figure ``energy_j`` is. ``loaded``: active energy plus the request's share of the device's idle
    draw while it ran (what the request cost the machine). ``marginal``: active energy only."""

    LOADED = "loaded"
    MARGINAL = "marginal"


class ComponentEnergy(NamedTuple):
    active_j: float
    idle_j: float  # this request's share of the idle draw while it ran
    method: Method

    def figure_j(self, accounting: Accounting) -> float:
        return self.active_j + (self.idle_j if accounting is Accounting.LOADED else 0.0)


class EnergyRecord(NamedTuple):
    """Immutable; a NamedTuple because it is built twice per request on the hot path (dataclass: ~4x slower)."""

    request_id: str
    model: str
    task: str
    work_class: str
    status: Status
    accounting: Accounting
    started_at_s: float  # Unix time the inference started
    queue_s: float
    duration_s: float  # inference wall time
    device_time_s: float  # fair share of device time (concurrent requests split it)
    tokens_in: int
    tokens_out: int
    components: Mapping[Component, ComponentEnergy] = MappingProxyType({})
    carbon: Carbon | None = None

    @property
    def method(self) -> Method:
        return Method.combine([c.method for c in self.components.values()])

    @property
    def energy_j(self) -> float:
        """Total joules under this record's accounting: what ``X-Energy-Joules`` reports."""
        return sum(c.figure_j(self.accounting) for c in self.components.values())

    @property
    def active_j(self) -> float:
        return sum(c.active_j for c in self.components.values())

    @property
    def idle_j(self) -> float:
        return sum(c.idle_j for c in self.components.values())

    def component_j(self, component: Component) -> float:
        c = self.components.get(component)
        return 0.0 if c is None else c.figure_j(self.accounting)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form (used by the service's lookup endpoint, logs and campaign results)."""
        out = {k: v for k, v in self._asdict().items() if k not in ("components", "carbon")}
        out.update(status=str(self.status), accounting=str(self.accounting), method=str(self.method),
                   energy_j=self.energy_j, active_j=self.active_j, idle_j=self.idle_j,
                   components={str(k): {"energy_j": v.figure_j(self.accounting), "active_j": v.active_j,
                                        "idle_j": v.idle_j, "method": str(v.method)}
                               for k, v in self.components.items()})
        if self.carbon is not None:
            out["carbon"] = {"intensity_g_per_kwh": self.carbon.intensity_g_per_kwh, "pue": self.carbon.pue,
                             "operational_g": self.carbon.operational_g, "embodied_g": self.carbon.embodied_g,
                             "sci_g": self.carbon.sci_g}
        return out
