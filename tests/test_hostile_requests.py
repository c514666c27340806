"""Requests from the open internet, sent over raw sockets to a real functions-framework server:
paths its router keeps for itself, bodies that are malformed or cut short."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import raw_http
from conftest import PROJECT, SITE, LiveServer, run_query
from counter import config, instance
from counter.page_counts import KIND
from counter.page_counts import count_of as count_of_entity
from user_agents import BROWSER


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


GUNICORN_REFUSES = {
    "short method": (b"AB / HTTP/1.1\r\n", 400),
    "lower-case method": (b"get / HTTP/1.1\r\n", 400),
    "target not a path": (b"GET abc HTTP/1.1\r\n", 400),
    "control character in target": (b"GET /a\x01 HTTP/1.1\r\n", 400),
    "raw non-ASCII target": ("GET /\u00fc HTTP/1.1\r\n".encode(), 400),
    "unknown version": (b"GET / HTTP/2.0\r\n", 400),
    "control character in header": (b"GET / HTTP/1.1\r\nX: a\x01b\r\n", 400),
    "malformed length": (b"POST / HTTP/1.1\r\nContent-Length: x\r\n", 400),
    "length and chunked": (
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n",
        400,
    ),
    "gzip coding": (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n", 400),
    "header over 8190 bytes": (b"GET / HTTP/1.1\r\nX: " + b"a" * 8200 + b"\r\n", 431),
    "101 headers": (b"GET / HTTP/1.1\r\n" + b"X: a\r\n" * 101, 431),
    "unknown expectation": (b"POST / HTTP/1.1\r\nExpect: coffee\r\n", 417),
}


@pytest.mark.parametrize(("head", "status"), GUNICORN_REFUSES.values(), ids=GUNICORN_REFUSES)
def test_what_gunicorn_refuses_itself_never_reaches_the_function(
    server: LiveServer, head: bytes, status: int
) -> None:
    # docs/api.md says so: these answers are gunicorn's, before the function runs.
    logged_before = len(server.log_entries())

    response = raw_http.send(server.port, head + b"Host: a\r\nConnection: close\r\n\r\n")

    assert response.status == status
    assert response.headers["Content-Type"] == "text/html"
    assert len(server.log_entries()) == logged_before


# The fuzz run: a few hundred hostile requests, generated from a fixed seed, each checked as it
# comes back; at the end the database must hold exactly the visits the answers said counted.
# It sends only what gunicorn itself accepts as HTTP: what it refuses before the function runs
# (methods under three letters, control characters in the request line or a header, a header
# over 8 KiB, Content-Length with Transfer-Encoding) gets gunicorn's own answer (docs/api.md).

FUZZ_EXAMPLES = 400
FUZZ_AGENTS = [BROWSER, BROWSER, BROWSER, "", "curl/8.5.0", "PostmanRuntime/7.43.0", "x" * 300]
FUZZ_METHODS = ["GET", "HEAD", "POST", "OPTIONS", "PUT", "DELETE", "PATCH", "TRACE", "CONNECT"]
FUZZ_METHODS += ["PROPFIND", "M-SEARCH", "BREW", "GETS", "POST2", "X" * 20]
FUZZ_PATHS = ["/", "/badge.svg", "/favicon.ico", "/robots.txt", "//", "/badge.svg/", "/.env"]
FUZZ_PATHS += ["/wp-login.php", "/%2e%2e/%2e%2e/etc/passwd", "/%", "/%zz", "/a%0a", "/%0d%0a"]
FUZZ_PATHS += ["/badge.svg%00", "http://evil.example/", "/" + "a" * 5000]
FUZZ_ORIGINS = [SITE, "https://evil.example", "null", SITE + "/", SITE.upper(), "%00", "*"]
FUZZ_TYPES = ["application/json", "text/plain", "multipart/form-data", "application/x-www-form-"]
FUZZ_TYPES[-1] += "urlencoded"
# Header text gunicorn passes on: printable ASCII, tab, and Latin-1's upper half.
HEADER_TEXT = st.text(
    st.characters(codec="latin-1", exclude_categories=("Cc",), include_characters="\t"),
    max_size=60,
).map(str.strip)
# Anything at all, percent-encoded (control characters, lone surrogates, odd scripts).
ENCODED = st.text(max_size=40).map(
    lambda text: quote(text.encode("utf-8", "surrogatepass"), safe="/")
)
RAW_PERCENT = st.sampled_from(["%", "%z", "%zz", "%ff", "%ed%a0%80", "%c0%af", "%25", "+"])


@dataclass(frozen=True)
class Hostile:
    """One generated request, and what the fuzz run needs to judge its answer."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@st.composite
def hostile_requests(draw: st.DrawFn) -> Hostile:
    """A request an attacker, a scanner or a broken client might send."""
    # Each `|` branch is drawn about as often as the others: the function's own methods and
    # paths come up often enough to reach the counting code, not only the refusals.
    method = draw(
        st.sampled_from(["GET", "POST"])
        | st.sampled_from(["HEAD", "OPTIONS"])
        | st.sampled_from(FUZZ_METHODS)
    )
    path = draw(
        st.sampled_from(["/", "/", "/", "/badge.svg"])
        | st.sampled_from(FUZZ_PATHS)
        | st.tuples(ENCODED, RAW_PERCENT, ENCODED).map(lambda parts: "/" + "".join(parts))
    )
    query = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["page", "label", "color", "count", "page", "", "p%00"]),
                st.sampled_from([f"/fuzz/{n}" for n in range(8)])
                | ENCODED.map(lambda text: "/" + text)
                | ENCODED
                | RAW_PERCENT
                | st.sampled_from(["1", "true", "red", "4c1", "/" * 300]),
            ).map("=".join),
            max_size=3,
        ).map("&".join)
    )
    target = path + (f"?{query}" if query or draw(st.booleans()) else "")
    headers = {"User-Agent": draw(st.sampled_from(FUZZ_AGENTS) | HEADER_TEXT)}
    optional = {
        "Origin": st.sampled_from(FUZZ_ORIGINS) | HEADER_TEXT,
        "Content-Type": st.sampled_from(FUZZ_TYPES) | HEADER_TEXT,
        "X-Forwarded-For": st.sampled_from(["203.0.113.7", "1.2.3.4, ::1", "::ffff:1.2.3.4"])
        | HEADER_TEXT,
        "X-Cloud-Trace-Context": HEADER_TEXT,
        "traceparent": HEADER_TEXT,
        "Access-Control-Request-Method": st.sampled_from(FUZZ_METHODS) | HEADER_TEXT,
        "Access-Control-Request-Headers": HEADER_TEXT,
        "Accept-Encoding": st.sampled_from(["gzip", "br", "identity;q=0", "*"]),
        "Content-Encoding": st.sampled_from(["gzip", "deflate", "x"]),
        "Cookie": HEADER_TEXT,
        "Range": st.sampled_from(["bytes=0-0", "bytes=5-", "bytes=-1,0-"]),
        "If-None-Match": st.sampled_from(["*", '"x"']),
        "X-HTTP-Method-Override": st.sampled_from(FUZZ_METHODS),
    }
    for name in draw(st.lists(st.sampled_from(sorted(optional)), unique=True, max_size=5)):
        headers[name] = draw(optional[name])
    content = draw(
        st.sampled_from([b"", b"{}", b'{"page": "/elsewhere"}', b"x" * 1024, b"x" * 1025])
        | st.binary(max_size=1500)
    )
    framing = draw(
        st.just("none")
        | st.just("length")
        | st.sampled_from(["chunked", "cut-chunked", "bad-chunked"])
    )
    body = b""
    if framing == "length":
        headers["Content-Length"] = str(len(content))
        body = content
    elif framing != "none":
        headers["Transfer-Encoding"] = "chunked"
        body = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in _pieces(content))
        body += b"0\r\n\r\n"
        if framing == "cut-chunked":
            body = body[: draw(st.integers(0, len(body) - 1))]
        elif framing == "bad-chunked":
            body = draw(st.sampled_from([b"zz\r\n", b"-1\r\n", b"5\r\nhel", b"1;\x01\r\nx\r\n"]))
    return Hostile(method, target, headers, body)


def _pieces(content: bytes) -> list[bytes]:
    """A body in chunks of up to 400 bytes (none empty, which would end it early)."""
    return [content[i : i + 400] for i in range(0, len(content), 400)]


@pytest.fixture(scope="module")
def fuzz_namespace() -> str:
    """A namespace of the fuzz run's own, so every count in it was made by the run."""
    return f"fuzz-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def fuzz_server(start_server: Callable[..., LiveServer], fuzz_namespace: str) -> LiveServer:
    """The function with every counting path open: POST, GET (COUNT_ON_GET), unique visitors."""
    return start_server(
        "fuzz",
        DATASTORE_NAMESPACE=fuzz_namespace,
        COUNT_ON_GET="true",
        UNIQUE_WINDOW_SECONDS="600",
    )


def test_a_few_hundred_hostile_requests_get_json_answers_and_count_only_what_they_say(
    fuzz_server: LiveServer, fuzz_namespace: str, emulator_host: str
) -> None:
    said_counted = 0
    answers: set[str] = set()

    @settings(
        max_examples=FUZZ_EXAMPLES,
        derandomize=True,  # the same requests on every run: a failure fails every time
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(hostile_requests())
    def one(request: Hostile) -> None:
        nonlocal said_counted
        wire = raw_http.request_bytes(request.method, request.target, request.headers)
        response = raw_http.send(fuzz_server.port, wire + request.body)
        answers.add(str(response.status))
        assert response.status < 500, (request, response.body[:300])
        assert response.headers["Vary"] == "Origin", request
        assert "no-store" in response.headers["Cache-Control"], request
        if response.status >= 400:
            assert response.headers["Content-Type"] == "application/json", request
            if request.method != "HEAD":
                body = response.json()
                assert body["error"]["code"] == response.status, request
                assert body["error"]["message"], request
        elif response.status == 204:
            assert request.method == "OPTIONS", request
        elif response.headers["Content-Type"] == "application/json" and request.method != "HEAD":
            answer = response.json()
            assert isinstance(answer["count"], int), request
            said_counted += answer.get("counted", False)
            answers.add(answer.get("reason", "counted") if "counted" in answer else "read")
        else:
            assert response.status == 200, request
            assert response.headers["Content-Type"].startswith(("application/json", "image/svg"))

    one()

    db = instance.build(
        config.Settings(project=PROJECT, emulator_host=emulator_host, namespace=fuzz_namespace)
    ).db
    stored = sum(count_of_entity(entity) for entity in run_query(db, KIND))
    assert stored == said_counted
    # The run reached every kind of answer, the counting ones included.
    kinds = {"counted", "bot", "repeat", "204", "400", "403", "404", "405", "413"}
    assert kinds <= answers
