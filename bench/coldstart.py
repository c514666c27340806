"""Cold start (process start to first 200) and `python -X importtime` of main.py."""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.load import HttpHitter
from scripts.emulator import free_port

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ColdStart:
    """Median seconds from spawning the server to its port accepting, and to the first 200."""

    label: str
    runs: int
    listening_s: float
    first_200_s: float


@dataclass(frozen=True)
class ImportTime:
    """Cumulative import time of main.py and its heaviest direct imports, in milliseconds."""

    total_ms: float
    top: list[tuple[str, float]]


def cold_start(
    label: str, target: str, source: Path, env: dict[str, str], page: str, runs: int = 3
) -> ColdStart:
    """Start `python -m functions_framework` `runs` times; time the port and the first POST."""
    listening, first = [], []
    for run in range(runs):
        port = free_port()
        command = [
            sys.executable,
            "-m",
            "functions_framework",
            f"--target={target}",
            f"--source={source}",
            "--host=127.0.0.1",
            f"--port={port}",
        ]
        started = time.perf_counter()
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            listening.append(_wait_for_port(port, process, started))
            hitter = HttpHitter(f"http://127.0.0.1:{port}/?page={page}{run}")
            while hitter.hit() != 200:
                if time.perf_counter() - started > 60 or process.poll() is not None:
                    raise RuntimeError(f"{label}: no 200 within 60 s of starting")
                time.sleep(0.005)
            first.append(time.perf_counter() - started)
            hitter.close()
        finally:
            process.terminate()
            process.wait(timeout=30)
    return ColdStart(label, runs, statistics.median(listening), statistics.median(first))


def _wait_for_port(port: int, process: subprocess.Popen[bytes], started: float) -> float:
    import socket

    while time.perf_counter() - started < 60 and process.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return time.perf_counter() - started
        except OSError:
            time.sleep(0.005)
    raise RuntimeError(f"nothing listened on port {port} within 60 s")


_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def import_time(runs: int = 3, top: int = 6) -> ImportTime:
    """`python -X importtime -c "import main"`: the median run's total and heaviest imports."""
    measured = []
    for _ in range(runs + 1):  # the first run may write bytecode caches: not counted
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import main"],
            cwd=ROOT,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""},
            capture_output=True,
            text=True,
            check=True,
        )
        measured.append(_parse_import_time(done.stderr, top))
    measured = sorted(measured[1:], key=lambda m: m.total_ms)
    return measured[len(measured) // 2]


def _parse_import_time(stderr: str, top: int) -> ImportTime:
    # Lines come children first; after `-c "import main"` main is the last top-level line, and
    # its direct imports are the lines one level deeper since the previous top-level line.
    entries = []
    for line in stderr.splitlines():
        match = _IMPORT_LINE.match(line)
        if match:
            depth = len(match.group(3)) // 2
            entries.append((depth, match.group(4), int(match.group(2)) / 1000))
    main_index = max(i for i, e in enumerate(entries) if e[0] == 0 and e[1] == "main")
    start = max((i for i, e in enumerate(entries[:main_index]) if e[0] == 0), default=-1) + 1
    direct = [(name, ms) for depth, name, ms in entries[start:main_index] if depth == 1]
    heaviest = sorted(direct, key=lambda item: item[1], reverse=True)[:top]
    return ImportTime(total_ms=entries[main_index][2], top=heaviest)
