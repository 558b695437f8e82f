"""Carbon: gCO2e = kWh x grid intensity (g/kWh) x PUE, plus optional embodied emissions (GSF SCI).

Grid intensity comes from a configured constant, from CodeCarbon's embedded data for a country (and region:
US states, Canadian provinces, ...) used offline through its API, or from a time series file for grids whose
intensity varies over the day. Embodied emissions ``M`` are amortised over the hardware's lifetime by each
request's share of device time, so the SCI of one request is ``E * I + M_request``. Operational and embodied
stay separate everywhere.
"""

from __future__ import annotations

import bisect
import csv
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import NamedTuple, Protocol

J_PER_KWH = 3.6e6


class IntensitySource(Protocol):
    description: str

    def intensity_g_per_kwh(self, wall_s: float) -> float:
        """Grid carbon intensity in gCO2e/kWh in effect at Unix time ``wall_s``."""


@dataclass(frozen=True)
class ConstantIntensity:
    g_per_kwh: float
    description: str = "configured constant"

    def __post_init__(self) -> None:
        if not 0 <= self.g_per_kwh < 5000:
            raise ValueError(f"carbon intensity must be within [0, 5000) gCO2e/kWh, got {self.g_per_kwh}")

    def intensity_g_per_kwh(self, wall_s: float) -> float:
        return self.g_per_kwh


def codecarbon_intensity(country_iso_code: str, region: str | None = None) -> ConstantIntensity:
    """Intensity for a country (ISO 3166-1 alpha-3, e.g. ``USA``) and optional region (e.g. ``oregon``),
    from CodeCarbon's embedded data (no network). Unknown names are an error, not a silent world average."""
    try:
        from codecarbon.core.emissions import Emissions
        from codecarbon.core.units import Energy
        from codecarbon.external.geography import GeoMetadata
        from codecarbon.input import DataSource
    except ImportError as exc:
        raise ValueError("codecarbon is not installed: pip install codecarbon, or set a constant intensity") from exc
    source = DataSource()
    code = country_iso_code.upper()
    countries = source.get_global_energy_mix_data()
    if code not in countries:
        raise ValueError(f"unknown country_iso_code {country_iso_code!r}: use an ISO 3166-1 alpha-3 code "
                         f"such as USA, FRA, DEU ({len(countries)} known to CodeCarbon)")
    if region is not None:
        regions = _regions(source, code)
        if region.lower() not in regions:
            known = ", ".join(sorted(regions)[:8]) or "none: give only the country"
            raise ValueError(f"unknown region {region!r} for {code}; CodeCarbon knows: {known}"
                             + ("..." if len(regions) > 8 else ""))
    geo = GeoMetadata(country_iso_code=code, region=region.lower() if region else None)
    kg = Emissions(source).get_private_infra_emissions(Energy.from_energy(kWh=1.0), geo)
    where = f"{code}/{region}" if region else code
    return ConstantIntensity(kg * 1e3, f"CodeCarbon data for {where}")


def _regions(source, code: str) -> set[str]:
    for loader in (source.get_country_emissions_data, source.get_country_energy_mix_data):
        try:
            return {k for k in loader(code.lower()) if not k.startswith("_")}
        except Exception:  # noqa: BLE001 - CodeCarbon has region data for a few countries only
            continue
    return set()


class TimeSeriesIntensity:
    """Step-wise intensity from a CSV of ``timestamp,g_per_kwh`` rows (ISO 8601 or Unix seconds, any order).

    The value in effect at ``t`` is the latest row at or before ``t``; before the first row, the first value.
    """

    def __init__(self, points: list[tuple[float, float]], description: str = "time series") -> None:
        if not points:
            raise ValueError("the carbon intensity time series is empty")
        points = sorted(points)
        for (t_a, _), (t_b, _) in zip(points, points[1:], strict=False):
            if t_a == t_b:
                raise ValueError(f"the carbon intensity time series has two values for timestamp {t_a}")
        self._t = [t for t, _ in points]
        self._v = [v for _, v in points]
        self.description = description

    @classmethod
    def from_csv(cls, path: str | Path) -> TimeSeriesIntensity:
        points = []
        with open(path, newline="") as f:
            for line_no, row in enumerate(csv.reader(f), start=1):
                if not row or row[0].startswith("#") or (line_no == 1 and not _is_number(row[-1])):
                    continue  # blank, comment, header
                if len(row) < 2:
                    raise ValueError(f"{path}:{line_no}: expected 'timestamp,g_per_kwh', got {row!r}")
                try:
                    t = float(row[0]) if _is_number(row[0]) else datetime.fromisoformat(row[0].strip()).timestamp()
                    value = float(row[1])
                except ValueError as exc:
                    raise ValueError(f"{path}:{line_no}: {exc}") from exc
                ConstantIntensity(value)  # range check with the same message
                points.append((t, value))
        return cls(points, f"time series {Path(path).name}")

    def intensity_g_per_kwh(self, wall_s: float) -> float:
        i = bisect.bisect_right(self._t, wall_s) - 1
        return self._v[max(i, 0)]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Embodied:
    """Embodied emissions ``total_g`` of the hardware, amortised evenly over ``lifetime_s``."""

    total_g: float
    lifetime_s: float

    def __post_init__(self) -> None:
        if self.total_g < 0 or self.lifetime_s <= 0:
            raise ValueError("embodied emissions need total_g >= 0 and lifetime_s > 0")

    def share_g(self, device_time_s: float) -> float:
        return self.total_g * device_time_s / self.lifetime_s


class Carbon(NamedTuple):
    """Operational and embodied gCO2e for one request (a NamedTuple: immutable and cheap to build)."""

    intensity_g_per_kwh: float
    pue: float
    operational_g: float
    embodied_g: float

    @property
    def sci_g(self) -> float:
        return self.operational_g + self.embodied_g


@dataclass(frozen=True)
class CarbonModel:
    intensity: IntensitySource
    pue: float = 1.0
    embodied: Embodied | None = None

    def __post_init__(self) -> None:
        if not 1.0 <= self.pue <= 5.0:
            raise ValueError(f"PUE must be within [1, 5], got {self.pue}")

    def assess(self, energy_j: float, wall_s: float, device_time_s: float) -> Carbon:
        intensity = self.intensity.intensity_g_per_kwh(wall_s)
        operational = energy_j / J_PER_KWH * intensity * self.pue
        embodied = self.embodied.share_g(device_time_s) if self.embodied else 0.0
        return Carbon(intensity, self.pue, operational, embodied)
