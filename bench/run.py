"""`make bench`: counting strategies under load, then cold start under CPU caps, on the emulator.

Starts the emulator behind an RpcDoor (which counts every Datastore call), one function server
per strategy, and drives every strategy at each concurrency in turn, for several rounds, so that
each comparison comes from neighbouring seconds of one run; tables show medians over rounds.
Then bench.coldstart measures first visits under CPU caps and warm CPU per hit, against the
usual get + put and the library floor. Writes bench/results/results.json (every
measurement), results.md and bench.png.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import NamedTuple

from bench import coldstart, load, report
from bench.door import RpcDoor
from bench.servers import (
    FUNCTIONS,
    LIBRARY_FLOOR,
    PRODUCT,
    ROOT,
    CpuCap,
    Server,
    emulator,
    function_env,
)
from counter import config, instance

RESULTS = ROOT / "bench" / "results"


class Strategy(NamedTuple):
    """One way of counting: a function served over HTTP, or (no target) the bare Commit."""

    title: str
    target: str | None = None
    source: Path = PRODUCT
    settings: dict[str, str] = {}  # noqa: RUF012  (never changed)


STRATEGIES = (
    Strategy("read, add one, write back", "classic", FUNCTIONS),
    Strategy("get + put in a transaction", "transactional", FUNCTIONS),
    Strategy("this function", "visits"),
    Strategy("this function, COUNTER_SHARDS=8", "visits", PRODUCT, {"COUNTER_SHARDS": "8"}),
    Strategy("library floor", "library_floor", LIBRARY_FLOOR),
    CEILING := Strategy("the bare Commit from threads, no HTTP"),
)
NOTES = (
    "- *read, add one, write back* and *get + put in a transaction*: bench/functions.py, with"
    " google-cloud-datastore's Client; the transaction retries ABORTED with backoff until a 5 s"
    " deadline, then answers 503.",
    "- *this function*: main.py as deployed, one Commit per hit with server-side increments of"
    " the page's total and, with HISTORY on (the default), of today's count, atomically."
    " COUNTER_SHARDS=8 adds a Lookup of the 8 shards for the exact total (the emulator does not"
    " model the per-entity write limit that sharding avoids).",
    "- *library floor*: bench/library_floor.py, one NON_TRANSACTIONAL Commit of the page's"
    " increment per hit through google-cloud-datastore's GAPIC client, and nothing else.",
    "- *the bare Commit*: the product's own `counts.increment` from threads of one process, no"
    " HTTP: the ceiling for the Commit alone.",
)


def main() -> int:
    """Run everything, write the results, print the tables."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--levels", default="1,8,32,64", help="concurrencies")
    parser.add_argument("--rounds", type=int, default=3, help="times each level is measured")
    parser.add_argument("--hits", type=int, default=400, help="hits per level")
    parser.add_argument("--seconds", type=float, default=10.0, help="start no hit after this")
    parser.add_argument(
        "--cpus", type=float, default=1.0, help="CPU cap of each server, as deployed"
    )
    parser.add_argument("--threads", default="8", help="THREADS of each server, as deployed")
    parser.add_argument(
        "--cold-runs", type=int, default=5, help="cold starts per function and tier"
    )
    parser.add_argument("--warm-hits", type=int, default=400, help="after each cold start")
    parser.add_argument("--quick", action="store_true", help="one round of 100 hits, one cold run")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.hits, args.cold_runs = 1, 100, 1
    levels = [int(c) for c in args.levels.split(",")]
    started = time.monotonic()
    with emulator("emulator") as host:
        rows = _throughput(host, levels, args)
        print("Cold starts under CPU caps ...", flush=True)
        cold, left_out = coldstart.measure(host, runs=args.cold_runs, warm_hits=args.warm_hits)
    results = {
        "machine": report.machine(),
        "settings": {
            "rounds": args.rounds,
            "hits per level": args.hits,
            "seconds per level at most": args.seconds,
            "servers": f"{args.cpus:g} vCPU each (a cgroup quota), THREADS={args.threads}",
            "cold starts per function and tier": args.cold_runs,
            "warm hits per start": args.warm_hits,
        },
        "throughput": rows,
        "coldstart": cold,
        "left out": left_out,
    }
    (RESULTS / "results.json").write_text(json.dumps(results, indent=1))
    text = report.markdown(results, NOTES, [*coldstart.NOTES, *(f"- {x}" for x in left_out)])
    (RESULTS / "results.md").write_text(text)
    report.plot(results, RESULTS / "bench.png")
    print(f"\n{text}\nWrote bench/results/; {time.monotonic() - started:.0f} s in all.")
    return 0


def _throughput(host: str, levels: list[int], args: argparse.Namespace) -> list[dict]:
    doors = {s.title: RpcDoor(host) for s in STRATEGIES}  # one each: no count is shared
    run = time.strftime("%H%M%S")
    with contextlib.ExitStack() as stack:
        servers = {}
        for s in (s for s in STRATEGIES if s.target):
            env = function_env(doors[s.title].host, THREADS=args.threads, **s.settings)
            cap = stack.enter_context(CpuCap(args.cpus))
            servers[s.title] = stack.enter_context(
                contextlib.closing(Server(s.target, s.source, env, cap=cap))
            )
        for server in servers.values():
            server.wait_listening()
        print("Warming up the emulator, then each server ...", flush=True)
        _drive(doors[CEILING.title], None, f"/warm-up/{run}", 8, 2000, 30)
        for title, server in servers.items():
            _drive(doors[title], server, f"/warm-up/{run}", 8, 200, 30)
            _settle(server)
        rows = []
        for round_ in range(args.rounds):
            for clients in levels:
                for n, s in enumerate(STRATEGIES):
                    page = f"/bench/{run}/{n}/{clients}/{round_}"
                    row = _measure(
                        host, doors[s.title], s, servers.get(s.title), page, clients, args
                    )
                    rows.append({"title": s.title, "clients": clients, **row})
                    print(
                        f"  round {round_ + 1} {s.title[:34]:<34} c={clients:<3}"
                        f" {row['hits_per_second']:7.1f} hits/s  p99 {row['p99_ms']:7.1f} ms"
                        f"  errors {row['sent'] - row['ok']}  lost {row['lost']}"
                        f"  RPCs {row['rpcs']}",
                        flush=True,
                    )
        return rows


def _measure(
    host: str,
    door: RpcDoor,
    strategy: Strategy,
    server: Server | None,
    page: str,
    clients: int,
    args: argparse.Namespace,
) -> dict:
    rpcs = door.rpcs
    cpu = server.cpu_seconds() if server else 0.0
    level = _drive(door, server, page, clients, args.hits, args.seconds)
    if server:  # hits whose clients gave up may still be running: their work is this level's
        _settle(server)
    reader = instance.for_settings(
        config.Settings.from_env(function_env(host, **strategy.settings))
    )
    return {
        **level,
        "rpcs": door.rpcs - rpcs - level.get("warm_up_hits", 0),
        "server_cpu_seconds": server.cpu_seconds() - cpu if server else level["load_cpu_seconds"],
        "lost": level["ok"] - reader.counts.read(page),
    }


def _drive(
    door: RpcDoor, server: Server | None, page: str, clients: int, hits: int, seconds: float
) -> dict:
    target = ["--url", server.url(page)] if server else ["--direct", page]
    return load.in_process(target, clients, hits, seconds, function_env(door.host))


def _settle(server: Server, timeout: float = 180.0) -> None:
    """Wait until the server has finished every request, including those whose client left."""
    deadline = time.monotonic() + timeout
    while server.busy() and time.monotonic() < deadline:
        time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main())
