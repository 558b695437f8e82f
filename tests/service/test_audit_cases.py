"""Defects an audit found as a demanding user, each pinned by a test: ordinary input that crashed (500), refusals
hidden inside a 200 stream, OpenAI fields silently ignored, refusals miscounted in Prometheus. Real uvicorn on the
embedded default registry."""
import json

import httpx
import pytest

from tests.service.test_tasks import monkeypatch_module, server  # noqa: F401 - the module's server fixture

GEN = "demo-text-generation"


def post(server, path, body, **kw):  # noqa: F811
    return httpx.post(f"{server.url}{path}", json=body, timeout=60, **kw)


def problem(r, status, field=None, limit=None):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    if field is not None:
        assert body["field"] == field, body
    if limit is not None:
        assert body["limit"] == limit, body
    return body


def count(server, model, status):  # noqa: F811
    text = httpx.get(f"{server.url}/metrics").text
    key = f'wattserve_requests_total{{model="{model}",status="{status}",task='
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(key))


def test_a_prompt_leaves_room_for_the_tokens_it_asks_for(server):  # noqa: F811
    """The demo GPT-2 has 512 positions: a 506-token prompt + 10 new tokens overflowed them (IndexError, 500).
    The registry truncates, so the prompt is cut from the left to fit; the answer is whole."""
    prompt = " ".join(["infer"] * 505)
    r = post(server, f"/v1/models/{GEN}/infer", {"inputs": prompt, "max_new_tokens": 10, "min_new_tokens": 10})
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["tokens"] == 10 and r.headers["x-energy-status"] in ("provisional", "final")
    assert httpx.get(f"{server.url}/v1/models/{GEN}").json()["max_input_tokens"] == 512
    r = post(server, "/v1/completions", {"model": GEN, "prompt": " ".join(["word"] * 3000), "max_tokens": 4})
    assert r.status_code == 200, r.text
    r = post(server, f"/v1/models/{GEN}/infer", {"inputs": "x", "max_new_tokens": 128})
    assert r.status_code == 200, r.text


def test_a_question_too_long_for_the_model_is_413_not_500(server):  # noqa: F811
    r = post(server, "/v1/models/demo-question-answering/infer",
             {"inputs": {"question": " ".join(["word"] * 3000), "context": "Bob went home."}})
    body = problem(r, 413, field="inputs.0.question")
    assert 0 < body["limit"] < 512


def test_tiny_temperatures_decode_greedily(server):  # noqa: F811
    """OpenAI's temperature 0 is greedy; 0.005 crashed (500) on the internal minimum of 0.01."""
    greedy = post(server, "/v1/completions", {"model": GEN, "prompt": "hi", "temperature": 0, "max_tokens": 5})
    tiny = post(server, "/v1/completions", {"model": GEN, "prompt": "hi", "temperature": 0.005, "max_tokens": 5})
    assert greedy.status_code == tiny.status_code == 200, tiny.text
    assert greedy.json()["choices"][0]["text"] == tiny.json()["choices"][0]["text"]
    chat = post(server, "/v1/chat/completions", {"model": GEN, "messages": [{"role": "user", "content": "hi"}],
                                                 "temperature": 0.001, "max_tokens": 3})
    assert chat.status_code == 200, chat.text


@pytest.mark.parametrize("raw", ['{"inputs":"x","top_k":' + "9" * 5000 + "}", '{"inputs":' + "[" * 5000],
                         ids=["5000-digit number", "5000 levels deep"])
@pytest.mark.parametrize("path", ["/v1/models/demo-text-classification/infer", "/v1/embeddings"])
def test_json_python_cannot_parse_is_422_naming_the_body(server, raw, path):  # noqa: F811
    r = httpx.post(f"{server.url}{path}", content=raw, headers={"content-type": "application/json"})
    problem(r, 422, field="body")


def test_a_chunked_body_over_the_limit_is_413_on_every_route(server):  # noqa: F811
    def chunks():
        yield b'{"model": "all-MiniLM-L6-v2", "input": "'
        for _ in range(1200):
            yield b"x" * 1000
        yield b'"}'

    for path in ("/v1/embeddings", "/v1/models/all-MiniLM-L6-v2/infer"):
        r = httpx.post(f"{server.url}{path}", content=chunks(), headers={"content-type": "application/json"})
        problem(r, 413, field="body", limit=1048576)


def test_a_declared_body_over_the_limit_is_413_and_counted_for_its_model(server):  # noqa: F811
    before = count(server, "demo-text-classification", "4xx")
    r = post(server, "/v1/models/demo-text-classification/infer", {"inputs": "x" * (2 << 20)})
    problem(r, 413, field="body", limit=1048576)
    assert count(server, "demo-text-classification", "4xx") == before + 1


@pytest.mark.parametrize("body, status, field", [
    ({"model": GEN, "prompt": "hi", "max_tokens": 1000, "stream": True}, 422, "max_tokens"),
    ({"model": GEN, "prompt": "hi", "stream": True, "logprobs": 5}, 422, "logprobs"),
], ids=["over max_tokens", "unsupported logprobs"])
def test_a_stream_refused_before_it_starts_gets_its_own_status(server, body, status, field):  # noqa: F811
    """Before, the status line went out at once: 200 with an error event inside the stream."""
    problem(post(server, "/v1/completions", body), status, field=field)


def test_a_stream_carries_its_request_id_and_the_final_event_the_same_record(server):  # noqa: F811
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", timeout=60,
                      json={"model": GEN, "messages": [{"role": "user", "content": "x"}], "max_tokens": 4,
                            "stream": True}) as r:
        assert r.status_code == 200
        request_id = r.headers["x-request-id"]
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert json.loads(events[-2])["usage"]["energy"]["request_id"] == request_id


def test_stop_sequences_end_the_text(server):  # noqa: F811
    """`stop` was accepted and ignored. Greedy text of the demo model, then the same cut at a piece of it."""
    free = post(server, "/v1/completions", {"model": GEN, "prompt": "hello", "temperature": 0, "max_tokens": 12})
    text = free.json()["choices"][0]["text"]
    assert free.json()["choices"][0]["finish_reason"] == "length" and len(text) >= 4
    stop = text[2:4]
    cut = post(server, "/v1/completions", {"model": GEN, "prompt": "hello", "temperature": 0, "max_tokens": 12,
                                           "stop": [stop, "\u2603never"]})
    choice = cut.json()["choices"][0]
    assert choice["text"] == text[:text.find(stop)] and choice["finish_reason"] == "stop"
    with httpx.stream("POST", f"{server.url}/v1/completions", timeout=60,
                      json={"model": GEN, "prompt": "hello", "temperature": 0, "max_tokens": 12, "stop": stop,
                            "stream": True}) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    streamed = "".join(e["choices"][0]["text"] for e in events)
    assert streamed == choice["text"] and events[-1]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("field, value", [("echo", True), ("best_of", 3), ("logit_bias", {"1": 5}),
                                          ("presence_penalty", 0.5)])
def test_openai_fields_not_implemented_are_refused_not_ignored(server, field, value):  # noqa: F811
    problem(post(server, "/v1/completions", {"model": GEN, "prompt": "x", field: value}), 422, field=field)


def test_openai_fields_at_their_no_op_values_are_accepted(server):  # noqa: F811
    r = post(server, "/v1/completions", {"model": GEN, "prompt": "x", "max_tokens": 2, "echo": False,
                                         "logprobs": None, "best_of": 1, "presence_penalty": 0.0,
                                         "frequency_penalty": 0, "user": "someone"})
    assert r.status_code == 200, r.text


def test_problems_name_the_field_the_client_sent(server):  # noqa: F811
    problem(post(server, "/v1/completions", {"model": GEN, "prompt": "x", "max_tokens": 1000}), 422,
            field="max_tokens", limit=128)
    problem(post(server, "/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": ["x"] * 65}), 413,
            field="input", limit=64)
    body = problem(post(server, "/v1/models/demo-text-classification/infer", {"inputs": "x", "top_k": 1000}), 422,
                   field="top_k", limit=100)
    assert body["errors"][0]["limit"] == 100


def test_fill_mask_results_are_per_input(server):  # noqa: F811
    r = post(server, "/v1/models/demo-fill-mask/infer", {"inputs": ["one [MASK]", "two [MASK] [MASK]"], "top_k": 2})
    results = r.json()["results"]
    assert len(results) == 2
    assert [c["mask"] for c in results[0]] == [0, 0] and [c["mask"] for c in results[1]] == [0, 0, 1, 1]
    r = post(server, "/v1/models/demo-fill-mask/infer", {"inputs": " ".join(["word"] * 3000) + " [MASK]"})
    problem(r, 413, field="inputs.0")


def test_summaries_follow_the_seed(server):  # noqa: F811
    body = {"inputs": "hi", "do_sample": True, "seed": 1, "max_new_tokens": 8}
    first, second = (post(server, "/v1/models/demo-summarization/infer", body).json() for _ in range(2))
    assert first["results"][0]["summary_text"] == second["results"][0]["summary_text"]


def test_failures_are_counted_as_what_the_client_got(server):  # noqa: F811
    before = count(server, "all-MiniLM-L6-v2", "4xx"), count(server, "all-MiniLM-L6-v2", "2xx")
    # refused before it runs (it used to run, cost energy, answer 422 and count as a success)
    problem(post(server, "/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": "x", "dimensions": 7}), 422,
            field="dimensions", limit=384)
    problem(post(server, "/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": 5}), 422, field="input")
    after = count(server, "all-MiniLM-L6-v2", "4xx"), count(server, "all-MiniLM-L6-v2", "2xx")
    assert after == (before[0] + 2, before[1])


def test_a_crash_inside_the_model_is_counted_as_5xx(server, monkeypatch):  # noqa: F811
    runner = server.app.state.runtime.models["demo-text-classification"].runner

    def broken(prepared):
        raise RuntimeError("a model bug")

    monkeypatch.setattr(runner, "run", broken)
    before = count(server, "demo-text-classification", "5xx")
    problem(post(server, "/v1/models/demo-text-classification/infer", {"inputs": "x"}), 500)
    assert count(server, "demo-text-classification", "5xx") == before + 1
