"""A stranger can't inflate the count or the bill: rate limits, the daily cap, who the client is."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable

import pytest
from flask.testing import FlaskClient

from conftest import SITE, RpcCounter
from counter import instance
from user_agents import BROWSER

GOOGLE_PROXY = "66.102.8.142"


@pytest.fixture
def rpcs(rpcs: RpcCounter, monkeypatch: pytest.MonkeyPatch, client: FlaskClient) -> RpcCounter:
    """The Datastore RPCs the function itself makes in this test."""
    stores = functools.cache(lambda settings: instance.build(settings, interceptors=(rpcs,)))
    monkeypatch.setattr(instance, "for_settings", stores)
    return rpcs


def post(client: FlaskClient, page: str, address: str, agent: str = BROWSER, **headers: str):
    """POST a visit as a browser behind Google's front end would."""
    return client.post(
        "/",
        query_string={"page": page},
        headers={"User-Agent": agent, "X-Forwarded-For": address, **headers},
    )


def test_a_flood_from_one_client_is_cut_to_the_limit_and_others_still_count(
    client: FlaskClient, page: str, rpcs: RpcCounter
) -> None:
    flooder = f"198.51.100.7, {GOOGLE_PROXY}"
    answers = [post(client, page, flooder) for _ in range(600)]

    counted = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code == 429]
    assert len(counted) + len(refused) == 600
    assert 55 <= len(counted) <= 100
    assert counted[0].headers["RateLimit-Limit"] == "60"
    assert counted[0].headers["RateLimit-Remaining"] == "59"
    last = refused[-1]
    assert last.get_json()["error"]["code"] == 429
    assert last.headers["Cache-Control"] == "no-store"
    assert int(last.headers["Retry-After"]) >= 1
    assert last.headers["RateLimit-Remaining"] == "0"
    assert int(last.headers["RateLimit-Reset"]) >= 1

    # Another visitor whose request came through the same Google proxy is a client of its own.
    other = post(client, page, f"203.0.113.50, {GOOGLE_PROXY}")
    assert other.status_code == 200
    assert other.get_json() == {"count": len(counted) + 1, "counted": True}


def test_a_refused_request_makes_no_datastore_call(
    client: FlaskClient, env: Callable[..., None], page: str, rpcs: RpcCounter
) -> None:
    env(RATE_LIMIT_PER_MINUTE="2")
    for _ in range(2):
        assert post(client, page, "198.51.100.8").status_code == 200
    rpcs.calls.clear()
    answers = [post(client, page, "198.51.100.8").status_code for _ in range(10)]
    assert answers == [429] * 10
    assert rpcs.calls == []


def test_a_page_may_read_the_rate_limit_headers(
    client: FlaskClient, env: Callable[..., None], page: str
) -> None:
    env(RATE_LIMIT_PER_MINUTE="1")
    post(client, page, "198.51.100.9", Origin=SITE)
    refused = post(client, page, "198.51.100.9", Origin=SITE)
    assert refused.status_code == 429
    assert refused.headers["Access-Control-Allow-Origin"] == SITE
    exposed = {h.strip() for h in refused.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"} <= exposed


def test_preflights_are_not_limited(client: FlaskClient, env: Callable[..., None]) -> None:
    env(RATE_LIMIT_PER_MINUTE="1")
    for _ in range(5):
        response = client.options(
            "/", headers={"Origin": SITE, "Access-Control-Request-Method": "POST"}
        )
        assert response.status_code == 204


def test_a_limit_of_zero_lets_every_request_through(
    client: FlaskClient, env: Callable[..., None], page: str
) -> None:
    env(RATE_LIMIT_PER_MINUTE="0")
    answers = [post(client, page, "198.51.100.10") for _ in range(80)]
    assert {a.status_code for a in answers} == {200}
    assert "RateLimit-Limit" not in answers[0].headers


def test_the_daily_write_limit_stops_counting_and_says_so_once(
    client: FlaskClient,
    env: Callable[..., None],
    page: str,
    rpcs: RpcCounter,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env(DAILY_WRITE_LIMIT="5")
    answers = [post(client, page, f"192.0.2.{n}").get_json() for n in range(1, 9)]
    assert [a["counted"] for a in answers] == [True] * 5 + [False] * 3
    assert [a["count"] for a in answers] == [1, 2, 3, 4, 5, 5, 5, 5]
    assert [a.get("reason") for a in answers[4:]] == [None] + ["daily-limit"] * 3
    rpcs.calls.clear()
    post(client, page, "192.0.2.99")
    assert "Commit" not in rpcs.calls  # past the limit nothing is written
    assert client.get("/", query_string={"page": page}).get_json() == {"count": 5}
    warnings = [
        json.loads(line)
        for line in capsys.readouterr().out.splitlines()
        if '"DAILY_WRITE_LIMIT reached' in line
    ]
    assert len(warnings) == 1
    assert warnings[0]["severity"] == "WARNING"


def test_five_addresses_of_one_ipv6_slash_64_are_one_visitor(
    client: FlaskClient, env: Callable[..., None], page: str
) -> None:
    env(UNIQUE_WINDOW_SECONDS="1800")
    rotations = [f"2001:db8:7:8:{n:x}::{n * 7:x}" for n in range(1, 6)]
    answers = [post(client, page, f"{ip}, {GOOGLE_PROXY}").get_json() for ip in rotations]
    assert [a["counted"] for a in answers] == [True, False, False, False, False]
    assert post(client, page, "2001:db8:7:9::1").get_json()["counted"] is True
