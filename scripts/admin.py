"""Owner tools for the counter: list, set, reset, delete, history, export and import pages' counts.

    python -m scripts.admin list
    python -m scripts.admin set /blog/post-1 1200
    python -m scripts.admin history / --days 7

Runs with your own credentials (Application Default Credentials: `gcloud auth
application-default login`), or against the emulator named by DATASTORE_EMULATOR_HOST, on the
project, database and namespace the function's settings name (GOOGLE_CLOUD_PROJECT,
DATASTORE_DATABASE, DATASTORE_NAMESPACE). Nothing of it is served over HTTP.

Exit status: 0 done; 1 not done (declined, or Datastore unavailable or refusing); 2 bad input
(a malformed or unknown page, a bad number, a missing project or credentials).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import unicodedata
from pathlib import Path
from typing import TextIO

import google.auth.exceptions
from google.api_core.exceptions import GoogleAPICallError

from counter import config, days, instance, pages
from counter.datastore import StoreUnavailable
from counter.page_counts import History, PageCounts
from owner import changes, reads

DONE, NOT_DONE, BAD_INPUT = 0, 1, 2
DEFAULT_DAYS = 30


class BadInput(Exception):
    """Input the owner can correct; exits with status 2."""


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    """Run one command; print its result and return the exit status."""
    parser = _parser(prog)
    args = parser.parse_args(argv)
    try:
        counts = instance.build(config.settings()).counts
        return args.run(counts, args)
    except (BadInput, reads.UnknownPage, changes.BadSource, config.ConfigError) as exc:
        return _fail(parser, exc, BAD_INPUT)
    except StoreUnavailable as exc:
        if isinstance(exc.__cause__, google.auth.exceptions.DefaultCredentialsError):
            message = (
                "no Google credentials found: run `gcloud auth application-default login`, "
                "or set DATASTORE_EMULATOR_HOST to use the emulator"
            )
            return _fail(parser, message, BAD_INPUT)
        return _fail(parser, f"Datastore is unavailable: {exc}", NOT_DONE)
    except GoogleAPICallError as exc:
        return _fail(parser, f"Datastore refused: {exc}", NOT_DONE)


def _parser(prog: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    listing = commands.add_parser("list", help="pages and their counts, highest first")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(run=_list)

    setting = commands.add_parser("set", help="make a page's count exactly N")
    setting.add_argument("page", type=_page, help="the page, a path such as /blog/post-1")
    setting.add_argument(
        "n", type=_count, metavar="N", help=f"the new count, 0 to {changes.MAX_COUNT}"
    )
    setting.add_argument("--create", action="store_true", help="start a page not counted yet")
    _add_yes(setting)
    setting.set_defaults(run=_set)

    reset = commands.add_parser("reset", help="set a page's count to 0, keeping its history")
    reset.add_argument("page", type=_page, help="the page")
    _add_yes(reset)
    reset.set_defaults(run=_reset, n=0, create=False)

    delete = commands.add_parser("delete", help="delete a page's count and all its history")
    delete.add_argument("page", type=_page, help="the page")
    _add_yes(delete)
    delete.set_defaults(run=_delete)

    history = commands.add_parser("history", help="a page's visits per UTC day")
    history.add_argument("page", type=_page, help="the page")
    history.add_argument(
        "--days",
        type=_days,
        default=DEFAULT_DAYS,
        metavar="N",
        help=f"how many days, ending today (1 to {days.MAX_DAYS}; default {DEFAULT_DAYS})",
    )
    history.add_argument("--json", action="store_true", help="print JSON instead of a table")
    history.set_defaults(run=_history)

    export = commands.add_parser(
        "export", help="CSV of every page: page,total,date,count, one row per day"
    )
    export.add_argument(
        "--output", type=_output, metavar="FILE", help="write to FILE, not standard output"
    )
    export.set_defaults(run=_export)

    importing = commands.add_parser(
        "import", help="add an old count (e.g. kind analytics, property count) to a page, once"
    )
    importing.add_argument("--kind", type=_kind, default="analytics", help="kind of the old entity")
    which = importing.add_mutually_exclusive_group(required=True)
    which.add_argument("--name", help="key name of the old entity")
    which.add_argument("--id", type=int, help="numeric key id of the old entity")
    importing.add_argument("--property", default="count", help="integer property holding the count")
    importing.add_argument("--page", type=_page, default="/", help="page that receives it")
    importing.set_defaults(run=_import)
    return parser


def _add_yes(command: argparse.ArgumentParser) -> None:
    command.add_argument("--yes", "-y", action="store_true", help="do it without asking first")


def _page(raw: str) -> str:
    problem = pages.problem(raw)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return raw


def _count(raw: str) -> int:
    # ASCII digits only: int() would also take "1_000", " 7" and other scripts' digits.
    value = int(raw) if raw.isascii() and raw.isdigit() else -1
    if not 0 <= value <= changes.MAX_COUNT:
        raise argparse.ArgumentTypeError(
            f"{raw!r}: N must be a whole number from 0 to {changes.MAX_COUNT}"
        )
    return value


def _output(raw: str) -> Path:
    path = Path(raw)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{raw!r} is a folder; name a file in it")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"{raw!r}: there is no folder {str(path.parent)!r}")
    return path


def _kind(raw: str) -> str:
    if not raw or raw.startswith("__"):
        raise argparse.ArgumentTypeError(f"{raw!r} is not a kind (Datastore's own start with __)")
    return raw


def _shown(page: str) -> str:
    """A stored page name safe to print: characters that could hide or fake text, escaped."""
    refused = ("Cc", "Cf", "Cs", "Zl", "Zp")
    return "".join(
        ch.encode("unicode_escape").decode() if unicodedata.category(ch) in refused else ch
        for ch in page
    )


def _days(raw: str) -> int:
    try:
        return days.parse_count(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _list(counts: PageCounts, args: argparse.Namespace) -> int:
    listed = reads.list_pages(counts)
    if args.json:
        print(json.dumps([{"page": page, "count": count} for page, count in listed], indent=2))
        return DONE
    if not listed:
        print("No page has been counted yet.")
        return DONE
    width = max(len(f"{count:,}") for _, count in listed)
    print(f"{'count':>{width}}  page")
    for page, count in listed:
        print(f"{count:>{width},}  {_shown(page)}")
    total = sum(count for _, count in listed)
    print(f"{len(listed):,} page{'s' * (len(listed) != 1)}, {total:,} visits in all")
    return DONE


def _set(counts: PageCounts, args: argparse.Namespace) -> int:
    page, value = args.page, args.n
    try:
        now = f"counts {reads.summarize(counts, page).total:,}"
    except reads.UnknownPage:
        if not args.create:
            raise BadInput(
                f"no page {page} is counted here (`list` shows the pages); "
                "add --create to start it at N"
            ) from None
        now = "is not counted yet"
    if not _confirm(f"{page} {now}. Set it to {value:,}?", args):
        return NOT_DONE
    result = changes.set_count(counts, page, value, create=args.create)
    print(f"{page} now counts {result.count:,} (it was {result.previous:,}); its history is kept.")
    return DONE


def _reset(counts: PageCounts, args: argparse.Namespace) -> int:
    return _set(counts, args)


def _delete(counts: PageCounts, args: argparse.Namespace) -> int:
    page = args.page
    summary = reads.summarize(counts, page)
    question = (
        f"{page} counts {summary.total:,} and has visits on {summary.days:,} days of history. "
        "Delete it all?"
    )
    if not _confirm(question, args):
        return NOT_DONE
    result = changes.delete_page(counts, page)
    print(f"Deleted {page}: its count of {result.previous:,} and {result.entities:,} entities.")
    return DONE


def _history(counts: PageCounts, args: argparse.Namespace) -> int:
    found = reads.history(counts, args.page, args.days)
    if args.json:
        print(json.dumps(_history_json(args.page, found), indent=2))
        return DONE
    width = max(len("visits"), *(len(f"{day.count:,}") for day in found.days))
    print(f"date        {'visits':>{width}}")
    for day in found.days:
        print(f"{day.date}  {day.count:>{width},}")
    recent = sum(day.count for day in found.days)
    print(f"{args.page}: {recent:,} in these {len(found.days)} days (UTC), {found.total:,} in all")
    return DONE


def _history_json(page: str, found: History) -> dict[str, object]:
    per_day = [{"date": day.date, "count": day.count} for day in found.days]
    return {"page": page, "count": found.total, "days": per_day}


def _export(counts: PageCounts, args: argparse.Namespace) -> int:
    rows = reads.export(counts)
    if args.output is None:
        _write_csv(sys.stdout, rows)
        return DONE
    try:
        with args.output.open("w", encoding="utf-8", newline="") as out:
            _write_csv(out, rows)
    except OSError as exc:
        raise BadInput(f"could not write {str(args.output)!r}: {exc.strerror}") from None
    print(f"Wrote {len(rows):,} pages to {args.output}.", file=sys.stderr)
    return DONE


def _write_csv(out: TextIO, rows: list[reads.PageExport]) -> None:
    """page,total,date,count: a row per day of history; a page without any gets one, dateless."""
    # Every page starts with "/", so no cell can be taken for a spreadsheet formula.
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["page", "total", "date", "count"])
    for row in rows:
        for day in row.days or [None]:
            writer.writerow(
                [row.page, row.total, day.date if day else "", day.count if day else ""]
            )


def _import(counts: PageCounts, args: argparse.Namespace) -> int:
    source = counts.db.key(args.kind, args.id if args.id is not None else args.name)
    result = changes.import_count(counts, source, args.property, args.page)
    if result.already_done:
        print(f"already imported; {args.page} counts {result.count}")
    else:
        print(f"imported {result.imported} into {args.page}; it now counts {result.count}")
    return DONE


def _confirm(question: str, args: argparse.Namespace) -> bool:
    """Whether the owner agrees (always, with --yes); no answer at all is a no."""
    if args.yes:
        return True
    try:
        answer = input(f"{question} [y/N] ")
    except (EOFError, OSError):  # no terminal, or input closed
        answer = ""
    if answer.strip().lower() in ("y", "yes"):
        return True
    print("Nothing changed (answer y, or add --yes).", file=sys.stderr)
    return False


def _fail(parser: argparse.ArgumentParser, problem: object, status: int) -> int:
    print(f"{parser.prog}: {problem}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main(prog="python -m scripts.admin"))
