"""Owner tools on the counts, run with the owner's credentials and never over HTTP.

They find a page's entities by query, never by COUNTER_SHARDS: every shard of its total
(`page`, `page#1` … in one key range) and every day of its history (an ancestor query), so they
stay exact even where they run with other settings than the function.

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
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from counter import days
from counter import protos as ds
from counter.counts import (
    COUNT,
    DAY_KIND,
    KIND,
    SHARD_SEPARATOR,
    DayCount,
    History,
    PageCounts,
    added_value,
    count_of,
)
from counter.database import Aborted, DatastoreError, StoreUnavailable, path_of

IMPORTED_FROM = "imported_from"
"""Property recording which entity a page's count was imported from, so an import runs once."""

MAX_COUNT = 2**53 - 1
"""Largest count an owner may set: the largest integer a browser's JavaScript holds exactly."""

DELETE_BATCH = 500
"""Entities deleted per Commit when a page's history is removed."""

_TRANSACTION_ATTEMPTS = 5
_T = TypeVar("_T")


class UnknownPage(LookupError):
    """The owner named a page that has no count here."""

    def __init__(self, page: str) -> None:
        super().__init__(f"no page {page} is counted here (`list` shows the pages)")


class BadSource(ValueError):
    """The entity to import from is missing or has no integer count."""


@dataclass(frozen=True)
class ImportResult:
    """Outcome of importing a count from another entity."""

    imported: int
    count: int
    already_done: bool


@dataclass(frozen=True)
class PageSummary:
    """What is stored for a page: its total, the entities holding it, and its days of history."""

    total: int
    shards: int
    days: int


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


@dataclass(frozen=True)
class PageExport:
    """A page's total and every day of its history, oldest first."""

    page: str
    total: int
    days: list[DayCount]


def list_pages(counts: PageCounts, *, batch_size: int | None = None) -> list[tuple[str, int]]:
    """Every page with its total, highest first (ties by page), from one query of all shards."""
    totals: dict[str, int] = defaultdict(int)
    for entity in counts.db.query(KIND, batch_size=batch_size):
        name = entity.key.path[-1].name
        if name:
            totals[name.partition(SHARD_SEPARATOR)[0]] += count_of(entity)
    return sorted(totals.items(), key=lambda item: (-item[1], item[0]))


def summarize(counts: PageCounts, page: str) -> PageSummary:
    """What a page has stored; UnknownPage if it has no total."""
    shards = _shards(counts, page)
    if not shards:
        raise UnknownPage(page)
    found = counts.db.query(DAY_KIND, ancestor=_root(counts, page), keys_only=True)
    dates = {_date_of(day) for day in found}
    return PageSummary(sum(count_of(e) for e in shards), len(shards), len(dates))


def history(counts: PageCounts, page: str, count: int) -> History:
    """A page's total and its counts for the `count` UTC days ending today; UnknownPage if none."""
    shards = _shards(counts, page)
    if not shards:
        raise UnknownPage(page)
    dates = days.ending(counts.today(), count)
    per_day: dict[str, int] = defaultdict(int)
    found = counts.db.query(
        DAY_KIND,
        ancestor=_root(counts, page),
        start=counts.day_key(page, dates[0]),
        end=counts.day_key(page, days.next_date(dates[-1])),
    )
    for entity in found:
        per_day[_date_of(entity)] += count_of(entity)
    total = sum(count_of(e) for e in shards)
    return History(total, [DayCount(date, per_day[date]) for date in dates])


def export(counts: PageCounts) -> list[PageExport]:
    """Every page's total and full history, highest total first; one query per kind."""
    totals = dict(list_pages(counts))
    per_page: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for entity in counts.db.query(DAY_KIND):
        per_page[entity.key.path[0].name][_date_of(entity)] += count_of(entity)
    pages = sorted(totals.keys() | per_page.keys(), key=lambda p: (-totals.get(p, 0), p))
    return [
        PageExport(
            page,
            totals.get(page, 0),
            [DayCount(date, n) for date, n in sorted(per_page.get(page, {}).items())],
        )
        for page in pages
    ]


def set_count(counts: PageCounts, page: str, value: int, *, create: bool = False) -> SetResult:
    """Make a page's total exactly `value`, in one transaction; its days are left as they are.

    Without create, a page that has no total raises UnknownPage: a mistyped page is refused
    rather than started.
    """
    if not 0 <= value <= MAX_COUNT:
        raise ValueError(f"a count must be from 0 to {MAX_COUNT}")

    def attempt(transaction: bytes, deadline: float) -> SetResult:
        shards = _shards(counts, page, transaction=transaction, deadline=deadline)
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
    root = _root(counts, page)
    if not _shards(counts, page):
        raise UnknownPage(page)
    deleted = 0
    keys = (entity.key for entity in db.query(DAY_KIND, ancestor=root, keys_only=True))
    while batch := list(itertools.islice(keys, DELETE_BATCH)):
        # Deleting twice changes nothing, so a lost answer may be retried.
        db.commit([ds.Mutation(delete=k) for k in batch], deadline=db.deadline(), idempotent=True)
        deleted += len(batch)

    def attempt(transaction: bytes, deadline: float) -> DeleteResult:
        shards = _shards(counts, page, transaction=transaction, deadline=deadline)
        late = db.query(DAY_KIND, ancestor=root, keys_only=True, transaction=transaction)
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


def describe(key: ds.Key) -> str:
    """A key as people write it: Kind('name') or Kind(id)."""
    element = key.path[-1]
    return f"{element.kind}({element.name!r})" if element.name else f"{element.kind}({element.id})"


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
            with contextlib.suppress(DatastoreError, StoreUnavailable):
                db.rollback(transaction, deadline=db.deadline())
            raise
    raise StoreUnavailable("the change kept conflicting with live hits; try again")


def _root(counts: PageCounts, page: str) -> ds.Key:
    """The page's own PageCount key, parent of its days."""
    return counts.shard_key(page, 0)


def _shards(
    counts: PageCounts, page: str, *, transaction: bytes = b"", deadline: float | None = None
) -> list[ds.Entity]:
    """Every stored shard of a page's total, read (in a transaction, locked) by key.

    `page`, `page#1`, `page#2` … sort from `page` to just before `page$` ('$' follows '#'); the
    other names in that range ("page!", "page ") are other pages and are skipped. A key-only
    query finds them and a Lookup reads them, which is what a transaction surely locks.
    """
    db = counts.db
    found = db.query(
        KIND,
        start=counts.shard_key(page, 0),
        end=db.key(KIND, f"{page}$"),
        keys_only=True,
        transaction=transaction,
    )
    keys = [e.key for e in found if _is_shard_of(e.key.path[-1].name, page)]
    if not keys:
        return []
    read = db.lookup(keys, deadline=deadline or db.deadline(), transaction=transaction)
    return list(read.values())


def _is_shard_of(name: str, page: str) -> bool:
    return name == page or name.startswith(f"{page}{SHARD_SEPARATOR}")


def _date_of(day: ds.Entity) -> str:
    """The date of a day entity, whichever shard of the day it is."""
    return day.key.path[-1].name.partition(SHARD_SEPARATOR)[0]
