"""Owner tools that change the counts: set, delete and import, each in a transaction.

Changing a count is a read-write transaction that reads every shard and writes the new total
into the page's own entity, deleting the others in the same Commit. Datastore locks what the
transaction read (or aborts it, and it is tried again), so each hit's increment lands either
before the transaction read it, and is replaced, or after it committed, and is added on top:
the count afterwards is the new value plus the hits acknowledged after it, and no shard with an
old count is left behind. An increment by the difference could not delete the other shards in
the same step, so it was not chosen.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from google.api_core.exceptions import Aborted, GoogleAPICallError

from counter import messages as ds
from counter.datastore import StoreUnavailable, path_of
from counter.page_counts import COUNT, DAY_KIND, PageCounts, added_value, count_of
from owner import queries
from owner.reads import UnknownPage, describe, page_root, stored_shards

IMPORTED_FROM = "imported_from"
"""Property recording which entity a page's count was imported from, so an import runs once."""

MAX_COUNT = 2**53 - 1
"""Largest count an owner may set: the largest integer a browser's JavaScript holds exactly."""

DELETE_BATCH = 500
"""Entities deleted per Commit when a page's history is removed."""

_TRANSACTION_ATTEMPTS = 5
_T = TypeVar("_T")


class BadSource(ValueError):
    """The entity to import from is missing or has no integer count."""


@dataclass(frozen=True)
class ImportResult:
    """Outcome of importing a count from another entity."""

    imported: int
    count: int
    already_done: bool


@dataclass(frozen=True)
class SetResult:
    """Outcome of setting a page's count: the total it replaced and the value set."""

    previous: int
    count: int
    shards_removed: int


@dataclass(frozen=True)
class DeleteResult:
    """Outcome of deleting a page: the total it had and how many entities went."""

    previous: int
    entities: int


def set_count(counts: PageCounts, page: str, value: int, *, create: bool = False) -> SetResult:
    """Make a page's total exactly `value`, in one transaction; its days are left as they are.

    Without create, a page that has no total raises UnknownPage: a mistyped page is refused
    rather than started.
    """
    if not 0 <= value <= MAX_COUNT:
        raise ValueError(f"a count must be from 0 to {MAX_COUNT}")

    def attempt(transaction: bytes, deadline: float) -> SetResult:
        shards = stored_shards(counts, page, transaction=transaction, deadline=deadline)
        if not shards and not create:
            raise UnknownPage(page)
        total = ds.Entity(
            key=counts.shard_key(page, 0), properties={COUNT: ds.Value(integer_value=value)}
        )
        # The mask names only the count, so the entity's other properties (imported_from
        # among them) are kept.
        mutations = [ds.Mutation(upsert=total, property_mask=ds.PropertyMask(paths=[COUNT]))]
        others = [e.key for e in shards if e.key.path[-1].name != page]
        mutations += [ds.Mutation(delete=key) for key in others]
        counts.db.commit(mutations, deadline=deadline, transaction=transaction)
        return SetResult(sum(count_of(e) for e in shards), value, len(others))

    return _in_transaction(counts, attempt)


def delete_page(counts: PageCounts, page: str) -> DeleteResult:
    """Delete a page's total, every shard of it and its whole history; UnknownPage if none.

    The history goes first, in batches; then one transaction deletes the total's shards and any
    day a hit wrote meanwhile, so the total and the days end together. A hit after that starts
    the page again from 1, in its total and in its day.
    """
    db = counts.db
    root = page_root(counts, page)
    if not stored_shards(counts, page):
        raise UnknownPage(page)
    deleted = 0
    keys = (entity.key for entity in queries.query(db, DAY_KIND, ancestor=root, keys_only=True))
    while batch := list(itertools.islice(keys, DELETE_BATCH)):
        # Deleting twice changes nothing, so a lost answer may be retried.
        db.commit([ds.Mutation(delete=k) for k in batch], deadline=db.deadline(), idempotent=True)
        deleted += len(batch)

    def attempt(transaction: bytes, deadline: float) -> DeleteResult:
        shards = stored_shards(counts, page, transaction=transaction, deadline=deadline)
        late = queries.query(db, DAY_KIND, ancestor=root, keys_only=True, transaction=transaction)
        doomed = [e.key for e in shards] + [e.key for e in late]
        db.commit(
            [ds.Mutation(delete=k) for k in doomed], deadline=deadline, transaction=transaction
        )
        return DeleteResult(sum(count_of(e) for e in shards), deleted + len(doomed))

    return _in_transaction(counts, attempt)


def import_count(
    counts: PageCounts, source: ds.Key, source_property: str, page: str
) -> ImportResult:
    """Add another entity's integer property to a page's count, once, in a transaction."""

    def attempt(transaction: bytes, deadline: float) -> ImportResult:
        db = counts.db
        target = counts.shard_key(page, 0)
        found = db.lookup([source, target], deadline=deadline, transaction=transaction)
        old = found.get(path_of(source))
        current = found.get(path_of(target))
        source_label = describe(source)
        if old is None:
            raise BadSource(f"no entity {source_label} to import from")
        value = old.properties.get(source_property)
        if value is None or value.WhichOneof("value_type") != "integer_value":
            raise BadSource(f"{source_label} has no integer property {source_property!r}")
        if current is not None and (
            current.properties.get(IMPORTED_FROM) == ds.Value(string_value=source_label)
        ):
            db.rollback(transaction, deadline=deadline)
            return ImportResult(imported=0, count=counts.read(page), already_done=True)
        amount = old.properties[source_property].integer_value
        mutation = counts.increment_mutation(page, by=amount, shard=0)
        mutation.upsert.properties[IMPORTED_FROM].string_value = source_label
        mutation.property_mask.paths.append(IMPORTED_FROM)
        response = db.commit([mutation], deadline=deadline, transaction=transaction)
        count = counts.total_after(page, added_value(response, 0), deadline)
        return ImportResult(imported=amount, count=count, already_done=False)

    return _in_transaction(counts, attempt)


def _in_transaction(counts: PageCounts, attempt: Callable[[bytes, float], _T]) -> _T:
    """Run attempt(transaction, deadline) in a read-write transaction, again if it aborts.

    Only ABORTED is tried again: it means nothing was written. Any other failure, or a refusal
    such as UnknownPage, rolls the transaction back at once, so hits waiting on what it read
    go on; a Commit's lost answer is never retried, as it may have been applied.
    """
    db = counts.db
    for _attempt in range(_TRANSACTION_ATTEMPTS):
        deadline = db.deadline()
        transaction = db.begin(deadline=deadline)
        try:
            return attempt(transaction, deadline)
        except Aborted:
            continue  # contention with live hits; the transaction wrote nothing
        except BaseException:
            with contextlib.suppress(GoogleAPICallError, StoreUnavailable):
                db.rollback(transaction, deadline=db.deadline())
            raise
    raise StoreUnavailable("the change kept conflicting with live hits; try again")
