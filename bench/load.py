"""Bounded load: N client threads send a fixed number of hits, or fewer if time runs out.

Run as a process of its own, so its CPU is apart from the servers':
`python -m bench.load --url 'http://127.0.0.1:PORT/?page=/p' --concurrency 32 --hits 400`
POSTs over keep-alive connections (`{n}` in the URL gives every hit a page of its own);
`--direct /p` instead calls the product's increment from threads, with no HTTP (the ceiling).
Prints one JSON summary.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

NO_ANSWER = 0
"""The status recorded for a hit that got no HTTP answer."""
TIMEOUT_SECONDS = 10.0
"""A hit unanswered this long is an error: twice the functions' database deadline."""
WARM_UP_HITS = 20
"""Commits the direct ceiling makes before timing, each one RPC (reported, for the RPC count)."""
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0.0.0 Safari/537.36"
"""A browser's: the counter does not count crawlers or an empty user agent."""


def http_sender(url: str) -> Callable[[int], int]:
    """POST to url over one keep-alive connection per thread; hit n fills `{n}` in the URL."""
    parts = urlsplit(url)
    local = threading.local()
    headers = {"User-Agent": USER_AGENT, "Content-Length": "0"}

    def send(n: int) -> int:
        if not hasattr(local, "connection"):
            local.connection = http.client.HTTPConnection(parts.netloc, timeout=TIMEOUT_SECONDS)
        try:
            local.connection.request(
                "POST", f"{parts.path}?{parts.query}".replace("{n}", str(n)), headers=headers
            )
            answer = local.connection.getresponse()
            answer.read()
            return answer.status
        except (OSError, http.client.HTTPException):
            local.connection.close()  # reopened by the next request
            return NO_ANSWER

    return send


def drive(send: Callable[[int], int], concurrency: int, hits: int, seconds: float) -> dict:
    """Send up to `hits` from `concurrency` threads, starting none after `seconds`."""
    lock = threading.Lock()
    issued = 0
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    started = time.perf_counter()
    cpu = time.process_time()

    def client() -> None:
        nonlocal issued
        while True:
            with lock:
                if issued >= hits or time.perf_counter() - started > seconds:
                    return
                issued += 1
                n = issued
            before = time.perf_counter()
            status = send(n)
            with lock:
                latencies.append(time.perf_counter() - before)
                statuses[status] += 1

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else []
    return {
        "hits": hits,
        "sent": len(latencies),
        "ok": statuses[200],
        "statuses": {str(status): n for status, n in sorted(statuses.items())},
        "seconds": elapsed,
        "hits_per_second": statuses[200] / elapsed,
        "p50_ms": cuts[49] * 1000 if cuts else 0.0,
        "p99_ms": cuts[98] * 1000 if cuts else 0.0,
        "load_cpu_seconds": time.process_time() - cpu,
    }


def in_process(
    target: list[str], concurrency: int, hits: int, seconds: float, env: dict[str, str]
) -> dict:
    """One level from a load process of its own: target is ["--url", URL] or ["--direct", PAGE]."""
    argv = [sys.executable, "-m", "bench.load", *target, f"--concurrency={concurrency}"]
    done = subprocess.run(
        [*argv, f"--hits={hits}", f"--seconds={seconds}"],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        check=True,
    )
    return json.loads(done.stdout)


def _direct(page: str) -> Callable[[int], int]:
    """The product's own increment, shared client and all, with no HTTP in between."""
    from counter import config, instance
    from counter.datastore import StoreUnavailable

    counts = instance.build(config.Settings.from_env(os.environ)).counts
    for _ in range(WARM_UP_HITS):  # the channel and the first calls, before timing
        counts.increment(f"{page}/warm-up")

    def send(n: int) -> int:
        try:
            counts.increment(page)
        except StoreUnavailable:
            return 503
        return 200

    return send


def main() -> None:
    """Drive one level and print its summary as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="POST here; {n} is replaced by the hit's number")
    target.add_argument("--direct", metavar="PAGE", help="increment this page with no HTTP")
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--hits", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=20.0, help="start no hit after this")
    args = parser.parse_args()
    send = _direct(args.direct) if args.direct else http_sender(args.url)
    summary = drive(send, args.concurrency, args.hits, args.seconds)
    if args.direct:
        summary["warm_up_hits"] = WARM_UP_HITS
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
