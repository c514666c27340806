"""Count Datastore RPCs with a gRPC client interceptor, one shared counter file per process.

`install()` wraps `grpc.insecure_channel` and `grpc.secure_channel` so that every channel made
afterwards, by the product or by google-cloud-datastore, passes each call through
`CountingInterceptor`. The counts live in a small memory-mapped file per process (gunicorn's
worker is forked after the app loads, so the file is opened lazily in whichever process calls),
and `read_counts()` adds up a directory of them from outside, at any moment.
"""

from __future__ import annotations

import mmap
import os
import struct
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

CHANNELS = "channels opened"
"""Not an RPC: counted so that a client made per request instead of reused would show."""

METHODS = (
    "Commit",
    "Lookup",
    "BeginTransaction",
    "Rollback",
    "RunQuery",
    "RunAggregationQuery",
    "AllocateIds",
    "ReserveIds",
    "other",
    CHANNELS,
)
"""Datastore's unary methods, one slot for any other method, and one for channels opened."""

_SLOT = struct.Struct("<q")
_SIZE = _SLOT.size * len(METHODS) * 2  # per method: calls, then calls that did not end OK


class _CounterFile:
    """This process's counts in a file that another process can read while they change."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._lock = threading.Lock()
        self._pid = -1
        self._map: mmap.mmap | None = None

    def add(self, method: str, *, failed: bool) -> None:
        """Add one call of a method (or one failure of it)."""
        index = METHODS.index(method) if method in METHODS else METHODS.index("other")
        offset = _SLOT.size * (2 * index + failed)
        with self._lock:
            counts = self._mapped()
            (value,) = _SLOT.unpack_from(counts, offset)
            _SLOT.pack_into(counts, offset, value + 1)

    def _mapped(self) -> mmap.mmap:
        # A forked child inherits the parent's map: give it a file of its own instead.
        if self._map is None or self._pid != os.getpid():
            path = self._directory / f"rpc-{os.getpid()}.bin"
            with path.open("wb+") as file:
                file.write(bytes(_SIZE))
                file.flush()
                self._map = mmap.mmap(file.fileno(), _SIZE)
            self._pid = os.getpid()
        return self._map


class CountingInterceptor(grpc.UnaryUnaryClientInterceptor):
    """Counts every unary call by method name, and those that did not end with OK."""

    def __init__(self, record: Callable[..., None]) -> None:
        self._record = record

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        """Count the call, make it, and count it again as failed if it did not end with OK."""
        method = client_call_details.method.rsplit("/", 1)[-1]
        self._record(method, failed=False)
        outcome = continuation(client_call_details, request)
        outcome.add_done_callback(lambda call: self._done(method, call))
        return outcome

    def _done(self, method: str, call: Any) -> None:
        if call.code() != grpc.StatusCode.OK:
            self._record(method, failed=True)


def install(directory: Path) -> None:
    """Count the RPCs of every gRPC channel this process (or a child it forks) makes from now."""
    directory.mkdir(parents=True, exist_ok=True)
    counts = _CounterFile(directory)
    interceptor = CountingInterceptor(counts.add)
    for name in ("insecure_channel", "secure_channel"):
        original = getattr(grpc, name)

        def counted(*args: Any, _original: Any = original, **kwargs: Any) -> grpc.Channel:
            counts.add(CHANNELS, failed=False)
            return grpc.intercept_channel(_original(*args, **kwargs), interceptor)

        setattr(grpc, name, counted)
    # google-cloud-datastore binds `from grpc import insecure_channel` at import time.
    gapic = sys.modules.get("google.cloud.datastore._gapic")
    if gapic is not None:
        gapic.insecure_channel = grpc.insecure_channel  # type: ignore[attr-defined]


def read_counts(directory: Path) -> Counter[str]:
    """Calls per method, and per "<method> failed", summed over the directory's processes."""
    total: Counter[str] = Counter()
    for path in directory.glob("rpc-*.bin"):
        data = path.read_bytes()
        if len(data) != _SIZE:
            continue
        for index, method in enumerate(METHODS):
            total[method] += _SLOT.unpack_from(data, _SLOT.size * 2 * index)[0]
            total[f"{method} failed"] += _SLOT.unpack_from(data, _SLOT.size * (2 * index + 1))[0]
    return +total
