"""Visits per UTC day: added in the one Commit of every way of counting, read in one Lookup."""

from __future__ import annotations

import functools
from collections.abc import Callable

import pytest
from flask.testing import FlaskClient

from conftest import FakeClock, RpcCounter
from counter import days, instance
from counter import messages as ds
from counter.page_counts import DAY_KIND, KIND
from counter.unique_visitors import MARKER_KIND
from user_agents import BROWSER

TODAY = days.date_of(FakeClock().now)
MIDNIGHT = FakeClock().now - FakeClock().now % 86_400


@pytest.fixture
def function(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch, clock: FakeClock, rpcs: RpcCounter
) -> FlaskClient:
    """The function through its test client, with a fake clock and counted RPCs."""
    stores = functools.cache(
        lambda settings: instance.build(settings, clock=clock, interceptors=(rpcs,))
    )
    monkeypatch.setattr(instance, "for_settings", stores)
    return client


def post(client: FlaskClient, page: str, address: str = "203.0.113.7") -> dict:
    """Count a visit as a browser would."""
    response = client.post(
        "/",
        query_string={"page": page},
        headers={"User-Agent": BROWSER, "X-Forwarded-For": address},
    )
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def history(client: FlaskClient, page: str, count: int) -> dict:
    """GET /?page=…&days=count."""
    response = client.get("/", query_string={"page": page, "days": str(count)})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def written(commit: ds.CommitRequest) -> list[tuple[str, str]]:
    """Kind and key name of each entity a Commit writes, in order."""
    entities = [getattr(op, op.WhichOneof("operation")) for op in commit.mutations]
    return [(e.key.path[-1].kind, e.key.path[-1].name) for e in entities]


def test_visits_count_on_their_utc_day_and_read_oldest_first(
    function: FlaskClient, page: str, clock: FakeClock
) -> None:
    clock.now = MIDNIGHT + 86_400 - 1  # 23:59:59 UTC
    post(function, page)
    clock.now = MIDNIGHT + 86_400  # 00:00:00 the next day
    post(function, page)
    post(function, page)

    answer = history(function, page, 4)

    assert answer == {
        "count": 3,
        "days": [
            {"date": "2027-01-13", "count": 0},
            {"date": "2027-01-14", "count": 0},
            {"date": TODAY, "count": 1},
            {"date": days.next_date(TODAY), "count": 2},
        ],
    }


def test_a_year_of_days_ending_today_in_one_lookup(
    function: FlaskClient, page: str, rpcs: RpcCounter
) -> None:
    post(function, page)
    rpcs.clear()

    answer = history(function, page, days.MAX_DAYS)

    assert rpcs.calls == ["Lookup"]
    dates = [day["date"] for day in answer["days"]]
    assert dates == days.ending(TODAY, days.MAX_DAYS)
    assert (dates[0], dates[-1]) == ("2026-01-15", TODAY)
    assert [day["count"] for day in answer["days"]] == [0] * 365 + [1]
    assert answer["count"] == 1


# How each way of counting is set up, and the request that counts one visit with it.
MODES = {
    "commit-per-hit": {},
    "sharded": {"COUNTER_SHARDS": "4"},
    "unique-visitors": {"UNIQUE_WINDOW_SECONDS": "1800"},
    "badge": {"BADGE_COUNTS": "true"},
}


def count_one(client: FlaskClient, mode: str, page: str, address: str) -> None:
    """Count one visit the way this mode counts."""
    if mode == "badge":
        response = client.get("/badge.svg", query_string={"page": page, "count": "1"})
        assert response.status_code == 200
    else:
        assert post(client, page, address)["counted"] is True


@pytest.mark.parametrize("mode", MODES)
def test_every_way_of_counting_adds_to_the_day_in_the_same_commit(
    function: FlaskClient,
    env: Callable[..., None],
    page: str,
    rpcs: RpcCounter,
    mode: str,
) -> None:
    env(**MODES[mode])
    count_one(function, mode, page, "192.0.2.1")  # an instance's first visit may make a salt
    rpcs.clear()

    count_one(function, mode, page, "192.0.2.2")

    sharded = mode == "sharded"
    # With shards the answer is a fresh sum of them, one Lookup; otherwise the Commit's own value.
    assert rpcs.calls == (["Commit", "Lookup"] if sharded else ["Commit"])
    commit = rpcs.requests[0]
    assert commit.mode == ds.CommitRequest.Mode.TRANSACTIONAL
    kinds = [kind for kind, _ in written(commit)]
    expected = [KIND, DAY_KIND] if mode != "unique-visitors" else [MARKER_KIND, KIND, DAY_KIND]
    assert kinds == expected
    (_, total_name), (_, day_name) = written(commit)[-2:]
    # The day is written through the same shard as the total: page#k and date#k.
    assert total_name.partition("#")[2] == day_name.partition("#")[2]
    assert day_name.partition("#")[0] == TODAY
    assert history(function, page, 1) == {"count": 2, "days": [{"date": TODAY, "count": 2}]}


def test_with_history_off_a_visit_writes_only_its_total_and_days_are_refused(
    function: FlaskClient, env: Callable[..., None], page: str, rpcs: RpcCounter
) -> None:
    env(HISTORY="false")
    post(function, page)

    assert rpcs.calls == ["Commit"]
    assert written(rpcs.requests[0]) == [(KIND, page)]
    assert rpcs.requests[0].mode == ds.CommitRequest.Mode.NON_TRANSACTIONAL
    response = function.get("/", query_string={"page": page, "days": "7"})
    assert response.status_code == 403
    assert "HISTORY" in response.get_json()["error"]["message"]


def test_a_sharded_year_needs_more_than_one_lookup_and_still_adds_up(
    function: FlaskClient, env: Callable[..., None], page: str, rpcs: RpcCounter
) -> None:
    env(COUNTER_SHARDS="3")
    for _ in range(9):
        post(function, page)
    rpcs.clear()

    answer = history(function, page, days.MAX_DAYS)

    # 367 x 3 keys: more than one Lookup takes, so two.
    assert rpcs.calls == ["Lookup", "Lookup"]
    assert answer["count"] == 9
    assert answer["days"][-1] == {"date": TODAY, "count": 9}
    assert sum(day["count"] for day in answer["days"]) == 9


@pytest.mark.parametrize(
    ("query", "status", "words"),
    [
        ("days=0", 400, "from 1 to 366"),
        ("days=367", 400, "from 1 to 366"),
        ("days=-1", 400, "whole number"),
        ("days=7.5", 400, "whole number"),
        ("days=", 400, "whole number"),
        ("days=%EF%BC%97", 400, "whole number"),  # a full-width 7
        ("days=7&days=8", 400, "at most once"),
    ],
)
def test_a_bad_days_is_refused_in_json_and_reads_nothing(
    function: FlaskClient, page: str, rpcs: RpcCounter, query: str, status: int, words: str
) -> None:
    response = function.get(f"/?page={page}&{query}")

    assert response.status_code == status
    assert response.mimetype == "application/json"
    assert words in response.get_json()["error"]["message"]
    assert rpcs.calls == []


def test_days_on_a_post_is_refused_and_counts_nothing(
    function: FlaskClient, page: str, rpcs: RpcCounter
) -> None:
    response = function.post(
        "/", query_string={"page": page, "days": "7"}, headers={"User-Agent": BROWSER}
    )

    assert response.status_code == 400
    assert "GET" in response.get_json()["error"]["message"]
    assert rpcs.calls == []


def test_head_with_days_answers_like_get_without_a_body(function: FlaskClient, page: str) -> None:
    post(function, page)
    head = function.head("/", query_string={"page": page, "days": "30"})
    get = function.get("/", query_string={"page": page, "days": "30"})

    assert head.status_code == 200
    assert head.data == b""
    assert head.headers["Content-Length"] == get.headers["Content-Length"]
