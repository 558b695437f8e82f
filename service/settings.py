"""All configuration in one pydantic settings class, read once (environment ``WATTSERVE_*`` or CLI flags)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

EMBEDDED_REGISTRY = Path(__file__).with_name("models") / "embedded.yaml"


class ConfigError(ValueError):
    """A setting that cannot work (a keys file that cannot be read, ...): `wattserve serve` says so in one line."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WATTSERVE_", extra="ignore", allow_inf_nan=False)

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    registry: Path = Field(EMBEDDED_REGISTRY, description="model registry YAML")
    strict: bool = Field(False, description="exit if any model fails to load")
    max_body_bytes: int = Field(1 << 20, ge=1024, description="largest accepted request body")
    queue_size: int = Field(64, ge=1, description="requests per model, the one running included, before 429")
    request_timeout_s: float = Field(60.0, gt=0)
    shutdown_timeout_s: float | None = Field(None, gt=0, description="on SIGTERM, how long in-flight requests may "
                                             "take to finish before the server stops anyway (default: the request "
                                             "timeout + 5 s; keep it under the orchestrator's grace period)")
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

    @property
    def graceful_shutdown_s(self) -> float:
        """How long a shutdown waits for in-flight requests: by default a request that just started can finish."""
        return self.shutdown_timeout_s if self.shutdown_timeout_s is not None else self.request_timeout_s + 5.0

    @model_validator(mode="after")
    def _one_intensity_source(self) -> Settings:
        sources = [name for name, value in (("carbon_timeseries", self.carbon_timeseries),
                                            ("carbon_intensity_g_per_kwh", self.carbon_intensity_g_per_kwh),
                                            ("carbon_country", self.carbon_country)) if value is not None]
        if len(sources) > 1:
            raise ValueError(f"one grid carbon intensity source at a time, not {' and '.join(sources)}")
        if self.carbon_region is not None and self.carbon_country is None:
            raise ValueError("carbon_region needs carbon_country (e.g. USA with oregon)")
        return self
