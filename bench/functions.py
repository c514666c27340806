"""The usual counter designs, with google-cloud-datastore's Client; served by the benchmark only.

Both count into the product's data model (kind PageCount, key name = page, property count), so
one Lookup reads any strategy's total.
"""

from __future__ import annotations

import random
import time

import flask
import functions_framework
from google.api_core import exceptions, retry
from google.cloud import datastore

KIND = "PageCount"
DEADLINE_SECONDS = 5.0
"""The product's default DATASTORE_DEADLINE_SECONDS."""
_NO_RETRY = retry.Retry(predicate=retry.if_exception_type())
"""The library would retry a timed-out Lookup for 60 s; the deadline decides instead."""

_client: datastore.Client | None = None


def client() -> datastore.Client:
    """One client per process, made on the first request (after gunicorn forks)."""
    global _client
    if _client is None:
        _client = datastore.Client()
    return _client


@functions_framework.http
def classic(request: flask.Request) -> tuple[dict, int]:
    """Read the entity, add one, write it back; no transaction (concurrent hits are lost)."""
    db = client()
    key = db.key(KIND, request.args.get("page", "/"))
    entity = db.get(key, timeout=DEADLINE_SECONDS) or datastore.Entity(key)
    entity["count"] = entity.get("count", 0) + 1
    db.put(entity, timeout=DEADLINE_SECONDS)
    return {"count": entity["count"], "counted": True}, 200


@functions_framework.http
def transactional(request: flask.Request) -> tuple[dict, int]:
    """Get and put in a transaction, retried with backoff on ABORTED until the deadline."""
    db = client()
    key = db.key(KIND, request.args.get("page", "/"))
    deadline = time.monotonic() + DEADLINE_SECONDS
    delay = 0.01
    while True:
        try:
            with db.transaction():
                remaining = deadline - time.monotonic()
                entity = db.get(key, retry=_NO_RETRY, timeout=remaining) or datastore.Entity(key)
                entity["count"] = entity.get("count", 0) + 1
                db.put(entity)
            return {"count": entity["count"], "counted": True}, 200
        except exceptions.DeadlineExceeded:
            return {"error": {"code": 503, "message": "timed out"}}, 503
        except exceptions.Conflict:  # ABORTED: the transaction wrote nothing
            if time.monotonic() + delay >= deadline:
                return {"error": {"code": 503, "message": "kept conflicting"}}, 503
            time.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, 0.5)
