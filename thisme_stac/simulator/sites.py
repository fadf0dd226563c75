"""THISME-like sites: 22 real places (France, Europe, Mediterranean) and their Sentinel-1 orbits.

Footprints are small rectangles of a few tens of km; orbits are plausible Sentinel-1 relative
orbits with their pass direction and local acquisition time. These are simulator choices, not
THISME facts (Central-Italy, Occitanie and Montpellier follow the recorded fixtures).
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Orbit:
    relative: int
    direction: str  # "ascending" | "descending"
    seconds_of_day: int  # UTC acquisition time of Sentinel-1A
    phase: int | None = None  # first date = 2016-01-01 + phase days (default: spread by track)
    parity: int = 0  # which of S1A/S1B takes the first date
    other_shift: int = -47  # seconds between S1A's and the other satellite's overpass


@dataclass(frozen=True, slots=True)
class Site:
    name: str  # the description hashtag, e.g. "Central-Italy"
    bbox: tuple[float, float, float, float]
    orbits: tuple[Orbit, ...]

    @property
    def code(self) -> str:
        """Site as written in product identifiers (``CentralItaly``)."""
        return self.name.replace("-", "").replace("_", "")


def _t(h: int, m: int, s: int) -> int:
    return h * 3600 + m * 60 + s


SITES: tuple[Site, ...] = (
    Site(
        "Central-Italy",
        (12.2, 42.6, 12.95, 43.2),
        (Orbit(117, "ascending", _t(17, 6, 19), 5, 1), Orbit(22, "descending", _t(5, 10, 44))),
    ),
    Site(
        "Occitanie",
        (1.05, 43.35, 1.75, 43.8),
        (Orbit(30, "ascending", _t(17, 51, 27), 1, 1, -46), Orbit(110, "descending", _t(6, 5, 12))),
    ),
    Site("Montpellier", (3.65, 43.5, 4.05, 43.75), (Orbit(59, "ascending", _t(17, 42, 3), 4, 0),)),
    Site(
        "Camargue",
        (4.3, 43.35, 4.85, 43.7),
        (Orbit(59, "ascending", _t(17, 42, 28)), Orbit(37, "descending", _t(5, 49, 51))),
    ),
    Site("Beauce", (1.35, 48.0, 1.95, 48.45), (Orbit(132, "ascending", _t(17, 34, 12)),)),
    Site("Aurade", (1.0, 43.5, 1.15, 43.6), (Orbit(30, "ascending", _t(17, 50, 39)),)),
    Site("Lamasquere", (1.2, 43.45, 1.3, 43.52), (Orbit(30, "ascending", _t(17, 50, 40)),)),
    Site(
        "Crau",
        (4.75, 43.5, 5.05, 43.7),
        (Orbit(88, "ascending", _t(17, 33, 55)), Orbit(139, "descending", _t(5, 41, 20))),
    ),
    Site("Brittany", (-2.2, 47.95, -1.6, 48.3), (Orbit(30, "ascending", _t(18, 7, 2)),)),
    Site("Alsace", (7.3, 47.9, 7.7, 48.35), (Orbit(88, "ascending", _t(17, 25, 17)),)),
    Site(
        "Po-Valley",
        (9.6, 45.0, 10.3, 45.35),
        (Orbit(15, "ascending", _t(17, 15, 33)), Orbit(66, "descending", _t(5, 20, 9))),
    ),
    Site("Apulia", (15.4, 41.3, 16.0, 41.7), (Orbit(146, "ascending", _t(16, 52, 11)),)),
    Site(
        "Sardinia",
        (8.55, 39.85, 9.0, 40.2),
        (Orbit(15, "ascending", _t(17, 14, 2)), Orbit(168, "descending", _t(5, 24, 37))),
    ),
    Site("Catalonia", (0.6, 41.5, 1.2, 41.85), (Orbit(132, "ascending", _t(17, 57, 8)),)),
    Site("Valencia", (-0.6, 39.2, -0.2, 39.55), (Orbit(30, "ascending", _t(18, 2, 45)),)),
    Site(
        "Andalusia",
        (-5.9, 37.2, -5.3, 37.6),
        (Orbit(74, "ascending", _t(18, 19, 6)), Orbit(154, "descending", _t(6, 20, 51))),
    ),
    Site("Crete", (24.8, 35.0, 25.3, 35.3), (Orbit(102, "ascending", _t(16, 20, 27)),)),
    Site(
        "Thessaly",
        (22.1, 39.3, 22.6, 39.7),
        (Orbit(29, "ascending", _t(16, 30, 4)), Orbit(80, "descending", _t(4, 35, 48))),
    ),
    Site("Cyprus", (33.0, 35.0, 33.5, 35.3), (Orbit(160, "ascending", _t(15, 56, 40)),)),
    Site(
        "Bekaa",
        (35.85, 33.75, 36.25, 34.1),
        (Orbit(87, "ascending", _t(15, 47, 12)), Orbit(21, "descending", _t(3, 51, 28))),
    ),
    Site(
        "Kairouan",
        (9.75, 35.45, 10.2, 35.8),
        (Orbit(88, "ascending", _t(17, 17, 51)), Orbit(139, "descending", _t(5, 28, 3))),
    ),
    Site("Tensift", (-8.2, 31.4, -7.6, 31.8), (Orbit(147, "ascending", _t(18, 35, 14)),)),
)


def extra_sites(count: int, seed: int = 1092) -> tuple[Site, ...]:
    """Synthetic sites for large catalogues: half with two orbits, deterministic."""
    rng = random.Random(seed)
    out: list[Site] = []
    for n in range(count):
        lon = rng.uniform(-9.5, 36.0)
        lat = rng.uniform(31.0, 51.0)
        w, h = rng.uniform(0.1, 0.6), rng.uniform(0.1, 0.45)
        orbits = [Orbit(rng.randint(1, 175), "ascending", _t(17, 0, 0) + rng.randint(0, 5400))]
        if n % 2 == 0:
            orbits.append(
                Orbit(rng.randint(1, 175), "descending", _t(5, 0, 0) + rng.randint(0, 5400))
            )
        bbox = (round(lon, 4), round(lat, 4), round(lon + w, 4), round(lat + h, 4))
        out.append(Site(f"Site-{n + 1:04d}", bbox, tuple(orbits)))
    return tuple(out)
