"""Start, stop, freeze and thaw Google's Firestore emulator in Datastore mode."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

INSTALL_HINT = (
    "install the Google Cloud CLI and its emulator: "
    "`gcloud components install cloud-firestore-emulator` "
    "(or `apt-get install google-cloud-cli-firestore-emulator` on Debian/Ubuntu)"
)


class EmulatorError(RuntimeError):
    """The emulator is missing or did not start."""


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Emulator:
    """One emulator process group on loopback; its data lives in memory and ends with it."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.log_path: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        """The value for DATASTORE_EMULATOR_HOST."""
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The emulator's process (and process group) id, once started."""
        return self._process.pid if self._process is not None else None

    def start(self, log_path: Path, timeout: float = 90.0) -> str:
        """Start the emulator and wait until it answers; return its host:port."""
        gcloud = shutil.which("gcloud")
        if gcloud is None:
            raise EmulatorError(f"gcloud is not on PATH; {INSTALL_HINT}")
        command = [
            gcloud,
            "emulators",
            "firestore",
            "start",
            "--database-mode=datastore-mode",
            f"--host-port={self.host}",
        ]
        self.log_path = log_path
        # A session of its own, so stop() and freeze() reach the emulator's Java child too.
        with log_path.open("wb") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise EmulatorError(f"the emulator exited early:\n{self._tail()}\n{INSTALL_HINT}")
            if self.healthy():
                return self.host
            time.sleep(0.25)
        self.stop()
        raise EmulatorError(f"the emulator did not answer within {timeout:.0f} s:\n{self._tail()}")

    def healthy(self) -> bool:
        """Whether the emulator answers its health check."""
        try:
            with urllib.request.urlopen(f"http://{self.host}/", timeout=1) as reply:
                return reply.read().strip() == b"Ok"
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the emulator and wait for it."""
        if self._process is None or self._process.poll() is not None:
            return
        self.thaw()
        self._signal(signal.SIGINT)
        try:
            self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self._process.wait()
        self._signal(signal.SIGKILL)  # the Java child, should it outlive gcloud

    def freeze(self) -> None:
        """Stop the emulator's processes in place: connections open, nothing answered."""
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """Let a frozen emulator run again."""
        self._signal(signal.SIGCONT)

    def _signal(self, signum: int) -> None:
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signum)

    def _tail(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
