"""The Datastore client of one process: keys, a deadline on every call, and the one retry rule.

The only module that makes RPCs, through google-cloud-datastore's GAPIC client (`datastore_v1`),
whose Commit returns an increment transform's result; tokens are google-auth's Application
Default Credentials (on Google, the metadata server's), retries are google.api_core's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import google.auth
import grpc
from google.api_core import exceptions
from google.api_core import retry as retries
from google.auth import exceptions as auth_exceptions
from google.cloud.datastore_v1 import types
from google.cloud.datastore_v1.services.datastore import DatastoreClient
from google.cloud.datastore_v1.services.datastore.transports import DatastoreGrpcTransport
from google.protobuf.message import Message

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
        return ds.Key(partition_id=self.partition(), path=path)

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
            **self._where(),
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
        return self._call("commit", request, deadline, retry_if)

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
            request = ds.LookupRequest(**self._where(), keys=pending[:_LOOKUP_LIMIT])
            if transaction:
                request.read_options.transaction = transaction
            response = self._call("lookup", request, deadline, RETRY_IDEMPOTENT)
            found.update((path_of(result.entity.key), result.entity) for result in response.found)
            pending = [*response.deferred, *pending[_LOOKUP_LIMIT:]]
        return found

    def run_query(self, request: ds.RunQueryRequest) -> ds.RunQueryResponse:
        """One batch of a query's results, with a deadline of its own (owner/queries.py)."""
        return self._call("run_query", request, self.deadline(), RETRY_IDEMPOTENT)

    def begin(self, *, deadline: float) -> bytes:
        """Begin a read-write transaction and return its id."""
        request = ds.BeginTransactionRequest(**self._where())
        return self._call("begin_transaction", request, deadline, RETRY_IDEMPOTENT).transaction

    def rollback(self, transaction: bytes, *, deadline: float) -> None:
        """Abandon a transaction, releasing what it holds."""
        request = ds.RollbackRequest(**self._where(), transaction=transaction)
        self._call("rollback", request, deadline, RETRY_IDEMPOTENT)

    def _call(
        self,
        method: str,
        request: Message,
        deadline: float,
        retry_if: Callable[[Exception], bool] | None,
    ) -> Any:
        """Run one of the client's methods before the deadline, again while retry_if says so.

        Each attempt is given the time left by hand: api_core's own per-call timeout
        (TimeToDeadlineTimeout) gives an attempt the whole timeout again once less than a
        second is left, which would run past the request's deadline.
        """
        call = getattr(self.client, method)
        wrapped = getattr(types, type(request).DESCRIPTOR.name).wrap(request)

        def attempt() -> Any:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise exceptions.DeadlineExceeded("Datastore did not answer within the deadline")
            response = call(request=wrapped, retry=None, timeout=remaining)
            return type(response).pb(response)

        try:
            if retry_if is None:
                return attempt()
            timeout = deadline - time.monotonic()
            return retries.Retry(predicate=retry_if, timeout=timeout, **_BACKOFF)(attempt)()
        except exceptions.RetryError as exc:
            raise StoreUnavailable(f"no answer within the deadline: {exc.cause}") from exc
        except _TRANSIENT as exc:
            raise StoreUnavailable(f"{exc.grpc_status_code.name}: {exc.message}") from exc

    def partition(self) -> ds.PartitionId:
        """The project, database and namespace that every key of the counter belongs to."""
        return ds.PartitionId(**self._where(), namespace_id=self.settings.namespace)

    def _where(self) -> dict[str, str]:
        """The project and database fields that every request names."""
        return {"project_id": self.project, "database_id": self.settings.database}


def path_of(key: ds.Key) -> KeyPath:
    """A key's path as a hashable value."""
    return tuple((element.kind, element.name, element.id) for element in key.path)
