"""Page counts in Datastore: the only module that talks to it.

A hit is one Commit whose mutation upserts the page's key with an empty property mask and a
server-side increment transform. The server adds one atomically and returns the new value, so
concurrent hits are never lost and each caller learns its own number, without a read first.
"""

from __future__ import annotations

import datetime
import functools
import random
import secrets
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

MARKER_KIND = "VisitMarker"
"""Kind of the short-lived markers of recent visitors; the key name is a keyed hash."""

SALT_KIND = "VisitorSalt"
"""Kind of the daily random salts of the visitor hash; the key name is the UTC date."""

EXPIRE_AT = "expire_at"
"""Timestamp after which a marker or salt is void; a TTL policy on it deletes the entity."""

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


class _Batch:
    """Hits of one page waiting for the same Commit."""

    def __init__(self) -> None:
        self.size = 0
        self.total = 0
        self.error: Exception | None = None
        self.done = threading.Event()


@dataclass(frozen=True)
class Visit:
    """A page's count after a visit, and whether this visit was the one counted."""

    count: int
    counted: bool


@dataclass(frozen=True)
class ImportResult:
    """Outcome of importing a count from another entity."""

    imported: int
    count: int
    already_done: bool


class CounterStore:
    """Counts per page, with one lazily created Datastore client shared by all threads."""

    def __init__(
        self,
        settings: Settings,
        clock: Callable[[], float] = time.time,
        interceptors: tuple[grpc.UnaryUnaryClientInterceptor, ...] = (),
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._interceptors = interceptors
        self._lock = threading.Lock()
        self._client: ds.DatastoreClient | None = None
        self._project: str | None = None
        self._salt: tuple[str, bytes] | None = None
        self._batches: dict[str, _Batch] = {}
        self._page_locks: dict[str, threading.Lock] = {}

    def increment(self, page: str) -> int:
        """Add one visit to a page and return its new count, in one Commit."""
        if self._settings.coalesce:
            return self._increment_coalesced(page)
        return self._add(page, 1, self._deadline())

    def _add(self, page: str, by: int, deadline: float) -> int:
        request = self._commit_request([self._increment(page, by)], transactional=False)
        # Only ABORTED is retried: it guarantees nothing was written. A timeout or a lost
        # connection leaves the outcome unknown, and retrying it could count the visit twice.
        response = self._call(self.client.commit, request, False, deadline)
        return self._total(
            page, response.mutation_results[0].transform_results[0].integer_value, deadline
        )

    def _increment_coalesced(self, page: str) -> int:
        """Group commit: hits that arrive while a page's Commit is in flight share the next one.

        The batch's Commit adds its size, n, and returns the new value V; its hits take the
        numbers V-n+1 … V, so each is still exact and its own. If the Commit fails, every hit
        in the batch fails with it: none was acknowledged, so none is lost. With no other hit
        in flight a hit commits at once, alone.
        """
        deadline = self._deadline()
        with self._lock:
            batch = self._batches.get(page)
            leader = batch is None
            if batch is None:
                batch = self._batches[page] = _Batch()
                page_lock = self._page_locks.setdefault(page, threading.Lock())
            place = batch.size
            batch.size += 1
        if leader:
            self._commit_batch(page, batch, page_lock, deadline)
        elif not batch.done.wait(max(0.0, deadline - time.monotonic())):
            raise StoreUnavailable("Datastore did not answer within the deadline")
        if batch.error is not None:
            raise StoreUnavailable(str(batch.error)) from batch.error
        if self._settings.shards > 1:
            return batch.total
        return batch.total - batch.size + 1 + place

    def _commit_batch(
        self, page: str, batch: _Batch, page_lock: threading.Lock, deadline: float
    ) -> None:
        # One Commit per page at a time: while the previous one is in flight, this batch grows.
        acquired = page_lock.acquire(timeout=max(0.0, deadline - time.monotonic()))
        try:
            with self._lock:
                del self._batches[page]  # closed: later hits open the next batch
            if not acquired:
                raise StoreUnavailable("Datastore did not answer within the deadline")
            batch.total = self._add(page, batch.size, deadline)
        except Exception as exc:  # handed to every hit of the batch, each raises it
            batch.error = exc
        finally:
            if acquired:
                page_lock.release()
            batch.done.set()

    def count_first_visit(self, page: str, visitor: str, window_seconds: int) -> Visit:
        """Count a visitor once per page per window; a repeat visit only reads the count.

        A new visitor costs one Commit: the marker insert and the increment in one single-use
        transaction. A repeat's insert fails with ALREADY_EXISTS and writes nothing; a Lookup
        then gives the count. No read-write transaction is used, so concurrent visits never
        wait on each other's locks.
        """
        deadline = self._deadline()
        marker_key = self.key_for(MARKER_KIND, visitor)
        while True:
            now = self._clock()
            marker = ds.Entity(
                key=marker_key, properties={EXPIRE_AT: _timestamp(now + window_seconds)}
            )
            counted = self._count_with([ds.Mutation(insert=marker)], page, deadline)
            if counted is not None:
                return Visit(self._total(page, counted, deadline), True)
            shard_keys = self.shard_keys(page)
            found = self._lookup([marker_key, *shard_keys], deadline)
            current = found.get(_path(marker_key))
            if current is None:
                continue  # TTL deleted the marker just now: insert it afresh
            expiry = current.properties[EXPIRE_AT].timestamp_value
            if expiry.timestamp() > now:
                return Visit(sum(_count_of(found.get(_path(k))) for k in shard_keys), False)
            # Expired, but TTL has not deleted it yet. Renew it together with a token named
            # after the expired generation: of several concurrent returning visits, exactly
            # one can insert that token, so exactly one counts.
            token = ds.Entity(
                key=self.key_for(MARKER_KIND, f"{visitor}@{expiry.isoformat()}"),
                properties={EXPIRE_AT: _timestamp(now + window_seconds)},
            )
            renew = [ds.Mutation(insert=token), ds.Mutation(upsert=marker)]
            counted = self._count_with(renew, page, deadline)
            if counted is not None:
                return Visit(self._total(page, counted, deadline), True)
            return Visit(self._lookup_count(page, deadline), False)

    def _count_with(self, mutations: list[ds.Mutation], page: str, deadline: float) -> int | None:
        """Apply mutations and one increment atomically; None if an insert found its key taken."""
        request = self._commit_request([*mutations, self._increment(page)], transactional=True)
        try:
            response = self._call(self.client.commit, request, False, deadline)
        except exceptions.AlreadyExists:
            return None
        return response.mutation_results[-1].transform_results[0].integer_value

    def daily_salt(self) -> bytes:
        """Today's random salt (UTC), the same on every instance; made by the first to need it."""
        now = self._clock()
        day = time.strftime("%Y-%m-%d", time.gmtime(now))
        cached = self._salt
        if cached is not None and cached[0] == day:
            return cached[1]
        key = self.key_for(SALT_KIND, day)
        fresh = secrets.token_bytes(32)
        # Kept a day past its own, then TTL deletes it: old visitor hashes become unlinkable.
        expires = _timestamp(_next_midnight(now) + 86_400)
        entity = ds.Entity(
            key=key,
            properties={
                "salt": ds.Value(blob_value=fresh, exclude_from_indexes=True),
                EXPIRE_AT: expires,
            },
        )
        request = self._commit_request([ds.Mutation(insert=entity)], transactional=False)
        try:
            # Safe to retry: a repeated insert cannot overwrite, it fails with ALREADY_EXISTS.
            self._call(self.client.commit, request, retry_unknown=True)
            salt = fresh
        except exceptions.AlreadyExists:
            stored = self._lookup([key], self._deadline())[_path(key)]
            salt = stored.properties["salt"].blob_value
        self._salt = (day, salt)
        return salt

    def read(self, page: str) -> int:
        """Return a page's count without changing it (0 for a page never counted)."""
        return self._lookup_count(page, self._deadline())

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

    def shard_keys(self, page: str) -> list[ds.Key]:
        """The page's entity, then its extra shards (a path never holds '#', so none collide)."""
        return [self.key(page)] + [
            self.key(f"{page}#{shard}") for shard in range(1, self._settings.shards)
        ]

    def _total(self, page: str, value: int, deadline: float | None = None) -> int:
        """The page's count after an increment: the value itself, or with shards a fresh sum."""
        if self._settings.shards == 1:
            return value
        return self._lookup_count(page, deadline or self._deadline())

    def _increment(self, page: str, by: int = 1, *, sharded: bool = True) -> ds.Mutation:
        shard = random.randrange(self._settings.shards) if sharded else 0
        key = self.key(page) if shard == 0 else self.key(f"{page}#{shard}")
        return ds.Mutation(
            upsert=ds.Entity(key=key),
            # An empty mask updates no listed property, so the upsert keeps every other property
            # of an existing entity; without it the upsert would replace the whole entity.
            property_mask=ds.PropertyMask(paths=[]),
            property_transforms=[
                ds.PropertyTransform(property=COUNT, increment=ds.Value(integer_value=by))
            ],
        )

    def _commit_request(
        self, mutations: list[ds.Mutation], *, transactional: bool, transaction: bytes = b""
    ) -> ds.CommitRequest:
        request = ds.CommitRequest(
            project_id=self.project,
            database_id=self._settings.database,
            mode=ds.CommitRequest.Mode.TRANSACTIONAL
            if transactional
            else ds.CommitRequest.Mode.NON_TRANSACTIONAL,
            mutations=mutations,
        )
        if transaction:
            request.transaction = transaction
        elif transactional:
            # Begun and committed by this one request: atomic, and no BeginTransaction RPC.
            request.single_use_transaction = ds.TransactionOptions(
                read_write=ds.TransactionOptions.ReadWrite()
            )
        return request

    def _lookup_count(self, page: str, deadline: float) -> int:
        keys = self.shard_keys(page)
        found = self._lookup(keys, deadline)
        return sum(_count_of(found.get(_path(key))) for key in keys)

    def _lookup(
        self, keys: list[ds.Key], deadline: float, transaction: bytes = b""
    ) -> dict[tuple, ds.Entity]:
        request = ds.LookupRequest(
            project_id=self.project, database_id=self._settings.database, keys=keys
        )
        if transaction:
            request.read_options = ds.ReadOptions(transaction=transaction)
        response = self._call(self.client.lookup, request, True, deadline)
        return {_path(result.entity.key): result.entity for result in response.found}

    def _deadline(self) -> float:
        return time.monotonic() + self._settings.deadline_seconds

    def _transport(self) -> DatastoreGrpcTransport:
        # The GAPIC layer (needed for transforms) does not read DATASTORE_EMULATOR_HOST the way
        # the high-level client does, so the emulator's plain-text channel is chosen here.
        if self._settings.emulator_host:
            channel = grpc.insecure_channel(self._settings.emulator_host, options=_CHANNEL_OPTIONS)
            return DatastoreGrpcTransport(channel=self._intercepted(channel))
        return DatastoreGrpcTransport(
            channel=lambda *args, **kwargs: self._intercepted(_secure_channel(*args, **kwargs))
        )

    def _intercepted(self, channel: grpc.Channel) -> grpc.Channel:
        return (
            grpc.intercept_channel(channel, *self._interceptors) if self._interceptors else channel
        )

    def _import_once(self, source: ds.Key, source_property: str, page: str) -> ImportResult:
        deadline = self._deadline()
        begin = ds.BeginTransactionRequest(
            project_id=self.project, database_id=self._settings.database
        )
        txn = self._call(self.client.begin_transaction, begin, True, deadline).transaction
        target = self.key(page)
        found = self._lookup([source, target], deadline, txn)
        old = found.get(_path(source))
        current = found.get(_path(target))
        marker = _describe(source)
        problem = None
        if old is None:
            problem = LookupError(f"no entity {marker} to import from")
        elif "integer_value" not in old.properties.get(source_property, ds.Value()):
            problem = ValueError(f"{marker} has no integer property {source_property!r}")
        if problem is not None or (
            current is not None and current.properties.get(IMPORTED_FROM) == _text(marker)
        ):
            rollback = ds.RollbackRequest(
                project_id=self.project, database_id=self._settings.database, transaction=txn
            )
            self._call(self.client.rollback, rollback, True, deadline)
            if problem is not None:
                raise problem
            return ImportResult(imported=0, count=self.read(page), already_done=True)
        amount = old.properties[source_property].integer_value
        mutation = self._increment(page, by=amount, sharded=False)
        mutation.upsert.properties[IMPORTED_FROM] = _text(marker)
        mutation.property_mask = ds.PropertyMask(paths=[IMPORTED_FROM])
        request = self._commit_request([mutation], transactional=True, transaction=txn)
        # Not retried here on a lost answer: import_count() retries only ABORTED, which wrote
        # nothing, so the old count is never added twice.
        response = self.client.commit(request=request, timeout=deadline - time.monotonic())
        count = response.mutation_results[0].transform_results[0].integer_value
        return ImportResult(imported=amount, count=count, already_done=False)

    def _call(
        self,
        method: Callable[..., _T],
        request: object,
        retry_unknown: bool,
        deadline: float | None = None,
    ) -> _T:
        """Run one RPC before the deadline, retrying only what cannot have been applied twice."""
        deadline = deadline or self._deadline()
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


def _count_of(entity: ds.Entity | None) -> int:
    value = entity.properties.get(COUNT) if entity is not None else None
    return value.integer_value if value is not None else 0


def _timestamp(seconds: float) -> ds.Value:
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return ds.Value(timestamp_value=moment, exclude_from_indexes=True)


def _next_midnight(seconds: float) -> float:
    return (seconds // 86_400 + 1) * 86_400


def _text(value: str) -> ds.Value:
    return ds.Value(string_value=value)


def _path(key: ds.Key) -> tuple[tuple[str, str, int], ...]:
    return tuple((e.kind, e.name, e.id) for e in key.path)


def _describe(key: ds.Key) -> str:
    element = key.path[-1]
    return f"{element.kind}({element.name!r})" if element.name else f"{element.kind}({element.id})"
