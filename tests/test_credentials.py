"""On Google's platform the function is its service account: a token from the metadata server
on every Datastore call, over TLS to Datastore's real host name, here a stand-in of Google in
front of the emulator (google_standin.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from conftest import PROJECT, ROOT, SITE, LiveServer
from counter import config, credentials, instance
from google_standin import (
    DATASTORE_TARGET,
    JWT_BEARER,
    TOKEN_PATH,
    GoogleStandIn,
    write_service_account_key,
)
from scripts.emulator import free_port

BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"


def on_the_platform(
    start_server: Callable[..., LiveServer], standin: GoogleStandIn, namespace: str, **env: str
) -> LiveServer:
    """The function as Cloud Functions runs it: K_SERVICE set and no emulator."""
    return start_server(
        f"platform-{namespace}",
        DATASTORE_EMULATOR_HOST="",
        K_SERVICE="visits",
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
    # One token for every call: fetched once, with the header the metadata server insists on.
    assert [(r.path, r.headers.get("metadata-flavor")) for r in standin.metadata_requests] == [
        (TOKEN_PATH, "Google")
    ]


def test_a_named_database_is_in_the_routing_header(
    start_server: Callable[..., LiveServer], standin: GoogleStandIn, namespace: str
) -> None:
    server = on_the_platform(start_server, standin, namespace, DATASTORE_DATABASE="counts-db")

    visit(server, "/cv")  # the emulator has no such database; the header is what is checked

    [commit] = standin.calls_to("Commit")
    assert commit.header("x-goog-request-params") == f"project_id={PROJECT}&database_id=counts-db"


def test_without_a_metadata_server_a_visit_is_a_quick_503_and_nothing_is_written(
    start_server: Callable[..., LiveServer],
    standin: GoogleStandIn,
    namespace: str,
    emulator_host: str,
) -> None:
    server = on_the_platform(
        start_server, standin, namespace, GCE_METADATA_HOST=f"127.0.0.1:{free_port()}"
    )

    started = time.monotonic()
    answer = visit(server, "/cv")

    assert time.monotonic() - started < 5
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == 503
    assert int(answer.headers["Retry-After"]) > 0
    assert standin.calls_to("Commit") == []
    assert stored_count(emulator_host, namespace, "/cv") == 0


def test_a_token_is_kept_until_shortly_before_it_expires(standin: GoogleStandIn) -> None:
    now = [0.0]
    token = credentials.MetadataToken(standin.metadata_host, clock=lambda: now[0])

    first = token.token()
    now[0] = 3599 - 301  # standin.tokens' lifetime is 3599 s; renewed 300 s before the end
    kept = token.token()
    now[0] = 3599 - 299
    renewed = token.token()

    assert (first, kept, renewed) == ("token-1", "token-1", "token-2")
    assert len(standin.metadata_requests) == 2


def test_a_metadata_server_that_refuses_gives_no_token(standin: GoogleStandIn) -> None:
    with pytest.raises(credentials.TokenUnavailable, match="404"):
        credentials.metadata(standin.metadata_host, "/computeMetadata/v1/no/such/value")


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
    # The owner's machine: a key in GOOGLE_APPLICATION_CREDENTIALS, no emulator, no K_SERVICE.
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
