"""Carry an existing count (for example kind `analytics`, property `count`) over to a page, once.

    python -m scripts.import_count --kind analytics --name visits --page /

Reads the old entity and adds its count to the page's count in one transaction, recording where
it came from, so hits arriving meanwhile are kept and a second run changes nothing.
"""

from __future__ import annotations

import argparse
import sys

from counter import config, owner, pages, store
from counter.database import StoreUnavailable


def main(argv: list[str] | None = None) -> int:
    """Run the import; print what happened and return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="analytics", help="kind of the old entity")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--name", help="key name of the old entity")
    which.add_argument("--id", type=int, help="numeric key id of the old entity")
    parser.add_argument("--property", default="count", help="integer property holding the count")
    parser.add_argument("--page", default="/", help="page whose count receives it")
    args = parser.parse_args(argv)
    problem = pages.problem(args.page)
    if problem:
        parser.error(f"--page: {problem}")
    counts = store.build(config.settings()).counts
    source = counts.db.key(args.kind, args.id if args.id is not None else args.name)
    try:
        result = owner.import_count(counts, source, args.property, args.page)
    except (LookupError, ValueError, StoreUnavailable) as exc:
        print(f"import_count: {exc}", file=sys.stderr)
        return 1
    if result.already_done:
        print(f"already imported; {args.page} counts {result.count}")
    else:
        print(f"imported {result.imported} into {args.page}; it now counts {result.count}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
