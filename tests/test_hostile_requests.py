"""Requests from the open internet, sent over raw sockets to a real functions-framework server:
paths its router keeps for itself, bodies that are malformed or cut short."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
import requests

import raw_http
from conftest import PROJECT, SITE, LiveServer

BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"


@pytest.fixture(scope="module")
def server(start_server: Callable[..., LiveServer]) -> LiveServer:
    """The function with its default settings."""
    return start_server("hostile")


def traced() -> tuple[str, dict[str, str]]:
    """A fresh trace id and the header carrying it, to find the request's log line."""
    trace = uuid.uuid4().hex
    return trace, {"X-Cloud-Trace-Context": f"{trace}/1;o=1"}


def log_entry(server: LiveServer, trace: str) -> dict:
    """The one log line the function wrote for the request with this trace id."""
    wanted = f"projects/{PROJECT}/traces/{trace}"
    entries = [e for e in server.log_entries() if e.get("logging.googleapis.com/trace") == wanted]
    assert len(entries) == 1, f"expected one log line for trace {trace}, got {entries}"
    return entries[0]


def assert_json_error(response: raw_http.RawResponse, status: int) -> dict:
    """The response is the documented JSON error with this status, uncacheable."""
    assert response.status == status, response.body[:300]
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json()
    assert body["error"]["code"] == status
    assert body["error"]["message"]
    return body


def count_of(server: LiveServer, page: str) -> int:
    """The stored count of a page, read through the function."""
    return requests.get(server.url, params={"page": page}, timeout=10).json()["count"]


@pytest.mark.parametrize(
    "target",
    [
        "/favicon.ico",
        "/robots.txt",
        "/a%0a",
        "/badge.svg%0a",
        "/%0d%0a",
        "/x%0a/y",
        "http://evil.example/favicon.ico",
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST", "HEAD"])
def test_paths_the_framework_keeps_get_the_functions_own_404(
    server: LiveServer, target: str, method: str
) -> None:
    trace, header = traced()
    response = raw_http.send(
        server.port, raw_http.request_bytes(method, target, {"Origin": SITE, **header})
    )

    assert response.status == 404
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Vary"] == "Origin"
    assert response.headers["Access-Control-Allow-Origin"] == SITE
    if method != "HEAD":
        assert "/badge.svg" in assert_json_error(response, 404)["error"]["message"]
    entry = log_entry(server, trace)
    assert (entry["severity"], entry["httpRequest"]["status"]) == ("INFO", 404)


CHUNKED = {"Transfer-Encoding": "chunked", "User-Agent": BROWSER}


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        (CHUNKED, b"zz\r\n"),  # a chunk size that is not hex
        (CHUNKED, b"5\r\nhel"),  # the stream ends inside a chunk
        (CHUNKED, b"3\r\nhelxx"),  # a chunk without its CRLF
        (CHUNKED, b"3\r\nhel\r\n0\r\n"),  # the last chunk without the final CRLF
        (CHUNKED, b"3;\x01\r\nhel\r\n0\r\n\r\n"),  # a malformed chunk extension
        ({"Content-Length": "10", "User-Agent": BROWSER}, b"hel"),  # shorter than it said
    ],
    ids=["bad-size", "cut-in-chunk", "no-chunk-crlf", "no-final-crlf", "bad-extension", "short"],
)
@pytest.mark.parametrize("target", ["/", "/badge.svg", "/elsewhere"])
def test_a_malformed_or_truncated_body_is_a_client_error_and_counts_nothing(
    server: LiveServer, page: str, headers: dict[str, str], body: bytes, target: str
) -> None:
    trace, header = traced()
    request = raw_http.request_bytes("POST", f"{target}?page={page}", {**headers, **header}, body)

    response = raw_http.send(server.port, request)

    assert "body" in assert_json_error(response, 400)["error"]["message"]
    assert response.headers["Vary"] == "Origin"
    entry = log_entry(server, trace)
    assert entry["severity"] in ("INFO", "WARNING")
    assert "stack_trace" not in entry
    assert count_of(server, page) == 0


def test_a_well_formed_chunked_body_is_accepted(server: LiveServer, page: str) -> None:
    request = raw_http.request_bytes("POST", f"/?page={page}", CHUNKED, b"2\r\n{}\r\n0\r\n\r\n")

    response = raw_http.send(server.port, request)

    assert (response.status, response.json()) == (200, {"count": 1, "counted": True})


def test_a_chunked_body_over_the_limit_is_refused(server: LiveServer, page: str) -> None:
    chunk = b"x" * 600
    body = b"".join(b"258\r\n" + chunk + b"\r\n" for _ in range(2)) + b"0\r\n\r\n"
    request = raw_http.request_bytes("POST", f"/?page={page}", CHUNKED, body)

    assert_json_error(raw_http.send(server.port, request), 413)
    assert count_of(server, page) == 0
