"""`deploy.sh --budget` with the real gcloud against tests/cloud_standin.py: the budget publishes
to a Pub/Sub topic, and the guard (guard/) listens there, as an account whose one role is bound
on the counter's Cloud Run service; `--reopen` lets visitors in again after the guard closed it.

Two chains of runs, each on a project of its own, run side by side: a new project's life (a
--budget deploy, the same again, the guard closing the counter, a plain deploy, --reopen), and a
project whose budget and custom role were made before. The requests of the first --budget run
are kept in test-artifacts/requests-budget.txt.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from cloud_standin import BILLING_ACCOUNT, BILLING_CURRENCY
from conftest import SITE, function_source
from real_gcloud import (
    GCLOUD,
    ROOT,
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

PROJECT = "budget-project"
OLD_PROJECT = "budget-old"  # whose budget and guard role were made before deploy.sh ran
BUDGET = "25"
INVOKER = "roles/run.invoker"
PERMISSIONS = ["run.services.get", "run.services.getIamPolicy", "run.services.setIamPolicy"]


def names(project: str) -> dict[str, str]:
    """What deploy.sh makes for --budget in a project, at the default settings."""
    location = f"projects/{project}/locations/us-central1"
    return {
        "service": f"{location}/services/visits",
        "guard_service": f"{location}/services/visits-guard",
        "guard": f"visit-counter-guard@{project}.iam.gserviceaccount.com",
        "gateway": f"serviceAccount:visit-counter-gateway@{project}.iam.gserviceaccount.com",
        "role": f"projects/{project}/roles/visitCounterGuard",
        "topic": f"projects/{project}/topics/visits-budget",
        "budget_name": f"Visit counter ({project})",
    }


NEW = names(PROJECT)
OLD = names(OLD_PROJECT)


@dataclass(frozen=True)
class Step:
    """One run, and who could invoke the counter once it was over."""

    run: Run
    invokers: list[str]


def step(cloud: Cloud, *args: str, **env: str | None) -> Step:
    """Run deploy.sh; what it did, and the counter's invokers after it."""
    run = cloud.deploy(*args, **env)
    return Step(run, cloud.standin.members("run", NEW["service"], INVOKER))


def a_projects_life(cloud: Cloud) -> dict[str, Step]:
    """--budget, the same again, the guard closing the counter, a plain deploy, --reopen."""
    steps = {
        "first": step(cloud, f"--budget={BUDGET}", ALLOWED_ORIGINS=SITE),
        "again": step(cloud, f"--budget={BUDGET}", ALLOWED_ORIGINS=SITE),
    }
    # What the guard does once the budget is spent (guard/main.py, tested in test_guard.py).
    cloud.standin.remove_member("run", NEW["service"], INVOKER, "allUsers")
    steps["closed"] = step(cloud, ALLOWED_ORIGINS=SITE)
    steps["reopen"] = step(cloud, "--reopen")  # no ALLOWED_ORIGINS: it changes no setting
    return steps


def made_before(cloud: Cloud) -> Run:
    """A --budget deploy where the budget exists without a topic, and the guard's role was
    deleted after someone gave it one permission more."""
    name = f"{BILLING_ACCOUNT}/budgets/0999"
    cloud.standin.store(
        "billingbudgets",
        name,
        {
            "name": name,
            "displayName": OLD["budget_name"],
            "amount": {"specifiedAmount": {"currencyCode": BILLING_CURRENCY, "units": "10"}},
            "budgetFilter": {"projects": [f"projects/{OLD_PROJECT}"]},
            "thresholdRules": [{"thresholdPercent": 0.5}, {"thresholdPercent": 1.0}],
            "notificationsRule": {"disableDefaultIamRecipients": False},
            "etag": "1",
        },
    )
    cloud.standin.add_role("visitCounterGuard", [*PERMISSIONS, "run.services.update"], deleted=True)
    return cloud.deploy(f"--budget={BUDGET}", ALLOWED_ORIGINS=SITE)


@pytest.fixture(scope="module")
def clouds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clouds]:
    """Every stand-in this module starts, stopped at its end."""
    with Clouds(tmp_path_factory) as started:
        yield started


@pytest.fixture(scope="module")
def new_cloud(clouds: Clouds) -> Cloud:
    """An empty project."""
    return clouds.new("budget", PROJECT)


@pytest.fixture(scope="module")
def old_cloud(clouds: Clouds) -> Cloud:
    """A project where a budget and the guard's role were made before."""
    return clouds.new("budget-old", OLD_PROJECT)


@pytest.fixture(scope="module")
def chains(new_cloud: Cloud, old_cloud: Cloud) -> Iterator[dict[str, Future]]:
    """Both chains, started together as the first test needs one."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield {
            "life": pool.submit(a_projects_life, new_cloud),
            "old": pool.submit(made_before, old_cloud),
        }


@pytest.fixture(scope="module")
def life(chains: dict[str, Future]) -> dict[str, Step]:
    """The new project's runs, each checked to have succeeded."""
    steps = chains["life"].result()
    for each in steps.values():
        succeeded(each.run)
    steps["first"].run.keep_requests("budget")
    return steps


@pytest.fixture(scope="module")
def first(life: dict[str, Step]) -> Run:
    """The first --budget deploy into an empty project."""
    return life["first"].run


@pytest.fixture(scope="module")
def old(chains: dict[str, Future]) -> Run:
    """The --budget deploy into the project with a budget and a deleted role."""
    return succeeded(chains["old"].result())


@pytest.fixture(scope="module")
def idle_cloud(clouds: Clouds) -> Cloud:
    """A logged-in project for runs that stop before they send Google anything."""
    return clouds.new("budget-idle", PROJECT)


def writes(run: Run) -> list[tuple[str, str]]:
    """The requests that create or change something, in order: (method id, path)."""
    verbs = ("create", "patch", "setIamPolicy", "undelete", "batchEnable")
    return [(method, path) for method, path in run.seen() if method.endswith(verbs)]


def guard_env(run: Run, function_id: str = "visits-guard") -> dict[str, str]:
    """The environment the guard was created with."""
    [create] = run.function_requests("create", function_id)
    return create.body["serviceConfig"]["environmentVariables"]


# --- the first --budget run ---


def test_budget_enables_what_the_guard_needs(first: Run) -> None:
    [enable] = first.requests("serviceusage.services.batchEnable")

    apis = {"cloudbilling", "billingbudgets", "pubsub", "eventarc", "run", "cloudbuild"}
    assert {f"{api}.googleapis.com" for api in apis} <= set(enable.body["serviceIds"])


def test_topic_exists_before_the_budget_names_it(first: Run) -> None:
    [create] = first.requests("billingbudgets.billingAccounts.budgets.create")
    methods = [method for method, _ in first.seen()]

    assert methods.index("pubsub.projects.topics.get") < methods.index(create.method_id)
    assert methods.index("pubsub.projects.topics.create") < methods.index(create.method_id)
    # The emails to the billing account's administrators stay; the topic comes with them.
    assert create.body["notificationsRule"] == {
        "disableDefaultIamRecipients": False,
        "pubsubTopic": NEW["topic"],
        "schemaVersion": "1.0",
    }
    assert len(create.body["thresholdRules"]) == 3


def test_guard_role_is_bound_on_the_counters_service_alone(new_cloud: Cloud, first: Run) -> None:
    [role] = first.requests("iam.projects.roles.create")
    standin = new_cloud.standin
    guard = f"serviceAccount:{NEW['guard']}"
    project_members = {
        member
        for binding in standin.policy("cloudresourcemanager", f"projects/{PROJECT}")["bindings"]
        for member in binding["members"]
    }

    assert role.body["roleId"] == "visitCounterGuard"
    assert role.body["role"]["includedPermissions"] == PERMISSIONS
    assert standin.members("run", NEW["service"], NEW["role"]) == [guard]
    assert guard not in project_members
    # Its trigger delivers as the guard's account, which may invoke the guard and only it.
    assert standin.members("run", NEW["guard_service"], INVOKER) == [guard]


def test_guard_is_deployed_on_the_topic_as_its_own_account(new_cloud: Cloud, first: Run) -> None:
    [create] = first.function_requests("create", "visits-guard")
    [budget] = new_cloud.standin.resources["billingbudgets"]
    [deploy] = [call for call in first.commands if command(call) == "functions deploy visits-guard"]

    assert flags(deploy)["trigger-topic"] == "visits-budget"
    assert create.body["buildConfig"]["entryPoint"] == "guard"
    assert create.body["eventTrigger"] == {
        "eventType": "google.cloud.pubsub.topic.v1.messagePublished",
        "pubsubTopic": NEW["topic"],
        "serviceAccountEmail": NEW["guard"],
        "retryPolicy": "RETRY_POLICY_RETRY",
    }
    service = create.body["serviceConfig"]
    assert (service["serviceAccountEmail"], service["maxInstanceCount"]) == (NEW["guard"], 1)
    assert guard_env(first) == {
        "COUNTER_SERVICE": NEW["service"],
        "BUDGET_ID": budget.rsplit("/", 1)[1],
        "CLOSE_AT": "1.0",
        # Both ways in: the gateway, were a later run to add one, is closed as well.
        "CLOSE_MEMBERS": f"allUsers,{NEW['gateway']}",
    }


def test_guard_and_counter_upload_their_own_source(first: Run) -> None:
    uploads = {call.path.rsplit("/", 1)[1]: call.files for call in first.calls if call.files}
    sources = {
        function_id: create.body["buildConfig"]["source"]["storageSource"]["object"]
        for function_id in ("visits", "visits-guard")
        for create in first.function_requests("create", function_id)
    }

    assert sorted(uploads[sources["visits"]]) == function_source(ROOT)
    assert sorted(uploads[sources["visits-guard"]]) == ["main.py", "requirements.txt"]


def test_budget_run_changes_in_this_order(first: Run) -> None:
    changes = writes(first)
    start = changes.index(("pubsub.projects.topics.create", f"v1/{NEW['topic']}"))

    # After the counter is deployed, so that a refusal here cannot keep it from being deployed;
    # the role on the counter's service before the guard that uses it.
    assert changes[start:] == [
        ("pubsub.projects.topics.create", f"v1/{NEW['topic']}"),
        ("billingbudgets.billingAccounts.budgets.create", f"v1/{BILLING_ACCOUNT}/budgets"),
        ("iam.projects.serviceAccounts.create", f"v1/projects/{PROJECT}/serviceAccounts"),
        ("iam.projects.roles.create", f"v1/projects/{PROJECT}/roles"),
        ("run.projects.locations.services.setIamPolicy", f"v1/{NEW['service']}:setIamPolicy"),
        (
            "cloudfunctions.projects.locations.functions.create",
            "v2/projects/budget-project/locations/us-central1/functions",
        ),
        ("run.projects.locations.services.setIamPolicy", f"v1/{NEW['guard_service']}:setIamPolicy"),
    ]


def test_second_budget_run_creates_nothing(life: dict[str, Step]) -> None:
    again = life["again"].run
    changed = {method for method, _ in writes(again)}

    assert again.created == []
    assert not {method for method in changed if method.endswith("create")}
    assert "billingbudgets.billingAccounts.budgets.patch" not in changed
    # A new revision of each function, and the public still let in.
    assert [len(again.function_requests("patch", name)) for name in ("visits", "visits-guard")] == [
        1,
        1,
    ]
    assert life["again"].invokers == ["allUsers"]
    assert f'Budget "{NEW["budget_name"]}" exists already' in again.result.stdout


# --- the guard closed the counter: a plain deploy, then --reopen ---


def test_deploy_that_finds_the_counter_closed_says_so_and_keeps_it_closed(
    life: dict[str, Step],
) -> None:
    closed = life["closed"]
    [deploy] = [call for call in closed.run.commands if command(call) == "functions deploy visits"]
    notes = [line for line in closed.run.result.stdout.splitlines() if "--reopen" in line]

    assert notes == [
        "The counter is closed: no visitor may call the function (allUsers is not an invoker), as"
        " the budget guard leaves it once the budget is spent. This deploy kept it closed; to let"
        " visitors in again: ./deploy.sh --reopen"
    ]
    assert "allow-unauthenticated" not in flags(deploy)
    assert closed.run.requests("run.projects.locations.services.setIamPolicy") == []
    assert closed.run.function_requests("patch", "visits")  # deployed all the same
    assert closed.invokers == []


def test_reopen_lets_the_public_in_and_changes_nothing_else(life: dict[str, Step]) -> None:
    reopen = life["reopen"]

    assert [command(call) for call in after_checks(reopen.run.commands)] == [
        "functions describe visits",
        f"iam service-accounts describe {NEW['gateway'].removeprefix('serviceAccount:')}",
        "functions add-invoker-policy-binding visits",
    ]
    assert flags(after_checks(reopen.run.commands)[-1])["member"] == "allUsers"
    assert writes(reopen.run) == [
        ("run.projects.locations.services.setIamPolicy", f"v1/{NEW['service']}:setIamPolicy")
    ]
    assert reopen.invokers == ["allUsers"]
    assert "raise the budget first" in reopen.run.result.stdout


# --- a budget and a role made before ---


def test_existing_budget_gets_the_topic_and_keeps_its_emails(old_cloud: Cloud, old: Run) -> None:
    [patch] = old.requests("billingbudgets.billingAccounts.budgets.patch")
    budget = old_cloud.standin.resource("billingbudgets", f"{BILLING_ACCOUNT}/budgets/0999")

    assert old.requests("billingbudgets.billingAccounts.budgets.create") == []
    assert patch.path == f"v1/{BILLING_ACCOUNT}/budgets/0999"
    assert budget["notificationsRule"] == {
        "disableDefaultIamRecipients": False,
        "pubsubTopic": OLD["topic"],
        "schemaVersion": "1.0",
    }
    assert budget["thresholdRules"] == [{"thresholdPercent": 0.5}, {"thresholdPercent": 1.0}]
    assert guard_env(old)["BUDGET_ID"] == "0999"
    assert "it now also notifies the guard" in old.result.stdout


def test_deleted_role_is_brought_back_with_its_three_permissions(
    old_cloud: Cloud, old: Run
) -> None:
    role = old_cloud.standin.resource("iam", OLD["role"])

    role_requests = [call for call in old.calls if call.method_id.startswith("iam.projects.roles")]

    # Brought back, not created (its id is taken), then set back to the three permissions.
    assert [call.method_id.rsplit(".", 1)[1] for call in role_requests] == [
        "get",
        "undelete",
        "get",  # `roles update` reads the etag first
        "patch",
    ]
    assert role_requests[-1].body["includedPermissions"] == PERMISSIONS
    assert (role["includedPermissions"], role.get("deleted")) == (PERMISSIONS, None)


# --- the dry run, and runs that stop ---


def test_dry_run_plans_topic_rule_guard_and_binding(idle_cloud: Cloud, first: Run) -> None:
    dry_run = idle_cloud.deploy(f"--budget={BUDGET}", "--dry-run", ALLOWED_ORIGINS=SITE)
    # A dry run cannot know the billing account, its currency or the new budget's id.
    stdout = (
        dry_run.result.stdout.replace("BILLING_ACCOUNT_ID", BILLING_ACCOUNT.split("/")[1])
        .replace(f"{BUDGET}CURRENCY", f"{BUDGET}{BILLING_CURRENCY}")
        .replace("BUDGET_ID=BUDGET_ID", f"BUDGET_ID={guard_env(first)['BUDGET_ID']}")
    )
    planned = {command(call[1:]): call for call in plan(stdout)}

    assert_plan_is(stdout, [["gcloud", *call] for call in after_checks(first.commands)])
    assert "pubsub topics create visits-budget" in planned
    rule = flags(planned["billing budgets create"])["notifications-rule-pubsub-topic"]
    assert rule == NEW["topic"]
    assert flags(planned["functions deploy visits-guard"])["trigger-topic"] == "visits-budget"
    binding = flags(planned["run services add-iam-policy-binding visits"])
    assert (binding["member"], binding["role"]) == (f"serviceAccount:{NEW['guard']}", NEW["role"])
    assert (dry_run.commands, dry_run.calls) == ([], [])


@pytest.mark.parametrize(
    ("args", "env", "fix"),
    [
        pytest.param(("--reopen", "--budget=5"), {}, "use it alone", id="reopen-with-budget"),
        pytest.param(("--reopen", "--gateway"), {}, "use it alone", id="reopen-with-gateway"),
        pytest.param(("--budget=5",), {"CLOSE_AT": "0"}, "CLOSE_AT needs", id="close-at-zero"),
        pytest.param(("--budget=5",), {"CLOSE_AT": "90%"}, "CLOSE_AT needs", id="close-at-percent"),
    ],
)
def test_budget_and_reopen_flags_are_checked_before_anything_is_sent(
    idle_cloud: Cloud, args: tuple[str, ...], env: dict[str, str], fix: str
) -> None:
    run = idle_cloud.deploy(*args, **{"ALLOWED_ORIGINS": SITE, **env})

    assert run.result.returncode != 0
    assert fix in run.result.stderr
    assert run.calls == []


def test_reopen_without_a_function_says_there_is_nothing_to_reopen(idle_cloud: Cloud) -> None:
    run = idle_cloud.deploy("--reopen")

    assert run.result.returncode != 0
    assert "nothing to reopen" in run.result.stderr
    assert [call.method_id for call in run.api_calls] == [
        "cloudfunctions.projects.locations.functions.get"
    ]
