"""Hostile clients that the limits must hold against: one address rotating user agents or IPv6
addresses, forged forwarding entries, many clients racing the day's limit, and odd requests."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from flask.testing import FlaskClient

from conftest import ROOT, SITE, LiveServer
from counter.limits import PER_ADDRESS_AND_PAGE
from raw_http import request_bytes, send

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/{}.0"


def post(client: FlaskClient, page: str, forwarded_for: str, agent: str) -> dict:
    """One visit from this address and browser; its answer."""
    response = client.post(
        "/",
        query_string={"page": page},
        headers={"Origin": SITE, "User-Agent": agent, "X-Forwarded-For": forwarded_for},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def counted(answers: list[dict]) -> int:
    return sum(answer["counted"] for answer in answers)


@pytest.fixture
def unique(client: FlaskClient, env: Callable[..., None]) -> FlaskClient:
    """The function with unique visitors on and no rate limit, so only the caps decide."""
    env(UNIQUE_WINDOW_SECONDS="1800", RATE_LIMIT_PER_MINUTE="0")
    return client


def test_one_address_rotating_user_agents_adds_only_a_household_of_visitors(
    unique: FlaskClient, page: str
) -> None:
    answers = [post(unique, page, "198.51.100.7", FIREFOX.format(n)) for n in range(600)]

    print(f"one IPv4 address, 600 user agents: {counted(answers)} of 600 counted")
    assert counted(answers) == PER_ADDRESS_AND_PAGE
    assert {a.get("reason") for a in answers[PER_ADDRESS_AND_PAGE:]} == {"address-limit"}
    # Another household still counts.
    assert post(unique, page, "198.51.100.8", FIREFOX.format(1))["counted"] is True


def test_rotating_ipv6_64s_of_one_48_counts_as_one_address(unique: FlaskClient, page: str) -> None:
    answers = [post(unique, page, f"2001:db8:77:{n:x}::1", FIREFOX.format(1)) for n in range(600)]

    print(f"600 /64s of one /48: {counted(answers)} of 600 counted")
    assert counted(answers) == PER_ADDRESS_AND_PAGE
    assert post(unique, page, "2001:db8:78::1", FIREFOX.format(1))["counted"] is True


def test_a_household_with_several_browsers_counts_each(unique: FlaskClient, page: str) -> None:
    agents = [FIREFOX.format(n) for n in range(PER_ADDRESS_AND_PAGE)]
    first = [post(unique, page, "198.51.100.9", agent) for agent in agents]
    again = [post(unique, page, "198.51.100.9", agent) for agent in agents]

    assert counted(first) == PER_ADDRESS_AND_PAGE
    assert {a.get("reason") for a in again} == {"repeat"}


def test_unparseable_forwarded_entries_are_one_client_not_a_new_one_each(
    unique: FlaskClient, page: str
) -> None:
    answers = [post(unique, page, f"203.0.113.19%{n}", FIREFOX.format(1)) for n in range(600)]

    assert counted(answers) <= PER_ADDRESS_AND_PAGE


def test_no_single_address_uses_up_the_days_limit(
    client: FlaskClient, env: Callable[..., None], page: str
) -> None:
    env(DAILY_WRITE_LIMIT="300", RATE_LIMIT_PER_MINUTE="0")  # an address's share: 3
    greedy = [post(client, page, "198.51.100.20", FIREFOX.format(1)) for _ in range(10)]
    other = post(client, page, "198.51.100.21", FIREFOX.format(1))

    assert counted(greedy) == 3
    assert {a.get("reason") for a in greedy[3:]} == {"daily-limit"}
    assert other["counted"] is True


def test_the_days_limit_holds_exactly_under_concurrency(
    start_server: Callable[..., LiveServer], page: str
) -> None:
    server = start_server("daily-limit-race", DAILY_WRITE_LIMIT="20", THREADS="16")

    def visit(n: int) -> dict:
        headers = {
            "Origin": SITE,
            "User-Agent": FIREFOX.format(1),
            "X-Forwarded-For": f"198.51.100.{n}",
        }
        return requests.post(server.url, params={"page": page}, headers=headers, timeout=30).json()

    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(visit, range(50)))

    assert counted(answers) == 20
    stored = requests.get(server.url, params={"page": page}, timeout=10).json()
    assert stored == {"count": 20}


def test_head_of_a_counting_badge_counts_nothing(
    client: FlaskClient, env: Callable[..., None], page: str
) -> None:
    env(BADGE_COUNTS="true")
    query = {"page": page, "count": "1"}

    assert client.head("/badge.svg", query_string=query).status_code == 200
    assert client.get("/", query_string={"page": page}).get_json() == {"count": 0}
    client.get("/badge.svg", query_string=query)
    assert client.get("/", query_string={"page": page}).get_json() == {"count": 1}


@pytest.mark.parametrize("target", ["//", "//badge.svg", "/%2F", "/%2Fbadge.svg", "///?page=/"])
def test_paths_that_only_look_like_the_counters_are_not_found(
    live_server: str, target: str
) -> None:
    port = int(live_server.rsplit(":", 1)[1].strip("/"))
    answer = send(port, request_bytes("GET", target, {"Origin": SITE}))

    assert answer.status == 404
    assert answer.json()["error"]["code"] == 404


def test_a_preflight_for_a_refused_method_does_not_echo_it(client: FlaskClient) -> None:
    response = client.options(
        "/", headers={"Origin": SITE, "Access-Control-Request-Method": "<b>PATCH</b>"}
    )
    assert response.status_code == 405
    assert "PATCH" not in response.get_data(as_text=True)


@pytest.mark.parametrize(
    "page",
    [
        "/a\u202eb",  # right-to-left override
        "/a\u200bb",  # zero-width space
        "/a\u2066b",  # left-to-right isolate
        "/\ufeffhome",  # byte order mark
    ],
)
def test_pages_with_invisible_or_bidirectional_characters_are_refused(
    client: FlaskClient, page: str
) -> None:
    response = client.post("/", query_string={"page": page}, headers={"Origin": SITE})
    assert response.status_code == 400
    assert client.get("/", query_string={"page": "/a"}).status_code == 200


@pytest.mark.parametrize("rounds", [1, 2, 4, 8])
def test_dot_segments_are_refused_however_often_they_were_encoded(
    client: FlaskClient, rounds: int
) -> None:
    dot = "."
    for _ in range(rounds):
        dot = dot.replace("%", "%25").replace(".", "%2E")
    response = client.get("/", query_string={"page": f"/blog/{dot}{dot}/x"})
    assert response.status_code == 400
    assert ". or .." in response.get_json()["error"]["message"]


def admin(emulator_host: str, namespace: str, *arguments: str) -> subprocess.CompletedProcess:
    """Run the owner tool on the emulator."""
    env = {
        "PATH": "/usr/bin:/bin",
        "DATASTORE_EMULATOR_HOST": emulator_host,
        "GOOGLE_CLOUD_PROJECT": "visit-counter-test",
        "DATASTORE_NAMESPACE": namespace,
    }
    return subprocess.run(
        [sys.executable, "-m", "scripts.admin", *arguments],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        (["export", "--output", "/nonexistent-folder/counts.csv"], "there is no folder"),
        (["export", "--output", "/tmp"], "is a folder"),
        (["import", "--kind", "", "--name", "x"], "is not a kind"),
        (["set", "/", "1_000", "--yes"], "whole number"),
        (["set", "/", " 7", "--yes"], "whole number"),
        (["set", "/", "\u0663", "--yes"], "whole number"),
    ],
)
def test_the_owner_tool_answers_bad_input_with_a_message_and_status_2(
    emulator_host: str, namespace: str, arguments: list[str], says: str
) -> None:
    result = admin(emulator_host, namespace, *arguments)

    assert result.returncode == 2, result.stderr
    assert says in result.stderr
    assert "Traceback" not in result.stderr


def test_the_owner_tool_escapes_invisible_characters_in_stored_page_names(
    emulator_host: str, namespace: str, tmp_path: Path
) -> None:
    from counter import config, instance

    settings = config.Settings(
        project="visit-counter-test", emulator_host=emulator_host, namespace=namespace
    )
    instance.build(settings).counts.increment("/a\u202eb")  # stored before the rule, say

    listed = admin(emulator_host, namespace, "list")
    as_json = admin(emulator_host, namespace, "list", "--json")

    assert "\u202e" not in listed.stdout
    assert "/a\\u202eb" in listed.stdout
    assert json.loads(as_json.stdout) == [{"page": "/a\u202eb", "count": 1}]
