"""One structured log line per request, in the JSON shape Cloud Logging reads from stdout."""

from __future__ import annotations

import json
import re
import sys
import traceback

import flask
from werkzeug.datastructures import Headers

_CLOUD_TRACE = re.compile(r"([0-9a-fA-F]{32})(?:/(\d+))?(?:;o=([01]))?")
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def trace_fields(headers: Headers, project: str | None) -> dict[str, object]:
    """Cloud Logging's trace fields from X-Cloud-Trace-Context or traceparent, if well formed."""
    if not project:
        return {}
    cloud = _CLOUD_TRACE.fullmatch(headers.get("X-Cloud-Trace-Context", ""))
    if cloud:
        trace, span, sampled = cloud.group(1).lower(), cloud.group(2), cloud.group(3) == "1"
    else:
        w3c = _TRACEPARENT.fullmatch(headers.get("traceparent", ""))
        if not w3c:
            return {}
        trace, span, sampled = w3c.group(1), w3c.group(2), int(w3c.group(3), 16) & 1 == 1
    fields: dict[str, object] = {
        "logging.googleapis.com/trace": f"projects/{project}/traces/{trace}",
        "logging.googleapis.com/trace_sampled": sampled,
    }
    if span:
        fields["logging.googleapis.com/spanId"] = span
    return fields


def request_entry(
    request: flask.Request,
    response: flask.Response,
    latency_seconds: float,
    project: str | None,
    **extra: object,
) -> dict[str, object]:
    """The log entry for one request; deliberately without client address or user agent."""
    status = response.status_code
    # A 503 is the database being away (expected, retried by clients); other 5xx are faults.
    severity = "INFO" if status < 500 else "WARNING" if status == 503 else "ERROR"
    return {
        "severity": severity,
        "message": f"{request.method} {status}",
        "httpRequest": {
            "requestMethod": request.method,
            "status": status,
            "latency": f"{latency_seconds:.6f}s",
            "responseSize": str(response.calculate_content_length() or 0),
            "protocol": request.environ.get("SERVER_PROTOCOL", ""),
        },
        **trace_fields(request.headers, project),
        **extra,
    }


def write(entry: dict[str, object]) -> None:
    """Print one entry as a single JSON line and flush, so no line is lost or interleaved."""
    sys.stdout.write(json.dumps(entry, separators=(",", ":"), default=str) + "\n")
    sys.stdout.flush()


def exception_text() -> str:
    """The current exception's traceback, for an ERROR entry that Error Reporting picks up."""
    return traceback.format_exc()
