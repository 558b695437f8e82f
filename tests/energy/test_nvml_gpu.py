"""The NVML backend on real hardware. Skipped where NVML finds no GPU (this machine, CI); run on a GPU host with
``pytest tests/energy/test_nvml_gpu.py`` (``scripts/device_check.sh`` does, with the GPU checks)."""

from __future__ import annotations

import time

import pynvml
import pytest

from service.energy import Metering, Status
from service.energy.meters.nvml import NvmlMeter
from service.energy.types import Component, MeterError, Method


def _gpu_count() -> int:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return 0
    try:
        return pynvml.nvmlDeviceGetCount()
    finally:
        pynvml.nvmlShutdown()


pytestmark = pytest.mark.skipif(_gpu_count() == 0, reason="no NVIDIA GPU visible to NVML here")


@pytest.fixture
def meter():
    m = NvmlMeter(env={})
    yield m
    m.close()


def test_every_gpu_is_measured_through_its_energy_counter(meter):
    assert [d.id for d in meter.devices] == [f"gpu{i}" for i in range(_gpu_count())]
    for d in meter.devices:
        assert d.component is Component.GPU and d.method is Method.MEASURED
        assert "energy counter" in d.name  # Volta and newer: the cumulative counter, not integrated power
        assert d.tick_s == pytest.approx(0.1)


def test_counter_advances_with_the_idle_draw_and_never_goes_back(meter):
    readings = []
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 1.0:
        readings.append(meter.read()[0])
        time.sleep(0.01)
    assert all(b >= a for a, b in zip(readings, readings[1:], strict=False))
    watts = (readings[-1] - readings[0]) / 1.0
    assert 5.0 < watts < 2000.0  # a powered GPU draws tens of watts idle; 1 s spans ~10 counter ticks
    assert len(set(readings)) >= 5  # it ticks (~100 ms), so ~100 reads show about ten distinct values


def test_cuda_visible_devices_selects_by_uuid_and_hides_with_minus_one():
    pynvml.nvmlInit()
    try:
        uuid = pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(0))
        uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
        name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
        name = name.decode() if isinstance(name, bytes) else name
    finally:
        pynvml.nvmlShutdown()
    m = NvmlMeter(env={"CUDA_VISIBLE_DEVICES": uuid[:12]})
    try:
        assert [d.id for d in m.devices] == ["gpu0"] and m.devices[0].name.startswith(name)
    finally:
        m.close()
    with pytest.raises(MeterError, match="no visible GPU"):
        NvmlMeter(env={"CUDA_VISIBLE_DEVICES": "-1"})


def test_a_busy_gpu_request_gets_measured_active_energy_and_the_device_total_balances():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    a = torch.randn(4096, 4096, device="cuda")
    metering = Metering([NvmlMeter(env={})])
    finals = []
    metering.subscribe(finals.append)
    metering.start()
    try:
        time.sleep(1.0)  # quiet time: the idle draw
        with metering.track("matmul", "bench") as busy:
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < 1.0:
                a @ a
                torch.cuda.synchronize()
        time.sleep(0.5)
        with metering.track("sleep", "bench") as quiet:
            time.sleep(0.5)
        provisional = metering.result(quiet)
    finally:
        metering.stop(timeout_s=5.0)
    by_id = {r.request_id: r for r in finals}
    hot, cold = by_id[busy.request_id], by_id[quiet.request_id]
    assert hot.status is Status.FINAL and cold.status is Status.FINAL
    assert hot.components[Component.GPU].method is Method.MEASURED
    # a 4096^2 matmul loop draws hundreds of watts above idle; a sleeping request draws next to nothing above it
    assert hot.components[Component.GPU].active_j > 50.0
    assert hot.components[Component.GPU].active_j > 10 * cold.components[Component.GPU].active_j
    assert provisional.status is Status.PROVISIONAL
    total = metering.totals()["gpu0"]
    balance = total.attributed_active_j + total.attributed_idle_j + total.unattributed_idle_j
    assert balance == pytest.approx(total.measured_j, rel=1e-6)
