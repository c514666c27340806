"""Slow and greedy clients against a real server with the deployed thread count: a stalled or
refused body never holds the instance, and a refused body is never read into memory."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from conftest import SITE, LiveServer
from counter.request_body import BODY_WAIT_SECONDS, MAX_BODY_BYTES
from raw_http import parse

THREADS = 8
"""The deployed CONCURRENCY, which deploy.sh also gives the function as THREADS."""

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(start_server: Callable[..., LiveServer]) -> LiveServer:
    """A function server with as many threads as a deployed instance."""
    return start_server("slow-clients", THREADS=str(THREADS))


def head_of(declared: int, *, page: str = "/slow", close: bool = False) -> bytes:
    """A POST's request line and headers, declaring a body of this many bytes."""
    connection = "Connection: close\r\n" if close else ""
    return (
        f"POST /?page={page} HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: {SITE}\r\n"
        f"User-Agent: Mozilla/5.0\r\nContent-Length: {declared}\r\n{connection}\r\n"
    ).encode()


def read_response(sock: socket.socket) -> tuple[bytes, bool]:
    """Everything the server sends until it closes, and whether it did close."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        return received, False
    except ConnectionResetError:
        pass
    return received, True


@contextlib.contextmanager
def stalled(server: LiveServer, declared: int) -> Iterator[socket.socket]:
    """A connection that declared a body and sent one byte of it, then nothing."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        sock.sendall(head_of(declared) + b"x")
        yield sock
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("declared", "status", "within"),
    [
        (5000, 413, 1.0),  # too big: refused before any of it is read
        (100, 408, BODY_WAIT_SECONDS + 1.0),  # short, but it never comes
    ],
)
def test_a_stalled_body_is_answered_and_its_connection_closed(
    server: LiveServer, declared: int, status: int, within: float
) -> None:
    started = time.monotonic()
    with stalled(server, declared) as sock:
        raw, closed = read_response(sock)
    elapsed = time.monotonic() - started

    answer = parse(raw)
    assert answer.status == status
    assert answer.json()["error"]["code"] == status
    assert closed
    assert elapsed < within


def test_while_twelve_bodies_stall_the_instance_answers_everyone_else_within_a_second(
    server: LiveServer,
) -> None:
    with contextlib.ExitStack() as open_ones:
        sockets = [open_ones.enter_context(stalled(server, n)) for n in [5000, 100] * 6]
        time.sleep(0.2)  # every one of them has reached the server and holds what it can

        started = time.monotonic()
        answer = requests.get(server.url, params={"page": "/other"}, timeout=10)
        elapsed = time.monotonic() - started

        answers = [parse(read_response(sock)[0]).status for sock in sockets]
    assert answer.status_code == 200
    assert elapsed < 1.0
    assert sorted(answers) == [408] * 6 + [413] * 6


def test_a_body_sent_with_its_request_is_read_and_the_visit_counted(server: LiveServer) -> None:
    body = b"x" * MAX_BODY_BYTES
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head_of(len(body), page="/with-body", close=True) + body)
        raw, closed = read_response(sock)
    answer = parse(raw)
    assert answer.status == 200
    assert answer.json() == {"count": 1, "counted": True}
    assert closed


def rss_kib(pid: int) -> int:
    """Resident memory of a process and its children, in KiB."""
    total = 0
    for process in [pid, *children(pid)]:
        status = Path(f"/proc/{process}/status").read_text()
        total += int(
            next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))
        )
    return total


def children(pid: int) -> list[int]:
    """Every descendant process of pid."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found += [int(child), *children(int(child))]
    return found


BIG = 30 * 1024 * 1024


def send_big_body(server: LiveServer) -> int:
    """POST a 30 MiB body as fast as the server takes it; the status it answered."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.sendall(head_of(BIG))
        chunk = b"x" * 65536
        with contextlib.suppress(OSError):  # the server stops reading: a reset is expected
            for _ in range(BIG // len(chunk)):
                sock.sendall(chunk)
        raw, _ = read_response(sock)
    return parse(raw).status if raw else 0


def test_refused_big_bodies_are_not_read_into_memory(server: LiveServer) -> None:
    requests.get(server.url, params={"page": "/warm"}, timeout=10)  # the worker is up and warm
    before = rss_kib(server.process.pid)

    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = list(pool.map(lambda _: send_big_body(server), range(6)))
    after = rss_kib(server.process.pid)

    print(
        f"worker RSS before {before / 1024:.1f} MiB, after six 30 MiB bodies {after / 1024:.1f} MiB"
    )
    assert statuses == [413] * 6
    assert after - before < 16 * 1024  # not one of the bodies, let alone six


def test_a_refused_body_leaves_the_next_request_on_a_new_connection_working(
    server: LiveServer,
) -> None:
    with stalled(server, 5000) as sock:
        read_response(sock)
    answer = requests.post(
        server.url, params={"page": "/after"}, headers={"Origin": SITE}, timeout=10
    )
    assert answer.status_code == 200
