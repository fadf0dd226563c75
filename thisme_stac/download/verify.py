"""Checks of downloaded bytes: ``file:size`` and ``file:checksum`` (multihash, hex)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: multihash code -> hashlib constructor
HASHES: dict[int, Callable[[], Any]] = {
    0x11: hashlib.sha1,
    0x12: hashlib.sha256,
    0x13: hashlib.sha512,
    0x14: hashlib.sha3_512,
    0x16: hashlib.sha3_256,
    0xD5: hashlib.md5,
    0xB220: lambda: hashlib.blake2b(digest_size=32),
    0xB240: hashlib.blake2b,
}


@dataclass(frozen=True)
class Expected:
    """What a file must be; ``None`` fields are unknown."""

    size: int | None = None
    code: int | None = None
    digest: bytes | None = None

    @property
    def verifiable(self) -> bool:
        return self.size is not None or self.digest is not None

    def new_hash(self) -> Any | None:
        return HASHES[self.code]() if self.code in HASHES else None


def _varint(data: bytes) -> tuple[int, int]:
    value, shift = 0, 0
    for index, byte in enumerate(data[:9]):
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, index + 1
        shift += 7
    raise ValueError("bad varint")


def parse_multihash(text: str) -> tuple[int, bytes] | None:
    """``"1220<64 hex>"`` -> (0x12, digest); None if not a multihash this module knows."""
    try:
        raw = bytes.fromhex(text.strip())
        code, used = _varint(raw)
        length, used2 = _varint(raw[used:])
    except ValueError:
        return None
    digest = raw[used + used2 :]
    if code not in HASHES or len(digest) != length:
        return None
    return code, digest


def expected_for(asset: dict[str, Any]) -> Expected:
    size = asset.get("file:size")
    checksum = asset.get("file:checksum")
    parsed = parse_multihash(checksum) if isinstance(checksum, str) else None
    return Expected(
        size=size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None,
        code=parsed[0] if parsed else None,
        digest=parsed[1] if parsed else None,
    )


class Digests:
    """sha256 (for the manifest) and the declared multihash, sharing sha2-256 when equal."""

    def __init__(self, expected: Expected) -> None:
        self.sha = hashlib.sha256()
        self.extra = self.sha if expected.code == 0x12 else expected.new_hash()
        self.all = [self.sha] if self.extra in (None, self.sha) else [self.sha, self.extra]

    def update(self, data: bytes | bytearray | memoryview) -> None:
        for digest in self.all:
            digest.update(data)

    def feed(self, path: Path) -> None:
        """Hash a file in 1 MiB blocks."""
        with path.open("rb") as handle:
            while block := handle.read(1 << 20):
                self.update(block)

    @property
    def declared(self) -> bytes | None:
        """The digest to compare with ``file:checksum`` (None when it is not checkable)."""
        return self.extra.digest() if self.extra is not None else None

    @property
    def sha256(self) -> str:
        return str(self.sha.hexdigest())


def check_file(path: Path, expected: Expected) -> tuple[int, str, str | None]:
    """(size, sha256 hex, why it does not match or None) of a file on disk."""
    digests = Digests(expected)
    digests.feed(path)
    size = path.stat().st_size
    return size, digests.sha256, problem(expected, size, digests.declared)


def problem(expected: Expected, size: int, digest: bytes | None) -> str | None:
    """Why a file does not match, or None."""
    if expected.size is not None and size != expected.size:
        return f"size {size} differs from the declared {expected.size}"
    if expected.digest is not None and digest is not None and digest != expected.digest:
        return "checksum differs from file:checksum"
    return None
