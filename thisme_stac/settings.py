"""Settings shared by the CLI, the harvester and the API (environment prefix ``THISME_``)."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_RESTO_URL = "http://127.0.0.1:5252"
DEFAULT_COLLECTION = "SoilMoisture"
DEFAULT_STORE = "thisme.sqlite"


class ThismeSettings(BaseSettings):
    """Where the catalogue comes from and where it goes."""

    model_config = SettingsConfigDict(env_prefix="THISME_", extra="ignore")

    resto_url: str = DEFAULT_RESTO_URL
    collection: str = DEFAULT_COLLECTION
    store: str = DEFAULT_STORE
    page_size: int = 500
    #: a harvest announced with at least this many items fetches and translates its pages in a
    #: child process, using a second core (0: never)
    child_min_items: int = 5_000
    username: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    license: str = "other"
    timeout: float = 60.0
    retries: int = 5
