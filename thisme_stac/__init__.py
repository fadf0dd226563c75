"""THISME soil-moisture catalogue (resto 5) as STAC: harvester, stores, downloader."""

__version__ = "0.1.0"
