"""Owner tools that read the counts, run with the owner's credentials and never over HTTP.

They find a page's entities by query, never by COUNTER_SHARDS: every shard of its total
(`page`, `page#1` … in one key range) and every day of its history (an ancestor query), so they
stay exact even where they run with other settings than the function.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from counter import days
from counter import messages as ds
from counter.page_counts import (
    DAY_KIND,
    KIND,
    SHARD_SEPARATOR,
    DayCount,
    History,
    PageCounts,
    count_of,
)
from owner import queries


class UnknownPage(LookupError):
    """The owner named a page that has no count here."""

    def __init__(self, page: str) -> None:
        super().__init__(f"no page {page} is counted here (`list` shows the pages)")


@dataclass(frozen=True)
class PageSummary:
    """What is stored for a page: its total, the entities holding it, and its days of history."""

    total: int
    shards: int
    days: int


@dataclass(frozen=True)
class PageExport:
    """A page's total and every day of its history, oldest first."""

    page: str
    total: int
    days: list[DayCount]


def list_pages(counts: PageCounts, *, batch_size: int | None = None) -> list[tuple[str, int]]:
    """Every page with its total, highest first (ties by page), from one query of all shards."""
    totals: dict[str, int] = defaultdict(int)
    for entity in queries.query(counts.db, KIND, batch_size=batch_size):
        name = entity.key.path[-1].name
        if name:
            totals[name.partition(SHARD_SEPARATOR)[0]] += count_of(entity)
    return sorted(totals.items(), key=lambda item: (-item[1], item[0]))


def summarize(counts: PageCounts, page: str) -> PageSummary:
    """What a page has stored; UnknownPage if it has no total."""
    shards = stored_shards(counts, page)
    if not shards:
        raise UnknownPage(page)
    found = queries.query(counts.db, DAY_KIND, ancestor=page_root(counts, page), keys_only=True)
    dates = {date_of(day) for day in found}
    return PageSummary(sum(count_of(e) for e in shards), len(shards), len(dates))


def history(counts: PageCounts, page: str, count: int) -> History:
    """A page's total and its counts for the `count` UTC days ending today; UnknownPage if none."""
    shards = stored_shards(counts, page)
    if not shards:
        raise UnknownPage(page)
    dates = days.ending(counts.today(), count)
    per_day: dict[str, int] = defaultdict(int)
    found = queries.query(
        counts.db,
        DAY_KIND,
        ancestor=page_root(counts, page),
        start=counts.day_key(page, dates[0]),
        end=counts.day_key(page, days.next_date(dates[-1])),
    )
    for entity in found:
        per_day[date_of(entity)] += count_of(entity)
    total = sum(count_of(e) for e in shards)
    return History(total, [DayCount(date, per_day[date]) for date in dates])


def export(counts: PageCounts) -> list[PageExport]:
    """Every page's total and full history, highest total first; one query per kind."""
    totals = dict(list_pages(counts))
    per_page: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for entity in queries.query(counts.db, DAY_KIND):
        per_page[entity.key.path[0].name][date_of(entity)] += count_of(entity)
    pages = sorted(totals.keys() | per_page.keys(), key=lambda p: (-totals.get(p, 0), p))
    return [
        PageExport(
            page,
            totals.get(page, 0),
            [DayCount(date, n) for date, n in sorted(per_page.get(page, {}).items())],
        )
        for page in pages
    ]


def describe(key: ds.Key) -> str:
    """A key as people write it: Kind('name') or Kind(id)."""
    element = key.path[-1]
    return f"{element.kind}({element.name!r})" if element.name else f"{element.kind}({element.id})"


def page_root(counts: PageCounts, page: str) -> ds.Key:
    """The page's own PageCount key, parent of its days."""
    return counts.shard_key(page, 0)


def stored_shards(
    counts: PageCounts, page: str, *, transaction: bytes = b"", deadline: float | None = None
) -> list[ds.Entity]:
    """Every stored shard of a page's total, read (in a transaction, locked) by key.

    `page`, `page#1`, `page#2` … sort from `page` to just before `page$` ('$' follows '#'); the
    other names in that range ("page!", "page ") are other pages and are skipped. A key-only
    query finds them and a Lookup reads them, which is what a transaction surely locks.
    """
    db = counts.db
    found = queries.query(
        db,
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


def date_of(day: ds.Entity) -> str:
    """The date of a day entity, whichever shard of the day it is."""
    return day.key.path[-1].name.partition(SHARD_SEPARATOR)[0]
