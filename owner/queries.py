"""Queries of one kind in key order, batch by batch: what the owner tools list and change.

The function itself never queries: a visit reads and writes by key.
"""

from __future__ import annotations

from collections.abc import Iterator

from counter import messages as ds
from counter.datastore import Database


def query(
    db: Database,
    kind: str,
    *,
    ancestor: ds.Key | None = None,
    start: ds.Key | None = None,
    end: ds.Key | None = None,
    keys_only: bool = False,
    transaction: bytes = b"",
    batch_size: int | None = None,
) -> Iterator[ds.Entity]:
    """Every entity of a kind in key order, under an ancestor and from start to before end.

    Runs RunQuery batch after batch, each from the last one's cursor and with a deadline of
    its own, so a long listing is bounded per request rather than in total. keys_only
    returns entities without properties.
    """
    filters = []
    if ancestor is not None:
        filters.append(_key_filter(ds.PropertyFilter.Operator.HAS_ANCESTOR, ancestor))
    if start is not None:
        filters.append(_key_filter(ds.PropertyFilter.Operator.GREATER_THAN_OR_EQUAL, start))
    if end is not None:
        filters.append(_key_filter(ds.PropertyFilter.Operator.LESS_THAN, end))
    partition = db.partition()
    request = ds.RunQueryRequest(
        project_id=partition.project_id,
        database_id=partition.database_id,
        partition_id=partition,
        query=ds.Query(kind=[ds.KindExpression(name=kind)]),
    )
    query = request.query
    if len(filters) == 1:
        query.filter.CopyFrom(filters[0])
    elif filters:
        query.filter.composite_filter.op = ds.CompositeFilter.Operator.AND
        query.filter.composite_filter.filters.extend(filters)
    if keys_only:
        query.projection.add().property.name = "__key__"
    if batch_size is not None:
        query.limit.value = batch_size
    if transaction:
        request.read_options.transaction = transaction
    while True:
        response = db.run_query(request)
        batch = response.batch
        yield from (result.entity for result in batch.entity_results)
        done = batch.more_results == ds.QueryResultBatch.MoreResultsType.NO_MORE_RESULTS
        if done or batch.end_cursor == query.start_cursor:
            return
        query.start_cursor = batch.end_cursor


def _key_filter(operator: ds.PropertyFilter.Operator, key: ds.Key) -> ds.Filter:
    return ds.Filter(
        property_filter=ds.PropertyFilter(
            property=ds.PropertyReference(name="__key__"),
            op=operator,
            value=ds.Value(key_value=key),
        )
    )
