"""Bounded load generator: N threads send a fixed number of hits, or fewer if time runs out.

Run as its own process so its CPU shows up apart from the servers':
`python -m bench.load --url http://127.0.0.1:PORT/?page=/p --concurrency 32 --requests 600`
drives an HTTP server with keep-alive POSTs; `--direct /p` instead issues the product's Commit
from threads with no HTTP (the raw ceiling), counting RPCs into $BENCH_RPC_DIR. It prints one JSON
summary on stdout and a progress line on stderr while it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from bench import procs, rpc_count

if TYPE_CHECKING:
    from counter.store import CounterStore

TRANSPORT_ERROR = 0
"""Status recorded for a hit that got no HTTP answer (refused, reset, timed out)."""

SOCKET_TIMEOUT_SECONDS = 10.0
"""A hit unanswered this long counts as an error (no answer): twice the servers' deadline."""
WARMUP_HITS = 20
"""Hits the raw ceiling makes on a side page before timing: its client is new in each process."""

USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
"""A browser's: the product does not count an empty or crawler user agent."""


@dataclass
class LevelResult:
    """What one load level did: counts, statuses, latency percentiles (ms) and wall time."""

    label: str
    concurrency: int
    requested: int
    sent: int = 0
    ok: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    hits_per_second: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    timed_out: bool = False
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    rpcs: dict[str, int] | None = None


class Hitter(Protocol):
    """One client's way to send a hit."""

    def hit(self) -> int:
        """Send one hit; return its HTTP status, or TRANSPORT_ERROR."""
        ...

    def close(self) -> None:
        """Release what the hitter holds."""
        ...


class HttpHitter:
    """One keep-alive HTTP/1.1 connection sending the same POST; minimal parsing, little CPU."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._address = (parts.hostname or "127.0.0.1", parts.port or 80)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        self._request = (
            f"POST {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nUser-Agent: {USER_AGENT}\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        self._sock: socket.socket | None = None

    def hit(self) -> int:
        """Send one POST and return the response status (TRANSPORT_ERROR if none came)."""
        try:
            if self._sock is None:
                self._sock = socket.create_connection(self._address, SOCKET_TIMEOUT_SECONDS)
                self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock.sendall(self._request)
            status, keep = self._read_response(self._sock)
        except (OSError, ValueError):
            self.close()
            return TRANSPORT_ERROR
        if not keep:
            self.close()
        return status

    def close(self) -> None:
        """Close the connection; the next hit opens a new one."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    @staticmethod
    def _read_response(sock: socket.socket) -> tuple[int, bool]:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                raise ValueError("connection closed before a response")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])
        }
        if "content-length" not in headers:
            raise ValueError("response without Content-Length")  # the connection is dropped
        remaining = int(headers["content-length"]) - len(body)
        while remaining > 0:
            chunk = sock.recv(remaining)
            if not chunk:
                raise ValueError("connection closed inside a body")
            remaining -= len(chunk)
        return status, headers.get("connection", "").lower() != "close"


class DirectHitter:
    """The raw ceiling: the product's own Commit (store.increment), shared client, no HTTP."""

    def __init__(self, counter: CounterStore, page: str) -> None:
        self._counter = counter
        self._page = page

    def hit(self) -> int:
        """Count one hit straight into Datastore; 503 if the store gave up."""
        from counter.store import StoreUnavailable

        try:
            self._counter.increment(self._page)
        except StoreUnavailable:
            return 503
        return 200

    def close(self) -> None:
        """Nothing to close: the client is shared by all threads, like the product's."""


def drive(
    label: str,
    make_hitter: Callable[[], Hitter],
    concurrency: int,
    requests: int,
    time_limit: float,
    watch: dict[str, list[int]] | None = None,
) -> LevelResult:
    """Send `requests` hits from `concurrency` threads; stop issuing new ones at `time_limit`.

    CPU seconds are measured over exactly this interval: this process's, each watched group of
    processes', and the whole machine's (so what else ran meanwhile shows up).
    """
    watch = watch or {}
    lock = threading.Lock()
    issued = 0
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    cpu_before = _cpu_now(watch)
    started = time.perf_counter()
    stop_at = started + time_limit
    timed_out = False
    finished = threading.Event()

    def worker() -> None:
        nonlocal issued, timed_out
        hitter = make_hitter()
        while True:
            with lock:
                if issued >= requests:
                    break
                if time.perf_counter() >= stop_at:
                    timed_out = True
                    break
                issued += 1
            before = time.perf_counter()
            status = hitter.hit()
            elapsed = time.perf_counter() - before
            with lock:
                latencies.append(elapsed)
                statuses[status] += 1
        hitter.close()

    def progress() -> None:
        tty = sys.stderr.isatty()
        last_line = 0.0
        while not finished.wait(0.5):
            now = time.perf_counter()
            with lock:
                done, ok = len(latencies), statuses[200]
            line = (
                f"  {label:<14} c={concurrency:<3} {done:>5}/{requests} done  ok={ok:<5}"
                f" errors={done - ok:<4} {now - started:5.1f}s"
            )
            if tty:
                print(f"\r{line}", end="", file=sys.stderr, flush=True)
            elif now - last_line >= 5:
                print(line, file=sys.stderr, flush=True)
                last_line = now

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    reporter = threading.Thread(target=progress, daemon=True)
    reporter.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    cpu_after = _cpu_now(watch)
    finished.set()
    reporter.join()
    if sys.stderr.isatty():
        print("\r\033[K", end="", file=sys.stderr, flush=True)
    result = summarize(label, concurrency, requests, latencies, statuses, seconds, timed_out)
    result.cpu_seconds = {name: cpu_after[name] - cpu_before[name] for name in cpu_before}
    return result


def _cpu_now(watch: dict[str, list[int]]) -> dict[str, float]:
    now = {"load generator": time.process_time(), "machine": procs.machine_busy_seconds()}
    now.update({name: procs.cpu_seconds(pids) for name, pids in watch.items()})
    return now


def summarize(
    label: str,
    concurrency: int,
    requests: int,
    latencies: list[float],
    statuses: Counter[int],
    seconds: float,
    timed_out: bool,
) -> LevelResult:
    """Percentiles over every answered or failed hit, and hits/s over acknowledged ones."""
    result = LevelResult(label, concurrency, requests, timed_out=timed_out)
    result.sent = len(latencies)
    result.ok = statuses[200]
    result.statuses = {str(status): n for status, n in sorted(statuses.items())}
    result.seconds = seconds
    result.hits_per_second = result.ok / seconds if seconds else 0.0
    if len(latencies) >= 2:
        cuts = statistics.quantiles(latencies, n=100, method="inclusive")
        result.p50_ms, result.p95_ms, result.p99_ms = (cuts[i] * 1000 for i in (49, 94, 98))
    elif latencies:
        result.p50_ms = result.p95_ms = result.p99_ms = latencies[0] * 1000
    result.max_ms = max(latencies, default=0.0) * 1000
    return result


def _drive_direct(args: argparse.Namespace) -> LevelResult:
    """The raw ceiling, warmed up first like the servers are, counting only the level's RPCs."""
    # Count the ceiling's RPCs the same way as the servers', installed before any channel exists.
    rpc_dir = Path(os.environ["BENCH_RPC_DIR"])
    rpc_count.install(rpc_dir)
    from counter.config import Settings
    from counter.store import CounterStore

    counter = CounterStore(Settings.from_env(os.environ))
    warm = DirectHitter(counter, f"{args.direct}/warmup")
    for _ in range(WARMUP_HITS):
        warm.hit()
    before = rpc_count.read_counts(rpc_dir)
    result = drive(
        args.label,
        lambda: DirectHitter(counter, args.direct),
        args.concurrency,
        args.requests,
        args.time_limit,
        args.watch,
    )
    rpcs = rpc_count.read_counts(rpc_dir)
    rpcs.subtract(before)
    result.rpcs = {name: n for name, n in rpcs.items() if n}
    return result


def main() -> None:
    """Parse the command line, drive one level, print its JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="POST here over keep-alive HTTP")
    target.add_argument("--direct", metavar="PAGE", help="Commit to this page with no HTTP")
    parser.add_argument("--label", default="load")
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--time-limit", type=float, default=20.0)
    parser.add_argument(
        "--watch",
        action="append",
        default=[],
        metavar="NAME=PID,PID",
        help="also report the CPU time of these processes during the level",
    )
    args = parser.parse_args()
    args.watch = {
        name: [int(pid) for pid in pids.split(",") if pid]
        for name, _, pids in (item.partition("=") for item in args.watch)
    }
    if args.direct:
        result = _drive_direct(args)
    else:
        url = args.url

        def make_hitter() -> Hitter:
            return HttpHitter(url)

        result = drive(
            args.label, make_hitter, args.concurrency, args.requests, args.time_limit, args.watch
        )
    print(json.dumps(asdict(result)))


if __name__ == "__main__":
    main()
