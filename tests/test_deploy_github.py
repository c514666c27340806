"""deploy.sh's part in deploying from GitHub Actions, run with the real gcloud against the stand-in.

`--github=OWNER/REPO` sets up keyless deploys once and prints the repository variables to set;
the Deploy workflow's steps then run here as the runner would run them, with those variables
filled into their expressions: its Deploy step (`./deploy.sh --deploy-only`, as the deployer
that --github set up) and its Smoke test step on the URL the Deploy step put out. The runs are
shared by module fixtures, two chains at once, as in test_deploy.py: each gcloud command takes
about half a second to start.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import shutil
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from cloud_standin import OWNER, PROJECT_NUMBER, deployed_function
from conftest import SITE
from counter import config
from real_gcloud import (
    CHANGED_DEPLOY_SETTINGS,
    GCLOUD,
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

pytestmark = pytest.mark.skipif(GCLOUD is None, reason="gcloud is not installed")

ROOT = Path(__file__).resolve().parent.parent
DEPLOY_WORKFLOW = ROOT / ".github" / "workflows" / "deploy.yml"
PROJECT = "counter-project"
ORIGINS = f"{SITE},https://www.{SITE.removeprefix('https://')}"  # the live server allows SITE
REPO = "you/your-site"
POOL = f"projects/{PROJECT_NUMBER}/locations/global/workloadIdentityPools/github"
PROVIDER = f"{POOL}/providers/visit-counter"
OWN_PROVIDER = f"{POOL}/providers/your-site"  # a second repository's, by WIF_PROVIDER
DEPLOYER = f"visit-counter-deployer@{PROJECT}.iam.gserviceaccount.com"
RUNTIME = f"visit-counter@{PROJECT}.iam.gserviceaccount.com"
CONDITION = 'assertion.repository == "you/your-site" && assertion.ref == "refs/heads/main"'
AUTH_ACTION = "google-github-actions/auth@"
PRINCIPAL_SET = f"principalSet://iam.googleapis.com/{POOL}/attribute.repository/{REPO}"
# What the owner gives the --github runs: a setting of the function's, and one that a deploy
# would otherwise give its deployed default. UNIQUE_WINDOW_SECONDS is left to its deployed default.
GIVEN = {"ALLOWED_PAGES": "/,/blog/*", "DAILY_WRITE_LIMIT": "500"}
# The four variables --github always prints.
ACCESS_VARIABLES = {
    "GCP_WORKLOAD_IDENTITY_PROVIDER",
    "GCP_SERVICE_ACCOUNT",
    "GCP_PROJECT",
    "ALLOWED_ORIGINS",
}
# Set by hand as a repository variable, as the README asks when ALLOWED_PAGES is set.
SMOKE_PAGE = f"/blog/smoke-{uuid.uuid4().hex[:8]}"
# deploy.sh's own settings that a --deploy-only run reads, each changed.
DEPLOY_SETTINGS = CHANGED_DEPLOY_SETTINGS
# What roles/cloudfunctions.developer lets the deployer do (with actAs on the runtime account).
DEPLOYER_MAY = {"functions describe", "functions deploy"}
# The requests that set up GitHub's access, in the order a first run sends them.
GITHUB_SETUP = [
    "cloudresourcemanager.projects.get",
    "iam.projects.locations.workloadIdentityPools.get",
    "iam.projects.locations.workloadIdentityPools.create",
    "iam.projects.locations.workloadIdentityPools.providers.get",
    "iam.projects.locations.workloadIdentityPools.providers.create",
    "iam.projects.serviceAccounts.get",
    "iam.projects.serviceAccounts.create",
    "cloudresourcemanager.projects.getIamPolicy",
    "cloudresourcemanager.projects.setIamPolicy",
    "iam.projects.serviceAccounts.getIamPolicy",
    "iam.projects.serviceAccounts.setIamPolicy",
    "iam.projects.serviceAccounts.getIamPolicy",
    "iam.projects.serviceAccounts.setIamPolicy",
]


@dataclass(frozen=True)
class Step:
    """A deploy.sh run and the project as it left it."""

    run: Run
    iam: dict[str, dict]  # iam's resources: accounts, pools, providers
    policies: dict[str, dict[str, dict]]

    def bindings(self, api: str, name: str) -> list[dict]:
        """The bindings of one resource's IAM policy after the run."""
        return self.policies.get(api, {}).get(name, {}).get("bindings", [])


def snapshot(cloud: Cloud, run: Run) -> Step:
    """A finished run and the project's state right after it."""
    state = cloud.standin
    return Step(run, copy.deepcopy(state.resources.get("iam", {})), copy.deepcopy(state.policies))


def step(cloud: Cloud, *args: str, **env: str | None) -> Step:
    """Run deploy.sh and keep the project's state right after."""
    return snapshot(cloud, cloud.deploy(*args, **{"ALLOWED_ORIGINS": ORIGINS, **env}))


# --- the Deploy workflow, as GitHub Actions runs it ---

EXPRESSION = re.compile(r"\$\{\{\s*(.+?)\s*\}\}")


def deploy_job() -> dict:
    """The deploy job of .github/workflows/deploy.yml, as data."""
    return yaml.safe_load(DEPLOY_WORKFLOW.read_text())["jobs"]["deploy"]


def evaluate(value: str, variables: dict[str, str], outputs: dict[str, dict[str, str]]) -> str:
    """A workflow value with its ${{ }} expressions filled in as GitHub Actions fills them from
    repository variables and earlier steps' outputs; any other expression fails the test."""

    def fill(found: re.Match[str]) -> str:
        expression = found.group(1)
        if expression == "toJSON(vars)":
            return json.dumps(variables, indent=2)
        if variable := re.fullmatch(r"vars\.(\w+)", expression):
            return variables.get(variable.group(1), "")  # an unset variable is empty
        if output := re.fullmatch(r"steps\.([\w-]+)\.outputs\.(\w+)", expression):
            return outputs.get(output.group(1), {}).get(output.group(2), "")
        raise AssertionError(f"the test cannot evaluate ${{{{ {expression} }}}}")

    return EXPRESSION.sub(fill, value)


def run_workflow_step(
    cloud: Cloud,
    name: str,
    variables: dict[str, str],
    outputs: dict[str, dict[str, str]] | None = None,
    **env: str,
) -> Run:
    """The deploy job's step of that name as the runner runs it: its script under bash -e with
    pipefail, in the checkout, with the job's and the step's environment filled in."""
    job = deploy_job()
    [found] = [step for step in job["steps"] if step.get("name") == name]
    declared = {**job.get("env", {}), **found.get("env", {})}
    filled = {
        key: evaluate(str(value), variables, outputs or {}) for key, value in declared.items()
    }
    script = ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", found["run"]]
    return cloud.run(script, cwd=ROOT, **{**filled, **env})


def step_outputs(path: Path) -> dict[str, str]:
    """What a step wrote to $GITHUB_OUTPUT: name=value lines."""
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def gh_commands(stdout: str) -> list[list[str]]:
    """The `gh variable set` commands printed, split as the shell would."""
    lines = [line.strip() for line in stdout.splitlines()]
    return [shlex.split(line) for line in lines if line.startswith("gh variable set ")]


def gh_variables(stdout: str) -> dict[str, str]:
    """The repository variables that the printed `gh variable set` commands set."""
    return {words[3]: words[7] for words in gh_commands(stdout)}


def set_up_and_deploy_from_github(cloud: Cloud, output: Path) -> dict[str, Step]:
    """The owner's --github run twice, then the Deploy workflow's Deploy step with the variables
    the first run printed, and SMOKE_PAGE."""
    steps = {"first": step(cloud, f"--github={REPO}", **GIVEN)}
    steps["second"] = step(cloud, f"--github={REPO}", **GIVEN)
    output.write_text("earlier=kept\n")
    variables = repository_variables(steps["first"])
    run = run_workflow_step(cloud, "Deploy", variables, GITHUB_OUTPUT=str(output))
    steps["deploy_only"] = snapshot(cloud, run)
    return steps


def repository_variables(first: Step) -> dict[str, str]:
    """The repository variables an owner sets after the first --github run: those it printed,
    and SMOKE_PAGE."""
    return {**gh_variables(first.run.result.stdout), "SMOKE_PAGE": SMOKE_PAGE}


def add_provider_for(cloud: Cloud, repo: str) -> None:
    """A pool and a provider that an earlier --github run made for another repository."""
    condition = CONDITION.replace(REPO, repo)
    cloud.standin.store("iam", POOL, {"name": POOL, "state": "ACTIVE"})
    cloud.standin.store(
        "iam", PROVIDER, {"name": PROVIDER, "state": "ACTIVE", "attributeCondition": condition}
    )


def another_repository_then_another_provider(cloud: Cloud) -> dict[str, Step]:
    """--github for a repository whose provider name is taken by another, then with its own
    provider name; then once more after that pool and provider were deleted in the console."""
    add_provider_for(cloud, "you/old-site")
    steps = {"refused": step(cloud, f"--github={REPO}")}
    steps["own_provider"] = step(cloud, f"--github={REPO}", WIF_PROVIDER="your-site")
    for name in (POOL, OWN_PROVIDER):
        cloud.standin.resource("iam", name)["state"] = "DELETED"
    steps["restored"] = step(cloud, f"--github={REPO}", WIF_PROVIDER="your-site")
    return steps


@pytest.fixture(scope="module")
def clouds() -> Iterator[list[Cloud]]:
    """Every stand-in this module starts, stopped at its end."""
    started: list[Cloud] = []
    yield started
    for cloud in started:
        cloud.close()


def new_cloud(clouds: list[Cloud], home: Path, **options) -> Cloud:
    """A fresh project on its own stand-in, with its own gcloud configuration."""
    cloud = Cloud(home, PROJECT, **options)
    clouds.append(cloud)
    return cloud


@pytest.fixture(scope="module")
def github_output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The file GitHub Actions names in $GITHUB_OUTPUT for the --deploy-only run."""
    return tmp_path_factory.mktemp("actions") / "github-output"


@pytest.fixture(scope="module")
def github_cloud(
    clouds: list[Cloud], tmp_path_factory: pytest.TempPathFactory, live_server: str
) -> Cloud:
    """The project set up with --github, whose function answers at a live local server."""
    cloud = new_cloud(clouds, tmp_path_factory.mktemp("github"))
    cloud.standin.function_url = live_server
    return cloud


@pytest.fixture(scope="module")
def chains(
    clouds: list[Cloud],
    tmp_path_factory: pytest.TempPathFactory,
    github_cloud: Cloud,
    github_output: Path,
) -> Iterator[dict[str, Future]]:
    """The module's runs, two independent projects at once in the background."""
    github = github_cloud
    taken = new_cloud(clouds, tmp_path_factory.mktemp("taken"))
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield {
            "github": pool.submit(set_up_and_deploy_from_github, github, github_output),
            "taken": pool.submit(another_repository_then_another_provider, taken),
        }


@pytest.fixture(scope="module")
def github(chains: dict[str, Future]) -> dict[str, Step]:
    """The --github project's steps."""
    return chains["github"].result()


@pytest.fixture(scope="module")
def first(github: dict[str, Step]) -> Step:
    """The owner's first run with --github, into an empty project."""
    succeeded(github["first"].run)
    return github["first"]


@pytest.fixture(scope="module")
def second(github: dict[str, Step]) -> Step:
    """The same run again, into the project the first one set up."""
    succeeded(github["second"].run)
    return github["second"]


@pytest.fixture(scope="module")
def taken(chains: dict[str, Future]) -> dict[str, Step]:
    """The project whose provider admits another repository."""
    return chains["taken"].result()


@pytest.fixture(scope="module")
def idle_cloud(clouds: list[Cloud], tmp_path_factory: pytest.TempPathFactory) -> Cloud:
    """A logged-in empty project for runs that stop early or only print."""
    return new_cloud(clouds, tmp_path_factory.mktemp("idle"))


# --- what Google receives from --github ---


def test_github_sets_up_pool_provider_and_deployer_in_order(first: Step) -> None:
    ids = [call.method_id for call in first.run.api_calls]
    start = ids.index("cloudresourcemanager.projects.get")  # the project's number comes first
    # All of it before the function is deployed, so a refusal stops the run before that.
    end = ids.index("cloudfunctions.projects.locations.functions.get")

    assert ids[start:end] == GITHUB_SETUP
    assert [command(call) for call in first.run.commands if "workload-identity-pools" in call] == [
        "iam workload-identity-pools describe github",
        "iam workload-identity-pools create github",
        "iam workload-identity-pools providers describe visit-counter",
        "iam workload-identity-pools providers create-oidc visit-counter",
    ]


def test_provider_admits_only_the_repositorys_main_branch(first: Step) -> None:
    [create] = first.run.requests("iam.projects.locations.workloadIdentityPools.providers.create")

    assert (
        create.path
        == f"v1/projects/{PROJECT}/locations/global/workloadIdentityPools/github/providers"
    )
    assert create.query == {"workloadIdentityPoolProviderId": "visit-counter"}
    assert create.body == {
        "attributeCondition": CONDITION,
        "attributeMapping": {
            "google.subject": "assertion.sub",
            "attribute.repository": "assertion.repository",
            "attribute.ref": "assertion.ref",
        },
        "oidc": {"issuerUri": "https://token.actions.githubusercontent.com"},
        "displayName": "GitHub Actions deploys",
        "description": f"Pushes to main of {REPO} deploy visits",
        "disabled": False,
    }
    assert first.iam[PROVIDER]["state"] == "ACTIVE"


def test_pool_is_global_and_apis_for_token_exchange_are_enabled(first: Step) -> None:
    [pool] = first.run.requests("iam.projects.locations.workloadIdentityPools.create")
    assert pool.path == f"v1/projects/{PROJECT}/locations/global/workloadIdentityPools"
    assert pool.query == {"workloadIdentityPoolId": "github"}
    assert pool.body == {"displayName": "GitHub Actions", "disabled": False}
    [enable] = first.run.requests("serviceusage.services.batchEnable")
    assert {
        "sts.googleapis.com",
        "iamcredentials.googleapis.com",
        "cloudresourcemanager.googleapis.com",
    } <= set(enable.body["serviceIds"])


def test_deployer_may_deploy_and_nothing_more(first: Step) -> None:
    deployer = f"serviceAccount:{DEPLOYER}"
    [account] = [
        call
        for call in first.run.requests("iam.projects.serviceAccounts.create")
        if call.body["accountId"] == "visit-counter-deployer"
    ]
    assert account.body["serviceAccount"]["displayName"] == "GitHub deployer of visits"

    assert first.bindings("cloudresourcemanager", f"projects/{PROJECT}") == [
        {"role": "roles/owner", "members": [OWNER]},
        {"role": "roles/datastore.user", "members": [f"serviceAccount:{RUNTIME}"]},
        {"role": "roles/cloudfunctions.developer", "members": [deployer]},
    ]
    accounts = f"projects/{PROJECT}/serviceAccounts"
    # Acting as the function's own account, on that account alone.
    assert first.bindings("iam", f"{accounts}/{RUNTIME}") == [
        {"role": "roles/iam.serviceAccountUser", "members": [deployer]}
    ]
    # Only the repository's tokens may act as the deployer.
    assert first.bindings("iam", f"{accounts}/{DEPLOYER}") == [
        {"role": "roles/iam.workloadIdentityUser", "members": [PRINCIPAL_SET]}
    ]
    written = [
        call.path
        for call in first.run.api_calls
        if call.method_id == "iam.projects.serviceAccounts.setIamPolicy"
    ]
    assert written == [
        f"v1/{accounts}/{RUNTIME}:setIamPolicy",
        f"v1/{accounts}/{DEPLOYER}:setIamPolicy",
    ]
    roles = {flags(call).get("role") for call in first.run.commands}
    assert not roles & {"roles/owner", "roles/editor", "roles/run.admin"}


def test_github_second_run_creates_nothing(first: Step, second: Step) -> None:
    assert second.run.created == []
    assert not [call for call in second.run.calls if call.method_id.endswith(".undelete")]
    assert second.iam == first.iam
    bindings = {
        name: policy["bindings"] for api in first.policies.values() for name, policy in api.items()
    }
    assert bindings == {
        name: policy["bindings"] for api in second.policies.values() for name, policy in api.items()
    }


def test_github_dry_run_prints_the_plan_and_runs_nothing(idle_cloud: Cloud, first: Step) -> None:
    dry_run = idle_cloud.deploy("--dry-run", f"--github={REPO}", ALLOWED_ORIGINS=ORIGINS, **GIVEN)

    assert dry_run.result.returncode == 0, dry_run.result.stderr
    assert (dry_run.commands, dry_run.calls) == ([], [])
    # A dry run cannot know the project's number; it shows where it goes.
    stdout = dry_run.result.stdout.replace("PROJECT_NUMBER", PROJECT_NUMBER)
    assert_plan_is(stdout, [["gcloud", *call] for call in after_checks(first.run.commands)])
    assert "GCP_WORKLOAD_IDENTITY_PROVIDER=projects/PROJECT_NUMBER/" in dry_run.result.stdout


def test_github_prints_the_two_values_and_gh_commands(first: Step) -> None:
    lines = [line.strip() for line in first.run.result.stdout.splitlines()]
    assert f"GCP_WORKLOAD_IDENTITY_PROVIDER={PROVIDER}" in lines
    assert f"GCP_SERVICE_ACCOUNT={DEPLOYER}" in lines

    commands = gh_commands(first.run.result.stdout)
    assert {tuple(words[:3] + words[4:7:2]) for words in commands} == {
        ("gh", "variable", "set", "--repo", "--body")
    }
    assert {words[5] for words in commands} == {REPO}
    # The settings given, and not UNIQUE_WINDOW_SECONDS: its deployed default was not given.
    assert gh_variables(first.run.result.stdout) == {
        "GCP_WORKLOAD_IDENTITY_PROVIDER": PROVIDER,
        "GCP_SERVICE_ACCOUNT": DEPLOYER,
        "GCP_PROJECT": PROJECT,
        "ALLOWED_ORIGINS": ORIGINS,
        **GIVEN,
    }
    # The provider named is the one Google holds, under the project's number.
    assert PROVIDER in first.iam


def test_github_prints_the_settings_this_run_was_given(idle_cloud: Cloud) -> None:
    run = idle_cloud.deploy(
        "--dry-run",
        f"--github={REPO}",
        ALLOWED_ORIGINS=ORIGINS,
        REGION="europe-west1",
        ALLOWED_PAGES="/,/blog/*",
        MEMORY="",
        HISTORY="",
        REPOSITORY_VARIABLES='{"COUNT_BOTS": "true", "ALLOWED_PAGES": "/other"}',
    )

    assert run.result.returncode == 0, run.result.stderr
    printed = gh_variables(run.result.stdout)
    # Defaults, deployed ones included, are left to the deploy; an empty value is unset.
    assert {name: printed[name] for name in printed.keys() - ACCESS_VARIABLES} == {
        "REGION": "europe-west1",
        "ALLOWED_PAGES": "/,/blog/*",  # the environment's, over the repository variable
        "COUNT_BOTS": "true",
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        *[
            (argument, "--github needs the repository as OWNER/REPO")
            for argument in (
                ("--github=",),
                ("--github=you",),
                ("--github=you/site/extra",),
                ("--github=you/my site",),
                ("--github",),
            )
        ],
        ((f"--github={REPO}", "--deploy-only"), "use one"),
    ],
)
def test_github_arguments_are_checked_before_anything_runs(
    idle_cloud: Cloud, args: tuple[str, ...], message: str
) -> None:
    run = idle_cloud.deploy(*args, ALLOWED_ORIGINS=ORIGINS)

    assert run.result.returncode != 0
    assert message in run.result.stderr
    assert (run.commands, run.calls) == ([], [])


def test_provider_of_another_repository_is_left_untouched(taken: dict[str, Step]) -> None:
    refused = taken["refused"]

    assert refused.run.result.returncode != 0
    assert 'admits (assertion.repository == "you/old-site"' in refused.run.result.stderr
    assert "WIF_PROVIDER=another-name" in refused.run.result.stderr
    assert not [call for call in refused.run.calls if call.api == "cloudfunctions"]
    assert not [
        call for call in refused.run.calls if "Pools" in call.method_id and call.method != "GET"
    ]
    assert "you/old-site" in refused.iam[PROVIDER]["attributeCondition"]


def test_another_provider_name_serves_another_repository(taken: dict[str, Step]) -> None:
    own = taken["own_provider"]
    succeeded(own.run)
    providers = {
        name: value
        for name, value in own.iam.items()
        if re.fullmatch(f"{POOL}/providers/[^/]+", name)
    }

    assert set(providers) == {PROVIDER, OWN_PROVIDER}
    assert providers[OWN_PROVIDER]["attributeCondition"] == CONDITION
    assert "you/old-site" in providers[PROVIDER]["attributeCondition"]
    assert f"GCP_WORKLOAD_IDENTITY_PROVIDER={POOL}/providers/your-site" in own.run.result.stdout


def test_deleted_pool_and_provider_are_restored(taken: dict[str, Step]) -> None:
    restored = taken["restored"]
    succeeded(restored.run)

    assert [
        call.method_id for call in restored.run.calls if "workloadIdentityPools" in call.method_id
    ] == [
        "iam.projects.locations.workloadIdentityPools.get",
        "iam.projects.locations.workloadIdentityPools.undelete",
        "iam.projects.locations.workloadIdentityPools.providers.get",
        "iam.projects.locations.workloadIdentityPools.providers.undelete",
    ]
    assert (restored.iam[POOL]["state"], restored.iam[OWN_PROVIDER]["state"]) == (
        "ACTIVE",
        "ACTIVE",
    )
    assert restored.iam[OWN_PROVIDER]["attributeCondition"] == CONDITION
    assert restored.run.created == []


# --- --deploy-only: what the Deploy workflow runs ---


def test_deploy_step_changes_nothing_but_the_function(github: dict[str, Step]) -> None:
    first, run = github["first"].run, succeeded(github["deploy_only"].run)

    done = [command(call) for call in after_checks(run.commands)]
    assert done == [
        "functions describe visits",
        "functions deploy visits",
        "functions describe visits",
    ]
    assert {" ".join(name.split()[:2]) for name in done} <= DEPLOYER_MAY
    [full_deploy] = [call for call in first.commands if command(call) == "functions deploy visits"]
    [ci_deploy] = [call for call in run.commands if command(call) == "functions deploy visits"]
    # The function stays public without asking to set its access again.
    assert flags(full_deploy).keys() - flags(ci_deploy).keys() == {"allow-unauthenticated"}
    assert {**flags(ci_deploy), "allow-unauthenticated": ""} == flags(full_deploy)
    # What Google receives: a new revision of the same function, and no change to anything else.
    [create] = first.requests("cloudfunctions.projects.locations.functions.create")
    [patch] = run.requests("cloudfunctions.projects.locations.functions.patch")
    assert patch.body["serviceConfig"] == create.body["serviceConfig"]
    changes = [
        call.method_id
        for call in run.api_calls
        if call.method != "GET" and not call.method_id.endswith("getIamPolicy")
    ]
    assert changes == [
        "cloudfunctions.projects.locations.functions.generateUploadUrl",
        "",  # the upload of the source to the signed URL
        "cloudfunctions.projects.locations.functions.patch",
    ]
    assert run.created == []
    assert github["deploy_only"].policies == github["second"].policies


def test_deploy_only_needs_the_function_the_first_run_made(idle_cloud: Cloud) -> None:
    run = idle_cloud.deploy("--deploy-only", ALLOWED_ORIGINS=ORIGINS)

    assert run.result.returncode != 0
    assert "run ./deploy.sh once without --deploy-only first" in run.result.stderr
    assert [command(call) for call in after_checks(run.commands)] == ["functions describe visits"]
    assert [(call.method_id, call.status) for call in run.api_calls] == [
        ("cloudfunctions.projects.locations.functions.get", 404)
    ]


def test_deploy_only_dry_run_plans_the_update(idle_cloud: Cloud) -> None:
    run = idle_cloud.deploy("--deploy-only", "--dry-run", ALLOWED_ORIGINS=ORIGINS)

    assert run.result.returncode == 0, run.result.stderr
    reads, creates = plan_groups(run.result.stdout)
    assert [command(call[1:]) for call in reads] == ["functions describe visits"] * 2
    assert [command(call[1:]) for call in creates] == ["functions deploy visits"]
    assert (run.commands, run.calls) == ([], [])


def test_deploy_step_passes_on_the_given_settings_and_the_deployed_defaults(
    github: dict[str, Step],
) -> None:
    run = succeeded(github["deploy_only"].run)
    [patch] = run.requests("cloudfunctions.projects.locations.functions.patch")

    # The function's settings reached deploy.sh in REPOSITORY_VARIABLES only.
    assert patch.body["serviceConfig"]["environmentVariables"] == {
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "ALLOWED_ORIGINS": ORIGINS,
        "THREADS": "8",
        "ALLOWED_PAGES": "/,/blog/*",
        "DAILY_WRITE_LIMIT": "500",
        "UNIQUE_WINDOW_SECONDS": "1800",
    }


def test_deploy_step_deploys_the_function_the_github_run_did_with_every_setting(
    clouds: list[Cloud], tmp_path: Path
) -> None:
    cloud = new_cloud(clouds, tmp_path)
    function = f"projects/{PROJECT}/locations/europe-west1/functions/counter"  # made by a full run
    cloud.standin.store("cloudfunctions", function, deployed_function(cloud.standin, function, {}))
    settings = {
        **DEPLOY_SETTINGS,
        **{name: f"value-of-{name.lower()}" for name in config.env_names(deploy="passed-on")},
    }
    owner = cloud.deploy("--dry-run", f"--github={REPO}", ALLOWED_ORIGINS=ORIGINS, **settings)
    assert owner.result.returncode == 0, owner.result.stderr
    variables = gh_variables(owner.result.stdout)

    run = succeeded(run_workflow_step(cloud, "Deploy", variables))

    assert set(variables) == ACCESS_VARIABLES | set(settings)
    [planned] = [
        call[1:] for call in plan(owner.result.stdout) if call[1:3] == ["functions", "deploy"]
    ]
    [deployed] = [call for call in run.commands if call[:2] == ["functions", "deploy"]]
    assert {**flags(deployed), "allow-unauthenticated": ""} == flags(planned)
    assert command(deployed) == "functions deploy counter"
    [patch] = run.requests("cloudfunctions.projects.locations.functions.patch")
    environment = patch.body["serviceConfig"]["environmentVariables"]
    assert {name: environment.get(name) for name in settings.keys() - DEPLOY_SETTINGS.keys()} == {
        name: settings[name] for name in settings.keys() - DEPLOY_SETTINGS.keys()
    }


def test_auth_step_signs_in_as_the_deployer_the_github_run_set_up(first: Step) -> None:
    job = deploy_job()
    [auth] = [step for step in job["steps"] if step.get("uses", "").startswith(AUTH_ACTION)]

    inputs = {
        key: evaluate(value, repository_variables(first), {}) for key, value in auth["with"].items()
    }

    assert inputs == {
        "workload_identity_provider": PROVIDER,
        "service_account": DEPLOYER,
        "project_id": PROJECT,
    }
    # Google holds both: a provider admitting this repository, and the deployer account.
    assert first.iam[PROVIDER]["attributeCondition"] == CONDITION
    assert f"projects/{PROJECT}/serviceAccounts/{DEPLOYER}" in first.iam


def test_in_github_actions_the_url_is_a_step_output(
    github: dict[str, Step], github_output: Path, live_server: str
) -> None:
    succeeded(github["deploy_only"].run)

    assert github_output.read_text() == f"earlier=kept\nurl={live_server.rstrip('/')}/\n"


def test_smoke_step_checks_the_url_the_deploy_step_put_out(
    github_cloud: Cloud, github: dict[str, Step], github_output: Path, live_server: str
) -> None:
    if shutil.which("make") is None:
        pytest.skip("make runs the smoke step")
    succeeded(github["deploy_only"].run)
    outputs = {"deploy": step_outputs(github_output)}

    run = run_workflow_step(
        github_cloud, "Smoke test", repository_variables(github["first"]), outputs
    )

    assert run.result.returncode == 0, run.result.stdout + run.result.stderr
    assert f"smoke: all checks passed against {live_server.rstrip('/')}/" in run.result.stdout
    # It counted a visit to SMOKE_PAGE, the page the repository variable names.
    with urllib.request.urlopen(f"{live_server.rstrip('/')}/?page={SMOKE_PAGE}") as answer:
        assert json.load(answer)["count"] == 1
    assert run.calls == []


def test_dry_run_writes_no_step_output(idle_cloud: Cloud, tmp_path: Path) -> None:
    output = tmp_path / "github-output"

    run = idle_cloud.deploy("--dry-run", ALLOWED_ORIGINS=ORIGINS, GITHUB_OUTPUT=str(output))

    assert run.result.returncode == 0, run.result.stderr
    assert not output.exists()


def test_help_documents_the_github_options(idle_cloud: Cloud) -> None:
    run = idle_cloud.deploy("--help")

    assert run.result.returncode == 0
    for word in (
        "--github=OWNER/REPO",
        "--deploy-only",
        "WIF_POOL",
        "WIF_PROVIDER",
        "DEPLOYER_NAME",
    ):
        assert word in run.result.stdout
