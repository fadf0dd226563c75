"""A resto-5-compatible THISME simulator: deterministic catalogue + HTTP server."""

from thisme_stac.simulator.catalogue import GeneratedCatalogue
from thisme_stac.simulator.faults import Faults
from thisme_stac.simulator.geotiff import geotiff_bytes, soil_moisture_field
from thisme_stac.simulator.server import RequestRecord, SimulatorServer

__all__ = [
    "Faults",
    "GeneratedCatalogue",
    "RequestRecord",
    "SimulatorServer",
    "geotiff_bytes",
    "soil_moisture_field",
]
