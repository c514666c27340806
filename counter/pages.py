"""What a page name may look like: the one rule shared by requests and settings."""

from __future__ import annotations

import unicodedata

MAX_PAGE_LENGTH = 256
"""Longest page accepted, in characters: a URL path, far below Datastore's 1,500-byte key limit."""

# Control characters, line/paragraph separators and lone surrogates: none belongs in a path,
# and each can forge log lines or break keys.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


def problem(page: str) -> str | None:
    """Say what is wrong with a page name, or None when it is acceptable."""
    if not page.startswith("/"):
        return "page must be a path that starts with /"
    if len(page) > MAX_PAGE_LENGTH:
        return f"page is longer than {MAX_PAGE_LENGTH} characters"
    if "?" in page or "#" in page:
        return "page must be a path without a query or fragment"
    if any(unicodedata.category(ch) in _REFUSED_CATEGORIES for ch in page):
        return "page contains control characters"
    return None
