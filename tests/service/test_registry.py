import pytest

from service.registry import RegistryError, load_registry


def write(tmp_path, text):
    path = tmp_path / "models.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, message", [
    ("models: []", "models: List should have at least 1 item"),
    ("models:\n  - {name: a, task: translation, source: x}", "models.0.task: Value error, unknown task 'translation'"),
    ("models:\n  - {name: a, task: feature-extraction, source: x, device: gpu}", "models.0.device"),
    ("models:\n  - {name: a, task: feature-extraction, source: x, colour: red}", "models.0.colour"),
    ("models:\n  - {name: a, task: feature-extraction, source: x}\n  - {name: a, task: feature-extraction, source: y}",
     "repeated: a"),
    ("models: [unclosed", "not valid YAML"),
    ("models:\n  - {name: 'bad name', task: feature-extraction, source: x}", "models.0.name"),
])
def test_invalid_registries_name_the_entry_and_field(tmp_path, text, message):
    with pytest.raises(RegistryError, match="models.yaml") as info:
        load_registry(write(tmp_path, text))
    assert message in str(info.value)


def test_relative_folders_resolve_against_the_registry_file(tmp_path):
    registry = load_registry(write(tmp_path, "models:\n  - {name: a, task: feature-extraction, source: ./m}\n"
                                             "  - {name: b, task: feature-extraction, source: org/model}"))
    assert registry.models[0].source == str(tmp_path / "m")
    assert registry.models[1].source == "org/model" and registry.models[1].trust_remote_code is False


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(RegistryError, match="cannot read model registry"):
        load_registry(tmp_path / "absent.yaml")
