"""Carry an existing count (for example kind `analytics`, property `count`) over to a page, once.

    python -m scripts.import_count --kind analytics --name visits --page /

The same as `python -m scripts.admin import`, kept under its old name: it reads the old entity
and adds its count to the page's count in one transaction, recording where it came from, so
hits arriving meanwhile are kept and a second run changes nothing.
"""

from __future__ import annotations

import sys

from scripts import admin


def main(argv: list[str] | None = None) -> int:
    """Run the import; print what happened and return the exit status."""
    arguments = sys.argv[1:] if argv is None else argv
    return admin.main(["import", *arguments], prog="python -m scripts.import_count")


if __name__ == "__main__":
    sys.exit(main())
