"""The budget guard (guard/main.py) as Cloud Functions runs it: functions-framework serving it in
its own process, CloudEvents posted as Eventarc delivers a Pub/Sub message, and the real
google-cloud-run client talking gRPC over TLS to the stand-in of Cloud Run's Admin API
(google_standin.py), with its token from the stand-in's metadata server."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
import requests
from test_upload_set import gcloud_archive, local_imports

from conftest import PROJECT, ROOT, SITE
from google_standin import PROXY_NAMES, RUN_TARGET, GoogleStandIn
from real_gcloud import GCLOUD
from scripts.emulator import free_port

GUARD = ROOT / "guard" / "main.py"
GUARD_ENV_NAMES = ("COUNTER_SERVICE", "BUDGET_ID", "CLOSE_AT", "CLOSE_MEMBERS")
SERVICE = f"projects/{PROJECT}/locations/europe-west1/services/visit-counter"
BUDGET_ID = "5a0a4c2e-0000-4000-8000-00000000b0d9"
INVOKER = "roles/run.invoker"
OWNER = "user:owner@example.com"
# The counter open to the public, as deploy.sh leaves it, with a member and a binding of the
# owner's that the guard must keep.
OPEN_BINDINGS = {INVOKER: ["allUsers", OWNER], "roles/run.developer": [OWNER]}
CLOSED_BINDINGS = {INVOKER: [OWNER], "roles/run.developer": [OWNER]}


class GuardServer:
    """functions-framework serving the guard in its own process, as Cloud Functions does."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/"
        self.log_path = log_path
        self.process = start_guard(env, log_path, port=port)
        deadline = time.monotonic() + 30
        while self.process.poll() is None and time.monotonic() < deadline:
            try:
                requests.get(self.url, timeout=1)  # any answer: it is serving
                return
            except requests.ConnectionError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the guard did not start; see {log_path}")

    def deliver(
        self, data: bytes | str | None, *, budget_id: str = BUDGET_ID, structured: bool = False
    ) -> requests.Response:
        """Post one Pub/Sub message as Eventarc does: data (bytes are base64-encoded here)."""
        message: dict[str, object] = {
            "attributes": {
                "billingAccountId": "01D4EE-079462-DFD6EC",
                "budgetId": budget_id,
                "schemaVersion": "1.0",
            },
            "messageId": "136969346945",
            "publishTime": "2027-01-15T08:00:00.000Z",
        }
        if data is not None:
            message["data"] = base64.b64encode(data).decode() if isinstance(data, bytes) else data
        body = {"message": message, "subscription": f"projects/{PROJECT}/subscriptions/guard"}
        attributes = {
            "specversion": "1.0",
            "id": "136969346945",
            "source": f"//pubsub.googleapis.com/projects/{PROJECT}/topics/budget",
            "type": "google.cloud.pubsub.topic.v1.messagePublished",
        }
        # Connection: close, so no kept-alive connection makes gunicorn's shutdown wait.
        if structured:
            headers = {"Content-Type": "application/cloudevents+json", "Connection": "close"}
            payload = {**attributes, "datacontenttype": "application/json", "data": body}
        else:
            headers = {f"ce-{name}": value for name, value in attributes.items()}
            headers |= {"Content-Type": "application/json", "Connection": "close"}
            payload = body
        return requests.post(self.url, data=json.dumps(payload), headers=headers, timeout=60)

    def log_entries(self) -> list[dict]:
        """The structured lines the guard has written so far."""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def stop(self) -> None:
        """Stop the server and wait for it."""
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_guard(env: dict[str, str], log_path: Path, *, port: int) -> subprocess.Popen[bytes]:
    """functions-framework serving the guard with these settings, its output in log_path."""
    # The shell's settings, proxies and credentials stay out: Google is the stand-in's or none.
    inherited = {
        name: value
        for name, value in os.environ.items()
        if name not in GUARD_ENV_NAMES
        and name.lower() not in PROXY_NAMES
        and name not in ("GOOGLE_APPLICATION_CREDENTIALS", "K_SERVICE")
    }
    command = [
        sys.executable,
        "-m",
        "functions_framework",
        "--target=guard",
        f"--source={GUARD}",
        "--signature-type=cloudevent",
        "--host=127.0.0.1",
        f"--port={port}",
    ]
    # An empty gcloud configuration, so no developer's Application Default Credentials are found.
    config = log_path.with_suffix(".gcloud")
    config.mkdir(exist_ok=True)
    with log_path.open("wb") as log:
        return subprocess.Popen(
            command,
            cwd=ROOT,
            env={**inherited, "CLOUDSDK_CONFIG": str(config), **env},
            stdout=log,
            stderr=log,
        )


def notification(cost: float | str, budget: float | str = 100) -> bytes:
    """A budget notification's JSON, in Google's format (schema 1.0)."""
    return json.dumps(
        {
            "budgetDisplayName": f"Visit counter ({PROJECT})",
            "alertThresholdExceeded": 1.0,
            "costAmount": cost,
            "costIntervalStart": "2027-01-01T08:00:00Z",
            "budgetAmount": budget,
            "budgetAmountType": "SPECIFIED_AMOUNT",
            "currencyCode": "EUR",
        }
    ).encode()


@pytest.fixture
def start(standin: GoogleStandIn, tmp_path: Path) -> Iterator[Callable[..., GuardServer]]:
    """Start the guard on the stand-in, the counter's service open to the public."""
    standin.put_run_policy(SERVICE, *OPEN_BINDINGS.items())
    servers: list[GuardServer] = []

    def start_server(**env: str) -> GuardServer:
        settings = {"COUNTER_SERVICE": SERVICE, "BUDGET_ID": BUDGET_ID, **env}
        log_path = tmp_path / f"guard-{len(servers)}.log"
        servers.append(GuardServer({**standin.env(), **settings}, log_path))
        return servers[-1]

    yield start_server
    for server in servers:
        server.stop()


def calls(standin: GoogleStandIn) -> list[tuple[str, str]]:
    """The Run calls the stand-in received: method and resource."""
    return [(call.method, call.resource) for call in standin.run_calls]


def severities(server: GuardServer) -> list[str]:
    """The severity of each structured line the guard wrote, in order."""
    return [entry["severity"] for entry in server.log_entries()]


def test_under_the_budget_the_run_api_is_not_called(
    start: Callable[..., GuardServer], standin: GoogleStandIn
) -> None:
    server = start()

    answers = [server.deliver(notification(cost)) for cost in (0, 50, 99.99)]

    assert [answer.status_code for answer in answers] == [200, 200, 200]
    assert standin.run_calls == []
    assert standin.connects == []  # not even a connection to run.googleapis.com
    assert standin.metadata_requests == []  # nor a token
    assert severities(server) == ["INFO"] * 3
    assert standin.run_bindings(SERVICE) == OPEN_BINDINGS


@pytest.mark.parametrize("structured", [False, True], ids=["binary", "structured"])
def test_over_the_budget_allusers_is_removed_and_one_critical_line_says_how_to_reopen(
    start: Callable[..., GuardServer], standin: GoogleStandIn, structured: bool
) -> None:
    server = start()

    answer = server.deliver(notification(100.0), structured=structured)

    assert answer.status_code == 200
    assert standin.run_bindings(SERVICE) == CLOSED_BINDINGS
    assert calls(standin) == [("GetIamPolicy", SERVICE), ("SetIamPolicy", SERVICE)]
    assert standin.connects == [RUN_TARGET]
    get, put = standin.run_calls
    [token] = standin.tokens.issued
    assert (get.token, put.token) == (token, token)
    assert put.policy.etag == b"etag-1"  # the etag of the policy it read
    [entry] = server.log_entries()
    assert entry["severity"] == "CRITICAL"
    for part in ("100.0 of 100 EUR", SERVICE, "allUsers", "./deploy.sh --reopen"):
        assert part in entry["message"]


def test_behind_a_gateway_the_gateways_account_is_taken_off_too(
    start: Callable[..., GuardServer], standin: GoogleStandIn
) -> None:
    gateway = f"serviceAccount:visit-counter-gateway@{PROJECT}.iam.gserviceaccount.com"
    standin.put_run_policy(SERVICE, (INVOKER, [gateway, OWNER]), ("roles/run.developer", [OWNER]))
    server = start(CLOSE_MEMBERS=f"allUsers,{gateway}")

    answer = server.deliver(notification(100.0))

    assert answer.status_code == 200
    assert standin.run_bindings(SERVICE) == CLOSED_BINDINGS
    [entry] = server.log_entries()
    assert entry["severity"] == "CRITICAL"
    assert gateway in entry["message"]


def test_twice_over_the_budget_sets_the_policy_once(
    start: Callable[..., GuardServer], standin: GoogleStandIn
) -> None:
    server = start()

    answers = [server.deliver(notification(cost)) for cost in (120, 130)]

    assert [answer.status_code for answer in answers] == [200, 200]
    assert calls(standin) == [
        ("GetIamPolicy", SERVICE),
        ("SetIamPolicy", SERVICE),
        ("GetIamPolicy", SERVICE),
    ]
    assert standin.run_bindings(SERVICE) == CLOSED_BINDINGS
    assert severities(server) == ["CRITICAL", "INFO"]
    assert "already closed" in server.log_entries()[1]["message"]


def test_a_notification_of_another_budget_changes_nothing(
    start: Callable[..., GuardServer], standin: GoogleStandIn
) -> None:
    server = start()

    answer = server.deliver(notification(500), budget_id="another-budget")

    assert answer.status_code == 200
    assert standin.run_calls == []
    assert severities(server) == ["INFO"]


def test_without_budget_id_any_budget_of_the_topic_counts(
    start: Callable[..., GuardServer], standin: GoogleStandIn
) -> None:
    server = start(BUDGET_ID="")

    server.deliver(notification(500), budget_id="another-budget")

    assert standin.run_bindings(SERVICE) == CLOSED_BINDINGS


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(None, id="no-data"),
        pytest.param("not base64!", id="not-base64"),
        pytest.param(b"costAmount=120", id="not-json"),
        pytest.param(b"\xff\xfe\xfa", id="not-text"),
        pytest.param(b"[120, 100]", id="not-an-object"),
        pytest.param(b'{"budgetAmount": 100}', id="no-cost"),
        pytest.param(notification("120", "100"), id="amounts-as-text"),
        pytest.param(b'{"costAmount": true, "budgetAmount": 100}', id="cost-a-bool"),
        pytest.param(b'{"costAmount": NaN, "budgetAmount": 100}', id="cost-nan"),
        pytest.param(notification(120, 0), id="budget-zero"),
    ],
)
def test_a_malformed_message_is_one_error_line_and_acknowledged(
    start: Callable[..., GuardServer], standin: GoogleStandIn, data: bytes | str | None
) -> None:
    server = start()

    answer = server.deliver(data)

    assert 200 <= answer.status_code < 300  # acknowledged: Pub/Sub does not deliver it again
    assert standin.run_calls == []
    [entry] = server.log_entries()
    assert entry["severity"] == "ERROR"
    assert "Traceback" not in server.log_path.read_text()


def test_a_refusal_of_the_run_api_is_an_error_answer_so_the_event_is_retried(
    start: Callable[..., GuardServer], standin: GoogleStandIn
) -> None:
    server = start()
    standin.run_refusal = grpc.StatusCode.PERMISSION_DENIED

    refused = server.deliver(notification(120))

    assert refused.status_code == 500
    assert refused.headers["X-Google-Status"] == "crash"  # functions-framework's answer
    assert [(c.method, c.code) for c in standin.run_calls] == [
        ("GetIamPolicy", grpc.StatusCode.PERMISSION_DENIED)
    ]
    assert "PermissionDenied" in server.log_path.read_text()  # the traceback, for Error Reporting
    assert "CRITICAL" not in severities(server)

    standin.run_refusal = None
    retried = server.deliver(notification(120))

    assert retried.status_code == 200
    assert standin.run_bindings(SERVICE) == CLOSED_BINDINGS
    assert severities(server) == ["CRITICAL"]


@pytest.mark.parametrize(
    ("close_at", "under", "at"),
    [("0.9", 89.99, 90), ("1.1", 109.99, 110)],  # in binary floats 1.1 x 100 is above 110
)
def test_close_at_closes_at_that_fraction_of_the_budget(
    start: Callable[..., GuardServer], standin: GoogleStandIn, close_at: str, under: float, at: int
) -> None:
    server = start(CLOSE_AT=close_at)

    server.deliver(notification(under))
    assert standin.run_calls == []
    server.deliver(notification(at))

    assert standin.run_bindings(SERVICE) == CLOSED_BINDINGS
    assert severities(server) == ["INFO", "CRITICAL"]


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"COUNTER_SERVICE": ""}, "COUNTER_SERVICE"),
        ({"COUNTER_SERVICE": "visit-counter"}, "COUNTER_SERVICE"),
        ({"COUNTER_SERVICE": "projects/p/locations/r/services/"}, "COUNTER_SERVICE"),
        ({"BUDGET_ID": f"billingAccounts/01D4EE/budgets/{BUDGET_ID}"}, "BUDGET_ID"),
        ({"CLOSE_AT": "0"}, "CLOSE_AT"),
        ({"CLOSE_AT": "-0.5"}, "CLOSE_AT"),
        ({"CLOSE_AT": "90%"}, "CLOSE_AT"),
        ({"CLOSE_AT": "nan"}, "CLOSE_AT"),
        ({"CLOSE_AT": "inf"}, "CLOSE_AT"),
        ({"CLOSE_MEMBERS": "allUsers,user:owner@example.com"}, "CLOSE_MEMBERS"),
        ({"CLOSE_MEMBERS": " , "}, "CLOSE_MEMBERS"),
    ],
)
def test_a_bad_setting_stops_the_guard_at_start_up_naming_its_variable(
    tmp_path: Path, env: dict[str, str], named: str
) -> None:
    log_path = tmp_path / "guard.log"
    settings = {"COUNTER_SERVICE": SERVICE, "BUDGET_ID": BUDGET_ID, **env}

    process = start_guard(settings, log_path, port=free_port())

    assert process.wait(timeout=30) != 0
    assert f"ConfigError: {named}=" in log_path.read_text()


def test_the_counter_never_imports_the_guard_or_its_client(emulator_host: str) -> None:
    probe = (
        "import json, sys, main\n"
        "print(json.dumps([name for name, module in sys.modules.items()\n"
        "    if name.startswith('google.cloud.run')\n"
        f"    or {str(GUARD.parent)!r} in (getattr(module, '__file__', None) or '')]))"
    )
    counter_env = {
        "DATASTORE_EMULATOR_HOST": emulator_host,
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "ALLOWED_ORIGINS": SITE,
    }
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        env={**os.environ, **counter_env},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
    assert local_imports(GUARD) == set()  # nor does the guard import the counter


@pytest.mark.skipif(GCLOUD is None, reason="gcloud is not installed")
def test_the_guards_upload_is_its_main_and_requirements() -> None:
    assert sorted(gcloud_archive(GUARD.parent)) == ["main.py", "requirements.txt"]
