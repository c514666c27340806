"""The Datastore module against the emulator: entity shape, other properties, imports."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from google.cloud import datastore_v1 as ds

from conftest import RpcCounter
from counter import config, store
from scripts import import_count
from scripts.emulator import free_port


@pytest.fixture
def counter(env: Callable[..., None]) -> store.CounterStore:
    """A store on the emulator with the test environment."""
    return store.for_settings(config.settings())


def put(counter: store.CounterStore, key: ds.Key, **properties: ds.Value) -> None:
    """Write an entity as another program would, replacing what was there."""
    counter.client.commit(
        request=ds.CommitRequest(
            project_id=counter.project,
            mode=ds.CommitRequest.Mode.NON_TRANSACTIONAL,
            mutations=[ds.Mutation(upsert=ds.Entity(key=key, properties=properties))],
        )
    )


def get(counter: store.CounterStore, key: ds.Key) -> ds.Entity | None:
    """Read an entity directly, bypassing the store's own read."""
    found = counter.client.lookup(
        request=ds.LookupRequest(project_id=counter.project, keys=[key])
    ).found
    return found[0].entity if found else None


def test_a_page_is_one_entity_keyed_by_its_path(counter: store.CounterStore, page: str) -> None:
    counter.increment(page)
    entity = get(counter, counter.key(page))
    assert entity is not None
    assert entity.key.path[0].kind == store.KIND
    assert entity.key.path[0].name == page
    assert entity.properties[store.COUNT].integer_value == 1


def test_other_properties_survive_an_increment(counter: store.CounterStore, page: str) -> None:
    key = counter.key(page)
    put(
        counter,
        key,
        count=ds.Value(integer_value=41),
        title=ds.Value(string_value="Home"),
        owner=ds.Value(string_value="me"),
    )
    assert counter.increment(page) == 42
    entity = get(counter, key)
    assert entity is not None
    assert entity.properties["title"].string_value == "Home"
    assert entity.properties["owner"].string_value == "me"
    assert entity.properties[store.COUNT].integer_value == 42


def test_namespaces_keep_counts_apart(env: Callable[..., None], page: str) -> None:
    env(DATASTORE_NAMESPACE="site-a")
    a = store.for_settings(config.settings())
    env(DATASTORE_NAMESPACE="site-b")
    b = store.for_settings(config.settings())
    assert a.increment(page) == 1
    assert a.increment(page) == 2
    assert b.increment(page) == 1
    assert (a.read(page), b.read(page)) == (2, 1)


def test_classic_count_is_imported_once_and_keeps_counting(
    counter: store.CounterStore, page: str, capsys: pytest.CaptureFixture[str]
) -> None:
    classic = counter.key_for("analytics", f"visits{page}")
    put(counter, classic, count=ds.Value(integer_value=1234))
    counter.increment(page)  # a hit that arrived before the import is kept

    argv = ["--kind", "analytics", "--name", f"visits{page}", "--page", page]
    assert import_count.main(argv) == 0
    assert "imported 1234" in capsys.readouterr().out
    assert counter.read(page) == 1235
    assert counter.increment(page) == 1236

    assert import_count.main(argv) == 0
    assert "already imported" in capsys.readouterr().out
    assert counter.read(page) == 1236


def test_classic_count_under_a_numeric_id_is_imported(
    counter: store.CounterStore, page: str
) -> None:
    classic = counter.key_for("analytics", 987654321)
    put(counter, classic, count=ds.Value(integer_value=77))
    result = counter.import_count(classic, "count", page)
    assert (result.imported, result.count, result.already_done) == (77, 77, False)


@pytest.mark.parametrize(
    ("properties", "message"),
    [(None, "no entity"), ({"hits": ds.Value(integer_value=5)}, "no integer property")],
)
def test_import_from_a_missing_source_changes_nothing(
    counter: store.CounterStore, page: str, properties: dict | None, message: str
) -> None:
    source = counter.key_for("analytics", f"missing{page}")
    if properties is not None:
        put(counter, source, **properties)
    with pytest.raises((LookupError, ValueError), match=message):
        counter.import_count(source, "count", page)
    assert get(counter, counter.key(page)) is None


def test_sharded_page_spreads_writes_and_reads_the_exact_total(
    env: Callable[..., None], page: str
) -> None:
    env(COUNTER_SHARDS="4")
    counter = store.for_settings(config.settings())
    totals = [counter.increment(page) for _ in range(40)]
    assert totals == list(range(1, 41))  # one writer at a time: each total is exact
    assert counter.read(page) == 40
    shards = [get(counter, key) for key in counter.shard_keys(page)]
    used = [entity for entity in shards if entity is not None]
    assert len(used) > 1
    assert sum(entity.properties[store.COUNT].integer_value for entity in used) == 40


def test_sharded_unique_visits_answer_the_total(env: Callable[..., None], page: str) -> None:
    env(COUNTER_SHARDS="3")
    counter = store.for_settings(config.settings())
    visits = [counter.count_first_visit(page, f"visitor-{n}{page}", 60) for n in range(10)]
    assert [visit.count for visit in visits] == list(range(1, 11))
    assert counter.count_first_visit(page, f"visitor-0{page}", 60) == store.Visit(10, False)


def test_coalesced_hits_share_commits_and_each_gets_its_own_number(
    env: Callable[..., None], page: str
) -> None:
    env(COALESCE_HITS="true")
    rpcs = RpcCounter()
    counter = store.CounterStore(config.settings(), interceptors=(rpcs,))
    with ThreadPoolExecutor(max_workers=48) as pool:
        numbers = list(pool.map(lambda _: counter.increment(page), range(240)))
    assert sorted(numbers) == list(range(1, 241))
    assert counter.read(page) == 240
    commits = rpcs.calls.count("Commit")
    assert 1 <= commits < 240, "concurrent hits should have shared Commits"


def test_a_failed_coalesced_commit_fails_every_hit_of_its_batch(
    env: Callable[..., None], page: str
) -> None:
    env(
        COALESCE_HITS="true",
        DATASTORE_EMULATOR_HOST=f"127.0.0.1:{free_port()}",
        DATASTORE_DEADLINE_SECONDS="1",
    )
    counter = store.CounterStore(config.settings())

    def hit(_: int) -> str:
        try:
            counter.increment(page)
        except store.StoreUnavailable:
            return "unavailable"
        return "counted"

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(hit, range(16))) == {"unavailable"}
