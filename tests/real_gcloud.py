"""The real gcloud, set up so that the only Google it can reach is a stand-in (cloud_standin.py).

Each `Cloud` is one project: a stand-in serving on loopback and a gcloud configuration of its
own (CLOUDSDK_CONFIG in a temporary folder) in which
- the stand-in is gcloud's HTTP proxy, and every API the stand-in knows is overridden to plain
  http on its own host (`api_endpoint_overrides/firestore = http://firestore.googleapis.com/`);
  an https request or an API without an override shows up as unanswered and fails the run;
- an API gcloud cannot override (cloud_standin.TLS_ONLY: billingbudgets) goes over https to its
  real host through the proxy as a CONNECT; the stand-in ends TLS with a certificate from a
  throwaway CA made here, which gcloud trusts through core/custom_ca_certs_file (and nothing
  else does);
- a throwaway service-account key made here, whose token_uri is the stand-in's, is activated
  with `gcloud auth activate-service-account`, so `gcloud auth list` shows a real account;
- prompts, usage reporting, update checks and the GCE metadata probe are off.

deploy.sh runs with the real gcloud first on its PATH behind a recorder that writes down each
command line and then execs the real binary, so a test can compare what ran with a dry run.
"""

from __future__ import annotations

import configparser
import functools
import json
import os
import shlex
import shutil
import ssl
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import throwaway_ca
from cloud_standin import ROUTES, TLS_ONLY, Call, StandIn
from google_standin import write_service_account_key

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
GCLOUD = shutil.which("gcloud")
SYSTEM_PATH = os.environ["PATH"]
TOKEN_URI = "http://oauth2.googleapis.com/token"
# The only gcloud commands allowed before every check has passed: they send nothing to Google.
READ_ONLY_CHECKS = {("auth", "list"), ("config", "get-value")}
RECORDER = '''#!{python} -I
"""Write down this gcloud command line, then run the real gcloud with it."""
import json, os, sys
with open({log!r}, "a", encoding="utf-8") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
os.execv({gcloud!r}, [{gcloud!r}, *sys.argv[1:]])
'''


@dataclass(frozen=True)
class Sdk:
    """The installed Google Cloud SDK: where it lives and the Python it runs on."""

    root: Path
    python: str

    @property
    def lib(self) -> Path:
        """The folder of gcloud's own Python code (googlecloudsdk, the generated API clients)."""
        return self.root / "lib"

    def run_python(self, script: str, cwd: Path) -> str:
        """Run a script on the SDK's Python with gcloud's code importable; its output."""
        with tempfile.TemporaryDirectory() as config:
            result = subprocess.run(
                [self.python, "-c", script],
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=120,
                check=True,
                env={
                    "PATH": SYSTEM_PATH,
                    "PYTHONPATH": os.pathsep.join([str(self.lib), str(self.lib / "third_party")]),
                    "CLOUDSDK_CONFIG": config,
                },
            )
        return result.stdout


@functools.cache
def sdk() -> Sdk:
    """The SDK behind the gcloud on PATH, as `gcloud info` reports it."""
    with tempfile.TemporaryDirectory() as config:
        result = subprocess.run(
            [GCLOUD, "info", "--format=json(installation.sdk_root,basic.python_location)"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            env={**os.environ, "CLOUDSDK_CONFIG": config, "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"},
        )
    info = json.loads(result.stdout)
    return Sdk(Path(info["installation"]["sdk_root"]), info["basic"]["python_location"])


@dataclass(frozen=True)
class Run:
    """One finished deploy.sh run: its output, the requests Google got, the commands it ran."""

    result: subprocess.CompletedProcess[str]
    calls: list[Call]
    commands: list[list[str]]
    created: list[str]

    @property
    def api_calls(self) -> list[Call]:
        """The requests to Google's APIs, leaving out the exchanges of the key for tokens."""
        return [call for call in self.calls if call.api != "oauth2"]

    def requests(self, method_id: str) -> list[Call]:
        """The requests of one API method, e.g. "iam.projects.serviceAccounts.create"."""
        return [call for call in self.calls if call.method_id == method_id]

    def function_requests(self, verb: str, function_id: str) -> list[Call]:
        """The create or patch requests of one function: the counter, or the budget's guard."""
        return [
            call
            for call in self.requests(f"cloudfunctions.projects.locations.functions.{verb}")
            if call.query.get("functionId") == function_id
            or call.path.endswith(f"/functions/{function_id}")
        ]

    def seen(self) -> list[tuple[str, str]]:
        """Each request to Google's APIs as (method id, path), in order; the upload of the
        source, which has no method id, as ("storage upload", its path)."""
        return [(call.method_id or "storage upload", call.path) for call in self.api_calls]

    def keep_requests(self, name: str) -> Path:
        """Write seen() to test-artifacts/requests-NAME.txt, one tab-separated request a line,
        for a reader (or a closing note) to see what Google would have received."""
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"requests-{name}.txt"
        path.write_text("".join(f"{method}\t{url}\n" for method, url in self.seen()))
        return path


class Cloud:
    """A project on a stand-in and a gcloud configuration that reaches it and nothing else."""

    def __init__(
        self,
        home: Path,
        project: str,
        *,
        logged_in: bool = True,
        config_project: str | None = None,
    ) -> None:
        self.home = home
        self.project = project
        self.ca_file = home / "standin-ca.pem"
        self.standin = StandIn(project, tls=tls_context(self.ca_file))
        self.port = self.standin.start()
        self.config = home / "gcloud-config"
        self.command_log = home / "gcloud-commands.jsonl"
        self._write_config(config_project)
        self._install_recorder()
        if logged_in:
            self.account = f"deployer@{project}.iam.gserviceaccount.com"
            self.gcloud("auth", "activate-service-account", f"--key-file={self._make_key()}")

    def _write_config(self, project: str | None) -> None:
        """gcloud's properties file, as `gcloud config set` writes it."""
        properties = configparser.ConfigParser()
        properties["core"] = {
            "disable_usage_reporting": "true",
            "check_gce_metadata": "false",
            "http_timeout": "20",
            "custom_ca_certs_file": str(self.ca_file),
        }
        if project:
            properties["core"]["project"] = project
        properties["component_manager"] = {"disable_update_check": "true"}
        properties["survey"] = {"disable_prompts": "true"}
        properties["proxy"] = {"type": "http", "address": "127.0.0.1", "port": str(self.port)}
        properties["api_endpoint_overrides"] = {
            api: f"http://{api}.googleapis.com/"
            for api in ROUTES
            if api != "oauth2" and api not in TLS_ONLY
        }
        (self.config / "configurations").mkdir(parents=True)
        (self.config / "active_config").write_text("default")
        with (self.config / "configurations" / "config_default").open("w") as file:
            properties.write(file)

    def _install_recorder(self) -> None:
        """A `gcloud` first on deploy.sh's PATH that records its command line and runs gcloud."""
        bin_dir = self.home / "bin"
        bin_dir.mkdir()
        recorder = bin_dir / "gcloud"
        recorder.write_text(
            RECORDER.format(python=sys.executable, log=str(self.command_log), gcloud=GCLOUD)
        )
        recorder.chmod(0o755)

    def _make_key(self) -> Path:
        """A throwaway service-account key whose tokens come from the stand-in."""
        return write_service_account_key(
            self.home / "deployer-key.json",
            project=self.project,
            email=self.account,
            token_uri=TOKEN_URI,
        )

    def env(self, **overrides: str | None) -> dict[str, str]:
        """deploy.sh's environment; a name set to None is removed."""
        env = {
            "PATH": os.pathsep.join([str(self.home / "bin"), SYSTEM_PATH]),
            "HOME": str(self.home),
            "CLOUDSDK_CONFIG": str(self.config),
            "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
            "GOOGLE_CLOUD_PROJECT": self.project,
        }
        env.update(overrides)
        return {name: value for name, value in env.items() if value is not None}

    def gcloud(self, *args: str) -> str:
        """Run the real gcloud in this configuration; its output."""
        result = subprocess.run(
            [GCLOUD, *args], env=self.env(), capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        self.check_nothing_escaped()
        return result.stdout

    def deploy(self, *args: str, **env: str | None) -> Run:
        """Run deploy.sh from another folder, as a user might; what it did."""
        return self.run([str(ROOT / "deploy.sh"), *args], cwd=self.home, **env)

    def run(self, argv: list[str], *, cwd: Path, **env: str | None) -> Run:
        """Run a command that runs deploy.sh (a workflow step's script, say); what it did."""
        self.command_log.unlink(missing_ok=True)
        calls_before, created_before = len(self.standin.calls), len(self.standin.created)
        result = subprocess.run(
            argv,
            cwd=cwd,
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=300,
        )
        self.check_nothing_escaped()
        commands = []
        if self.command_log.exists():
            commands = [json.loads(line) for line in self.command_log.read_text().splitlines()]
        return Run(
            result,
            self.standin.calls[calls_before:],
            commands,
            self.standin.created[created_before:],
        )

    def check_nothing_escaped(self) -> None:
        """Fail on any request the stand-in could not answer: it was meant for the real Google."""
        unanswered = [str(call) for call in self.standin.unanswered]
        assert not unanswered, f"gcloud asked for what the stand-in does not serve: {unanswered}"

    def close(self) -> None:
        """Stop the stand-in."""
        self.standin.stop()


class Clouds:
    """The projects a test module deploys to, each on a stand-in of its own, all stopped by
    close(); a module-scoped fixture holds one (tests/test_deploy_budget.py)."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self.factory = factory
        self.started: list[Cloud] = []

    def new(self, name: str, project: str, **options: Any) -> Cloud:
        """A fresh project with its own gcloud configuration, in a folder called name."""
        cloud = Cloud(self.factory.mktemp(name), project, **options)
        self.started.append(cloud)
        return cloud

    def close(self) -> None:
        """Stop every stand-in started here."""
        for cloud in self.started:
            cloud.close()

    def __enter__(self) -> Clouds:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


CHANGED_DEPLOY_SETTINGS = {
    "REGION": "europe-west1",
    "FUNCTION_NAME": "counter",
    "RUNTIME": "python311",
    "MAX_INSTANCES": "5",
    "MIN_INSTANCES": "1",
    "CPU": "2",
    "MEMORY": "1Gi",
    "CONCURRENCY": "1",
    "SERVICE_ACCOUNT_NAME": "counter-runtime",
    "DATASTORE_DATABASE": "visits",
}
"""deploy.sh's own settings that a --deploy-only run reads, each changed from its default."""


def tls_context(ca_file: Path) -> ssl.SSLContext:
    """A server context for the TLS_ONLY APIs' hosts, signed by a throwaway CA written to
    ca_file: only a client told to trust that file accepts it."""
    certificate = throwaway_ca.issue([f"{api}.googleapis.com" for api in sorted(TLS_ONLY)])
    ca_file.write_bytes(certificate.ca_pem)
    chain = ca_file.with_name("standin-server.pem")
    chain.write_bytes(certificate.key_pem + certificate.cert_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain)
    return context


def command(call: list[str]) -> str:
    """A command's words before its flags, e.g. "functions deploy visits"."""
    return " ".join(word for word in call if not word.startswith("-"))


def flags(call: list[str]) -> dict[str, str]:
    """A command's --name=value flags; bare --name flags map to ""."""
    return dict(arg[2:].partition("=")[::2] for arg in call if arg.startswith("--"))


def after_checks(commands: list[list[str]]) -> list[list[str]]:
    """The commands besides the read-only checks made before anything else."""
    return [call for call in commands if tuple(call[:2]) not in READ_ONLY_CHECKS]


def plan(stdout: str) -> list[list[str]]:
    """The gcloud commands a dry run printed, split as the shell would."""
    lines = [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]
    return [line for line in lines if line[0] == "gcloud"]


def plan_groups(stdout: str) -> tuple[list[list[str]], list[list[str]]]:
    """A dry run's plan as it groups it: the commands that only read, then those that create."""
    reads, _, creates = stdout.partition("\nCreates or changes:\n")
    assert "Reads (these change nothing):" in reads, "the plan is not grouped"
    return plan(reads), plan(creates)


def assert_plan_is(stdout: str, done: list[list[str]]) -> None:
    """A dry run planned exactly what a real run did: each group in the order it ran."""
    reads, creates = plan_groups(stdout)
    assert [call for call in done if call in reads] == reads
    assert [call for call in done if call in creates] == creates
    assert len(done) == len(reads) + len(creates)


def succeeded(run: Run) -> Run:
    """The run, after checking that deploy.sh exited 0."""
    assert run.result.returncode == 0, run.result.stdout + run.result.stderr
    return run
