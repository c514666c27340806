"""Group commit alone, with an in-memory commit function: numbering, errors, bounded memory."""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from counter.batching import BatchFailed, GroupCommit
from counter.database import StoreUnavailable


class Pages:
    """An in-memory stand-in for the commit: adds n to a page after a short pause."""

    def __init__(self, pause: float = 0.005, error: Exception | None = None) -> None:
        self.values: Counter[str] = Counter()
        self.commits = 0
        self.pause = pause
        self.error = error
        self._lock = threading.Lock()

    def commit(self, page: str, n: int, deadline: float) -> int:
        time.sleep(self.pause)
        if self.error is not None:
            raise self.error
        with self._lock:
            self.commits += 1
            self.values[page] += n
            return self.values[page]


def in_a_second() -> float:
    return time.monotonic() + 1


def test_each_hit_gets_its_own_number_and_commits_are_shared() -> None:
    pages = Pages()
    group = GroupCommit(pages.commit)
    with ThreadPoolExecutor(max_workers=32) as pool:
        numbers = list(pool.map(lambda _: group.add_one("/", in_a_second()), range(400)))
    assert sorted(numbers) == list(range(1, 401))
    assert pages.commits < 400 // 4


def test_memory_is_bounded_by_requests_in_flight_not_by_distinct_pages() -> None:
    pages = Pages(pause=0)
    group = GroupCommit(pages.commit)
    peak = 0

    def hit(n: int) -> int:
        nonlocal peak
        number = group.add_one(f"/page/{n}", in_a_second())
        peak = max(peak, group.pages_in_flight)
        return number

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(hit, range(20_000))) == {1}
    assert peak <= 8
    assert group.pages_in_flight == 0


@pytest.mark.parametrize(
    ("error", "leader", "others"),
    [
        (ValueError("a bug"), ValueError, BatchFailed),
        (StoreUnavailable("database away"), StoreUnavailable, StoreUnavailable),
    ],
    ids=["fault", "unavailable"],
)
def test_a_failed_commit_fails_its_batch_with_the_failures_own_kind(
    error: Exception, leader: type[Exception], others: type[Exception]
) -> None:
    pages = Pages(pause=0.05, error=error)
    group = GroupCommit(pages.commit)
    start = threading.Barrier(6)

    def hit(_: int) -> type[Exception] | None:
        start.wait()
        try:
            group.add_one("/", in_a_second())
        except Exception as exc:  # the kind is what is checked
            return type(exc)
        return None

    with ThreadPoolExecutor(max_workers=6) as pool:
        kinds = Counter(pool.map(hit, range(6)))
    assert None not in kinds
    assert set(kinds) <= {leader, others}
    assert kinds[leader] >= 1
    assert group.pages_in_flight == 0


def test_a_hit_waiting_past_its_deadline_gives_up_as_unavailable() -> None:
    pages = Pages(pause=0.5)
    group = GroupCommit(pages.commit)
    first = threading.Thread(target=group.add_one, args=("/", in_a_second()))
    first.start()
    time.sleep(0.05)  # the first Commit is in flight
    with pytest.raises(StoreUnavailable):
        group.add_one("/", time.monotonic() + 0.1)
    first.join()
    assert pages.values["/"] == 1
    assert group.pages_in_flight == 0
