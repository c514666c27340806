"""Days in UTC: the date a visit is counted on, and the dates a history covers."""

from __future__ import annotations

import datetime
import re
import time

MAX_DAYS = 366
"""Most days one history may cover: a year, leap day included."""

_WHOLE_NUMBER = re.compile(r"[0-9]{1,4}")


def date_of(seconds: float) -> str:
    """The UTC date of a moment, as YYYY-MM-DD."""
    return time.strftime("%Y-%m-%d", time.gmtime(seconds))


def ending(today: str, count: int) -> list[str]:
    """`count` consecutive dates ending with `today`, oldest first."""
    last = datetime.date.fromisoformat(today)
    return [(last - datetime.timedelta(days=back)).isoformat() for back in range(count - 1, -1, -1)]


def next_date(date: str) -> str:
    """The date after this one."""
    return (datetime.date.fromisoformat(date) + datetime.timedelta(days=1)).isoformat()


def parse_count(raw: str) -> int:
    """A number of days as a request gives it, 1 to MAX_DAYS; ValueError saying what is wrong."""
    if not _WHOLE_NUMBER.fullmatch(raw) or not 1 <= int(raw) <= MAX_DAYS:
        raise ValueError(f"days must be a whole number from 1 to {MAX_DAYS}")
    return int(raw)
