"""Owner tools on the counts, run with the owner's credentials and never over HTTP."""

from __future__ import annotations

from dataclasses import dataclass

from google.api_core import exceptions
from google.cloud import datastore_v1 as ds

from counter.counts import PageCounts, added_value
from counter.database import StoreUnavailable, path_of

IMPORTED_FROM = "imported_from"
"""Property recording which entity a page's count was imported from, so an import runs once."""

_TRANSACTION_ATTEMPTS = 5


@dataclass(frozen=True)
class ImportResult:
    """Outcome of importing a count from another entity."""

    imported: int
    count: int
    already_done: bool


def import_count(
    counts: PageCounts, source: ds.Key, source_property: str, page: str
) -> ImportResult:
    """Add another entity's integer property to a page's count, once, in a transaction."""
    for _attempt in range(_TRANSACTION_ATTEMPTS):
        try:
            return _import_once(counts, source, source_property, page)
        except exceptions.Aborted:
            continue  # contention with live hits; the transaction wrote nothing
    raise StoreUnavailable("import kept conflicting with live hits; try again")


def _import_once(
    counts: PageCounts, source: ds.Key, source_property: str, page: str
) -> ImportResult:
    db = counts.db
    deadline = db.deadline()
    transaction = db.begin(deadline=deadline)
    target = counts.shard_key(page, 0)
    found = db.lookup([source, target], deadline=deadline, transaction=transaction)
    old = found.get(path_of(source))
    current = found.get(path_of(target))
    source_label = describe(source)
    problem: Exception | None = None
    if old is None:
        problem = LookupError(f"no entity {source_label} to import from")
    elif "integer_value" not in old.properties.get(source_property, ds.Value()):
        problem = ValueError(f"{source_label} has no integer property {source_property!r}")
    already_done = current is not None and (
        current.properties.get(IMPORTED_FROM) == ds.Value(string_value=source_label)
    )
    if problem is not None or already_done:
        db.rollback(transaction, deadline=deadline)
        if problem is not None:
            raise problem
        return ImportResult(imported=0, count=counts.read(page), already_done=True)
    amount = old.properties[source_property].integer_value
    mutation = counts.increment_mutation(page, by=amount, shard=0)
    mutation.upsert.properties[IMPORTED_FROM] = ds.Value(string_value=source_label)
    mutation.property_mask = ds.PropertyMask(paths=[IMPORTED_FROM])
    # Never retried on a lost answer: import_count() retries only ABORTED, which wrote nothing,
    # so the old count is never added twice.
    response = db.commit([mutation], deadline=deadline, transaction=transaction)
    count = counts.total_after(page, added_value(response, 0), deadline)
    return ImportResult(imported=amount, count=count, already_done=False)


def describe(key: ds.Key) -> str:
    """A key as people write it: Kind('name') or Kind(id)."""
    element = key.path[-1]
    return f"{element.kind}({element.name!r})" if element.name else f"{element.kind}({element.id})"
