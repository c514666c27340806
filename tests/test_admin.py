"""The owner's tools, `python -m scripts.admin`, against the emulator: each command, bad input,
and set/delete exact while hits arrive."""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from conftest import ROOT, FakeClock, LiveServer, RpcCounter
from counter import config, days, instance
from counter import messages as ds
from counter.page_counts import COUNT, DAY_KIND, KIND, PageCounts
from owner import changes, queries, reads
from scripts import admin
from scripts.emulator import free_port
from user_agents import BROWSER

TODAY = days.date_of(FakeClock().now)


@pytest.fixture
def namespace(env: Callable[..., None]) -> str:
    """A namespace of this test's own, so listings hold only its pages."""
    name = f"admin-{uuid.uuid4().hex}"
    env(DATASTORE_NAMESPACE=name)
    return name


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The clock the admin tool's store reads, for exact dates."""
    fake = FakeClock()
    monkeypatch.setattr(instance, "build", functools.partial(instance.build, clock=fake))
    return fake


@pytest.fixture
def counts(namespace: str, clock: FakeClock) -> PageCounts:
    """Page counts in the test's namespace, on the same clock as the tool."""
    return instance.build(config.settings()).counts


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """Run the tool with arguments and typed input; give its status, stdout and stderr."""

    def run_(*argv: str, answer: str | None = None) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(answer if answer is not None else ""))
        status = admin.main(list(argv))
        out, err = capsys.readouterr()
        return status, out, err

    return run_


def sharded(env: Callable[..., None], shards: int) -> PageCounts:
    """Counts that spread hits over shards, as a function with COUNTER_SHARDS would."""
    env(COUNTER_SHARDS=str(shards))
    counts = instance.build(config.settings()).counts
    env(COUNTER_SHARDS="")  # the tool itself runs without the setting
    return counts


def stored(counts: PageCounts, kind: str = KIND) -> dict[str | tuple[str, str], int]:
    """Every entity of a kind in the namespace with its count, by key name (page, date for days)."""
    found = queries.query(counts.db, kind)
    names = ((tuple(e.name for e in x.key.path), x.properties[COUNT].integer_value) for x in found)
    return {path[0] if len(path) == 1 else path: count for path, count in names}


def add(counts: PageCounts, page: str, by: int) -> None:
    """Add many visits to a page's total at once, as an import would."""
    counts.db.commit([counts.increment_mutation(page, by=by)], deadline=counts.db.deadline())


def test_list_shows_pages_highest_first_summing_their_shards(
    counts: PageCounts, env: Callable[..., None], run
) -> None:
    assert run("list") == (0, "No page has been counted yet.\n", "")
    hot = sharded(env, 4)
    for _ in range(12):
        hot.increment("/hot")
    counts.increment("/quiet")
    add(counts, "/", 1_200)

    status, out, _ = run("list")

    assert status == 0
    assert out.splitlines() == [
        "count  page",
        "1,200  /",
        "   12  /hot",
        "    1  /quiet",
        "3 pages, 1,213 visits in all",
    ]
    status, out, _ = run("list", "--json")
    assert json.loads(out) == [
        {"page": "/", "count": 1200},
        {"page": "/hot", "count": 12},
        {"page": "/quiet", "count": 1},
    ]


def test_listing_pages_through_many_query_batches(counts: PageCounts) -> None:
    for n in range(25):
        add(counts, f"/p/{n:02}", n + 1)
    rpcs = RpcCounter()
    observed = instance.build(config.settings(), interceptors=(rpcs,)).counts

    listed = reads.list_pages(observed, batch_size=10)

    assert listed == [(f"/p/{n:02}", n + 1) for n in reversed(range(25))]
    assert rpcs.calls.count("RunQuery") >= 3  # 10 + 10 + 5, each from the last one's cursor


def test_set_merges_every_shard_into_the_page_and_keeps_its_other_properties(
    counts: PageCounts, env: Callable[..., None], run
) -> None:
    hot = sharded(env, 4)
    for _ in range(20):
        hot.increment("/hot")
    title = ds.Value(string_value="Home")
    entity = ds.Entity(key=counts.shard_key("/hot", 0), properties={"title": title})
    mutation = ds.Mutation(upsert=entity, property_mask=ds.PropertyMask(paths=["title"]))
    counts.db.commit([mutation], deadline=counts.db.deadline())

    status, out, _ = run("set", "/hot", "500", "--yes")

    assert status == 0
    assert out == "/hot now counts 500 (it was 20); its history is kept.\n"
    assert stored(counts) == {"/hot": 500}  # one entity: the other shards are gone
    history = stored(counts, DAY_KIND)
    assert sum(history.values()) == 20
    assert {date.partition("#")[0] for _, date in history} == {TODAY}
    [page] = queries.query(counts.db, KIND)
    assert page.properties["title"] == title
    assert hot.increment("/hot") == 501


@pytest.mark.parametrize(
    ("answer", "status", "count"), [("y\n", 0, 7), ("yes\n", 0, 7), ("n\n", 1, 3), (None, 1, 3)]
)
def test_set_asks_first_and_only_yes_goes_ahead(
    counts: PageCounts, run, answer: str | None, status: int, count: int
) -> None:
    add(counts, "/", 3)

    result, out, err = run("set", "/", "7", answer=answer)

    assert result == status
    assert "/ counts 3. Set it to 7? [y/N]" in out
    assert counts.read("/") == count
    if status:
        assert "Nothing changed" in err


def test_reset_starts_the_count_over_and_keeps_the_history(counts: PageCounts, run) -> None:
    for _ in range(3):
        counts.increment("/")

    assert run("reset", "/", "--yes")[0] == 0

    assert counts.read("/") == 0
    assert counts.read_days("/", 1).days[-1].count == 3
    assert counts.increment("/") == 1


def test_set_of_an_unknown_page_is_refused_unless_created(counts: PageCounts, run) -> None:
    status, _, err = run("set", "/nope", "10", "--yes")
    assert status == 2
    assert "no page /nope is counted here" in err
    assert "--create" in err
    assert stored(counts) == {}

    assert run("set", "/new", "10", "--yes", "--create")[0] == 0
    assert counts.read("/new") == 10


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["set", "/", "-5"], "N must be a whole number from 0 to"),
        (["set", "/", "ten"], "N must be a whole number"),
        (["set", "/", str(2**53)], "N must be a whole number"),
        (["set", "blog", "5"], "starts with /"),
        (["reset", "/a?b"], "without a query"),
        (["delete", ""], "starts with /"),
        (["history", "/", "--days", "0"], "days must be a whole number from 1 to 366"),
        (["history", "/", "--days", "400"], "from 1 to 366"),
        (["frobnicate"], "invalid choice"),
        ([], "required"),
    ],
)
def test_malformed_input_is_named_and_exits_2(
    counts: PageCounts, capsys: pytest.CaptureFixture[str], argv: list[str], words: str
) -> None:
    counts.increment("/")
    with pytest.raises(SystemExit) as exit_:
        admin.main(argv)
    assert exit_.value.code == 2
    assert words in capsys.readouterr().err
    assert counts.read("/") == 1


@pytest.mark.parametrize("command", [["reset", "/nope", "--yes"], ["delete", "/nope", "--yes"]])
def test_changing_an_unknown_page_exits_2(counts: PageCounts, run, command: list[str]) -> None:
    status, _, err = run(*command)
    assert status == 2
    assert "no page /nope is counted here" in err
    assert stored(counts) == {}  # refused, not made


def test_delete_removes_the_page_its_shards_and_history_and_nothing_else(
    counts: PageCounts, env: Callable[..., None], run, clock: FakeClock
) -> None:
    hot = sharded(env, 3)
    # Pages whose names sort next to /a and its shards (/a#1, /a#2).
    neighbours = ["/a!", "/a b", "/a/b", "/", "/ab", '/a"']
    for day in range(3):
        clock.now = FakeClock().now - day * 86_400
        for _ in range(5):
            hot.increment("/a")
        for other in neighbours:
            counts.increment(other)
    before = {key: n for key, n in stored(counts, DAY_KIND).items() if key[0] != "/a"}

    status, out, _ = run("delete", "/a", answer="y\n")

    assert status == 0
    assert "/a counts 15 and has visits on 3 days of history. Delete it all? [y/N]" in out
    assert "Deleted /a: its count of 15" in out
    assert set(stored(counts)) == set(neighbours)
    assert stored(counts, DAY_KIND) == before
    assert run("history", "/a")[0] == 2


def test_delete_of_a_long_history_takes_several_commits(
    counts: PageCounts, clock: FakeClock
) -> None:
    for day in range(changes.DELETE_BATCH + 20):
        clock.now = FakeClock().now - day * 86_400
        counts.increment("/old")

    result = changes.delete_page(counts, "/old")

    assert result == changes.DeleteResult(previous=changes.DELETE_BATCH + 20, entities=521)
    assert stored(counts, DAY_KIND) == {}
    assert stored(counts) == {}


def test_history_lists_days_oldest_first_with_the_total(
    counts: PageCounts, env: Callable[..., None], run, clock: FakeClock
) -> None:
    hot = sharded(env, 2)  # the tool finds every shard of a day without being told of shards
    for back, hits in [(3, 2), (1, 1), (0, 4)]:
        clock.now = FakeClock().now - back * 86_400
        for _ in range(hits):
            hot.increment("/")

    status, out, _ = run("history", "/", "--days", "3")

    assert status == 0
    assert out.splitlines() == [
        "date        visits",
        "2027-01-13       0",
        "2027-01-14       1",
        "2027-01-15       4",
        "/: 5 in these 3 days (UTC), 7 in all",
    ]
    status, out, _ = run("history", "/", "--json")
    answer = json.loads(out)
    assert (answer["page"], answer["count"]) == ("/", 7)
    assert [day["date"] for day in answer["days"]] == days.ending(TODAY, 30)
    assert sum(day["count"] for day in answer["days"]) == 7


def test_export_is_a_csv_of_every_page_total_and_day(
    counts: PageCounts, run, clock: FakeClock, tmp_path: Path
) -> None:
    counts.increment("/")
    clock.now += 86_400
    counts.increment("/")
    counts.increment("/blog")
    counts.db.commit(
        [counts.increment_mutation("/old", by=40)], deadline=counts.db.deadline()
    )  # an imported count: a total without history

    status, out, _ = run("export")

    assert status == 0
    assert list(csv.reader(io.StringIO(out))) == [
        ["page", "total", "date", "count"],
        ["/old", "40", "", ""],
        ["/", "2", "2027-01-15", "1"],
        ["/", "2", "2027-01-16", "1"],
        ["/blog", "1", "2027-01-16", "1"],
    ]
    target = tmp_path / "visits.csv"
    status, _, err = run("export", "--output", str(target))
    assert status == 0
    assert target.read_text(encoding="utf-8") == out
    assert "Wrote 3 pages" in err


def test_import_is_an_admin_command_too(counts: PageCounts, run) -> None:
    old = counts.db.key("analytics", "visits")
    entity = ds.Entity(key=old, properties={"count": ds.Value(integer_value=321)})
    counts.db.commit([ds.Mutation(upsert=entity)], deadline=counts.db.deadline())

    assert run("import", "--name", "visits", "--page", "/") == (
        0,
        "imported 321 into /; it now counts 321\n",
        "",
    )
    assert run("import", "--name", "visits", "--page", "/")[1].startswith("already imported")
    status, _, err = run("import", "--name", "missing", "--page", "/")
    assert status == 2
    assert "no entity analytics('missing')" in err
    assert counts.read("/") == 321


def test_without_a_project_the_tool_says_so_and_exits_2(
    namespace: str, monkeypatch: pytest.MonkeyPatch, run
) -> None:
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT")
    config.settings.cache_clear()

    status, _, err = run("list")

    assert status == 2
    assert "GOOGLE_CLOUD_PROJECT must be set" in err


def test_an_unreachable_database_exits_1(env: Callable[..., None], run) -> None:
    env(DATASTORE_EMULATOR_HOST=f"127.0.0.1:{free_port()}", DATASTORE_DEADLINE_SECONDS="1")

    status, _, err = run("list")

    assert status == 1
    assert "Datastore is unavailable" in err


def test_the_tool_runs_as_a_module(counts: PageCounts, namespace: str, emulator_host: str) -> None:
    counts.increment("/")  # found only if the tool reads the namespace it is given
    environment = {
        **{k: v for k, v in os.environ.items() if k not in config.ENV_NAMES},
        "DATASTORE_EMULATOR_HOST": emulator_host,
        "GOOGLE_CLOUD_PROJECT": os.environ["GOOGLE_CLOUD_PROJECT"],
        "DATASTORE_NAMESPACE": namespace,
    }
    result = subprocess.run(
        [sys.executable, "-m", "scripts.admin", "list", "--json"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, json.loads(result.stdout)) == (0, [{"page": "/", "count": 1}])


# Changing a count while hits arrive: hits go through a real function server, the change
# through the tool's own code, as an owner would run them side by side.
HITS = 240
CHANGE_AFTER = 60
NEW_COUNT = 1_000_000


def hits_around(server: LiveServer, page: str, change: Callable[[], object]) -> tuple[list, object]:
    """POST HITS visits from 8 threads and make the change once CHANGE_AFTER are acknowledged."""
    acknowledged: list[int] = []
    lock = threading.Lock()
    enough = threading.Event()
    local = threading.local()

    def hit(_: int) -> None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        response = session.post(
            server.url, params={"page": page}, headers={"User-Agent": BROWSER}, timeout=30
        )
        assert response.status_code == 200, response.text
        with lock:
            acknowledged.append(response.json()["count"])
            if len(acknowledged) >= CHANGE_AFTER:
                enough.set()

    with ThreadPoolExecutor(max_workers=8) as pool:
        pending = [pool.submit(hit, n) for n in range(HITS)]
        assert enough.wait(60)
        result = change()
        for future in pending:
            future.result()
    return acknowledged, result


@pytest.fixture
def live(start_server: Callable[..., LiveServer], env: Callable[..., None], namespace: str):
    """Start a function server with COUNTER_SHARDS on the test's namespace; give it and counts
    with the same settings."""

    def start(shards: str) -> tuple[LiveServer, PageCounts]:
        server = start_server(
            f"{namespace}-{shards}", DATASTORE_NAMESPACE=namespace, COUNTER_SHARDS=shards
        )
        env(COUNTER_SHARDS=shards)
        return server, instance.build(config.settings()).counts

    return start


@pytest.mark.parametrize("shards", ["1", "4"])
def test_set_while_hits_arrive_keeps_every_acknowledged_hit(live, shards: str) -> None:
    server, counts = live(shards)
    page = "/hot"
    counts.increment(page)  # the page exists before the first hit
    numbers, result = hits_around(server, page, lambda: changes.set_count(counts, page, NEW_COUNT))

    before = result.previous - 1  # hits the set replaced, besides the first increment
    after = HITS - before
    # The set happened mid-stream, and every hit is on one side of it, none lost, none twice.
    assert 0 < before < HITS
    assert reads.list_pages(counts) == [(page, NEW_COUNT + after)]
    if shards == "1":
        # Each hit's own number says which side it fell on.
        assert sorted(numbers) == [
            *range(2, result.previous + 1),
            *range(NEW_COUNT + 1, NEW_COUNT + after + 1),
        ]
    # The history counts every visit, whatever the total was set to.
    recent = counts.read_days(page, 2).days
    assert sum(day.count for day in recent) == HITS + 1


@pytest.mark.parametrize("shards", ["1", "4"])
def test_delete_while_hits_arrive_ends_total_and_history_together(live, shards: str) -> None:
    server, counts = live(shards)
    page = "/gone"
    counts.increment(page)
    numbers, result = hits_around(server, page, lambda: changes.delete_page(counts, page))

    after = HITS + 1 - result.previous
    assert 0 < after < HITS
    assert reads.list_pages(counts) == [(page, after)]
    recent = counts.read_days(page, 2).days
    assert sum(day.count for day in recent) == after
    if shards == "1":
        assert sorted(numbers) == sorted([*range(2, result.previous + 1), *range(1, after + 1)])
