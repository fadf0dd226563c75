"""A resto-5.0.0-compatible HTTP server over a simulated THISME catalogue (stdlib, threaded).

Routes, parameters, paging links, quirks and error bodies follow the recorded resto 5 responses
(see RESTO.md): ``.json?&`` hrefs, a ``next`` link whenever a page is full (hence an empty last
page with ``totalResults: 0``), ``lt``/``gt`` cursors, the ``page`` + cursor bug, resto's date
filters, and ``{"ErrorMessage", "ErrorCode"}`` errors.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import numpy as np
import orjson

from thisme_stac.simulator.catalogue import (
    CONSTANT_TAGS,
    RESTO_NAMESPACE,
    Filters,
    GeneratedCatalogue,
    iso,
    normalise,
)
from thisme_stac.simulator.faults import (
    NO_FAULT,
    FaultInjector,
    Faults,
    Plan,
    cut_point,
    duplicate_features,
    shift_size,
)
from thisme_stac.simulator.geotiff import geotiff_bytes
from thisme_stac.simulator.render import PageRenderer
from thisme_stac.simulator.sites import Site

DEFAULT_LIMIT = 20
MAX_LIMIT = 500
MAX_OFFSET = 999
DATE_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(|Z|[\+\-][0-9]{2}:[0-9]{2}))?$"
)
DATE_RE = re.compile(DATE_PATTERN)
WEB_MERCATOR_R = 6378137.0
GEOTIFF = "image/tiff; application=geotiff"
DEFAULT_USERS = {"admin@thisme.test": "thisme"}
JWT_HEADER = base64.urlsafe_b64encode(b'{"typ":"JWT","alg":"HS256"}').rstrip(b"=")
COLLECTION_FIELDS = {
    "LongName": "Theia VHSR Soil Moisture maps (S2MP)",
    "Description": "Soil moisture maps at plot scale derived from Sentinel-1 and Sentinel-2, "
    "one map every six days",
    "Tags": "soil moisture sentinel-1 theia thisme",
    "Developer": "thisme-stac simulator",
    "Contact": "nobody@localhost",
    "Query": "#Central-Italy",
    "Attribution": "Theia / INRAE (simulated)",
}


class RestoFailure(Exception):
    """An error response in resto's shape."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class RequestRecord:
    method: str
    path: str
    query: str
    range: str | None
    status: int
    authorization: bool
    started: float = 0.0  # time.perf_counter() when the request arrived


@dataclass(slots=True)
class _Options:
    download_auth: bool = False
    token_lifetime: int = 3600
    users: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_USERS))
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))


def _mercator(lon: float, lat: float) -> tuple[float, float]:
    x = math.radians(lon) * WEB_MERCATOR_R
    y = math.log(math.tan(math.pi / 4 + math.radians(lat) / 2)) * WEB_MERCATOR_R
    return x, y


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


class Resto:
    """The resto 5 logic, independent of the HTTP plumbing."""

    def __init__(self, catalogue: GeneratedCatalogue, options: _Options) -> None:
        self.catalogue = catalogue
        self.options = options
        self.pages = PageRenderer(catalogue, self._feature_doc)
        self._files: OrderedDict[int, bytes] = OrderedDict()
        self._files_lock = threading.Lock()

    # --- tokens ------------------------------------------------------------------------------
    def issue_token(self, user: str) -> str:
        now = int(time.time())
        sub = str(int(hashlib.sha256(user.encode()).hexdigest()[:15], 16))
        payload = _b64(
            orjson.dumps({"sub": sub, "iat": now, "exp": now + self.options.token_lifetime})
        )
        signature = _b64(
            hmac.new(self.options.secret, JWT_HEADER + b"." + payload, hashlib.sha256).digest()
        )
        return (payload + b"." + signature).decode()

    def check_token(self, token: str) -> bool:
        try:
            payload, signature = token.encode().split(b".")
        except ValueError:
            return False
        expected = _b64(
            hmac.new(self.options.secret, JWT_HEADER + b"." + payload, hashlib.sha256).digest()
        )
        if not hmac.compare_digest(expected, signature):
            return False
        try:
            data = orjson.loads(base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4)))
        except (ValueError, orjson.JSONDecodeError):
            return False
        return isinstance(data, dict) and int(data.get("exp", 0)) > time.time()

    def check_basic(self, value: str) -> str | None:
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        known = self.options.users.get(user)
        if known is not None and hmac.compare_digest(known.encode(), password.encode()):
            return user
        return None

    # --- documents ---------------------------------------------------------------------------
    def collection_doc(self) -> dict[str, Any]:
        return {
            "name": self.catalogue.collection,
            "model": "SatelliteModel",
            "licenseId": "unlicensed",
            "osDescription": {"ShortName": self.catalogue.collection, **COLLECTION_FIELDS},
            "owner": "235343332796007425",
        }

    def describe(self) -> dict[str, Any]:
        a_counts = np.bincount(self.catalogue._arrays.platform, minlength=3)
        platforms = {p: int(n) for p, n in zip(("S1A", "S1B", "S1C"), a_counts, strict=True) if n}
        return {
            **self.collection_doc(),
            "statistics": {
                "count": len(self.catalogue),
                "facets": {
                    "instrument": {"SAR-C": len(self.catalogue)},
                    "platform": platforms,
                    "processingLevel": {"L3": len(self.catalogue)},
                    "productType": {"SM_PLOT": len(self.catalogue)},
                },
            },
        }

    def collections(self, base: str) -> dict[str, Any]:
        return {
            "osDescription": {
                "ShortName": "thisme-simulator",
                "LongName": "resto 5 stand-in for THISME",
                "Description": "Search on all collections",
                "Tags": "resto",
                "Developer": "thisme-stac simulator",
                "Contact": "nobody@localhost",
                "Query": "#Central-Italy",
                "Attribution": "thisme-stac simulator",
            },
            "statistics": {
                "count": len(self.catalogue),
                "facets": {"collection": {self.catalogue.collection: len(self.catalogue)}},
            },
            "collections": [self.collection_doc()],
        }

    def feature(self, pos: int, base: str, *, with_sort: bool) -> dict[str, Any]:
        rec = self.catalogue.record(pos)
        day = datetime.fromtimestamp(rec["start"], tz=UTC)
        fields = {
            **rec,
            "start": iso(rec["start"]),
            "year": str(day.year),
            "month": f"{day.month:02d}",
            "day": f"{day.day:02d}",
            "sort_idx": str(rec["sort_idx"]),
        }
        return self._feature_doc(rec["site"], fields, base, with_sort)

    def _feature_doc(
        self, site: Site, rec: dict[str, Any], base: str, with_sort: bool
    ) -> dict[str, Any]:
        """A feature from its site and per-feature values (``render.FIELDS``, as text)."""
        west, south, east, north = site.bbox
        start = rec["start"]
        fid = rec["uuid"]
        media = "application/zip" if self.catalogue.recorded_shape else GEOTIFF
        x0, y0 = _mercator(west, south)
        x1, y1 = _mercator(east, north)
        props: dict[str, Any] = {
            "collection": self.catalogue.collection,
            "productIdentifier": rec["pid"],
            "title": rec["pid"],
            "description": (
                f"Soil moisture map at plot scale #{site.name} #SoilMoisture #Sentinel-1"
            ),
            "startDate": start,
            "completionDate": start,
            "quicklook": f"{base}/static/quicklooks/{rec['pid']}.png",
            "platform": rec["platform"],
            "instrument": "SAR-C",
            "productType": "SM_PLOT",
            "processingLevel": "L3",
            "links": [
                {"rel": "download", "href": f"{base}/features/{fid}/download", "type": media},
                {
                    "rel": "self",
                    "type": "application/json",
                    "href": f"{base}/features/{fid}.json?&lang=en",
                },
                {
                    "rel": "license",
                    "id": "unlicensed",
                    "type": "application/json",
                    "href": f"{base}/licenses/unlicensed",
                },
            ],
            "updated": rec["updated"],
            "published": rec["updated"],
            "hashtags": [
                "Sentinel-1",  # resto lists description hashtags last-first
                "SoilMoisture",
                site.name,
                *CONSTANT_TAGS[:3],
                f"platform:{rec['platform']}",
                CONSTANT_TAGS[3],
                f"year:{rec['year']}",
                f"month:{rec['month']}",
                f"day:{rec['day']}",
            ],
            "likes": 0,
            "comments": 0,
            "status": 1,
            "centroid": [round((west + east) / 2, 6), round((south + north) / 2, 6)],
            "bbox3857": f"{x0:.7f},{y0:.7f},{x1:.7f},{y1:.7f}",
        }
        if with_sort:
            props["sort_idx"] = rec["sort_idx"]
        if not self.catalogue.recorded_shape:
            # THISME-plausible extras of the simulator (not in the recorded capture)
            extras = {
                "orbitDirection": rec["direction"],
                "relativeOrbitNumber": rec["relative_orbit"],
                "polarisation": "VV VH",
                "sensorMode": "IW",
            }
            position = list(props).index("processingLevel") + 1
            items = list(props.items())
            props = dict(items[:position] + list(extras.items()) + items[position:])
        return {
            "type": "Feature",
            "id": fid,
            "bbox": [west, south, east, north],
            "geometry": {
                "type": "Polygon",
                "coordinates": [
                    [[west, south], [east, south], [east, north], [west, north], [west, south]]
                ],
            },
            "properties": props,
        }

    def file(self, pos: int) -> bytes:
        with self._files_lock:
            if pos in self._files:
                self._files.move_to_end(pos)
                return self._files[pos]
        rec = self.catalogue.record(pos)
        data = geotiff_bytes(rec["site"].bbox, rec["start"])
        with self._files_lock:
            self._files[pos] = data
            while len(self._files) > 256:
                self._files.popitem(last=False)
        return data

    # --- search ------------------------------------------------------------------------------
    def filters(self, params: dict[str, str]) -> Filters:
        """Validate resto parameters the way resto 5 does; unknown keys are ignored."""
        include: list[tuple[str, ...]] = []
        exclude: list[str] = []
        nothing = False
        for term in (params.get("q") or "").split():
            if term.startswith("-#"):
                exclude.append(normalise(term[2:]))
            elif term.startswith("#"):
                body = term[1:]
                kind, sep, values = body.partition(":")
                alternatives = [f"{kind}:{v}" for v in values.split("|")] if sep else [body]
                include.append(tuple(normalise(a) for a in alternatives if a))
            else:
                nothing = True  # plain words need resto's gazetteer / NLP add-ons
        box = None
        if params.get("box"):
            try:
                corners = [float(v) for v in params["box"].split(",")]
            except ValueError:
                raise RestoFailure(
                    400, 'Value for "box" must follow the pattern west,south,east,north'
                ) from None
            if len(corners) != 4:
                raise RestoFailure(
                    400, 'Value for "box" must follow the pattern west,south,east,north'
                )
            box = (corners[0], corners[1], corners[2], corners[3])
        dates: dict[str, int] = {}
        for key in ("startDate", "completionDate", "updated"):
            value = params.get(key)
            if value is None or value == "":
                continue
            if not DATE_RE.match(value):
                raise RestoFailure(400, f'Value for "{key}" must follow the pattern {DATE_PATTERN}')
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            if key == "updated":
                delta = parsed - datetime(1970, 1, 1, tzinfo=UTC)
                dates[key] = (
                    delta.days * 86_400_000_000 + delta.seconds * 1_000_000 + (delta.microseconds)
                )
            else:
                dates[key] = (
                    math.ceil(parsed.timestamp()) if key == "startDate" else int(parsed.timestamp())
                )
        sort = params.get("sort", "")
        ascending, sort_key = False, "startDate"
        if sort.startswith("-"):
            if sort[1:] not in ("startDate", "published"):
                raise RestoFailure(400, "Invalid sorting key")
            ascending, sort_key = True, sort[1:]
        return Filters(
            include=tuple(include),
            exclude=tuple(exclude),
            box=box,
            start_min=dates.get("startDate"),
            start_max=dates.get("completionDate"),
            updated_min_us=dates.get("updated"),
            pid=params.get("pid") or None,
            platform=params.get("platform") or None,
            ascending=ascending,
            sort_key=sort_key,
            nothing=nothing or bool(params.get("productType") not in (None, "", "SM_PLOT")),
        )

    def search(
        self,
        base: str,
        route: str,
        pairs: list[tuple[str, str]],
        *,
        shift: float | None = None,
        stats: dict[str, int] | None = None,
    ) -> dict[str, Any]:
        """One search page: ``route`` is the path without suffix, e.g. ``/features``.

        ``shift`` (fault injection) starts a cursor page up to limit-1 items before its cursor;
        ``stats["repeated"]`` then tells how many of the page's items sit before that cursor.
        """
        params = dict(pairs)
        if route.startswith("/collections/"):
            collection: str | None = route.split("/")[2]
            if "model" in params:
                raise RestoFailure(
                    400, "You cannot specify a collection and a model at the same time"
                )
        else:
            collection = params.get("collection")
        known = collection is None or collection == self.catalogue.collection
        if not known and route.startswith("/collections/"):
            raise RestoFailure(404, "Not Found")
        limit = DEFAULT_LIMIT
        if "limit" in params:
            raw = params["limit"]
            if not re.fullmatch(r"-?[0-9]+", raw):
                raise RestoFailure(400, 'Value for "limit" must be numeric')
            limit = int(raw)
            if limit > MAX_LIMIT:
                raise RestoFailure(400, f'Value for "limit" must be lower than {MAX_LIMIT + 1}')
            if limit < 1:
                raise RestoFailure(400, 'Value for "limit" must be greater than 0')
        offset = 0
        for key in ("page", "index"):
            if key in params and not re.fullmatch(r"[0-9]+", params[key]):
                raise RestoFailure(400, f'Value for "{key}" must be numeric')
        if params.get("page"):
            offset = (max(int(params["page"]), 1) - 1) * limit
        elif params.get("index"):
            offset = max(int(params["index"]), 1) - 1
        if offset > MAX_OFFSET:
            raise RestoFailure(400, "Offset pagination is limited to 1000 elements")
        for key in ("lt", "gt"):
            if key in params and not re.fullmatch(r"[0-9]+", params[key]):
                raise RestoFailure(400, f'Value for "{key}" must be numeric')
        filters = self.filters(params)
        if collection is not None and collection != self.catalogue.collection:
            filters = Filters(nothing=True)
        selected = self.catalogue.select(filters)
        total = len(selected)
        window = selected
        if "lt" in params or "gt" in params:
            values = self.catalogue.sort_values(selected)
            if "lt" in params:
                below = values < int(params["lt"])
                window = window[below]
                repeat = shift_size(limit, shift) if shift is not None else 0
                if repeat:
                    first = int(np.argmax(below)) if below.any() else len(selected)
                    window = np.concatenate([selected[:first][-repeat:], window])
            if "gt" in params:
                values = self.catalogue.sort_values(window)
                window = window[values > int(params["gt"])]
        page = window[offset : offset + limit]
        if stats is not None and "lt" in params:
            before = self.catalogue.sort_values(page) >= int(params["lt"])
            stats["repeated"] = int(before.sum())
        features = [orjson.Fragment(f) for f in self.pages.features(page, base, with_sort=True)]
        cursors = self.catalogue.sort_values(page[[0, -1]]).tolist() if len(page) else []
        return self._collection(
            base, route, pairs, collection, features, total, offset, limit, cursors
        )

    def _collection(
        self,
        base: str,
        route: str,
        pairs: list[tuple[str, str]],
        collection: str | None,
        features: list[orjson.Fragment],
        total: int,
        offset: int,
        limit: int,
        cursors: list[int],
    ) -> dict[str, Any]:
        """The page around ``features``; ``cursors`` = sort values of its first and last."""
        echo = [(k, v) for k, v in pairs if k != "collection" or not route.startswith("/coll")]
        in_path = route.startswith("/collections/")

        def href(items: list[tuple[str, str]]) -> str:
            shown = [(k, v) for k, v in items if not (k == "limit" and v == str(DEFAULT_LIMIT))]
            qs = "".join(f"&{k}={quote(v, safe='')}" for k, v in shown)
            return f"{base}{route}.json?{qs}"

        without_cursor = [(k, v) for k, v in echo if k not in ("lt", "gt")]
        links: list[dict[str, Any]] = [
            {"rel": "self", "type": "application/json", "href": href(echo)},
            {
                "rel": "search",
                "type": "application/opensearchdescription+xml",
                "href": f"{base}/services/osdd" + (f"/{collection}" if in_path else ""),
            },
        ]
        has_cursor = any(k in ("lt", "gt") for k, _ in echo)
        page_param = next((v for k, v in echo if k == "page"), None)
        if features and (has_cursor or (page_param and int(page_param) > 1)):
            if page_param and not has_cursor:
                previous = [
                    (k, str(int(page_param) - 1) if k == "page" else v) for k, v in without_cursor
                ]
            else:
                previous = [*without_cursor, ("gt", str(cursors[0]))]
            links.append({"rel": "previous", "type": "application/json", "href": href(previous)})
        if has_cursor or (features and page_param and int(page_param) > 1):
            first = [(k, "1" if k == "page" else v) for k, v in without_cursor]
            links.append({"rel": "first", "type": "application/json", "href": href(first)})
        if features and len(features) >= limit:
            nxt = [*without_cursor, ("lt", str(cursors[-1]))]
            links.append({"rel": "next", "type": "application/json", "href": href(nxt)})
        inputs = dict(echo)
        if collection is not None:
            inputs["collection"] = collection
        query_id = uuid.uuid5(RESTO_NAMESPACE, f"{route}?{sorted(inputs.items())}")
        return {
            "type": "FeatureCollection",
            "properties": {
                "id": str(query_id),
                "totalResults": total if features else 0,
                "exactCount": True,
                "startIndex": offset + 1,
                "query": {"inputFilters": inputs},
                "links": links,
            },
            "features": features,
        }


def _osdd(base: str, collection: str | None) -> bytes:
    """A minimal OpenSearch description; like resto 5 its template points to the describe route."""
    name = collection or "thisme-simulator"
    route = f"{base}/collections/{collection}.json" if collection else f"{base}/features.json"
    template = route + (
        "?q={searchTerms?}&amp;limit={count?}&amp;index={startIndex?}&amp;page={startPage?}"
        "&amp;box={geo:box?}&amp;startDate={time:start?}&amp;completionDate={time:end?}"
        "&amp;updated={dc:date?}&amp;lt={resto:lt?}&amp;gt={resto:gt?}&amp;pid={resto:pid?}"
        "&amp;sort={resto:sort?}"
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<OpenSearchDescription xmlns="http://a9.com/-/spec/opensearch/1.1/">\n'
        f" <ShortName>{name}</ShortName>\n"
        f" <Description>{COLLECTION_FIELDS['Description']}</Description>\n"
        f' <Url type="application/json" rel="results" template="{template}"/>\n'
        ' <Query role="example" searchTerms="#Central-Italy"/>\n'
        "</OpenSearchDescription>\n"
    ).encode()


class _Handler(BaseHTTPRequestHandler):
    server: SimulatorHTTPServer
    _plan: Plan = NO_FAULT
    protocol_version = "HTTP/1.1"
    server_version = "nginx/1.22.1"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.log_requests:
            super().log_message(format, *args)

    def _base(self) -> str:
        host = self.headers.get("Host") or f"127.0.0.1:{self.server.server_port}"
        return f"http://{host}"

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        extra: dict[str, str] | None = None,
        head: bool = False,
    ) -> None:
        plan = self._plan
        if plan.truncate is not None and status == 200 and content_type == "application/json":
            body = body[: cut_point(len(body), plan.truncate)]
            self.server.faults.count("truncate")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Pragma", "no-cache")
        self.send_header("Cache-Control", "no-cache, no-store, must-revalidate")
        self.send_header("Expires", "Fri, 1 Jan 2010 00:00:00 GMT")
        self.send_header("Server-processing-time", f"{time.perf_counter() - self._t0:.15f}")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if head:
            pass
        elif plan.cut is not None:
            self.wfile.write(body[: cut_point(len(body), plan.cut)])
            self.close_connection = True
            self.server.faults.count("cut")
        elif plan.stall and content_type == GEOTIFF:
            half = len(body) // 2
            self.wfile.write(body[:half])
            self.wfile.flush()
            self.server.faults.count("stall")
            time.sleep(self.server.faults.faults.stall_time)
            self.wfile.write(body[half:])
        else:
            self.wfile.write(body)
        self._status = status

    def _error(self, status: int, message: str) -> None:
        self._send(status, orjson.dumps({"ErrorMessage": message, "ErrorCode": status}))

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def _dispatch(self, *, head: bool) -> None:
        self._t0 = time.perf_counter()
        self._status = 500
        parts = urlsplit(self.path)
        pairs = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
        self._plan = NO_FAULT
        try:
            self._plan = self.server.faults.plan(
                self.command,
                self.path,
                search=parts.path.rstrip("/").removesuffix(".json").endswith("/features"),
                download=parts.path.rstrip("/").endswith("/download"),
            )
            if not self._inject(self._plan):
                self._route(parts.path, pairs, head)
        except RestoFailure as failure:
            self._error(failure.status, failure.message)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception:  # a simulator bug must still answer like resto does
            self._error(500, "Internal Server Error")
        finally:
            self.server.record(
                RequestRecord(
                    self.command,
                    parts.path,
                    parts.query,
                    self.headers.get("Range"),
                    self._status,
                    "Authorization" in self.headers,
                    self._t0,
                )
            )

    def _inject(self, plan: Plan) -> bool:
        """Apply the faults that replace the answer; True when the request is dealt with."""
        if plan.latency:
            time.sleep(plan.latency)
        if plan.publish:
            self.server.faults.publish(self.server.resto.catalogue)
        if plan.drop:
            self.close_connection = True
            self._status = 0
            return True
        if plan.status == 429:
            retry_after = f"{self.server.faults.faults.retry_after:g}"
            body = orjson.dumps({"ErrorMessage": "Too Many Requests", "ErrorCode": 429})
            self._send(429, body, extra={"Retry-After": retry_after})
            return True
        if plan.status:
            self._error(plan.status, HTTPStatus(plan.status).phrase)
            return True
        return False

    def _authenticated(self, pairs: list[tuple[str, str]]) -> bool | None:
        """None = anonymous; True = valid credentials; a bad token raises 401."""
        resto = self.server.resto
        bearer = dict(pairs).get("_bearer")
        header = self.headers.get("Authorization", "")
        if header.startswith("Basic "):
            if resto.check_basic(header[6:].strip()) is None:
                raise RestoFailure(401, "Unauthorized")
            return True
        if header.startswith("Bearer "):
            bearer = header[7:].strip()
        if bearer is None:
            return None
        if not resto.check_token(bearer):
            raise RestoFailure(401, "Unauthorized")
        return True

    def _route(self, path: str, pairs: list[tuple[str, str]], head: bool) -> None:
        resto = self.server.resto
        base = self._base()
        auth = self._authenticated(pairs)
        path = path.rstrip("/") or "/"
        if path == "/":
            self._send(200, orjson.dumps({"status": "success", "message": "Hello"}), head=head)
            return
        if path == "/auth":
            header = self.headers.get("Authorization", "")
            user = resto.check_basic(header[6:].strip()) if header.startswith("Basic ") else None
            if user is None:
                raise RestoFailure(401, "Unauthorized")
            self._send(200, orjson.dumps({"token": resto.issue_token(user)}), head=head)
            return
        if path == "/collections":
            self._send(200, orjson.dumps(resto.collections(base)), head=head)
            return
        match = re.fullmatch(r"/services/osdd(?:/([A-Za-z][A-Za-z0-9]+))?", path)
        if match:
            if match.group(1) not in (None, resto.catalogue.collection):
                raise RestoFailure(404, "Not Found")
            xml = _osdd(base, match.group(1))
            self._send(200, xml, "application/xml", head=head)
            return
        match = re.fullmatch(r"/collections/([A-Za-z][A-Za-z0-9]+)(\.json)?", path)
        if match:
            if match.group(1) != resto.catalogue.collection:
                raise RestoFailure(404, "Not Found")
            self._send(200, orjson.dumps(resto.describe()), head=head)
            return
        match = re.fullmatch(
            r"(/collections/[A-Za-z][A-Za-z0-9]+/features|/features)(\.json)?", path
        )
        if match:
            plan = self._plan
            stats: dict[str, int] = {}
            body = resto.search(base, match.group(1), pairs, shift=plan.shift, stats=stats)
            if plan.shift is not None and not plan.garbled:
                self.server.faults.count("duplicates", stats.get("repeated", 0))
                self.server.faults.count("shift")
            if plan.duplicate is not None:
                copies = duplicate_features(body["features"], plan.duplicate)
                if not plan.garbled:
                    self.server.faults.count("duplicates", copies)
            self._send(200, orjson.dumps(body), head=head)
            return
        match = re.fullmatch(r"/features/([^/]+?)(\.json)?(/download)?", path)
        if match:
            pos = resto.catalogue.find(match.group(1))
            if pos is None:
                raise RestoFailure(404, "Not Found")
            if match.group(3):
                if self.server.options.download_auth and not auth:
                    raise RestoFailure(403, "Forbidden")
                self._file(resto.catalogue.product_id(pos), resto.file(pos), head)
                return
            self._send(200, orjson.dumps(resto.feature(pos, base, with_sort=False)), head=head)
            return
        raise RestoFailure(404, "Not Found")

    def _file(self, name: str, data: bytes, head: bool) -> None:
        size = len(data)
        etag = '"' + hashlib.md5(data, usedforsecurity=False).hexdigest() + '"'
        headers = {
            "Accept-Ranges": "bytes",
            "ETag": etag,
            "Content-Disposition": f'attachment; filename="{name}.tif"',
        }
        wanted = self.headers.get("Range")
        if wanted:
            match = re.fullmatch(r"bytes=(\d*)-(\d*)", wanted.strip())
            if not match or (not match.group(1) and not match.group(2)):
                self._send(416, b"", GEOTIFF, {"Content-Range": f"bytes */{size}"}, head)
                return
            if match.group(1):
                first = int(match.group(1))
                last = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
            else:
                first, last = max(size - int(match.group(2)), 0), size - 1
            if first >= size or first > last:
                self._send(416, b"", GEOTIFF, {"Content-Range": f"bytes */{size}"}, head)
                return
            headers["Content-Range"] = f"bytes {first}-{last}/{size}"
            self._send(206, data[first : last + 1], GEOTIFF, headers, head)
            return
        self._send(200, data, GEOTIFF, headers, head)


class SimulatorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        resto: Resto,
        options: _Options,
        log_requests: bool,
        faults: Faults | None = None,
    ) -> None:
        super().__init__(address, _Handler)
        self.resto = resto
        self.faults = FaultInjector(faults)
        self.options = options
        self.log_requests = log_requests
        self.requests: list[RequestRecord] = []
        self._requests_lock = threading.Lock()

    def record(self, entry: RequestRecord) -> None:
        with self._requests_lock:
            self.requests.append(entry)


class SimulatorServer:
    """The THISME simulator as a context manager: ``with SimulatorServer(cat) as sim: sim.url``."""

    def __init__(
        self,
        catalogue: GeneratedCatalogue | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        download_auth: bool = False,
        token_lifetime: int = 3600,
        users: dict[str, str] | None = None,
        log_requests: bool = False,
        faults: Faults | None = None,
    ) -> None:
        """``faults`` switches on seeded fault injection (see :mod:`.faults`)."""
        self.catalogue = catalogue or GeneratedCatalogue()
        self.options = _Options(
            download_auth=download_auth,
            token_lifetime=token_lifetime,
            users=dict(users or DEFAULT_USERS),
        )
        self._server = SimulatorHTTPServer(
            (host, port), Resto(self.catalogue, self.options), self.options, log_requests, faults
        )
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = self._server.server_address[0]
        return f"http://{host!s}:{self.port}"

    @property
    def requests(self) -> list[RequestRecord]:
        return self._server.requests

    def inject(self, faults: Faults | None) -> None:
        """Switch fault injection on (or off) while serving; the fault counters restart."""
        self._server.faults = FaultInjector(faults)

    @property
    def fault_stats(self) -> dict[str, int]:
        """Faults served so far by kind; ``duplicates``: repeated features of whole pages."""
        return dict(self._server.faults.stats)

    def start(self) -> SimulatorServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="thisme-sim", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
