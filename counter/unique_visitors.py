"""Unique visitors: a visitor counts once per page per window, known only by a daily keyed hash.

A visitor's marker is an entity keyed by an HMAC of address, user agent and page under the day's
random salt; its only property is when it expires. Salts are made per UTC day by the first
instance to need one and kept until the end of the next day, so a visit just after midnight is
also checked against yesterday's marker: a window of up to a day is honoured across midnight.
TTL policies on `expire_at` then delete markers and salts, and old hashes become unlinkable.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable

from google.api_core.exceptions import AlreadyExists

from counter import days
from counter import messages as ds
from counter.datastore import Database, path_of
from counter.page_counts import PageCounts, Visit, added_value

MARKER_KIND = "VisitMarker"
"""Kind of the short-lived markers of recent visitors; the key name is a keyed hash."""

SALT_KIND = "VisitorSalt"
"""Kind of the daily random salts of the visitor hash; the key name is the UTC date."""

EXPIRE_AT = "expire_at"
"""Timestamp after which a marker or salt is void; a TTL policy on it deletes the entity."""

SALT = "salt"
"""Blob property holding a day's salt."""

DAY_SECONDS = 86_400


class UniqueVisitors:
    """Count each visitor of a page once per window; repeats only read the count."""

    def __init__(
        self,
        db: Database,
        counts: PageCounts,
        *,
        window_seconds: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.counts = counts
        self.window = window_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._salts: dict[str, bytes | None] = {}

    def visit(self, page: str, address: str, user_agent: str, *, may_count: bool = True) -> Visit:
        """Count this visitor's visit to a page unless they visited within the window.

        With may_count False (their address has added its visitors to the page for now) a new
        visitor is refused, and a repeat is still a repeat.
        """
        now = self._clock()
        deadline = self.db.deadline()
        visitor = visitor_id(self.salt(days.date_of(now)), address, user_agent, page)
        midnight = now - now % DAY_SECONDS
        if now - self.window < midnight:
            earlier_salt = self.salt(days.date_of(midnight - 1), create=False)
            if earlier_salt is not None:
                earlier = visitor_id(earlier_salt, address, user_agent, page)
                repeat = self._repeat_across_midnight(page, visitor, earlier, now, deadline)
                if repeat is not None:
                    return repeat
        if not may_count:
            return self._repeat_or_refused(page, visitor, now, deadline)
        return self.count_first_visit(page, visitor, now=now, deadline=deadline)

    def _repeat_or_refused(self, page: str, visitor: str, now: float, deadline: float) -> Visit:
        """A repeat if the visitor's marker is live, else refused for its address; no write."""
        key = self.db.key(MARKER_KIND, visitor)
        shard_keys = self.counts.keys(page)
        found = self.db.lookup([key, *shard_keys], deadline=deadline)
        reason = "repeat" if _live(found.get(path_of(key)), now) else "address-limit"
        return Visit(self.counts.sum_of(found, shard_keys), counted=False, reason=reason)

    def count_first_visit(self, page: str, visitor: str, *, now: float, deadline: float) -> Visit:
        """Count a visitor (a hash) once per page per window; a repeat visit only reads the count.

        A new visitor costs one Commit: the marker insert and the increment in one single-use
        transaction. A repeat's insert fails with ALREADY_EXISTS and writes nothing; a Lookup
        then gives the count. No read-write transaction is used, so concurrent visits never
        wait on each other's locks.
        """
        marker_key = self.db.key(MARKER_KIND, visitor)
        marker = self._marker(marker_key, now + self.window)
        while True:
            counted = self._count_with([ds.Mutation(insert=marker)], page, now, deadline)
            if counted is not None:
                return Visit(counted, counted=True)
            shard_keys = self.counts.keys(page)
            found = self.db.lookup([marker_key, *shard_keys], deadline=deadline)
            current = found.get(path_of(marker_key))
            if current is None:
                continue  # TTL deleted the marker just now: insert it afresh
            expiry = _expiry(current)
            if expiry.timestamp() > now:
                return Visit(self.counts.sum_of(found, shard_keys), counted=False, reason="repeat")
            # Expired, but TTL has not deleted it yet. Renew it together with a token named
            # after the expired generation: of several concurrent returning visits, exactly
            # one can insert that token, so exactly one counts.
            token = self._marker(
                self.db.key(MARKER_KIND, f"{visitor}@{expiry.isoformat()}"), now + self.window
            )
            renew = [ds.Mutation(insert=token), ds.Mutation(upsert=marker)]
            counted = self._count_with(renew, page, now, deadline)
            if counted is not None:
                return Visit(counted, counted=True)
            return Visit(self.counts.read(page, deadline=deadline), counted=False, reason="repeat")

    def salt(self, day: str, *, create: bool = True) -> bytes | None:
        """A UTC day's random salt, the same on every instance; made by the first to need it.

        With create=False a day nobody made a salt for (a day without visitors) gives None.
        """
        with self._lock:
            if day in self._salts:
                return self._salts[day]
        key = self.db.key(SALT_KIND, day)
        salt = None
        if create:
            salt = self._create_salt(key, day)
        if salt is None:
            stored = self.db.lookup([key], deadline=self.db.deadline()).get(path_of(key))
            salt = stored.properties[SALT].blob_value if stored is not None else None
        with self._lock:
            # Today's and yesterday's are all a visit needs.
            for old in sorted(self._salts)[:-1]:
                del self._salts[old]
            self._salts[day] = salt
        return salt

    def _create_salt(self, key: ds.Key, day: str) -> bytes | None:
        """Store a fresh salt for the day; None if another instance made it first."""
        fresh = secrets.token_bytes(32)
        day_start = datetime.datetime.fromisoformat(day).replace(tzinfo=datetime.UTC).timestamp()
        # Kept through the next day, for visits just after midnight; then TTL deletes it.
        entity = ds.Entity(
            key=key,
            properties={
                SALT: ds.Value(blob_value=fresh, exclude_from_indexes=True),
                EXPIRE_AT: _timestamp(day_start + 2 * DAY_SECONDS),
            },
        )
        try:
            # Safe to retry: a repeated insert cannot overwrite, it fails with ALREADY_EXISTS.
            self.db.commit(
                [ds.Mutation(insert=entity)], deadline=self.db.deadline(), idempotent=True
            )
        except AlreadyExists:
            return None
        return fresh

    def _repeat_across_midnight(
        self, page: str, visitor: str, earlier: str, now: float, deadline: float
    ) -> Visit | None:
        """A repeat visit if today's or yesterday's marker is live; None for a new visitor.

        Yesterday's live marker is carried over to today's hash, so later visits today take the
        usual path.
        """
        today_key = self.db.key(MARKER_KIND, visitor)
        earlier_key = self.db.key(MARKER_KIND, earlier)
        shard_keys = self.counts.keys(page)
        found = self.db.lookup([today_key, earlier_key, *shard_keys], deadline=deadline)
        count = self.counts.sum_of(found, shard_keys)
        if _live(found.get(path_of(today_key)), now):
            return Visit(count, counted=False, reason="repeat")
        previous = found.get(path_of(earlier_key))
        if not _live(previous, now):
            return None
        expiry = _expiry(previous).timestamp()
        carried = self._marker(today_key, expiry)
        self.db.commit([ds.Mutation(upsert=carried)], deadline=deadline, idempotent=True)
        return Visit(count, counted=False, reason="repeat")

    def _count_with(
        self, mutations: list[ds.Mutation], page: str, now: float, deadline: float
    ) -> int | None:
        """Apply mutations and count one visit, atomically; None if an insert found its key taken.

        Counting is the page's increment and, with history, the day's, all in this one Commit.
        """
        counting = self.counts.increment_mutations(page, now=now)
        try:
            response = self.db.commit([*mutations, *counting], deadline=deadline, atomic=True)
        except AlreadyExists:
            return None
        return self.counts.total_after(page, added_value(response, len(mutations)), deadline)

    @staticmethod
    def _marker(key: ds.Key, expires: float) -> ds.Entity:
        return ds.Entity(key=key, properties={EXPIRE_AT: _timestamp(expires)})


def _live(marker: ds.Entity | None, now: float) -> bool:
    """Whether a marker exists and has not expired."""
    return marker is not None and _expiry(marker).timestamp() > now


def _expiry(entity: ds.Entity) -> datetime.datetime:
    """When a marker or salt expires."""
    return entity.properties[EXPIRE_AT].timestamp_value.ToDatetime(tzinfo=datetime.UTC)


def _timestamp(seconds: float) -> ds.Value:
    moment = ds.Timestamp()
    moment.FromDatetime(datetime.datetime.fromtimestamp(seconds, datetime.UTC))
    return ds.Value(timestamp_value=moment, exclude_from_indexes=True)


def visitor_id(salt: bytes, address: str, user_agent: str, page: str) -> str:
    """A keyed hash that recognises one visitor of one page for one salt, and nothing more."""
    message = "\n".join((address, user_agent, page)).encode("utf-8", "surrogatepass")
    return hmac.new(salt, message, hashlib.sha256).hexdigest()[:32]
