"""`make run`: the emulator and the function on http://localhost:8080, until Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from scripts.emulator import Emulator, EmulatorError

ROOT = Path(__file__).resolve().parent.parent
PORT = int(os.environ.get("PORT", "8080"))


def main() -> int:
    """Start both, print how to try them, and stop both cleanly on Ctrl-C or SIGTERM."""
    env = dict(os.environ)
    env.setdefault("GOOGLE_CLOUD_PROJECT", "local-project")
    env.setdefault("ALLOWED_ORIGINS", "*")  # any local page may call it; never deploy with *
    emulator = None
    if "DATASTORE_EMULATOR_HOST" not in env:
        emulator = Emulator()
        log = ROOT / ".emulator.log"
        print(f"Starting Google's Firestore emulator (Datastore mode); log in {log.name} ...")
        try:
            env["DATASTORE_EMULATOR_HOST"] = emulator.start(log)
        except EmulatorError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    host = env["DATASTORE_EMULATOR_HOST"]
    function = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "functions_framework",
            "--target=visits",
            f"--source={ROOT / 'main.py'}",
            f"--port={PORT}",
        ],
        cwd=ROOT,
        env=env,
    )
    url = f"http://localhost:{PORT}/"
    print(
        f"\nThe counter is on {url} (Datastore emulator at {host}; counts live in memory"
        " and end with it).\n"
        f"  count a visit:  curl -X POST '{url}?page=/'\n"
        f"  read it:        curl '{url}?page=/'\n"
        "Press Ctrl-C to stop.\n",
        flush=True,
    )
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return function.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        function.terminate()
        function.wait(timeout=10)
        if emulator is not None:
            emulator.stop()
        print("Stopped the function and the emulator.")


def _interrupt(_signum: int, _frame: object) -> None:
    """Treat SIGTERM like Ctrl-C, so both children are stopped either way."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
