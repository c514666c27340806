"""Group commit: hits of one page that arrive while its Commit is in flight share the next one.

A page's batch grows while the previous Commit for that page is in flight; its first hit (the
leader) then commits the whole batch, adding its size n, and the Commit returns the new value V.
Its hits take the numbers V-n+1 … V, so each is still exact and its own. If the Commit fails,
every hit of the batch fails with it: none was acknowledged, so none is lost. With no other hit
in flight a hit commits at once, alone.

A page is tracked only while a Commit for it is in flight or waiting, so memory is bounded by the
number of requests in progress, however many distinct pages strangers ask for.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from counter.database import StoreUnavailable

CommitBatch = Callable[[str, int, float], int]
"""Add n to a page before a deadline and return the page's value after it: (page, n, deadline)."""


class BatchFailed(RuntimeError):
    """The Commit shared with other hits failed with an error that is not Datastore's absence."""


class _Batch:
    """Hits of one page waiting for the same Commit."""

    def __init__(self) -> None:
        self.size = 0
        self.value = 0
        self.error: Exception | None = None
        self.done = threading.Event()


class _Page:
    """A page with a Commit in flight or waiting: the batch now growing, and whether one is busy."""

    def __init__(self, lock: threading.Lock) -> None:
        self.open: _Batch | None = None
        self.busy = False
        self.idle = threading.Condition(lock)


class GroupCommit:
    """Concurrent hits on one page share Commits; one Commit per page is in flight at a time."""

    def __init__(self, commit: CommitBatch, *, exact: bool = True) -> None:
        """commit adds a batch; exact says its value can number each hit (not so with shards)."""
        self._commit = commit
        self._exact = exact
        self._lock = threading.Lock()
        self._pages: dict[str, _Page] = {}

    @property
    def pages_in_flight(self) -> int:
        """How many pages have a Commit in flight or waiting; zero when the instance is idle."""
        with self._lock:
            return len(self._pages)

    def add_one(self, page: str, deadline: float) -> int:
        """Count one hit on a page; return its own number (or, when not exact, the new value)."""
        with self._lock:
            state = self._pages.get(page)
            if state is None:
                state = self._pages[page] = _Page(self._lock)
            batch = state.open
            if batch is None:
                batch = state.open = _Batch()
            place = batch.size
            batch.size += 1
        if place == 0:
            self._lead(page, state, batch, deadline)
        elif not batch.done.wait(max(0.0, deadline - time.monotonic())):
            raise StoreUnavailable("Datastore did not answer within the deadline")
        if batch.error is not None:
            if place == 0:
                raise batch.error
            if isinstance(batch.error, StoreUnavailable):
                raise StoreUnavailable(str(batch.error)) from batch.error
            raise BatchFailed("the Commit this hit shared failed") from batch.error
        if not self._exact:
            return batch.value
        return batch.value - batch.size + 1 + place

    def _lead(self, page: str, state: _Page, batch: _Batch, deadline: float) -> None:
        """Wait for the page's Commit in flight, close the batch and commit it."""
        with self._lock:
            free = state.idle.wait_for(
                lambda: not state.busy, timeout=max(0.0, deadline - time.monotonic())
            )
            state.open = None  # closed: later hits open the next batch
            if free:
                state.busy = True
            else:
                batch.error = StoreUnavailable("Datastore did not answer within the deadline")
                self._forget_if_idle(page, state)
        if batch.error is None:
            try:
                batch.value = self._commit(page, batch.size, deadline)
            except Exception as exc:  # handed to every hit of the batch, each raises it
                batch.error = exc
            with self._lock:
                state.busy = False
                state.idle.notify()
                self._forget_if_idle(page, state)
        batch.done.set()

    def _forget_if_idle(self, page: str, state: _Page) -> None:
        """Drop a page's state once nothing is in flight or waiting for it (lock held)."""
        if not state.busy and state.open is None and self._pages.get(page) is state:
            del self._pages[page]
