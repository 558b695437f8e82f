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
    (folder / "keys.txt").write_text("key-from-file\n\n   \n# rotated: revoked keys below\n  #key-revoked  \n")
    settings = Settings(port=free_port(), registry=folder / "models.yaml", api_keys="key-a, key-b",
                        api_keys_file=folder / "keys.txt")
    with LiveServer(settings) as live:
        yield live


@pytest.mark.parametrize("key, status", [(None, 401), ("wrong", 401), ("key-a", 200), ("key-b", 200),
                                         ("key-from-file", 200), ("KEY-A", 401),
                                         # a commented-out key was a valid key
                                         ("#key-revoked", 401), ("# rotated: revoked keys below", 401)])
def test_inference_requires_a_valid_bearer_key(server, key, status):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    r = httpx.post(f"{server.url}/v1/models/tiny/infer", json={"inputs": "a great movie"}, headers=headers)
    assert r.status_code == status, r.text
    if status == 401:
        assert r.headers["WWW-Authenticate"] == "Bearer" and r.json()["status"] == 401


def test_health_readiness_and_metrics_stay_open(server):
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(server.url + path).status_code == 200


def test_everything_but_health_and_metrics_needs_a_key(server):
    """The models, the machine and other clients' energy records were open; an OpenAI body was validated (422,
    counted for the model) before the key was checked."""
    ok = httpx.post(f"{server.url}/v1/models/tiny/infer", json={"inputs": "fine"},
                    headers={"Authorization": "Bearer key-a"})
    request_id = ok.headers["x-request-id"]
    for path in ("/v1/models", "/v1/models/tiny", "/v1/system", f"/v1/requests/{request_id}/energy"):
        assert httpx.get(server.url + path).status_code == 401, path
        assert httpx.get(server.url + path, headers={"Authorization": "Bearer key-a"}).status_code == 200, path
    def refusals() -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in httpx.get(server.url + "/metrics").text.splitlines()
                   if line.startswith("wattserve_requests_total{") and 'model="tiny"' in line and "4xx" in line)

    before = refusals()
    denied = httpx.post(f"{server.url}/v1/embeddings", json={"model": "tiny"})
    assert denied.status_code == 401 and denied.json()["error"]["type"] == "authentication_error"
    assert refusals() == before


@pytest.mark.parametrize("env, text", [({"api_keys": " , "}, None), ({}, "\n# only a comment\n\n")])
def test_keys_asked_for_but_none_found_refuse_to_serve(tmp_path, env, text):
    """An empty keys file (or a list of blanks) turned authentication off without a word."""
    from service.api.app import create_app
    from service.settings import ConfigError

    if text is not None:
        (tmp_path / "keys.txt").write_text(text)
        env = {"api_keys_file": tmp_path / "keys.txt"}
    with pytest.raises(ConfigError, match="none was found"):
        create_app(Settings(port=free_port(), **env))
