"""stac-browser at ``/browser/`` of a real API server, driven in headless Chromium.

Debian's ``chromium`` is driven through Playwright's Python package with ``executable_path``:
no browser is downloaded. Requests that leave the API's own origin (basemap tiles, JSON
schemas, the simulator's thumbnails) are aborted, as on a machine without internet; they may
fail, anything that comes from the API must not. Screenshots go to ``test-artifacts/browser/``.

Prerequisites, which FAIL the tests (never skip them) when missing: ``apt-get install -y
chromium``, ``pip install playwright`` (with PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1) and the build,
``scripts/build_browser.sh``. ``THISME_TEST_CHROMIUM`` names another Chromium,
``THISME_BROWSER_DIR`` another build.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.apiserver import ApiServer, build_store, get, running_api
from thisme_stac_api.browser import DEFAULT_BROWSER_DIR, config_script

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Locator, Page, Request, Response, Route

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parent.parent
ARTEFACTS = REPO / "test-artifacts" / "browser"
COLLECTION = "SoilMoisture"
COLLECTION_TITLE = "Theia VHSR Soil Moisture maps (S2MP)"
CATALOGUE_TITLE = "THISME soil moisture"
SITE = "Camargue"
#: Every 50th simulated map: 390 items, a few pages of them of SITE.
STEP = 50
#: stac-browser's default page size.
PAGE = 10
TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def chromium() -> str:
    path = os.environ.get("THISME_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"no Chromium at {path}: apt-get install -y chromium (or set THISME_TEST_CHROMIUM)"
        )
    return path


@pytest.fixture(scope="module")
def browser_build() -> Path:
    directory = Path(os.environ.get("THISME_BROWSER_DIR") or DEFAULT_BROWSER_DIR)
    if not (directory / "index.html").is_file():
        pytest.fail(f"no stac-browser build in {directory}: run scripts/build_browser.sh")
    return directory


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Browser]:
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.fail(
            "the playwright package is missing: "
            "PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 pip install playwright"
        )
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Served:
    api: ApiServer
    items: list[dict[str, Any]]

    @property
    def url(self) -> str:
        return self.api.url


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, browser_build: Path) -> Iterator[Served]:
    store = tmp_path_factory.mktemp("browser") / "catalogue.db"
    items = build_store(store, step=STEP)
    with running_api(store, browser_dir=str(browser_build)) as api:
        config = get(api, "browser/config.js")
        if config.status_code != 200:
            pytest.fail(
                f"GET /browser/config.js answered {config.status_code}: the app must serve the "
                "build with thisme_stac_api.browser.mount_browser(app, browser_dir)"
            )
        yield Served(api, items)


@dataclass
class PageLog:
    """What the page said and fetched; what went wrong with the API's own origin fails the test."""

    origins: tuple[str, ...]
    console: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    api_requests: list[str] = field(default_factory=list)

    def ours(self, url: str) -> bool:
        return any(url == origin or url.startswith(origin + "/") for origin in self.origins)

    def attach(self, page: Page) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda error: self._error(f"uncaught: {error}"))
        page.on("requestfailed", self._request_failed)
        page.on("response", self._response)

    def _console(self, message: ConsoleMessage) -> None:
        text = message.text
        where = message.location.get("url", "") if message.location else ""
        self.console.append(f"{message.type}: {text} ({where})")
        if re.search(r"CORS|Access-Control-Allow", text):
            self.problems.append(f"CORS: {text}")
        elif message.type == "error":
            self._error(text, where)

    def _error(self, text: str, where: str = "") -> None:
        """An error is allowed only when it is about a resource outside the API (offline)."""
        urls = re.findall(r"https?://[^\s'\")]+", text)
        if text.startswith("Failed to load resource") and where:
            urls = [where]
        code = f"{self.origins[0]}/browser/js/"
        urls = [url for url in urls if not url.startswith(code)]  # stack frames
        if not urls or any(self.ours(url) for url in urls):
            self.problems.append(f"console error: {text} ({where})")

    def _request_failed(self, request: Request) -> None:
        if self.ours(request.url):
            self.problems.append(f"failed: {request.method} {request.url}: {request.failure}")

    def _response(self, response: Response) -> None:
        if not self.ours(response.url):
            return
        if "/browser/" not in response.url:
            self.api_requests.append(f"{response.request.method} {response.url}")
        if response.status >= 400:
            self.problems.append(
                f"HTTP {response.status}: {response.request.method} {response.url}"
            )

    def offline(self, route: Route) -> None:
        """Only the API is reachable: everything else is aborted as if there were no network."""
        if self.ours(route.request.url):
            route.continue_()
        else:
            route.abort("internetdisconnected")

    def assert_clean(self) -> None:
        assert not self.problems, "\n".join([*self.problems, "-- console --", *self.console])


@contextmanager
def _session(browser: Browser, log: PageLog, name: str) -> Iterator[Page]:
    """A fresh page; on failure a screenshot and the API problems seen go with the error.

    Whatever the steps assert, the page must not have met a CORS or loading error of the API.
    """
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
    context.route("**/*", log.offline)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    log.attach(page)
    try:
        yield page
    except Exception as err:
        _shot(page, f"failed-{name}")
        if log.problems:
            raise AssertionError("\n".join(["the page met API errors:", *log.problems])) from err
        raise
    finally:
        context.close()
    log.assert_clean()


def _shot(page: Page, name: str) -> None:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTEFACTS / f"{name}.png"), full_page=True)


def _card_ids(page: Page) -> list[str]:
    """The ids of the item cards shown (their titles are the ids)."""
    links = page.get_by_role("link", name=re.compile(r"^SM_"))
    return [text.strip() for text in links.all_inner_texts()]


TERMS = "Enter one or more search terms..."
COLLECTIONS = "Select one or multiple collections..."


def _item_search_form(page: Page) -> Locator:
    """The search page's "Search for Items" form (the tab is re-rendered once collections load)."""
    from playwright.sync_api import Error

    tab = page.get_by_role("tab", name="Search for Items")
    form = page.locator('[role="tabpanel"]:visible').filter(
        has=page.get_by_placeholder(COLLECTIONS)
    )
    for _ in range(10):
        tab.click()
        try:
            form.wait_for(state="visible", timeout=1_000)
            return form
        except Error:
            continue
    raise AssertionError("the item search form did not open")


def _choose(form: Locator, placeholder: str, text: str, option: str | None = None) -> None:
    """Type into one of the form's multi-selects and pick ``option`` (or the typed text)."""
    field = form.get_by_placeholder(placeholder)
    form.locator(".multiselect").filter(has=form.page.get_by_placeholder(placeholder)).click()
    field.fill(text)
    if option is None:
        field.press("Enter")
    else:
        form.get_by_role("option", name=option).click()


def _search_response(origin: str) -> Callable[[Response], bool]:
    return lambda r: r.url.split("?")[0] == f"{origin}/search" and r.request.method == "POST"


def test_browse_search_and_open_an_item(browser: Browser, server: Served) -> None:
    from playwright.sync_api import expect

    origin = server.url.rstrip("/")
    of_site = sorted(i["id"] for i in server.items if i["properties"]["thisme:site"] == SITE)
    assert len(of_site) > PAGE  # so that the search has a second page
    log = PageLog((origin,))
    with _session(browser, log, "browse") as page:
        # The catalogue, configured at run time to this API (not a URL built in).
        page.goto(f"{server.url}browser/")
        expect(page.get_by_role("heading", name=CATALOGUE_TITLE, level=1)).to_be_visible()
        assert page.evaluate("window.STAC_BROWSER_CONFIG.catalogUrl") == server.url
        card = page.get_by_role("link", name=COLLECTION_TITLE)
        expect(card).to_have_attribute("href", f"/browser/collections/{COLLECTION}")
        _shot(page, "01-catalogue")

        # The collection: its metadata and its first page of items.
        card.click()
        expect(page).to_have_url(f"{origin}/browser/collections/{COLLECTION}")
        expect(page.get_by_role("heading", name=COLLECTION_TITLE, level=1)).to_be_visible()
        expect(page.get_by_text("INRAE UMR TETIS")).to_be_visible()
        expect(page.get_by_role("link", name=re.compile(r"^SM_"))).to_have_count(PAGE)
        _shot(page, "02-collection")

        # An item search (POST /search): free text and the collection, then the next page.
        page.locator('a[title="Search"][href="/browser/search"]').click()
        expect(page).to_have_url(f"{origin}/browser/search")
        form = _item_search_form(page)
        _choose(form, TERMS, SITE)
        _choose(form, COLLECTIONS, "Soil", COLLECTION_TITLE)
        with page.expect_response(_search_response(origin)) as first:
            form.get_by_role("button", name="Submit").click()
        assert first.value.status == 200
        sent: dict[str, Any] = first.value.request.post_data_json or {}
        assert sent["collections"] == [COLLECTION]
        assert SITE in str(sent["q"])
        found = first.value.json()
        assert found["numberMatched"] == len(of_site)
        expect(page.get_by_role("link", name=re.compile(r"^SM_"))).to_have_count(PAGE)
        shown = _card_ids(page)
        assert sorted(shown) == sorted(f["id"] for f in found["features"])
        assert set(shown) <= set(of_site), shown
        _shot(page, "03-search")

        with page.expect_response(_search_response(origin)) as second:
            page.get_by_role("button", name="Next ›").first.click()
        assert second.value.status == 200
        expect(page.get_by_role("link", name=shown[0], exact=True)).to_have_count(0)
        expect(page.get_by_role("link", name=re.compile(r"^SM_"))).to_have_count(PAGE)
        second_page = _card_ids(page)
        assert set(second_page) <= set(of_site)
        assert not set(second_page) & set(shown)
        _shot(page, "04-search-page-2")

        # An item and its asset: metadata rendered, the download link is the asset's href.
        item_id = second_page[0]
        item = next(i for i in server.items if i["id"] == item_id)
        page.get_by_role("link", name=item_id, exact=True).click()
        item_url = f"{origin}/browser/collections/{COLLECTION}/items/{item_id}"
        expect(page).to_have_url(re.compile(re.escape(item_url)))
        expect(page.get_by_role("heading", name=item_id, level=1)).to_be_visible()
        asset = page.get_by_role("button", name=re.compile(r"^Soil moisture map\b"))
        expect(asset).to_have_attribute("aria-expanded", "true")
        download = page.get_by_role("link", name="Download")
        expect(download).to_have_attribute("href", item["assets"]["data"]["href"])
        expect(page.get_by_role("cell", name="soil_moisture", exact=True)).to_be_visible()
        expect(page.get_by_role("link", name="EPSG:4326")).to_be_visible()
        expect(page.get_by_text(item["properties"]["sat:orbit_state"], exact=True)).to_be_visible()
        _shot(page, "05-item")

        # History mode: the item's address loads by itself (reload, a shared link).
        page.reload()
        expect(page.get_by_role("heading", name=item_id, level=1)).to_be_visible()
        expect(asset).to_be_visible()
    assert f"GET {server.url}collections/{COLLECTION}/items/{item_id}" in log.api_requests


def test_cross_origin_browser(browser: Browser, server: Served) -> None:
    """stac-browser on another origin than the API (as docker-compose runs it): CORS works."""
    from playwright.sync_api import expect

    page_origin = server.url.rstrip("/")
    api_url = server.url.replace("127.0.0.1", "localhost")
    log = PageLog((page_origin, api_url.rstrip("/")))

    def other_config(route: Route) -> None:
        config = {"catalogUrl": api_url, "catalogTitle": CATALOGUE_TITLE}
        route.fulfill(status=200, content_type="text/javascript", body=config_script(config))

    with _session(browser, log, "cross-origin") as page:
        page.route(f"{page_origin}/browser/config.js", other_config)
        page.goto(f"{page_origin}/browser/")
        expect(page.get_by_role("heading", name=CATALOGUE_TITLE, level=1)).to_be_visible()
        page.get_by_role("link", name=COLLECTION_TITLE).click()
        expect(page.get_by_role("link", name=re.compile(r"^SM_"))).to_have_count(PAGE)
        page.locator('a[title="Search"][href="/browser/search"]').click()
        form = _item_search_form(page)
        _choose(form, TERMS, SITE)
        with page.expect_response(lambda r: r.url == f"{api_url}search") as searched:
            form.get_by_role("button", name="Submit").click()
        assert searched.value.status == 200
        assert searched.value.headers.get("access-control-allow-origin") in ("*", page_origin)
        expect(page.get_by_role("link", name=re.compile(rf"^SM_{SITE}_"))).to_have_count(PAGE)
        _shot(page, "06-cross-origin-search")
    assert any(request.startswith(f"GET {api_url}") for request in log.api_requests)
    assert f"POST {api_url}search" in log.api_requests


def test_config_follows_the_client_view(server: Served) -> None:
    """config.js names the API root the client used: host, forwarded host and scheme."""
    local = get(server.api, "browser/config.js")
    assert local.headers["content-type"].startswith("text/javascript")
    assert local.headers["cache-control"] == "no-store"
    assert json.dumps(server.url) in local.text
    proxied = get(
        server.api,
        "browser/config.js",
        headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "stac.example.org"},
    )
    assert '"catalogUrl": "https://stac.example.org/"' in proxied.text


def test_pages_and_files(server: Served, browser_build: Path) -> None:
    """Page addresses get index.html (history mode); a missing file stays a 404."""
    html = {"Accept": "text/html,application/xhtml+xml"}
    index = (browser_build / "index.html").read_text()
    for path in ("browser/", f"browser/collections/{COLLECTION}/items/x", "browser/search"):
        page = get(server.api, path, headers=html)
        assert page.status_code == 200, path
        assert page.text == index, path
    assert get(server.api, "browser/js/missing.js").status_code == 404
    script = next((browser_build / "js").glob("app.*.js")).name
    cached = get(server.api, f"browser/js/{script}")
    assert cached.status_code == 200
    assert "immutable" in cached.headers["cache-control"]
    assert get(server.api, "browser", follow_redirects=True).text == index
