"""Every task end to end on the embedded default registry (real MiniLM + demo models), real uvicorn."""
import json

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
    ("demo-summarization", {"inputs": "Carbon emissions follow from the energy and from the grid."},
     lambda b: 10 <= b["results"][0]["tokens"] <= 15),
    ("demo-question-answering",
     {"inputs": [{"question": "What is the capital?", "context": "Paris is the capital of France."}]},
     lambda b: b["results"][0]["answer"] in "Paris is the capital of France." and 0 <= b["results"][0]["start"]
     <= b["results"][0]["end"] <= 31),
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


def test_openai_completions_and_chat_with_the_openai_client(server):
    from openai import OpenAI

    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    done = client.completions.create(model="demo-text-generation", prompt="How much energy", max_tokens=4)
    assert done.object == "text_completion" and done.usage.completion_tokens <= 4
    assert all(isinstance(m.created, int) and m.created > 0 for m in client.models.list())
    # what OpenAI accepts: top_p 0 (greedy: it was 422) and content as a list of text parts (422 too)
    greedy = client.chat.completions.create(model="demo-text-generation", max_tokens=4, temperature=0,
                                            messages=[{"role": "user", "content": "Hello there"}])
    parts = client.chat.completions.create(model="demo-text-generation", max_tokens=4, top_p=0,
                                           messages=[{"role": "user", "content": [{"type": "text", "text": "Hello"},
                                                                                  {"type": "text", "text": " there"}]}])
    assert parts.choices[0].message.content == greedy.choices[0].message.content
    import openai

    try:  # the client's exceptions carried only "Error code: 422": problem JSON has no "error" object of OpenAI's
        client.completions.create(model="demo-text-generation", prompt="x", max_tokens=100_000)
        raise AssertionError("over the limit accepted")
    except openai.UnprocessableEntityError as exc:
        assert exc.param == "max_tokens" and "limit" in exc.message and exc.code == "invalid"
    assert done.choices[0].finish_reason in ("length", "stop")
    chat = client.chat.completions.with_raw_response.create(
        model="demo-text-generation", messages=[{"role": "user", "content": "Hello"}], max_tokens=3)
    assert float(chat.headers["x-energy-joules"]) > 0
    parsed = chat.parse()
    assert parsed.object == "chat.completion" and parsed.choices[0].message.role == "assistant"
    messages = [{"role": "user", "content": "Tell me about carbon"}]
    # the loop OpenAI's own examples use: choices[0] of every chunk (a chunk with no choices broke it)
    chunks = []
    for chunk in client.chat.completions.create(model="demo-text-generation", stream=True, max_tokens=6,
                                                temperature=0, messages=messages):
        chunks.append(chunk)
        assert isinstance(chunk.choices[0].delta.content or "", str)
    last = chunks[-1]
    energy = last.usage.model_extra["energy"]
    assert last.choices[0].finish_reason in ("length", "stop") and energy["energy_j"] > 0
    assert energy["status"] in ("final", "provisional") and last.usage.completion_tokens <= 6
    # asked for with stream_options, usage comes as OpenAI sends it: a last chunk with no choices
    chunks = list(client.chat.completions.create(model="demo-text-generation", stream=True, max_tokens=6,
                                                 temperature=0, messages=messages,
                                                 stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.model_extra["energy"]["energy_j"] > 0
    assert chunks[-2].choices[0].finish_reason in ("length", "stop") and chunks[-2].usage is None


def test_sse_stream_of_completions_ends_with_energy_then_done(server):
    with httpx.stream("POST", f"{server.url}/v1/completions", timeout=60,
                      json={"model": "demo-text-generation", "prompt": "energy", "max_tokens": 5, "stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    final = json.loads(events[-2])
    assert final["choices"][0]["finish_reason"] in ("length", "stop") and 1 <= final["usage"]["completion_tokens"] <= 5
    energy = final["usage"]["energy"]
    assert energy["status"] == "final" and energy["energy_j"] > 0 and energy["tokens_out"] == \
        final["usage"]["completion_tokens"]
    pieces = [json.loads(e)["choices"][0]["text"] for e in events[:-1]]
    assert all(isinstance(p, str) for p in pieces)


def test_openai_routes_refuse_other_tasks(server):
    r = httpx.post(f"{server.url}/v1/chat/completions",
                   json={"model": "all-MiniLM-L6-v2", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 400 and r.json()["field"] == "model"
    r = httpx.post(f"{server.url}/v1/completions", json={"model": "demo-text-generation", "prompt": "x", "n": 2})
    assert r.status_code == 422 and r.json()["field"] == "n"


def test_openapi_schema_survives_fuzzing(server):
    """schemathesis against the real server: every response documented, no 5xx, valid input accepted and
    invalid input refused (bounded: a few examples per operation, deterministic)."""
    import subprocess
    import sys
    from pathlib import Path

    st = Path(sys.executable).with_name("st")
    result = subprocess.run([str(st), "run", f"{server.url}/openapi.json", "-n", "10", "--generation-deterministic",
                             "--request-timeout", "30", "--no-color"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:]
    assert " passed" in result.stdout and "failed" not in result.stdout.split("SUMMARY")[-1]
