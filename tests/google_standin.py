"""A recording stand-in of the two Google endpoints a deployed function reaches, on loopback.

- The metadata server (plain HTTP, as on Cloud Functions), as google-auth's Compute Engine
  credentials ask it: the ping that tells them they run on Google, the project id, the default
  service account's email and scopes, and its access tokens; only for requests that say
  `Metadata-Flavor: Google`. The same
  server is the OAuth token endpoint (`POST /token`) of the service-account keys that
  `write_service_account_key` makes: Application Default Credentials away from Google.
- Datastore over TLS: a gRPC server with a certificate for datastore.googleapis.com from a
  throwaway CA (throwaway_ca.py). It checks each call's bearer token against the tokens the
  metadata stand-in issued, then forwards the call as raw bytes to Google's Datastore emulator
  and passes back its answer or its status.
- Cloud Run's Admin API over TLS (run.googleapis.com), a second gRPC server: the IAM policy
  of each service (`google.cloud.run.v2.Services/GetIamPolicy` and `SetIamPolicy`), held in
  memory per resource, with the same token check; each call is recorded.
- An HTTP CONNECT proxy that tunnels datastore.googleapis.com:443 and run.googleapis.com:443 to
  those servers, so a client keeps Google's real host name (and checks the certificate against
  it) while its bytes stay on this machine.

`GoogleStandIn.env()` is the environment a client process needs to find them all as if they
were Google. gRPC reads it in the process it runs in (the roots file once, when the first secure
channel needs default roots), so the client must be a process started with it.
"""

from __future__ import annotations

import base64
import functools
import itertools
import json
import select
import socket
import socketserver
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.iam.v1 import iam_policy_pb2, policy_pb2

import throwaway_ca

DATASTORE_HOST = "datastore.googleapis.com"
DATASTORE_TARGET = f"{DATASTORE_HOST}:443"
RUN_HOST = "run.googleapis.com"
RUN_TARGET = f"{RUN_HOST}:443"
RUN_SERVICES = "/google.cloud.run.v2.Services/"
TOKEN_PATH = "/computeMetadata/v1/instance/service-accounts/default/token"
OAUTH_TOKEN_PATH = "/token"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# The audience Google's token endpoint requires of a key's signed assertion, wherever the key's
# token_uri points.
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
PROJECT_ID_PATH = "/computeMetadata/v1/project/project-id"
ACCOUNT_PATH = "/computeMetadata/v1/instance/service-accounts/default/"
"""The default account's email and scopes; also asked for under its email once that is known."""
PING_PATH = "/"
"""google-auth's check that it runs on Google: the metadata server's address, answered with a
Metadata-Flavor: Google header."""
SERVICE_ACCOUNT = "visits@visit-counter-test.iam.gserviceaccount.com"
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
"""The scopes a Cloud Function's default account has."""
PROXY_NAMES = frozenset({"grpc_proxy", "https_proxy", "http_proxy", "no_grpc_proxy", "no_proxy"})
"""Variables by which the shell could steer a client elsewhere; each run sets its own."""
# What Google answers a call whose credentials it does not accept.
UNAUTHENTICATED_DETAILS = "Request had invalid authentication credentials."


@dataclass(frozen=True)
class MetadataRequest:
    """One request to the metadata stand-in: its path, headers (names in lower case), status."""

    path: str
    headers: dict[str, str]
    status: int


@dataclass(frozen=True)
class OAuthGrant:
    """One token request to the OAuth endpoint: its grant type and the assertion's claims."""

    grant_type: str
    claims: dict[str, Any]
    status: int


@dataclass(frozen=True)
class DatastoreCall:
    """One RPC the Datastore stand-in received: full method path, metadata, the status sent."""

    method: str
    metadata: tuple[tuple[str, str], ...]
    code: grpc.StatusCode

    def header(self, name: str) -> str | None:
        """The value of one metadata key (keys are lower case in gRPC), or None."""
        return next((value for key, value in self.metadata if key == name), None)


@dataclass(frozen=True)
class RunCall:
    """One RPC the Run stand-in received: method name (GetIamPolicy, SetIamPolicy), resource,
    the policy a SetIamPolicy asked for, the bearer token (None without one), the status sent."""

    method: str
    resource: str
    policy: policy_pb2.Policy | None
    token: str | None
    code: grpc.StatusCode


class TokenIssuer:
    """Issues a new access token on each request and knows which ones are still valid."""

    def __init__(self, *, expires_in: int, clock: Callable[[], float]) -> None:
        self.expires_in = expires_in
        self._clock = clock
        self._numbers = itertools.count(1)
        self._expiry: dict[str, float] = {}
        self._lock = threading.Lock()

    def issue(self) -> tuple[str, int]:
        """A token never issued before and its lifetime in seconds."""
        with self._lock:
            token = f"token-{next(self._numbers)}"
            expires_in = self.expires_in
            self._expiry[token] = self._clock() + expires_in
            return token, expires_in

    def is_valid(self, token: str) -> bool:
        """Whether the token was issued here and has not expired."""
        with self._lock:
            expiry = self._expiry.get(token)
        return expiry is not None and self._clock() < expiry

    @property
    def issued(self) -> list[str]:
        """Every token issued so far, oldest first."""
        with self._lock:
            return list(self._expiry)


class _MetadataServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, standin: GoogleStandIn) -> None:
        self.standin = standin
        super().__init__(("127.0.0.1", 0), _MetadataHandler)


class _MetadataHandler(BaseHTTPRequestHandler):
    """Answers as the GCE metadata server does for the paths a function uses; 404 otherwise."""

    server: _MetadataServer

    def do_GET(self) -> None:
        """The ping, a token, the account, the project id; 403 without Metadata-Flavor, or 404."""
        standin = self.server.standin
        mime = "text/plain"
        path = urllib.parse.urlsplit(self.path).path
        if self.headers.get("Metadata-Flavor") != "Google":
            status, body = HTTPStatus.FORBIDDEN, b"Missing Metadata-Flavor:Google header."
        elif path == PING_PATH:
            status, body = HTTPStatus.OK, b""
        elif path == TOKEN_PATH and standin.refuse_tokens:
            status, body = HTTPStatus.SERVICE_UNAVAILABLE, b"no token for now"
        elif path == TOKEN_PATH:
            token, expires_in = standin.tokens.issue()
            answer = {"access_token": token, "expires_in": expires_in, "token_type": "Bearer"}
            status, body, mime = HTTPStatus.OK, json.dumps(answer).encode(), "application/json"
        elif path in (ACCOUNT_PATH, ACCOUNT_PATH.replace("default", SERVICE_ACCOUNT)):
            account = {"email": SERVICE_ACCOUNT, "aliases": ["default"], "scopes": list(SCOPES)}
            status, body, mime = HTTPStatus.OK, json.dumps(account).encode(), "application/json"
        elif path == PROJECT_ID_PATH:
            status, body = HTTPStatus.OK, standin.project.encode()
        else:
            status, body = HTTPStatus.NOT_FOUND, b"Not Found"
        headers = {name.lower(): value for name, value in self.headers.items()}
        standin.record(standin.metadata_requests, MetadataRequest(self.path, headers, status))
        self.send_response(status)
        self.send_header("Metadata-Flavor", "Google")
        self.send_header("Content-Type", f"{mime}; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        """The OAuth token endpoint: a token for a JWT-bearer grant, as Google's answers it."""
        standin = self.server.standin
        length = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        grant_type = form.get("grant_type", [""])[0]
        claims = _jwt_claims(form.get("assertion", [""])[0])
        if self.path != OAUTH_TOKEN_PATH:
            status, answer = HTTPStatus.NOT_FOUND, {"error": "not_found"}
        elif grant_type != JWT_BEARER or claims.get("aud") != GOOGLE_TOKEN_AUDIENCE:
            status, answer = HTTPStatus.BAD_REQUEST, {"error": "invalid_grant"}
        else:
            token, expires_in = standin.tokens.issue()
            status = HTTPStatus.OK
            answer = {"access_token": token, "expires_in": expires_in, "token_type": "Bearer"}
        standin.record(standin.oauth_grants, OAuthGrant(grant_type, claims, status))
        body = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: metadata_requests and oauth_grants are the log."""


class _DatastoreForwarder(grpc.GenericRpcHandler):
    """Checks each unary call's bearer token, then relays its bytes to the emulator."""

    def __init__(self, standin: GoogleStandIn, emulator: grpc.Channel) -> None:
        self._standin = standin
        self._emulator = emulator

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        """A raw-bytes handler for any method: the emulator says which ones exist."""
        # No (de)serializers: request and response stay the bytes that went over the wire.
        return grpc.unary_unary_rpc_method_handler(
            functools.partial(self._forward, handler_call_details.method)
        )

    def _forward(self, method: str, request: bytes, context: grpc.ServicerContext) -> bytes:
        metadata = tuple((item.key, item.value) for item in context.invocation_metadata())
        scheme, _, token = (dict(metadata).get("authorization") or "").partition(" ")
        if scheme != "Bearer" or not self._standin.tokens.is_valid(token):
            self._finish(method, metadata, grpc.StatusCode.UNAUTHENTICATED)
            context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_DETAILS)
        call = self._emulator.unary_unary(method)
        try:
            response = call(request, timeout=context.time_remaining())
        except grpc.RpcError as error:
            self._finish(method, metadata, error.code())
            context.abort(error.code(), error.details() or "")
        self._finish(method, metadata, grpc.StatusCode.OK)
        return response

    def _finish(
        self, method: str, metadata: tuple[tuple[str, str], ...], code: grpc.StatusCode
    ) -> None:
        self._standin.record(self._standin.datastore_calls, DatastoreCall(method, metadata, code))


_Answer = tuple[grpc.StatusCode, str, policy_pb2.Policy | None]
"""A Run method's status, its details and the policy answered (None unless OK)."""


class _RunServices(grpc.GenericRpcHandler):
    """Cloud Run's IAM methods on services, as Google answers them: NOT_FOUND for a service it
    holds no policy for, ABORTED for a SetIamPolicy whose etag is not the current one."""

    def __init__(self, standin: GoogleStandIn) -> None:
        self._standin = standin
        self._methods = {
            "GetIamPolicy": (iam_policy_pb2.GetIamPolicyRequest, self._get),
            "SetIamPolicy": (iam_policy_pb2.SetIamPolicyRequest, self._set),
        }

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        """A handler for the two IAM methods; None (UNIMPLEMENTED) for anything else."""
        prefix, _, name = handler_call_details.method.rpartition("/")
        if f"{prefix}/" != RUN_SERVICES or name not in self._methods:
            return None
        request_type, answer = self._methods[name]
        return grpc.unary_unary_rpc_method_handler(
            functools.partial(self._call, name, answer),
            request_deserializer=request_type.FromString,
            response_serializer=policy_pb2.Policy.SerializeToString,
        )

    def _call(
        self,
        name: str,
        answer: Callable[[Any], _Answer],
        request: Any,
        context: grpc.ServicerContext,
    ) -> policy_pb2.Policy:
        standin = self._standin
        authorization = dict(context.invocation_metadata()).get("authorization") or ""
        scheme, _, token = authorization.partition(" ")
        if scheme != "Bearer" or not standin.tokens.is_valid(token):
            code, details, policy = grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_DETAILS, None
        elif standin.run_refusal is not None:
            refusal = standin.run_refusal
            code, details, policy = refusal, f"{refusal.name}: the stand-in refuses this", None
        else:
            with standin.run_lock:
                code, details, policy = answer(request)
        asked = request.policy if name == "SetIamPolicy" else None
        call = RunCall(name, request.resource, asked, token or None, code)
        standin.record(standin.run_calls, call)
        if policy is None:
            context.abort(code, details)
        return policy

    def _get(self, request: iam_policy_pb2.GetIamPolicyRequest) -> _Answer:
        policy = self._standin.run_policies.get(request.resource)
        if policy is None:
            return grpc.StatusCode.NOT_FOUND, f"Resource '{request.resource}' not found.", None
        return grpc.StatusCode.OK, "", policy

    def _set(self, request: iam_policy_pb2.SetIamPolicyRequest) -> _Answer:
        current = self._standin.run_policies.get(request.resource)
        if current is None:
            return grpc.StatusCode.NOT_FOUND, f"Resource '{request.resource}' not found.", None
        # IAM's read-modify-write rule: a policy read before someone else's change is refused.
        if request.policy.etag and request.policy.etag != current.etag:
            return grpc.StatusCode.ABORTED, "There were concurrent policy changes.", None
        stored = policy_pb2.Policy()
        stored.CopyFrom(request.policy)
        stored.etag = self._standin.next_etag()
        self._standin.run_policies[request.resource] = stored
        return grpc.StatusCode.OK, "", stored


class _ConnectProxy(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, standin: GoogleStandIn) -> None:
        self.standin = standin
        super().__init__(("127.0.0.1", 0), _ConnectHandler)


class _ConnectHandler(socketserver.BaseRequestHandler):
    """Tunnels CONNECT datastore.googleapis.com:443 and run.googleapis.com:443 to their TLS
    servers; refuses anything else."""

    server: _ConnectProxy
    request: socket.socket

    def handle(self) -> None:
        """Read the request head, answer it, and relay the tunnel's bytes until either side ends."""
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 16384:
            chunk = self.request.recv(4096)
            if not chunk:
                return
            head += chunk
        head, _, early = head.partition(b"\r\n\r\n")
        method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
        target = rest.partition(" ")[0]
        standin = self.server.standin
        if method == "CONNECT":
            standin.record(standin.connects, target)
        port = {DATASTORE_TARGET: standin.datastore_port, RUN_TARGET: standin.run_port}.get(target)
        if method != "CONNECT" or port is None:
            self.request.sendall(
                b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            return
        with socket.create_connection(("127.0.0.1", port)) as upstream:
            self.request.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            upstream.sendall(early)
            self._relay(upstream)

    def _relay(self, upstream: socket.socket) -> None:
        peers = {self.request: upstream, upstream: self.request}
        while not self.server.standin.stopping.is_set():
            # The timeout lets stop() end a tunnel that a client left open.
            readable, _, _ = select.select(list(peers), [], [], 0.5)
            for source in readable:
                data = source.recv(65536)
                if not data:
                    return
                peers[source].sendall(data)


class GoogleStandIn:
    """Google's metadata server, Datastore and Cloud Run's IAM methods (over TLS, behind a
    CONNECT proxy) on loopback, with Datastore's data in the emulator at emulator_host."""

    def __init__(
        self,
        emulator_host: str,
        project: str,
        *,
        expires_in: int = 3599,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.emulator_host = emulator_host
        self.project = project
        self.tokens = TokenIssuer(expires_in=expires_in, clock=clock)
        self.metadata_requests: list[MetadataRequest] = []
        self.oauth_grants: list[OAuthGrant] = []
        self.datastore_calls: list[DatastoreCall] = []
        self.connects: list[str] = []
        self.refuse_tokens = False
        """Answer token requests 503, as a metadata server that has none to give for now."""
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._folder = tempfile.TemporaryDirectory(prefix="google-standin-")
        self.ca_file = Path(self._folder.name) / "ca.pem"
        self.datastore_port = 0
        self.run_policies: dict[str, policy_pb2.Policy] = {}
        """Each Cloud Run service's IAM policy by resource name; a test puts the first one."""
        self.run_calls: list[RunCall] = []
        self.run_refusal: grpc.StatusCode | None = None
        """Answer every Run call with this status, as Google does a caller it refuses."""
        self.run_lock = threading.Lock()
        """Held while a call reads or replaces a policy, so a set sees the etag it checked."""
        self._etags = itertools.count(1)
        self.run_port = 0

    def start(self) -> GoogleStandIn:
        """Start the three servers; returns self."""
        certificate = throwaway_ca.issue(
            [DATASTORE_HOST, RUN_HOST], ca_name="google stand-in test CA"
        )
        self.ca_file.write_bytes(certificate.ca_pem)
        # The emulator is on loopback: a proxy from the shell's environment must not divert it.
        self._emulator = grpc.insecure_channel(
            self.emulator_host, options=[("grpc.enable_http_proxy", 0)]
        )
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        self._grpc.add_generic_rpc_handlers((_DatastoreForwarder(self, self._emulator),))
        credentials = grpc.ssl_server_credentials([(certificate.key_pem, certificate.cert_pem)])
        self.datastore_port = self._grpc.add_secure_port("127.0.0.1:0", credentials)
        self._grpc.start()
        self._run = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self._run.add_generic_rpc_handlers((_RunServices(self),))
        self.run_port = self._run.add_secure_port("127.0.0.1:0", credentials)
        self._run.start()
        self._metadata = _MetadataServer(self)
        self._proxy = _ConnectProxy(self)
        for server in (self._metadata, self._proxy):
            # A short poll so that stop() does not wait half a second per server.
            thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
            thread.start()
        return self

    def stop(self) -> None:
        """Stop the servers, end open tunnels and remove the CA file."""
        self.stopping.set()
        for server in (self._metadata, self._proxy):
            server.shutdown()
            server.server_close()
        self._grpc.stop(grace=None).wait()
        self._run.stop(grace=None).wait()
        self._emulator.close()
        self._folder.cleanup()

    def __enter__(self) -> GoogleStandIn:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def metadata_host(self) -> str:
        """host:port of the metadata stand-in, as GCE_METADATA_HOST takes it."""
        return f"127.0.0.1:{self._metadata.server_address[1]}"

    @property
    def oauth_token_uri(self) -> str:
        """The token_uri of keys whose tokens come from this stand-in."""
        return f"http://{self.metadata_host}{OAUTH_TOKEN_PATH}"

    @property
    def proxy_port(self) -> int:
        """The loopback port of the CONNECT proxy."""
        return self._proxy.server_address[1]

    @property
    def proxy_url(self) -> str:
        """The CONNECT proxy's URL, as grpc_proxy takes it."""
        return f"http://127.0.0.1:{self.proxy_port}"

    def env(self) -> dict[str, str]:
        """The variables a client process needs to reach this stand-in as if it were Google."""
        return {
            # gRPC's own proxy variable, read before https_proxy and http_proxy (all three
            # in lower case only: gRPC ignores GRPC_PROXY and HTTPS_PROXY).
            "grpc_proxy": self.proxy_url,
            # Trust this CA alone: gRPC reads this file before its bundled roots.
            "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": str(self.ca_file),
            # google-auth's ping goes to GCE_METADATA_IP, the rest to GCE_METADATA_HOST.
            "GCE_METADATA_HOST": self.metadata_host,
            "GCE_METADATA_IP": self.metadata_host,
            # gRPC skips the proxy for a host in no_proxy (or no_grpc_proxy), so a shell's
            # no_proxy must not name googleapis.com; urllib reaches the metadata server directly.
            "no_proxy": "127.0.0.1,localhost",
        }

    def calls_to(self, name: str) -> list[DatastoreCall]:
        """The recorded Datastore calls of one method, e.g. "Commit"."""
        return [call for call in self.datastore_calls if call.method.rsplit("/", 1)[-1] == name]

    def put_run_policy(self, resource: str, *bindings: tuple[str, list[str]]) -> None:
        """Give a Cloud Run service this IAM policy, (role, members) per binding, and a new etag."""
        policy = policy_pb2.Policy(
            version=1,
            bindings=[policy_pb2.Binding(role=role, members=members) for role, members in bindings],
            etag=self.next_etag(),
        )
        with self.run_lock:
            self.run_policies[resource] = policy

    def run_bindings(self, resource: str) -> dict[str, list[str]]:
        """A Cloud Run service's current bindings: members by role."""
        with self.run_lock:
            policy = self.run_policies[resource]
        return {binding.role: list(binding.members) for binding in policy.bindings}

    def next_etag(self) -> bytes:
        """An etag no policy here has had."""
        return f"etag-{next(self._etags)}".encode()

    def record(self, log: list[Any], item: object) -> None:
        """Append to one of the records; the servers' threads write them concurrently."""
        with self._lock:
            log.append(item)


def write_service_account_key(path: Path, *, project: str, email: str, token_uri: str) -> Path:
    """A throwaway service-account key file whose tokens come from token_uri."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    document = {
        "type": "service_account",
        "project_id": project,
        "private_key_id": "throwaway",
        "private_key": pem.decode(),
        "client_email": email,
        "client_id": "1",
        "token_uri": token_uri,
    }
    path.write_text(json.dumps(document))
    return path


def _jwt_claims(assertion: str) -> dict[str, Any]:
    """The claims of a JWT, unverified: the stand-in checks what was asked, not who signed."""
    try:
        payload = assertion.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
