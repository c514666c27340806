"""Function servers as the platform runs them, optionally under a CPU cap, and what /proc shows.

A server is the public CLI, `python -m functions_framework --target=… --source=…`, which serves
with gunicorn (one worker, gthread) as Cloud Functions does. A CpuCap is a cgroup with a CPU
quota, joined by a small shell wrapper before it execs the server, so imports are capped too.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from counter import config
from scripts.emulator import Emulator, EmulatorError, free_port

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ROOT / "main.py"
FUNCTIONS = ROOT / "bench" / "functions.py"
BARE = ROOT / "bench" / "bare.py"
LIBRARY_FLOOR = ROOT / "bench" / "library_floor.py"
WORK = ROOT / "bench" / "results" / "run.tmp"
"""The emulator's logs; ignored by git."""
PROJECT = "bench-visit-counter"
PERIOD_US = 100_000
_TICKS = os.sysconf("SC_CLK_TCK")
_caps = itertools.count()


@contextlib.contextmanager
def emulator(name: str) -> Iterator[str]:
    """Google's emulator for one measurement, as DATASTORE_EMULATOR_HOST; its log in WORK."""
    WORK.mkdir(parents=True, exist_ok=True)
    print("Starting Google's Firestore emulator (Datastore mode) ...", flush=True)
    process = Emulator()
    try:
        yield process.start(WORK / f"{name}.log")
    except EmulatorError as exc:
        raise SystemExit(f"error: {exc}") from None
    finally:
        process.stop()


def function_env(emulator_host: str, **settings: str) -> dict[str, str]:
    """A server's environment: this one without any setting the function reads, plus these."""
    env = {k: v for k, v in os.environ.items() if k not in {*config.ENV_NAMES, "THREADS"}}
    env.update(
        DATASTORE_EMULATOR_HOST=emulator_host,
        GOOGLE_CLOUD_PROJECT=PROJECT,
        ALLOWED_ORIGINS="*",
        # One load process is one client: the highest limit keeps the check's cost in every
        # hit without refusing the benchmark's own traffic.
        RATE_LIMIT_PER_MINUTE="100000",
        PYTHONDONTWRITEBYTECODE="",  # start from cached bytecode, as a deployed image does
        **settings,
    )
    return env


class CpuCap:
    """A cgroup whose processes together get `cpus` of CPU time, removed on exit."""

    def __init__(self, cpus: float) -> None:
        self.cpus = cpus
        name = f"visit-counter-bench-{os.getpid()}-{next(_caps)}"
        self.v2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
        self.path = Path("/sys/fs/cgroup" if self.v2 else "/sys/fs/cgroup/cpu") / name

    def __enter__(self) -> CpuCap:
        if self.v2:  # the cpu controller must be on for the root's children
            (self.path.parent / "cgroup.subtree_control").write_text("+cpu")
        self.path.mkdir()
        quota = round(self.cpus * PERIOD_US)
        # The platform guarantees an instance its share; the highest weight asks the same of
        # this shared machine, whose other processes would otherwise take part of the quota.
        if self.v2:
            (self.path / "cpu.max").write_text(f"{quota} {PERIOD_US}")
            (self.path / "cpu.weight").write_text("10000")
        else:
            (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (self.path / "cpu.cfs_quota_us").write_text(str(quota))
            (self.path / "cpu.shares").write_text("262144")
        return self

    def __exit__(self, *exc: object) -> None:
        for _ in range(100):  # the last process may still be exiting
            with contextlib.suppress(OSError):
                self.path.rmdir()
                return
            time.sleep(0.05)

    def command(self, argv: list[str]) -> list[str]:
        """argv, run by a shell that first moves itself into this cgroup."""
        join = 'echo $$ > "$0/cgroup.procs" && exec "$@"'
        return ["sh", "-c", join, str(self.path), *argv]


class Server:
    """One function served on loopback from spawn to stop; the source's folder is its cwd."""

    def __init__(
        self, target: str, source: Path, env: dict[str, str], *, cap: CpuCap | None = None
    ) -> None:
        self.port = free_port()
        argv = [sys.executable, "-m", "functions_framework", f"--target={target}"]
        argv += [f"--source={source}", "--host=127.0.0.1", f"--port={self.port}"]
        self.spawned = time.perf_counter()
        self.process = subprocess.Popen(
            cap.command(argv) if cap else argv,
            cwd=source.parent,  # so `import counter` finds the source's own package
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def url(self, page: str) -> str:
        """Where to send hits for a page."""
        return f"http://127.0.0.1:{self.port}/?page={page}"

    def wait_listening(self, timeout: float = 90.0, poll: float = 0.02) -> None:
        """Wait until the port accepts connections: the app is imported and gunicorn bound."""
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            time.sleep(poll)
        raise RuntimeError(f"server on port {self.port} did not start (exit {self.process.poll()})")

    def busy(self) -> bool:
        """Whether a connection to the server is open or queued, so a request may be running."""
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in Path(table).read_text().splitlines()[1:]:
                local, _remote, state = line.split()[1:4]
                # ESTABLISHED, SYN_RECV, CLOSE_WAIT: the server has not closed it yet.
                if local.endswith(f":{self.port:04X}") and state in ("01", "03", "08"):
                    return True
        return False

    def pids(self) -> list[int]:
        """The gunicorn master, then its worker."""
        return tree(self.process.pid)

    def cpu_seconds(self) -> float:
        """CPU time used so far by the master and its worker."""
        return cpu_seconds(self.pids())

    def worker_rss_kib(self) -> int:
        """Resident memory of the worker that serves the requests."""
        return memory_kib(self.pids()[-1])["VmRSS"]

    def close(self) -> None:
        """Stop the whole process group (SIGINT: gunicorn's quick shutdown) and wait for it."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def tree(pid: int) -> list[int]:
    """A process and all its descendants."""
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            children += [int(p) for p in (task / "children").read_text().split()]
    return [pid, *(p for child in children for p in tree(child))]


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time used so far by these processes."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / _TICKS


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    return values
