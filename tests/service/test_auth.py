"""Optional bearer keys: inference needs one; health, readiness and metrics stay open."""

import httpx
import pytest

from service.settings import Settings
from tests.service.conftest import LiveServer, free_port


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_classifier):
    folder = tmp_path_factory.mktemp("auth")
    (folder / "models.yaml").write_text(f"models:\n  - name: tiny\n    task: text-classification\n"
                                        f"    source: {tiny_classifier}\n    device: cpu\n")
    (folder / "keys.txt").write_text("key-from-file\n\n")
    settings = Settings(port=free_port(), registry=folder / "models.yaml", api_keys="key-a, key-b",
                        api_keys_file=folder / "keys.txt")
    with LiveServer(settings) as live:
        yield live


@pytest.mark.parametrize("key, status", [(None, 401), ("wrong", 401), ("key-a", 200), ("key-b", 200),
                                         ("key-from-file", 200), ("KEY-A", 401)])
def test_inference_requires_a_valid_bearer_key(server, key, status):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    r = httpx.post(f"{server.url}/v1/models/tiny/infer", json={"inputs": "a great movie"}, headers=headers)
    assert r.status_code == status, r.text
    if status == 401:
        assert r.headers["WWW-Authenticate"] == "Bearer" and r.json()["status"] == 401


def test_health_readiness_and_metrics_stay_open(server):
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(server.url + path).status_code == 200
