"""RAPL backend on a fake powercap tree."""

from pathlib import Path

import pytest

from service.energy.meters.rapl import RaplMeter
from service.energy.types import Component, MeterError

MAX_UJ = 262_143_328_850


def zone(root: Path, name: str, label: str, energy_uj: int) -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / "name").write_text(label + "\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text(f"{MAX_UJ}\n")
    return path


@pytest.fixture
def tree(tmp_path):
    zone(tmp_path, "intel-rapl:0", "package-0", 1_000_000)
    zone(tmp_path, "intel-rapl:0:0", "core", 400_000)
    zone(tmp_path, "intel-rapl:0:1", "dram", 2_000_000)
    zone(tmp_path, "intel-rapl:1", "package-1", 3_000_000)
    zone(tmp_path, "intel-rapl:2", "psys", 9_000_000)
    (tmp_path / "intel-rapl").mkdir()  # the control-type directory is not a zone
    return tmp_path


def write(root: Path, name: str, energy_uj: int) -> None:
    (root / name / "energy_uj").write_text(f"{energy_uj}\n")


def test_packages_and_dram_are_metered_core_and_psys_skipped(tree):
    meter = RaplMeter(tree)
    assert [(d.id, d.component) for d in meter.devices] == [
        ("cpu0", Component.CPU), ("ram0", Component.RAM), ("cpu1", Component.CPU)]
    assert meter.read() == [0.0, 0.0, 0.0]
    write(tree, "intel-rapl:0", 3_500_000)
    write(tree, "intel-rapl:0:1", 2_250_000)
    assert meter.read() == pytest.approx([2.5, 0.25, 0.0])


def test_counter_wrap_around_is_unwrapped(tree):
    write(tree, "intel-rapl:0", MAX_UJ - 1_000_000)
    meter = RaplMeter(tree)
    meter.read()
    write(tree, "intel-rapl:0", 500_000)  # wrapped: 1 J to the top, 1 uJ to zero, 0.5 J after
    assert meter.read()[0] == pytest.approx(1.500001)
    write(tree, "intel-rapl:0", 700_000)
    assert meter.read()[0] == pytest.approx(1.700001)


def test_unreadable_counter_explains_the_permission_fix(tree, monkeypatch):
    real = Path.read_text

    def read_text(self, *args, **kwargs):
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    with pytest.raises(MeterError, match="root only since Linux 5.10"):
        RaplMeter(tree)


def test_missing_powercap_is_a_meter_error(tmp_path):
    with pytest.raises(MeterError, match="no RAPL"):
        RaplMeter(tmp_path / "absent")
    with pytest.raises(MeterError, match="no RAPL package zone"):
        RaplMeter(tmp_path)
