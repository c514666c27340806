"""The function's HTTP contract, through functions-framework's app on the emulator."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from flask.testing import FlaskClient

from conftest import SITE, run_query
from counter import config, instance
from scripts.emulator import free_port
from user_agents import BROWSER


def count_of(client: FlaskClient, page: str) -> int:
    """The stored count of a page, read through the function."""
    response = client.get("/", query_string={"page": page})
    assert response.status_code == 200
    return response.get_json()["count"]


def assert_error(response, status: int) -> dict:
    """The response is the standard JSON error with this status; return its body."""
    assert response.status_code == status
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["error"]["code"] == status
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    assert response.headers["Cache-Control"] == "no-store"
    return body


def test_post_counts_each_visit_and_returns_the_new_count(client: FlaskClient, page: str) -> None:
    first = client.post("/", query_string={"page": page})
    second = client.post("/", query_string={"page": page})
    assert (first.status_code, first.get_json()) == (200, {"count": 1, "counted": True})
    assert (second.status_code, second.get_json()) == (200, {"count": 2, "counted": True})
    assert first.headers["Cache-Control"] == "no-store"
    assert first.mimetype == "application/json"


def test_get_reads_without_counting(client: FlaskClient, page: str) -> None:
    assert count_of(client, page) == 0
    client.post("/", query_string={"page": page})
    assert count_of(client, page) == 1
    assert count_of(client, page) == 1


def test_with_count_on_get_a_get_counts_and_answers_like_a_post(
    client: FlaskClient, env: Callable[..., None], page: str
) -> None:
    env(COUNT_ON_GET="true")
    answers = [
        client.get("/", query_string={"page": page}, headers={"User-Agent": BROWSER}).get_json()
        for _ in range(2)
    ]
    assert answers == [{"count": 1, "counted": True}, {"count": 2, "counted": True}]


def test_with_count_on_get_the_bot_and_unique_visitor_rules_still_apply(
    client: FlaskClient, env: Callable[..., None], page: str
) -> None:
    env(COUNT_ON_GET="true", UNIQUE_WINDOW_SECONDS="1800")
    query, browser = {"page": page}, {"User-Agent": BROWSER}
    assert client.get("/", query_string=query, headers=browser).get_json()["counted"] is True
    repeat = client.get("/", query_string=query, headers=browser).get_json()
    bot = client.get("/", query_string=query, headers={"User-Agent": "curl/8.5.0"}).get_json()
    assert repeat == {"count": 1, "counted": False, "reason": "repeat"}
    assert bot == {"count": 1, "counted": False, "reason": "bot"}


def test_with_count_on_get_head_and_the_badge_still_only_read(
    client: FlaskClient, env: Callable[..., None], page: str
) -> None:
    env(COUNT_ON_GET="true")
    browser = {"User-Agent": BROWSER}
    assert client.head("/", query_string={"page": page}, headers=browser).status_code == 200
    assert client.get("/badge.svg", query_string={"page": page}, headers=browser).status_code == 200
    env(COUNT_ON_GET="false")
    assert count_of(client, page) == 0


def test_head_answers_like_get_without_a_body(client: FlaskClient, page: str) -> None:
    client.post("/", query_string={"page": page})
    response = client.head("/", query_string={"page": page})
    assert response.status_code == 200
    assert response.data == b""
    assert response.headers["Content-Length"] == str(
        len(json.dumps({"count": 1}, separators=(",", ":")))
    )
    assert count_of(client, page) == 1


def test_pages_are_counted_separately(client: FlaskClient, page: str) -> None:
    client.post("/", query_string={"page": page})
    client.post("/", query_string={"page": page + "/other"})
    client.post("/", query_string={"page": page + "/other"})
    assert count_of(client, page) == 1
    assert count_of(client, page + "/other") == 2


def test_without_page_the_default_page_is_counted(
    client: FlaskClient, env: Callable[..., None], page: str
) -> None:
    env(DEFAULT_PAGE=page)
    assert client.post("/").get_json() == {"count": 1, "counted": True}
    assert count_of(client, page) == 1


def test_preflight_answers_cors_and_counts_nothing(client: FlaskClient, page: str) -> None:
    response = client.options(
        "/",
        query_string={"page": page},
        headers={
            "Origin": SITE,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == SITE
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert "Origin" in response.headers["Vary"]
    assert int(response.headers["Access-Control-Max-Age"]) > 0
    assert count_of(client, page) == 0


def test_allowed_origin_may_read_the_answer(client: FlaskClient, page: str) -> None:
    response = client.post("/", query_string={"page": page}, headers={"Origin": SITE})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == SITE
    assert "Origin" in response.headers["Vary"]


def test_any_origin_is_allowed_with_a_star(
    client: FlaskClient, env: Callable[..., None], page: str
) -> None:
    env(ALLOWED_ORIGINS="*")
    origin = "http://localhost:8000"
    response = client.post("/", query_string={"page": page}, headers={"Origin": origin})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == origin


@pytest.mark.parametrize("method", ["POST", "GET", "OPTIONS"])
def test_foreign_origin_is_refused_and_not_counted(
    client: FlaskClient, page: str, method: str
) -> None:
    client.post("/", query_string={"page": page})
    response = client.open(
        "/",
        method=method,
        query_string={"page": page},
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert_error(response, 403)
    assert "Access-Control-Allow-Origin" not in response.headers
    assert count_of(client, page) == 1


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "TRACE"])
def test_other_methods_are_refused_with_allow(client: FlaskClient, page: str, method: str) -> None:
    response = client.open("/", method=method, query_string={"page": page})
    assert_error(response, 405)
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "POST", "OPTIONS"}
    assert count_of(client, page) == 0


def test_preflight_for_a_refused_method_is_refused(client: FlaskClient) -> None:
    response = client.options(
        "/", headers={"Origin": SITE, "Access-Control-Request-Method": "DELETE"}
    )
    assert_error(response, 405)


@pytest.mark.parametrize(
    ("bad_page", "words"),
    [
        ("blog", "starts with /"),
        ("", "starts with /"),
        ("/" + "a" * 256, "longer than 256"),
        ("/a\nb", "control characters"),
        ("/a\x00b", "control characters"),
        ("/a\u2028b", "control characters"),
        ("/a?b=c", "without a query"),
        ("/a#top", "without a query or fragment"),
        ("/blog/../admin", ". or .. segments"),
        ("/blog/%2e%2e/admin", ". or .. segments"),
        ("/blog//x", "empty segment"),
    ],
)
def test_bad_pages_are_refused_and_nothing_is_written(
    client: FlaskClient, env: Callable[..., None], namespace: str, bad_page: str, words: str
) -> None:
    env(DATASTORE_NAMESPACE=namespace)  # so any entity found below was written by this POST
    response = client.post("/", query_string={"page": bad_page})
    assert words in assert_error(response, 400)["error"]["message"]
    assert run_query(instance.for_settings(config.settings()).db) == []


def test_longest_allowed_page_is_counted(client: FlaskClient, page: str) -> None:
    long_page = (page + "/" + "a" * 256)[:256]
    assert client.post("/", query_string={"page": long_page}).get_json() == {
        "count": 1,
        "counted": True,
    }


def test_page_given_twice_is_refused(client: FlaskClient, page: str) -> None:
    response = client.post(f"/?page={page}&page={page}/x")
    assert_error(response, 400)
    assert count_of(client, page) == 0


def test_oversized_body_is_refused_and_not_counted(client: FlaskClient, page: str) -> None:
    response = client.post("/", query_string={"page": page}, data=b"x" * 2_000_000)
    assert_error(response, 413)
    assert count_of(client, page) == 0


def test_small_body_is_ignored(client: FlaskClient, page: str) -> None:
    elsewhere = f"{page}/elsewhere"
    response = client.post("/", query_string={"page": page}, json={"page": elsewhere})
    assert response.get_json() == {"count": 1, "counted": True}
    assert count_of(client, elsewhere) == 0


def test_other_paths_are_not_found(client: FlaskClient, page: str) -> None:
    assert_error(client.post("/admin", query_string={"page": page}), 404)
    assert count_of(client, page) == 0


@pytest.mark.parametrize("dotted", ["/blog/../../x", "/blog/%2e%2e/%2e%2e/x", "/blog/./x"])
def test_dot_segments_do_not_slip_past_an_allowed_prefix(
    client: FlaskClient, env: Callable[..., None], dotted: str
) -> None:
    env(ALLOWED_PAGES="/blog/*")
    response = client.post("/", query_string={"page": dotted})
    assert ". or .. segments" in assert_error(response, 400)["error"]["message"]


@pytest.mark.parametrize(
    ("allowed", "counted"),
    [("/", False), ("/blog/*", False), ("/test/*", True)],
)
def test_allow_list_limits_which_pages_are_counted(
    client: FlaskClient, env: Callable[..., None], page: str, allowed: str, counted: bool
) -> None:
    env(ALLOWED_PAGES=f"/about,{allowed}")
    response = client.post("/", query_string={"page": page})
    if counted:
        assert response.get_json() == {"count": 1, "counted": True}
    else:
        assert "ALLOWED_PAGES" in assert_error(response, 404)["error"]["message"]
    env(ALLOWED_PAGES="")
    assert count_of(client, page) == (1 if counted else 0)


def test_each_request_logs_one_json_line_without_client_details(
    client: FlaskClient, page: str, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = "105445aa7843bc8bf206b12000100000"
    client.post(
        "/",
        query_string={"page": page},
        headers={
            "X-Cloud-Trace-Context": f"{trace}/1;o=1",
            "User-Agent": "Mozilla/5.0 UniqueAgent/1.0",
            "X-Forwarded-For": "203.0.113.7",
        },
        environ_base={"REMOTE_ADDR": "198.51.100.9"},
    )
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["severity"] == "INFO"
    assert entry["httpRequest"]["status"] == 200
    assert entry["logging.googleapis.com/trace"] == f"projects/visit-counter-test/traces/{trace}"
    assert entry["page"] == page
    for secret in ("UniqueAgent", "203.0.113.7", "198.51.100.9"):
        assert secret not in lines[0]


@pytest.mark.parametrize(
    ("agent", "counted", "reason"),
    [("PostmanRuntime/7.43.0", False, "bot"), ("Mozilla/5.0 (X11; Linux x86_64)", True, None)],
)
def test_the_log_line_says_whether_a_visit_counted_and_why_not(
    client: FlaskClient,
    page: str,
    capsys: pytest.CaptureFixture[str],
    agent: str,
    counted: bool,
    reason: str | None,
) -> None:
    client.post("/", query_string={"page": page}, headers={"User-Agent": agent})
    [line] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    entry = json.loads(line)
    assert entry["counted"] is counted
    assert entry.get("reason") == reason


def test_unreachable_database_answers_503_within_the_deadline(
    client: FlaskClient, env: Callable[..., None], page: str
) -> None:
    env(DATASTORE_EMULATOR_HOST=f"127.0.0.1:{free_port()}", DATASTORE_DEADLINE_SECONDS="1")
    for method in ("POST", "GET"):
        response = client.open("/", method=method, query_string={"page": page})
        assert_error(response, 503)
        assert int(response.headers["Retry-After"]) > 0


def test_a_fault_answers_500_with_its_traceback_logged_not_503(
    client: FlaskClient,
    env: Callable[..., None],
    page: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Datastore refuses a reserved namespace: a configuration fault, not the database being away.
    env(DATASTORE_NAMESPACE="__reserved__")
    response = client.post("/", query_string={"page": page}, headers={"User-Agent": "Mozilla/5.0"})
    assert_error(response, 500)
    assert "Retry-After" not in response.headers
    [line] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    entry = json.loads(line)
    assert entry["severity"] == "ERROR"
    assert "INVALID_ARGUMENT" in entry["stack_trace"]
