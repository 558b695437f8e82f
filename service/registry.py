"""The model registry file (YAML): which models to serve, from where, on which device, with which limits."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from service.tasks import TASKS


class RegistryError(ValueError):
    """The registry file is unreadable or invalid; the message names the file, the entry and the field."""


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    task: str
    source: str = Field(min_length=1, description="Hub id (org/name), a local folder, or package:<module>")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit)")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    max_input_tokens: int = Field(512, ge=1, le=1_000_000)
    truncate: bool = Field(False, description="truncate long inputs instead of answering 413")
    max_batch: int = Field(64, ge=1, le=4096, description="most inputs in one request")
    generation: dict[str, Any] = Field(default_factory=dict, description="generation defaults")
    trust_remote_code: bool = False
    demo: bool = Field(False, description="random-weight demo model: its outputs mean nothing")

    @field_validator("device")
    @classmethod
    def _one_spelling(cls, device: str) -> str:
        """``cuda`` and ``cuda:00`` are ``cuda:0``: models on one GPU then share its one inference thread."""
        return f"cuda:{int(device[5:] or 0)}" if device.startswith("cuda") else device

    @field_validator("task")
    @classmethod
    def _known_task(cls, task: str) -> str:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; supported: {', '.join(sorted(TASKS))}")
        return task

    @property
    def max_new_tokens(self) -> int:
        """Tokens a generation request gets when it names none: ``generation.max_new_tokens``, else 20."""
        return int(self.generation.get("max_new_tokens", 20))

    def new_tokens(self, requested: int | None) -> int:
        """Tokens a generation request gets: what it asked for, else the model's default."""
        return requested or self.max_new_tokens

    @property
    def max_new_tokens_limit(self) -> int:
        """The most tokens a generation request may ask for: ``generation.max_new_tokens_limit``, else 256."""
        return int(self.generation.get("max_new_tokens_limit", 256))


class Registry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[ModelSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> Registry:
        names = [m.name for m in self.models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"model names must be unique; repeated: {', '.join(dupes)}")
        return self


def load_registry(path: Path) -> Registry:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise RegistryError(f"cannot read model registry {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise RegistryError(f"model registry {path} is not valid YAML: {exc}") from exc
    try:
        registry = Registry.model_validate(data if data is not None else {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors())
        raise RegistryError(f"model registry {path} is invalid: {problems}") from exc
    # relative folders are relative to the registry file, not to the working directory
    base = Path(path).resolve().parent
    models = [m.model_copy(update={"source": str(base / m.source)}) if m.source.startswith(("./", "../")) else m
              for m in registry.models]
    return Registry(models=models)
