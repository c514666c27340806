"""The visits function: HTTP in, one page count out, as JSON."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import flask
import functions_framework
from werkzeug.exceptions import HTTPException

from counter import (
    addresses,
    badge,
    config,
    days,
    instance,
    limits,
    logs,
    pages,
    request_body,
    visit_rules,
)
from counter.datastore import StoreUnavailable
from counter.responses import (
    ALLOWED_METHODS,
    PREFLIGHT_MAX_AGE,
    RETRY_AFTER_SECONDS,
    HttpError,
    add_cors,
    empty_response,
    error_response,
    json_response,
)

BADGE_PATH = "/badge.svg"
_METHODS = {"/": tuple(ALLOWED_METHODS.split(", ")), BADGE_PATH: ("GET", "HEAD")}
# Checked at start-up, so a bad setting fails the deploy with its message, not a visitor.
config.settings()

# Image proxies (GitHub's camo among them) keep an image unless told not to.
_BADGE_HEADERS = {
    "Cache-Control": "max-age=0, no-cache, no-store, must-revalidate",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "X-Content-Type-Options": "nosniff",
}


@functions_framework.http
def visits(request: flask.Request) -> flask.Response:
    """Count a visit (POST; GET with COUNT_ON_GET), read it (GET, HEAD) or answer a preflight."""
    started = time.perf_counter()
    settings = config.settings()
    origin = request.headers.get("Origin")
    log_fields: dict[str, object] = {}
    try:
        response = _handle(request, settings, origin, log_fields)
    except HttpError as refusal:
        response = error_response(refusal)
    except StoreUnavailable as exc:
        log_fields["error"] = str(exc)
        response = error_response(
            HttpError(
                503,
                "the count is unavailable for a moment; try again",
                {"Retry-After": RETRY_AFTER_SECONDS},
            )
        )
    except Exception:
        # Unexpected: answer in the usual shape and log the traceback for Error Reporting.
        log_fields["stack_trace"] = logs.exception_text()
        response = error_response(HttpError(500, "internal error"))
    add_cors(response, origin, settings)
    elapsed = time.perf_counter() - started
    logs.write(logs.request_entry(request, response, elapsed, settings.project, **log_fields))
    return response


@functions_framework.errorhandler(HTTPException)
def _unrouted(_error: HTTPException) -> flask.Response:
    """Answer what functions-framework's router keeps from the function as the function would.

    The router answers /favicon.ico, /robots.txt and paths with a newline after their first
    character itself, with Flask's HTML 404 and no log line; the function refuses them too.
    """
    return visits(flask.request)


def _handle(
    request: flask.Request, settings: config.Settings, origin: str | None, log: dict[str, object]
) -> flask.Response:
    # First, on every path: a body the server cannot read must not reach anything else.
    request_body.check(request)
    allowed = _METHODS.get(_path(request))
    if allowed is None:
        raise HttpError(404, f"not found; the counter answers at / and {BADGE_PATH}")
    method = request.method
    if method not in allowed:
        raise HttpError(405, f"method {method} is not allowed", {"Allow": ", ".join(allowed)})
    if origin is not None and not settings.origin_allowed(origin):
        # A browser sends a simple cross-site POST before CORS can stop it: refuse it here.
        raise HttpError(403, "this origin may not use the counter; see ALLOWED_ORIGINS")
    if method == "OPTIONS":
        return _options(request)
    caller = visit_rules.Caller(
        addresses.client(
            request.headers.get("X-Forwarded-For"),
            request.remote_addr,
            hops=settings.forwarded_hops,
        ),
        request.headers.get("User-Agent", ""),
    )
    # Before anything touches Datastore: a refused request costs nothing but this check.
    rate = limits.for_settings(settings).requests
    decision = rate.check(caller.address, caller.user_agent) if rate is not None else None
    if decision is not None and not decision.allowed:
        raise HttpError(
            429,
            f"too many requests from this client; try again in {decision.retry_after_seconds} s",
            decision.headers(),
        )
    response = _respond(request, settings, caller, log)
    if decision is not None:
        response.headers.update(decision.headers())
    return response


def _respond(
    request: flask.Request,
    settings: config.Settings,
    caller: visit_rules.Caller,
    log: dict[str, object],
) -> flask.Response:
    if request.path == BADGE_PATH:
        return _badge(request, settings, log)
    page = _page(request, settings)
    log["page"] = page
    history_days = _days(request, settings)
    counter = instance.for_settings(settings)
    method = request.method
    if history_days is not None:
        if method == "POST":
            raise HttpError(
                400, "days reads the per-day history: ask with GET, which counts nothing"
            )
        return _history(counter, page, history_days, log)
    # COUNT_ON_GET is for pages that already call the function with a plain fetch(url).
    counts_visit = method == "POST" or (method == "GET" and settings.count_on_get)
    if not counts_visit:
        count = counter.counts.read(page)
        log["count"] = count
        return json_response(200, {"count": count})
    visit = visit_rules.visit(settings, counter, page, caller)
    answer: dict[str, object] = {"count": visit.count, "counted": visit.counted}
    if visit.reason is not None:
        answer["reason"] = visit.reason  # so a tester sees why, not a counter that seems stuck
    log.update(answer)
    return json_response(200, answer)


def _history(
    counter: instance.Store, page: str, count: int, log: dict[str, object]
) -> flask.Response:
    history = counter.counts.read_days(page, count)
    log["count"] = history.total
    per_day = [{"date": day.date, "count": day.count} for day in history.days]
    return json_response(200, {"count": history.total, "days": per_day})


def _badge(
    request: flask.Request, settings: config.Settings, log: dict[str, object]
) -> flask.Response:
    try:
        text = badge.label(request.args.get("label"))
        fill = badge.color(request.args.get("color"))
    except badge.BadgeError as exc:
        raise HttpError(400, str(exc)) from None
    # An image can only GET, so counting from one takes an explicit opt-in on both sides.
    asks_to_count = request.args.get("count") in ("1", "true")
    if asks_to_count and not settings.badge_counts:
        raise HttpError(403, "counting from a badge is off; see BADGE_COUNTS")
    page = _page(request, settings)
    log["page"] = page
    counter = instance.for_settings(settings)
    counts_hit = asks_to_count and request.method == "GET"  # HEAD never counts
    count = (
        visit_rules.hit(settings, counter, page).count if counts_hit else counter.counts.read(page)
    )
    log["count"] = count
    return flask.Response(
        badge.render(text, count, fill), 200, _BADGE_HEADERS, mimetype="image/svg+xml"
    )


def _options(request: flask.Request) -> flask.Response:
    requested = request.headers.get("Access-Control-Request-Method")
    if requested is None:
        return empty_response({"Allow": ALLOWED_METHODS})
    if requested not in ("GET", "HEAD", "POST"):
        # Not echoed: the header is the client's to fill with anything.
        raise HttpError(
            405,
            "the preflight asks for a method the counter does not allow",
            {"Allow": ALLOWED_METHODS},
        )
    return empty_response(
        {
            "Access-Control-Allow-Methods": ALLOWED_METHODS,
            "Access-Control-Allow-Headers": "Content-Type",
            "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
        }
    )


def _days(request: flask.Request, settings: config.Settings) -> int | None:
    """How many days of history the request asks for, if any."""
    given = request.args.getlist("days")
    if not given:
        return None
    if len(given) > 1:
        raise HttpError(400, "give days at most once")
    if not settings.history:
        raise HttpError(403, "per-day history is off here; see HISTORY")
    try:
        return days.parse_count(given[0])
    except ValueError as exc:
        raise HttpError(400, str(exc)) from None


def _path(request: flask.Request) -> str:
    """The path exactly as the request line gave it: werkzeug's request.path has leading
    slashes merged (// is /) and %2F decoded, and the counter answers only at its two paths."""
    target = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    if target is None:
        return request.path
    path = target.partition("?")[0].partition("#")[0]
    return path if path.startswith("/") else urlsplit(path).path


def _page(request: flask.Request, settings: config.Settings) -> str:
    given = request.args.getlist("page")
    if len(given) > 1:
        raise HttpError(400, "give page at most once")
    page = given[0] if given else settings.default_page
    problem = pages.problem(page)
    if problem:
        raise HttpError(400, problem)
    if not settings.page_allowed(page):
        raise HttpError(404, "this page is not counted here; see ALLOWED_PAGES")
    return page
