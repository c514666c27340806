"""The Datastore layer against the emulator: entity shape, shards, namespaces, import."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conftest import rpc
from counter import config, instance
from counter import messages as ds
from counter.page_counts import COUNT, KIND, PageCounts
from owner import changes
from scripts import import_count


@pytest.fixture
def counts(env: Callable[..., None]) -> PageCounts:
    """Page counts on the emulator with the test environment."""
    return instance.for_settings(config.settings()).counts


def put(counts: PageCounts, key: ds.Key, **properties: ds.Value) -> None:
    """Write an entity as another program would, replacing what was there."""
    entity = ds.Entity(key=key, properties=properties)
    counts.db.commit([ds.Mutation(upsert=entity)], deadline=counts.db.deadline())


def get(counts: PageCounts, key: ds.Key) -> ds.Entity | None:
    """Read an entity directly, bypassing the counts' own read."""
    request = ds.LookupRequest(project_id=counts.db.project, keys=[key])
    found = rpc(counts.db, "lookup", request).found
    return found[0].entity if found else None


def test_a_page_is_one_entity_keyed_by_its_path(counts: PageCounts, page: str) -> None:
    counts.increment(page)
    entity = get(counts, counts.shard_key(page, 0))
    assert entity is not None
    assert entity.key.path[0].kind == KIND
    assert entity.key.path[0].name == page
    assert entity.properties[COUNT].integer_value == 1


def test_other_properties_survive_an_increment(counts: PageCounts, page: str) -> None:
    key = counts.shard_key(page, 0)
    put(
        counts,
        key,
        count=ds.Value(integer_value=41),
        title=ds.Value(string_value="Home"),
        owner=ds.Value(string_value="me"),
    )
    assert counts.increment(page) == 42
    entity = get(counts, key)
    assert entity is not None
    assert entity.properties["title"].string_value == "Home"
    assert entity.properties["owner"].string_value == "me"
    assert entity.properties[COUNT].integer_value == 42


def test_namespaces_keep_counts_apart(env: Callable[..., None], page: str) -> None:
    env(DATASTORE_NAMESPACE="site-a")
    a = instance.for_settings(config.settings()).counts
    env(DATASTORE_NAMESPACE="site-b")
    b = instance.for_settings(config.settings()).counts
    assert a.increment(page) == 1
    assert a.increment(page) == 2
    assert b.increment(page) == 1
    assert (a.read(page), b.read(page)) == (2, 1)


def test_classic_count_is_imported_once_and_keeps_counting(
    counts: PageCounts, page: str, capsys: pytest.CaptureFixture[str]
) -> None:
    classic = counts.db.key("analytics", f"visits{page}")
    put(counts, classic, count=ds.Value(integer_value=1234))
    counts.increment(page)  # a hit that arrived before the import is kept

    argv = ["--kind", "analytics", "--name", f"visits{page}", "--page", page]
    assert import_count.main(argv) == 0
    assert "imported 1234" in capsys.readouterr().out
    assert counts.read(page) == 1235
    assert counts.increment(page) == 1236

    assert import_count.main(argv) == 0
    assert "already imported" in capsys.readouterr().out
    assert counts.read(page) == 1236


def test_classic_count_under_a_numeric_id_is_imported(counts: PageCounts, page: str) -> None:
    classic = counts.db.key("analytics", 987654321)
    put(counts, classic, count=ds.Value(integer_value=77))
    result = changes.import_count(counts, classic, "count", page)
    assert (result.imported, result.count, result.already_done) == (77, 77, False)


def test_import_into_a_sharded_page_reports_the_whole_total(
    env: Callable[..., None], page: str
) -> None:
    env(COUNTER_SHARDS="4")
    counts = instance.for_settings(config.settings()).counts
    for _ in range(10):
        counts.increment(page)
    classic = counts.db.key("analytics", f"sharded{page}")
    put(counts, classic, count=ds.Value(integer_value=100))

    result = changes.import_count(counts, classic, "count", page)

    assert (result.imported, result.count) == (100, 110)
    assert counts.read(page) == 110


@pytest.mark.parametrize(
    ("properties", "message"),
    [(None, "no entity"), ({"hits": ds.Value(integer_value=5)}, "no integer property")],
)
def test_import_from_a_missing_source_changes_nothing(
    counts: PageCounts, page: str, properties: dict | None, message: str
) -> None:
    source = counts.db.key("analytics", f"missing{page}")
    if properties is not None:
        put(counts, source, **properties)
    before = get(counts, source)
    with pytest.raises((LookupError, ValueError), match=message):
        changes.import_count(counts, source, "count", page)
    assert get(counts, counts.shard_key(page, 0)) is None
    assert get(counts, source) == before


def test_sharded_page_spreads_writes_and_reads_the_exact_total(
    env: Callable[..., None], page: str
) -> None:
    env(COUNTER_SHARDS="4")
    counts = instance.for_settings(config.settings()).counts
    totals = [counts.increment(page) for _ in range(40)]
    assert totals == list(range(1, 41))  # one writer at a time: each total is exact
    assert counts.read(page) == 40
    shards = [get(counts, key) for key in counts.keys(page)]
    used = [entity for entity in shards if entity is not None]
    assert len(used) > 1
    assert sum(entity.properties[COUNT].integer_value for entity in used) == 40


def test_sharded_unique_visits_answer_the_total(env: Callable[..., None], page: str) -> None:
    env(COUNTER_SHARDS="3", UNIQUE_WINDOW_SECONDS="60")
    unique = instance.for_settings(config.settings()).unique
    visits = [unique.visit(page, f"192.0.2.{n}", "Mozilla/5.0") for n in range(10)]
    assert [visit.count for visit in visits] == list(range(1, 11))
    repeat = unique.visit(page, "192.0.2.0", "Mozilla/5.0")
    assert (repeat.count, repeat.counted) == (10, False)
