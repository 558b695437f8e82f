"""What the serving machine is, and how CodeCarbon 2.3.1 would have counted it (the paper's accounting).

"Power Hungry Processing" (Luccioni et al., FAccT 2024) measured with CodeCarbon 2.3.1 in machine mode: every
GPU's NVML energy, the CPU at a constant half of its TDP when RAPL is missing (85 W TDP when the CPU model is
not in CodeCarbon's table), RAM at a constant 3/8 W per GB of installed memory, PUE 1. Campaigns report that
*paper mode* beside wattserve's own figures so results compare with the paper's Table 2.
"""

from __future__ import annotations

import logging
import os
import platform
from dataclasses import asdict, dataclass

log = logging.getLogger(__name__)

PAPER_CPU_TDP_FRACTION = 0.5  # CodeCarbon 2.3.1, no RAPL: "50% of TDP"
PAPER_DEFAULT_TDP_W = 85.0  # CodeCarbon 2.3.1's TDP for a CPU missing from its table (the paper's Xeon 8275CL)
PAPER_RAM_W_PER_GB = 3 / 8  # CodeCarbon 2.3.1's RAM model


@dataclass(frozen=True)
class PaperMode:
    cpu_power_w: float
    cpu_source: str
    ram_power_w: float
    ram_gb: float


@dataclass(frozen=True)
class MachineInfo:
    cpu_model: str
    cpu_threads: int
    ram_gb: float
    platform: str
    paper_mode: PaperMode

    def as_dict(self) -> dict:
        return asdict(self)


def _cpu_tdp_w() -> tuple[str, float | None]:
    """CPU model and its TDP from CodeCarbon's table (None when the model is not in the table)."""
    try:
        from codecarbon.core.cpu import TDP
    except ImportError:
        return platform.processor() or platform.machine(), None
    from service.energy.meters.estimate import _in_table

    tdp = TDP()
    return tdp.model, (float(tdp.tdp) if tdp.tdp is not None and _in_table(tdp.model) else None)


def _ram_gb() -> float:
    """Installed memory in GiB, as CodeCarbon counts it (psutil total / 1024^3)."""
    try:
        import psutil

        return psutil.virtual_memory().total / 1024**3
    except ImportError:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3


def machine_info() -> MachineInfo:
    cpu_model, tdp_w = _cpu_tdp_w()
    if tdp_w is None:
        cpu_w, source = PAPER_DEFAULT_TDP_W * PAPER_CPU_TDP_FRACTION, (
            f"{cpu_model!r} not in CodeCarbon's TDP table: {PAPER_DEFAULT_TDP_W:g} W default x 0.5")
    else:
        cpu_w, source = tdp_w * PAPER_CPU_TDP_FRACTION, f"CodeCarbon TDP {tdp_w:g} W x 0.5"
    ram_gb = _ram_gb()
    return MachineInfo(cpu_model, os.cpu_count() or 1, round(ram_gb, 3), platform.platform(),
                       PaperMode(cpu_w, source, ram_gb * PAPER_RAM_W_PER_GB, round(ram_gb, 3)))
