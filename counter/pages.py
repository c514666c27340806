"""What a page name may look like: the one rule shared by requests and settings."""

from __future__ import annotations

import unicodedata
from urllib.parse import unquote

MAX_PAGE_LENGTH = 256
"""Longest page accepted, in characters: a URL path, far below Datastore's 1,500-byte key limit."""

# Control and format characters (bidirectional overrides, zero-width ones), line and paragraph
# separators and lone surrogates: none belongs in a path, and each can forge log lines, break
# keys or make one page look like another in the owner's listing.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_DOT_SEGMENTS = frozenset({".", ".."})


def problem(page: str) -> str | None:
    """Say what is wrong with a page name, or None when it is acceptable."""
    if not page.startswith("/"):
        return "page must be a path that starts with /"
    if len(page) > MAX_PAGE_LENGTH:
        return f"page is longer than {MAX_PAGE_LENGTH} characters"
    if "?" in page or "#" in page:
        return "page must be a path without a query or fragment"
    if any(unicodedata.category(ch) in _REFUSED_CATEGORIES for ch in page):
        return "page contains control characters or invisible formatting"
    # A page is a key, never resolved like a file path, so /blog/../x would be a page of its
    # own under /blog/: refused, so that an ALLOWED_PAGES prefix means what it says.
    segments = page.split("/")[1:]
    if any(_decoded(segment) in _DOT_SEGMENTS for segment in segments):
        return "page must not contain . or .. segments"
    if "" in segments[:-1]:
        return "page must not contain an empty segment (//)"
    return None


def _decoded(segment: str) -> str:
    """A segment with its percent-encoding undone, however many times it was applied.

    Each round that changes the text shortens it, so the loop ends.
    """
    while (decoded := unquote(segment)) != segment:
        segment = decoded
    return segment
