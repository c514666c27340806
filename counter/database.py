"""The Datastore connection of one process: keys, a deadline on every call, and the one retry rule.

The counter speaks Datastore's gRPC API itself, with the plain protobuf messages of
counter/protos.py, over one channel per process: to the emulator in plain text, or to Google
with TLS and a bearer token from counter/credentials.py. Google's client library would add
about 100 ms of imports to every cold start. This module is the only one that makes RPCs.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TypeVar
from urllib.parse import urlencode

import grpc

from counter import credentials
from counter import protos as ds
from counter.config import ConfigError, Settings

KeyPath = tuple[tuple[str, str, int], ...]
"""A key's path as a hashable value, to find a Lookup's results by key."""

ENDPOINT = "datastore.googleapis.com:443"
"""Google's Datastore API."""

_SERVICE = "/google.datastore.v1.Datastore/"

_CHANNEL_OPTIONS = (
    # Let a channel that lost its server reconnect within a second or two instead of gRPC's
    # default backoff of up to two minutes, so the function comes back soon after the database.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.keepalive_time_ms", 30_000),
    # As Google's client: a Lookup of many keys may answer more than gRPC's default 4 MiB.
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
)

# Failures after which the database may answer again soon: the caller answers 503 with
# Retry-After. Any other error (a refused permission, a malformed request) is a fault.
_TRANSIENT = frozenset(
    {
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
    }
)

# ABORTED means nothing was written, so any request may be tried again. A lost answer
# (UNAVAILABLE, DEADLINE_EXCEEDED) leaves the outcome unknown: only a request whose repetition
# has no effect (a read, an insert that would fail the second time) may be tried again.
_RETRY_WRITE = frozenset({grpc.StatusCode.ABORTED})
_RETRY_IDEMPOTENT = frozenset(
    {grpc.StatusCode.ABORTED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
)
_FIRST_BACKOFF = 0.05
_MAX_BACKOFF = 1.0

_LOOKUP_LIMIT = 1000
"""Most keys Datastore takes in one Lookup."""

_T = TypeVar("_T")


class StoreUnavailable(Exception):
    """Datastore did not answer within the deadline or refused service for now."""


class DatastoreError(Exception):
    """Datastore refused a request: its gRPC status code and message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code


class Aborted(DatastoreError):
    """ABORTED: a transaction conflicted and wrote nothing; it may be tried again."""


class AlreadyExists(DatastoreError):
    """ALREADY_EXISTS: an insert found its key taken and wrote nothing."""


_ERRORS: dict[grpc.StatusCode, type[DatastoreError]] = {
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
}


class Database:
    """One lazily opened gRPC channel per process, shared by its threads, with its project."""

    def __init__(
        self,
        settings: Settings,
        *,
        interceptors: Sequence[grpc.UnaryUnaryClientInterceptor] = (),
    ) -> None:
        self.settings = settings
        self._interceptors = tuple(interceptors)
        self._lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self._tokens: credentials.TokenSource | None = None
        self._methods: dict[str, grpc.UnaryUnaryMultiCallable] = {}
        self._routing_header: str | None = None
        self._project: str | None = None

    @property
    def channel(self) -> grpc.Channel:
        """The gRPC channel, opened on first use (after any fork) and shared by every thread."""
        if self._channel is None:
            with self._lock:
                if self._channel is None:
                    if not self.settings.emulator_host:
                        self._tokens = credentials.token_source(self.settings)
                    self._channel = self._intercepted(self._open_channel())
        return self._channel

    @property
    def project(self) -> str:
        """The project whose Datastore holds the counts."""
        if self._project is None:
            project = self.settings.project
            if project is None and self.settings.emulator_host:
                raise ConfigError("GOOGLE_CLOUD_PROJECT must be set when using the emulator")
            if project is None:
                project = credentials.default_project(self.settings)
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
            mutations=mutations,
        )
        if transaction:
            request.transaction = transaction
        elif atomic:
            # Begun and committed by this one request: atomic, and no BeginTransaction RPC.
            request.single_use_transaction.read_write.SetInParent()
        retry_if = None if transaction else _RETRY_IDEMPOTENT if idempotent else _RETRY_WRITE
        return self._call(
            "Commit", request, ds.CommitResponse, deadline=deadline, retry_if=retry_if
        )

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
            response = self._call(
                "Lookup", request, ds.LookupResponse, deadline=deadline, retry_if=_RETRY_IDEMPOTENT
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
            response = self._call(
                "RunQuery",
                request,
                ds.RunQueryResponse,
                deadline=self.deadline(),
                retry_if=_RETRY_IDEMPOTENT,
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
        response = self._call(
            "BeginTransaction",
            request,
            ds.BeginTransactionResponse,
            deadline=deadline,
            retry_if=_RETRY_IDEMPOTENT,
        )
        return response.transaction

    def rollback(self, transaction: bytes, *, deadline: float) -> None:
        """Abandon a transaction, releasing what it holds."""
        request = ds.RollbackRequest(
            project_id=self.project, database_id=self.settings.database, transaction=transaction
        )
        self._call(
            "Rollback", request, ds.RollbackResponse, deadline=deadline, retry_if=_RETRY_IDEMPOTENT
        )

    def _call(
        self,
        method: str,
        request: object,
        response_type: type[_T],
        *,
        deadline: float,
        retry_if: frozenset[grpc.StatusCode] | None,
    ) -> _T:
        """Run one RPC before the deadline, again after a backoff while retry_if holds its code.

        Not google.api_core's Retry: importing it loads requests, tens of milliseconds of every
        cold start, for a loop this short. Each attempt gets exactly the time left.
        """
        call = self._method(method, type(request), response_type)
        backoff = _FIRST_BACKOFF
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StoreUnavailable("Datastore did not answer within the deadline")
            try:
                return call(request, timeout=remaining, metadata=self._metadata())
            except grpc.RpcError as exc:
                code, details = exc.code(), exc.details() or ""
                if retry_if is None or code not in retry_if:
                    if code in _TRANSIENT:
                        raise StoreUnavailable(f"{code.name}: {details}") from exc
                    raise _ERRORS.get(code, DatastoreError)(code, details) from exc
                pause = random.uniform(0, backoff)
                if time.monotonic() + pause >= deadline:
                    raise StoreUnavailable(
                        f"no answer within the deadline: {code.name}: {details}"
                    ) from exc
                time.sleep(pause)
                backoff = min(backoff * 2, _MAX_BACKOFF)

    def _method(
        self, name: str, request_type: type, response_type: type[_T]
    ) -> grpc.UnaryUnaryMultiCallable:
        """The channel's callable for one of Datastore's methods, made once."""
        method = self._methods.get(name)
        if method is None:
            method = self._methods[name] = self.channel.unary_unary(
                _SERVICE + name,
                request_serializer=request_type.SerializeToString,
                response_deserializer=response_type.FromString,
            )
        return method

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        """What every call carries: the routing header, and on Google the bearer token."""
        routing = ("x-goog-request-params", self._routing())
        if self._tokens is None:
            return (routing,)
        try:
            token = self._tokens.token()
        except credentials.TokenUnavailable as exc:
            raise StoreUnavailable(str(exc)) from exc
        return routing, ("authorization", f"Bearer {token}")

    def _routing(self) -> str:
        # As Google's client: the routing header names the project and a non-default database.
        if self._routing_header is None:
            params = {"project_id": self.project}
            if self.settings.database:
                params["database_id"] = self.settings.database
            self._routing_header = urlencode(params, safe="/")
        return self._routing_header

    def _partition(self) -> ds.PartitionId:
        return ds.PartitionId(
            project_id=self.project,
            database_id=self.settings.database,
            namespace_id=self.settings.namespace,
        )

    def _open_channel(self) -> grpc.Channel:
        if self.settings.emulator_host:
            return grpc.insecure_channel(self.settings.emulator_host, options=_CHANNEL_OPTIONS)
        return grpc.secure_channel(ENDPOINT, grpc.ssl_channel_credentials(), _CHANNEL_OPTIONS)

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
