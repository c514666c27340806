"""deploy.sh run for real against the fake gcloud (tests/fakes/gcloud), and its calls read back."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAKES = ROOT / "tests" / "fakes"
PROJECT = "counter-project"
ORIGINS = "https://me.example,https://www.me.example"
SYSTEM_PATH = os.environ["PATH"]
# The only gcloud calls allowed before every check has passed: they create nothing.
READ_ONLY_CHECKS = {("auth", "list"), ("config", "get-value")}


@dataclass
class FakeCloud:
    """A project as the fake gcloud sees it, kept in files under home."""

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
        """Run deploy.sh from another folder, as a user might, with this run's log only."""
        self.log.unlink(missing_ok=True)
        full_env = self.env(**env)
        gcloud = shutil.which("gcloud", path=full_env["PATH"])
        assert gcloud == str(FAKES / "gcloud"), f"the real gcloud would run: {gcloud}"
        return subprocess.run(
            [str(ROOT / "deploy.sh"), *args],
            cwd=self.home,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def calls(self) -> list[list[str]]:
        """Every gcloud call of the last run, as argv lists."""
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def world(self) -> dict:
        """The fake project's resources."""
        return json.loads(self.state.read_text())

    def change(self, world: dict) -> None:
        """Replace the fake project's resources, as someone in the console might."""
        self.state.write_text(json.dumps(world))


def command(call: list[str]) -> str:
    """The command's words before its flags, e.g. "functions deploy visits"."""
    return " ".join(word for word in call if not word.startswith("-"))


def flags(call: list[str]) -> dict[str, str]:
    """The call's --name=value flags; bare --name flags map to ""."""
    return dict(arg[2:].partition("=")[::2] for arg in call if arg.startswith("--"))


def calls_of(calls: list[list[str]], prefix: str) -> list[list[str]]:
    """The calls whose command starts with prefix."""
    return [call for call in calls if command(call).startswith(prefix)]


def after_checks(calls: list[list[str]]) -> list[list[str]]:
    """The calls besides the read-only checks made before anything else."""
    return [call for call in calls if tuple(call[:2]) not in READ_ONLY_CHECKS]


def plan(stdout: str) -> list[list[str]]:
    """The commands a dry run printed, split as the shell would."""
    return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ ")]
