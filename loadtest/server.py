"""Talking to wattserve from a campaign: models, machine, device counters, final figures; the embedded server.

Nothing here imports locust or torch: the controller and the Locust process both use it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger(__name__)


class ServerError(RuntimeError):
    """The server is unreachable, answered something unusable, or died."""


@dataclass(frozen=True)
class DeviceCounter:
    energy_j: float
    covered_until_s: float | None  # Unix time the counter has counted up to
    component: str
    method: str


Snapshot = dict[str, DeviceCounter]
JSON_HEADERS = {"content-type": "application/json"}


class ServerClient:
    def __init__(self, url: str, api_key: str | None = None, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s)
        # what Locust users send with each inference request: the JSON type and, on a keyed server, the key
        self.request_headers = {**JSON_HEADERS, **headers}

    def close(self) -> None:
        self.http.close()

    def _get(self, path: str) -> httpx.Response:
        try:
            return self.http.get(path)
        except httpx.HTTPError as exc:
            raise ServerError(f"{self.url}{path}: {type(exc).__name__}: {exc}") from exc

    def healthy(self) -> bool:
        try:
            return self.http.get("/healthz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def models(self) -> dict[str, dict[str, Any]]:
        response = self._get("/v1/models")
        if response.status_code != 200:
            raise ServerError(f"{self.url}/v1/models answered {response.status_code}: {response.text[:300]}")
        return {m["id"]: m for m in response.json()["data"]}

    def models_when_loaded(self, timeout_s: float) -> dict[str, dict[str, Any]]:
        """``/v1/models`` once no model is ``loading`` (a server answers while its models load), or as it stands
        after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            models = self.models()
            if all(m.get("state") != "loading" for m in models.values()) or time.monotonic() >= deadline:
                return models
            time.sleep(0.5)

    def system(self) -> dict[str, Any]:
        response = self._get("/v1/system")
        if response.status_code != 200:
            raise ServerError(f"{self.url}/v1/system answered {response.status_code}: is this a wattserve?")
        return response.json()

    def snapshot(self) -> Snapshot:
        """The device energy counters from ``/metrics`` (idle included), with the time each has counted up to."""
        response = self._get("/metrics")
        if response.status_code != 200:
            raise ServerError(f"{self.url}/metrics answered {response.status_code}")
        energy: dict[str, tuple[float, str, str]] = {}
        covered: dict[str, float] = {}
        for family in text_string_to_metric_families(response.text):
            if family.name == "wattserve_device_energy_joules":
                for s in family.samples:
                    if s.name.endswith("_total"):
                        labels = s.labels
                        energy[labels["device"]] = (s.value, labels.get("component", ""), labels.get("method", ""))
            elif family.name == "wattserve_device_energy_timestamp_seconds":
                covered.update({s.labels["device"]: s.value for s in family.samples})
        return {d: DeviceCounter(e, covered.get(d), c, m) for d, (e, c, m) in energy.items()}

    def snapshot_covering(self, t_s: float, timeout_s: float = 15.0) -> Snapshot:
        """A snapshot whose every counter has counted past Unix time ``t_s`` (waits for the sampler's next tick)."""
        deadline = time.monotonic() + timeout_s
        while True:
            snap = self.snapshot()
            if all(c.covered_until_s is not None and c.covered_until_s >= t_s for c in snap.values()):
                return snap
            if time.monotonic() > deadline:
                late = [d for d, c in snap.items() if c.covered_until_s is None or c.covered_until_s < t_s]
                raise ServerError(f"device counters {', '.join(late)} did not reach {t_s:.3f} within {timeout_s} s")
            time.sleep(0.05)

    def final_record(self, request_id: str, timeout_s: float = 30.0) -> dict[str, Any]:
        """The request's final energy record (polls while it is still provisional)."""
        deadline = time.monotonic() + timeout_s
        delay = 0.02
        while True:
            response = self._get(f"/v1/requests/{request_id}/energy")
            if response.status_code == 200:
                record = response.json()
                if record.get("status") == "final" or time.monotonic() > deadline:
                    return record
            elif response.status_code == 404:
                raise ServerError(f"the server has no energy record for {request_id} (restarted, or more than its "
                                  "records_kept requests since?)")
            elif time.monotonic() > deadline:
                raise ServerError(f"/v1/requests/{request_id}/energy answered {response.status_code}")
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the server gets SIGTERM when the campaign process dies, even by SIGKILL."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class EmbeddedServer:
    """``wattserve serve`` in a child process on 127.0.0.1, for a campaign that starts its own server."""

    def __init__(self, log_path: Path, *, registry: Path | None = None, accounting: str = "loaded",
                 carbon: dict[str, Any] | None = None, startup_timeout_s: float = 600.0,
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.startup_timeout_s = startup_timeout_s
        args = [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                "--accounting", accounting]
        if registry is not None:
            args += ["--registry", str(registry)]
        carbon = carbon or {}
        for key, flag in (("intensity_g_per_kwh", "--carbon-intensity"), ("country", "--carbon-country"),
                          ("region", "--carbon-region"), ("pue", "--pue")):
            if carbon.get(key) is not None:
                args += [flag, str(carbon[key])]
        self.args = args
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> EmbeddedServer:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
                                        preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        deadline = time.monotonic() + self.startup_timeout_s
        with httpx.Client(timeout=5) as http:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise ServerError(f"the embedded server exited with code {self.process.returncode} while "
                                      f"starting:\n{self.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    states = http.get(self.url + "/readyz").json()["models"].values()
                    if all(s["state"] != "loading" for s in states):
                        return self
                time.sleep(0.2)
        self.__exit__(None, None, None)
        raise ServerError(f"the embedded server was not ready within {self.startup_timeout_s} s:\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def exit_reason(self) -> str:
        code = self.process.poll() if self.process else None
        return f"the embedded server exited with code {code}:\n{self.log_tail()}" if code is not None else ""

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown: open requests get finals
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
