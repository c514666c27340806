"""The stand-in of Google's APIs answers as gcloud's own API clients say Google does, and lets
nothing through that it cannot answer."""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
import requests

from cloud_standin import BILLING_ACCOUNT, ROUTES, Route, StandIn
from real_gcloud import GCLOUD, sdk, tls_context

PROJECT = "standin-project"
# oauth2's token endpoint is no discovery API: gcloud has no generated client for it.
SDK_ROUTES = [
    pytest.param(api, route, id=route.method_id)
    for api, routes in ROUTES.items()
    if api != "oauth2"
    for route in routes
]


@cache
def client_methods(api: str, version: str) -> dict[str, tuple[str, str]]:
    """method id -> (HTTP method, URL template) from the SDK's generated client of an API."""
    client = sdk().lib / "googlecloudsdk/generated_clients/apis" / api / version
    source = (client / f"{api}_{version}_client.py").read_text()
    methods = {}
    for block in re.findall(r"ApiMethodInfo\((.*?)\)\n", source, re.DOTALL):
        fields = dict(re.findall(r"(\w+)=u?'([^']*)'", block))
        path = fields.get("flat_path") or fields["relative_path"]
        methods[fields["method_id"]] = (fields["http_method"], path)
    return methods


@pytest.mark.skipif(GCLOUD is None, reason="gcloud is not installed")
@pytest.mark.parametrize(("api", "route"), SDK_ROUTES)
def test_route_is_a_method_of_gclouds_own_client(api: str, route: Route) -> None:
    version = route.flat_path.split("/", 1)[0]

    assert route.method_id.startswith(f"{api}.")
    assert client_methods(api, version)[route.method_id] == (route.http_method, route.flat_path)


@pytest.fixture
def standin() -> Iterator[StandIn]:
    """A stand-in serving an empty project."""
    server = StandIn(PROJECT)
    server.start()
    yield server
    server.stop()


def through(standin: StandIn) -> dict[str, str]:
    """requests' proxies for sending to the stand-in as gcloud does."""
    proxy = f"http://127.0.0.1:{standin.port}"
    return {"http": proxy, "https": proxy}


def test_missing_resource_is_not_found_as_google_says_it(standin: StandIn) -> None:
    url = f"http://firestore.googleapis.com/v1/projects/{PROJECT}/databases/(default)"

    answer = requests.get(url, proxies=through(standin), timeout=10)

    assert answer.status_code == 404
    assert answer.json()["error"]["status"] == "NOT_FOUND"
    assert standin.calls[-1].method_id == "firestore.projects.databases.get"


def test_another_project_is_refused(standin: StandIn) -> None:
    url = "http://firestore.googleapis.com/v1/projects/other-project/databases/(default)"

    answer = requests.get(url, proxies=through(standin), timeout=10)

    assert answer.status_code == 403
    assert answer.json()["error"]["status"] == "PERMISSION_DENIED"


def test_request_it_cannot_answer_is_refused_and_kept(standin: StandIn) -> None:
    url = f"http://compute.googleapis.com/compute/v1/projects/{PROJECT}/zones"

    answer = requests.get(url, proxies=through(standin), timeout=10)

    assert answer.status_code == 400  # not 5xx, which gcloud would retry
    assert [str(call) for call in standin.unanswered] == [
        f"GET compute.googleapis.com/compute/v1/projects/{PROJECT}/zones"
    ]


def test_https_headed_for_google_is_refused_and_kept(standin: StandIn) -> None:
    with pytest.raises(requests.exceptions.ProxyError):
        requests.get("https://oauth2.googleapis.com/token", proxies=through(standin), timeout=10)

    assert [str(call) for call in standin.unanswered] == ["CONNECT oauth2.googleapis.com:443/"]


@pytest.fixture
def tls_standin(tmp_path: Path) -> Iterator[tuple[StandIn, Path]]:
    """A stand-in that ends TLS for billingbudgets, and the throwaway CA that signed it."""
    ca_file = tmp_path / "ca.pem"
    server = StandIn(PROJECT, tls=tls_context(ca_file))
    server.start()
    yield server, ca_file
    server.stop()


def test_https_to_an_api_without_override_is_served_to_who_trusts_its_ca(
    tls_standin: tuple[StandIn, Path],
) -> None:
    standin, ca_file = tls_standin
    url = f"https://billingbudgets.googleapis.com/v1/{BILLING_ACCOUNT}/budgets"

    answer = requests.get(url, proxies=through(standin), verify=str(ca_file), timeout=10)
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(url, proxies=through(standin), timeout=10)  # the system's CAs: refused

    assert answer.status_code == 200
    assert [call.method_id for call in standin.calls] == [
        "billingbudgets.billingAccounts.budgets.list"
    ]


def test_https_to_other_hosts_is_refused_even_with_tls(tls_standin: tuple[StandIn, Path]) -> None:
    standin, ca_file = tls_standin

    with pytest.raises(requests.exceptions.ProxyError):
        requests.get(
            "https://cloudbilling.googleapis.com/v1/billingAccounts",
            proxies=through(standin),
            verify=str(ca_file),
            timeout=10,
        )

    assert [str(call) for call in standin.unanswered] == [
        "CONNECT cloudbilling.googleapis.com:443/"
    ]


def test_stale_policy_write_is_aborted(standin: StandIn) -> None:
    url = f"http://cloudresourcemanager.googleapis.com/v1/projects/{PROJECT}"
    read = requests.post(f"{url}:getIamPolicy", json={}, proxies=through(standin), timeout=10)
    policy = read.json()
    written = requests.post(
        f"{url}:setIamPolicy", json={"policy": policy}, proxies=through(standin), timeout=10
    )

    again = requests.post(
        f"{url}:setIamPolicy", json={"policy": policy}, proxies=through(standin), timeout=10
    )

    assert written.status_code == 200
    assert written.json()["etag"] != policy["etag"]
    assert again.status_code == 409
    assert again.json()["error"]["status"] == "ABORTED"
