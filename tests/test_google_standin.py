"""The stand-in of Google passes for Google to the real grpc client: a token from its metadata
server opens Datastore over TLS through its proxy, the data lands in the emulator, and a call
without a live token is refused before it reaches the emulator."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from google.cloud import datastore_v1 as ds

import throwaway_ca
from bare_grpc_client import KIND
from conftest import PROJECT, FakeClock
from counter import config
from google_standin import (
    DATASTORE_HOST,
    DATASTORE_TARGET,
    PROJECT_ID_PATH,
    PROXY_NAMES,
    TOKEN_PATH,
    UNAUTHENTICATED_DETAILS,
    GoogleStandIn,
)

CLIENT = Path(__file__).with_name("bare_grpc_client.py")
LOOKUP = "/google.datastore.v1.Datastore/Lookup"
COMMIT = "/google.datastore.v1.Datastore/Commit"


def run_client(
    standin: GoogleStandIn, namespace: str, *operations: str, token: str, **env: str
) -> list[dict]:
    """Run bare_grpc_client.py with the stand-in's environment and no emulator settings; the
    JSON lines it printed."""
    inherited = {
        name: value
        for name, value in os.environ.items()
        if name not in config.ENV_NAMES and name.lower() not in PROXY_NAMES
    }
    result = subprocess.run(
        [sys.executable, str(CLIENT), f"--token={token}", f"--namespace={namespace}", *operations],
        env={**inherited, "GOOGLE_CLOUD_PROJECT": PROJECT, **standin.env(), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def stored_counts(emulator_host: str, namespace: str, *names: str) -> dict[str, int]:
    """The probe entities' counts as the emulator has them, read past the stand-in."""
    keys = [
        ds.Key(
            partition_id=ds.PartitionId(project_id=PROJECT, namespace_id=namespace),
            path=[ds.Key.PathElement(kind=KIND, name=name)],
        )
        for name in names
    ]
    request = ds.LookupRequest.serialize(ds.LookupRequest(project_id=PROJECT, keys=keys))
    with grpc.insecure_channel(emulator_host, options=[("grpc.enable_http_proxy", 0)]) as channel:
        response = ds.LookupResponse.deserialize(channel.unary_unary(LOOKUP)(request, timeout=10))
    return {
        found.entity.key.path[-1].name: found.entity.properties["count"].integer_value
        for found in response.found
    }


def metadata_get(standin: GoogleStandIn, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """Status and body of a GET to the metadata stand-in."""
    request = urllib.request.Request(f"http://{standin.metadata_host}{path}", headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=5) as reply:
            assert reply.headers["Metadata-Flavor"] == "Google"
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_token_from_metadata_carries_commit_and_lookup_into_the_emulator(
    standin: GoogleStandIn, namespace: str, emulator_host: str
) -> None:
    token, commit, lookup = run_client(
        standin, namespace, "commit:home:7", "lookup:home", token="metadata"
    )

    assert token == {"token": "token-1", "expires_in": 3599}
    assert commit == {"method": "Commit", "code": "OK"}
    assert lookup == {"method": "Lookup", "code": "OK", "found": {"home": 7}}
    assert stored_counts(emulator_host, namespace, "home") == {"home": 7}
    assert standin.connects == [DATASTORE_TARGET]
    assert [call.method for call in standin.datastore_calls] == [COMMIT, LOOKUP]
    assert {call.header("authorization") for call in standin.datastore_calls} == {"Bearer token-1"}
    assert standin.calls_to("Commit")[0].header("x-goog-request-params") == (
        f"project_id={PROJECT}"
    )
    [fetch] = standin.metadata_requests
    assert (fetch.path, fetch.headers["metadata-flavor"], fetch.status) == (
        TOKEN_PATH,
        "Google",
        200,
    )


@pytest.mark.parametrize("token", ["none", "token-that-was-never-issued"])
def test_call_without_an_issued_token_is_unauthenticated_and_writes_nothing(
    standin: GoogleStandIn, namespace: str, emulator_host: str, token: str
) -> None:
    [commit] = run_client(standin, namespace, "commit:home:1", token=token)

    assert commit == {
        "method": "Commit",
        "code": "UNAUTHENTICATED",
        "details": UNAUTHENTICATED_DETAILS,
    }
    assert stored_counts(emulator_host, namespace, "home") == {}
    [call] = standin.datastore_calls
    assert (call.method, call.code) == (COMMIT, grpc.StatusCode.UNAUTHENTICATED)
    sent = None if token == "none" else f"Bearer {token}"
    assert call.header("authorization") == sent


def test_expired_token_is_refused(
    standin: GoogleStandIn, namespace: str, emulator_host: str, clock: FakeClock
) -> None:
    standin.tokens.expires_in = 60
    status, body = metadata_get(standin, TOKEN_PATH, {"Metadata-Flavor": "Google"})
    token = json.loads(body)["access_token"]
    assert standin.tokens.is_valid(token)
    clock.now += 60

    [commit] = run_client(standin, namespace, "commit:home:1", token=token)

    assert (status, commit["code"]) == (200, "UNAUTHENTICATED")
    assert stored_counts(emulator_host, namespace, "home") == {}
    assert standin.datastore_calls[0].header("authorization") == f"Bearer {token}"


def test_emulator_refusal_comes_back_with_its_status(
    standin: GoogleStandIn, namespace: str
) -> None:
    # A key with neither name nor id is incomplete, which Lookup does not accept.
    _, lookup = run_client(standin, namespace, "lookup:", token="metadata")

    assert lookup["code"] == "INVALID_ARGUMENT"
    assert lookup["details"]
    assert standin.datastore_calls[0].code == grpc.StatusCode.INVALID_ARGUMENT


def test_client_that_trusts_another_ca_cannot_connect(
    standin: GoogleStandIn, namespace: str, tmp_path: Path
) -> None:
    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_bytes(throwaway_ca.issue([DATASTORE_HOST]).ca_pem)

    [lookup] = run_client(
        standin,
        namespace,
        "lookup:home",
        token="none",
        GRPC_DEFAULT_SSL_ROOTS_FILE_PATH=str(other_ca),
    )

    assert lookup["code"] == "UNAVAILABLE"
    assert "CERTIFICATE_VERIFY_FAILED" in lookup["details"]
    assert standin.connects == [DATASTORE_TARGET]
    assert standin.datastore_calls == []


def test_metadata_issues_a_new_token_each_time_with_the_configured_lifetime(
    emulator_host: str,
) -> None:
    with GoogleStandIn(emulator_host, PROJECT, expires_in=120) as standin:
        answers = [
            json.loads(metadata_get(standin, TOKEN_PATH, {"Metadata-Flavor": "Google"})[1])
            for _ in range(2)
        ]

    assert answers == [
        {"access_token": "token-1", "expires_in": 120, "token_type": "Bearer"},
        {"access_token": "token-2", "expires_in": 120, "token_type": "Bearer"},
    ]


@pytest.mark.parametrize("headers", [{}, {"Metadata-Flavor": "google"}])
def test_metadata_refuses_a_request_without_metadata_flavor_google(
    standin: GoogleStandIn, headers: dict[str, str]
) -> None:
    status, _ = metadata_get(standin, TOKEN_PATH, headers)

    assert status == 403
    assert standin.tokens.issued == []
    assert [request.status for request in standin.metadata_requests] == [403]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (PROJECT_ID_PATH, (200, PROJECT.encode())),
        ("/computeMetadata/v1/instance/zone", (404, b"Not Found")),
    ],
)
def test_metadata_answers_the_project_id_and_nothing_it_does_not_know(
    standin: GoogleStandIn, path: str, expected: tuple[int, bytes]
) -> None:
    assert metadata_get(standin, path, {"Metadata-Flavor": "Google"}) == expected
    assert standin.metadata_requests[0].path == path


@pytest.mark.parametrize(
    "request_line",
    [
        b"CONNECT oauth2.googleapis.com:443 HTTP/1.1",
        b"GET http://datastore.googleapis.com/ HTTP/1.1",
    ],
)
def test_proxy_refuses_anything_but_a_tunnel_to_datastore(
    standin: GoogleStandIn, request_line: bytes
) -> None:
    with socket.create_connection(("127.0.0.1", standin.proxy_port), timeout=5) as proxy:
        proxy.sendall(request_line + b"\r\nHost: example\r\n\r\n")
        answer = proxy.recv(4096)

    assert answer.startswith(b"HTTP/1.1 403 ")
    assert standin.datastore_calls == []
    connects = [request_line.split()[1].decode()] if request_line.startswith(b"CONNECT") else []
    assert standin.connects == connects
