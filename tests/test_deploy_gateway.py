"""`deploy.sh --gateway` with the real gcloud against tests/cloud_standin.py: the gateway is the
only way in. The function is private, the gateway calls it as an account of its own that may
only invoke it, and going back to a public function takes --public.

Two chains of runs, each on a project of its own, run side by side: a public deployment that
moves behind the gateway (then the same again, a run without the flag, and --public), and a
project that starts behind the gateway (then the guard closes it, a --gateway deploy finds it
closed, and --reopen). The requests of the public-to-gateway run are kept in
test-artifacts/requests-public-to-gateway.txt.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from conftest import SITE
from real_gcloud import (
    GCLOUD,
    Cloud,
    Clouds,
    Run,
    after_checks,
    assert_plan_is,
    command,
    flags,
    plan,
    succeeded,
)

pytestmark = pytest.mark.skipif(GCLOUD is None, reason="gcloud is not installed")

MOVING = "moving-project"  # public first, then behind the gateway
PRIVATE = "private-project"  # behind the gateway from its first deploy
INVOKER = "roles/run.invoker"


def gateway_member(project: str) -> str:
    """The gateway's own account, as an IAM member."""
    return f"serviceAccount:visit-counter-gateway@{project}.iam.gserviceaccount.com"


def service(project: str) -> str:
    """The counter's Cloud Run service, where its invokers are."""
    return f"projects/{project}/locations/us-central1/services/visits"


@dataclass(frozen=True)
class Step:
    """One run, and who could invoke the counter once it was over."""

    run: Run
    invokers: list[str]


def step(cloud: Cloud, *args: str, **env: str | None) -> Step:
    """Run deploy.sh; what it did, and the counter's invokers after it."""
    run = cloud.deploy(*args, **{"ALLOWED_ORIGINS": SITE, **env})
    return Step(run, cloud.standin.members("run", service(cloud.project), INVOKER))


def public_then_gateway(cloud: Cloud) -> dict[str, Step]:
    """A public deploy, --gateway, --gateway again, a run without it, then --public."""
    names = ("public", "gateway", "again", "back", "explicit")
    flags_of = ((), ("--gateway",), ("--gateway",), (), ("--public",))
    return {name: step(cloud, *args) for name, args in zip(names, flags_of, strict=True)}


def gateway_closed_reopened(cloud: Cloud) -> dict[str, Step]:
    """--gateway into an empty project, the guard closing it, --gateway again, --reopen."""
    steps = {"first": step(cloud, "--gateway")}
    # What the guard does with CLOSE_MEMBERS (guard/main.py): both ways in are closed.
    for member in ("allUsers", gateway_member(cloud.project)):
        cloud.standin.remove_member("run", service(cloud.project), INVOKER, member)
    steps["closed"] = step(cloud, "--gateway")
    steps["reopen"] = step(cloud, "--reopen", ALLOWED_ORIGINS=None)
    return steps


@pytest.fixture(scope="module")
def clouds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clouds]:
    """Every stand-in this module starts, stopped at its end."""
    with Clouds(tmp_path_factory) as started:
        yield started


@pytest.fixture(scope="module")
def moving_cloud(clouds: Clouds) -> Cloud:
    """An empty project that starts public."""
    return clouds.new("moving", MOVING)


@pytest.fixture(scope="module")
def private_cloud(clouds: Clouds) -> Cloud:
    """An empty project that starts behind the gateway."""
    return clouds.new("private", PRIVATE)


@pytest.fixture(scope="module")
def chains(moving_cloud: Cloud, private_cloud: Cloud) -> Iterator[dict[str, Future]]:
    """Both chains, started together as the first test needs one."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield {
            "moving": pool.submit(public_then_gateway, moving_cloud),
            "private": pool.submit(gateway_closed_reopened, private_cloud),
        }


@pytest.fixture(scope="module")
def moving(chains: dict[str, Future]) -> dict[str, Step]:
    """The moving project's runs; all but the refused one succeeded."""
    steps = chains["moving"].result()
    for name, each in steps.items():
        if name != "back":
            succeeded(each.run)
    steps["gateway"].run.keep_requests("public-to-gateway")
    return steps


@pytest.fixture(scope="module")
def private(chains: dict[str, Future]) -> dict[str, Step]:
    """The private project's runs, each checked to have succeeded."""
    steps = chains["private"].result()
    for each in steps.values():
        succeeded(each.run)
    return steps


def invoker_writes(run: Run, project: str) -> list[list[str]]:
    """The invokers of the counter's service in each setIamPolicy sent for it, in order."""
    return [
        [
            member
            for binding in call.body["policy"].get("bindings", [])
            if binding["role"] == INVOKER
            for member in binding["members"]
        ]
        for call in run.requests("run.projects.locations.services.setIamPolicy")
        if call.path == f"v1/{service(project)}:setIamPolicy"
    ]


def deploy_command(run: Run) -> list[str]:
    """The counter's `functions deploy` command line."""
    [deploy] = [call for call in run.commands if command(call) == "functions deploy visits"]
    return deploy


# --- behind the gateway from the first deploy ---


def test_gateway_deploy_sends_no_allusers_binding(private: dict[str, Step]) -> None:
    first = private["first"]

    assert "no-allow-unauthenticated" in flags(deploy_command(first.run))
    assert "allow-unauthenticated" not in flags(deploy_command(first.run))
    assert invoker_writes(first.run, PRIVATE) == [[gateway_member(PRIVATE)]]
    assert first.invokers == [gateway_member(PRIVATE)]


def test_gateway_gets_an_account_that_may_only_invoke_the_service(
    private_cloud: Cloud, private: dict[str, Step]
) -> None:
    first = private["first"].run
    accounts = [
        call.body["accountId"] for call in first.requests("iam.projects.serviceAccounts.create")
    ]
    [binding] = [
        call
        for call in first.commands
        if command(call) == "run services add-iam-policy-binding visits"
    ]
    project_members = {
        member
        for binding in private_cloud.standin.policy("cloudresourcemanager", f"projects/{PRIVATE}")[
            "bindings"
        ]
        for member in binding["members"]
    }

    assert accounts == ["visit-counter", "visit-counter-gateway"]
    assert (flags(binding)["member"], flags(binding)["role"]) == (gateway_member(PRIVATE), INVOKER)
    assert gateway_member(PRIVATE) not in project_members  # on the service, not the project


def test_api_config_uses_the_gateways_account(private: dict[str, Step]) -> None:
    [config] = private["first"].run.requests("apigateway.projects.locations.apis.configs.create")

    # Not the runtime account, which may write Datastore.
    assert config.body["gatewayServiceAccount"] == gateway_member(PRIVATE).split(":", 1)[1]


def test_summary_points_the_page_at_the_gateway(private: dict[str, Step]) -> None:
    lines = [line.strip() for line in private["first"].run.result.stdout.splitlines()]
    gateway = "https://visits-gateway-standin.uc.gateway.dev/"

    assert f"Gateway URL:  {gateway}" in lines
    assert "The gateway is the way in: the function's own URL now refuses visitors (403)." in lines
    assert f'<span data-visit-counter data-endpoint="{gateway}">\u2013</span>' in lines


def test_gateway_deploy_that_finds_it_closed_says_so_and_keeps_it_closed(
    private: dict[str, Step],
) -> None:
    closed = private["closed"]
    notes = [line for line in closed.run.result.stdout.splitlines() if "--reopen" in line]

    assert len(notes) == 1
    assert notes[0].startswith("The counter is closed: the gateway may not call the function")
    assert invoker_writes(closed.run, PRIVATE) == [[]]  # gcloud's --no-allow-unauthenticated
    assert "run services add-iam-policy-binding visits" not in map(command, closed.run.commands)
    assert closed.invokers == []


def test_reopen_behind_a_gateway_lets_the_gateway_in_not_the_public(
    private: dict[str, Step],
) -> None:
    reopen = private["reopen"]
    [binding] = [
        call
        for call in after_checks(reopen.run.commands)
        if command(call) == "functions add-invoker-policy-binding visits"
    ]

    assert flags(binding)["member"] == gateway_member(PRIVATE)
    assert reopen.invokers == [gateway_member(PRIVATE)]
    assert reopen.run.created == []


# --- from public to the gateway, and back ---


def test_public_to_gateway_removes_allusers(moving: dict[str, Step]) -> None:
    public, gateway = moving["public"], moving["gateway"]

    assert public.invokers == ["allUsers"]
    # gcloud's --no-allow-unauthenticated takes allUsers out of the existing binding (its
    # command_lib/functions/v2/deploy/command.py); then the gateway's account is let in.
    assert "no-allow-unauthenticated" in flags(deploy_command(gateway.run))
    assert invoker_writes(gateway.run, MOVING) == [[], [gateway_member(MOVING)]]
    assert gateway.invokers == [gateway_member(MOVING)]


def test_second_gateway_run_creates_nothing_but_an_api_config(moving: dict[str, Step]) -> None:
    again = moving["again"]
    [config] = again.run.requests("apigateway.projects.locations.apis.configs.create")

    assert again.run.created == [f"apigateway {config.body['name']}"]  # a config is immutable
    assert config.body["gatewayServiceAccount"] == gateway_member(MOVING).split(":", 1)[1]
    assert "run services add-iam-policy-binding visits" not in map(command, again.run.commands)
    assert again.invokers == [gateway_member(MOVING)]


def test_going_back_without_the_flag_is_refused(moving: dict[str, Step]) -> None:
    back = moving["back"]

    assert back.run.result.returncode != 0
    assert "--public" in back.run.result.stderr
    assert "--gateway" in back.run.result.stderr
    assert not [call for call in back.run.commands if command(call) == "functions deploy visits"]
    assert back.run.function_requests("patch", "visits") == []
    assert invoker_writes(back.run, MOVING) == []
    assert back.invokers == [gateway_member(MOVING)]


def test_public_flag_opens_the_functions_url_again(moving: dict[str, Step]) -> None:
    explicit = moving["explicit"]

    assert "allow-unauthenticated" in flags(deploy_command(explicit.run))
    # The gateway keeps working beside it.
    assert sorted(explicit.invokers) == sorted(["allUsers", gateway_member(MOVING)])


# --- the dry run, and flags that do not go together ---


def normalised(words: list[str]) -> list[str]:
    """A command with what changes from run to run (the config's id, the spec's path) fixed."""
    words = [re.sub(r"visits-\d{8}-\d{6}", "CONFIG_ID", word) for word in words]
    return [re.sub(r"^--openapi-spec=.*", "--openapi-spec=SPEC", word) for word in words]


def test_dry_run_plans_a_private_function_its_gateway_account_and_config(
    clouds: Clouds, private: dict[str, Step]
) -> None:
    cloud = clouds.new("private-dry", PRIVATE, logged_in=False)
    dry_run = cloud.deploy("--dry-run", "--gateway", ALLOWED_ORIGINS=SITE)
    planned = {command(call[1:]): call for call in plan(dry_run.result.stdout)}
    member = gateway_member(PRIVATE)

    assert dry_run.result.returncode == 0, dry_run.result.stderr
    deploy = flags(planned["functions deploy visits"])
    assert "no-allow-unauthenticated" in deploy
    assert "allow-unauthenticated" not in deploy
    assert "iam service-accounts create visit-counter-gateway" in planned
    binding = flags(planned["run services add-iam-policy-binding visits"])
    assert (binding["member"], binding["role"]) == (member, INVOKER)
    config = [
        words for name, words in planned.items() if name.startswith("api-gateway api-configs")
    ]
    assert flags(config[0])["backend-auth-service-account"] == member.split(":", 1)[1]
    # And just what the first real --gateway deploy did.
    done = [normalised(["gcloud", *call]) for call in after_checks(private["first"].run.commands)]
    stdout = "\n".join(
        f"+ {' '.join(normalised(line[2:].split(' ')))}" if line.startswith("+ ") else line
        for line in dry_run.result.stdout.splitlines()
    )
    assert_plan_is(stdout, done)
    assert (dry_run.commands, dry_run.calls) == ([], [])


@pytest.mark.parametrize(
    ("args", "fix"),
    [
        pytest.param(("--gateway", "--public"), "use one", id="gateway-and-public"),
        pytest.param(("--deploy-only", "--gateway"), "keeps who may call it", id="ci-gateway"),
        pytest.param(("--deploy-only", "--public"), "keeps who may call it", id="ci-public"),
    ],
)
def test_access_flags_that_do_not_go_together_stop_before_anything_is_sent(
    clouds: Clouds, args: tuple[str, ...], fix: str
) -> None:
    cloud = clouds.new("flags", MOVING, logged_in=False)

    run = cloud.deploy("--dry-run", *args, ALLOWED_ORIGINS=SITE)

    assert run.result.returncode != 0
    assert fix in run.result.stderr
    assert run.calls == []
