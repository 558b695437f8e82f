import json
import subprocess
import sys


def test_wattserve_meters_lists_and_reads_the_estimate_meters_here():
    out = subprocess.run([sys.executable, "-m", "service.cli", "meters", "--seconds", "1.0"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    lines = out.strip().splitlines()
    assert any(line.startswith("nvml") and "unavailable" in line for line in lines)
    assert any(line.startswith("cpu") and "estimated" in line for line in lines)
    summary = json.loads(lines[-1])
    # estimates are read every 0.25 s: 1 s gives 4 intervals, or 3 when the last read and the stop coincide
    assert summary["devices"]["ram"]["energy_j"] > 0 and summary["devices"]["ram"]["intervals"] >= 3
