"""Whether a visit counts: not a bot's, a visitor's once per window, none past DAILY_WRITE_LIMIT."""

from __future__ import annotations

from dataclasses import dataclass

from counter import bots, limits, logs
from counter.config import Settings
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
    return hit(settings, store, page, caller if settings.unique_window_seconds else None)


def hit(settings: Settings, store: Store, page: str, visitor: Caller | None = None) -> Visit:
    """Count a hit (once per window, for a visitor given) unless DAILY_WRITE_LIMIT is reached."""
    writes = limits.for_settings(settings).writes
    if writes.exhausted():
        return Visit(store.counts.read(page), counted=False, reason="daily-limit")
    if visitor is None:
        counted = Visit(store.counts.increment(page), counted=True)
    else:
        counted = store.unique.visit(page, visitor.address, visitor.user_agent)
    if counted.counted and writes.record():
        logs.write(
            {
                "severity": "WARNING",
                "message": f"DAILY_WRITE_LIMIT reached: {writes.limit} counted visits on this "
                "instance today; visits are answered but not counted until midnight UTC",
            }
        )
    return counted
