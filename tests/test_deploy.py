"""deploy.sh run with the real gcloud against a stand-in of Google's APIs, and scripts/smoke.sh.

Each deploy here is a real run: deploy.sh calls the installed gcloud, which builds the archive,
signs in with a throwaway key and sends its requests to tests/cloud_standin.py. The tests assert
what Google would receive. A few full runs are shared by module-scoped fixtures, since each
gcloud command takes about half a second to start.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from cloud_standin import BILLING_ACCOUNT, BILLING_CURRENCY, COMPUTE_ACCOUNT, OWNER, PUBSUB_AGENT
from conftest import SITE, function_source
from counter import config, unique_visitors
from counter.config import Settings
from real_gcloud import (
    CHANGED_DEPLOY_SETTINGS,
    GCLOUD,
    READ_ONLY_CHECKS,
    Cloud,
    Run,
    after_checks,
    assert_plan_is,
    command,
    flags,
    plan,
    plan_groups,
    succeeded,
)
from scripts.emulator import free_port

pytestmark = pytest.mark.skipif(GCLOUD is None, reason="gcloud is not installed")

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "counter-project"
ORIGINS = f"{SITE},https://www.{SITE.removeprefix('https://')}"
SERVICE_ACCOUNT = f"visit-counter@{PROJECT}.iam.gserviceaccount.com"
# What deploy.sh needs besides gcloud and python3, for runs on a PATH that holds no gcloud.
TOOLS = ("bash", "env", "dirname", "mktemp", "rm", "awk", "sed", "date", "grep", "cat", "sleep")
# A python3 that runs wherever it is linked from (pyenv's shim would need pyenv's own tools).
PYTHON3 = os.path.realpath(sys.executable)
# The second project: every setting changed, the project taken from gcloud's config, --gateway.
CUSTOM_PROJECT = "config-project"
CUSTOM_ACCOUNT = f"counter-runtime@{CUSTOM_PROJECT}.iam.gserviceaccount.com"
# The accounts --gateway and --budget make for the gateway and the budget's guard.
CUSTOM_GATEWAY_ACCOUNT = f"visit-counter-gateway@{CUSTOM_PROJECT}.iam.gserviceaccount.com"
CUSTOM_GUARD_ACCOUNT = f"visit-counter-guard@{CUSTOM_PROJECT}.iam.gserviceaccount.com"
CUSTOM_SETTINGS = {**CHANGED_DEPLOY_SETTINGS, "FIRESTORE_LOCATION": "eur3"}
# The function's settings that a deployment turns on unless they are set.
DEPLOYED_DEFAULTS = {"UNIQUE_WINDOW_SECONDS": "1800", "DAILY_WRITE_LIMIT": "10000"}
BUDGET = "25"


class RecordingEnv(dict[str, str]):
    """An empty environment that remembers which names were looked up."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        """Record the name, then answer as an empty environment would."""
        self.asked.add(name)
        return super().get(name, default)

    def __getitem__(self, name: str) -> str:
        self.asked.add(name)
        return super().__getitem__(name)

    def __contains__(self, name: object) -> bool:
        self.asked.add(str(name))
        return super().__contains__(name)


def settings_the_function_reads() -> set[str]:
    """The environment variables counter/config.py looks up, found by asking it."""
    env = RecordingEnv()
    Settings.from_env(env)
    # Meaningful only on a developer's machine, or set by the platform itself.
    return env.asked - {
        *config.env_names(deploy="local-only"),
    }


def function_settings() -> dict[str, str]:
    """A value for every setting of the function that deploy.sh passes on, commas included."""
    values = {name: f"value-of-{name.lower()}" for name in settings_the_function_reads()}
    for name in ("GOOGLE_CLOUD_PROJECT", "ALLOWED_ORIGINS"):  # deploy.sh sets these itself
        del values[name]
    values["DATASTORE_DATABASE"] = CUSTOM_SETTINGS["DATASTORE_DATABASE"]
    values["ALLOWED_PAGES"] = "/,/blog/*"
    # Read whole, never by the shell: quotes, a backslash, a dollar and spaces, a trailing one too.
    values["DATASTORE_NAMESPACE"] = """it's a "name"  with \\ and $HOME """
    # A deployment's defaults given other values, 0 (off) among them.
    values["UNIQUE_WINDOW_SECONDS"] = "0"
    values["DAILY_WRITE_LIMIT"] = "500"
    return values


@pytest.fixture(scope="module")
def clouds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Cloud]]:
    """Every stand-in this module starts, stopped at its end."""
    started: list[Cloud] = []
    yield started
    for cloud in started:
        cloud.close()


def new_cloud(clouds: list[Cloud], home: Path, project: str = PROJECT, **options) -> Cloud:
    """A fresh project on its own stand-in, with its own gcloud configuration."""
    cloud = Cloud(home, project, **options)
    clouds.append(cloud)
    return cloud


@pytest.fixture(scope="module")
def default_cloud(
    clouds: list[Cloud], tmp_path_factory: pytest.TempPathFactory, live_server: str
) -> Cloud:
    """An empty project whose function, once deployed, answers at a live local server."""
    cloud = new_cloud(clouds, tmp_path_factory.mktemp("default"))
    cloud.standin.function_url = live_server
    return cloud


@pytest.fixture(scope="module")
def custom_cloud(clouds: list[Cloud], tmp_path_factory: pytest.TempPathFactory) -> Cloud:
    """A project named only in gcloud's config, whose runtime account was made by hand."""
    cloud = new_cloud(
        clouds,
        tmp_path_factory.mktemp("custom"),
        CUSTOM_PROJECT,
        config_project=CUSTOM_PROJECT,
    )
    cloud.standin.add_service_account(CUSTOM_SETTINGS["SERVICE_ACCOUNT_NAME"])
    return cloud


def deploy_custom_twice(cloud: Cloud) -> tuple[Run, Run]:
    """A --gateway --budget deploy with every setting changed and GOOGLE_CLOUD_PROJECT unset; then
    the same again with --project given and another project in the environment."""
    settings = {"ALLOWED_ORIGINS": ORIGINS, **CUSTOM_SETTINGS, **function_settings()}
    first = cloud.deploy("--gateway", f"--budget={BUDGET}", GOOGLE_CLOUD_PROJECT=None, **settings)
    again = cloud.deploy(
        "--gateway",
        f"--budget={BUDGET}",
        f"--project={CUSTOM_PROJECT}",
        GOOGLE_CLOUD_PROJECT="someone-elses-project",
        **settings,
    )
    return first, again


@pytest.fixture(scope="module")
def unbilled_cloud(clouds: list[Cloud], tmp_path_factory: pytest.TempPathFactory) -> Cloud:
    """A project linked to no billing account."""
    cloud = new_cloud(clouds, tmp_path_factory.mktemp("unbilled"))
    cloud.standin.link_billing(None)
    return cloud


@pytest.fixture(scope="module")
def full_deploys(
    default_cloud: Cloud, custom_cloud: Cloud, unbilled_cloud: Cloud
) -> Iterator[dict[str, Future]]:
    """The module's full deploys, started together in the background as the first test needs
    one: the projects are independent, and each run is mostly gcloud starting up."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield {
            "default": pool.submit(default_cloud.deploy, "--smoke", ALLOWED_ORIGINS=ORIGINS),
            "custom": pool.submit(deploy_custom_twice, custom_cloud),
            "unbilled": pool.submit(
                unbilled_cloud.deploy, f"--budget={BUDGET}", ALLOWED_ORIGINS=ORIGINS
            ),
        }


@pytest.fixture(scope="module")
def deployed(full_deploys: dict[str, Future]) -> Run:
    """The README's deploy into an empty project, with --smoke."""
    return succeeded(full_deploys["default"].result())


@pytest.fixture(scope="module")
def custom(full_deploys: dict[str, Future]) -> Run:
    """The first deploy into the custom project: every setting changed, --gateway."""
    return succeeded(full_deploys["custom"].result()[0])


@pytest.fixture(scope="module")
def custom_again(full_deploys: dict[str, Future]) -> Run:
    """The second deploy into the custom project."""
    return succeeded(full_deploys["custom"].result()[1])


@pytest.fixture(scope="module")
def idle_cloud(clouds: list[Cloud], tmp_path_factory: pytest.TempPathFactory) -> Cloud:
    """A logged-in project for runs that must stop before they send Google anything."""
    return new_cloud(clouds, tmp_path_factory.mktemp("idle"))


@pytest.fixture
def empty_project(idle_cloud: Cloud) -> Cloud:
    """The idle project made new again, for a test that changes it (saves a second login)."""
    idle_cloud.standin.reset()
    return idle_cloud


# --- what Google receives from a first deploy ---


def test_archive_uploaded_is_the_function_source(deployed: Run) -> None:
    [upload] = [call for call in deployed.calls if call.files is not None]
    [create] = deployed.requests("cloudfunctions.projects.locations.functions.create")

    assert sorted(upload.files) == function_source(ROOT)
    storage = create.body["buildConfig"]["source"]["storageSource"]
    assert upload.path == f"{storage['bucket']}/{storage['object']}"


def test_function_is_created_as_specified(deployed: Run) -> None:
    [create] = deployed.requests("cloudfunctions.projects.locations.functions.create")

    assert create.query == {"functionId": "visits"}
    assert create.body["name"] == f"projects/{PROJECT}/locations/us-central1/functions/visits"
    build = create.body["buildConfig"]
    assert (build["entryPoint"], build["runtime"]) == ("visits", "python312")
    # One whole vCPU for a fast first visit, eight requests at a time with as many threads.
    assert create.body["serviceConfig"] == {
        "availableCpu": "1",
        "availableMemory": "512Mi",
        "minInstanceCount": 0,
        "maxInstanceCount": 3,
        "maxInstanceRequestConcurrency": 8,
        "serviceAccountEmail": SERVICE_ACCOUNT,
        "environmentVariables": {
            "GOOGLE_CLOUD_PROJECT": PROJECT,
            "ALLOWED_ORIGINS": ORIGINS,
            "THREADS": "8",
            **DEPLOYED_DEFAULTS,
        },
    }
    # Values the function accepts: it would refuse to start otherwise.
    settings = Settings.from_env(create.body["serviceConfig"]["environmentVariables"])
    assert (settings.unique_window_seconds, settings.daily_write_limit) == (1800, 10_000)
    assert "eventTrigger" not in create.body  # an HTTP function


def test_first_run_creates_database_account_and_function(deployed: Run) -> None:
    assert deployed.created == [
        f"firestore projects/{PROJECT}/databases/(default)",
        f"firestore projects/{PROJECT}/databases/(default)/collectionGroups/"
        f"{unique_visitors.MARKER_KIND}/fields/{unique_visitors.EXPIRE_AT} ttlConfig",
        f"firestore projects/{PROJECT}/databases/(default)/collectionGroups/"
        f"{unique_visitors.SALT_KIND}/fields/{unique_visitors.EXPIRE_AT} ttlConfig",
        f"iam projects/{PROJECT}/serviceAccounts/{SERVICE_ACCOUNT}",
        f"cloudfunctions projects/{PROJECT}/locations/us-central1/functions/visits",
    ]
    [database] = deployed.requests("firestore.projects.databases.create")
    assert database.query == {"databaseId": "(default)"}
    assert (database.body["type"], database.body["locationId"]) == ("DATASTORE_MODE", "us-central1")
    [account] = deployed.requests("iam.projects.serviceAccounts.create")
    assert account.body["accountId"] == "visit-counter"
    assert account.body["serviceAccount"]["displayName"] == "Visit counter (Cloud Function visits)"


def test_apis_are_enabled_first(deployed: Run) -> None:
    enable = deployed.api_calls[0]
    assert enable.method_id == "serviceusage.services.batchEnable"
    assert enable.body["serviceIds"] == [
        f"{api}.googleapis.com"
        for api in (
            "cloudfunctions",
            "run",
            "cloudbuild",
            "artifactregistry",
            "datastore",
            "firestore",
            "iam",
            "logging",
        )
    ]


def test_ttl_policies_cover_the_kinds_that_expire(default_cloud: Cloud, deployed: Run) -> None:
    fields = default_cloud.standin.resources["firestore"]
    with_ttl = {name for name, field in fields.items() if "ttlConfig" in field}

    assert with_ttl == {
        f"projects/{PROJECT}/databases/(default)/collectionGroups/{kind}/fields/{unique_visitors.EXPIRE_AT}"
        for kind in (unique_visitors.MARKER_KIND, unique_visitors.SALT_KIND)
    }


def test_account_gets_datastore_user_and_the_public_may_invoke(
    default_cloud: Cloud, deployed: Run
) -> None:
    standin = default_cloud.standin
    project_policy = standin.policy("cloudresourcemanager", f"projects/{PROJECT}")
    service = f"projects/{PROJECT}/locations/us-central1/services/visits"

    assert project_policy["bindings"] == [
        {"role": "roles/owner", "members": [OWNER]},  # the project's own, kept
        {"role": "roles/datastore.user", "members": [f"serviceAccount:{SERVICE_ACCOUNT}"]},
    ]
    assert "condition" not in project_policy["bindings"][1]
    assert standin.policy("run", service)["bindings"] == [
        {"role": "roles/run.invoker", "members": ["allUsers"]}
    ]


def test_without_gateway_flag_api_gateway_is_left_alone(deployed: Run) -> None:
    assert not [call for call in deployed.calls if call.api == "apigateway"]
    [enable] = deployed.requests("serviceusage.services.batchEnable")
    assert not [api for api in enable.body["serviceIds"] if "gateway" in api]


def test_summary_shows_url_curl_and_snippet(deployed: Run, live_server: str) -> None:
    url = live_server.rstrip("/")
    lines = [line.strip() for line in deployed.result.stdout.splitlines()]
    assert f"Function URL: {live_server}" in lines
    assert f"curl -X POST -A 'Mozilla/5.0' -H 'Origin: {SITE}' '{url}/?page=/'" in lines
    placeholder = "\u2013"  # an en dash shows until the count arrives
    assert f'<span data-visit-counter data-endpoint="{url}/">{placeholder}</span>' in lines
    assert '<script src="counter.js" defer></script>' in lines


def test_deploy_smoke_flag_checks_the_deployed_url(deployed: Run, live_server: str) -> None:
    assert f"smoke: all checks passed against {live_server.rstrip('/')}/" in deployed.result.stdout


def test_dry_run_plan_is_what_a_real_run_does(idle_cloud: Cloud, deployed: Run) -> None:
    dry_run = idle_cloud.deploy("--dry-run", "--smoke", ALLOWED_ORIGINS=ORIGINS)

    done = [["gcloud", *call] for call in after_checks(deployed.commands)]
    stdout = dry_run.result.stdout
    assert_plan_is(stdout, done)
    _reads, creates = plan_groups(stdout)
    assert not any(" describe" in " ".join(call) or " list" in " ".join(call) for call in creates)
    # It ends with what to paste into the page.
    assert stdout.rstrip().splitlines()[-1].strip() == '<script src="counter.js" defer></script>'
    assert (dry_run.commands, dry_run.calls) == ([], [])


def test_a_dry_run_takes_the_project_gcloud_is_configured_with(
    clouds: list[Cloud], tmp_path: Path
) -> None:
    cloud = new_cloud(clouds, tmp_path, config_project=CUSTOM_PROJECT, logged_in=False)

    run = cloud.deploy("--dry-run", GOOGLE_CLOUD_PROJECT=None, ALLOWED_ORIGINS=ORIGINS)

    assert run.result.returncode == 0, run.result.stderr
    assert f"in project {CUSTOM_PROJECT}" in run.result.stdout
    assert run.commands == [["config", "get-value", "project"]]  # read locally; nothing sent
    assert run.calls == []


# --- runs that stop ---


def test_native_mode_database_stops_without_touching_anything(empty_project: Cloud) -> None:
    empty_project.standin.add_database("(default)", "FIRESTORE_NATIVE")

    run = empty_project.deploy(ALLOWED_ORIGINS=ORIGINS)

    assert run.result.returncode != 0
    assert "Firestore Native mode" in run.result.stderr
    assert "Datastore mode" in run.result.stderr
    # Enabling the APIs comes first, as asking about the database needs them; then it stops.
    assert [call.method_id for call in run.api_calls] == [
        "serviceusage.services.batchEnable",
        "firestore.projects.databases.get",
    ]
    assert run.created == []


@pytest.mark.parametrize(
    ("denied", "create"),
    [
        ("firestore.projects.databases.get", "firestore.projects.databases.create"),
        ("iam.projects.serviceAccounts.get", "iam.projects.serviceAccounts.create"),
    ],
)
def test_lookup_error_other_than_not_found_stops_the_deploy(
    empty_project: Cloud, denied: str, create: str
) -> None:
    empty_project.standin.denied.add(denied)

    run = empty_project.deploy(ALLOWED_ORIGINS=ORIGINS)

    assert run.result.returncode != 0
    assert "PERMISSION_DENIED" in run.result.stderr
    assert [call.status for call in run.requests(denied)] == [403]
    assert run.requests(create) == []
    assert not [call for call in run.calls if call.api == "cloudfunctions"]


@pytest.mark.parametrize(
    ("env", "args", "fix"),
    [
        pytest.param(
            {"GOOGLE_CLOUD_PROJECT": None}, (), "gcloud config set project", id="no-project"
        ),
        pytest.param(
            {"GOOGLE_CLOUD_PROJECT": None},
            ("--dry-run",),
            "pass --project=",
            id="dry-run-without-project",
        ),
        pytest.param(
            {"ALLOWED_ORIGINS": None}, (), "ALLOWED_ORIGINS=https://", id="no-allowed-origins"
        ),
        pytest.param(
            {"ALLOWED_ORIGINS": "me.example"}, (), "write it as https://", id="origin-not-a-url"
        ),
        pytest.param(
            {"ALLOWED_ORIGINS": "https://me.example,*"},
            ("--dry-run",),
            "is for make run only",
            id="any-origin",
        ),
        pytest.param(
            {"ALLOWED_PAGES": "/a;b"}, (), "must not contain ';'", id="delimiter-in-a-setting"
        ),
        pytest.param(
            {"ALLOWED_PAGES": "/a\n/b"},
            (),
            "ALLOWED_PAGES holds a newline",
            id="newline-in-a-setting",
        ),
        pytest.param(
            {"REPOSITORY_VARIABLES": '{"HISTORY": "off\\n"}'},
            ("--deploy-only",),
            "HISTORY holds a newline",
            id="newline-in-a-repository-variable",
        ),
        pytest.param(
            {"REPOSITORY_VARIABLES": "HISTORY=off"},
            ("--dry-run",),
            "REPOSITORY_VARIABLES must be a JSON object",
            id="repository-variables-not-json",
        ),
        pytest.param({}, ("--bogus",), "--help", id="unknown-argument"),
        pytest.param({}, ("--budget=0",), "--budget needs an amount", id="budget-zero"),
        pytest.param({}, ("--budget=ten",), "--budget needs an amount", id="budget-not-a-number"),
        pytest.param(
            {}, ("--budget=5", "--deploy-only"), "set the budget with a full run", id="budget-ci"
        ),
    ],
)
def test_failed_check_stops_before_anything_is_sent(
    idle_cloud: Cloud, env: dict[str, str | None], args: tuple[str, ...], fix: str
) -> None:
    run = idle_cloud.deploy(*args, **{"ALLOWED_ORIGINS": ORIGINS, **env})

    assert run.result.returncode != 0
    assert fix in run.result.stderr
    assert len(run.result.stderr.strip().splitlines()) == 1
    assert {tuple(call[:2]) for call in run.commands} <= READ_ONLY_CHECKS
    assert run.calls == []


def test_not_logged_in_says_how_to_log_in(clouds: list[Cloud], tmp_path: Path) -> None:
    cloud = new_cloud(clouds, tmp_path, logged_in=False)

    run = cloud.deploy(ALLOWED_ORIGINS=ORIGINS)

    assert run.result.returncode != 0
    assert run.result.stderr.strip() == (
        "deploy.sh: no account is logged in to gcloud; run: gcloud auth login"
    )
    assert run.calls == []


def tools_path(folder: Path, *, python3: bool) -> str:
    """A PATH of one folder with bash and the usual tools, without gcloud, with python3 or not."""
    folder.mkdir()
    for tool in TOOLS:
        (folder / tool).symlink_to(shutil.which(tool))
    if python3:
        (folder / "python3").symlink_to(PYTHON3)
    return str(folder)


@pytest.fixture
def path_without_gcloud(tmp_path: Path) -> str:
    """A PATH with bash, python3 and the usual tools but no gcloud."""
    return tools_path(tmp_path / "tools", python3=True)


def test_missing_gcloud_says_how_to_install_it(idle_cloud: Cloud, path_without_gcloud: str) -> None:
    run = idle_cloud.deploy(PATH=path_without_gcloud, ALLOWED_ORIGINS=ORIGINS)

    assert run.result.returncode != 0
    assert run.result.stderr.strip() == (
        "deploy.sh: gcloud is not installed; install the Google Cloud CLI: "
        "https://cloud.google.com/sdk/docs/install"
    )


@pytest.mark.parametrize("args", [(), ("--dry-run",), ("--help",)], ids=["run", "dry-run", "help"])
def test_missing_python3_says_how_to_install_it(
    idle_cloud: Cloud, tmp_path: Path, args: tuple[str, ...]
) -> None:
    path = tools_path(tmp_path / "tools", python3=False)

    run = idle_cloud.deploy(*args, PATH=path, ALLOWED_ORIGINS=ORIGINS)

    assert run.result.returncode != 0
    assert run.result.stderr.strip() == (
        "deploy.sh: python3 is not installed, and deploy.sh reads the function's settings from "
        "counter/config.py with it; install Python 3.9 or later (apt-get install python3, or "
        "https://www.python.org/downloads/)"
    )


@pytest.mark.parametrize("gcloud_installed", [True, False], ids=["gcloud", "no-gcloud"])
def test_dry_run_prints_the_plan_and_runs_no_gcloud(
    clouds: list[Cloud], tmp_path: Path, path_without_gcloud: str, gcloud_installed: bool
) -> None:
    cloud = new_cloud(clouds, tmp_path, logged_in=False)  # a dry run needs no login
    path = cloud.env()["PATH"] if gcloud_installed else path_without_gcloud

    run = cloud.deploy("--dry-run", PATH=path, ALLOWED_ORIGINS=ORIGINS)

    assert run.result.returncode == 0, run.result.stderr
    assert (run.commands, run.calls) == ([], [])
    assert "assumes nothing exists yet" in run.result.stdout
    commands = [command(call[1:]) for call in plan(run.result.stdout)]
    assert "firestore databases create" in commands
    assert "iam service-accounts create visit-counter" in commands
    assert "functions deploy visits" in commands


def test_dry_run_smoke_only_prints_the_check(idle_cloud: Cloud) -> None:
    run = idle_cloud.deploy("--dry-run", "--smoke", ALLOWED_ORIGINS=ORIGINS)

    assert run.result.returncode == 0, run.result.stderr
    assert f"+ scripts/smoke.sh --origin={SITE} https://FUNCTION_URL/" in run.result.stdout
    assert "smoke: " not in run.result.stdout


def test_help_documents_every_setting(idle_cloud: Cloud) -> None:
    run = idle_cloud.deploy("--help")

    assert run.result.returncode == 0
    deploy_settings = {
        *CUSTOM_SETTINGS,
        "CONCURRENCY",
        "--project",
        "--dry-run",
        "--gateway",
        "--smoke",
        "--budget",
    }
    documented = set(re.findall(r"[A-Z][A-Z_]+[A-Z]|--[a-z-]+", run.result.stdout))
    assert deploy_settings | settings_the_function_reads() <= documented
    # The function's settings, each with the value a deploy gives it when unset.
    lines = {line.strip() for line in run.result.stdout.splitlines()}
    assert {f"{name} [{value}]" for name, value in DEPLOYED_DEFAULTS.items()} <= lines
    assert run.commands == []


# --- settings, the project, the gateway, and a second run ---


def test_settings_from_the_environment_reach_google(custom: Run) -> None:
    [create] = custom.function_requests("create", "counter")  # --budget deploys a guard too
    location = f"projects/{CUSTOM_PROJECT}/locations/europe-west1"

    assert create.body["name"] == f"{location}/functions/counter"
    assert create.body["buildConfig"]["runtime"] == "python311"
    service = create.body["serviceConfig"]
    assert (service["maxInstanceCount"], service["minInstanceCount"]) == (5, 1)
    assert (service["availableCpu"], service["availableMemory"]) == ("2", "1Gi")
    assert service["maxInstanceRequestConcurrency"] == 1
    assert service["environmentVariables"]["THREADS"] == "1"
    assert service["serviceAccountEmail"] == CUSTOM_ACCOUNT
    [database] = custom.requests("firestore.projects.databases.create")
    assert database.query == {"databaseId": "visits"}
    assert database.body["locationId"] == "eur3"
    ttl_paths = [
        call.path
        for call in custom.requests("firestore.projects.databases.collectionGroups.fields.patch")
    ]
    assert len(ttl_paths) == 2
    assert all("/databases/visits/" in path for path in ttl_paths)


def test_every_setting_the_function_reads_is_passed_on_whole(custom: Run) -> None:
    [create] = custom.function_requests("create", "counter")

    assert create.body["serviceConfig"]["environmentVariables"] == {
        "GOOGLE_CLOUD_PROJECT": CUSTOM_PROJECT,
        "ALLOWED_ORIGINS": ORIGINS,
        "THREADS": "1",
        **function_settings(),
    }


def test_project_comes_from_gcloud_config_when_not_set(custom: Run) -> None:
    projects = {
        name for call in custom.calls for name in re.findall(r"projects/([^/:]+)", call.path)
    }

    assert projects - {"-", "123456789012"} == {CUSTOM_PROJECT}


def test_service_account_made_by_hand_is_used_as_it_is(custom: Run) -> None:
    created = [
        call.body["accountId"] for call in custom.requests("iam.projects.serviceAccounts.create")
    ]
    looked_up = [
        call.status
        for call in custom.requests("iam.projects.serviceAccounts.get")
        if call.path.endswith(CUSTOM_ACCOUNT)
    ]

    # Only the gateway's and the guard's accounts are new (--gateway, --budget).
    assert created == ["visit-counter-gateway", "visit-counter-guard"]
    assert looked_up == [200]


def test_gateway_serves_the_function_url(custom_cloud: Cloud, custom: Run) -> None:
    [enable] = custom.requests("serviceusage.services.batchEnable")
    apis = {"apigateway", "servicemanagement", "servicecontrol"}
    assert {f"{api}.googleapis.com" for api in apis} <= set(enable.body["serviceIds"])
    [api] = custom.requests("apigateway.projects.locations.apis.create")
    assert api.query == {"apiId": "counter"}
    [config] = custom.requests("apigateway.projects.locations.apis.configs.create")
    assert re.fullmatch(r"counter-\d{8}-\d{6}", config.query["apiConfigId"])
    # The gateway's own account, which may only invoke the function (tests/test_deploy_gateway.py).
    assert config.body["gatewayServiceAccount"] == CUSTOM_GATEWAY_ACCOUNT
    [document] = config.body["openapiDocuments"]
    spec = yaml.safe_load(base64.urlsafe_b64decode(document["document"]["contents"]))
    assert spec["x-google-backend"]["address"] == custom_cloud.standin.function_url
    [gateway] = custom.requests("apigateway.projects.locations.gateways.create")
    assert gateway.query == {"gatewayId": "counter-gateway"}
    assert gateway.body["apiConfig"] == config.body["name"]
    summary = custom.result.stdout
    assert "Gateway URL:  https://counter-gateway-standin.uc.gateway.dev/" in summary


def test_second_run_creates_nothing_but_a_gateway_config(
    custom_cloud: Cloud, custom: Run, custom_again: Run
) -> None:
    [config] = custom_again.requests("apigateway.projects.locations.apis.configs.create")
    config_name = config.body["name"]

    assert custom_again.created == [f"apigateway {config_name}"]  # a config is immutable
    [update] = custom_again.requests("apigateway.projects.locations.gateways.patch")
    assert update.body["apiConfig"] == config_name
    [patch] = custom_again.function_requests("patch", "counter")
    [create] = custom.function_requests("create", "counter")
    assert patch.body["serviceConfig"] == create.body["serviceConfig"]


def test_second_run_changes_no_access(custom_cloud: Cloud, custom: Run, custom_again: Run) -> None:
    # gcloud writes the bindings again; what they grant stays the same.
    policies = custom_cloud.standin.policies
    bindings = {
        name: policy["bindings"] for api in policies.values() for name, policy in api.items()
    }

    assert bindings == {
        f"projects/{CUSTOM_PROJECT}": [
            {"role": "roles/owner", "members": [OWNER]},
            # Granted by Google itself as Pub/Sub is enabled (--budget), not by deploy.sh.
            {"role": "roles/pubsub.serviceAgent", "members": [PUBSUB_AGENT]},
            {"role": "roles/datastore.user", "members": [f"serviceAccount:{CUSTOM_ACCOUNT}"]},
        ],
        # --gateway: the gateway alone may invoke it; --budget: the guard may change that.
        f"projects/{CUSTOM_PROJECT}/locations/europe-west1/services/counter": [
            {"role": "roles/run.invoker", "members": [f"serviceAccount:{CUSTOM_GATEWAY_ACCOUNT}"]},
            {
                "role": f"projects/{CUSTOM_PROJECT}/roles/visitCounterGuard",
                "members": [f"serviceAccount:{CUSTOM_GUARD_ACCOUNT}"],
            },
        ],
        # The guard's trigger delivers as the guard's account.
        f"projects/{CUSTOM_PROJECT}/locations/europe-west1/services/counter-guard": [
            {"role": "roles/run.invoker", "members": [f"serviceAccount:{CUSTOM_GUARD_ACCOUNT}"]}
        ],
    }


def test_project_flag_wins_over_the_environment(custom_again: Run) -> None:
    commands = after_checks(custom_again.commands)
    # add-iam-policy-binding and billing projects take the project as their argument, every other
    # command as --project, but for budgets, which belong to the billing account.
    projects = {
        flags(call).get("project", call[3] if call[0] == "billing" else call[2])
        for call in commands
        if call[:2] != ["billing", "accounts"] and call[:2] != ["billing", "budgets"]
    }

    assert projects == {CUSTOM_PROJECT}
    # The stand-in refuses any other project with 403, which would have stopped the run.
    assert not [call for call in custom_again.calls if call.status == 403]


def test_no_request_names_the_default_compute_account(deployed: Run, custom: Run) -> None:
    sent = [f"{call.path} {call.query} {call.body}" for call in deployed.calls + custom.calls]
    assert not [text for text in sent if COMPUTE_ACCOUNT in text]
    assert not [text for text in sent if "appspot.gserviceaccount.com" in text]


# --- scripts/smoke.sh on its own ---


def smoke(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run scripts/smoke.sh."""
    return subprocess.run(
        [str(ROOT / "scripts" / "smoke.sh"), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_smoke_passes_against_a_live_function(live_server: str) -> None:
    result = smoke(live_server, ALLOWED_ORIGINS=SITE)

    assert result.returncode == 0, result.stdout + result.stderr
    get, post, options = result.stdout.splitlines()[:3]
    assert get.split()[:2] == ["GET", "200"]
    assert post.split()[:2] == ["POST", "200"]
    assert '"counted":true' in post  # a visit that counts: the write path was exercised
    assert options.split() == ["OPTIONS", "204"]


@pytest.mark.parametrize(
    ("server_up", "origin", "failed"),
    [
        pytest.param(True, "https://elsewhere.example", "POST answered 403", id="foreign-origin"),
        pytest.param(False, SITE, "GET answered 000", id="nothing-listens"),
    ],
)
def test_smoke_fails_on_an_unexpected_status(
    live_server: str, server_up: bool, origin: str, failed: str
) -> None:
    target = live_server if server_up else f"http://127.0.0.1:{free_port()}/"
    result = smoke(f"--origin={origin}", target)

    assert result.returncode != 0
    assert failed in result.stdout


# --- --budget ---


def test_budget_alerts_on_this_projects_spend(custom: Run) -> None:
    [enable] = custom.requests("serviceusage.services.batchEnable")
    assert {"cloudbilling.googleapis.com", "billingbudgets.googleapis.com"} <= set(
        enable.body["serviceIds"]
    )
    [create] = custom.requests("billingbudgets.billingAccounts.budgets.create")

    # gcloud has no endpoint override for this API: it went over https to its real host.
    assert create.host == "billingbudgets.googleapis.com"
    assert create.path == f"v1/{BILLING_ACCOUNT}/budgets"
    assert create.body == {
        "displayName": f"Visit counter ({CUSTOM_PROJECT})",
        # The billing account's currency, which is not gcloud's default.
        "amount": {
            "specifiedAmount": {"currencyCode": BILLING_CURRENCY, "units": BUDGET, "nanos": 0}
        },
        "budgetFilter": {"projects": [f"projects/{CUSTOM_PROJECT}"]},
        "thresholdRules": [
            {"thresholdPercent": 0.5},
            {"thresholdPercent": 0.9},
            {"thresholdPercent": 1.0},
        ],
        # The emails as before, and the guard's topic (tests/test_deploy_budget.py).
        "notificationsRule": {
            "disableDefaultIamRecipients": False,
            "pubsubTopic": f"projects/{CUSTOM_PROJECT}/topics/counter-budget",
            "schemaVersion": "1.0",
        },
    }
    assert f'Budget "Visit counter ({CUSTOM_PROJECT})": {BUDGET} {BILLING_CURRENCY} a month' in (
        custom.result.stdout
    )


def test_budget_is_created_once(custom_again: Run) -> None:
    assert custom_again.requests("billingbudgets.billingAccounts.budgets.create") == []
    [listed] = custom_again.requests("billingbudgets.billingAccounts.budgets.list")
    assert listed.status == 200
    assert f'Budget "Visit counter ({CUSTOM_PROJECT})" exists already' in custom_again.result.stdout


def test_budget_without_a_billing_account_says_so_and_deploys(
    full_deploys: dict[str, Future],
) -> None:
    run = succeeded(full_deploys["unbilled"].result())

    assert f"No budget: project {PROJECT} has no billing account" in run.result.stdout
    assert [call.method_id for call in run.api_calls if "billing" in call.api] == [
        "cloudbilling.projects.getBillingInfo"
    ]
    assert run.requests("cloudfunctions.projects.locations.functions.create")
    assert "Function URL: " in run.result.stdout


def test_dry_run_plans_the_budget_a_real_run_makes(idle_cloud: Cloud, custom: Run) -> None:
    dry_run = idle_cloud.deploy(
        f"--budget={BUDGET}",
        "--dry-run",
        f"--project={CUSTOM_PROJECT}",
        ALLOWED_ORIGINS=ORIGINS,
        FUNCTION_NAME=CUSTOM_SETTINGS["FUNCTION_NAME"],  # which names the budget's topic
    )

    assert dry_run.result.returncode == 0, dry_run.result.stderr
    # A dry run cannot know the billing account or its currency; it shows where they go.
    stdout = dry_run.result.stdout.replace(
        "BILLING_ACCOUNT_ID", BILLING_ACCOUNT.removeprefix("billingAccounts/")
    ).replace(f"{BUDGET}CURRENCY", f"{BUDGET}{BILLING_CURRENCY}")
    planned = [call for call in plan(stdout) if call[1] == "billing"]  # reads, then creates
    done = [["gcloud", *call] for call in custom.commands if call[0] == "billing"]
    assert sorted(planned) == sorted(done)
    assert [command(call[1:]) for call in done] == [
        f"billing projects describe {CUSTOM_PROJECT}",
        "billing accounts describe 01A2B3-C4D5E6-F7A8B9",
        "billing budgets list",
        "billing budgets create",
        "billing budgets list",  # again, for the new budget's id, which the guard checks
    ]
    assert (dry_run.commands, dry_run.calls) == ([], [])
