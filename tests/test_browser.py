"""The web snippet, the chart page and the badge in a real browser (Debian's Chromium), against
the function.

The pages are served from their own origin, as a real site would be, and the function allows
that origin only. The function uses a namespace of its own, so the demo page's "/" starts at 0.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Page,
    Request,
    sync_playwright,
)

from conftest import ARTIFACTS, PROJECT, ROOT, LiveServer, readme_block
from counter import config, days, instance
from counter import messages as ds
from counter.page_counts import COUNT
from scripts.emulator import free_port
from user_agents import BROWSER

# Debian's chromium by default; CHROMIUM_PATH names another Chromium build.
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH") or "/usr/bin/chromium")
if not CHROMIUM.exists():
    _missing = (
        f"Chromium not found at {CHROMIUM}; apt-get install chromium (or set CHROMIUM_PATH) "
        "to run the browser tests"
    )
    if os.environ.get("CI"):
        pytest.fail(_missing, pytrace=False)
    pytest.skip(_missing, allow_module_level=True)

# Headless, and nothing but loopback: without the last four Chromium tries to reach Google.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WEB = ROOT / "web"
DEMO_ENDPOINT = 'data-endpoint="http://localhost:8080/"'
FALLBACK = "\u2013"  # an en dash, the snippet's usual placeholder
# Headless Chromium says "HeadlessChrome" in its user agent, and python-requests says its name:
# the function rightly takes both for bots and does not count them. A visitor's Chrome says this.
VISITOR_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/156.0.0.0 Safari/537.36"
)
SETTLED = """() => [...document.querySelectorAll("[data-visit-counter]")].every(
    (e) => ["ok", "error"].includes(e.dataset.visitCounterState))"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, _format: str, *args: object) -> None:
        """Keep the test output free of access logs."""


@dataclass
class Site:
    """A static web server on its own loopback origin."""

    server: http.server.ThreadingHTTPServer

    @property
    def origin(self) -> str:
        """scheme://host:port, as the browser sends it in Origin."""
        return f"http://127.0.0.1:{self.server.server_port}"


@dataclass
class Tab:
    """A fresh browser page, with what it reported while the test ran."""

    page: Page
    warnings: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    function_calls: list[tuple[str, str]] = field(default_factory=list)


@pytest.fixture(scope="module")
def site_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pages the browser loads: the snippet from web/ and the pages each test writes."""
    directory = tmp_path_factory.mktemp("site")
    shutil.copy(WEB / "counter.js", directory)
    return directory


def _serve(directory: Path) -> Iterator[Site]:
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield Site(server)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def site(site_dir: Path) -> Iterator[Site]:
    """The origin the function allows."""
    yield from _serve(site_dir)


@pytest.fixture(scope="module")
def foreign_site(site_dir: Path) -> Iterator[Site]:
    """The same pages on another origin, one the function does not allow."""
    yield from _serve(site_dir)


@pytest.fixture(scope="module")
def namespace() -> str:
    """A Datastore namespace for this module's counts alone."""
    return f"browser-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def site_function(
    start_server: Callable[..., LiveServer], site: Site, namespace: str
) -> Callable[..., LiveServer]:
    """Start the function on the emulator, allowing the site's origin only, with more settings."""

    def start(name: str, **settings: str) -> LiveServer:
        return start_server(
            name, ALLOWED_ORIGINS=site.origin, DATASTORE_NAMESPACE=namespace, **settings
        )

    return start


@pytest.fixture(scope="module")
def function(site_function: Callable[..., LiveServer]) -> LiveServer:
    """The function with its default settings."""
    return site_function("browser")


@pytest.fixture(scope="module")
def seed(emulator_host: str, namespace: str) -> Callable[[str, int], None]:
    """Set a page's count directly in Datastore, for counts too big to reach by posting."""
    counts = instance.build(
        config.Settings(project=PROJECT, emulator_host=emulator_host, namespace=namespace)
    ).counts

    def put(page: str, count: int) -> None:
        entity = ds.Entity(
            key=counts.shard_key(page, 0), properties={COUNT: ds.Value(integer_value=count)}
        )
        counts.db.commit([ds.Mutation(upsert=entity)], deadline=counts.db.deadline())

    return put


@pytest.fixture(scope="module")
def seed_days(emulator_host: str, namespace: str) -> Callable[[str, dict[str, int]], None]:
    """Set a page's counts for some UTC dates directly in Datastore, as past visits left them."""
    counts = instance.build(
        config.Settings(project=PROJECT, emulator_host=emulator_host, namespace=namespace)
    ).counts

    def put(page: str, per_day: dict[str, int]) -> None:
        entities = [
            ds.Entity(key=counts.day_key(page, date), properties={COUNT: ds.Value(integer_value=n)})
            for date, n in per_day.items()
        ]
        mutations = [ds.Mutation(upsert=entity) for entity in entities]
        counts.db.commit(mutations, deadline=counts.db.deadline())

    return put


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the module."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def new_context(
    browser: Browser, locale: str = "en-US", user_agent: str | None = VISITOR_AGENT
) -> BrowserContext:
    """A fresh browser profile: no cache, no cookies, its own clock."""
    context = browser.new_context(locale=locale, user_agent=user_agent)
    context.set_default_timeout(10_000)
    return context


@pytest.fixture(scope="module")
def visitor_context(browser: Browser) -> Iterator[BrowserContext]:
    """A visitor's browser profile, shared by the tests that need nothing special of it."""
    context = new_context(browser)
    yield context
    context.close()


@pytest.fixture
def open_tab(
    browser: Browser, visitor_context: BrowserContext, function: LiveServer
) -> Iterator[Callable[..., Tab]]:
    """Open pages that record warnings, errors, dialogs and calls to the function.

    A page opens in the shared visitor's profile unless it asks for another locale, the headless
    user agent, or a profile of its own (to fake the clock, which is per profile).
    """
    contexts: list[BrowserContext] = []
    pages: list[Page] = []

    def open_(
        locale: str | None = None, headless_agent: bool = False, own_context: bool = False
    ) -> Tab:
        context = visitor_context
        if locale or headless_agent or own_context:
            agent = None if headless_agent else VISITOR_AGENT
            context = new_context(browser, locale or "en-US", agent)
            contexts.append(context)
        tab = watched(context.new_page(), function.url)
        pages.append(tab.page)
        return tab

    yield open_
    for page in pages:
        page.close()
    for context in contexts:
        context.close()


def watched(page: Page, endpoint: str) -> Tab:
    """A tab that records the page's warnings, errors, dialogs and calls to the endpoint."""
    tab = Tab(page)

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "warning":
            tab.warnings.append(message.text)

    def on_dialog(dialog: Dialog) -> None:
        tab.dialogs.append(dialog.message)
        dialog.dismiss()

    def on_request(request: Request) -> None:
        if request.url.startswith(endpoint):
            tab.function_calls.append((request.method, request.url))

    page.on("console", on_console)
    page.on("pageerror", lambda error: tab.page_errors.append(str(error)))
    page.on("dialog", on_dialog)
    page.on("request", on_request)
    return tab


def counter_span(endpoint: str, page: str, mode: str | None = None) -> str:
    """The documented snippet's element."""
    mode_attribute = f' data-mode="{mode}"' if mode else ""
    return (
        f'<span data-visit-counter data-endpoint="{endpoint}" data-page="{page}"'
        f"{mode_attribute}>{FALLBACK}</span>"
    )


def publish(site_dir: Path, body: str) -> str:
    """Write a page that uses the snippet; return its file name."""
    name = f"{uuid.uuid4().hex}.html"
    (site_dir / name).write_text(
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<link rel="icon" href="data:,"><title>test page</title></head>'
        f'<body>{body}<script src="counter.js" defer></script></body></html>',
        encoding="utf-8",
    )
    return name


def load(tab: Tab, url: str) -> list[str]:
    """Open a page, wait until every counter has settled; return the counters' texts."""
    tab.page.goto(url)
    tab.page.wait_for_function(SETTLED)
    return tab.page.locator("[data-visit-counter]").all_text_contents()


def state(tab: Tab) -> str | None:
    """The state the snippet gave the page's only counter."""
    return tab.page.locator("[data-visit-counter]").get_attribute("data-visit-counter-state")


def visit(function: LiveServer, page: str) -> None:
    """Count a visit as a visitor's browser would, outside the test's browser."""
    response = requests.post(
        function.url, params={"page": page}, headers={"User-Agent": VISITOR_AGENT}, timeout=10
    )
    response.raise_for_status()


def count_of(function: LiveServer, page: str) -> int:
    """The stored count of a page, read through the function."""
    response = requests.get(function.url, params={"page": page}, timeout=10)
    assert response.status_code == 200
    return response.json()["count"]


def test_each_load_counts_one_visit(
    open_tab: Callable[..., Tab], site: Site, site_dir: Path, function: LiveServer, page: str
) -> None:
    name = publish(site_dir, f"<p>Visits: {counter_span(function.url, page)}</p>")
    tab = open_tab()

    shown = [load(tab, f"{site.origin}/{name}") for _ in range(3)]

    assert shown == [["1"], ["2"], ["3"]]
    assert count_of(function, page) == 3
    assert tab.function_calls == [("POST", f"{function.url}?page={quote(page, safe='')}")] * 3
    assert (tab.warnings, tab.page_errors) == ([], [])


def test_the_snippet_included_twice_counts_once(
    open_tab: Callable[..., Tab], site: Site, site_dir: Path, function: LiveServer, page: str
) -> None:
    # This copy runs while the page is still loading, so it waits for the DOM; the deferred copy
    # at the end runs first, and this one must then leave the started counter alone.
    name = publish(
        site_dir, f'<script src="counter.js"></script>{counter_span(function.url, page)}'
    )
    tab = open_tab()

    assert load(tab, f"{site.origin}/{name}") == ["1"]
    assert len(tab.function_calls) == 1
    assert count_of(function, page) == 1


def test_a_headless_browser_sees_the_count_but_is_not_counted(
    open_tab: Callable[..., Tab], site: Site, site_dir: Path, function: LiveServer, page: str
) -> None:
    visit(function, page)
    name = publish(site_dir, counter_span(function.url, page))
    tab = open_tab(headless_agent=True)

    assert load(tab, f"{site.origin}/{name}") == ["1"]
    assert [method for method, _ in tab.function_calls] == ["POST"]
    assert count_of(function, page) == 1
    assert (tab.warnings, tab.page_errors) == ([], [])


def test_the_owner_can_stop_counting_their_own_browser(
    open_tab: Callable[..., Tab], site: Site, site_dir: Path, function: LiveServer, page: str
) -> None:
    name = publish(site_dir, counter_span(function.url, page))
    url = f"{site.origin}/{name}"
    owner = open_tab(own_context=True)
    stranger = open_tab(own_context=True)

    assert load(owner, url) == ["1"]
    assert load(owner, f"{url}?visit-counter=ignore") == ["1"]
    assert load(owner, url) == ["1"]  # remembered on later pages, without the flag
    assert load(stranger, url) == ["2"]  # only the owner's browser is left out
    assert load(owner, url) == ["2"]
    assert load(owner, f"{url}?visit-counter=count") == ["3"]
    assert load(owner, url) == ["4"]

    assert [method for method, _ in owner.function_calls] == ["POST", "GET", "GET", "GET"] + [
        "POST"
    ] * 2
    assert count_of(function, page) == 4
    assert (owner.warnings, owner.page_errors) == ([], [])


@pytest.mark.parametrize(
    ("locale", "shown"),
    [("en-US", "1,234,567"), ("de-DE", "1.234.567"), ("fr-FR", "1\u202f234\u202f567")],
)
def test_read_mode_shows_the_count_in_the_visitors_locale_without_counting(
    open_tab: Callable[..., Tab],
    site: Site,
    site_dir: Path,
    function: LiveServer,
    seed: Callable[[str, int], None],
    page: str,
    locale: str,
    shown: str,
) -> None:
    seed(page, 1_234_567)
    name = publish(site_dir, counter_span(function.url, page, mode="read"))
    tab = open_tab(locale)

    assert load(tab, f"{site.origin}/{name}") == [shown]
    assert load(tab, f"{site.origin}/{name}") == [shown]
    assert [method for method, _ in tab.function_calls] == ["GET", "GET"]
    assert count_of(function, page) == 1_234_567


def test_counters_on_one_page_share_one_request_per_counted_page(
    open_tab: Callable[..., Tab],
    site: Site,
    site_dir: Path,
    function: LiveServer,
    seed: Callable[[str, int], None],
) -> None:
    first, second, read_only = (f"/test/{uuid.uuid4().hex}" for _ in range(3))
    seed(read_only, 41)
    url = function.url
    name = publish(
        site_dir,
        f"<p>{counter_span(url, first)}</p><p>{counter_span(url, second)}</p>"
        f"<p>{counter_span(url, first)}</p><p>{counter_span(url, first, 'read')}</p>"
        f"<p>{counter_span(url, read_only, 'read')}</p>",
    )
    tab = open_tab()

    # The read-only element of the counted page shows that page's new count, from the same POST.
    assert load(tab, f"{site.origin}/{name}") == ["1", "1", "1", "1", "41"]
    assert sorted(tab.function_calls) == sorted(
        [
            ("POST", f"{url}?page={quote(first, safe='')}"),
            ("POST", f"{url}?page={quote(second, safe='')}"),
            ("GET", f"{url}?page={quote(read_only, safe='')}"),
        ]
    )
    assert [count_of(function, p) for p in (first, second, read_only)] == [1, 1, 41]
    assert (tab.warnings, tab.page_errors) == ([], [])


@pytest.mark.parametrize(
    ("failure", "mode"),
    [
        ("origin not allowed", None),
        ("function down", None),
        ("error status", "read"),
        ("not JSON", "read"),
        ("no count", "read"),
    ],
)
def test_a_failed_count_keeps_the_fallback_and_the_page_intact(
    open_tab: Callable[..., Tab],
    site: Site,
    foreign_site: Site,
    site_dir: Path,
    function: LiveServer,
    page: str,
    failure: str,
    mode: str | None,
) -> None:
    (site_dir / "no-count.json").write_text('{"visits": 3}')
    # The static server cannot POST, so the bad-answer cases read (GET) from it.
    endpoint, origin = {
        "origin not allowed": (function.url, foreign_site.origin),
        "function down": (f"http://127.0.0.1:{free_port()}/", site.origin),
        "error status": (f"{site.origin}/missing/", site.origin),
        "not JSON": (f"{site.origin}/counter.js", site.origin),
        "no count": (f"{site.origin}/no-count.json", site.origin),
    }[failure]
    visit(function, page)
    name = publish(
        site_dir,
        f"<h1>Résumé</h1><p>Visits: {counter_span(endpoint, page, mode)}</p><p>Contact me.</p>",
    )
    tab = open_tab()

    assert load(tab, f"{origin}/{name}") == [FALLBACK]
    assert state(tab) == "error"
    assert tab.page.inner_text("body") == f"Résumé\n\nVisits: {FALLBACK}\n\nContact me."
    assert len(tab.warnings) == 1
    assert tab.warnings[0].startswith(f"visit counter: no count for {page}")
    assert tab.page_errors == []
    assert count_of(function, page) == 1


def test_a_hung_function_is_given_up_after_the_timeout(
    open_tab: Callable[..., Tab], site: Site, site_dir: Path, page: str
) -> None:
    # A socket that accepts connections and never answers, like a function stuck in a cold start.
    with socket.create_server(("127.0.0.1", 0)) as hung:
        endpoint = f"http://127.0.0.1:{hung.getsockname()[1]}/"
        name = publish(site_dir, counter_span(endpoint, page))
        tab = open_tab(own_context=True)
        tab.page.clock.install()  # the snippet's 5 s timer runs on a fake clock
        with tab.page.expect_request(lambda request: request.url.startswith(endpoint)):
            tab.page.goto(f"{site.origin}/{name}")
        tab.page.clock.run_for(4_000)
        assert state(tab) == "loading"
        tab.page.clock.run_for(1_500)
        tab.page.wait_for_function(SETTLED)

    assert tab.page.locator("[data-visit-counter]").all_text_contents() == [FALLBACK]
    assert len(tab.warnings) == 1
    assert "abort" in tab.warnings[0].lower()
    assert tab.page_errors == []


def test_a_rate_limited_visit_keeps_the_fallback_and_is_not_retried(
    browser: Browser,
    site_function: Callable[..., LiveServer],
    site: Site,
    site_dir: Path,
    page: str,
) -> None:
    limited = site_function("browser-limited", RATE_LIMIT_PER_MINUTE="1")
    url = f"{site.origin}/{publish(site_dir, counter_span(limited.url, page))}"
    context = new_context(browser)
    try:
        tab = watched(context.new_page(), limited.url)
        assert load(tab, url) == ["1"]
        assert load(tab, url) == [FALLBACK]  # the second visit within the minute: 429
        assert state(tab) == "error"
    finally:
        context.close()
    assert [method for method, _url in tab.function_calls] == ["POST", "POST"]  # no retry
    assert len(tab.warnings) == 1
    assert "HTTP 429" in tab.warnings[0]
    assert tab.page_errors == []
    assert count_of(limited, page) == 1


def test_demo_page(
    open_tab: Callable[..., Tab], site: Site, site_dir: Path, function: LiveServer
) -> None:
    html = (WEB / "index.html").read_text(encoding="utf-8")
    assert html.count(DEMO_ENDPOINT) == 2, "the demo page should call the function at :8080"
    (site_dir / "index.html").write_text(
        html.replace(DEMO_ENDPOINT, f'data-endpoint="{function.url}"'), encoding="utf-8"
    )
    tab = open_tab()

    assert load(tab, f"{site.origin}/") == ["1", "1"]
    assert len(tab.function_calls) == 1
    assert count_of(function, "/") == 1
    assert (tab.warnings, tab.page_errors) == ([], [])
    ARTIFACTS.mkdir(exist_ok=True)
    tab.page.screenshot(path=ARTIFACTS / "demo.png", full_page=True)


def test_with_unique_visitors_a_refresh_does_not_count_but_another_browser_does(
    browser: Browser,
    site_function: Callable[..., LiveServer],
    site: Site,
    site_dir: Path,
    page: str,
) -> None:
    unique = site_function("browser-unique", UNIQUE_WINDOW_SECONDS="1800")
    url = f"{site.origin}/{publish(site_dir, counter_span(unique.url, page))}"
    # The same machine, so the same address: a visitor is told apart by browser, not profile.
    first, second = new_context(browser), new_context(browser, user_agent=BROWSER)
    try:
        tab = Tab(first.new_page())
        assert [load(tab, url) for _ in range(3)] == [["1"], ["1"], ["1"]]
        assert load(Tab(second.new_page()), url) == ["2"]
    finally:
        first.close()
        second.close()
    assert count_of(unique, page) == 2


def badge_url(function: LiveServer, page: str, label: str = "visits") -> str:
    """The badge of a page, with a label."""
    return f"{function.url}badge.svg?page={quote(page, safe='')}&label={quote(label, safe='')}"


def test_badge_renders_the_count(
    open_tab: Callable[..., Tab], function: LiveServer, page: str
) -> None:
    for _ in range(3):
        visit(function, page)
    tab = open_tab()

    response = tab.page.goto(badge_url(function, page))

    assert response is not None
    assert response.status == 200
    assert response.headers["content-type"].startswith("image/svg+xml")
    svg = tab.page.locator("svg")
    box = svg.bounding_box()
    assert box is not None
    assert box["width"] > 0
    assert box["height"] > 0
    assert tab.page.locator("svg text").all_text_contents() == ["visits", "3"]
    ARTIFACTS.mkdir(exist_ok=True)
    svg.screenshot(path=ARTIFACTS / "badge.png")
    assert count_of(function, page) == 3  # showing the badge did not count a visit


@pytest.mark.parametrize(
    "label",
    ["<script>alert(1)</script>", '"><svg onload=alert(1)>'],
)
def test_a_hostile_badge_label_runs_no_script(
    open_tab: Callable[..., Tab], function: LiveServer, page: str, label: str
) -> None:
    tab = open_tab()

    response = tab.page.goto(badge_url(function, page, label))

    assert response is not None
    assert response.status == 200  # drawn, not refused: the label is printable and short
    assert tab.dialogs == []
    assert tab.page_errors == []
    # Neither a script nor any element with an event handler made it into the parsed document.
    handlers = "[onload], [onerror], [onclick], [onmouseover]"
    assert tab.page.locator(f"script, {handlers}").count() == 0
    assert tab.page.locator("svg text").all_text_contents() == [label, "0"]


STATS_SETTLED = """() => ["ok", "error"].includes(
    document.querySelector("[data-visit-chart]").dataset.chartState)"""


def publish_stats(site_dir: Path, endpoint: str) -> str:
    """web/stats.html with the function's URL in place of the local one; return its file name."""
    html = (WEB / "stats.html").read_text(encoding="utf-8")
    assert html.count(DEMO_ENDPOINT) == 1, "the chart page should call the function at :8080"
    name = f"stats-{uuid.uuid4().hex}.html"
    (site_dir / name).write_text(html.replace(DEMO_ENDPOINT, f'data-endpoint="{endpoint}"'))
    return name


def bars(tab: Tab) -> list[dict[str, str | float]]:
    """The chart's bars: date, count and drawn height, left to right."""
    return tab.page.eval_on_selector_all(
        "svg rect.bar",
        """(rects) => rects.map((r) => ({
            date: r.dataset.date, count: Number(r.dataset.count),
            height: r.height.baseVal.value, x: r.x.baseVal.value}))""",
    )


# A month of a small blog's visits, weekdays busier than weekends, oldest first.
MONTH = [3, 5, 4, 6, 2, 0, 1, 4, 7, 5, 8, 3, 1, 0, 6, 9, 7, 12, 5, 2, 1, 8, 11, 9, 14, 6, 0, 3]


def test_the_chart_draws_the_last_30_days_from_one_read(
    open_tab: Callable[..., Tab],
    site: Site,
    site_dir: Path,
    function: LiveServer,
    seed: Callable[[str, int], None],
    seed_days: Callable[[str, dict[str, int]], None],
) -> None:
    page = "/blog/hello-world"  # the module's namespace is its own, so the name is free
    # The 28 days before today: all inside the window even if midnight passes meanwhile.
    seeded = dict(zip(days.ending(days.date_of(time.time()), 29)[:-1], MONTH, strict=True))
    seed(page, 1_234)
    seed_days(page, seeded)
    visit(function, page)  # today's visit: the total and today's count both take it
    name = publish_stats(site_dir, function.url)
    tab = open_tab()

    with tab.page.expect_response(lambda r: r.url.startswith(function.url)) as answer:
        tab.page.goto(f"{site.origin}/{name}?page={quote(page, safe='/')}")
    tab.page.wait_for_function(STATS_SETTLED)
    body = answer.value.json()

    assert tab.function_calls == [("GET", f"{function.url}?page={quote(page, safe='')}&days=30")]
    assert body["count"] == 1_235
    drawn = bars(tab)
    assert [(bar["date"], bar["count"]) for bar in drawn] == [
        (day["date"], day["count"]) for day in body["days"]
    ]
    by_date = {bar["date"]: bar["count"] for bar in drawn}
    assert all(by_date[date] == n for date, n in seeded.items())
    assert sum(by_date.values()) == sum(MONTH) + 1
    assert [bar["x"] for bar in drawn] == sorted(bar["x"] for bar in drawn)  # oldest at left
    # Heights are proportional to the counts; a day without visits has no bar.
    assert all(bar["height"] == 0 for bar in drawn if bar["count"] == 0)
    scales = {round(bar["height"] / bar["count"], 6) for bar in drawn if bar["count"]}
    assert len(scales) == 1
    assert tab.page.inner_text("[data-total]") == "1,235"
    assert tab.page.inner_text("[data-recent]") == str(sum(MONTH) + 1)
    assert tab.page.inner_text("#page-name") == page
    # The figure is an image with a name and a description, and its numbers are a table too.
    chart = tab.page.locator("svg[role=img]")
    assert tab.page.locator("#chart-title").text_content() == (
        f"Visits per day to {page}, {body['days'][0]['date']} to {body['days'][-1]['date']}"
    )
    assert "the busiest day was" in tab.page.locator("#chart-desc").text_content()
    assert chart.get_attribute("aria-labelledby") == "chart-title chart-desc"
    rows = tab.page.eval_on_selector_all(
        "[data-chart-table] tr", "(rows) => rows.map((r) => [...r.cells].map((c) => c.textContent))"
    )
    assert rows == [[day["date"], f"{day['count']:,}"] for day in body["days"]]
    assert count_of(function, page) == 1_235  # looking at the chart counted nothing
    assert (tab.warnings, tab.page_errors) == ([], [])
    ARTIFACTS.mkdir(exist_ok=True)
    tab.page.set_viewport_size({"width": 760, "height": 560})
    tab.page.screenshot(path=ARTIFACTS / "stats.png", full_page=True)


def test_the_chart_of_a_page_without_visits_says_so(
    open_tab: Callable[..., Tab], site: Site, site_dir: Path, function: LiveServer, page: str
) -> None:
    name = publish_stats(site_dir, function.url)
    tab = open_tab()

    tab.page.goto(f"{site.origin}/{name}?page={quote(page, safe='/')}")
    tab.page.wait_for_function(STATS_SETTLED)

    drawn = bars(tab)
    assert len(drawn) == 30
    assert {(bar["count"], bar["height"]) for bar in drawn} == {(0, 0)}
    assert tab.page.inner_text("[data-total]") == "0"
    assert tab.page.inner_text("[data-chart-status]") == "No visits in the last 30 days."
    assert tab.page.locator("#chart-desc").text_content() == "No visits in these 30 days."
    assert (tab.warnings, tab.page_errors) == ([], [])


@pytest.mark.parametrize("failure", ["function down", "history off", "origin not allowed"])
def test_a_failed_chart_says_why_and_leaves_the_page_usable(
    open_tab: Callable[..., Tab],
    site_function: Callable[..., LiveServer],
    site: Site,
    foreign_site: Site,
    site_dir: Path,
    function: LiveServer,
    page: str,
    failure: str,
) -> None:
    origin = foreign_site.origin if failure == "origin not allowed" else site.origin
    if failure == "function down":
        endpoint = f"http://127.0.0.1:{free_port()}/"
    elif failure == "history off":
        endpoint = site_function("browser-no-history", HISTORY="false").url
    else:
        endpoint = function.url
    name = publish_stats(site_dir, endpoint)
    tab = open_tab()

    tab.page.goto(f"{origin}/{name}?page={quote(page, safe='/')}")
    tab.page.wait_for_function(STATS_SETTLED)

    message = tab.page.inner_text("[data-chart-status]")
    assert message.startswith("The visits could not be loaded: ")
    if failure == "history off":
        assert message.endswith("per-day history is off here; see HISTORY")
    assert tab.page.locator("svg rect.bar").count() == 0
    assert tab.page.inner_text("[data-total]") == "\u2013"
    assert len(tab.warnings) == 1
    assert tab.warnings[0].startswith(f"visit chart: no counts for {page}")
    assert tab.page_errors == []
    # The rest of the page still works: asking for another page loads it.
    tab.page.fill("#page-input", "/another")
    tab.page.click("button[type=submit]")
    tab.page.wait_for_url("**?page=%2Fanother")
    tab.page.wait_for_function(STATS_SETTLED)
    assert tab.page.inner_text("#page-name") == "/another"


# Front ends that already exist: résumé pages built from the usual tutorials call the function
# with their own few lines of JavaScript, not counter.js, and show data.count.
FUNCTION_URL = "https://FUNCTION_URL/"
GET_PAGE_SCRIPT = """
fetch("https://FUNCTION_URL/")
  .then((response) => response.json())
  .then((data) => { document.getElementById("count").textContent = data.count; });
"""
JSON_POST_PAGE_SCRIPT = """
fetch("https://FUNCTION_URL/", {
  method: "POST",
  headers: { "Content-Type": "application/json" },
  body: JSON.stringify({}),
})
  .then((response) => response.json())
  .then((data) => { document.getElementById("count").textContent = data.count; });
"""
# The README's one-line change for a page that called the classic /visits route.
MIGRATED_PAGE_SCRIPT = 'const el = document.getElementById("count");\n' + readme_block(
    "migrated-page"
)


def publish_front_end(site_dir: Path, script: str) -> str:
    """A page with its own fetch() call instead of the snippet; return its file name."""
    name = f"{uuid.uuid4().hex}.html"
    (site_dir / name).write_text(
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<link rel="icon" href="data:,"><title>my resume</title></head>'
        f'<body><p>Visitors: <span id="count">{FALLBACK}</span></p>'
        f"<script>{script}</script></body></html>",
        encoding="utf-8",
    )
    return name


@pytest.mark.parametrize(
    ("script", "settings", "preflight"),
    [
        (GET_PAGE_SCRIPT, {"COUNT_ON_GET": "true"}, False),
        (JSON_POST_PAGE_SCRIPT, {}, True),  # a JSON body makes the browser ask first
        (MIGRATED_PAGE_SCRIPT, {}, False),
    ],
    ids=["plain-get-with-count-on-get", "json-post-with-defaults", "readme-migrated-page"],
)
def test_an_existing_front_end_works_unchanged(
    browser: Browser,
    start_server: Callable[..., LiveServer],
    site: Site,
    site_dir: Path,
    script: str,
    settings: dict[str, str],
    preflight: bool,
) -> None:
    # A namespace of its own, so the page's own path, "/", starts at nothing.
    function = start_server(
        f"front-end-{uuid.uuid4().hex[:8]}",
        ALLOWED_ORIGINS=site.origin,
        DATASTORE_NAMESPACE=f"front-end-{uuid.uuid4().hex}",
        **settings,
    )
    assert script.count(FUNCTION_URL) == 1
    name = publish_front_end(site_dir, script.replace(FUNCTION_URL, function.url))
    logged_before = len(function.log_entries())  # the server's start-up probe
    context = new_context(browser)
    try:
        tab = Tab(context.new_page())
        tab.page.on("pageerror", lambda error: tab.page_errors.append(str(error)))
        shown = []
        for _ in range(3):
            tab.page.goto(f"{site.origin}/{name}")
            tab.page.wait_for_function(
                f"document.getElementById('count').textContent !== '{FALLBACK}'"
            )
            shown.append(tab.page.locator("#count").text_content())
    finally:
        context.close()

    assert shown == ["1", "2", "3"]
    assert count_of(function, "/") == 3
    assert tab.page_errors == []
    entries = function.log_entries()[logged_before:]
    assert any(entry["message"] == "OPTIONS 204" for entry in entries) == preflight
