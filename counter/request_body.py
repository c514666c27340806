"""What a request body may be: the counter ignores bodies, so it only refuses bad ones."""

from __future__ import annotations

import contextlib
import io
import socket
import threading
from typing import IO, NoReturn

import flask
from gunicorn.http.errors import ParseException
from werkzeug.exceptions import ClientDisconnected

from counter.responses import HttpError

MAX_BODY_BYTES = 1024
"""Largest request body accepted; bodies are ignored, so anything bigger is refused (413)."""

BODY_WAIT_SECONDS = 2.0
"""Longest wait for a declared body to arrive; a client still sending it then gets 408."""

BODY_WAITERS = 2
"""Requests of one instance that may wait for their bodies at the same time."""

_waiters = threading.BoundedSemaphore(BODY_WAITERS)

# What reading a malformed or truncated body raises: gunicorn's parse errors and its NoMoreData
# (an OSError) in production, OSError from Flask's development server (--debug), and werkzeug's
# ClientDisconnected for a body shorter than its Content-Length there. All are the client's.
_BODY_ERRORS = (ParseException, OSError, ClientDisconnected)


def check(request: flask.Request) -> None:
    """Refuse a body that is too big (413), stalls (408), or is malformed or cut short (400).

    A refused body is never read further: the request gets an empty one in its place, and the
    connection reads nothing more, so it closes once the answer is sent.
    """
    declared = request.content_length
    if declared is not None and declared > MAX_BODY_BYTES:
        _refuse(request, 413, f"request body is larger than {MAX_BODY_BYTES} bytes")
    if not declared and "Transfer-Encoding" not in request.headers:
        return  # no body: nothing to wait for
    connection = request.environ.get("gunicorn.socket")
    # A client that declares a body and sends it slowly must not hold the instance's few
    # threads. At most BODY_WAITERS requests at a time wait for theirs, each until its
    # connection's read side is shut after BODY_WAIT_SECONDS, which ends the read at once; any
    # other request takes only what has already arrived, as a body sent with its request has.
    waits = connection is not None and _waiters.acquire(blocking=False)
    stalled = threading.Event()

    def cut_off() -> None:
        stalled.set()
        _stop_reading(connection)

    timer = threading.Timer(BODY_WAIT_SECONDS, cut_off)
    if waits:
        timer.start()
    elif connection is not None:
        connection.setblocking(False)
    try:
        # A chunked body declares no length: read one byte past the limit to find out.
        body = read_at_most(request.stream, MAX_BODY_BYTES + 1)
    except BlockingIOError:
        body = None
        stalled.set()  # not all of it had arrived, and this request may not wait
    except _BODY_ERRORS:
        body = None
    finally:
        if waits:
            timer.cancel()
            _waiters.release()
        elif connection is not None:
            connection.setblocking(True)  # gunicorn writes the answer on a blocking socket
    if body is None or (declared is not None and len(body) < declared):
        if stalled.is_set():
            _refuse(
                request, 408, "the request body did not arrive in time; send it with the request"
            )
        _refuse(request, 400, "the request body is malformed or cut short")
    if len(body) > MAX_BODY_BYTES:
        _refuse(request, 413, f"request body is larger than {MAX_BODY_BYTES} bytes")


def _refuse(request: flask.Request, status: int, message: str) -> NoReturn:
    """Answer with an error, and read nothing more of this request's body or connection.

    functions-framework reads the whole body after the answer, and gunicorn reads what is left
    of it before a kept-alive connection's next request: the empty stream and the closed read
    side stop both.
    """
    request.stream = io.BytesIO()
    _stop_reading(request.environ.get("gunicorn.socket"))
    raise HttpError(status, message)


def _stop_reading(connection: socket.socket | None) -> None:
    """Shut the read side of a client's connection; the answer can still be sent."""
    if connection is not None:
        with contextlib.suppress(OSError):
            connection.shutdown(socket.SHUT_RD)


def read_at_most(stream: IO[bytes], limit: int) -> bytes:
    """Up to `limit` bytes, until the end of the body; a read may return less than asked."""
    body = b""
    while len(body) < limit and (piece := stream.read(limit - len(body))):
        body += piece
    return body
