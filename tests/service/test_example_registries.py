from pathlib import Path

import pytest

from service.registry import load_registry

MODELS = Path(__file__).resolve().parents[2] / "service" / "models"


@pytest.mark.parametrize("path", sorted(MODELS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_registries_are_valid(path):
    registry = load_registry(path)
    assert registry.models and all(m.trust_remote_code is False for m in registry.models)


def test_paper_registry_covers_every_text_task_with_the_papers_generation_arguments():
    registry = load_registry(MODELS / "power-hungry.yaml")
    tasks = {m.task for m in registry.models}
    assert tasks == {"text-classification", "question-answering", "fill-mask", "token-classification",
                     "text-generation", "summarization", "feature-extraction"}
    gpt2 = next(m for m in registry.models if m.name == "gpt2")
    assert gpt2.generation["max_new_tokens"] == 10
    bart = next(m for m in registry.models if m.name == "bart-large-cnn")
    assert (bart.generation["min_new_tokens"], bart.generation["max_new_tokens"]) == (10, 15)
