"""deploy.sh's part in deploying from GitHub Actions, run for real against the fake gcloud.

`--github=OWNER/REPO` sets up keyless deploys once; `--deploy-only` is what the Deploy workflow
runs as the deployer it set up.
"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from fake_gcloud import (
    PROJECT,
    FakeCloud,
    after_checks,
    calls_of,
    command,
    flags,
    plan,
)

REPO = "you/your-site"
NUMBER = "123456789012"  # the fake project's number (tests/fakes/gcloud)
POOL = f"projects/{NUMBER}/locations/global/workloadIdentityPools/github"
PROVIDER = f"{POOL}/providers/visit-counter"
DEPLOYER = f"visit-counter-deployer@{PROJECT}.iam.gserviceaccount.com"
RUNTIME = f"visit-counter@{PROJECT}.iam.gserviceaccount.com"
CONDITION = 'assertion.repository == "you/your-site" && assertion.ref == "refs/heads/main"'
# What roles/cloudfunctions.developer lets the deployer do (with actAs on the runtime account).
DEPLOYER_MAY = {"functions describe", "functions deploy"}


@dataclass(frozen=True)
class Run:
    """One finished deploy.sh run, its gcloud calls and the project it left."""

    result: subprocess.CompletedProcess[str]
    calls: list[list[str]]
    world: dict


def deploy(cloud: FakeCloud, *args: str, **env: str | None) -> Run:
    """Run deploy.sh, which must succeed."""
    result = cloud.deploy(*args, **env)
    assert result.returncode == 0, result.stderr
    return Run(result, cloud.calls(), cloud.world())


@pytest.fixture
def cloud(tmp_path: Path) -> FakeCloud:
    """An empty fake project, logged in."""
    return FakeCloud(tmp_path)


@pytest.fixture(scope="module")
def github_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of the fake project that the module's --github runs share."""
    return tmp_path_factory.mktemp("github")


@pytest.fixture(scope="module")
def first(github_home: Path) -> Run:
    """The owner's first run with --github, into an empty project."""
    return deploy(FakeCloud(github_home), f"--github={REPO}")


@pytest.fixture(scope="module")
def second(first: Run, github_home: Path) -> Run:
    """The same run again, into the project the first one set up."""
    return deploy(FakeCloud(github_home), f"--github={REPO}")


def github_calls(calls: list[list[str]]) -> list[list[str]]:
    """The calls that concern GitHub's access, in order: what a run without --github skips."""
    return [
        call
        for call in calls
        if command(call).startswith(("projects describe", "iam workload-identity-pools"))
        or "visit-counter-deployer" in " ".join(call)
    ]


def test_github_sets_up_pool_provider_and_deployer_in_order(first: Run) -> None:
    assert [command(call) for call in github_calls(first.calls)] == [
        f"projects describe {PROJECT}",
        "iam workload-identity-pools describe github",
        "iam workload-identity-pools create github",
        "iam workload-identity-pools providers describe visit-counter",
        "iam workload-identity-pools providers create-oidc visit-counter",
        f"iam service-accounts describe {DEPLOYER}",
        "iam service-accounts create visit-counter-deployer",
        f"projects add-iam-policy-binding {PROJECT}",
        f"iam service-accounts add-iam-policy-binding {RUNTIME}",
        f"iam service-accounts add-iam-policy-binding {DEPLOYER}",
    ]
    # All of it before the function is deployed, so a refusal stops the run before that.
    deploy_at = [command(call) for call in first.calls].index("functions deploy visits")
    last_github_call = first.calls.index(github_calls(first.calls)[-1])
    assert last_github_call < deploy_at


def test_provider_admits_only_the_repositorys_main_branch(first: Run) -> None:
    [create] = calls_of(first.calls, "iam workload-identity-pools providers create-oidc")
    assert flags(create) == {
        "workload-identity-pool": "github",
        "location": "global",
        "project": PROJECT,
        "issuer-uri": "https://token.actions.githubusercontent.com",
        "attribute-mapping": "google.subject=assertion.sub,"
        "attribute.repository=assertion.repository,attribute.ref=assertion.ref",
        "attribute-condition": CONDITION,
        "display-name": "GitHub Actions deploys",
        "description": f"Pushes to main of {REPO} deploy visits",
    }


def test_pool_is_global_and_apis_for_token_exchange_are_enabled(first: Run) -> None:
    [pool] = calls_of(first.calls, "iam workload-identity-pools create")
    assert flags(pool) == {
        "location": "global",
        "display-name": "GitHub Actions",
        "project": PROJECT,
    }
    [enable] = calls_of(first.calls, "services enable")
    assert {
        "sts.googleapis.com",
        "iamcredentials.googleapis.com",
        "cloudresourcemanager.googleapis.com",
    } <= set(enable)


def test_deployer_may_deploy_and_nothing_more(first: Run) -> None:
    deployer = f"serviceAccount:{DEPLOYER}"
    project_roles = [role for role, member in first.world["project_bindings"] if member == deployer]
    assert project_roles == ["roles/cloudfunctions.developer"]
    assert first.world["sa_bindings"] == {
        # Acting as the function's own account, on that account alone.
        RUNTIME: [["roles/iam.serviceAccountUser", deployer]],
        # Only the repository's tokens may act as the deployer.
        DEPLOYER: [
            [
                "roles/iam.workloadIdentityUser",
                f"principalSet://iam.googleapis.com/{POOL}/attribute.repository/{REPO}",
            ]
        ],
    }
    roles = {flags(call).get("role") for call in first.calls}
    assert not roles & {"roles/owner", "roles/editor", "roles/run.admin"}


def test_github_second_run_creates_nothing(first: Run, second: Run) -> None:
    made = [command(call) for call in second.calls if {"create", "create-oidc"} & set(call)]
    assert made == []
    assert calls_of(second.calls, "iam workload-identity-pools undelete") == []
    assert second.world["pools"] == first.world["pools"]
    assert second.world["providers"] == first.world["providers"]
    assert second.world["project_bindings"] == first.world["project_bindings"]
    assert second.world["sa_bindings"] == first.world["sa_bindings"]


def test_github_dry_run_prints_the_plan_and_runs_nothing(cloud: FakeCloud, first: Run) -> None:
    result = cloud.deploy("--dry-run", f"--github={REPO}")

    assert result.returncode == 0, result.stderr
    assert not cloud.log.exists()
    # A dry run cannot know the project's number; it shows where it goes.
    planned = plan(result.stdout.replace("PROJECT_NUMBER", NUMBER))
    assert planned == [["gcloud", *call] for call in after_checks(first.calls)]
    assert "GCP_WORKLOAD_IDENTITY_PROVIDER=projects/PROJECT_NUMBER/" in result.stdout


def gh_commands(stdout: str) -> list[list[str]]:
    """The `gh variable set` commands printed, split as the shell would."""
    lines = [line.strip() for line in stdout.splitlines()]
    return [shlex.split(line) for line in lines if line.startswith("gh variable set ")]


def test_github_prints_the_two_values_and_gh_commands(first: Run) -> None:
    lines = [line.strip() for line in first.result.stdout.splitlines()]
    assert f"GCP_WORKLOAD_IDENTITY_PROVIDER={PROVIDER}" in lines
    assert f"GCP_SERVICE_ACCOUNT={DEPLOYER}" in lines

    commands = gh_commands(first.result.stdout)
    assert {tuple(words[:3] + words[4:6]) for words in commands} == {
        ("gh", "variable", "set", "--repo", REPO)
    }
    assert {words[3]: words[7] for words in commands} == {
        "GCP_WORKLOAD_IDENTITY_PROVIDER": PROVIDER,
        "GCP_SERVICE_ACCOUNT": DEPLOYER,
        "GCP_PROJECT": PROJECT,
        "ALLOWED_ORIGINS": "https://me.example,https://www.me.example",
    }
    assert {words[6] for words in commands} == {"--body"}


def test_github_prints_the_settings_this_run_was_given(cloud: FakeCloud) -> None:
    run = deploy(
        cloud, f"--github={REPO}", REGION="europe-west1", ALLOWED_PAGES="/,/blog/*", MEMORY=""
    )

    printed = {words[3]: words[7] for words in gh_commands(run.result.stdout)}
    assert printed["REGION"] == "europe-west1"
    assert printed["ALLOWED_PAGES"] == "/,/blog/*"
    # Defaults are left to the deploy: the workflow passes unset variables on as empty.
    assert not {"MEMORY", "RUNTIME", "FUNCTION_NAME", "DATASTORE_DATABASE"} & set(printed)


@pytest.mark.parametrize(
    "argument",
    ["--github=", "--github=you", "--github=you/site/extra", "--github=you/my site", "--github"],
)
def test_github_needs_owner_and_repository(cloud: FakeCloud, argument: str) -> None:
    result = cloud.deploy(argument)

    assert result.returncode != 0
    assert "--github needs the repository as OWNER/REPO" in result.stderr
    assert cloud.calls() == []


def test_github_and_deploy_only_do_not_mix(cloud: FakeCloud) -> None:
    result = cloud.deploy(f"--github={REPO}", "--deploy-only")

    assert result.returncode != 0
    assert "use one" in result.stderr
    assert cloud.calls() == []


def test_provider_of_another_repository_is_left_untouched(cloud: FakeCloud) -> None:
    deploy(cloud, "--github=you/old-site")

    result = cloud.deploy(f"--github={REPO}")

    assert result.returncode != 0
    assert 'admits (assertion.repository == "you/old-site"' in result.stderr
    assert "WIF_PROVIDER=another-name" in result.stderr
    assert calls_of(cloud.calls(), "functions deploy") == []
    [provider] = cloud.world()["providers"].values()
    assert "you/old-site" in provider["attributeCondition"]


def test_another_provider_name_serves_another_repository(cloud: FakeCloud) -> None:
    deploy(cloud, "--github=you/old-site")

    run = deploy(cloud, f"--github={REPO}", WIF_PROVIDER="your-site")

    assert set(run.world["providers"]) == {"github/visit-counter", "github/your-site"}
    assert run.world["providers"]["github/your-site"]["attributeCondition"] == CONDITION
    assert f"GCP_WORKLOAD_IDENTITY_PROVIDER={POOL}/providers/your-site" in run.result.stdout


def test_deleted_pool_and_provider_are_restored(cloud: FakeCloud) -> None:
    world = deploy(cloud, f"--github={REPO}").world
    world["pools"]["github"]["state"] = "DELETED"
    world["providers"]["github/visit-counter"]["state"] = "DELETED"
    cloud.change(world)

    run = deploy(cloud, f"--github={REPO}")

    assert [command(call) for call in calls_of(run.calls, "iam workload-identity-pools")] == [
        "iam workload-identity-pools describe github",
        "iam workload-identity-pools undelete github",
        "iam workload-identity-pools providers describe visit-counter",
        "iam workload-identity-pools providers undelete visit-counter",
    ]
    assert run.world["providers"]["github/visit-counter"]["state"] == "ACTIVE"


def test_deploy_only_changes_nothing_but_the_function(cloud: FakeCloud) -> None:
    full = deploy(cloud)

    run = deploy(cloud, "--deploy-only")

    done = [command(call) for call in after_checks(run.calls)]
    assert done == [
        "functions describe visits",
        "functions deploy visits",
        "functions describe visits",
    ]
    assert {" ".join(name.split()[:2]) for name in done} <= DEPLOYER_MAY
    [full_deploy] = calls_of(full.calls, "functions deploy")
    [ci_deploy] = calls_of(run.calls, "functions deploy")
    # The function stays public without asking to set its access again.
    assert flags(full_deploy).keys() - flags(ci_deploy).keys() == {"allow-unauthenticated"}
    assert {**flags(ci_deploy), "allow-unauthenticated": ""} == flags(full_deploy)


def test_deploy_only_needs_the_function_the_first_run_made(cloud: FakeCloud) -> None:
    result = cloud.deploy("--deploy-only")

    assert result.returncode != 0
    assert "run ./deploy.sh once without --deploy-only first" in result.stderr
    assert [command(call) for call in after_checks(cloud.calls())] == ["functions describe visits"]


def test_deploy_only_dry_run_plans_the_update(cloud: FakeCloud) -> None:
    result = cloud.deploy("--deploy-only", "--dry-run")

    assert result.returncode == 0, result.stderr
    assert [command(call[1:]) for call in plan(result.stdout)] == [
        "functions describe visits",
        "functions deploy visits",
        "functions describe visits",
    ]


def test_in_github_actions_the_url_is_a_step_output(cloud: FakeCloud, tmp_path: Path) -> None:
    output = tmp_path / "github-output"
    output.write_text("earlier=kept\n")
    deploy(cloud)

    deploy(cloud, "--deploy-only", GITHUB_OUTPUT=str(output))

    assert output.read_text() == "earlier=kept\nurl=https://visits-fake-uc.a.run.app/\n"


def test_dry_run_writes_no_step_output(cloud: FakeCloud, tmp_path: Path) -> None:
    output = tmp_path / "github-output"

    result = cloud.deploy("--dry-run", GITHUB_OUTPUT=str(output))

    assert result.returncode == 0, result.stderr
    assert not output.exists()


def test_help_documents_the_github_options(cloud: FakeCloud) -> None:
    result = cloud.deploy("--help")

    assert result.returncode == 0
    for word in (
        "--github=OWNER/REPO",
        "--deploy-only",
        "WIF_POOL",
        "WIF_PROVIDER",
        "DEPLOYER_NAME",
    ):
        assert word in result.stdout
