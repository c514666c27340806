"""JSON responses and CORS headers, the same shape for every answer."""

from __future__ import annotations

import json

import flask

from counter.config import Settings

ALLOWED_METHODS = "GET, HEAD, POST, OPTIONS"
PREFLIGHT_MAX_AGE = "86400"
RETRY_AFTER_SECONDS = "5"
EXPOSED_HEADERS = "Retry-After, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset"
"""Headers beyond the CORS-safelisted ones that a page's script may read."""


class HttpError(Exception):
    """A request the function refuses, with the status and plain words to answer it with."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def json_response(
    status: int, payload: dict, headers: dict[str, str] | None = None
) -> flask.Response:
    """A JSON response that no cache may keep."""
    response = flask.Response(
        json.dumps(payload, separators=(",", ":")), status=status, mimetype="application/json"
    )
    response.headers.update(headers or {})
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def error_response(error: HttpError) -> flask.Response:
    """The standard error body: {"error": {"code": status, "message": words}}."""
    payload = {"error": {"code": error.status, "message": error.message}}
    return json_response(error.status, payload, error.headers)


def empty_response(headers: dict[str, str]) -> flask.Response:
    """A 204 with no body, for OPTIONS."""
    response = flask.Response(status=204)
    del response.headers["Content-Type"]  # no body, so no type (flask would say text/html)
    response.headers.update(headers)
    response.headers["Cache-Control"] = "no-store"
    return response


def add_cors(response: flask.Response, origin: str | None, settings: Settings) -> None:
    """Let an allowed origin's page read the response; tell caches it varies by Origin."""
    response.vary.add("Origin")
    if origin is not None and settings.origin_allowed(origin):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
