"""Exception hierarchy: every error a user can trigger is a ThismeError with a readable message."""

from __future__ import annotations


class ThismeError(Exception):
    """Base class; ``str(err)`` is a one-line message fit for a CLI user."""


class ConfigError(ThismeError):
    """Invalid settings or command-line input."""


class QueryError(ConfigError):
    """A THISME address-bar query (``-urlq``) that cannot be understood."""


class RestoError(ThismeError):
    """The resto server could not be reached or answered with an error."""

    def __init__(self, message: str, *, status: int | None = None, url: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.url = url


class TranslationError(ThismeError):
    """A resto feature that cannot become a valid STAC Item."""


class StoreError(ThismeError):
    """A store that cannot be opened, read or written."""


class DownloadError(ThismeError):
    """A product that could not be downloaded."""


class ChecksumMismatch(DownloadError):
    """Downloaded bytes do not match the declared size or checksum."""
