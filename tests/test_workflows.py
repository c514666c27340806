"""The GitHub Actions workflows: their shape, read as YAML, and actionlint catching broken ones.

The workflows only run on GitHub; here they are linted (`make lint-workflows`, part of
`make test`) and their triggers, permissions and order checked. The Deploy job's steps run in
tests/test_deploy_github.py, with the repository variables `deploy.sh --github` printed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
AUTH = "google-github-actions/auth@"
SETUP_GCLOUD = "google-github-actions/setup-gcloud@"


def workflow(name: str) -> dict:
    """A workflow file as data; YAML 1.1 reads the key `on` as True, so it is put back."""
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    data["on"] = data.pop(True)
    return data


@pytest.fixture(scope="module")
def test_wf() -> dict:
    """.github/workflows/test.yml."""
    return workflow("test.yml")


@pytest.fixture(scope="module")
def deploy_wf() -> dict:
    """.github/workflows/deploy.yml."""
    return workflow("deploy.yml")


def step_using(job: dict, action: str) -> dict:
    """The one step of the job that uses the action (owner/name@)."""
    [step] = [step for step in job["steps"] if step.get("uses", "").startswith(action)]
    return step


def step_running(job: dict, prefix: str) -> dict:
    """The one step of the job whose command starts with prefix."""
    [step] = [step for step in job["steps"] if step.get("run", "").startswith(prefix)]
    return step


def test_every_push_and_pull_request_is_tested(test_wf: dict, deploy_wf: dict) -> None:
    assert test_wf["on"] == {
        "push": {"branches-ignore": ["main"]},
        "pull_request": None,
        "workflow_call": None,
    }
    # Pushes to main are tested by the same workflow, called by Deploy.
    assert deploy_wf["on"] == {"push": {"branches": ["main"]}}
    assert deploy_wf["jobs"]["test"] == {"uses": "./.github/workflows/test.yml"}


def test_test_job_installs_what_make_test_needs(test_wf: dict) -> None:
    job = test_wf["jobs"]["test"]
    assert job["runs-on"] == "ubuntu-latest"
    python = step_using(job, "actions/setup-python@")["with"]
    # The oldest Python the project supports, as on the developers' machines.
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'requires-python = ">={python["python-version"]}"' in pyproject
    assert step_using(job, "actions/setup-java@")["with"] == {
        "distribution": "temurin",
        "java-version": "21",
    }
    components = step_using(job, SETUP_GCLOUD)["with"]["install_components"]
    assert "cloud-firestore-emulator" in components.split(",")
    make_test = step_running(job, "make test")
    assert make_test["run"] == "make test"
    assert make_test["env"] == {"CHROMIUM_PATH": "/usr/bin/chromium"}


def test_screenshots_and_logs_are_kept_and_no_push_waits_for_the_benchmark(test_wf: dict) -> None:
    steps = test_wf["jobs"]["test"]["steps"]
    uploads = {
        step["with"]["path"]: step
        for step in steps
        if step.get("uses", "").startswith("actions/upload-artifact@")
    }
    assert set(uploads) == {"test-artifacts/"}
    # Screenshots and logs matter most when a test failed.
    assert uploads["test-artifacts/"]["if"] == "always()"
    assert not [step for step in steps if "make bench" in step.get("run", "")]


def test_the_benchmark_runs_on_demand_and_keeps_its_tables() -> None:
    bench_wf = workflow("bench.yml")
    assert list(bench_wf["on"]) == ["workflow_dispatch"]
    job = bench_wf["jobs"]["bench"]
    steps = job["steps"]
    bench = step_running(job, "make bench")
    [upload] = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert upload["with"]["path"] == "bench/results/"
    assert steps.index(bench) < steps.index(upload)


def test_deploy_waits_for_the_tests(deploy_wf: dict) -> None:
    assert deploy_wf["jobs"]["deploy"]["needs"] == "test"


def test_only_the_deploy_job_may_ask_for_a_token(test_wf: dict, deploy_wf: dict) -> None:
    assert test_wf["permissions"] == {"contents": "read"}
    assert deploy_wf["permissions"] == {"contents": "read"}
    assert deploy_wf["jobs"]["deploy"]["permissions"] == {
        "contents": "read",
        "id-token": "write",
    }
    assert "permissions" not in test_wf["jobs"]["test"]


def test_two_deploys_never_overlap(deploy_wf: dict) -> None:
    assert deploy_wf["jobs"]["deploy"]["concurrency"] == {
        "group": "deploy",
        "cancel-in-progress": False,
    }


def test_deploy_signs_in_without_a_key(deploy_wf: dict) -> None:
    job = deploy_wf["jobs"]["deploy"]
    for path in WORKFLOWS.glob("*.yml"):
        text = path.read_text()
        assert "secrets." not in text, path
        assert "credentials_json" not in text, path
    # setup-gcloud signs gcloud in with the credentials auth left; deploy.sh runs after both.
    steps = job["steps"]
    order = [
        steps.index(step_using(job, AUTH)),
        steps.index(step_using(job, SETUP_GCLOUD)),
        steps.index(step_running(job, "./deploy.sh")),
    ]
    assert order == sorted(order)


@pytest.fixture(scope="module")
def make_lint() -> str:
    """make, where the linter can run: Node.js and npm are needed to install and run it."""
    make, npm = shutil.which("make"), shutil.which("npm")
    if make is None or npm is None:
        missing = "make and npm are needed to lint workflows"
        if os.environ.get("CI"):
            pytest.fail(missing, pytrace=False)
        pytest.skip(missing)
    return make


# Each breaks one workflow the way a hand edit might; None changes nothing, as a control.
BREAKAGES = [
    pytest.param(None, None, id="unchanged"),
    pytest.param(
        ("deploy.yml", "needs: test", "needs: tests"),
        'job "deploy" needs job "tests" which does not exist',
        id="needs-a-missing-job",
    ),
    pytest.param(
        ("deploy.yml", "id-token: write", "id-token: wirte"),
        '"wirte" is invalid for permission of scope "id-token"',
        id="misspelt-permission",
    ),
    pytest.param(
        ("deploy.yml", "steps.deploy.outputs.url", "steps.deplyo.outputs.url"),
        'property "deplyo" is not defined',
        id="unknown-step",
    ),
    pytest.param(
        ("deploy.yml", "toJSON(vars)", "toJSON(var)"),
        'undefined variable "var"',
        id="unknown-context",
    ),
    pytest.param(
        ("test.yml", "  pull_request:\n", "  pull_request: [\n"),
        "could not parse as YAML",
        id="broken-yaml",
    ),
]


@pytest.mark.parametrize(("edit", "finding"), BREAKAGES)
def test_make_lint_workflows_catches_a_broken_workflow(
    make_lint: str, tmp_path: Path, edit: tuple[str, str, str] | None, finding: str | None
) -> None:
    for path in WORKFLOWS.glob("*.yml"):
        shutil.copy(path, tmp_path / path.name)
    if edit:
        name, old, new = edit
        text = (tmp_path / name).read_text()
        assert old in text, f"{name} no longer has {old!r}: pick another breakage"
        (tmp_path / name).write_text(text.replace(old, new, 1))

    result = subprocess.run(
        [make_lint, "-s", "-C", str(ROOT), "lint-workflows", f"WORKFLOWS={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
    )

    if finding is None:
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"{len(list(WORKFLOWS.glob('*.yml')))} workflow file(s)" in result.stdout
    else:
        assert result.returncode != 0
        assert finding in result.stdout


def test_make_lint_workflows_fails_when_it_finds_no_workflow(
    make_lint: str, tmp_path: Path
) -> None:
    result = subprocess.run(
        [make_lint, "-s", "-C", str(ROOT), "lint-workflows", f"WORKFLOWS={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode != 0
    assert "no workflow files in" in result.stderr
