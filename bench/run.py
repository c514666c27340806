"""`make bench`: each counting strategy at several concurrencies, on Google's emulator.

Starts the emulator and one real functions-framework server per strategy on loopback, drives
each with a bounded load generator (a fixed number of hits per level, a time limit, a fresh page
per level), counts Datastore RPCs with a gRPC interceptor, checks the stored count, and writes
bench/results/results.md and bench/results/bench.png. Levels run in turn for every strategy, so
the ratios at one concurrency come from neighbouring minutes of the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench import coldstart, procs, report, rpc_count
from counter.config import ConfigError, Settings
from counter.store import CounterStore
from scripts.emulator import Emulator, EmulatorError, free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
WORK = RESULTS / "run.tmp"
"""Logs, RPC counter files and data of the last run; ignored by git (bench/results/*.tmp)."""
SAVED = WORK / "run.pickle"
"""The last run's measurements, for --report-only."""

PROJECT = "bench-visit-counter"
BASELINES = ROOT / "bench" / "baselines.py"
SHARDS = "8"
TARGET_PAIRS = 5
"""Product and ceiling measurements at the target's concurrency, alternating, for its verdict."""
RUN_ID = time.strftime("%H%M%S")
"""Part of every page name, so a rerun against a kept emulator starts from fresh pages."""


@dataclass(frozen=True)
class Strategy:
    """One way of counting: a function served over HTTP, or (no target) the raw ceiling."""

    key: str
    title: str
    target: str | None = None
    source: Path | None = None
    env: dict[str, str] = field(default_factory=dict)


STRATEGIES = (
    Strategy("classic", "1. read-then-write, no transaction", "classic", BASELINES),
    Strategy("transaction", "2. get + put in a transaction", "transactional", BASELINES),
    Strategy("product", "3. this project: one Commit, increment", "visits", ROOT / "main.py"),
    Strategy(
        "sharded",
        f"4. this project, COUNTER_SHARDS={SHARDS}",
        "visits",
        ROOT / "main.py",
        {"COUNTER_SHARDS": SHARDS},
    ),
    Strategy("ceiling", "5. raw ceiling: the Commit from threads, no HTTP"),
    Strategy(
        "coalesced",
        "6. this project, COALESCE_HITS=true",
        "visits",
        ROOT / "main.py",
        {"COALESCE_HITS": "true"},
    ),
)


@dataclass
class Measurement:
    """One strategy at one concurrency: the load summary plus what the database and CPUs saw."""

    load: dict
    stored: int
    lost: int
    rpcs: dict[str, int]
    cpu_ms_per_hit: dict[str, float]
    other_cores: float


@dataclass
class BenchRun:
    """Everything the report needs."""

    machine: dict[str, str]
    settings: dict[str, str]
    strategies: list[Strategy]
    skipped: dict[str, str] = field(default_factory=dict)
    results: dict[tuple[str, int], Measurement] = field(default_factory=dict)
    peak_rss_kib: dict[str, int] = field(default_factory=dict)
    target_pairs: list[tuple[Measurement, Measurement]] = field(default_factory=list)
    cold_starts: list[coldstart.ColdStart] = field(default_factory=list)
    import_time: coldstart.ImportTime | None = None


class Server:
    """A strategy's function under `python -m bench.serve` (gunicorn, as in production)."""

    def __init__(self, strategy: Strategy, env: dict[str, str]) -> None:
        self.strategy = strategy
        self.port = free_port()
        self.rpc_dir = WORK / f"rpc-{strategy.key}"
        self._log = (WORK / f"{strategy.key}.log").open("wb")
        command = [
            sys.executable,
            "-m",
            "bench.serve",
            f"--target={strategy.target}",
            f"--source={strategy.source}",
            "--host=127.0.0.1",
            f"--port={self.port}",
        ]
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**env, **strategy.env, "BENCH_RPC_DIR": str(self.rpc_dir)},
            stdout=self._log,
            stderr=self._log,
            start_new_session=True,
        )

    def wait_until_listening(self, timeout: float = 60.0) -> None:
        """Wait until the port accepts connections (gunicorn binds before forking its worker)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.strategy.key} exited; see {self._log.name}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.strategy.key} did not listen within {timeout:.0f} s")

    def url(self, page: str) -> str:
        """Where to POST hits for a page."""
        return f"http://127.0.0.1:{self.port}/?page={page}"

    def pids(self) -> list[int]:
        """The gunicorn master and its worker(s)."""
        return procs.tree(self.process.pid)

    def stop(self) -> None:
        """Stop gunicorn (SIGINT: quick shutdown) and wait for it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


def main() -> int:
    """Run the benchmark, write the report and plot, print the table."""
    args = _arguments()
    if args.report_only:
        _write_report(pickle.loads(SAVED.read_bytes()))
        return 0
    started = time.monotonic()
    levels = sorted(int(c) for c in args.levels.split(","))
    requests = args.requests or (100 if args.quick else 800)
    time_limit = args.time_limit or (8.0 if args.quick else 20.0)
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    emulator = Emulator()
    print("Starting Google's Firestore emulator (Datastore mode) ...", flush=True)
    try:
        host = emulator.start(WORK / "emulator.log")
    except EmulatorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    env = base_env(host, args.threads, args.workers)
    threads = env.get("THREADS") or f"{(os.cpu_count() or 1) * 4} (the framework's default)"
    run = BenchRun(
        machine=report.machine(),
        settings={
            "levels": ", ".join(map(str, levels)),
            "hits per level": f"{requests}, stopping new ones after {time_limit:g} s",
            "servers": "functions-framework on gunicorn (gthread),"
            f" WORKERS={env.get('WORKERS', '1')}, THREADS={threads}",
        },
        strategies=[s for s in STRATEGIES if not args.only or s.key in args.only.split(",")],
    )
    if any(s.key == "sharded" for s in run.strategies) and not _shards_supported(env):
        run.skipped["sharded"] = "skipped: the product does not read COUNTER_SHARDS yet"
    servers: dict[str, Server] = {}
    try:
        for strategy in run.strategies:
            if strategy.target and strategy.key not in run.skipped:
                servers[strategy.key] = Server(strategy, env)
        for server in servers.values():
            server.wait_until_listening()
        # The emulator runs in a session of its own: the gcloud wrapper and its Java child.
        emulator_pgid = emulator.pid
        _run_levels(run, servers, env, levels, requests, time_limit, emulator_pgid, args.quick)
        for server in servers.values():
            server.stop()
        if not args.no_coldstart:
            run.cold_starts, run.import_time = _cold_starts(env, 2 if args.quick else 3)
    finally:
        for server in servers.values():
            server.stop()
        emulator.stop()
    SAVED.write_bytes(pickle.dumps(run))
    _write_report(run)
    print(f"Done in {time.monotonic() - started:.0f} s.")
    return 0


def _write_report(run: BenchRun) -> None:
    text = report.markdown(run)
    (RESULTS / "results.md").write_text(text)
    report.plot(run, RESULTS / "bench.png")
    print(f"\n{text}\nWrote bench/results/results.md and bench/results/bench.png.")


def _run_levels(
    run: BenchRun,
    servers: dict[str, Server],
    env: dict[str, str],
    levels: list[int],
    requests: int,
    time_limit: float,
    emulator_pgid: int,
    quick: bool,
) -> None:
    """Warm everything up, then each level for every strategy in turn."""
    active = [s for s in run.strategies if s.key not in run.skipped]
    print("Warming up the emulator's JIT, then each strategy ...", flush=True)
    ceiling = STRATEGIES[-1]
    drive_level(ceiling, None, env, f"/warmup/{RUN_ID}/emulator", 8, 300 if quick else 3000, 20)
    for strategy in active:
        drive_level(strategy, servers.get(strategy.key), env, f"/warmup/{RUN_ID}", 8, 200, 10)
    for concurrency in levels:
        for strategy in active:
            server = servers.get(strategy.key)
            track_memory = strategy.key == "product" and concurrency == levels[-1]
            if track_memory and server:
                for pid in server.pids():
                    procs.reset_peak_memory(pid)
            page = f"/bench/{RUN_ID}/{strategy.key}/c{concurrency}"
            measurement = _measure(
                strategy, server, env, page, concurrency, requests, time_limit, emulator_pgid
            )
            run.results[(strategy.key, concurrency)] = measurement
            if track_memory and server:
                run.peak_rss_kib = _peak_memory(server)
            print(report.progress_line(strategy, concurrency, measurement), flush=True)
    by_key = {s.key: s for s in active}
    if report.TARGET_LEVEL in levels and {"product", "ceiling"} <= by_key.keys() and not quick:
        # The target's ratio, measured again in alternating pairs: one pair is at the mercy of
        # whatever else the machine does for those seconds.
        run.target_pairs.append(
            (
                run.results[("product", report.TARGET_LEVEL)],
                run.results[("ceiling", report.TARGET_LEVEL)],
            )
        )
        for repeat in range(1, TARGET_PAIRS):
            pair = []
            for key in ("product", "ceiling"):
                page = f"/bench/{RUN_ID}/{key}/c{report.TARGET_LEVEL}-{repeat}"
                pair.append(
                    _measure(
                        by_key[key],
                        servers.get(key),
                        env,
                        page,
                        report.TARGET_LEVEL,
                        requests,
                        time_limit,
                        emulator_pgid,
                    )
                )
                print(report.progress_line(by_key[key], report.TARGET_LEVEL, pair[-1]), flush=True)
            run.target_pairs.append((pair[0], pair[1]))


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 hits per level: a smoke check")
    parser.add_argument("--levels", default="1,8,32,64", help="concurrencies (default 1,8,32,64)")
    parser.add_argument("--requests", type=int, help="hits per level (default 800; quick 100)")
    parser.add_argument("--time-limit", type=float, help="seconds per level (default 20)")
    parser.add_argument("--threads", type=int, help="gunicorn THREADS for every server")
    parser.add_argument("--workers", type=int, help="gunicorn WORKERS for every server")
    parser.add_argument(
        "--only", help="comma-separated strategies: " + ",".join(s.key for s in STRATEGIES)
    )
    parser.add_argument("--no-coldstart", action="store_true", help="skip cold start, import time")
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite the report from the last run's data"
    )
    return parser.parse_args()


def base_env(emulator_host: str, threads: int | None, workers: int | None) -> dict[str, str]:
    """The environment every server and load generator gets."""
    env = {
        **os.environ,
        "DATASTORE_EMULATOR_HOST": emulator_host,
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "ALLOWED_ORIGINS": "*",
        "PYTHONDONTWRITEBYTECODE": "",  # let every server start from cached bytecode
    }
    for name in ("ALLOWED_PAGES", "DATASTORE_NAMESPACE", "DATASTORE_DATABASE", "COUNTER_SHARDS"):
        env.pop(name, None)
    for name, value in (("THREADS", threads), ("WORKERS", workers)):
        if value:
            env[name] = str(value)
    return env


def _shards_supported(env: dict[str, str]) -> bool:
    """Whether the product reads COUNTER_SHARDS, whatever its Settings field is called."""
    try:
        return Settings.from_env({**env, "COUNTER_SHARDS": SHARDS}) != Settings.from_env(env)
    except ConfigError:
        return False


def drive_level(
    strategy: Strategy,
    server: Server | None,
    env: dict[str, str],
    page: str,
    concurrency: int,
    requests: int,
    time_limit: float,
    watch: dict[str, list[int]] | None = None,
) -> dict:
    """One load level in a process of its own; its progress line goes to the terminal."""
    target = ["--url", server.url(page)] if server else ["--direct", page]
    for name, pids in (watch or {}).items():
        target.append(f"--watch={name}={','.join(map(str, pids))}")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.load",
            f"--label={strategy.key}",
            f"--concurrency={concurrency}",
            f"--requests={requests}",
            f"--time-limit={time_limit}",
            *target,
        ],
        cwd=ROOT,
        env={**env, "BENCH_RPC_DIR": str(WORK / f"rpc-{strategy.key}")},
        stdout=subprocess.PIPE,
        text=True,
        timeout=time_limit + 120,
        check=True,
    )
    return json.loads(done.stdout)


def _measure(
    strategy: Strategy,
    server: Server | None,
    env: dict[str, str],
    page: str,
    concurrency: int,
    requests: int,
    time_limit: float,
    emulator_pgid: int,
) -> Measurement:
    rpc_dir = WORK / f"rpc-{strategy.key}"
    watch = {"server": server.pids() if server else [], "emulator": procs.group(emulator_pgid)}
    rpcs = rpc_count.read_counts(rpc_dir)
    load = drive_level(strategy, server, env, page, concurrency, requests, time_limit, watch)
    # The raw ceiling counts in its own process, leaving out its warm-up.
    rpcs = Counter(load["rpcs"]) if load["rpcs"] else rpc_count.read_counts(rpc_dir) - rpcs
    _settle([*watch["server"], *watch["emulator"]])
    stored = _store(env, strategy).read(page)
    hits = max(load["ok"], 1)
    cpu = load["cpu_seconds"]
    ours = cpu["load generator"] + cpu["server"] + cpu["emulator"]
    return Measurement(
        load=load,
        stored=stored,
        lost=load["ok"] - stored,
        rpcs=dict(rpcs),
        cpu_ms_per_hit={
            name: cpu[name] * 1000 / hits for name in ("load generator", "server", "emulator")
        },
        other_cores=max(cpu["machine"] - ours, 0.0) / max(load["seconds"], 1e-9),
    )


def _settle(pids: list[int], timeout: float = 60.0) -> None:
    """Wait until these processes are idle: a server may still work off abandoned requests."""
    deadline = time.monotonic() + timeout
    used = procs.cpu_seconds(pids)
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = procs.cpu_seconds(pids)
        if now - used < 0.25 * 0.05:
            return
        used = now


_stores: dict[str, CounterStore] = {}


def _store(env: dict[str, str], strategy: Strategy) -> CounterStore:
    """A direct reader of the stored count (the product's own Lookup, not through a server)."""
    if strategy.key not in _stores:
        _stores[strategy.key] = CounterStore(Settings.from_env({**env, **strategy.env}))
    return _stores[strategy.key]


def _peak_memory(server: Server) -> dict[str, int]:
    peaks = {}
    for pid in server.pids():
        role = "gunicorn master" if pid == server.process.pid else f"worker (pid {pid})"
        peaks[role] = procs.memory_kib(pid).get("VmHWM", 0)
    return peaks


def _cold_starts(
    env: dict[str, str], runs: int
) -> tuple[list[coldstart.ColdStart], coldstart.ImportTime]:
    print("Cold starts: process start to first 200 ...", flush=True)
    plain = {k: v for k, v in env.items() if k != "BENCH_RPC_DIR"}
    starts = [
        coldstart.cold_start(
            "3. this project", "visits", ROOT / "main.py", plain, f"/cold/{RUN_ID}/p", runs
        ),
        coldstart.cold_start(
            "1. read-then-write", "classic", BASELINES, plain, f"/cold/{RUN_ID}/c", runs
        ),
    ]
    print("Import time of main.py ...", flush=True)
    return starts, coldstart.import_time()


if __name__ == "__main__":
    sys.exit(main())
