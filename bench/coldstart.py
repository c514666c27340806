"""Cold start under Cloud Functions' CPU tiers, and warm server CPU per hit, for each contender.

For each tier a cgroup caps the server's CPU as the platform does (256 MiB gets 0.167 vCPU);
the emulator stays outside the cap. A run spawns the public CLI, POSTs until the first answer
(which must be a 200: the first counted visit), then sends sequential warm hits and divides the
server's CPU time by them. Runs interleave the contenders and tiers; the report takes medians.

The contenders: functions-framework alone; the usual get + put with google-cloud-datastore's
Client (bench/functions.py); the library floor, one increment Commit per POST through the same
GAPIC client the product uses (bench/library_floor.py); and this function. One more is this
function as it runs on Google: Application Default Credentials from a metadata server, and
Datastore over TLS under Google's host name, through the tests' stand-in of Google
(tests/google_standin.py) in front of the same emulator, outside the cap too. It shows what the
credentials and the TLS handshake add. If the stand-in does not start, or that contender does
not start or answer its first POST with 200, one line says so and the tables leave it out.

`python -m bench.coldstart --also before=/path/to/checkout` adds another checkout's main.py as
one more contender in the same interleaved runs.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import itertools
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from bench import load, report
from bench.servers import (
    BARE,
    FUNCTIONS,
    LIBRARY_FLOOR,
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
    report.USUAL: ("classic", FUNCTIONS),
    report.FLOOR: ("library_floor", LIBRARY_FLOOR),
    "this function": ("visits", PRODUCT),
}
AS_ON_GOOGLE = "this function, as on Google"
NOTES = (
    "- *bare functions-framework*: bench/bare.py, no database: the floor of any function.",
    "- *usual get + put*: bench/functions.py's read, add one, write back, with"
    " google-cloud-datastore's Client.",
    "- *library floor*: bench/library_floor.py, functions-framework and google-cloud-datastore's"
    " GAPIC client `datastore_v1` (the one the product uses), built as the product builds it"
    " for the emulator, sending one NON_TRANSACTIONAL Commit per POST that upserts the page with"
    " an increment transform, and nothing else: no settings, checks, retries or log line.",
    "- *this function*: main.py as deployed, with its default settings (HISTORY on: the page's"
    " total and today's count in one Commit).",
    f"- *{AS_ON_GOOGLE}*: the same, with Application Default Credentials from a metadata server"
    " and Datastore over TLS under Google's host name, through the tests' stand-in of Google"
    " (tests/google_standin.py) in front of the same emulator, outside the cap too.",
)
"""What each contender is, for the report."""


class NotServing(RuntimeError):
    """A server did not start, or answered its first POST or a warm hit with other than 200."""


def measure(
    emulator_host: str, *, runs: int, warm_hits: int, also: dict[str, Path] | None = None
) -> tuple[list[dict], list[str]]:
    """Every contender at every tier, `runs` times, interleaved: one row per start, and a line
    for each contender left out."""
    left_out: list[str] = []
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
    with _google(emulator_host, left_out) as on_google:
        if on_google is None:
            del contenders[AS_ON_GOOGLE]
        rows = _interleave(
            contenders, env, on_google or {}, left_out, runs=runs, warm_hits=warm_hits
        )
    return rows, left_out


def _interleave(
    contenders: dict[str, tuple[str, Path]],
    env: dict[str, str],
    on_google: dict[str, str],
    left_out: list[str],
    *,
    runs: int,
    warm_hits: int,
) -> list[dict]:
    """Start each contender at each tier in turn, run after run, after warming the emulator."""
    counts = instance.build(config.Settings.from_env(env)).counts
    for _ in range(100):  # a fresh emulator is slow over its first calls
        counts.increment("/cold/warm-up")
        counts.read("/cold/warm-up")
    stamp, starts = time.strftime("%H%M%S"), itertools.count()
    rows: list[dict] = []
    for run in range(runs):
        for cpus in TIERS:
            for name, (target, source) in list(contenders.items()):
                page = f"/cold/{stamp}/{next(starts)}"
                chosen = on_google if name == AS_ON_GOOGLE else env
                try:
                    row = _start(target, source, chosen, cpus, page, warm_hits)
                except NotServing as exc:
                    if name != AS_ON_GOOGLE:
                        raise NotServing(f"{name} at {cpus:g} vCPU: {exc}") from exc
                    # The stand-in is not the product: its failure leaves the others' numbers.
                    _leave_out(left_out, f"at {cpus:g} vCPU, {exc}")
                    del contenders[name]
                    rows = [r for r in rows if r["function"] != name]
                    continue
                rows.append({"function": name, "cpus": cpus, "run": run, **row})
                print(
                    f"  {cpus:5.3f} vCPU  {name:<27} first visit {row['first_s']:5.2f} s"
                    f"  warm {row['warm_cpu_ms']:5.2f} ms CPU/hit",
                    flush=True,
                )
    return rows


@contextlib.contextmanager
def _google(emulator_host: str, left_out: list[str]) -> Iterator[dict[str, str] | None]:
    """A server environment as on Cloud Functions, reaching the emulator through the stand-in;
    None, with a line in left_out saying why, if the stand-in cannot start."""
    sys.path.insert(0, str(ROOT / "tests"))  # the stand-in of Google lives with the tests
    google = None
    try:
        from google_standin import GoogleStandIn

        google = GoogleStandIn(emulator_host, PROJECT).start()
    except Exception as exc:  # whatever breaks the stand-in must not stop the other contenders
        _leave_out(left_out, f"the stand-in of Google did not start ({type(exc).__name__}: {exc})")
    if google is None:
        yield None
        return
    try:
        yield {**function_env(""), **google.env()}
    finally:
        google.stop()


def _leave_out(left_out: list[str], why: str) -> None:
    left_out.append(f"*{AS_ON_GOOGLE}* is left out of the tables: {why}.")
    print(f"  {AS_ON_GOOGLE} is left out of the tables: {why}.", flush=True)


def _start(
    target: str, source: Path, env: dict[str, str], cpus: float, page: str, warm_hits: int
) -> dict:
    with CpuCap(cpus) as cap:
        server = Server(target, source, env, cap=cap)
        try:
            try:
                server.wait_listening(poll=0.005)
            except RuntimeError as exc:
                raise NotServing(f"the server did not start ({exc})") from None
            listening = time.perf_counter() - server.spawned
            send = load.http_sender(server.url(page))
            while (status := send(0)) == load.NO_ANSWER:
                if server.process.poll() is not None or time.perf_counter() - server.spawned > 90:
                    raise NotServing("the first POST got no answer within 90 s")
                time.sleep(0.005)
            if status != 200:
                raise NotServing(f"the first POST answered {status}, not 200")
            first = time.perf_counter() - server.spawned
            cpu = server.cpu_seconds()
            statuses = [send(n) for n in range(warm_hits)]
            warm_cpu_ms = (server.cpu_seconds() - cpu) * 1000 / warm_hits
        finally:
            server.close()
    if set(statuses) != {200}:
        raise NotServing(f"the warm hits answered {sorted(set(statuses))}")
    return {"listening_s": listening, "first_s": first, "warm_cpu_ms": warm_cpu_ms}


def main() -> int:
    """Start an emulator, measure, print the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.coldstart", description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warm-hits", type=int, default=400)
    parser.add_argument("--also", action="append", default=[], metavar="NAME=CHECKOUT")
    args = parser.parse_args()
    also = {n: Path(p).resolve() / "main.py" for n, _, p in (a.partition("=") for a in args.also)}
    with emulator("emulator-coldstart") as host:
        rows, _ = measure(host, runs=args.runs, warm_hits=args.warm_hits, also=also)
    print("\n".join(report.first_visit_table(rows)))
    print()
    print("\n".join(report.warm_cpu_table(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
