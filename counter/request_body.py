"""What a request body may be: the counter ignores bodies, so it only refuses bad ones."""

from __future__ import annotations

import io
from typing import IO

import flask
from gunicorn.http.errors import ParseException
from werkzeug.exceptions import ClientDisconnected

from counter.responses import HttpError

MAX_BODY_BYTES = 1024
"""Largest request body accepted; bodies are ignored, so anything bigger is refused (413)."""

# What reading a malformed or truncated body raises: gunicorn's parse errors and its NoMoreData
# (an OSError) in production, OSError from Flask's development server (--debug), and werkzeug's
# ClientDisconnected for a body shorter than its Content-Length there. All are the client's.
_BODY_ERRORS = (ParseException, OSError, ClientDisconnected)


def check(request: flask.Request) -> None:
    """Refuse a body that is too big, malformed or cut short (413 or 400)."""
    declared = request.content_length
    too_big = HttpError(413, f"request body is larger than {MAX_BODY_BYTES} bytes")
    if declared is not None and declared > MAX_BODY_BYTES:
        raise too_big
    try:
        # A chunked body declares no length: read one byte past the limit to find out.
        body = read_at_most(request.stream, MAX_BODY_BYTES + 1)
    except _BODY_ERRORS:
        body = None
    if body is None or (declared is not None and len(body) < declared):
        # Nothing more can be read. functions-framework reads the body again after the answer,
        # and Flask's development server would raise again there: leave it an empty one.
        request.stream = io.BytesIO()
        raise HttpError(400, "the request body is malformed or cut short")
    if len(body) > MAX_BODY_BYTES:
        raise too_big


def read_at_most(stream: IO[bytes], limit: int) -> bytes:
    """Up to `limit` bytes, until the end of the body; a read may return less than asked."""
    body = b""
    while len(body) < limit and (piece := stream.read(limit - len(body))):
        body += piece
    return body
