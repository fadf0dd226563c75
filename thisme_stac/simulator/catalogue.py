"""Deterministic THISME-like catalogue held as numpy arrays (no Python object per item).

One map every 6 days per site and Sentinel-1 orbit from 2016-01-01. Platforms alternate
S1A/S1B until S1B's end (2021-12-23), then S1A alone, then S1A/S1C from 2025-04-01. Each track
starts 0-5 days after 2016-01-01; with the 22 sites (32 site-orbit tracks) and dates up to
2026-01-01 this gives 32 x 609 = 19,488 maps; ``size="1m"`` adds 1,070 synthetic sites
(1,637 tracks, 996,933 maps). The recorded fixtures' Central-Italy, Occitanie and Montpellier maps
are part of the catalogue, with the same identifiers.
"""

from __future__ import annotations

import math
import threading
import unicodedata
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from thisme_stac.simulator.sites import SITES, Site, extra_sites

RESTO_NAMESPACE = uuid.UUID("92708059-2077-45a3-a4f3-1eb428789cff")
START = datetime(2016, 1, 1, tzinfo=UTC)
DEFAULT_END = datetime(2026, 1, 2, tzinfo=UTC)
S1B_END = datetime(2021, 12, 23, tzinfo=UTC)
S1C_START = datetime(2025, 4, 1, tzinfo=UTC)
CADENCE_S = 6 * 86400
PLATFORMS = ("S1A", "S1B", "S1C")
COLLECTION = "SoilMoisture"
SIZES = {"thisme": 0, "20k": 0, "1m": 1070, "fixtures": 0}
#: The nine products of the recorded resto 5.0.0 capture (tests/data/resto/resto5-ingest/).
FIXTURE_PRODUCTS = (
    "SM_CentralItaly_20200103T170619_S1A_R117",
    "SM_CentralItaly_20200109T170532_S1B_R117",
    "SM_CentralItaly_20200115T170619_S1A_R117",
    "SM_CentralItaly_20200121T170532_S1B_R117",
    "SM_CentralItaly_20200127T170619_S1A_R117",
    "SM_CentralItaly_20200202T170532_S1B_R117",
    "SM_Montpellier_20200108T174203_S1A_R059",
    "SM_Occitanie_20200105T175041_S1B_R030",
    "SM_Occitanie_20200111T175127_S1A_R030",
)
GENERIC_TAGS = ("SoilMoisture", "Sentinel-1")
CONSTANT_TAGS = (
    "collection:SoilMoisture",
    "productType:SM_PLOT",
    "processingLevel:L3",
    "instrument:SAR-C",
)

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def normalise(tag: str) -> str:
    """resto's hashtag normalisation: case/accent-insensitive, ignoring - _ : ' , and spaces."""
    text = unicodedata.normalize("NFKD", tag)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    return "".join(ch for ch in text if ch not in "-_:', ")


def _epoch(value: datetime) -> int:
    return int(value.timestamp())


def iso(seconds: int, micros: int = 0) -> str:
    """resto's timestamp format: microseconds and ``Z``."""
    stamp = datetime.fromtimestamp(int(seconds), tz=UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S") + f".{micros:06d}Z"


@dataclass(frozen=True, slots=True)
class Filters:
    """A resto search, parsed and validated by the server."""

    include: tuple[tuple[str, ...], ...] = ()  # AND of ORs of normalised hashtags
    exclude: tuple[str, ...] = ()
    box: tuple[float, float, float, float] | None = None
    start_min: int | None = None  # startDate >= (epoch s)
    start_max: int | None = None  # completionDate: startDate <= (resto's behaviour)
    updated_min_us: int | None = None
    pid: str | None = None
    platform: str | None = None
    ascending: bool = False
    sort_key: str = "startDate"
    nothing: bool = False  # a query resto does not understand matches nothing


@dataclass(frozen=True, slots=True)
class _Arrays:
    start: IntArray  # epoch seconds, sorted by sort_idx descending
    track: IntArray
    step: IntArray
    sort_idx: IntArray
    updated_us: IntArray
    platform: IntArray
    end: datetime


class GeneratedCatalogue:
    """The simulator's default catalogue; ``publish_until`` makes new dates appear."""

    collection = COLLECTION

    def __init__(
        self,
        *,
        size: str = "thisme",
        end: datetime | None = None,
        only: Sequence[str] | None = None,
    ) -> None:
        """``size="fixtures"`` (or ``only=[product ids]``) keeps just those products."""
        if size not in SIZES:
            raise ValueError(f"unknown size {size!r}: use one of {', '.join(SIZES)}")
        if size == "fixtures" and only is None:
            only = FIXTURE_PRODUCTS
        #: render features exactly like the recorded capture (no simulator extras, zip links)
        self.recorded_shape = size == "fixtures"
        self.sites: tuple[Site, ...] = SITES + extra_sites(SIZES[size])
        tracks = [(s, site, orbit) for s, site in enumerate(self.sites) for orbit in site.orbits]
        self.track_site = np.array([t[0] for t in tracks], dtype=np.int64)
        self.track_rel = np.array([t[2].relative for t in tracks], dtype=np.int64)
        self.track_dir = [t[2].direction for t in tracks]
        self.track_sec = np.array([t[2].seconds_of_day for t in tracks], dtype=np.int64)
        self.track_phase = np.array(
            [t[2].phase if t[2].phase is not None else n % 6 for n, t in enumerate(tracks)],
            dtype=np.int64,
        )
        self.track_parity = np.array([t[2].parity for t in tracks], dtype=np.int64)
        self.track_shift = np.array([t[2].other_shift for t in tracks], dtype=np.int64)
        self.site_norm = [normalise(site.name) for site in self.sites]
        self._track_by_code = {
            (site.code, orbit.relative): n for n, (_, site, orbit) in enumerate(tracks)
        }
        self._lock = threading.Lock()
        self._cache: OrderedDict[Filters, IntArray] = OrderedDict()
        self._uuid_index: tuple[npt.NDArray[np.uint64], IntArray] | None = None
        self._only: IntArray | None = None
        if only is not None:
            keys = [self._key(pid) for pid in only]
            if None in keys:
                raise ValueError("some products do not belong to the simulated catalogue")
            self._only = np.array(sorted(k for k in keys if k is not None), dtype=np.int64)
        self._arrays = self._build(end or DEFAULT_END)

    # --- building ----------------------------------------------------------------------------
    def _build(self, end: datetime) -> _Arrays:
        ntracks = len(self.track_site)
        nsteps = max(0, math.ceil((_epoch(end) - _epoch(START)) / CADENCE_S))
        step = np.tile(np.arange(nsteps, dtype=np.int64), ntracks)
        track = np.repeat(np.arange(ntracks, dtype=np.int64), nsteps)
        alternate = (step + self.track_parity[track]) % 2
        day = _epoch(START) + step * CADENCE_S + self.track_phase[track] * 86400
        platform = np.where(alternate == 0, 0, 1)
        platform = np.where(day >= _epoch(S1B_END), 0, platform)
        platform = np.where((day >= _epoch(S1C_START)) & (alternate == 1), 2, platform)
        start = day + self.track_sec[track] + np.where(platform == 0, 0, self.track_shift[track])
        keep = start < _epoch(end)
        step, track, start, platform = step[keep], track[keep], start[keep], platform[keep]
        sort_idx = start * 10_000 + track
        if self._only is not None:
            wanted = np.isin(sort_idx, self._only)
            step, track, start, platform = (
                step[wanted],
                track[wanted],
                start[wanted],
                platform[wanted],
            )
            sort_idx = sort_idx[wanted]
        order = np.argsort(-sort_idx, kind="stable")
        step, track, start, sort_idx = step[order], track[order], start[order], sort_idx[order]
        updated_us = (start + 3 * 86400 + (track * 997) % 36000) * 1_000_000 + (track % 997) * 1000
        platform = platform[order]
        return _Arrays(start, track, step, sort_idx, updated_us, platform.astype(np.int64), end)

    def publish_until(self, end: datetime) -> None:
        """Make every map acquired before ``end`` exist (and nothing after)."""
        arrays = self._build(end)
        with self._lock:
            self._arrays = arrays
            self._cache.clear()
            self._uuid_index = None

    @property
    def end(self) -> datetime:
        return self._arrays.end

    def __len__(self) -> int:
        return len(self._arrays.start)

    # --- ground truth ------------------------------------------------------------------------
    def _site_index(self, site: str) -> int:
        key = normalise(site)
        for n, name in enumerate(self.site_norm):
            if name == key:
                return n
        raise KeyError(f"unknown site {site!r}")

    def positions(self, site: str | None = None) -> IntArray:
        arrays = self._arrays
        if site is None:
            return np.arange(len(arrays.start), dtype=np.int64)
        mask = self.track_site[arrays.track] == self._site_index(site)
        return np.flatnonzero(mask)

    def product_ids(self, site: str | None = None) -> list[str]:
        """Every productIdentifier (of one site), newest first."""
        return [self.product_id(int(p)) for p in self.positions(site)]

    def count(self, site: str | None = None) -> int:
        return len(self.positions(site))

    # --- one item ----------------------------------------------------------------------------
    def product_id(self, pos: int) -> str:
        a = self._arrays
        track = int(a.track[pos])
        site = self.sites[int(self.track_site[track])]
        stamp = datetime.fromtimestamp(int(a.start[pos]), tz=UTC).strftime("%Y%m%dT%H%M%S")
        return (
            f"SM_{site.code}_{stamp}_{PLATFORMS[int(a.platform[pos])]}_R{self.track_rel[track]:03d}"
        )

    def record(self, pos: int) -> dict[str, Any]:
        """Everything the server needs to render one feature."""
        a = self._arrays
        track = int(a.track[pos])
        site = self.sites[int(self.track_site[track])]
        pid = self.product_id(pos)
        updated_us = int(a.updated_us[pos])
        return {
            "pid": pid,
            "uuid": str(uuid.uuid5(RESTO_NAMESPACE, pid)),
            "site": site,
            "start": int(a.start[pos]),
            "platform": PLATFORMS[int(a.platform[pos])],
            "relative_orbit": int(self.track_rel[track]),
            "direction": self.track_dir[track],
            "updated": iso(updated_us // 1_000_000, updated_us % 1_000_000),
            "sort_idx": int(a.sort_idx[pos]),
        }

    def _key(self, pid: str) -> int | None:
        """The sort key a productIdentifier would have (None if it cannot be ours)."""
        parts = pid.split("_")
        if len(parts) != 5 or parts[0] != "SM" or not parts[4].startswith("R"):
            return None
        try:
            stamp = datetime.strptime(parts[2], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
            track = self._track_by_code.get((parts[1], int(parts[4][1:])))
        except ValueError:
            return None
        return None if track is None else _epoch(stamp) * 10_000 + track

    def find(self, identifier: str) -> int | None:
        """Position of a productIdentifier or resto uuid, or None."""
        a = self._arrays
        if identifier.startswith("SM_"):
            key = self._key(identifier)
            if key is None:
                return None
            found = int(np.searchsorted(-a.sort_idx, -key))
            if found < len(a.sort_idx) and a.sort_idx[found] == key:
                return found if self.product_id(found) == identifier else None
            return None
        try:
            wanted = uuid.UUID(identifier)
        except ValueError:
            return None
        keys, positions = self._uuids()
        probe = np.uint64(int.from_bytes(wanted.bytes[:8], "big"))
        hit: int = int(np.searchsorted(keys, probe))
        while hit < len(keys) and keys[hit] == probe:
            pos = int(positions[hit])
            if uuid.uuid5(RESTO_NAMESPACE, self.product_id(pos)) == wanted:
                return pos
            hit += 1
        return None

    def _uuids(self) -> tuple[npt.NDArray[np.uint64], IntArray]:
        with self._lock:
            if self._uuid_index is None:
                values = np.array(
                    [
                        int.from_bytes(
                            uuid.uuid5(RESTO_NAMESPACE, self.product_id(p)).bytes[:8], "big"
                        )
                        for p in range(len(self))
                    ],
                    dtype=np.uint64,
                )
                order = np.argsort(values, kind="stable")
                self._uuid_index = (values[order], order.astype(np.int64))
            return self._uuid_index

    # --- search ------------------------------------------------------------------------------
    def select(self, filters: Filters) -> IntArray:
        """Positions matching ``filters``, in result order (cached per query)."""
        with self._lock:
            cached = self._cache.get(filters)
            if cached is not None:
                self._cache.move_to_end(filters)
                return cached
        result = self._select(filters)
        with self._lock:
            self._cache[filters] = result
            while len(self._cache) > 32:
                self._cache.popitem(last=False)
        return result

    def _tag_mask(self, tag: str, a: _Arrays) -> BoolArray:
        n = len(a.start)
        if tag in {normalise(t) for t in (*GENERIC_TAGS, *CONSTANT_TAGS)}:
            return np.ones(n, dtype=bool)
        sites = [i for i, name in enumerate(self.site_norm) if name == tag]
        if sites:
            return np.isin(self.track_site[a.track], sites)
        for code, name in enumerate(PLATFORMS):
            if tag == normalise(f"platform:{name}"):
                return np.asarray(a.platform == code)
        years = a.start // 86400  # day number; decode lazily below
        for prefix in ("year", "month", "day"):
            if tag.startswith(prefix) and tag[len(prefix) :].isdigit():
                dates = np.array(years, dtype="datetime64[D]")
                value = int(tag[len(prefix) :])
                if prefix == "year":
                    field = dates.astype("datetime64[Y]").astype(np.int64) + 1970
                elif prefix == "month":
                    field = dates.astype("datetime64[M]").astype(np.int64) % 12 + 1
                else:
                    field = (dates - dates.astype("datetime64[M]")).astype(np.int64) + 1
                return np.asarray(field == value)
        return np.zeros(n, dtype=bool)

    def _select(self, f: Filters) -> IntArray:
        a = self._arrays
        if f.nothing:
            return np.zeros(0, dtype=np.int64)
        mask = np.ones(len(a.start), dtype=bool)
        for alternatives in f.include:
            any_mask = np.zeros(len(a.start), dtype=bool)
            for tag in alternatives:
                any_mask |= self._tag_mask(tag, a)
            mask &= any_mask
        for tag in f.exclude:
            mask &= ~self._tag_mask(tag, a)
        if f.box is not None:
            west, south, east, north = f.box
            boxes = np.array([s.bbox for s in self.sites])
            ok = (
                (boxes[:, 0] <= east)
                & (boxes[:, 2] >= west)
                & (boxes[:, 1] <= north)
                & (boxes[:, 3] >= south)
            )
            mask &= ok[self.track_site[a.track]]
        if f.start_min is not None:
            mask &= a.start >= f.start_min
        if f.start_max is not None:
            mask &= a.start <= f.start_max
        if f.updated_min_us is not None:
            mask &= a.updated_us >= f.updated_min_us
        if f.platform is not None:
            mask &= a.platform == (PLATFORMS.index(f.platform) if f.platform in PLATFORMS else -1)
        if f.pid is not None:
            pos = self.find(f.pid)
            only = np.zeros(len(a.start), dtype=bool)
            if pos is not None and self.product_id(pos) == f.pid:
                only[pos] = True
            mask &= only
        positions = np.flatnonzero(mask)
        if f.sort_key == "published":
            key = a.updated_us[positions]
            order = np.argsort(key if f.ascending else -key, kind="stable")
            return positions[order]
        return positions[::-1].copy() if f.ascending else positions

    def sort_values(self, positions: IntArray) -> IntArray:
        return self._arrays.sort_idx[positions]
