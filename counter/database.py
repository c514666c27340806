"""The Datastore client of one process: keys, a deadline on every call, and the one retry rule.

The counter speaks to Datastore through the library's GAPIC layer (`google.cloud.datastore_v1`),
because only it exposes property transforms; this module is the only one that makes RPCs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import google.auth
import grpc
from google.api_core import exceptions
from google.api_core import retry as retries
from google.cloud import datastore_v1 as ds
from google.cloud.datastore_v1.services.datastore.transports import DatastoreGrpcTransport

from counter.config import ConfigError, Settings

KeyPath = tuple[tuple[str, str, int], ...]
"""A key's path as a hashable value, to find a Lookup's results by key."""

# Let a channel that lost its server reconnect within a second or two instead of gRPC's default
# backoff of up to two minutes, so the function comes back soon after the database does.
_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.keepalive_time_ms", 30_000),
)

# Failures after which the database may answer again soon: the caller answers 503 with
# Retry-After. Any other error (a refused permission, a malformed request) is a fault.
_TRANSIENT = (
    exceptions.DeadlineExceeded,
    exceptions.ServiceUnavailable,
    exceptions.ResourceExhausted,
    exceptions.InternalServerError,
)

# ABORTED means nothing was written, so any request may be tried again. A lost answer
# (UNAVAILABLE, DEADLINE_EXCEEDED) leaves the outcome unknown: only a request whose repetition
# has no effect (a read, an insert that would fail the second time) may be tried again.
_RETRY_WRITE = retries.if_exception_type(exceptions.Aborted)
_RETRY_IDEMPOTENT = retries.if_exception_type(
    exceptions.Aborted, exceptions.ServiceUnavailable, exceptions.DeadlineExceeded
)

_LOOKUP_LIMIT = 1000
"""Most keys Datastore takes in one Lookup."""

_T = TypeVar("_T")


class StoreUnavailable(Exception):
    """Datastore did not answer within the deadline or refused service for now."""


class Database:
    """One lazily created GAPIC client per process, shared by its threads, with its project."""

    def __init__(
        self,
        settings: Settings,
        *,
        interceptors: Sequence[grpc.UnaryUnaryClientInterceptor] = (),
    ) -> None:
        self.settings = settings
        self._interceptors = tuple(interceptors)
        self._lock = threading.Lock()
        self._client: ds.DatastoreClient | None = None
        self._project: str | None = None

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
            project = self.settings.project
            if project is None and self.settings.emulator_host:
                raise ConfigError("GOOGLE_CLOUD_PROJECT must be set when using the emulator")
            if project is None:
                _credentials, project = google.auth.default()
            if not project:
                raise ConfigError("GOOGLE_CLOUD_PROJECT is not set and no default project found")
            self._project = project
        return self._project

    def key(self, kind: str, name_or_id: str | int, *, parent: ds.Key | None = None) -> ds.Key:
        """A key of this project, database and namespace, under a parent key if given."""
        element = (
            ds.Key.PathElement(kind=kind, id=name_or_id)
            if isinstance(name_or_id, int)
            else ds.Key.PathElement(kind=kind, name=name_or_id)
        )
        path = [*parent.path, element] if parent is not None else [element]
        return ds.Key(partition_id=self._partition(), path=path)

    def deadline(self) -> float:
        """The monotonic time by which a request's Datastore work must be done."""
        return time.monotonic() + self.settings.deadline_seconds

    def commit(
        self,
        mutations: Sequence[ds.Mutation],
        *,
        deadline: float,
        atomic: bool = False,
        idempotent: bool = False,
        transaction: bytes = b"",
    ) -> ds.CommitResponse:
        """Apply mutations in one Commit: atomically (a single-use transaction) if asked.

        idempotent says that repeating the request changes nothing (for example an insert, which
        fails the second time), so a lost answer may be retried. A commit inside a transaction
        is never retried here, and its ABORTED reaches the caller, which retries the whole
        transaction.
        """
        request = ds.CommitRequest(
            project_id=self.project,
            database_id=self.settings.database,
            mode=ds.CommitRequest.Mode.TRANSACTIONAL
            if atomic or transaction
            else ds.CommitRequest.Mode.NON_TRANSACTIONAL,
            mutations=list(mutations),
        )
        if transaction:
            request.transaction = transaction
        elif atomic:
            # Begun and committed by this one request: atomic, and no BeginTransaction RPC.
            request.single_use_transaction = ds.TransactionOptions(
                read_write=ds.TransactionOptions.ReadWrite()
            )
        retry_if = None if transaction else _RETRY_IDEMPOTENT if idempotent else _RETRY_WRITE
        return self._call(self.client.commit, request, deadline=deadline, retry_if=retry_if)

    def lookup(
        self, keys: Sequence[ds.Key], *, deadline: float, transaction: bytes = b""
    ) -> dict[KeyPath, ds.Entity]:
        """The entities found for these keys, by key path; missing keys are absent.

        One Lookup for up to 1,000 keys. Datastore takes no more in one request, and may defer
        some keys of a large one: those are asked for again, within the same deadline.
        """
        found: dict[KeyPath, ds.Entity] = {}
        pending = list(keys)
        while pending:
            request = ds.LookupRequest(
                project_id=self.project,
                database_id=self.settings.database,
                keys=pending[:_LOOKUP_LIMIT],
            )
            if transaction:
                request.read_options = ds.ReadOptions(transaction=transaction)
            response = self._call(
                self.client.lookup, request, deadline=deadline, retry_if=_RETRY_IDEMPOTENT
            )
            found.update((path_of(result.entity.key), result.entity) for result in response.found)
            pending = [*response.deferred, *pending[_LOOKUP_LIMIT:]]
        return found

    def query(
        self,
        kind: str,
        *,
        ancestor: ds.Key | None = None,
        start: ds.Key | None = None,
        end: ds.Key | None = None,
        keys_only: bool = False,
        transaction: bytes = b"",
        batch_size: int | None = None,
    ) -> Iterator[ds.Entity]:
        """Every entity of a kind in key order, under an ancestor and from start to before end.

        Runs RunQuery batch after batch, each from the last one's cursor and with a deadline of
        its own, so a long listing is bounded per request rather than in total. keys_only
        returns entities without properties.
        """
        filters = []
        if ancestor is not None:
            filters.append(_key_filter(ds.PropertyFilter.Operator.HAS_ANCESTOR, ancestor))
        if start is not None:
            filters.append(_key_filter(ds.PropertyFilter.Operator.GREATER_THAN_OR_EQUAL, start))
        if end is not None:
            filters.append(_key_filter(ds.PropertyFilter.Operator.LESS_THAN, end))
        query = ds.Query(kind=[ds.KindExpression(name=kind)])
        if len(filters) == 1:
            query.filter = filters[0]
        elif filters:
            query.filter = ds.Filter(
                composite_filter=ds.CompositeFilter(
                    op=ds.CompositeFilter.Operator.AND, filters=filters
                )
            )
        if keys_only:
            query.projection = [ds.Projection(property=ds.PropertyReference(name="__key__"))]
        if batch_size is not None:
            query.limit = batch_size
        request = ds.RunQueryRequest(
            project_id=self.project,
            database_id=self.settings.database,
            partition_id=self._partition(),
            query=query,
        )
        if transaction:
            request.read_options = ds.ReadOptions(transaction=transaction)
        while True:
            response = self._call(
                self.client.run_query,
                request,
                deadline=self.deadline(),
                retry_if=_RETRY_IDEMPOTENT,
            )
            batch = response.batch
            yield from (result.entity for result in batch.entity_results)
            done = batch.more_results == ds.QueryResultBatch.MoreResultsType.NO_MORE_RESULTS
            if done or batch.end_cursor == request.query.start_cursor:
                return
            request.query.start_cursor = batch.end_cursor

    def begin(self, *, deadline: float) -> bytes:
        """Begin a read-write transaction and return its id."""
        request = ds.BeginTransactionRequest(
            project_id=self.project, database_id=self.settings.database
        )
        response = self._call(
            self.client.begin_transaction, request, deadline=deadline, retry_if=_RETRY_IDEMPOTENT
        )
        return response.transaction

    def rollback(self, transaction: bytes, *, deadline: float) -> None:
        """Abandon a transaction, releasing what it holds."""
        request = ds.RollbackRequest(
            project_id=self.project, database_id=self.settings.database, transaction=transaction
        )
        self._call(self.client.rollback, request, deadline=deadline, retry_if=_RETRY_IDEMPOTENT)

    def _call(
        self,
        method: Callable[..., _T],
        request: object,
        *,
        deadline: float,
        retry_if: Callable[[Exception], bool] | None,
    ) -> _T:
        """Run one RPC before the deadline, retrying what retry_if accepts.

        google.api_core's Retry runs the loop, but each attempt gets the time left before the
        request's deadline from here: the GAPIC timeout would restart the full timeout for an
        attempt begun with less than a second left, overrunning the deadline.
        """

        def attempt() -> _T:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StoreUnavailable("Datastore did not answer within the deadline")
            return method(request=request, timeout=remaining, retry=None)

        try:
            if retry_if is None:
                return attempt()
            retry = retries.Retry(
                predicate=retry_if,
                initial=0.05,
                maximum=1.0,
                multiplier=2.0,
                timeout=max(0.0, deadline - time.monotonic()),
            )
            return retry(attempt)()
        except exceptions.RetryError as exc:
            raise StoreUnavailable(f"no answer within the deadline: {exc.cause}") from exc
        except _TRANSIENT as exc:
            raise StoreUnavailable(str(exc)) from exc

    def _partition(self) -> ds.PartitionId:
        return ds.PartitionId(
            project_id=self.project,
            database_id=self.settings.database,
            namespace_id=self.settings.namespace,
        )

    def _transport(self) -> DatastoreGrpcTransport:
        # The GAPIC layer does not read DATASTORE_EMULATOR_HOST the way the high-level client
        # does, so the emulator's plain-text channel is chosen here.
        if self.settings.emulator_host:
            channel = grpc.insecure_channel(self.settings.emulator_host, options=_CHANNEL_OPTIONS)
            return DatastoreGrpcTransport(channel=self._intercepted(channel))
        return DatastoreGrpcTransport(
            channel=lambda *args, **kwargs: self._intercepted(_secure_channel(*args, **kwargs))
        )

    def _intercepted(self, channel: grpc.Channel) -> grpc.Channel:
        if not self._interceptors:
            return channel
        return grpc.intercept_channel(channel, *self._interceptors)


def path_of(key: ds.Key) -> KeyPath:
    """A key's path as a hashable value."""
    return tuple((element.kind, element.name, element.id) for element in key.path)


def _key_filter(operator: ds.PropertyFilter.Operator, key: ds.Key) -> ds.Filter:
    return ds.Filter(
        property_filter=ds.PropertyFilter(
            property=ds.PropertyReference(name="__key__"),
            op=operator,
            value=ds.Value(key_value=key),
        )
    )


def _secure_channel(*args: object, options: list | None = None, **kwargs: object) -> grpc.Channel:
    """Google's default authenticated channel, plus this module's reconnect settings."""
    return DatastoreGrpcTransport.create_channel(
        *args, options=[*(options or []), *_CHANNEL_OPTIONS], **kwargs
    )
