"""Page counts: one entity per page (or a few shards), added to by a server-side transform.

A hit is one Commit whose mutation upserts the page's key with an empty property mask and an
increment transform. The server adds one atomically and returns the new value, so concurrent
hits are never lost and each caller learns its own number, without a read first.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from google.cloud import datastore_v1 as ds

from counter.batching import GroupCommit
from counter.database import Database, KeyPath, path_of

KIND = "PageCount"
"""Entity kind holding one entity per page; the key name is the page path."""

COUNT = "count"
"""Integer property holding the page's count."""

SHARD_SEPARATOR = "#"
"""Extra shards of a page are named page#1 … page#N-1; a page never holds '#', so none collide."""


NotCounted = Literal["bot", "repeat"]
"""Why a visit was not counted: a bot's user agent, or a visitor already counted within the
unique-visitor window. The answer and the log line name it."""


@dataclass(frozen=True)
class Visit:
    """A page's count after a visit, whether this visit was counted, and if not, why."""

    count: int
    counted: bool
    reason: NotCounted | None = None


class PageCounts:
    """Read and add to pages' counts, optionally sharded, optionally with group commit."""

    def __init__(self, db: Database, *, shards: int = 1, coalesce: bool = False) -> None:
        self.db = db
        self.shards = shards
        self._group = GroupCommit(self.add, exact=shards == 1) if coalesce else None

    @property
    def pages_in_flight(self) -> int:
        """Pages whose group commit is in flight or waiting (always 0 without COALESCE_HITS)."""
        return self._group.pages_in_flight if self._group is not None else 0

    def keys(self, page: str) -> list[ds.Key]:
        """The page's entity, then its extra shards."""
        return [self.shard_key(page, shard) for shard in range(self.shards)]

    def shard_key(self, page: str, shard: int) -> ds.Key:
        """The key of one shard of a page; shard 0 is the page's own entity."""
        name = f"{page}{SHARD_SEPARATOR}{shard}" if shard else page
        return self.db.key(KIND, name)

    def increment(self, page: str) -> int:
        """Add one visit to a page and return its new count, in one Commit (perhaps shared)."""
        deadline = self.db.deadline()
        if self._group is not None:
            return self._group.add_one(page, deadline)
        return self.add(page, 1, deadline)

    def add(self, page: str, by: int, deadline: float) -> int:
        """Add to a page's count in one Commit and return the page's count after it."""
        # Only ABORTED is retried: it guarantees nothing was written. A timeout or a lost
        # connection leaves the outcome unknown, and retrying it could count the visit twice.
        response = self.db.commit([self.increment_mutation(page, by=by)], deadline=deadline)
        return self.total_after(page, added_value(response), deadline)

    def increment_mutation(
        self, page: str, *, by: int = 1, shard: int | None = None
    ) -> ds.Mutation:
        """An upsert that adds `by` to one shard of a page (a random one unless given)."""
        if shard is None:
            shard = random.randrange(self.shards)
        return ds.Mutation(
            upsert=ds.Entity(key=self.shard_key(page, shard)),
            # An empty mask updates no listed property, so the upsert keeps every other property
            # of an existing entity; without it the upsert would replace the whole entity.
            property_mask=ds.PropertyMask(paths=[]),
            property_transforms=[
                ds.PropertyTransform(property=COUNT, increment=ds.Value(integer_value=by))
            ],
        )

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

    @staticmethod
    def sum_of(found: Mapping[KeyPath, ds.Entity], keys: Sequence[ds.Key]) -> int:
        """The count held by these keys' entities among a Lookup's results."""
        return sum(count_of(found.get(path_of(key))) for key in keys)


def added_value(response: ds.CommitResponse, mutation: int = -1) -> int:
    """The value an increment mutation (by default the last) left in its property."""
    return response.mutation_results[mutation].transform_results[0].integer_value


def count_of(entity: ds.Entity | None) -> int:
    """An entity's count (0 for no entity or no count)."""
    value = entity.properties.get(COUNT) if entity is not None else None
    return value.integer_value if value is not None else 0
