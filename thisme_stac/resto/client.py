"""RestoClient: the only HTTP for catalogue reads (resto 5 first; resto 2 and 6+ tolerated)."""

from __future__ import annotations

import base64
import email.utils
import logging
import random
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import orjson
from pydantic import SecretStr

from thisme_stac import __version__
from thisme_stac.errors import RestoError
from thisme_stac.resto.query import RestoQuery

log = logging.getLogger("thisme_stac.resto")

Flavour = Literal["auto", "5", "2", "6"]
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 120.0
TOKEN_MARGIN = 60.0
SECRET_PARAMS = frozenset({"_bearer", "_tk", "token", "password"})
#: Duplicates come from items shifting across page boundaries while paging; remembering the ids of
#: the last pages catches them with memory that does not grow with the catalogue.
DEDUP_PAGES = 8


class _RecentKeys:
    """Feature keys of the last ``pages`` pages."""

    def __init__(self, pages: int) -> None:
        self._pages: list[set[str]] = [set()]
        self._limit = pages

    def contains_any(self, keys: set[str]) -> bool:
        return any(not page.isdisjoint(keys) for page in self._pages)

    def add(self, keys: set[str]) -> None:
        self._pages[-1].update(keys)

    def next_page(self) -> None:
        self._pages.append(set())
        del self._pages[: -self._limit]


@dataclass(slots=True)
class SearchCursor:
    """Where a paged search stands (picklable): the next page's URL, the URLs already fetched
    (loop detection) and the feature keys of the last pages (de-duplication)."""

    limit: int
    url: str | None = None
    started: bool = False
    visited: set[str] = field(default_factory=set)
    seen: _RecentKeys = field(default_factory=lambda: _RecentKeys(DEDUP_PAGES))


@dataclass(slots=True)
class RestoPage:
    """One search page; ``features`` are raw resto features, de-duplicated against earlier pages."""

    features: list[dict[str, Any]]
    url: str
    next_url: str | None
    total_results: int | None
    duplicates: int
    raw_count: int
    flavour: str
    #: why entries of ``features`` were not features at all (not JSON objects), one line each
    rejected: list[str] = field(default_factory=list)


def redact(url: str) -> str:
    """A URL fit for logs and messages: no credentials, no token parameters."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    query = [(k, "***" if k in SECRET_PARAMS else v) for k, v in parse_qsl(parts.query, True)]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe="#%:"), ""))


class RedactUrls(logging.Filter):
    """Passes every record, with URL arguments (httpx logs them) redacted first."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact(str(a)) if isinstance(a, httpx.URL) or _is_url(a) else a for a in record.args
            )
        return True


def _is_url(value: object) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://"))


def retry_after(response: httpx.Response, cap: float = MAX_RETRY_AFTER) -> float | None:
    """Seconds from a ``Retry-After`` header (delta or HTTP date), at most ``cap``."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), cap)


def token_expiry(token: str) -> float | None:
    """``exp`` of a resto rJWT (a JWT without its header segment) or a full JWT."""
    segments = token.split(".")
    payload = segments[0] if len(segments) == 2 else (segments[1] if len(segments) == 3 else "")
    try:
        data = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        return None
    exp = data.get("exp") if isinstance(data, dict) else None
    return float(exp) if isinstance(exp, int | float) else None


def _error_message(response: httpx.Response) -> str:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict):
        for key in ("ErrorMessage", "description", "detail", "message"):
            if isinstance(body.get(key), str):
                return str(body[key])
    return response.reason_phrase or "error"


class RestoClient:
    """Reads a resto catalogue: search pages, collections, features, auth tokens."""

    def __init__(
        self,
        base_url: str,
        *,
        username: str | None = None,
        password: SecretStr | None = None,
        token: SecretStr | None = None,
        flavour: Flavour = "auto",
        timeout: float = 60.0,
        retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise RestoError(f"resto URL must start with http:// or https://: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.flavour: str = flavour
        self.retries = max(1, retries)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._username = username
        self._password = password
        self._token: SecretStr | None = token
        self._token_exp = token_expiry(token.get_secret_value()) if token else None
        self._timeout = timeout
        self._own_transport = transport is None
        self._http = httpx.Client(
            timeout=timeout,
            follow_redirects=True,
            transport=transport,
            headers={"User-Agent": f"thisme-stac/{__version__}", "Accept": "application/json"},
        )

    def __enter__(self) -> RestoClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RestoClient({self.base_url!r}, flavour={self.flavour!r})"

    def close(self) -> None:
        self._http.close()

    def twin_arguments(self) -> dict[str, Any] | None:
        """Keyword arguments that make an equivalent client in another process (current token
        included), or None when this one cannot be copied (it was given its own transport)."""
        if not self._own_transport:
            return None
        return {
            "base_url": self.base_url,
            "username": self._username,
            "password": self._password,
            "token": self._token,
            "flavour": self.flavour,
            "timeout": self._timeout,
            "retries": self.retries,
            "backoff": self.backoff,
            "max_backoff": self.max_backoff,
        }

    # --- authentication ------------------------------------------------------------------------
    def auth_headers(self) -> dict[str, str]:
        """A fresh ``Authorization`` header, or nothing for anonymous access."""
        if self._username and self._password and self._token_needs_refresh():
            self._login()
        if self._token is not None:
            return {"Authorization": f"Bearer {self._token.get_secret_value()}"}
        return {}

    def refresh_token(self) -> None:
        """Forget the current token: the next request logs in again (after a 401/403)."""
        if self._username and self._password:
            self._token = None

    def _token_needs_refresh(self) -> bool:
        if self._token is None:
            return True
        return self._token_exp is not None and self._token_exp - TOKEN_MARGIN < time.time()

    def _login(self) -> None:
        assert self._username is not None
        assert self._password is not None
        path = "/api/user/connect" if self.flavour == "2" else "/auth"
        auth = httpx.BasicAuth(self._username, self._password.get_secret_value())
        body = self._get_json(f"{self.base_url}{path}", auth=auth, authenticate=False)
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise RestoError(f"resto at {self.base_url} returned no token for {self._username}")
        self._token = SecretStr(token)
        self._token_exp = token_expiry(token)
        log.debug("obtained a resto token (expires %s)", self._token_exp)

    # --- HTTP ----------------------------------------------------------------------------------
    def _sleep(self, attempt: int, response: httpx.Response | None) -> None:
        delay = random.uniform(0, min(self.max_backoff, self.backoff * 2**attempt))
        if response is not None and (after := retry_after(response)) is not None:
            delay = max(delay, after)
        time.sleep(delay)

    def _get(
        self, url: str, headers: dict[str, str], auth: httpx.Auth | None
    ) -> tuple[httpx.Response, bytes]:
        """GET a response and its body. A successful body is read into bytes the response does
        not keep: httpx responses sit in a reference cycle with their stream, so a body kept in
        ``response.content`` lives until a full garbage collection (hundreds of MB of pages)."""
        with self._http.stream("GET", url, headers=headers, auth=auth) as response:
            if response.is_success:
                return response, b"".join(response.iter_bytes())
            return response, response.read()

    def _get_json(
        self,
        url: str,
        *,
        auth: httpx.Auth | None = None,
        authenticate: bool = True,
    ) -> Any:
        """GET JSON with retries on transient failures; one-line RestoError otherwise."""
        shown = redact(url)
        refreshed = False
        attempt = 0
        while True:
            headers = self.auth_headers() if authenticate else {}
            response: httpx.Response | None = None
            try:
                response, content = self._get(url, headers, auth)
            except httpx.InvalidURL as err:
                raise RestoError(f"invalid resto URL {shown}: {err}", url=shown) from None
            except httpx.TransportError as err:
                problem = _transport_problem(err)
                if attempt + 1 >= self.retries:
                    raise RestoError(
                        f"cannot reach resto at {redact(self.base_url)}: {problem}", url=shown
                    ) from None
                log.warning("resto %s: %s, retrying", shown, problem)
            else:
                status = response.status_code
                if status == 401 and authenticate and self._username and not refreshed:
                    self._token = None
                    refreshed = True
                    continue
                if status in RETRY_STATUS:
                    if attempt + 1 >= self.retries:
                        raise RestoError(
                            f"resto answered {status} for {shown}: {_error_message(response)}",
                            status=status,
                            url=shown,
                        )
                    log.warning("resto answered %s for %s, retrying", status, shown)
                elif status >= 400:
                    raise RestoError(
                        f"resto answered {status} for {shown}: {_error_message(response)}",
                        status=status,
                        url=shown,
                    )
                else:
                    try:
                        return orjson.loads(content)
                    except orjson.JSONDecodeError:
                        if attempt + 1 >= self.retries:
                            kind = "truncated JSON" if content[:1] in b"{[" else "non-JSON"
                            raise RestoError(
                                f"resto sent a {kind} body for {shown}", status=status, url=shown
                            ) from None
                        log.warning("resto sent an unreadable body for %s, retrying", shown)
            self._sleep(attempt, response)
            attempt += 1

    # --- catalogue -----------------------------------------------------------------------------
    def hello(self) -> Any:
        return self._get_json(f"{self.base_url}/")

    def collections(self) -> Any:
        return self._get_json(f"{self.base_url}/collections")

    def describe_collection(self, name: str) -> dict[str, Any]:
        """resto's description of one collection; unknown → RestoError(status=404)."""
        try:
            body = self._get_json(f"{self.base_url}/collections/{name}")
        except RestoError as err:
            if err.status == 404:
                raise RestoError(
                    f"unknown collection {name!r} at {redact(self.base_url)}",
                    status=404,
                    url=err.url,
                ) from None
            raise
        if not isinstance(body, dict):
            raise RestoError(f"unexpected description of collection {name!r}")
        return body

    def get_feature(self, feature_id: str) -> dict[str, Any]:
        body = self._get_json(f"{self.base_url}/features/{feature_id}")
        if not isinstance(body, dict):
            raise RestoError(f"unexpected feature body for {feature_id!r}")
        return body

    def _first_url(self, query: RestoQuery, limit: int, extra: Mapping[str, str]) -> str:
        if self.flavour == "2" and query.collection:
            qs = query.query_string({**extra, "maxRecords": str(limit)})
            return f"{self.base_url}/api/collections/{query.collection}/search.json?{qs}"
        if self.flavour == "6" and query.collection:
            qs = query.query_string({**extra, "limit": str(limit)})
            return f"{self.base_url}/collections/{query.collection}/items?{qs}"
        return query.search_url(self.base_url, limit=limit, extra=extra)

    def search_pages(
        self,
        query: RestoQuery,
        *,
        limit: int = 500,
        start_url: str | None = None,
        extra_params: Mapping[str, str] | None = None,
        cursor: SearchCursor | None = None,
    ) -> Generator[RestoPage, None, None]:
        """Follow ``next`` links from the first page (or ``start_url``) to the end.

        Stops on an empty page, a short page or a page without ``next``; never trusts
        ``totalResults``; drops features already seen on the last pages (by id and
        productIdentifier). A ``cursor`` (new or handed over from another process) is kept up to
        date before each page is yielded, so it always names the next page to fetch.
        """
        if not 1 <= limit <= 500:
            raise RestoError(f"page size must be within 1..500, got {limit}")
        if cursor is None:
            cursor = SearchCursor(limit)
        if not cursor.started:
            cursor.url = start_url or self._first_url(query, limit, extra_params or {})
        first = not cursor.started and start_url is None
        while cursor.url:
            url = cursor.url
            if url in cursor.visited:
                raise RestoError(f"resto paging loops on {redact(url)}")
            cursor.visited.add(url)
            cursor.started = True
            try:
                body = self._get_json(url)
            except RestoError as err:
                if err.status != 404 or self.flavour != "auto" or not query.collection or not first:
                    raise
                self.flavour = "2"  # resto 2 serves searches under /api/collections/{c}
                url = self._first_url(query, limit, extra_params or {})
                cursor.visited.add(url)
                try:
                    body = self._get_json(url)
                except RestoError:
                    self.flavour = "auto"
                    raise err from None
                log.info("no resto 5 search route; using the resto 2 route")
            first = False
            page = self._page(body, url, cursor.seen)
            last = page.raw_count == 0 or page.raw_count < cursor.limit or not page.next_url
            cursor.url = None if last else page.next_url
            yield page

    def _page(self, body: Any, url: str, seen: _RecentKeys) -> RestoPage:
        if not isinstance(body, dict) or not isinstance(body.get("features"), list):
            raise RestoError(f"resto sent no FeatureCollection for {redact(url)}")
        raw = [f for f in body["features"] if isinstance(f, dict)]
        rejected = [
            f"feature #{n} of {redact(url)} is not a JSON object ({type(f).__name__})"
            for n, f in enumerate(body["features"], 1)
            if not isinstance(f, dict)
        ]
        props = body.get("properties") if isinstance(body.get("properties"), dict) else {}
        assert isinstance(props, dict)
        if "stac_version" in body or "numberMatched" in body or "context" in body:
            flavour, links = "6", body.get("links")
            context = body.get("context")
            total = body.get("numberMatched")
            if not total and isinstance(context, dict):
                total = context.get("matched")
        else:
            flavour = "2" if "itemsPerPage" in props else "5"
            links, total = props.get("links"), props.get("totalResults")
        next_url = None
        for link in links if isinstance(links, list) else []:
            if isinstance(link, dict) and link.get("rel") == "next" and link.get("href"):
                next_url = str(link["href"])
        if next_url is not None and not _is_http_url(next_url):
            raise RestoError(f"resto sent an unusable next link {next_url[:80]!r} on {redact(url)}")
        features: list[dict[str, Any]] = []
        duplicates = 0
        for feature in raw:
            fprops = feature.get("properties")
            fid = feature.get("id")
            keys = {fid} if isinstance(fid, str) and fid else set()
            pid = fprops.get("productIdentifier") if isinstance(fprops, dict) else None
            if isinstance(pid, str) and pid:
                keys.add("pid:" + pid)
            if seen.contains_any(keys):
                duplicates += 1
                continue
            seen.add(keys)
            features.append(feature)
        seen.next_page()
        return RestoPage(
            features=features,
            url=url,
            next_url=next_url,
            total_results=total if isinstance(total, int) else None,
            duplicates=duplicates,
            raw_count=len(body["features"]),
            flavour=flavour,
            rejected=rejected,
        )


def _is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a malformed port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _transport_problem(err: httpx.TransportError) -> str:
    if isinstance(err, httpx.ConnectError):
        return "connection refused" if "refused" in str(err).lower() else "cannot connect"
    if isinstance(err, httpx.TimeoutException):
        return "timed out"
    return type(err).__name__
