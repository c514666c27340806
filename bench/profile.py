"""Where the CPU goes under load: py-spy on the product's worker and on the raw ceiling.

`python -m bench.profile` starts the emulator and the product as `make bench` does, drives it at
32 clients while `py-spy record --gil` samples the gunicorn worker (only the thread holding the
GIL: the Python work that competes for it), then samples the raw ceiling's process the same way,
and writes bench/results/profile.md with each layer's share. Needs py-spy (requirements-dev.txt)
and permission to ptrace (root, or CAP_SYS_PTRACE).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench import procs
from bench.run import RESULTS, ROOT, STRATEGIES, WORK, Server, base_env, drive_level
from scripts.emulator import Emulator

LAYERS = (
    ("Datastore client: gRPC call", r"grpc/_"),
    ("Datastore client: GAPIC and api_core wrappers", r"api_core/|datastore_v1/services/"),
    ("Datastore client: proto-plus messages", r"proto/|protobuf/|datastore_v1/types/"),
    ("counter/store.py itself", r"counter/store\.py"),
    ("counter/logs.py: the JSON log line", r"counter/logs\.py"),
    ("counter/responses.py: JSON body, CORS", r"counter/responses\.py"),
    ("main.py and other counter modules", r"(^|\()main\.py|counter/"),
    ("functions-framework, Flask, Werkzeug", r"functions_framework/|flask/|werkzeug/"),
    ("gunicorn: HTTP parsing, sockets, thread pool", r"gunicorn/"),
    ("load generator loop", r"bench/load\.py"),
    ("imports at start", r"importlib"),
)
"""Each sample goes to the first layer with a frame on its stack, so a call into the Datastore
client counts as the client's, and Flask work done for main.py counts as main.py's."""

OTHER = "other: threads, selectors, interpreter"


def classify(stack: str) -> str:
    """The layer a sampled stack (py-spy raw format, root first) belongs to."""
    for name, pattern in LAYERS:
        if re.search(pattern, stack):
            return name
    return OTHER


def summarize(raw: Path) -> Counter[str]:
    """Samples per layer from a py-spy raw (collapsed stacks) file."""
    layers: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            layers[classify(stack)] += int(count)
    return layers


def main() -> int:
    """Profile the product and the raw ceiling at one concurrency; write profile.md."""
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=10, help="sampling time per subject")
    parser.add_argument("--rate", type=int, default=97, help="samples per second")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        print(
            "error: py-spy is not installed; pip install -r requirements-dev.txt", file=sys.stderr
        )
        return 1
    spy = [py_spy, "record", "--gil", "--nonblocking", "--format=raw", f"--rate={args.rate}"]
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    emulator = Emulator()
    print("Starting Google's Firestore emulator (Datastore mode) ...", flush=True)
    env = base_env(emulator.start(WORK / "emulator.log"), None, None)
    product = next(s for s in STRATEGIES if s.key == "product")
    server = Server(product, env)
    try:
        server.wait_until_listening()
        drive_level(STRATEGIES[-1], None, env, "/profile/warmup", 8, 1500, 20)
        drive_level(product, server, env, "/profile/warmup", 8, 500, 20)
        product_raw = WORK / "profile-product.txt"
        worker = server.pids()[-1]
        recorder = subprocess.Popen(
            [*spy, f"--pid={worker}", f"--duration={args.seconds}", f"--output={product_raw}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)  # let py-spy attach
        cpu = procs.cpu_seconds(server.pids())
        load = drive_level(
            product, server, env, "/profile/product", args.concurrency, 100_000, args.seconds - 1
        )
        product_ms = (procs.cpu_seconds(server.pids()) - cpu) * 1000 / max(load["ok"], 1)
        recorder.wait(timeout=args.seconds + 30)
        server.stop()
        ceiling_raw = WORK / "profile-ceiling.txt"
        ceiling = _profile_ceiling(spy, ceiling_raw, env, args)
    finally:
        server.stop()
        emulator.stop()
    text = report(
        [
            ("this project's gunicorn worker", summarize(product_raw), load, product_ms),
            ("raw ceiling process", summarize(ceiling_raw), ceiling, None),
        ],
        args,
    )
    (RESULTS / "profile.md").write_text(text)
    print(f"\n{text}\nWrote bench/results/profile.md; raw stacks in {WORK.relative_to(ROOT)}/.")
    return 0


def _profile_ceiling(
    spy: list[str], raw: Path, env: dict[str, str], args: argparse.Namespace
) -> dict:
    """Run the raw ceiling's load process under py-spy; return its load summary."""
    command = [sys.executable, "-m", "bench.load", "--label=ceiling", "--direct=/profile/ceiling"]
    command += [f"--concurrency={args.concurrency}", "--requests=100000"]
    command += [f"--time-limit={args.seconds - 1}"]
    done = subprocess.run(
        [*spy, f"--output={raw}", "--", *command],
        cwd=ROOT,
        env={**env, "BENCH_RPC_DIR": str(WORK / "rpc-ceiling")},
        stdout=subprocess.PIPE,
        text=True,
        timeout=args.seconds + 60,
        check=True,
    )
    # py-spy writes its own lines to stdout too; the summary is the one JSON line.
    return json.loads(next(line for line in done.stdout.splitlines() if line.startswith("{")))


def report(
    subjects: list[tuple[str, Counter[str], dict, float | None]], args: argparse.Namespace
) -> str:
    """Each subject's layers as a share of its GIL-held samples (and CPU ms per hit if known)."""
    lines = [
        f"# Where the CPU goes at {args.concurrency} clients",
        "",
        f"py-spy at {args.rate} Hz with `--gil`, {args.seconds} s per subject: only the thread"
        " holding the GIL is sampled, so this is the Python work that the request threads queue"
        " for. gRPC's own C threads run outside the GIL and are not in these samples. Written by"
        f" `python -m bench.profile` on {time.strftime('%Y-%m-%d %H:%M %Z')},"
        f" {os.cpu_count()} CPUs.",
    ]
    for title, layers, load, cpu_ms in subjects:
        total = sum(layers.values()) or 1
        lines += [
            "",
            f"## {title}",
            "",
            f"{load['hits_per_second']:.0f} hits/s, {load['ok']} hits, {total} samples: a thread"
            f" held the GIL {total / (args.rate * args.seconds):.0%} of the time"
            + (
                f". The worker used {cpu_ms:.2f} ms of CPU per hit in all; the last column splits"
                " that by share, as if the CPU outside the GIL (system calls, gRPC's C threads)"
                " divided the same way, so read it as a rough guide"
                if cpu_ms
                else ""
            )
            + ".",
            "",
            "| layer | share of samples |" + (" ≈ CPU ms per hit |" if cpu_ms else ""),
            "| --- | ---: |" + (" ---: |" if cpu_ms else ""),
        ]
        for name, count in layers.most_common():
            share = count / total
            extra = f" {share * cpu_ms:.2f} |" if cpu_ms else ""
            lines.append(f"| {name} | {share:.0%} |{extra}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
