"""STAC API over a thisme-stac store, built on stac-fastapi."""

import logging

# stac-fastapi reads its own defaults at import and warns that they are defaults; this API
# always sets its title, description, id and version through ``ApiSettings``.
logging.getLogger("stac_fastapi.types.config").setLevel(logging.ERROR)

from thisme_stac_api.app import create_app, instantiate_api  # noqa: E402
from thisme_stac_api.config import ApiSettings  # noqa: E402

__all__ = ["ApiSettings", "create_app", "instantiate_api"]
