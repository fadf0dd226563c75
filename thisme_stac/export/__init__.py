"""Exports of a store (stac-geoparquet, ndjson, static catalogue) and imports back into one.

``export_store(store, "geoparquet", "items.parquet")`` and ``import_items(path, store)`` are the
library API; ``thisme_stac.export.command`` holds the ``export`` and ``import`` CLI commands.
"""

from __future__ import annotations

from thisme_stac.export.common import FORMATS, ExportReport, Format, ImportReport
from thisme_stac.export.formats import check_format, detect_format, export_store, import_items

__all__ = [
    "FORMATS",
    "ExportReport",
    "Format",
    "ImportReport",
    "check_format",
    "detect_format",
    "export_store",
    "import_items",
]
