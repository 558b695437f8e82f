"""The campaign file (YAML): models x datasets x repetitions, and how to reach the server.

See ``loadtest/presets/*.yaml`` for complete examples (``demo``: offline, the embedded default; ``power-hungry``:
the paper's text tasks on the Hub models).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PRESETS_DIR = Path(__file__).with_name("presets")


class SpecError(ValueError):
    """The campaign file is unreadable or invalid: the message names the file, the entry and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetSpec(_Strict):
    source: str = Field(min_length=1, description="bundled:NAME, hub:ID, a .jsonl/.json/.csv/.parquet file or a "
                                                  "save_to_disk folder (relative paths: to the campaign file)")
    config: str | None = Field(None, description="Hub dataset configuration, e.g. 3.0.0 for cnn_dailymail")
    split: str = "test"
    columns: dict[str, str] = Field(default_factory=dict, description="role -> column: text, question, context")
    template: str | None = Field(None, description="applied to the text, e.g. 'Summarize: {text}. Summary:'")
    skip_empty: bool = Field(True, description="rows whose mapped text is empty are not candidates (wikitext has "
                                               "blank lines; a model cannot answer an empty input)")

    @field_validator("template")
    @classmethod
    def _has_slot(cls, v: str | None) -> str | None:
        if v is not None and "{text}" not in v:
            raise ValueError("template must contain {text}")
        return v


class ServerSpec(_Strict):
    url: str | None = Field(None, pattern=r"^https?://", description="a running wattserve; none: start one")
    registry: Path | None = Field(None, description="embedded server: model registry (default: the embedded one)")
    accounting: Literal["loaded", "marginal"] = "loaded"
    api_key_env: str | None = Field(None, description="environment variable holding a bearer key")
    startup_timeout_s: float = Field(600, gt=0)

    @property
    def embedded(self) -> bool:
        return self.url is None


class CarbonSpec(_Strict):
    """Given to an embedded server; a running server's own settings are recorded as they are."""

    intensity_g_per_kwh: float | None = Field(None, ge=0, lt=5000)
    country: str | None = Field(None, description="ISO alpha-3 (CodeCarbon's offline data)")
    region: str | None = None
    pue: float = Field(1.0, ge=1.0, le=5.0)


class ModelRuns(_Strict):
    model: str = Field(min_length=1, description="the served model's name")
    datasets: list[str] = Field(min_length=1)
    generation: dict[str, Any] = Field(default_factory=dict, description="request fields, e.g. max_new_tokens")


class Stage(_Strict):
    duration_s: float = Field(gt=0, le=24 * 3600)
    users: int = Field(ge=1, le=10_000)
    spawn_rate: float = Field(10.0, gt=0)


class LoadRuns(_Strict):
    """A load campaign: Locust ramps concurrent users through the stages; J/request and latency per stage."""

    model: str
    dataset: str
    stages: list[Stage] = Field(min_length=1)
    generation: dict[str, Any] = Field(default_factory=dict)


class Campaign(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    description: str = ""
    server: ServerSpec = Field(default_factory=ServerSpec)
    carbon: CarbonSpec | None = None
    samples: int = Field(1000, ge=1, le=10_000_000)
    repetitions: int = Field(1, ge=1, le=1000)
    warmup: int = Field(10, ge=0, le=10_000, description="unmeasured requests before each repetition")
    seed: int = Field(0, ge=0)
    allow_fewer: bool = Field(False, description="a dataset with fewer rows: replay all of them (else an error)")
    datasets: dict[str, DatasetSpec] = Field(min_length=1)
    models: list[ModelRuns] = Field(default_factory=list)
    load: list[LoadRuns] = Field(default_factory=list)
    base_dir: Path | None = Field(None, exclude=True, description="where relative dataset paths start")

    @field_validator("server", mode="before")
    @classmethod
    def _server_shorthand(cls, v: Any) -> Any:
        if v == "embedded" or v is None:
            return {}
        if isinstance(v, str):
            return {"url": v}
        return v

    @model_validator(mode="after")
    def _references(self) -> Campaign:
        if not self.models and not self.load:
            raise ValueError("nothing to run: give models (sequential replay) and/or load (load campaigns)")
        for i, entry in enumerate(self.models):
            for ds in entry.datasets:
                if ds not in self.datasets:
                    raise ValueError(f"models[{i}] ({entry.model}): unknown dataset {ds!r}; defined: "
                                     f"{', '.join(self.datasets)}")
        for i, entry in enumerate(self.load):
            if entry.dataset not in self.datasets:
                raise ValueError(f"load[{i}] ({entry.model}): unknown dataset {entry.dataset!r}")
        return self


def run_id(model: str, dataset: str, repetition: int | None) -> str:
    """Folder name of a run: ``<model>__<dataset>__repNN``, or ``__load`` for a load run (no repetition)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{model}__{dataset}")
    return f"{safe}__load" if repetition is None else f"{safe}__rep{repetition:02d}"


def presets() -> dict[str, Path]:
    return {p.stem: p for p in sorted(PRESETS_DIR.glob("*.yaml"))}


def load_campaign(path_or_preset: str | Path, **overrides: Any) -> Campaign:
    """A campaign file, or a preset by name (``demo``, ``power-hungry``); ``overrides`` replace top-level fields."""
    path = Path(path_or_preset)
    if not path.exists() and str(path_or_preset) in presets():
        path = presets()[str(path_or_preset)]
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SpecError(f"cannot read campaign {path_or_preset} ({exc}); presets: {', '.join(presets())}") from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"campaign {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise SpecError(f"campaign {path}: expected a mapping at the top")
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        campaign = Campaign.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors())
        raise SpecError(f"campaign {path} is invalid: {problems}") from exc
    campaign.base_dir = path.resolve().parent
    if campaign.server.registry is not None and not campaign.server.registry.is_absolute():
        campaign.server.registry = campaign.base_dir / campaign.server.registry
    return campaign
