"""CPU package and DRAM energy through Linux powercap RAPL (Intel, and AMD on kernels that expose it).

Each top-level zone ``intel-rapl:N`` (``package-N``) is one CPU device; its ``dram`` sub-zone, where present,
is a RAM device. Core/uncore sub-zones are parts of the package and ``psys`` overlaps everything, so both are
skipped to avoid counting energy twice. Counters are microjoules and wrap at ``max_energy_range_uj``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from service.energy.meters.base import Meter
from service.energy.types import Component, DeviceInfo, MeterError, Method

POWERCAP_ROOT = Path("/sys/class/powercap")
SAMPLE_PERIOD_S = 0.02  # RAPL updates every ~1 ms and a read is a ~10 us sysfs read
_ZONE = re.compile(r"^(intel|amd)-rapl:\d+(:\d+)?$")

PERMISSION_HINT = (
    "RAPL energy counters are readable by root only since Linux 5.10 (CVE-2020-8694). Run wattserve as root, "
    "or grant read access: sudo chmod a+r /sys/class/powercap/*/energy_uj (in a container, also mount "
    "/sys/class/powercap read-only). Without it, CPU energy is estimated instead."
)


@dataclass
class _Zone:
    path: Path
    max_range_uj: int
    last_raw_uj: int | None = None
    total_uj: int = field(default=0)

    def read_uj(self) -> int:
        raw = int((self.path / "energy_uj").read_text())
        if self.last_raw_uj is not None:
            delta = raw - self.last_raw_uj
            if delta < 0:  # the counter wrapped past max_energy_range_uj
                delta += self.max_range_uj + 1
            self.total_uj += delta
        self.last_raw_uj = raw
        return self.total_uj


class RaplMeter(Meter):
    """Every CPU package (and its DRAM domain) visible under ``root``."""

    def __init__(self, root: Path = POWERCAP_ROOT) -> None:
        zones: list[_Zone] = []
        infos: list[DeviceInfo] = []
        if not root.is_dir():
            raise MeterError(f"{root} does not exist: this kernel or machine exposes no RAPL counters")
        for path in sorted(p for p in root.iterdir() if _ZONE.match(p.name)):
            name = _read(path / "name")
            if name.startswith("package"):
                component, dev_id = Component.CPU, f"cpu{path.name.split(':')[1]}"
            elif name == "dram":
                component, dev_id = Component.RAM, f"ram{path.name.split(':')[1]}"
            else:
                continue
            zone = _Zone(path, int(_read(path / "max_energy_range_uj")))
            _read(path / "energy_uj")  # fails here, at start-up, with the fix in the message
            zone.read_uj()
            zones.append(zone)
            infos.append(DeviceInfo(id=dev_id, component=component, method=Method.MEASURED,
                                    name=f"RAPL {path.name} {name}", tick_s=0.0, sample_period_s=SAMPLE_PERIOD_S))
        if not zones:
            raise MeterError(f"no RAPL package zone under {root}")
        self._zones = zones
        self.devices = tuple(infos)

    def read(self) -> list[float]:
        try:
            return [zone.read_uj() / 1e6 for zone in self._zones]
        except (OSError, ValueError) as exc:
            raise MeterError(f"RAPL read failed: {exc}") from exc


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except PermissionError as exc:
        raise MeterError(f"cannot read {path}: permission denied. {PERMISSION_HINT}") from exc
    except (OSError, ValueError) as exc:
        raise MeterError(f"cannot read {path}: {exc}") from exc
