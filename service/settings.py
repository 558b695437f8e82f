"""All configuration in one pydantic settings class, read once (environment ``WATTSERVE_*`` or CLI flags)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

EMBEDDED_REGISTRY = Path(__file__).with_name("models") / "embedded.yaml"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WATTSERVE_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    registry: Path = Field(EMBEDDED_REGISTRY, description="model registry YAML")
    strict: bool = Field(False, description="exit if any model fails to load")
    max_body_bytes: int = Field(1 << 20, ge=1024, description="largest accepted request body")
    queue_size: int = Field(64, ge=1, description="requests waiting per model before 429")
    request_timeout_s: float = Field(60.0, gt=0)
    metering: bool = Field(True, description="meter energy (off: for overhead comparisons only)")
    accounting: Literal["loaded", "marginal"] = "loaded"
    carbon_intensity_g_per_kwh: float | None = Field(None, ge=0, lt=5000)
    carbon_country: str | None = Field(None, description="ISO 3166-1 alpha-3, CodeCarbon's offline data")
    carbon_region: str | None = None
    carbon_timeseries: Path | None = Field(None, description="CSV timestamp,g_per_kwh")
    pue: float = Field(1.0, ge=1.0, le=5.0)
    embodied_g: float | None = Field(None, ge=0, description="hardware embodied emissions, gCO2e")
    embodied_lifetime_s: float = Field(4 * 365.25 * 86400, gt=0)
    api_keys_file: Path | None = None
    api_keys: str | None = Field(None, description="comma-separated bearer keys")
    records_kept: int = Field(10_000, ge=1, description="recent requests whose energy can be looked up")
