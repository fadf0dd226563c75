"""Seeded fault injection for the simulator: slow, failing, garbled and shifting answers.

A :class:`Faults` value says how often each fault happens; a :class:`FaultInjector` draws, for
each request, a :class:`Plan` from a random generator seeded with ``(seed, method, target, n)``
where ``n`` counts earlier requests of the same target. The same seed thus gives the same faults
for the same sequence of requests to a URL, whatever the interleaving of concurrent clients, and
a retried request gets a fresh draw. With no fault switched on the simulator behaves exactly as
without injection.

Spec strings (``thisme-stac simulate --faults``) are comma-separated ``key=value`` pairs, e.g.
``5xx=0.2,truncate=0.05,latency=50ms,seed=7``; rates are probabilities per request (``0.2`` or
``20%``), durations take ``ms``, ``s``, ``m``, ``h`` or ``d`` (seconds when bare).
"""

from __future__ import annotations

import random
import re
import threading
from collections import Counter
from dataclasses import dataclass, fields, replace
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from thisme_stac.errors import ConfigError
from thisme_stac.simulator.catalogue import GeneratedCatalogue

ERROR_STATUSES = (500, 502, 503, 504)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_RE = re.compile(r"([0-9]*\.?[0-9]+)\s*(ms|s|m|h|d)?")


@dataclass(frozen=True, slots=True)
class Faults:
    """How often each fault happens (rates are probabilities per request)."""

    seed: int = 0
    latency: float = 0.0  # seconds added before every answer
    error: float = 0.0  # 500/502/503/504 with a resto error body   (spec key "5xx")
    throttle: float = 0.0  # 429 with Retry-After                    (spec key "429")
    retry_after: float = 1.0  # the Retry-After of a 429, in seconds
    drop: float = 0.0  # connection closed without an answer
    cut: float = 0.0  # connection closed in the middle of the body
    truncate: float = 0.0  # complete HTTP answer whose JSON body is cut short
    duplicate: float = 0.0  # a search page repeats some of its features    (spec key "dup")
    shift: float = 0.0  # a cursor page starts up to limit-1 items before its cursor, as offset
    #                     paging does when items are published at the head between two requests
    publish: int = 0  # the first N cursor pages each publish new maps before being answered
    publish_step: float = 6 * 86400.0  # acquisition time added to the catalogue per publication
    stall: float = 0.0  # a download stops sending in the middle of its body for stall_time
    stall_time: float = 2.0

    @property
    def active(self) -> bool:
        return any(
            getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("seed", "retry_after", "publish_step", "stall_time")
        )

    @classmethod
    def parse(cls, spec: str) -> Faults:
        """Parse ``5xx=0.2,truncate=0.05,latency=50ms,seed=7``; ConfigError on bad input."""
        values: dict[str, Any] = {}
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            key, sep, raw = part.partition("=")
            key, raw = key.strip().lower(), raw.strip()
            name = _ALIASES.get(key, key)
            if not sep or name not in _KINDS:
                known = ", ".join(sorted({*_ALIASES, *_KINDS} - set(_ALIASES.values())))
                raise ConfigError(f"unknown fault {part!r}: use key=value with keys {known}")
            values[name] = _KINDS[name](raw, key)
        return cls(**values)

    def with_seed(self, seed: int) -> Faults:
        return replace(self, seed=seed)

    def describe(self) -> str:
        """The active switches, in spec syntax."""
        names = {v: k for k, v in _ALIASES.items()}
        default = Faults()
        shown = [
            f"{names.get(f.name, f.name)}={getattr(self, f.name):g}"
            for f in fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        ]
        return ",".join(shown) or "none"


def _rate(raw: str, key: str) -> float:
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ConfigError(f"fault {key}: {raw!r} is not a rate (0..1 or a percentage)") from None
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"fault {key}: rate {raw!r} is outside 0..1")
    return value


def _duration(raw: str, key: str) -> float:
    match = _DURATION_RE.fullmatch(raw)
    if not match:
        raise ConfigError(f"fault {key}: {raw!r} is not a duration (e.g. 50ms, 2s, 6d)")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def _count(raw: str, key: str) -> int:
    if not raw.isdigit():
        raise ConfigError(f"fault {key}: {raw!r} is not a whole number")
    return int(raw)


_ALIASES = {"5xx": "error", "429": "throttle", "dup": "duplicate"}
_KINDS = {
    "seed": _count,
    "latency": _duration,
    "error": _rate,
    "throttle": _rate,
    "retry_after": _duration,
    "drop": _rate,
    "cut": _rate,
    "truncate": _rate,
    "duplicate": _rate,
    "shift": _rate,
    "publish": _count,
    "publish_step": _duration,
    "stall": _rate,
    "stall_time": _duration,
}


@dataclass(frozen=True, slots=True)
class Plan:
    """The faults of one request. Shares in [0, 1) size the cut, the truncation, the shift and
    the duplicates."""

    latency: float = 0.0
    status: int = 0  # 5xx or 429 instead of the answer
    drop: bool = False
    cut: float | None = None
    truncate: float | None = None
    duplicate: float | None = None
    shift: float | None = None
    publish: bool = False
    stall: bool = False

    @property
    def garbled(self) -> bool:
        """The client will not receive this answer whole."""
        return bool(self.status or self.drop or self.cut is not None or self.truncate is not None)


NO_FAULT = Plan()


class FaultInjector:
    """Draws a :class:`Plan` per request and counts what reached the client."""

    def __init__(self, faults: Faults | None = None) -> None:
        self.faults = faults or Faults()
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, str]] = Counter()
        self._published = 0
        self._publish_lock = threading.Lock()
        #: faults served, by kind; ``duplicates`` counts repeated features of pages delivered whole
        self.stats: Counter[str] = Counter()

    def plan(self, method: str, target: str, *, search: bool, download: bool) -> Plan:
        f = self.faults
        if not f.active:
            return NO_FAULT
        with self._lock:
            n = self._requests[(method, target)]
            self._requests[(method, target)] += 1
            cursor = search and any(k in ("lt", "gt") for k, _ in parse_qsl(urlsplit(target).query))
            publish = cursor and self._published < f.publish
            if publish:
                self._published += 1
        rng = random.Random(f"{f.seed}|{method}|{target}|{n}")
        draws = [rng.random() for _ in range(9)]
        shares = [rng.random() for _ in range(4)]
        status = 0
        if draws[0] < f.error:
            status = ERROR_STATUSES[int(shares[0] * len(ERROR_STATUSES))]
        elif draws[1] < f.throttle:
            status = 429
        answered = not status and not draws[2] < f.drop
        body = answered and method != "HEAD"
        cut = shares[1] if body and draws[3] < f.cut else None
        whole = body and cut is None
        plan = Plan(
            latency=f.latency,
            status=status,
            drop=not status and not answered,
            cut=cut,
            truncate=shares[1] if whole and not download and draws[4] < f.truncate else None,
            duplicate=shares[2] if answered and search and draws[5] < f.duplicate else None,
            shift=shares[3] if answered and cursor and draws[6] < f.shift else None,
            publish=publish,
            stall=whole and download and draws[7] < f.stall,
        )
        with self._lock:
            for kind in ("drop", "publish"):
                if getattr(plan, kind):
                    self.stats[kind] += 1
            if plan.status:
                self.stats["429" if plan.status == 429 else "5xx"] += 1
        return plan

    def publish(self, catalogue: GeneratedCatalogue) -> None:
        """Extend ``catalogue`` by one publication step (new maps at the head of the order)."""
        with self._publish_lock:
            before = len(catalogue)
            catalogue.publish_until(catalogue.end + timedelta(seconds=self.faults.publish_step))
            self.count("published", len(catalogue) - before)

    def count(self, kind: str, n: int = 1) -> None:
        with self._lock:
            self.stats[kind] += n


def cut_point(size: int, share: float) -> int:
    """Where a body of ``size`` bytes is cut: at least one byte sent, at least one missing."""
    return 1 + int(share * max(size - 2, 0)) if size > 1 else 0


def duplicate_features(features: list[Any], share: float) -> int:
    """Repeat ``1..len(features)`` features in place (each copy right after its original, so
    the last feature, hence the next cursor, stays the same); the number of copies."""
    n = len(features)
    if not n:
        return 0
    k = 1 + int(share * (n - 1))
    chosen = sorted({(i * n) // k for i in range(k)}, reverse=True)
    for index in chosen:
        features.insert(index + 1, features[index])
    return len(chosen)


def shift_size(limit: int, share: float) -> int:
    """How many items before its cursor a shifted page repeats (1..limit-1; 0 when limit < 2)."""
    return 1 + int(share * (limit - 1)) if limit >= 2 else 0
