"""The one retry rule, with failures injected at the channel in front of the emulator: ABORTED
is tried again, a lost answer only for a call whose repetition changes nothing."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from google.api_core import exceptions

from conftest import RpcCounter
from counter import config, instance
from counter.datastore import StoreUnavailable
from counter.page_counts import PageCounts


class Injected(grpc.RpcError, grpc.Call):
    """A failure the channel reports without the call reaching the database.

    Like grpc's own failed calls it is also the call's outcome: an outer interceptor (the
    library's) asks it for its result, which raises it.
    """

    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return f"injected {self._code.name}"

    def result(self, timeout: float | None = None) -> None:
        raise self

    def trailing_metadata(self) -> tuple:
        return ()

    def initial_metadata(self) -> tuple:
        return ()


class FailFirst(RpcCounter):
    """Fails the first calls of one method with the given codes, then lets calls through;
    `calls` lists only those that reached the database."""

    def __init__(self, method: str, *codes: grpc.StatusCode) -> None:
        super().__init__()
        self.method = method
        self.failures = list(codes)

    def intercept_unary_unary(self, continuation, client_call_details, request):
        if client_call_details.method.endswith(f"/{self.method}") and self.failures:
            raise Injected(self.failures.pop(0))
        return super().intercept_unary_unary(continuation, client_call_details, request)


@pytest.fixture
def counts_failing(env: Callable[..., None]) -> Callable[..., tuple[PageCounts, FailFirst]]:
    """Page counts whose channel fails the first calls of one method."""
    env()

    def make(method: str, *codes: grpc.StatusCode) -> tuple[PageCounts, FailFirst]:
        failing = FailFirst(method, *codes)
        return instance.build(config.settings(), interceptors=(failing,)).counts, failing

    return make


def test_an_aborted_increment_is_tried_again_and_counted_once(counts_failing, page: str) -> None:
    counts, failing = counts_failing("Commit", grpc.StatusCode.ABORTED, grpc.StatusCode.ABORTED)

    assert counts.increment(page) == 1
    assert failing.calls == ["Commit"]  # the third attempt, the only one that reached Datastore
    assert counts.read(page) == 1


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED])
def test_an_increment_whose_answer_was_lost_is_not_tried_again(
    counts_failing, page: str, code: grpc.StatusCode
) -> None:
    counts, failing = counts_failing("Commit", code)

    with pytest.raises(StoreUnavailable, match=code.name):
        counts.increment(page)
    assert failing.calls == []
    assert counts.read(page) == 0


def test_a_read_whose_answer_was_lost_is_tried_again(counts_failing, page: str) -> None:
    counts, failing = counts_failing("Lookup", grpc.StatusCode.UNAVAILABLE)
    counts.increment(page)

    assert counts.read(page) == 1
    assert failing.calls == ["Commit", "Lookup"]


def test_a_refusal_is_a_fault_not_a_reason_to_wait(counts_failing, page: str) -> None:
    counts, failing = counts_failing("Commit", grpc.StatusCode.PERMISSION_DENIED)

    with pytest.raises(exceptions.PermissionDenied, match="injected PERMISSION_DENIED") as raised:
        counts.increment(page)
    assert raised.value.grpc_status_code == grpc.StatusCode.PERMISSION_DENIED
    assert failing.calls == []


def test_aborts_past_the_deadline_give_up_as_unavailable(
    counts_failing, page: str, env: Callable[..., None]
) -> None:
    env(DATASTORE_DEADLINE_SECONDS="0.3")
    counts, failing = counts_failing("Commit", *[grpc.StatusCode.ABORTED] * 1000)

    with pytest.raises(StoreUnavailable, match="no answer within the deadline"):
        counts.increment(page)
    assert failing.calls == []
    assert len(failing.failures) < 1000 - 2  # it did try again before giving up
