"""NVML backend against pynvml patched with autospec: the real call signatures, fake hardware."""

from unittest import mock

import pynvml
import pytest

from service.energy.meters.nvml import NvmlMeter, visible_gpu_selectors
from service.energy.types import Component, MeterError, Method


def fake_nvml(gpus: list[dict]):
    """gpus: dicts with uuid, name, energy_mj (None: no counter, pre-Volta) and power_mw."""
    nv = mock.create_autospec(pynvml, instance=False)
    nv.NVMLError = pynvml.NVMLError
    nv.NVML_SUCCESS = pynvml.NVML_SUCCESS
    nv.NVML_FI_DEV_POWER_INSTANT = pynvml.NVML_FI_DEV_POWER_INSTANT
    nv.nvmlDeviceGetCount.return_value = len(gpus)
    nv.nvmlDeviceGetHandleByIndex.side_effect = lambda i: gpus[i]
    nv.nvmlDeviceGetUUID.side_effect = lambda h: h["uuid"]
    nv.nvmlDeviceGetName.side_effect = lambda h: h["name"].encode()

    def energy(h):
        if h["energy_mj"] is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        if h.get("fail"):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return h["energy_mj"]

    def fields(h, ids):
        value = mock.Mock(nvmlReturn=pynvml.NVML_SUCCESS)
        value.value.uiVal = h["power_mw"]
        return [value]

    nv.nvmlDeviceGetTotalEnergyConsumption.side_effect = energy
    nv.nvmlDeviceGetFieldValues.side_effect = fields
    return nv


def gpu(i, energy_mj=1_000_000, power_mw=100_000):
    return {"uuid": f"GPU-{i}aaa-{i}", "name": f"Fake H{i}00", "energy_mj": energy_mj, "power_mw": power_mw}


def test_energy_counter_is_read_in_joules():
    gpus = [gpu(0, energy_mj=5_000), gpu(1, energy_mj=7_500)]
    meter = NvmlMeter(nvml=fake_nvml(gpus), env={})
    assert [d.id for d in meter.devices] == ["gpu0", "gpu1"]
    assert all(d.component is Component.GPU and d.method is Method.MEASURED and d.tick_s == 0.1
               for d in meter.devices)
    assert meter.read() == [5.0, 7.5]
    gpus[0]["energy_mj"] += 2_000
    assert meter.read() == [7.0, 7.5]


def test_pre_volta_card_integrates_instant_power(clock):
    gpus = [gpu(0, energy_mj=None, power_mw=200_000)]
    meter = NvmlMeter(nvml=fake_nvml(gpus), env={}, clock=clock)
    assert meter.devices[0].tick_s == 0.0 and "integrated power" in meter.devices[0].name
    assert meter.read() == [0.0]
    clock.advance(0.5)
    gpus[0]["power_mw"] = 300_000
    assert meter.read() == pytest.approx([0.5 * (200 + 300) * 0.5])  # trapezoid: 125 J


def test_cuda_visible_devices_selects_and_orders_gpus():
    gpus = [gpu(0), gpu(1), gpu(2)]
    meter = NvmlMeter(nvml=fake_nvml(gpus), env={"CUDA_VISIBLE_DEVICES": "2,GPU-0aaa"})
    assert [d.name.split(" (")[0] for d in meter.devices] == ["Fake H200", "Fake H000"]
    assert [d.id for d in meter.devices] == ["gpu0", "gpu1"]  # CUDA ordinals, as torch numbers them


@pytest.mark.parametrize("value, expected", [
    (None, None), ("", []), ("-1", []), ("0,1", ["0", "1"]), ("1,-1,0", ["1"]), ("GPU-ab,7", ["GPU-ab", "7"]),
    ("MIG-x,0", []),
])
def test_visible_selectors_follow_cuda_rules(value, expected):
    env = {} if value is None else {"CUDA_VISIBLE_DEVICES": value}
    assert visible_gpu_selectors(env) == expected


def test_hidden_gpus_are_an_error_not_an_empty_meter():
    with pytest.raises(MeterError, match="no visible GPU"):
        NvmlMeter(nvml=fake_nvml([gpu(0)]), env={"CUDA_VISIBLE_DEVICES": "-1"})


def test_nvml_init_failure_says_what_to_do():
    nv = fake_nvml([])
    nv.nvmlInit.side_effect = pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    with pytest.raises(MeterError, match="NVIDIA container toolkit"):
        NvmlMeter(nvml=nv, env={})


def test_read_errors_are_converted_at_the_boundary():
    gpus = [gpu(0)]
    meter = NvmlMeter(nvml=fake_nvml(gpus), env={})
    gpus[0]["fail"] = True
    with pytest.raises(MeterError, match="NVML read failed"):
        meter.read()


def _nvml_sees_a_gpu() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    try:
        return pynvml.nvmlDeviceGetCount() > 0
    finally:
        pynvml.nvmlShutdown()


@pytest.mark.skipif(_nvml_sees_a_gpu(), reason="this machine has a GPU: tests/energy/test_nvml_gpu.py covers it")
def test_real_pynvml_without_a_gpu_is_a_clean_meter_error():
    with pytest.raises(MeterError):
        NvmlMeter()
