"""Every task end to end on the embedded default registry (real MiniLM + demo models), real uvicorn."""

import httpx
import pytest

from service.settings import Settings
from tests.service.conftest import LiveServer, free_port


@pytest.fixture(scope="module")
def server(tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setenv("WATTSERVE_DEMO_DIR", str(tmp_path_factory.mktemp("demo")))
    with LiveServer(Settings(port=free_port())) as live:  # the embedded default, as `make run` serves it
        yield live


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


CASES = [
    ("all-MiniLM-L6-v2", {"inputs": ["energy", "carbon"]},
     lambda b: len(b["embeddings"]) == 2 and b["dimensions"] == 384),
    ("demo-text-classification", {"inputs": "a great movie", "top_k": 2},
     lambda b: {x["label"] for x in b["results"][0]} == {"NEGATIVE", "POSITIVE"}),
    ("demo-fill-mask", {"inputs": "Paris is the [MASK] of France.", "top_k": 3}, lambda b: len(b["results"][0]) == 3),
    ("demo-token-classification", {"inputs": ["Alice works at Hugging Face in New York."]},
     lambda b: isinstance(b["results"][0], list)),
    ("demo-text-generation", {"inputs": "How much energy", "max_new_tokens": 5, "min_new_tokens": 5},
     lambda b: b["results"][0]["tokens"] == 5),
]


@pytest.mark.parametrize("model, body, check", CASES, ids=[c[0] for c in CASES])
def test_every_task_answers_with_energy(server, model, body, check):
    r = httpx.post(f"{server.url}/v1/models/{model}/infer", json=body, timeout=60)
    assert r.status_code == 200, r.text
    assert check(r.json()), r.json()
    assert float(r.headers["X-Energy-Joules"]) > 0 and r.headers["X-Energy-Method"] == "estimated"


def test_demo_models_are_marked(server):
    models = {m["id"]: m for m in httpx.get(f"{server.url}/v1/models").json()["data"]}
    assert models["all-MiniLM-L6-v2"]["demo"] is False
    assert all(m["demo"] and m["state"] == "ready" for name, m in models.items() if name.startswith("demo-"))


def test_generation_limits_and_mask_checks(server):
    r = httpx.post(f"{server.url}/v1/models/demo-text-generation/infer", json={"inputs": "x", "max_new_tokens": 500})
    assert r.status_code == 422 and r.json()["field"] == "max_new_tokens" and r.json()["limit"] == 128
    r = httpx.post(f"{server.url}/v1/models/demo-fill-mask/infer", json={"inputs": ["no mask here"]})
    assert r.status_code == 422 and r.json()["field"] == "inputs.0"
    r = httpx.post(f"{server.url}/v1/models/demo-text-classification/infer", json={"inputs": "x", "max_new_tokens": 3})
    assert r.status_code == 422 and r.json()["field"] == "max_new_tokens"
