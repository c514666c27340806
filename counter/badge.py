"""An SVG badge of a page's count, for places where no script can run (a GitHub README)."""

from __future__ import annotations

import re
from html import escape

MAX_LABEL_LENGTH = 40
DEFAULT_LABEL = "visits"
DEFAULT_COLOR = "4c1"
NAMED_COLORS = {
    "brightgreen": "4c1",
    "green": "97ca00",
    "yellow": "dfb317",
    "orange": "fe7d37",
    "red": "e05d44",
    "blue": "007ec6",
    "grey": "555",
    "gray": "555",
    "lightgrey": "9f9f9f",
}
_HEX = re.compile(r"[0-9a-fA-F]{3}|[0-9a-fA-F]{6}")

# Rough advance widths of 11px Verdana, in pixels: narrow, wide and everything else.
_NARROW = set("ijlI.,:;'!|() ")
_WIDE = set("mwMW@%")


class BadgeError(ValueError):
    """A badge parameter that cannot be drawn."""


def color(value: str | None) -> str:
    """A colour name or 3/6-digit hex (without #) as a hex string; BadgeError otherwise."""
    if value is None or value == "":
        return DEFAULT_COLOR
    value = value.removeprefix("#")
    if value.lower() in NAMED_COLORS:
        return NAMED_COLORS[value.lower()]
    if _HEX.fullmatch(value):
        return value.lower()
    raise BadgeError(
        f"color must be a hex colour such as 4c1 or 007ec6, or one of {', '.join(NAMED_COLORS)}"
    )


def label(value: str | None) -> str:
    """A printable label of at most MAX_LABEL_LENGTH characters; BadgeError otherwise."""
    if value is None:
        return DEFAULT_LABEL
    if len(value) > MAX_LABEL_LENGTH:
        raise BadgeError(f"label is longer than {MAX_LABEL_LENGTH} characters")
    if not value.isprintable():
        raise BadgeError("label contains control characters")
    return value


def render(text: str, count: int, fill: str) -> str:
    """The badge as a small, accessible SVG; every piece of text is escaped."""
    value = f"{count:,}"
    left, right = _width(text), _width(value)
    total = left + right
    title = escape(f"{text}: {value}")
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{total}" height="20" role="img" '
        f'aria-label="{title}"><title>{title}</title>'
        '<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" '
        'stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient>'
        f'<clipPath id="r"><rect width="{total}" height="20" rx="3" fill="#fff"/></clipPath>'
        f'<g clip-path="url(#r)"><rect width="{left}" height="20" fill="#555"/>'
        f'<rect x="{left}" width="{right}" height="20" fill="#{fill}"/>'
        f'<rect width="{total}" height="20" fill="url(#s)"/></g>'
        '<g fill="#fff" text-anchor="middle" '
        'font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="11">'
        f'<text x="{left / 2:g}" y="14">{escape(text)}</text>'
        f'<text x="{left + right / 2:g}" y="14">{escape(value)}</text></g></svg>'
    )


def _width(text: str) -> int:
    """Width of a badge half: the text's estimated width plus 10px padding each side."""
    advance = sum(4 if ch in _NARROW else 10 if ch in _WIDE else 7 for ch in text)
    return advance + 20
