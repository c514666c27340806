"""What one instance counts with: its Datastore client, page counts and unique visitors."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc

from counter.config import Settings
from counter.datastore import Database
from counter.page_counts import PageCounts
from counter.unique_visitors import UniqueVisitors


@dataclass(frozen=True)
class Store:
    """What the function counts with, built once per process and shared by its threads."""

    db: Database
    counts: PageCounts
    unique: UniqueVisitors


def build(
    settings: Settings,
    *,
    clock: Callable[[], float] = time.time,
    interceptors: Sequence[grpc.UnaryUnaryClientInterceptor] = (),
) -> Store:
    """A new store for these settings (tests pass a clock and count RPCs with an interceptor)."""
    db = Database(settings, interceptors=interceptors)
    counts = PageCounts(db, shards=settings.shards, history=settings.history, clock=clock)
    unique = UniqueVisitors(db, counts, window_seconds=settings.unique_window_seconds, clock=clock)
    return Store(db, counts, unique)


@functools.cache
def for_settings(settings: Settings) -> Store:
    """The one store (and so one client) of this process for these settings."""
    return build(settings)
