"""What one instance lets strangers spend: requests per client per minute, writes per day.

Both live in the instance's memory: Cloud Functions may run several instances, each with its own
limits, so the ceilings are per instance (MAX_INSTANCES multiplies them). A client is held only
as a keyed hash under a random key that never leaves the process, in a table of bounded size.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import hmac
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from counter.config import Settings

MAX_CLIENTS = 10_000
"""Clients remembered at once; the least recently seen is forgotten first."""

ADDRESS_FACTOR = 5
"""An address may send this many times a client's limit, whatever user agents it claims."""


@dataclass(frozen=True)
class Decision:
    """Whether a request may go on, and what to tell the client in RateLimit headers."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int
    retry_after_seconds: int = 0

    def headers(self) -> dict[str, str]:
        """RateLimit-Limit, -Remaining and -Reset, plus Retry-After when refused."""
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after_seconds)
        return headers


class RateLimiter:
    """A token bucket per client: `per_minute` requests at once, refilled over a minute."""

    def __init__(
        self,
        per_minute: int,
        *,
        max_clients: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_minute = per_minute
        self._max_clients = max_clients
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._buckets: collections.OrderedDict[bytes, tuple[float, float]] = (
            collections.OrderedDict()
        )

    def __len__(self) -> int:
        """How many buckets are held."""
        return len(self._buckets)

    def check(self, address: str, user_agent: str) -> Decision:
        """Take one request from the client's bucket and its address's, if both have one."""
        client = (self._digest(f"{address}\n{user_agent}"), self.per_minute)
        whole_address = (self._digest(address), self.per_minute * ADDRESS_FACTOR)
        now = self._clock()
        with self._lock:
            levels = [
                (key, limit, self._tokens(key, limit, now))
                for key, limit in (client, whole_address)
            ]
            empty = [(key, limit, tokens) for key, limit, tokens in levels if tokens < 1]
            if empty:
                for key, _limit, tokens in levels:
                    self._store(key, tokens, now)
                _key, limit, tokens = min(empty, key=lambda level: level[2] / level[1])
                wait = math.ceil((1 - tokens) * 60 / limit)
                return Decision(False, self.per_minute, 0, wait, wait)
            for key, _limit, tokens in levels:
                self._store(key, tokens - 1, now)
        _key, limit, tokens = levels[0]
        remaining = math.floor(tokens - 1)
        return Decision(True, limit, remaining, math.ceil((limit - tokens + 1) * 60 / limit))

    def _tokens(self, key: bytes, limit: int, now: float) -> float:
        stored = self._buckets.get(key)
        if stored is None:
            return float(limit)
        tokens, updated = stored
        return min(float(limit), tokens + (now - updated) * limit / 60)

    def _store(self, key: bytes, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self._max_clients:
            self._buckets.popitem(last=False)

    def _digest(self, identity: str) -> bytes:
        return hmac.new(
            self._key, identity.encode("utf-8", "surrogatepass"), hashlib.sha256
        ).digest()[:16]


class DailyWrites:
    """Counted visits of this instance in the current UTC day, against a daily limit."""

    def __init__(self, limit: int, *, clock: Callable[[], float] = time.time) -> None:
        self.limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        self._day = -1
        self._count = 0

    def exhausted(self) -> bool:
        """Whether today's limit has been reached (never, with a limit of 0)."""
        with self._lock:
            self._roll()
            return bool(self.limit) and self._count >= self.limit

    def record(self) -> bool:
        """Count one write; True exactly once a day, for the write that reaches the limit."""
        with self._lock:
            self._roll()
            self._count += 1
            return bool(self.limit) and self._count == self.limit

    def _roll(self) -> None:
        day = int(self._clock() // 86_400)
        if day != self._day:
            self._day, self._count = day, 0


@dataclass(frozen=True)
class Limits:
    """One instance's limits: requests per client (None when off) and writes per day."""

    requests: RateLimiter | None
    writes: DailyWrites


@functools.cache
def for_settings(settings: Settings) -> Limits:
    """The one set of limits of this process for these settings."""
    requests = (
        RateLimiter(settings.rate_limit_per_minute) if settings.rate_limit_per_minute else None
    )
    return Limits(requests, DailyWrites(settings.daily_write_limit))
