"""The two designs the product is measured against, as functions; a benchmark aid, never deployed.

Both count into the product's data model (kind `PageCount`, key name = page, property `count`),
so one direct lookup reads any strategy's final count.
"""

from __future__ import annotations

import random
import threading
import time

import flask
import functions_framework
from google.api_core import exceptions, retry
from google.cloud import datastore

KIND = "PageCount"
DEADLINE_SECONDS = 5.0
"""Same budget as the product's default DATASTORE_DEADLINE_SECONDS."""

_NO_RETRY = retry.Retry(predicate=retry.if_exception_type())
"""The library would retry a Lookup that timed out for up to 60 s: the deadline rules instead."""

_lock = threading.Lock()
_client: datastore.Client | None = None


def client() -> datastore.Client:
    """One client per process, created on first use (after gunicorn forks) and shared."""
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                _client = datastore.Client()
    return _client


@functions_framework.http
def classic(request: flask.Request) -> tuple[dict, int]:
    """The tutorial design: read the entity, add one, write it back; no transaction."""
    db = client()
    key = db.key(KIND, request.args.get("page", "/"))
    entity = db.get(key, timeout=DEADLINE_SECONDS) or datastore.Entity(key)
    entity["count"] = entity.get("count", 0) + 1
    db.put(entity, timeout=DEADLINE_SECONDS)
    return {"count": entity["count"]}, 200


@functions_framework.http
def transactional(request: flask.Request) -> tuple[dict, int]:
    """Get and put in a transaction, retried with backoff on ABORTED until the deadline."""
    db = client()
    key = db.key(KIND, request.args.get("page", "/"))
    deadline = time.monotonic() + DEADLINE_SECONDS
    delay = 0.01
    while True:
        remaining = deadline - time.monotonic()
        try:
            with db.transaction():
                entity = db.get(key, retry=_NO_RETRY, timeout=remaining) or datastore.Entity(key)
                entity["count"] = entity.get("count", 0) + 1
                db.put(entity)
            return {"count": entity["count"]}, 200
        except exceptions.DeadlineExceeded:
            return {"error": {"code": 503, "message": "timed out"}}, 503
        except exceptions.Conflict:  # Aborted is a Conflict: the transaction wrote nothing
            if time.monotonic() + delay >= deadline:
                return {"error": {"code": 503, "message": "kept conflicting"}}, 503
            time.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, 0.5)
