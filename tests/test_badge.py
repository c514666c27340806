"""The SVG badge: renders the count, escapes what it is given, counts only when enabled."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest
from flask.testing import FlaskClient

from counter import badge

SVG = "{http://www.w3.org/2000/svg}"


def parse(body: bytes) -> ET.Element:
    """The badge's SVG document; fails if it is not well-formed XML."""
    return ET.fromstring(body)


def test_badge_shows_the_count_without_counting(client: FlaskClient, page: str) -> None:
    for _ in range(3):
        client.post("/", query_string={"page": page})
    response = client.get("/badge.svg", query_string={"page": page})
    assert response.status_code == 200
    assert response.mimetype == "image/svg+xml"
    assert "no-cache" in response.headers["Cache-Control"]
    assert "no-store" in response.headers["Cache-Control"]
    svg = parse(response.data)
    assert svg.get("role") == "img"
    assert svg.findtext(f"{SVG}title") == "visits: 3"
    assert [t.text for t in svg.iter(f"{SVG}text")] == ["visits", "3"]
    assert client.get("/", query_string={"page": page}).get_json() == {"count": 3}


def test_label_and_colour_are_applied(client: FlaskClient, page: str) -> None:
    response = client.get(
        "/badge.svg", query_string={"page": page, "label": "views", "color": "blue"}
    )
    svg = parse(response.data)
    assert svg.findtext(f"{SVG}title") == "views: 0"
    fills = [rect.get("fill") for rect in svg.iter(f"{SVG}rect")]
    assert "#007ec6" in fills


@pytest.mark.parametrize(
    "hostile",
    ["<script>alert(1)</script>", '"><svg onload=alert(1)>', "&amp; </text><text>9999"],
)
def test_hostile_label_comes_back_as_text(client: FlaskClient, page: str, hostile: str) -> None:
    response = client.get("/badge.svg", query_string={"page": page, "label": hostile})
    assert response.status_code == 200
    svg = parse(response.data)
    assert svg.findtext(f"{SVG}title") == f"{hostile}: 0"
    assert [t.text for t in svg.iter(f"{SVG}text")] == [hostile, "0"]
    assert not [el for el in svg.iter() if el.tag.endswith("script")]
    assert all(not name.startswith("on") for el in svg.iter() for name in el.attrib)


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"color": "red;stroke:url(javascript:1)"}, "color must be"),
        ({"color": "12345"}, "color must be"),
        ({"label": "x" * 41}, "longer than 40"),
        ({"label": "a\nb"}, "control characters"),
        ({"page": "nope"}, "starts with /"),
    ],
)
def test_bad_badge_parameters_are_refused(
    client: FlaskClient, params: dict[str, str], words: str
) -> None:
    response = client.get("/badge.svg", query_string=params)
    assert response.status_code == 400
    assert words in response.get_json()["error"]["message"]


def test_badge_counts_only_where_enabled(
    client: FlaskClient, env: Callable[..., None], page: str
) -> None:
    refused = client.get("/badge.svg", query_string={"page": page, "count": "1"})
    assert refused.status_code == 403
    assert "BADGE_COUNTS" in refused.get_json()["error"]["message"]
    env(BADGE_COUNTS="true")
    for expected in ("1", "2"):
        response = client.get("/badge.svg", query_string={"page": page, "count": "1"})
        assert parse(response.data).findtext(f"{SVG}title") == f"visits: {expected}"


def test_badge_only_reads(client: FlaskClient, page: str) -> None:
    response = client.post("/badge.svg", query_string={"page": page})
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD"


@pytest.mark.parametrize(("count", "shown"), [(0, "0"), (999, "999"), (1234567, "1,234,567")])
def test_counts_are_grouped(count: int, shown: str) -> None:
    svg = parse(badge.render("visits", count, "4c1").encode())
    assert [t.text for t in svg.iter(f"{SVG}text")] == ["visits", shown]


def drawn(count: int) -> tuple[int, int]:
    """The badge's width and its label half's, as drawn for a count."""
    svg = parse(badge.render("visits", count, "4c1").encode())
    [label] = [rect for rect in svg.iter(f"{SVG}rect") if rect.get("fill") == "#555"]
    return int(svg.get("width")), int(label.get("width"))


@pytest.mark.parametrize(("fewer", "more"), [(9, 10), (999, 1_000), (999_999, 1_234_567)])
def test_a_longer_count_widens_the_badge_but_not_its_label(fewer: int, more: int) -> None:
    (narrow, label), (wide, same_label) = drawn(fewer), drawn(more)
    assert wide > narrow
    assert same_label == label
