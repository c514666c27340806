"""functions-framework alone, with no database: the floor of any function's start and CPU."""

from __future__ import annotations

import flask
import functions_framework


@functions_framework.http
def bare(request: flask.Request) -> tuple[dict, int]:
    """Answer the way the counter does, without a database."""
    return {"count": 1, "counted": True}, 200
