"""Markdown and plots of measured rows: medians, ranges and ratios; it decides nothing."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Iterable
from pathlib import Path

USUAL, FLOOR = "usual get + put", "library floor"
"""The contenders that the cold-start tables divide by."""


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((x.split(":", 1)[1].strip() for x in cpuinfo if x.startswith("model name")), "")
    return {
        "CPUs": f"{os.cpu_count()} ({model})",
        "system": f"{platform.system()} {platform.release()}, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }


def groups(rows: Iterable[dict], *keys: str) -> dict[tuple, list[dict]]:
    """Rows by the values of keys, in first-seen order."""
    found: dict[tuple, list[dict]] = {}
    for row in rows:
        found.setdefault(tuple(row[k] for k in keys), []).append(row)
    return found


def median(group: list[dict], key: str) -> float:
    """The median of one measurement over a group's rows."""
    return statistics.median(row[key] for row in group)


def spread(group: list[dict], key: str, digits: int) -> str:
    """Median, then the range over the group's rows: the machine's noise in one glance."""
    values = [row[key] for row in group]
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{mid:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


def throughput_table(rows: list[dict]) -> list[str]:
    """Per strategy and clients: hits/s, latency, errors, lost hits, RPCs and CPU per hit."""
    lines = [
        "| strategy | clients | hits/s (range) | p50 ms | p99 ms | errors | lost | RPCs/hit"
        " | server CPU ms/hit |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for (title, clients), g in groups(rows, "title", "clients").items():
        ok = sum(r["ok"] for r in g) or 1
        lines.append(
            f"| {title} | {clients} | {spread(g, 'hits_per_second', 0)}"
            f" | {median(g, 'p50_ms'):.1f} | {median(g, 'p99_ms'):.1f}"
            f" | {sum(r['sent'] - r['ok'] for r in g)} | {sum(r['lost'] for r in g)}"
            f" | {sum(r['rpcs'] for r in g) / ok:.2f}"
            f" | {1000 * sum(r['server_cpu_seconds'] for r in g) / ok:.2f} |"
        )
    return lines


def first_visit_table(rows: list[dict]) -> list[str]:
    """First visit by tier, with ratios to the usual get + put and to the library floor."""
    return _by_tier(rows, "first_s", "first visit s (range)", before=("port open s", "listening_s"))


def warm_cpu_table(rows: list[dict]) -> list[str]:
    """Warm server CPU per hit by tier, with ratios to the usual get + put and the library floor."""
    return _by_tier(rows, "warm_cpu_ms", "warm CPU ms/hit (range)")


def _by_tier(
    rows: list[dict], key: str, heading: str, *, before: tuple[str, str] | None = None
) -> list[str]:
    """One line per tier and contender: a median and range, then the two ratios; `before` adds
    the median of another measurement (heading, key) ahead of it."""
    by = groups(rows, "function", "cpus")
    headings = [*before[:1], heading] if before else [heading]
    lines = [
        f"| vCPU | function | {' | '.join(headings)} | ÷ get + put | ÷ library floor |",
        f"| ---: | --- | {' | '.join('---:' for _ in headings)} | ---: | ---: |",
    ]
    for (function, cpus), g in sorted(by.items(), key=lambda item: item[0][1]):
        value = median(g, key)
        cells = [f"{median(g, before[1]):.2f}"] if before else []
        cells.append(spread(g, key, 2))
        for baseline in (USUAL, FLOOR):
            base = by.get((baseline, cpus))
            cells.append(f"{value / median(base, key):.2f}" if base else "")
        lines.append(f"| {cpus:g} | {function} | {' | '.join(cells)} |")
    return lines


def memory_table(rows: list[dict]) -> list[str]:
    """Worker RSS before and after the distinct pages, per source."""
    lines = [
        "| source | pages | worker RSS before | after | peak | growth |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        before, after = r["rss_before_kib"] / 1024, r["rss_after_kib"] / 1024
        lines.append(
            f"| {r['source']} | {r['ok']:,} | {before:.1f} MiB"
            f" | {after:.1f} MiB | {r['peak_kib'] / 1024:.1f} MiB | {after - before:+.1f} MiB |"
        )
    return lines


def markdown(results: dict, throughput_notes: Iterable[str], coldstart_notes: Iterable[str]) -> str:
    """The whole results.md; the notes say what each contender is."""
    settings = results["settings"]
    lines = [
        "# Benchmark: counting strategies on Google's emulator, and cold start under CPU caps",
        "",
        *(f"- **{k}:** {v}" for k, v in {**results["machine"], **settings}.items()),
        "",
        "## Counting strategies, one hot page",
        "",
        "Each server is functions-framework's own CLI (gunicorn, one worker, THREADS threads),"
        " in a cgroup that caps its CPU as deployed; the bare Commit's process is not capped."
        " A level sends its hits to a fresh page from a load process of its own, one keep-alive"
        " connection per client. Strategies and levels alternate, round after round; the table"
        " gives medians over rounds and the range of hits/s, which shows the machine's noise."
        " *errors*: answers other than 200, and hits unanswered in 10 s. *lost*: acknowledged"
        " hits minus the count stored afterwards, summed over rounds. *RPCs/hit*: calls counted"
        " at the database's door (bench/door.py) per acknowledged hit. *server CPU*: CPU time of"
        " the server's processes (the bare Commit's own process) per acknowledged hit. Every"
        " process shares the same cores.",
        "",
        *throughput_notes,
        "",
        *throughput_table(results["throughput"]),
        "",
        "## First visit under CPU caps",
        "",
        "From spawning `python -m functions_framework` to the answer to the first POST, which"
        " must be a 200 (the first counted visit), with the server's processes alone in a"
        " cgroup with a CPU quota (the emulator outside it). *port open*: the app is imported"
        " and gunicorn listens; the rest of *first visit* is the worker's start and the first"
        " request. Medians of interleaved starts (contenders and tiers alternate, run after"
        " run), with their range; the ratios divide medians of the same tier.",
        "",
        *coldstart_notes,
        "",
        *first_visit_table(results["coldstart"]),
        "",
        "## Warm CPU per hit",
        "",
        f"After each first visit, {settings['warm hits per start']} sequential POSTs"
        " over one keep-alive connection, and the CPU time of the server's processes (user and"
        " system, from /proc) divided by them; medians over the same starts.",
        "",
        *warm_cpu_table(results["coldstart"]),
    ]
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    """Hits/s and p99 against clients per strategy, and the first visit per CPU tier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (rate, p99, cold) = plt.subplots(1, 3, figsize=(16, 5.2))
    by_title = groups(results["throughput"], "title", "clients")
    for title in dict.fromkeys(t for t, _ in by_title):
        levels = [c for t, c in by_title if t == title]
        width = 2.8 if title == "this function" else 1.4
        rates = [median(by_title[title, c], "hits_per_second") for c in levels]
        (line,) = rate.plot(levels, rates, "o-", lw=width, label=title)
        p99s = [median(by_title[title, c], "p99_ms") for c in levels]
        p99.plot(levels, p99s, "o-", lw=width, color=line.get_color())
    for axis, name in ((rate, "acknowledged hits/s"), (p99, "p99 latency, ms")):
        levels = sorted({c for _, c in by_title})
        axis.set_xscale("log", base=2)
        axis.set_xticks(levels, [str(c) for c in levels])
        axis.set_xlabel("concurrent clients, one page")
        axis.set_title(name)
        axis.grid(True, alpha=0.3)
    p99.set_yscale("log")
    rate.set_ylim(bottom=0)
    by_tier = groups(results["coldstart"], "function", "cpus")
    functions = list(dict.fromkeys(f for f, _ in by_tier))
    tiers = sorted({c for _, c in by_tier})
    width = 0.8 / len(functions)
    for i, function in enumerate(functions):
        firsts = [median(by_tier[function, c], "first_s") for c in tiers]
        cold.bar([t + (i + 0.5) * width - 0.4 for t in range(len(tiers))], firsts, width)
        cold.bar_label(cold.containers[-1], fmt="%.2f", fontsize=7)
        cold.containers[-1].set_label(function)
    cold.set_xticks(range(len(tiers)), [f"{c:g} vCPU" for c in tiers])
    cold.set_title("first visit after spawn, s (median)")
    cold.legend(fontsize=8)
    rate.legend(fontsize=8)
    m = results["machine"]
    figure.suptitle(f"Visit counter on Google's emulator: {m['CPUs']}, {m['date']}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
