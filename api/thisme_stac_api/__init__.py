"""STAC API over a thisme-stac store, built on stac-fastapi."""

from thisme_stac_api.app import create_app, instantiate_api
from thisme_stac_api.config import ApiSettings

__all__ = ["ApiSettings", "create_app", "instantiate_api"]
