"""The Datastore client of one process: keys, a deadline on every call, and the one retry rule.

The counter talks to Datastore through google-cloud-datastore's GAPIC client (`datastore_v1`),
the layer whose Commit returns an increment transform's result. Its tokens are google-auth's
Application Default Credentials (on Google, the metadata server's), its retries are
google.api_core's. This module is the only one that makes RPCs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import google.auth
import grpc
from google.api_core import exceptions
from google.api_core import retry as retries
from google.auth import exceptions as auth_exceptions
from google.cloud.datastore_v1 import types
from google.cloud.datastore_v1.services.datastore import DatastoreClient
from google.cloud.datastore_v1.services.datastore.transports import DatastoreGrpcTransport

from counter import messages as ds
from counter.config import ConfigError, Settings

KeyPath = tuple[tuple[str, str, int], ...]
"""A key's path as a hashable value, to find a Lookup's results by key."""

SCOPES = ("https://www.googleapis.com/auth/datastore",)

_CHANNEL_OPTIONS = (
    # Let a channel that lost its server reconnect within a second or two instead of gRPC's
    # default backoff of up to two minutes, so the function comes back soon after the database.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.keepalive_time_ms", 30_000),
    # As the library's own channel: a Lookup of many keys may answer more than 4 MiB.
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
)

# Failures after which the database may answer again soon: the caller answers 503 with
# Retry-After. Any other error (a refused permission, a malformed request) is a fault.
_TRANSIENT = (
    exceptions.DeadlineExceeded,
    exceptions.ServiceUnavailable,
    exceptions.TooManyRequests,  # RESOURCE_EXHAUSTED
    exceptions.InternalServerError,
)

# ABORTED means nothing was written, so any request may be tried again. A lost answer
# (UNAVAILABLE, DEADLINE_EXCEEDED) leaves the outcome unknown: only a request whose repetition
# has no effect (a read, an insert that would fail the second time) may be tried again.
RETRY_WRITE = retries.if_exception_type(exceptions.Aborted)
RETRY_IDEMPOTENT = retries.if_exception_type(
    exceptions.Aborted, exceptions.ServiceUnavailable, exceptions.DeadlineExceeded
)
_BACKOFF = {"initial": 0.05, "maximum": 1.0, "multiplier": 2.0}

_LOOKUP_LIMIT = 1000
"""Most keys Datastore takes in one Lookup."""


class StoreUnavailable(Exception):
    """Datastore did not answer within the deadline or refused service for now."""


class Database:
    """One lazily built GAPIC client per process, shared by its threads, with its project."""

    def __init__(
        self,
        settings: Settings,
        *,
        interceptors: Sequence[grpc.UnaryUnaryClientInterceptor] = (),
    ) -> None:
        self.settings = settings
        self._interceptors = tuple(interceptors)
        self._lock = threading.Lock()
        self._client: DatastoreClient | None = None
        self._project = ""

    @property
    def client(self) -> DatastoreClient:
        """The GAPIC client, built on first use (after any fork) and shared by every thread."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client, self._project = self._build_client()
        return self._client

    @property
    def project(self) -> str:
        """The project whose Datastore holds the counts."""
        if self._client is None:
            self.client  # noqa: B018 -- the project is found with the credentials
        return self._project

    def _build_client(self) -> tuple[DatastoreClient, str]:
        """The client and its project: the emulator in plain text, or Google with ADC's token.

        The only code that knows about the emulator: the GAPIC client does not read
        DATASTORE_EMULATOR_HOST itself.
        """
        project = self.settings.project
        if self.settings.emulator_host:
            if not project:
                raise ConfigError("GOOGLE_CLOUD_PROJECT must be set when using the emulator")
            channel = grpc.insecure_channel(self.settings.emulator_host, options=_CHANNEL_OPTIONS)
        else:
            try:
                credentials, default_project = google.auth.default(scopes=SCOPES)
            except auth_exceptions.GoogleAuthError as exc:
                # On Google this is the metadata server not answering yet: try again soon.
                raise StoreUnavailable(f"no credentials for Datastore: {exc}") from exc
            project = project or default_project
            if not project:
                raise ConfigError("GOOGLE_CLOUD_PROJECT is not set and no default project found")
            channel = DatastoreGrpcTransport.create_channel(
                credentials=credentials, options=_CHANNEL_OPTIONS
            )
        if self._interceptors:
            channel = grpc.intercept_channel(channel, *self._interceptors)
        return DatastoreClient(transport=DatastoreGrpcTransport(channel=channel)), project

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
            mutations=mutations,
        )
        if transaction:
            request.transaction = transaction
        elif atomic:
            # Begun and committed by this one request: atomic, and no BeginTransaction RPC.
            request.single_use_transaction.read_write.SetInParent()
        retry_if = None if transaction else RETRY_IDEMPOTENT if idempotent else RETRY_WRITE
        response = self._call(
            self.client.commit, types.CommitRequest.wrap(request), deadline, retry_if
        )
        return types.CommitResponse.pb(response)

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
                request.read_options.transaction = transaction
            wrapped = types.LookupRequest.wrap(request)
            response = types.LookupResponse.pb(
                self._call(self.client.lookup, wrapped, deadline, RETRY_IDEMPOTENT)
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
        request = ds.RunQueryRequest(
            project_id=self.project,
            database_id=self.settings.database,
            partition_id=self._partition(),
            query=ds.Query(kind=[ds.KindExpression(name=kind)]),
        )
        query = request.query
        if len(filters) == 1:
            query.filter.CopyFrom(filters[0])
        elif filters:
            query.filter.composite_filter.op = ds.CompositeFilter.Operator.AND
            query.filter.composite_filter.filters.extend(filters)
        if keys_only:
            query.projection.add().property.name = "__key__"
        if batch_size is not None:
            query.limit.value = batch_size
        if transaction:
            request.read_options.transaction = transaction
        while True:
            wrapped = types.RunQueryRequest.wrap(request)
            response = types.RunQueryResponse.pb(
                self._call(self.client.run_query, wrapped, self.deadline(), RETRY_IDEMPOTENT)
            )
            batch = response.batch
            yield from (result.entity for result in batch.entity_results)
            done = batch.more_results == ds.QueryResultBatch.MoreResultsType.NO_MORE_RESULTS
            if done or batch.end_cursor == query.start_cursor:
                return
            query.start_cursor = batch.end_cursor

    def begin(self, *, deadline: float) -> bytes:
        """Begin a read-write transaction and return its id."""
        request = ds.BeginTransactionRequest(
            project_id=self.project, database_id=self.settings.database
        )
        wrapped = types.BeginTransactionRequest.wrap(request)
        response = self._call(self.client.begin_transaction, wrapped, deadline, RETRY_IDEMPOTENT)
        return response.transaction

    def rollback(self, transaction: bytes, *, deadline: float) -> None:
        """Abandon a transaction, releasing what it holds."""
        request = ds.RollbackRequest(
            project_id=self.project, database_id=self.settings.database, transaction=transaction
        )
        wrapped = types.RollbackRequest.wrap(request)
        self._call(self.client.rollback, wrapped, deadline, RETRY_IDEMPOTENT)

    @staticmethod
    def _call(
        method: Callable[..., Any],
        request: object,
        deadline: float,
        retry_if: Callable[[Exception], bool] | None,
    ) -> Any:
        """Run one RPC before the deadline, again after a backoff while retry_if says so.

        Each attempt is given the time left by hand: api_core's own per-call timeout
        (TimeToDeadlineTimeout) gives an attempt the whole timeout again once less than a
        second is left, which would run past the request's deadline.
        """

        def attempt() -> Any:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise exceptions.DeadlineExceeded("Datastore did not answer within the deadline")
            return method(request=request, retry=None, timeout=remaining)

        try:
            if retry_if is None:
                return attempt()
            retry = retries.Retry(
                predicate=retry_if, timeout=deadline - time.monotonic(), **_BACKOFF
            )
            return retry(attempt)()
        except exceptions.RetryError as exc:
            raise StoreUnavailable(f"no answer within the deadline: {exc.cause}") from exc
        except _TRANSIENT as exc:
            raise StoreUnavailable(f"{exc.grpc_status_code.name}: {exc.message}") from exc

    def _partition(self) -> ds.PartitionId:
        return ds.PartitionId(
            project_id=self.project,
            database_id=self.settings.database,
            namespace_id=self.settings.namespace,
        )


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
