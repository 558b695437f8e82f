import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_plumbing_runs_on_the_cpu_with_a_simulated_meter(tmp_path):
    """The GPU check can only measure on a GPU; this keeps its code path working everywhere."""
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--simulate", "--requests", "120",
                    "--out", str(tmp_path)], check=True, capture_output=True, text=True, timeout=300)
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert set(report["mixed"]) == {"small", "large"}
    assert report["conservation_rel_error"] < 1e-9
    assert report["mixed"]["small"]["n"] + report["mixed"]["large"]["n"] == 120
