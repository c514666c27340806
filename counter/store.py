"""Page counts in Datastore: the only module that talks to it.

A hit is one Commit whose mutation upserts the page's key with an empty property mask and a
server-side increment transform. The server adds one atomically and returns the new value, so
concurrent hits are never lost and each caller learns its own number, without a read first.
"""

from __future__ import annotations

import functools
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import google.auth
import grpc
from google.api_core import exceptions
from google.cloud import datastore_v1 as ds
from google.cloud.datastore_v1.services.datastore.transports import DatastoreGrpcTransport

from counter.config import ConfigError, Settings

KIND = "PageCount"
"""Entity kind holding one entity per page; the key name is the page path."""

COUNT = "count"
"""Integer property holding the page's count."""

IMPORTED_FROM = "imported_from"
"""Property recording which entity a page's count was imported from, so an import runs once."""

# Let a channel that lost its server reconnect within a second or two instead of gRPC's default
# backoff of up to two minutes, so the function comes back soon after the database does.
_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.keepalive_time_ms", 30_000),
)

# Failures after which the database may work again soon: the caller answers 503 with Retry-After.
_TRANSIENT = (
    exceptions.Aborted,
    exceptions.DeadlineExceeded,
    exceptions.ServiceUnavailable,
    exceptions.ResourceExhausted,
    exceptions.InternalServerError,
)

_T = TypeVar("_T")


@functools.cache
def for_settings(settings: Settings) -> CounterStore:
    """The one store (and so one client) of this process for these settings."""
    return CounterStore(settings)


class StoreUnavailable(Exception):
    """Datastore did not answer within the deadline or refused service for now."""


@dataclass(frozen=True)
class ImportResult:
    """Outcome of importing a count from another entity."""

    imported: int
    count: int
    already_done: bool


class CounterStore:
    """Counts per page, with one lazily created Datastore client shared by all threads."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._client: ds.DatastoreClient | None = None
        self._project: str | None = None

    def increment(self, page: str) -> int:
        """Add one visit to a page and return its new count, in one Commit."""
        mutation = ds.Mutation(
            upsert=ds.Entity(key=self.key(page)),
            # An empty mask updates no listed property, so the upsert keeps every other property
            # of an existing entity; without it the upsert would replace the whole entity.
            property_mask=ds.PropertyMask(paths=[]),
            property_transforms=[
                ds.PropertyTransform(property=COUNT, increment=ds.Value(integer_value=1))
            ],
        )
        request = ds.CommitRequest(
            project_id=self.project,
            database_id=self._settings.database,
            mode=ds.CommitRequest.Mode.NON_TRANSACTIONAL,
            mutations=[mutation],
        )
        # Only ABORTED is retried: it guarantees nothing was written. A timeout or a lost
        # connection leaves the outcome unknown, and retrying it could count the visit twice.
        response = self._call(self.client.commit, request, retry_unknown=False)
        return response.mutation_results[0].transform_results[0].integer_value

    def read(self, page: str) -> int:
        """Return a page's count without changing it (0 for a page never counted)."""
        request = ds.LookupRequest(
            project_id=self.project,
            database_id=self._settings.database,
            keys=[self.key(page)],
        )
        response = self._call(self.client.lookup, request, retry_unknown=True)
        return _count_of(response.found[0].entity) if response.found else 0

    def import_count(self, source: ds.Key, source_property: str, page: str) -> ImportResult:
        """Add another entity's integer property to a page's count, once, in a transaction."""
        for _attempt in range(5):
            try:
                return self._import_once(source, source_property, page)
            except exceptions.Aborted:
                continue  # contention with live hits; the transaction wrote nothing
        raise StoreUnavailable("import kept conflicting with live hits; try again")

    def key(self, page: str) -> ds.Key:
        """The Datastore key holding a page's count."""
        return self.key_for(KIND, page)

    def key_for(self, kind: str, name_or_id: str | int) -> ds.Key:
        """A key of this store's project, database and namespace."""
        element = (
            ds.Key.PathElement(kind=kind, id=name_or_id)
            if isinstance(name_or_id, int)
            else ds.Key.PathElement(kind=kind, name=name_or_id)
        )
        partition = ds.PartitionId(
            project_id=self.project,
            database_id=self._settings.database,
            namespace_id=self._settings.namespace,
        )
        return ds.Key(partition_id=partition, path=[element])

    @property
    def client(self) -> ds.DatastoreClient:
        """The GAPIC client, created on first use (after any fork) and reused by every thread."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = ds.DatastoreClient(transport=self._transport())
        return self._client

    @property
    def project(self) -> str:
        """The project whose Datastore holds the counts."""
        if self._project is None:
            project = self._settings.project
            if project is None and self._settings.emulator_host:
                raise ConfigError("GOOGLE_CLOUD_PROJECT must be set when using the emulator")
            if project is None:
                _credentials, project = google.auth.default()
            if not project:
                raise ConfigError("GOOGLE_CLOUD_PROJECT is not set and no default project found")
            self._project = project
        return self._project

    def _transport(self) -> DatastoreGrpcTransport:
        # The GAPIC layer (needed for transforms) does not read DATASTORE_EMULATOR_HOST the way
        # the high-level client does, so the emulator's plain-text channel is chosen here.
        if self._settings.emulator_host:
            channel = grpc.insecure_channel(self._settings.emulator_host, options=_CHANNEL_OPTIONS)
            return DatastoreGrpcTransport(channel=channel)
        return DatastoreGrpcTransport(channel=_secure_channel)

    def _import_once(self, source: ds.Key, source_property: str, page: str) -> ImportResult:
        client, project, database = self.client, self.project, self._settings.database
        txn = client.begin_transaction(
            request=ds.BeginTransactionRequest(project_id=project, database_id=database)
        ).transaction
        target = self.key(page)
        found = client.lookup(
            request=ds.LookupRequest(
                project_id=project,
                database_id=database,
                keys=[source, target],
                read_options=ds.ReadOptions(transaction=txn),
            )
        ).found
        entities = {_path(result.entity.key): result.entity for result in found}
        if _path(source) not in entities:
            client.rollback(request=ds.RollbackRequest(project_id=project, transaction=txn))
            raise LookupError(f"no entity {_describe(source)} to import from")
        old = entities[_path(source)].properties.get(source_property)
        if old is None or "integer_value" not in old:
            client.rollback(request=ds.RollbackRequest(project_id=project, transaction=txn))
            raise ValueError(f"{_describe(source)} has no integer property {source_property!r}")
        marker = _describe(source)
        current = entities.get(_path(target))
        done = current is not None and current.properties.get(IMPORTED_FROM) == _text(marker)
        if done:
            client.rollback(request=ds.RollbackRequest(project_id=project, transaction=txn))
            return ImportResult(imported=0, count=_count_of(current), already_done=True)
        mutation = ds.Mutation(
            upsert=ds.Entity(key=target, properties={IMPORTED_FROM: _text(marker)}),
            property_mask=ds.PropertyMask(paths=[IMPORTED_FROM]),
            property_transforms=[
                ds.PropertyTransform(
                    property=COUNT, increment=ds.Value(integer_value=old.integer_value)
                )
            ],
        )
        response = client.commit(
            request=ds.CommitRequest(
                project_id=project,
                database_id=database,
                mode=ds.CommitRequest.Mode.TRANSACTIONAL,
                transaction=txn,
                mutations=[mutation],
            )
        )
        count = response.mutation_results[0].transform_results[0].integer_value
        return ImportResult(imported=old.integer_value, count=count, already_done=False)

    def _call(self, method: Callable[..., _T], request: object, *, retry_unknown: bool) -> _T:
        """Run one RPC within the deadline, retrying only what cannot have been applied twice."""
        deadline = time.monotonic() + self._settings.deadline_seconds
        delay = 0.05
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StoreUnavailable("Datastore did not answer within the deadline")
            try:
                return method(request=request, timeout=remaining, retry=None)
            except exceptions.Aborted as exc:
                last: Exception = exc
            except (exceptions.ServiceUnavailable, exceptions.DeadlineExceeded) as exc:
                if not retry_unknown:
                    raise StoreUnavailable(str(exc)) from exc
                last = exc
            except _TRANSIENT as exc:
                raise StoreUnavailable(str(exc)) from exc
            if time.monotonic() + delay >= deadline:
                raise StoreUnavailable(str(last)) from last
            time.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, 1.0)


def _secure_channel(*args: object, options: list | None = None, **kwargs: object) -> grpc.Channel:
    """Google's default authenticated channel, plus this module's reconnect settings."""
    return DatastoreGrpcTransport.create_channel(
        *args, options=[*(options or []), *_CHANNEL_OPTIONS], **kwargs
    )


def _count_of(entity: ds.Entity) -> int:
    value = entity.properties.get(COUNT)
    return value.integer_value if value is not None else 0


def _text(value: str) -> ds.Value:
    return ds.Value(string_value=value)


def _path(key: ds.Key) -> tuple[tuple[str, str, int], ...]:
    return tuple((e.kind, e.name, e.id) for e in key.path)


def _describe(key: ds.Key) -> str:
    element = key.path[-1]
    return f"{element.kind}({element.name!r})" if element.name else f"{element.kind}({element.id})"
