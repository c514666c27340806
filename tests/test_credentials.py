"""On Google's platform the function is its service account: google-auth's Compute Engine
credentials take a token from the metadata server, and the library's channel carries it to
Datastore's real host name over TLS; here a stand-in of Google in front of the emulator
(google_standin.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import requests

from conftest import PROJECT, ROOT, SITE, LiveServer
from counter import config, instance
from google_standin import (
    ACCOUNT_PATH,
    DATASTORE_TARGET,
    JWT_BEARER,
    PING_PATH,
    PROJECT_ID_PATH,
    SERVICE_ACCOUNT,
    TOKEN_PATH,
    GoogleStandIn,
    write_service_account_key,
)
from scripts.emulator import free_port
from user_agents import BROWSER


def on_the_platform(
    start_server: Callable[..., LiveServer], standin: GoogleStandIn, namespace: str, **env: str
) -> LiveServer:
    """The function as Cloud Functions runs it: no emulator, Google reached as the stand-in."""
    return start_server(
        f"platform-{namespace}",
        DATASTORE_EMULATOR_HOST="",
        DATASTORE_NAMESPACE=namespace,
        **{**standin.env(), **env},
    )


def visit(server: LiveServer, page: str) -> requests.Response:
    headers = {"Origin": SITE, "User-Agent": BROWSER}
    return requests.post(server.url, params={"page": page}, headers=headers, timeout=30)


def stored_count(emulator_host: str, namespace: str, page: str) -> int:
    """The page's count as the emulator holds it, read past the stand-in."""
    settings = config.Settings.from_env(
        {
            "DATASTORE_EMULATOR_HOST": emulator_host,
            "GOOGLE_CLOUD_PROJECT": PROJECT,
            "DATASTORE_NAMESPACE": namespace,
        }
    )
    return instance.build(settings).counts.read(page)


def paths(standin: GoogleStandIn) -> list[str]:
    """The paths the metadata stand-in was asked for, without their queries, in order."""
    return [request.path.partition("?")[0] for request in standin.metadata_requests]


def test_on_the_platform_visits_go_to_datastore_with_the_metadata_servers_token(
    start_server: Callable[..., LiveServer],
    standin: GoogleStandIn,
    namespace: str,
    emulator_host: str,
) -> None:
    server = on_the_platform(start_server, standin, namespace)

    answers = [visit(server, "/cv") for _ in range(3)]

    assert [a.json() for a in answers] == [{"count": n, "counted": True} for n in (1, 2, 3)]
    assert stored_count(emulator_host, namespace, "/cv") == 3
    assert standin.connects == [DATASTORE_TARGET]
    commits = standin.calls_to("Commit")
    assert len(commits) == 3
    for call in commits:
        assert call.header("authorization") == "Bearer token-1"
        assert call.header("x-goog-request-params") == f"project_id={PROJECT}"
    # google-auth's way on Google: is this Google, which project, which account, one token,
    # each with the header the metadata server insists on.
    assert paths(standin) == [PING_PATH, PROJECT_ID_PATH, ACCOUNT_PATH, TOKEN_PATH]
    assert {r.headers.get("metadata-flavor") for r in standin.metadata_requests} == {"Google"}
    [token_request] = [r for r in standin.metadata_requests if r.path.startswith(TOKEN_PATH)]
    assert "auth%2Fdatastore" in token_request.path  # the token asked for Datastore's scope


def test_a_named_database_is_in_the_routing_header(
    start_server: Callable[..., LiveServer], standin: GoogleStandIn, namespace: str
) -> None:
    server = on_the_platform(start_server, standin, namespace, DATASTORE_DATABASE="counts-db")

    visit(server, "/cv")  # the emulator has no such database; the header is what is checked

    [commit] = standin.calls_to("Commit")
    assert commit.header("x-goog-request-params") == f"project_id={PROJECT}&database_id=counts-db"


def test_a_token_is_renewed_before_it_expires(
    start_server: Callable[..., LiveServer], emulator_host: str, namespace: str
) -> None:
    # google-auth renews a token 225 s before its expiry: one of 226 s is stale after a second.
    with GoogleStandIn(emulator_host, PROJECT, expires_in=226) as standin:
        server = on_the_platform(start_server, standin, namespace)
        visit(server, "/cv")
        time.sleep(1.5)
        visit(server, "/cv")

        tokens = [call.header("authorization") for call in standin.calls_to("Commit")]
        renewal = paths(standin)[-2:]
    assert tokens == ["Bearer token-1", "Bearer token-2"]
    assert stored_count(emulator_host, namespace, "/cv") == 2
    assert renewal == [ACCOUNT_PATH.replace("default", SERVICE_ACCOUNT), TOKEN_PATH]


def test_without_a_token_a_visit_is_a_quick_503_and_nothing_is_written(
    start_server: Callable[..., LiveServer],
    standin: GoogleStandIn,
    namespace: str,
    emulator_host: str,
) -> None:
    standin.refuse_tokens = True
    server = on_the_platform(start_server, standin, namespace)

    started = time.monotonic()
    answer = visit(server, "/cv")

    assert time.monotonic() - started < 8  # the 5 s deadline, and not the client's 60
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == 503
    assert int(answer.headers["Retry-After"]) > 0
    assert standin.calls_to("Commit") == []
    assert stored_count(emulator_host, namespace, "/cv") == 0
    assert TOKEN_PATH in paths(standin)  # it did ask


def test_without_a_metadata_server_a_visit_is_a_503_and_the_next_one_may_succeed(
    start_server: Callable[..., LiveServer],
    standin: GoogleStandIn,
    namespace: str,
    emulator_host: str,
) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    server = on_the_platform(
        start_server, standin, namespace, GCE_METADATA_HOST=nowhere, GCE_METADATA_IP=nowhere
    )

    started = time.monotonic()
    answer = visit(server, "/cv")

    assert time.monotonic() - started < 8
    assert answer.status_code == 503
    assert int(answer.headers["Retry-After"]) > 0
    assert standin.datastore_calls == []
    assert stored_count(emulator_host, namespace, "/cv") == 0


def test_away_from_google_the_owner_tools_sign_in_with_application_default_credentials(
    standin: GoogleStandIn, namespace: str, emulator_host: str, tmp_path: Path
) -> None:
    seeded = instance.build(
        config.Settings.from_env(
            {
                "DATASTORE_EMULATOR_HOST": emulator_host,
                "GOOGLE_CLOUD_PROJECT": PROJECT,
                "DATASTORE_NAMESPACE": namespace,
            }
        )
    ).counts
    for _ in range(2):
        seeded.increment("/cv")
    owner = f"owner@{PROJECT}.iam.gserviceaccount.com"
    key = write_service_account_key(
        tmp_path / "key.json", project=PROJECT, email=owner, token_uri=standin.oauth_token_uri
    )
    # The owner's machine: a key in GOOGLE_APPLICATION_CREDENTIALS, no emulator.
    inherited = {
        k: v
        for k, v in os.environ.items()
        if k not in config.ENV_NAMES and k != "GOOGLE_APPLICATION_CREDENTIALS"
    }
    env = {
        **inherited,
        **standin.env(),
        "GOOGLE_APPLICATION_CREDENTIALS": str(key),
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "DATASTORE_NAMESPACE": namespace,
    }

    listed = subprocess.run(
        [sys.executable, "-m", "scripts.admin", "list", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == [{"page": "/cv", "count": 2}]
    [grant] = standin.oauth_grants
    assert grant.grant_type == JWT_BEARER
    assert grant.claims["iss"] == owner
    assert "https://www.googleapis.com/auth/datastore" in grant.claims["scope"].split()
    assert standin.calls_to("RunQuery")
    assert {call.header("authorization") for call in standin.datastore_calls} == {"Bearer token-1"}
    assert standin.metadata_requests == []  # away from Google the metadata server is not asked
