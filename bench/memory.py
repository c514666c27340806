"""Worker memory after hits on many distinct pages.

`python -m bench.memory [--source CHECKOUT ...] [--pages 30000]` serves each checkout's main.py
with the public CLI, warms it up, reads the gunicorn worker's resident memory, POSTs once to each
of N distinct pages from 8 clients over HTTP, waits for the server to go idle, and reads it
again. Only HTTP and /proc are used, so any checkout of the function can be measured.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from bench import load, report
from bench.servers import ROOT, Server, emulator, function_env, memory_kib


def measure(emulator_host: str, source: Path, pages: int) -> dict:
    """One server's worker RSS before and after POSTs to `pages` distinct pages."""
    server = Server("visits", source / "main.py", function_env(emulator_host))
    try:
        server.wait_listening()
        stamp = time.strftime("%H%M%S")
        _load(server.url(f"/warm-up/{stamp}/{{n}}"), 500)
        time.sleep(1)
        before = server.worker_rss_kib()
        load = _load(server.url(f"/memory/{stamp}/{{n}}"), pages)
        time.sleep(2)  # let the last requests finish and threads go idle
        after = memory_kib(server.pids()[-1])
    finally:
        server.close()
    return {
        "source": str(source),
        "ok": load["ok"],
        "hits_per_second": load["hits_per_second"],
        "rss_before_kib": before,
        "rss_after_kib": after["VmRSS"],
        "peak_kib": after["VmHWM"],
    }


def _load(url: str, hits: int) -> dict:
    return load.in_process(["--url", url], 8, hits, 600, dict(os.environ))


def main() -> int:
    """Measure every source; print the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__)
    parser.add_argument("--source", type=Path, action="append", help="a checkout (default: this)")
    parser.add_argument("--pages", type=int, default=30_000)
    args = parser.parse_args()
    rows = []
    with emulator("emulator-memory") as host:
        for source in args.source or [ROOT]:
            rows.append(measure(host, source.resolve(), args.pages))
            print(json.dumps(rows[-1]), flush=True)
    print("\n".join(report.memory_table(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
