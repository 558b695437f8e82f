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


def _serve_fails(args, env=None):
    import os

    run = subprocess.run([sys.executable, "-m", "service.cli", "serve", "--port", "0", *args], capture_output=True,
                         text=True, timeout=120, env={**os.environ, **(env or {})})
    lines = [line for line in run.stderr.splitlines() if not line.startswith("[codecarbon")]
    assert run.returncode == 2, run.stderr
    assert len(lines) == 1 and lines[0].startswith("wattserve serve: error: "), run.stderr  # no traceback
    return lines[0]


def test_a_bad_setting_is_one_line_not_a_traceback(tmp_path):
    """Each of these printed a 20-30 line traceback (pydantic's, or a FileNotFoundError from deep in start-up)."""
    assert "queue_size" in _serve_fails(["--queue-size", "0"]) and "(got 0)" in _serve_fails(["--queue-size", "0"])
    assert "request_timeout_s" in _serve_fails([], {"WATTSERVE_REQUEST_TIMEOUT_S": "-1"})
    assert "embodied_g" in _serve_fails(["--embodied-g", "inf"])  # inf made every carbon figure inf
    assert "carbon_country" in _serve_fails(["--carbon-region", "oregon"])  # silently the world average
    assert "one grid carbon intensity source" in _serve_fails(["--carbon-country", "FRA", "--carbon-intensity", "300"])
    missing = tmp_path / "nope.txt"
    assert str(missing) in _serve_fails([], {"WATTSERVE_API_KEYS_FILE": str(missing)})
    assert "models.yaml" in _serve_fails(["--registry", str(tmp_path / "models.yaml")])
