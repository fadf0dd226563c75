"""API settings (environment prefix ``THISME_``), on top of stac-fastapi's ``ApiSettings``."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict
from stac_fastapi.types.config import ApiSettings as StacFastApiSettings

from thisme_stac.settings import DEFAULT_STORE
from thisme_stac_api.limits import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_URL_BYTES,
)

#: Largest page a client gets; larger ``limit`` values are served as this maximum, as
#: OGC API Features requires ("SHALL NOT result in an error").
DEFAULT_MAX_LIMIT = 1000


def _split(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class ApiSettings(StacFastApiSettings):
    """Where the catalogue is, who may write to it, and how the API presents itself.

    ``THISME_STORE`` selects the store, ``THISME_API_KEY`` enables the transaction routes,
    ``THISME_CORS_ORIGINS`` (comma-separated, ``*`` by default) restricts browsers,
    ``THISME_ROOT_PATH`` serves the API below a path of a reverse proxy,
    ``THISME_MAX_BODY_BYTES`` / ``THISME_MAX_URL_BYTES`` / ``THISME_MAX_HEADER_BYTES`` bound
    what a request may send (413 / 414 / 431 beyond).
    """

    model_config = SettingsConfigDict(env_prefix="THISME_", extra="ignore", env_file=None)

    stac_fastapi_title: str = "THISME soil moisture"
    stac_fastapi_description: str = (
        "Very-high-resolution soil-moisture maps of THISME (THeia and Irstea Soil MoisturE), "
        "from Sentinel-1 and Sentinel-2, as a STAC API."
    )
    stac_fastapi_version: str = "0.1.0"
    stac_fastapi_landing_id: str = "thisme"

    store: str = DEFAULT_STORE
    api_key: SecretStr | None = None
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["*"])
    cors_origin_regex: str | None = None
    max_limit: int = DEFAULT_MAX_LIMIT
    browser_dir: str | None = None
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=1024)
    max_url_bytes: int = Field(default=DEFAULT_MAX_URL_BYTES, ge=1024)
    max_header_bytes: int = Field(default=DEFAULT_MAX_HEADER_BYTES, ge=1024)

    _split_origins = field_validator("cors_origins", mode="before")(_split)

    @field_validator("max_limit")
    @classmethod
    def _positive(cls, value: int) -> int:
        if not 1 <= value <= 10_000:
            raise ValueError("max_limit must be between 1 and 10000")
        return value
