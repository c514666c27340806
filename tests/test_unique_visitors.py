"""Counting people, not refreshes: unique visitors, bots, privacy, through the emulator and HTTP."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import flask
import pytest
import requests
from flask.testing import FlaskClient
from google.protobuf import json_format

from conftest import FakeClock, LiveServer, RpcCounter, run_query
from counter import config, instance
from counter.page_counts import DAY_KIND, KIND
from counter.unique_visitors import MARKER_KIND, SALT_KIND
from user_agents import BOTS, BROWSERS, CHROME

WINDOW = 1800


def day_of(seconds: float) -> str:
    """The UTC date of a moment, as salts are named."""
    return time.strftime("%Y-%m-%d", time.gmtime(seconds))


@pytest.fixture
def unique(
    client: FlaskClient,
    env: Callable[..., None],
    monkeypatch: pytest.MonkeyPatch,
    clock: FakeClock,
    rpcs: RpcCounter,
) -> FlaskClient:
    """The function with a half-hour window, a fake clock and counted RPCs."""
    env(UNIQUE_WINDOW_SECONDS=str(WINDOW))
    stores = functools.cache(
        lambda settings: instance.build(settings, clock=clock, interceptors=(rpcs,))
    )
    monkeypatch.setattr(instance, "for_settings", stores)
    return client


def visit(
    client: FlaskClient, page: str, agent: str = CHROME, address: str = "203.0.113.7"
) -> dict:
    """POST a visit as a browser behind Google's front end would."""
    response = client.post(
        "/",
        query_string={"page": page},
        headers={"User-Agent": agent, "X-Forwarded-For": address},
    )
    assert response.status_code == 200
    return response.get_json()


def test_repeat_visits_within_the_window_do_not_count(
    unique: FlaskClient, page: str, clock: FakeClock
) -> None:
    assert visit(unique, page) == {"count": 1, "counted": True}
    clock.now += 60
    assert visit(unique, page) == {"count": 1, "counted": False, "reason": "repeat"}
    clock.now += WINDOW - 61
    assert visit(unique, page) == {"count": 1, "counted": False, "reason": "repeat"}


def test_a_visit_after_the_window_counts_even_if_ttl_kept_the_marker(
    unique: FlaskClient, env: Callable[..., None], namespace: str, page: str, clock: FakeClock
) -> None:
    env(DATASTORE_NAMESPACE=namespace)  # so the marker found below is this visit's own
    visit(unique, page)
    clock.now += WINDOW + 1
    markers = run_query(instance.for_settings(config.settings()).db, MARKER_KIND)
    assert len(markers) == 1, "the emulator has no TTL, so the expired marker is still stored"
    assert visit(unique, page) == {"count": 2, "counted": True}
    assert visit(unique, page) == {"count": 2, "counted": False, "reason": "repeat"}


def test_a_window_that_spans_midnight_still_knows_the_visitor(
    unique: FlaskClient, page: str, clock: FakeClock
) -> None:
    midnight = clock.now - clock.now % 86_400 + 86_400
    clock.now = midnight - 600  # 23:50 UTC
    assert visit(unique, page) == {"count": 1, "counted": True}
    clock.now = midnight + 300  # today's salt is new, yesterday's marker still counts
    assert visit(unique, page) == {"count": 1, "counted": False, "reason": "repeat"}
    assert visit(unique, page) == {"count": 1, "counted": False, "reason": "repeat"}
    assert visit(unique, page, address="198.51.100.20") == {"count": 2, "counted": True}
    clock.now = midnight - 600 + WINDOW + 1  # the window that began at 23:50 is over
    assert visit(unique, page) == {"count": 3, "counted": True}


@pytest.mark.parametrize(
    ("agent", "address"),
    [(CHROME, "198.51.100.20"), (BROWSERS["firefox-mac"], "203.0.113.7")],
    ids=["other-address", "other-browser"],
)
def test_a_different_visitor_counts(
    unique: FlaskClient, page: str, agent: str, address: str
) -> None:
    visit(unique, page)
    assert visit(unique, page, agent=agent, address=address) == {"count": 2, "counted": True}


def test_the_same_visitor_counts_on_each_page(unique: FlaskClient, page: str) -> None:
    visit(unique, page)
    assert visit(unique, page + "/next") == {"count": 1, "counted": True}


def test_forged_forwarded_entries_do_not_make_a_new_visitor(unique: FlaskClient, page: str) -> None:
    assert visit(unique, page, address="10.0.0.1, 203.0.113.7")["counted"] is True
    assert visit(unique, page, address="10.9.9.9, 203.0.113.7")["counted"] is False


def test_concurrent_returning_visits_after_the_window_count_once(
    app: flask.Flask, unique: FlaskClient, page: str, clock: FakeClock
) -> None:
    visit(unique, page)
    clock.now += WINDOW + 1

    def one(_: int) -> dict:
        return visit(app.test_client(), page)

    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(one, range(20)))
    assert sum(answer["counted"] for answer in answers) == 1
    assert visit(unique, page) == {"count": 2, "counted": False, "reason": "repeat"}


def test_new_visitor_costs_one_commit_and_a_repeat_one_more_lookup(
    unique: FlaskClient, page: str, rpcs: RpcCounter
) -> None:
    visit(unique, page, address="192.0.2.1")  # the instance fetches today's salt once
    rpcs.calls.clear()
    visit(unique, page, address="192.0.2.2")
    assert rpcs.calls == ["Commit"]
    rpcs.calls.clear()
    visit(unique, page, address="192.0.2.2")
    assert rpcs.calls == ["Commit", "Lookup"]


def test_every_instance_uses_the_same_salt_and_it_changes_daily(
    env: Callable[..., None], namespace: str, clock: FakeClock
) -> None:
    env(DATASTORE_NAMESPACE=namespace)
    settings = config.settings()
    first = instance.build(settings, clock=clock).unique
    second = instance.build(settings, clock=clock).unique
    today = first.salt(day_of(clock.now))
    assert second.salt(day_of(clock.now)) == today
    assert len(today) == 32
    clock.now += 86_400
    tomorrow = second.salt(day_of(clock.now))
    assert tomorrow != today
    assert first.salt(day_of(clock.now)) == tomorrow


@pytest.mark.parametrize("agent", BOTS.values(), ids=BOTS.keys())
def test_bots_get_the_count_but_are_not_counted(client: FlaskClient, page: str, agent: str) -> None:
    visit(client, page)
    assert visit(client, page, agent=agent) == {"count": 1, "counted": False, "reason": "bot"}
    assert client.get("/", query_string={"page": page}).get_json() == {"count": 1}


def test_bots_count_when_count_bots_is_set(
    client: FlaskClient, env: Callable[..., None], page: str
) -> None:
    env(COUNT_BOTS="true")
    assert visit(client, page, agent=BOTS["googlebot"]) == {"count": 1, "counted": True}


@pytest.mark.parametrize("agent", BROWSERS.values(), ids=BROWSERS.keys())
def test_real_browsers_count(client: FlaskClient, page: str, agent: str) -> None:
    assert visit(client, page, agent=agent) == {"count": 1, "counted": True}


def test_nothing_stored_holds_the_address_or_user_agent(
    unique: FlaskClient, env: Callable[..., None], namespace: str, page: str, clock: FakeClock
) -> None:
    env(DATASTORE_NAMESPACE=namespace)
    secrets = {"address": "203.0.113.77", "agent": BROWSERS["safari-iphone"]}
    visit(unique, page, agent=secrets["agent"], address=secrets["address"])
    clock.now += WINDOW + 1
    visit(unique, page, agent=secrets["agent"], address=secrets["address"])
    entities = run_query(instance.for_settings(config.settings()).db)
    kinds = {entity.key.path[-1].kind for entity in entities}
    assert kinds == {KIND, DAY_KIND, MARKER_KIND, SALT_KIND}
    stored = repr([json_format.MessageToJson(entity) for entity in entities])
    for value in (*secrets.values(), "203.0.113", "Safari", "iPhone"):
        assert value not in stored


@pytest.fixture(scope="module")
def unique_server(start_server: Callable[..., LiveServer]) -> LiveServer:
    """A real server counting unique visitors with a half-hour window."""
    return start_server("unique", UNIQUE_WINDOW_SECONDS=str(WINDOW))


@pytest.mark.parametrize(("visitors", "expected"), [(1, 1), (50, 50)])
def test_fifty_concurrent_first_visits_count_once_per_visitor(
    unique_server: LiveServer, page: str, visitors: int, expected: int
) -> None:
    def one(n: int) -> requests.Response:
        address = f"198.51.100.{n % visitors + 1}"
        headers = {"User-Agent": CHROME, "X-Forwarded-For": address}
        return requests.post(unique_server.url, params={"page": page}, headers=headers, timeout=30)

    with ThreadPoolExecutor(max_workers=25) as pool:
        answers = list(pool.map(one, range(50)))
    assert [answer.status_code for answer in answers] == [200] * 50
    assert sum(answer.json()["counted"] for answer in answers) == expected
    assert requests.get(unique_server.url, params={"page": page}, timeout=10).json() == {
        "count": expected
    }
