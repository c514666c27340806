"""Cold start under Cloud Functions' CPU tiers, and warm server CPU per hit, for three functions.

For each tier a cgroup caps the server's CPU as the platform does (256 MiB gets 0.167 vCPU);
the emulator stays outside the cap. A run spawns the public CLI, POSTs every 5 ms until the
first 200 (the first counted visit), then sends sequential warm hits and divides the server's
CPU time by them. Runs interleave the functions and tiers; the report takes medians.

A fourth contender is this function as it runs on Google: `K_SERVICE` set, its token from a
metadata server and Datastore over TLS under Google's host name, through the tests' stand-in of
Google (tests/google_standin.py) in front of the same emulator. It shows what the credentials
and the TLS handshake add; the stand-in, like the emulator, runs outside the cap.

`python -m bench.coldstart --also before=/path/to/checkout` adds another checkout's main.py as
one more contender in the same interleaved runs.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from bench import load, report
from bench.servers import (
    BARE,
    FUNCTIONS,
    PRODUCT,
    PROJECT,
    ROOT,
    CpuCap,
    Server,
    emulator,
    function_env,
)
from counter import config, instance

TIERS = (0.167, 0.583, 1.0)
"""vCPU of 256 MiB, 1 GiB and 2 GiB (or --cpu=1) functions (Cloud Functions' memory page)."""
CONTENDERS = {
    "bare functions-framework": ("bare", BARE),
    "usual get + put": ("classic", FUNCTIONS),
    "this function": ("visits", PRODUCT),
}
AS_ON_GOOGLE = "this function, as on Google"


def measure(
    emulator_host: str, *, runs: int, warm_hits: int, also: dict[str, Path] | None = None
) -> list[dict]:
    """Every contender at every tier, `runs` times, interleaved; one row per start."""
    contenders = {
        **CONTENDERS,
        AS_ON_GOOGLE: ("visits", PRODUCT),
        **{name: ("visits", path) for name, path in (also or {}).items()},
    }
    for _, source in contenders.values():  # as Google's buildpack does: `compileall` the source
        compileall.compile_file(source, quiet=1)
        if (source.parent / "counter").is_dir():
            compileall.compile_dir(source.parent / "counter", quiet=1)
    env = function_env(emulator_host)
    with _google(emulator_host) as on_google:
        return _interleave(contenders, env, on_google, runs=runs, warm_hits=warm_hits)


def _interleave(
    contenders: dict[str, tuple[str, Path]],
    env: dict[str, str],
    on_google: dict[str, str],
    *,
    runs: int,
    warm_hits: int,
) -> list[dict]:
    """Start each contender at each tier in turn, run after run, after warming the emulator."""
    counts = instance.build(config.Settings.from_env(env)).counts
    for _ in range(100):  # a fresh emulator is slow over its first calls
        counts.increment("/cold/warm-up")
        counts.read("/cold/warm-up")
    stamp = time.strftime("%H%M%S")
    rows = []
    for run in range(runs):
        for cpus in TIERS:
            for name, (target, source) in contenders.items():
                page = f"/cold/{stamp}/{len(rows)}"
                chosen = on_google if name == AS_ON_GOOGLE else env
                row = _start(target, source, chosen, cpus, page, warm_hits)
                rows.append({"function": name, "cpus": cpus, "run": run, **row})
                print(
                    f"  {cpus:5.3f} vCPU  {name:<26} first visit {row['first_s']:5.2f} s"
                    f"  warm {row['warm_cpu_ms']:5.2f} ms CPU/hit",
                    flush=True,
                )
    return rows


@contextlib.contextmanager
def _google(emulator_host: str) -> Iterator[dict[str, str]]:
    """A server environment as on Cloud Functions, reaching the emulator through the stand-in."""
    sys.path.insert(0, str(ROOT / "tests"))  # the stand-in of Google lives with the tests
    from google_standin import GoogleStandIn

    with GoogleStandIn(emulator_host, PROJECT) as google:
        yield {
            **function_env(""),
            **google.env(),
            "DATASTORE_EMULATOR_HOST": "",
            "K_SERVICE": "visits",
        }


def _start(
    target: str, source: Path, env: dict[str, str], cpus: float, page: str, warm_hits: int
) -> dict:
    with CpuCap(cpus) as cap:
        server = Server(target, source, env, cap=cap)
        try:
            server.wait_listening(poll=0.005)
            listening = time.perf_counter() - server.spawned
            send = load.http_sender(server.url(page))
            while send(0) != 200:
                if server.process.poll() is not None or time.perf_counter() - server.spawned > 90:
                    raise RuntimeError(f"{target} from {source} gave no 200 within 90 s")
                time.sleep(0.005)
            first = time.perf_counter() - server.spawned
            cpu = server.cpu_seconds()
            statuses = [send(n) for n in range(warm_hits)]
            warm_cpu_ms = (server.cpu_seconds() - cpu) * 1000 / warm_hits
        finally:
            server.close()
    if set(statuses) != {200}:
        raise RuntimeError(f"{target}: warm hits answered {sorted(set(statuses))}")
    return {"listening_s": listening, "first_s": first, "warm_cpu_ms": warm_cpu_ms}


def main() -> int:
    """Start an emulator, measure, print the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.coldstart", description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warm-hits", type=int, default=200)
    parser.add_argument("--also", action="append", default=[], metavar="NAME=CHECKOUT")
    args = parser.parse_args()
    also = {n: Path(p).resolve() / "main.py" for n, _, p in (a.partition("=") for a in args.also)}
    with emulator("emulator-coldstart") as host:
        rows = measure(host, runs=args.runs, warm_hits=args.warm_hits, also=also)
    print("\n".join(report.coldstart_table(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
