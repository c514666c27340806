"""Page counts: one entity per page (or a few shards), added to by a server-side transform.

A hit is one Commit whose mutation upserts the page's key with an empty property mask and an
increment transform. The server adds one atomically and returns the new value, so concurrent
hits are never lost and each caller learns its own number, without a read first.

With history on, the same Commit also adds the hit to the page's count for the UTC day: an
entity of kind PageDay named by the date, under the page's key, so a page's days are found by
their keys (one Lookup for N days) or by an ancestor query (all of them, for the owner's tools).
A sharded page has sharded days too, written through the same shard number as its total: a day
takes every hit the page takes, so it is as hot as the page.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from counter import days
from counter import messages as ds
from counter.datastore import Database, KeyPath, path_of

KIND = "PageCount"
"""Entity kind holding one entity per page; the key name is the page path."""

COUNT = "count"
"""Integer property holding the page's count."""

SHARD_SEPARATOR = "#"
"""Extra shards of a page are named page#1 … page#N-1; a page never holds '#', so none collide."""

DAY_KIND = "PageDay"
"""Kind of a page's per-day counts: the key name is the UTC date (date#k for shard k), the parent
the page's own PageCount key; its integer property is COUNT."""


NotCounted = Literal["bot", "repeat", "address-limit", "daily-limit"]
"""Why a visit was not counted: a bot's user agent, a visitor already counted within the
unique-visitor window, an address that added its few visitors to the page in this window, or
the instance's DAILY_WRITE_LIMIT (or the address's share of it) reached. The answer and the log
line name it."""


@dataclass(frozen=True)
class Visit:
    """A page's count after a visit, whether this visit was counted, and if not, why."""

    count: int
    counted: bool
    reason: NotCounted | None = None


@dataclass(frozen=True)
class DayCount:
    """Visits counted on one UTC day."""

    date: str
    count: int


@dataclass(frozen=True)
class History:
    """A page's total and its counts for consecutive days, oldest first."""

    total: int
    days: list[DayCount]


class PageCounts:
    """Read and add to pages' counts, optionally sharded, and per day."""

    def __init__(
        self,
        db: Database,
        *,
        shards: int = 1,
        history: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """clock gives the time that decides a visit's UTC day (tests pass their own)."""
        self.db = db
        self.shards = shards
        self.history = history
        self._clock = clock

    def keys(self, page: str) -> list[ds.Key]:
        """The page's entity, then its extra shards."""
        return [self.shard_key(page, shard) for shard in range(self.shards)]

    def shard_key(self, page: str, shard: int) -> ds.Key:
        """The key of one shard of a page; shard 0 is the page's own entity."""
        name = f"{page}{SHARD_SEPARATOR}{shard}" if shard else page
        return self.db.key(KIND, name)

    def today(self) -> str:
        """Today's UTC date by the counts' clock."""
        return days.date_of(self._clock())

    def day_key(self, page: str, date: str, shard: int = 0) -> ds.Key:
        """The key of one shard of a page's count for a UTC date (YYYY-MM-DD)."""
        name = f"{date}{SHARD_SEPARATOR}{shard}" if shard else date
        return self.db.key(DAY_KIND, name, parent=self.shard_key(page, 0))

    def increment(self, page: str) -> int:
        """Add one visit to a page (and today's) in one Commit; return the page's new count."""
        deadline = self.db.deadline()
        # Only ABORTED is retried: it guarantees nothing was written. A timeout or a lost
        # connection leaves the outcome unknown, and retrying it could count the visit twice.
        mutations = self.increment_mutations(page)
        # Total and day move together or not at all: a non-transactional Commit of several
        # mutations may apply only some of them.
        response = self.db.commit(mutations, deadline=deadline, atomic=len(mutations) > 1)
        return self.total_after(page, added_value(response, 0), deadline)

    def increment_mutations(self, page: str, *, now: float | None = None) -> list[ds.Mutation]:
        """What counts a visit: an increment of a random shard of the page's total, then (with
        history) of the same shard of its count for the UTC day of `now` (default: now)."""
        shard = random.randrange(self.shards)
        mutations = [self.increment_mutation(page, shard=shard)]
        if self.history:
            date = days.date_of(self._clock() if now is None else now)
            mutations.append(_increment(self.day_key(page, date, shard), 1))
        return mutations

    def increment_mutation(
        self, page: str, *, by: int = 1, shard: int | None = None
    ) -> ds.Mutation:
        """An upsert that adds `by` to one shard of a page's total (a random one unless given)."""
        if shard is None:
            shard = random.randrange(self.shards)
        return _increment(self.shard_key(page, shard), by)

    def total_after(self, page: str, value: int, deadline: float) -> int:
        """The page's count after an increment: its value, or with shards a fresh sum of all."""
        if self.shards == 1:
            return value
        return self.read(page, deadline=deadline)

    def read(self, page: str, *, deadline: float | None = None) -> int:
        """A page's count without changing it (0 for a page never counted), in one Lookup."""
        keys = self.keys(page)
        found = self.db.lookup(keys, deadline=deadline or self.db.deadline())
        return self.sum_of(found, keys)

    def read_days(self, page: str, count: int) -> History:
        """A page's total and its counts for the `count` UTC days ending today, in one Lookup.

        The Lookup asks for (count + 1) x shards keys; up to 1,000 fit in one request.
        """
        dates = days.ending(self.today(), count)
        total_keys = self.keys(page)
        day_keys = {
            date: [self.day_key(page, date, s) for s in range(self.shards)] for date in dates
        }
        found = self.db.lookup(
            [*total_keys, *itertools.chain.from_iterable(day_keys.values())],
            deadline=self.db.deadline(),
        )
        return History(
            total=self.sum_of(found, total_keys),
            days=[DayCount(date, self.sum_of(found, keys)) for date, keys in day_keys.items()],
        )

    @staticmethod
    def sum_of(found: Mapping[KeyPath, ds.Entity], keys: Sequence[ds.Key]) -> int:
        """The count held by these keys' entities among a Lookup's results."""
        return sum(count_of(found.get(path_of(key))) for key in keys)


def added_value(response: ds.CommitResponse, mutation: int) -> int:
    """The value the increment at this index of a Commit's mutations left in its property."""
    return response.mutation_results[mutation].transform_results[0].integer_value


def _increment(key: ds.Key, by: int) -> ds.Mutation:
    """An upsert of this key that adds `by` to its count and leaves its other properties be."""
    return ds.Mutation(
        upsert=ds.Entity(key=key),
        # An empty mask updates no listed property, so the upsert keeps every other property
        # of an existing entity; without it the upsert would replace the whole entity.
        property_mask=ds.PropertyMask(paths=[]),
        property_transforms=[
            ds.PropertyTransform(property=COUNT, increment=ds.Value(integer_value=by))
        ],
    )


def count_of(entity: ds.Entity | None) -> int:
    """An entity's count (0 for no entity or no count)."""
    value = entity.properties.get(COUNT) if entity is not None else None
    return value.integer_value if value is not None else 0
