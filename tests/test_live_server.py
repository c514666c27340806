"""The function in a real functions-framework server: concurrency, and the database failing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from conftest import LiveServer
from scripts.emulator import Emulator
from user_agents import BROWSER

HITS = 300
CLIENTS = 32


def hammer(url: str, page: str) -> list[tuple[int, int]]:
    """POST HITS visits from CLIENTS threads, each with its own connection."""
    local = threading.local()

    def hit(_: int) -> tuple[int, int]:
        session = getattr(local, "session", None) or requests.Session()
        session.headers["User-Agent"] = BROWSER
        local.session = session
        response = session.post(url, params={"page": page}, timeout=30)
        return response.status_code, response.json().get("count", -1)

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        return list(pool.map(hit, range(HITS)))


def test_concurrent_posts_are_all_counted_exactly_once(
    start_server: Callable[..., LiveServer], page: str
) -> None:
    server = start_server("exact")
    results = hammer(server.url, page)
    assert [status for status, _ in results] == [200] * HITS
    assert sorted(count for _, count in results) == list(range(1, HITS + 1))
    assert requests.get(server.url, params={"page": page}, timeout=10).json() == {"count": HITS}


def test_concurrent_posts_on_a_sharded_page_are_all_counted(
    start_server: Callable[..., LiveServer], page: str
) -> None:
    server = start_server("sharded", COUNTER_SHARDS="8")
    results = hammer(server.url, page)
    assert [status for status, _ in results] == [200] * HITS
    # With shards a POST answers a fresh total, which concurrent hits may share.
    assert max(count for _, count in results) == HITS
    assert all(1 <= count <= HITS for _, count in results)
    assert requests.get(server.url, params={"page": page}, timeout=10).json() == {"count": HITS}


DEADLINE = 2.0


@pytest.fixture
def frozen_server(
    own_emulator: Emulator, start_server: Callable[..., LiveServer]
) -> Iterator[tuple[LiveServer, Emulator]]:
    """A server with a short deadline on an emulator the test may freeze; always thawed after."""
    server = start_server(
        "frozen",
        DATASTORE_EMULATOR_HOST=own_emulator.host,
        DATASTORE_DEADLINE_SECONDS=str(DEADLINE),
    )
    try:
        yield server, own_emulator
    finally:
        own_emulator.thaw()


def post(url: str, page: str) -> requests.Response:
    """POST a visit."""
    return requests.post(url, params={"page": page}, headers={"User-Agent": BROWSER}, timeout=30)


def test_frozen_database_answers_503_within_the_deadline_then_recovers(
    frozen_server: tuple[LiveServer, Emulator], page: str
) -> None:
    server, emulator = frozen_server
    before = post(server.url, page)
    assert before.json() == {"count": 1, "counted": True}

    emulator.freeze()
    for method in ("POST", "GET"):
        started = time.monotonic()
        response = requests.request(
            method, server.url, params={"page": page}, headers={"User-Agent": BROWSER}, timeout=30
        )
        elapsed = time.monotonic() - started
        assert response.status_code == 503
        assert response.json()["error"]["code"] == 503
        assert int(response.headers["Retry-After"]) > 0
        # Bounded by the deadline (plus slack for a slow machine), far from the client's 60 s.
        assert elapsed < DEADLINE + 3
    emulator.thaw()

    after = post(server.url, page)
    assert after.status_code == 200
    # The refused POST was never acknowledged; the database may still have applied it once.
    assert after.json()["count"] in (2, 3)
