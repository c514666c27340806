"""deploy.sh and scripts/smoke.sh, run for real against a fake gcloud (tests/fakes/gcloud)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from counter import unique
from counter.config import Settings
from scripts.emulator import free_port

ROOT = Path(__file__).resolve().parent.parent
FAKES = ROOT / "tests" / "fakes"
PROJECT = "counter-project"
ORIGINS = "https://me.example,https://www.me.example"
SERVICE_ACCOUNT = f"visit-counter@{PROJECT}.iam.gserviceaccount.com"
FUNCTION_URL = "https://visits-fake-uc.a.run.app"
SYSTEM_PATH = os.environ["PATH"]
# The only gcloud calls allowed before every check has passed: they create nothing.
READ_ONLY_CHECKS = {("auth", "list"), ("config", "get-value")}
# What deploy.sh needs besides gcloud, for runs on a PATH that holds no gcloud.
TOOLS = ("bash", "env", "dirname", "mktemp", "rm", "awk", "sed", "date", "grep", "cat", "sleep")


@dataclass
class FakeCloud:
    """A project as the fake gcloud sees it, kept in files under a test's tmp_path."""

    home: Path

    @property
    def log(self) -> Path:
        """One JSON argv per gcloud call."""
        return self.home / "gcloud-calls.jsonl"

    @property
    def state(self) -> Path:
        """What exists in the fake project."""
        return self.home / "gcloud-state.json"

    def env(self, **overrides: str | None) -> dict[str, str]:
        """deploy.sh's environment: logged in, a project, ALLOWED_ORIGINS; None removes a name."""
        env = {
            # The fake's python3 is this interpreter: quick to start, unlike a version shim.
            "PATH": os.pathsep.join([str(FAKES), str(Path(sys.executable).parent), SYSTEM_PATH]),
            "HOME": str(self.home),
            # Should the real gcloud ever run, it finds no credentials and changes nothing.
            "CLOUDSDK_CONFIG": str(self.home / "no-gcloud-config"),
            "FAKE_GCLOUD_LOG": str(self.log),
            "FAKE_GCLOUD_STATE": str(self.state),
            "FAKE_GCLOUD_ACCOUNT": "me@example.com",
            "GOOGLE_CLOUD_PROJECT": PROJECT,
            "ALLOWED_ORIGINS": ORIGINS,
        }
        env.update(overrides)
        return {name: value for name, value in env.items() if value is not None}

    def deploy(self, *args: str, **env: str | None) -> subprocess.CompletedProcess[str]:
        """Run deploy.sh from another folder, as a user might."""
        full_env = self.env(**env)
        gcloud = shutil.which("gcloud", path=full_env["PATH"])
        assert gcloud in (None, str(FAKES / "gcloud")), f"the real gcloud would run: {gcloud}"
        return subprocess.run(
            [str(ROOT / "deploy.sh"), *args],
            cwd=self.home,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def calls(self) -> list[list[str]]:
        """Every gcloud call so far, as argv lists."""
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def world(self) -> dict:
        """The fake project's resources."""
        return json.loads(self.state.read_text())


@dataclass(frozen=True)
class Run:
    """One finished deploy.sh run and the gcloud calls it made."""

    home: Path
    result: subprocess.CompletedProcess[str]
    calls: list[list[str]]
    world: dict


@pytest.fixture
def cloud(tmp_path: Path) -> FakeCloud:
    """An empty fake project, logged in."""
    return FakeCloud(tmp_path)


def run_in(home: Path, *args: str) -> Run:
    """Deploy into the fake project kept in home, recording only this run's calls."""
    cloud = FakeCloud(home)
    cloud.log.unlink(missing_ok=True)
    result = cloud.deploy(*args)
    assert result.returncode == 0, result.stderr
    return Run(home, result, cloud.calls(), cloud.world())


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """A default deploy into an empty project, shared by the tests that only read it."""
    return run_in(tmp_path_factory.mktemp("deployed"))


@pytest.fixture(scope="module")
def deployed_with_gateway(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """A --gateway deploy into an empty project, shared by the tests that only read it."""
    return run_in(tmp_path_factory.mktemp("gateway"), "--gateway")


@pytest.fixture(scope="module")
def redeployed(deployed: Run) -> Run:
    """The same default deploy run again, into the project the first run set up."""
    return run_in(deployed.home)


@pytest.fixture
def path_without_gcloud(tmp_path: Path) -> str:
    """A PATH with bash and the usual tools but no gcloud."""
    tools = tmp_path / "tools"
    tools.mkdir()
    for tool in TOOLS:
        (tools / tool).symlink_to(shutil.which(tool))
    return str(tools)


def command(call: list[str]) -> str:
    """The command's words before its flags, e.g. "functions deploy visits"."""
    return " ".join(word for word in call if not word.startswith("-"))


def flags(call: list[str]) -> dict[str, str]:
    """The call's --name=value flags; bare --name flags map to ""."""
    return dict(arg[2:].partition("=")[::2] for arg in call if arg.startswith("--"))


def calls_of(calls: list[list[str]], prefix: str) -> list[list[str]]:
    """The calls whose command starts with prefix."""
    return [call for call in calls if command(call).startswith(prefix)]


def parse_env_vars(value: str) -> dict[str, str]:
    """Split a --set-env-vars value as gcloud does, ^DELIM^ included (`gcloud topic escaping`)."""
    delimiter = ","
    if value.startswith("^"):
        delimiter, value = value[1:].split("^", 1)
    return dict(item.split("=", 1) for item in value.split(delimiter))


def test_deploy_spells_out_every_flag(deployed: Run) -> None:
    [deploy] = calls_of(deployed.calls, "functions deploy")
    assert deploy[:3] == ["functions", "deploy", "visits"]
    deploy_flags = flags(deploy)
    assert deploy_flags.pop("set-env-vars")
    assert deploy_flags == {
        "gen2": "",
        "runtime": "python312",
        "region": "us-central1",
        "source": ".",
        "entry-point": "visits",
        "trigger-http": "",
        "allow-unauthenticated": "",
        "service-account": SERVICE_ACCOUNT,
        "max-instances": "3",
        "min-instances": "0",
        "cpu": "1",
        "memory": "512Mi",
        "concurrency": "8",
        "project": PROJECT,
        "quiet": "",
    }


def test_source_is_the_repository_wherever_deploy_is_started(deployed: Run) -> None:
    # FakeCloud.deploy starts deploy.sh from the test's own folder, not the repository.
    assert deployed.world["functions"]["visits"]["source_dir"] == str(ROOT)


def test_function_environment_keeps_commas_in_origins(deployed: Run) -> None:
    [deploy] = calls_of(deployed.calls, "functions deploy")
    assert parse_env_vars(flags(deploy)["set-env-vars"]) == {
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "ALLOWED_ORIGINS": ORIGINS,
        "THREADS": "8",
    }


def test_settings_from_the_environment_reach_gcloud(cloud: FakeCloud) -> None:
    result = cloud.deploy(
        REGION="europe-west1",
        FUNCTION_NAME="counter",
        MAX_INSTANCES="5",
        SERVICE_ACCOUNT_NAME="counter-runtime",
        DATASTORE_DATABASE="visits",
        ALLOWED_PAGES="/,/blog/*",
        DEFAULT_PAGE="/home",
    )

    assert result.returncode == 0, result.stderr
    calls = cloud.calls()
    [deploy] = calls_of(calls, "functions deploy")
    assert deploy[2] == "counter"
    assert flags(deploy)["region"] == "europe-west1"
    assert flags(deploy)["max-instances"] == "5"
    assert flags(deploy)["service-account"] == f"counter-runtime@{PROJECT}.iam.gserviceaccount.com"
    assert parse_env_vars(flags(deploy)["set-env-vars"]) == {
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "ALLOWED_ORIGINS": ORIGINS,
        "THREADS": "8",
        "DATASTORE_DATABASE": "visits",
        "ALLOWED_PAGES": "/,/blog/*",
        "DEFAULT_PAGE": "/home",
    }
    [create_db] = calls_of(calls, "firestore databases create")
    assert flags(create_db) == {
        "database": "visits",
        "location": "europe-west1",
        "type": "datastore-mode",
        "project": PROJECT,
    }


def test_instance_size_and_threads_follow_the_settings(cloud: FakeCloud) -> None:
    result = cloud.deploy(CPU="2", MEMORY="1Gi", CONCURRENCY="1", MIN_INSTANCES="1")

    assert result.returncode == 0, result.stderr
    [deploy] = calls_of(cloud.calls(), "functions deploy")
    deploy_flags = flags(deploy)
    assert (deploy_flags["cpu"], deploy_flags["memory"]) == ("2", "1Gi")
    assert (deploy_flags["concurrency"], deploy_flags["min-instances"]) == ("1", "1")
    assert parse_env_vars(deploy_flags["set-env-vars"])["THREADS"] == "1"


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
    return env.asked - {"DATASTORE_EMULATOR_HOST"}  # meaningful only on a developer's machine


def test_every_setting_the_function_reads_can_be_passed_on(cloud: FakeCloud) -> None:
    set_by_deploy = {"GOOGLE_CLOUD_PROJECT", "ALLOWED_ORIGINS"}
    values = {name: f"value-of-{name.lower()}" for name in settings_the_function_reads()}
    for name in set_by_deploy:
        del values[name]

    result = cloud.deploy(**values)

    assert result.returncode == 0, result.stderr
    [deploy] = calls_of(cloud.calls(), "functions deploy")
    passed = parse_env_vars(flags(deploy)["set-env-vars"])
    assert passed == {
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "ALLOWED_ORIGINS": ORIGINS,
        "THREADS": "8",
        **values,
    }


def test_project_comes_from_gcloud_config_when_not_set(cloud: FakeCloud) -> None:
    result = cloud.deploy(GOOGLE_CLOUD_PROJECT=None, FAKE_GCLOUD_PROJECT="config-project")

    assert result.returncode == 0, result.stderr
    [deploy] = calls_of(cloud.calls(), "functions deploy")
    assert flags(deploy)["project"] == "config-project"
    assert flags(deploy)["service-account"].endswith("@config-project.iam.gserviceaccount.com")


def test_project_flag_wins_over_the_environment(cloud: FakeCloud) -> None:
    result = cloud.deploy("--project=flag-project")

    assert result.returncode == 0, result.stderr
    calls = [call for call in cloud.calls() if tuple(call[:2]) not in READ_ONLY_CHECKS]
    # add-iam-policy-binding takes the project as its argument, every other call as --project.
    assert {flags(call).get("project", call[2]) for call in calls} == {"flag-project"}


def test_first_run_creates_database_and_service_account(deployed: Run) -> None:
    calls = deployed.calls
    [create_db] = calls_of(calls, "firestore databases create")
    assert flags(create_db)["database"] == "(default)"
    assert flags(create_db)["type"] == "datastore-mode"
    [create_sa] = calls_of(calls, "iam service-accounts create")
    assert create_sa[3] == "visit-counter"
    assert deployed.world["service_accounts"] == [SERVICE_ACCOUNT]


def test_first_run_sets_ttl_on_the_kinds_that_expire(deployed: Run) -> None:
    updates = calls_of(deployed.calls, "firestore fields ttls update")

    policies = {(flags(call)["collection-group"], call[4]) for call in updates}
    assert policies == {
        (unique.MARKER_KIND, unique.EXPIRE_AT),
        (unique.SALT_KIND, unique.EXPIRE_AT),
    }
    for call in updates:
        assert "enable-ttl" in flags(call)
        assert flags(call)["database"] == "(default)"


def test_service_account_gets_datastore_user_and_nothing_else(deployed: Run) -> None:
    [binding] = calls_of(deployed.calls, "projects add-iam-policy-binding")
    assert binding[2] == PROJECT
    assert flags(binding) == {
        "member": f"serviceAccount:{SERVICE_ACCOUNT}",
        "role": "roles/datastore.user",
        "condition": "None",
        "format": "none",
    }


def test_no_call_uses_the_default_compute_account(deployed_with_gateway: Run) -> None:
    words = [word for call in deployed_with_gateway.calls for word in call]
    assert not [word for word in words if "compute@developer.gserviceaccount.com" in word]
    assert not [word for word in words if "appspot.gserviceaccount.com" in word]


def test_second_run_creates_nothing_but_a_new_revision(redeployed: Run) -> None:
    calls = redeployed.calls

    assert [command(call) for call in calls if "create" in call] == []
    assert calls_of(calls, "firestore fields ttls update") == []
    assert len(calls_of(calls, "functions deploy")) == 1


def test_database_and_account_made_by_hand_are_used_as_they_are(cloud: FakeCloud) -> None:
    result = cloud.deploy(FAKE_GCLOUD_SA_EXISTS="1", FAKE_GCLOUD_DB_TYPE="DATASTORE_MODE")

    assert result.returncode == 0, result.stderr
    assert [command(call) for call in cloud.calls() if "create" in call] == []


def test_native_mode_database_stops_without_touching_anything(cloud: FakeCloud) -> None:
    result = cloud.deploy(FAKE_GCLOUD_DB_TYPE="FIRESTORE_NATIVE")

    assert result.returncode != 0
    assert "Firestore Native mode" in result.stderr
    assert "Datastore mode" in result.stderr
    ran = [command(call) for call in cloud.calls() if tuple(call[:2]) not in READ_ONLY_CHECKS]
    # Enabling the APIs comes first, as asking about the database needs them; then it stops.
    assert [name for name in ran if not name.startswith("services enable")] == [
        "firestore databases describe"
    ]


@pytest.mark.parametrize(
    "denied", ["firestore databases describe", "iam service-accounts describe"]
)
def test_lookup_error_other_than_not_found_stops_the_deploy(cloud: FakeCloud, denied: str) -> None:
    result = cloud.deploy(FAKE_GCLOUD_DENY=denied)

    assert result.returncode != 0
    assert "PERMISSION_DENIED" in result.stderr
    done = [command(call) for call in cloud.calls()]
    assert not [word for word in done if word.startswith(denied.replace("describe", "create"))]
    assert not [word for word in done if word.startswith("functions deploy")]


@pytest.mark.parametrize(
    ("env", "args", "fix"),
    [
        pytest.param({"FAKE_GCLOUD_ACCOUNT": ""}, (), "gcloud auth login", id="not-logged-in"),
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
            {"ALLOWED_PAGES": "/a;b"}, (), "must not contain ';'", id="delimiter-in-a-setting"
        ),
        pytest.param({}, ("--bogus",), "--help", id="unknown-argument"),
    ],
)
def test_failed_check_stops_before_anything_is_created(
    cloud: FakeCloud, env: dict[str, str | None], args: tuple[str, ...], fix: str
) -> None:
    result = cloud.deploy(*args, **env)

    assert result.returncode != 0
    assert fix in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert {tuple(call[:2]) for call in cloud.calls()} <= READ_ONLY_CHECKS


def test_missing_gcloud_says_how_to_install_it(cloud: FakeCloud, path_without_gcloud: str) -> None:
    result = cloud.deploy(PATH=path_without_gcloud)

    assert result.returncode != 0
    assert result.stderr.strip() == (
        "deploy.sh: gcloud is not installed; install the Google Cloud CLI: "
        "https://cloud.google.com/sdk/docs/install"
    )


def plan(stdout: str) -> list[list[str]]:
    """The commands a dry run printed, split as the shell would."""
    return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]


@pytest.mark.parametrize("gcloud_installed", [True, False], ids=["fake-gcloud", "no-gcloud"])
def test_dry_run_prints_the_plan_and_runs_no_gcloud(
    cloud: FakeCloud, path_without_gcloud: str, gcloud_installed: bool
) -> None:
    path = cloud.env()["PATH"] if gcloud_installed else path_without_gcloud
    result = cloud.deploy("--dry-run", PATH=path, FAKE_GCLOUD_ACCOUNT="")

    assert result.returncode == 0, result.stderr
    assert not cloud.log.exists()
    assert "assumes nothing exists yet" in result.stdout
    commands = [command(call[1:]) for call in plan(result.stdout)]
    assert "firestore databases create" in commands
    assert "iam service-accounts create visit-counter" in commands
    assert "functions deploy visits" in commands


def test_dry_run_plan_is_what_a_real_run_does(cloud: FakeCloud, deployed: Run) -> None:
    planned = plan(cloud.deploy("--dry-run").stdout)

    done = [call for call in deployed.calls if tuple(call[:2]) not in READ_ONLY_CHECKS]
    assert planned == [["gcloud", *call] for call in done]


def test_summary_shows_url_curl_and_snippet(deployed: Run) -> None:
    lines = [line.strip() for line in deployed.result.stdout.splitlines()]
    assert f"Function URL: {FUNCTION_URL}" in lines
    assert (
        f"curl -X POST -A 'Mozilla/5.0' -H 'Origin: https://me.example' '{FUNCTION_URL}/?page=/'"
        in lines
    )
    placeholder = "\u2013"  # an en dash shows until the count arrives
    span = f'<span data-visit-counter data-endpoint="{FUNCTION_URL}/">{placeholder}</span>'
    assert span in lines
    assert '<script src="counter.js" defer></script>' in lines


def test_help_documents_every_setting(cloud: FakeCloud) -> None:
    result = cloud.deploy("--help")

    assert result.returncode == 0
    deploy_settings = {
        "REGION",
        "FUNCTION_NAME",
        "RUNTIME",
        "MAX_INSTANCES",
        "CPU",
        "CONCURRENCY",
        "MEMORY",
        "MIN_INSTANCES",
        "SERVICE_ACCOUNT_NAME",
        "FIRESTORE_LOCATION",
        "--project",
        "--dry-run",
        "--gateway",
        "--smoke",
    }
    documented = set(re.findall(r"[A-Z][A-Z_]+[A-Z]|--[a-z-]+", result.stdout))
    assert deploy_settings | settings_the_function_reads() <= documented
    assert not cloud.log.exists()


def test_without_gateway_flag_api_gateway_is_left_alone(deployed: Run) -> None:
    calls = deployed.calls
    assert calls_of(calls, "api-gateway") == []
    [enable] = calls_of(calls, "services enable")
    assert not [api for api in enable if api.startswith("apigateway")]


def test_gateway_serves_the_function_url(deployed_with_gateway: Run) -> None:
    calls = deployed_with_gateway.calls
    [enable] = calls_of(calls, "services enable")
    assert {
        "apigateway.googleapis.com",
        "servicemanagement.googleapis.com",
        "servicecontrol.googleapis.com",
    } <= set(enable)
    assert len(calls_of(calls, "api-gateway apis create visits")) == 1
    [config] = calls_of(calls, "api-gateway api-configs create")
    assert re.fullmatch(r"visits-\d{8}-\d{6}", config[3])
    assert flags(config)["api"] == "visits"
    assert flags(config)["backend-auth-service-account"] == SERVICE_ACCOUNT
    [gateway] = calls_of(calls, "api-gateway gateways create visits-gateway")
    assert flags(gateway)["api-config"] == config[3]
    spec = yaml.safe_load(deployed_with_gateway.world["api_configs"][config[3]])
    assert spec["x-google-backend"]["address"] == FUNCTION_URL
    summary = deployed_with_gateway.result.stdout
    assert "Gateway URL:  https://visits-gateway-fake.uc.gateway.dev/" in summary


def test_gateway_second_run_updates_the_gateway(deployed_with_gateway: Run) -> None:
    calls = run_in(deployed_with_gateway.home, "--gateway").calls

    assert calls_of(calls, "api-gateway apis create") == []
    assert calls_of(calls, "api-gateway gateways create") == []
    [config] = calls_of(calls, "api-gateway api-configs create")
    [update] = calls_of(calls, "api-gateway gateways update visits-gateway")
    assert flags(update)["api-config"] == config[3]


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
    result = smoke(live_server, ALLOWED_ORIGINS="https://site.example")

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
        pytest.param(False, "https://site.example", "GET answered 000", id="nothing-listens"),
    ],
)
def test_smoke_fails_on_an_unexpected_status(
    live_server: str, server_up: bool, origin: str, failed: str
) -> None:
    target = live_server if server_up else f"http://127.0.0.1:{free_port()}/"
    result = smoke(f"--origin={origin}", target)

    assert result.returncode != 0
    assert failed in result.stdout


def test_deploy_smoke_flag_checks_the_deployed_url(cloud: FakeCloud, live_server: str) -> None:
    result = cloud.deploy(
        "--smoke", ALLOWED_ORIGINS="https://site.example", FAKE_GCLOUD_FUNCTION_URL=live_server
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"smoke: all checks passed against {live_server}" in result.stdout


def test_dry_run_smoke_only_prints_the_check(cloud: FakeCloud) -> None:
    result = cloud.deploy("--dry-run", "--smoke")

    assert result.returncode == 0, result.stderr
    assert "+ scripts/smoke.sh --origin=https://me.example https://FUNCTION_URL/" in result.stdout
    assert "smoke: " not in result.stdout
