"""Whether a visit counts: not a bot's, a visitor's once per window, none past the limits."""

from __future__ import annotations

from dataclasses import dataclass

from counter import addresses, bots, limits, logs
from counter.config import Settings
from counter.daily_limit import Reservation
from counter.instance import Store
from counter.page_counts import Visit


@dataclass(frozen=True)
class Caller:
    """Who sent the request: the client's address (see counter/addresses.py), its user agent."""

    address: str
    user_agent: str


def visit(settings: Settings, store: Store, page: str, caller: Caller) -> Visit:
    """Count a visitor's visit to a page, or say why it is not counted."""
    if not settings.count_bots and bots.is_bot(caller.user_agent):
        return Visit(store.counts.read(page), counted=False, reason="bot")
    return hit(settings, store, page, caller)


def hit(settings: Settings, store: Store, page: str, caller: Caller | None = None) -> Visit:
    """Count a hit unless a limit says no, taking its place first so that none is overshot.

    With unique visitors, a visitor counts once per window and an address adds at most a few
    visitors to a page per window; an address takes at most its share of DAILY_WRITE_LIMIT. A
    badge's hit has no caller: image proxies fetch badges for everyone from a few addresses.
    """
    instance = limits.for_settings(settings)
    site = addresses.site(caller.address) if caller is not None else None
    day = instance.writes.reserve(limits.digest(site) if site is not None else None)
    if not day.allowed:
        return Visit(store.counts.read(page), counted=False, reason="daily-limit")
    window = None
    try:
        if caller is None or instance.window is None:
            counted = Visit(store.counts.increment(page), counted=True)
        else:
            window = instance.window.reserve(site or "", page)
            counted = store.unique.visit(
                page, caller.address, caller.user_agent, may_count=window is not None
            )
    except BaseException:
        _release(instance, day, window)
        raise
    if not counted.counted:
        _release(instance, day, window)
    elif day.reached:
        logs.write(
            {
                "severity": "WARNING",
                "message": f"DAILY_WRITE_LIMIT reached: {instance.writes.limit} counted visits "
                "on this instance today; visits are answered but not counted until midnight UTC",
            }
        )
    return counted


def _release(instance: limits.Limits, day: Reservation, window: bytes | None) -> None:
    """Give back the places a visit took: it was not counted, or it failed."""
    instance.writes.release(day)
    if window is not None and instance.window is not None:
        instance.window.release(window)
