"""DAILY_WRITE_LIMIT: counted visits of one instance per UTC day, exactly, and per address."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

ADDRESS_SHARE = 100
"""One address may take at most this fraction (1/100) of the day's DAILY_WRITE_LIMIT."""

MAX_ADDRESSES = 10_000
"""Addresses remembered at once; the least recently counted is forgotten first."""


class DailyWrites:
    """Counted visits of this instance in the current UTC day, in all and per address.

    A visit reserves its place before it is written and gives it back if it ends up not
    counted, so concurrent visits never count past the limit. No one address may take more
    than 1/ADDRESS_SHARE of the day's limit, so one client can't leave the rest of the day to
    "daily-limit".
    """

    def __init__(
        self,
        limit: int,
        *,
        max_addresses: int = MAX_ADDRESSES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.limit = limit
        self.per_address = max(1, limit // ADDRESS_SHARE) if limit else 0
        self._max_addresses = max_addresses
        self._clock = clock
        self._lock = threading.Lock()
        self._day = -1
        self._count = 0
        self._by_address: collections.OrderedDict[bytes, int] = collections.OrderedDict()

    def exhausted(self) -> bool:
        """Whether today's limit has been reached (never, with a limit of 0)."""
        with self._lock:
            self._roll()
            return bool(self.limit) and self._count >= self.limit

    def reserve(self, key: bytes | None) -> Reservation:
        """Take a place for one counted visit (from the address hashed as key), if one is left."""
        with self._lock:
            self._roll()
            if not self.limit:
                return Reservation(True)
            if self._count >= self.limit:
                return Reservation(False)
            if key is not None:
                taken = self._by_address.get(key, 0)
                if taken >= self.per_address:
                    return Reservation(False)
                self._by_address[key] = taken + 1
                self._by_address.move_to_end(key)
                while len(self._by_address) > self._max_addresses:
                    self._by_address.popitem(last=False)
            self._count += 1
            return Reservation(True, self._day, key, reached=self._count == self.limit)

    def release(self, reservation: Reservation) -> None:
        """Give back a place whose visit was not counted after all."""
        if not reservation.allowed or reservation.day is None:
            return
        with self._lock:
            if reservation.day != self._day:
                return  # a new day began meanwhile: yesterday's places are gone anyway
            self._count -= 1
            if reservation.key is not None and reservation.key in self._by_address:
                self._by_address[reservation.key] -= 1

    def _roll(self) -> None:
        day = int(self._clock() // 86_400)
        if day != self._day:
            self._day, self._count = day, 0
            self._by_address.clear()


@dataclass(frozen=True)
class Reservation:
    """A place taken (or refused) for one counted visit; `reached` when it took the last one."""

    allowed: bool
    day: int | None = None
    key: bytes | None = None
    reached: bool = False
