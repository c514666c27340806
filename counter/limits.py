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
from counter.daily_limit import DailyWrites

MAX_CLIENTS = 10_000
"""Clients remembered at once; the least recently seen is forgotten first."""

ADDRESS_FACTOR = 5
"""An address may send this many times a client's limit, whatever user agents it claims."""

PER_ADDRESS_AND_PAGE = 5
"""Visitors one address may add to one page per unique-visitor window: a household's browsers."""

_KEY = secrets.token_bytes(32)


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
        self._lock = threading.Lock()
        self._buckets: collections.OrderedDict[bytes, tuple[float, float]] = (
            collections.OrderedDict()
        )

    def __len__(self) -> int:
        """How many buckets are held."""
        return len(self._buckets)

    def check(self, address: str, user_agent: str) -> Decision:
        """Take one request from the client's bucket and its address's, if both have one."""
        client = (digest(f"{address}\n{user_agent}"), self.per_minute)
        whole_address = (digest(address), self.per_minute * ADDRESS_FACTOR)
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


class WindowVisits:
    """Counted visits per address and page within the unique-visitor window, at most a few.

    Unique visitors count each browser once, and a user agent is whatever the client says: so an
    address (a household, an office) counts at most PER_ADDRESS_AND_PAGE visitors of a page per
    window, however many browsers it claims.
    """

    def __init__(
        self,
        window_seconds: int,
        *,
        per_window: int = PER_ADDRESS_AND_PAGE,
        max_entries: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window_seconds
        self.per_window = per_window
        self._max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: collections.OrderedDict[bytes, list[float]] = collections.OrderedDict()

    def reserve(self, address: str, page: str) -> bytes | None:
        """A place for one more visitor from this address to this page; None if it has none."""
        key = digest(f"{address}\n{page}")
        now = self._clock()
        with self._lock:
            times = [t for t in self._seen.get(key, ()) if t > now - self.window]
            if len(times) >= self.per_window:
                self._seen[key] = times
                return None
            self._seen[key] = [*times, now]
            self._seen.move_to_end(key)
            while len(self._seen) > self._max_entries:
                self._seen.popitem(last=False)
        return key

    def release(self, key: bytes) -> None:
        """Give back the latest place taken under this key (its visit was not counted)."""
        with self._lock:
            times = self._seen.get(key)
            if times:
                times.pop()


@dataclass(frozen=True)
class Limits:
    """One instance's limits: requests per client (None when off), writes per day, and the
    visitors an address may add to a page per unique-visitor window (None when that is off)."""

    requests: RateLimiter | None
    writes: DailyWrites
    window: WindowVisits | None


@functools.cache
def for_settings(settings: Settings) -> Limits:
    """The one set of limits of this process for these settings."""
    requests = (
        RateLimiter(settings.rate_limit_per_minute) if settings.rate_limit_per_minute else None
    )
    window = settings.unique_window_seconds
    return Limits(
        requests, DailyWrites(settings.daily_write_limit), WindowVisits(window) if window else None
    )


def digest(identity: str) -> bytes:
    """A keyed hash of a client's identity under a key that never leaves this process."""
    return hmac.new(_KEY, identity.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()[:16]
