"""Who the client is, from the forwarding chain each way a request can reach the function."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from counter import addresses, google_ranges
from scripts import google_ranges as refresh

GOOGLE_PROXY = "66.102.8.142"  # Google's own: goog.json, not cloud.json
GOOGLE_FRONT_END = "35.191.14.3"
CLIENT = "203.0.113.7"
CLIENT_V6 = "2001:db8:85a3:12:8a2e:370:7334:1"


@pytest.mark.parametrize(
    ("forwarded_for", "hops", "expected"),
    [
        pytest.param(CLIENT, 0, CLIENT, id="direct-url"),
        pytest.param(f"{CLIENT}, {GOOGLE_PROXY}", 0, CLIENT, id="google-proxy-appended"),
        pytest.param(
            f"{CLIENT}, {GOOGLE_PROXY}, {GOOGLE_FRONT_END}", 0, CLIENT, id="two-google-hops"
        ),
        pytest.param(
            f"{CLIENT}, {GOOGLE_FRONT_END}, 169.254.1.1", 0, CLIENT, id="api-gateway-internal-hop"
        ),
        pytest.param(f"{CLIENT}, 34.120.5.9", 2, CLIENT, id="load-balancer-hops-2"),
        pytest.param(f"198.51.100.1, 192.0.2.9, {CLIENT}", 0, CLIENT, id="forged-on-the-left"),
        pytest.param(
            f"198.51.100.1, {CLIENT}, {GOOGLE_PROXY}", 0, CLIENT, id="forged-left-of-a-proxy"
        ),
        pytest.param(f"10.0.0.1, {CLIENT}", 0, CLIENT, id="private-entry-forged-on-the-left"),
        pytest.param(f"{CLIENT}:51234", 0, CLIENT, id="port"),
        pytest.param(f"::ffff:{CLIENT}", 0, CLIENT, id="ipv4-mapped"),
        pytest.param(GOOGLE_PROXY, 0, GOOGLE_PROXY, id="only-google"),
    ],
)
def test_the_client_is_the_right_most_entry_that_is_not_a_hop(
    forwarded_for: str, hops: int, expected: str
) -> None:
    assert addresses.client(forwarded_for, "169.254.8.1", hops=hops) == expected


def test_without_forwarding_the_peer_is_the_client() -> None:
    assert addresses.client(None, "127.0.0.1") == "127.0.0.1"
    assert addresses.client("", "::1") == "::/64"


def test_an_ipv6_client_is_its_slash_64() -> None:
    rotations = [f"2001:db8:85a3:12:{n:x}::{n:x}" for n in range(1, 6)]
    identities = {addresses.client(f"{ip}, {GOOGLE_PROXY}", None) for ip in rotations}
    assert identities == {"2001:db8:85a3:12::/64"}
    assert addresses.client(f"[{CLIENT_V6}]:443", None) == "2001:db8:85a3:12::/64"
    assert addresses.client("2001:db8:85a3:13::1", None) != "2001:db8:85a3:12::/64"


@pytest.mark.parametrize("entry", ["x" * 500, "203.0.113.19%1", "203.0.113.19%2", "unknown"])
def test_every_forwarding_entry_that_is_no_address_is_the_same_one_client(entry: str) -> None:
    assert addresses.client(entry, None) == addresses.UNPARSED


@pytest.mark.parametrize(
    ("identity", "site"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:77:1::/64", "2001:db8:77::/48"),
        ("2001:db8:77:ffff::/64", "2001:db8:77::/48"),
        (addresses.UNPARSED, addresses.UNPARSED),
    ],
)
def test_limits_per_address_take_an_ipv6_clients_48(identity: str, site: str) -> None:
    assert addresses.site(identity) == site


@pytest.mark.parametrize(
    ("address", "proxy"),
    [
        ("66.102.0.1", True),
        ("66.249.80.1", True),
        ("35.191.1.1", True),
        ("130.211.0.1", True),
        ("142.250.1.1", True),
        ("10.1.2.3", True),
        ("192.168.0.1", True),
        ("100.64.0.1", True),
        ("127.0.0.1", True),
        ("169.254.169.254", True),
        ("fe80::1", True),
        ("fd00::1", True),
        ("34.120.5.9", False),  # a Google Cloud customer's address: a client like any other
        ("203.0.113.7", False),
        ("8.8.8.9", True),
        ("1.1.1.1", False),
        ("2001:db8::1", False),
    ],
)
def test_google_and_local_addresses_are_hops(address: str, proxy: bool) -> None:
    parsed = addresses.parse(address)
    assert parsed is not None
    assert addresses.is_proxy(parsed) is proxy


def test_the_shipped_ranges_are_googles_own_not_its_customers() -> None:
    assert google_ranges.SYNC_TOKEN
    assert "66.102.0.0/20" in google_ranges.RANGES
    assert len(set(google_ranges.RANGES)) == len(google_ranges.RANGES)


def test_refreshing_the_ranges_takes_cloud_out_of_goog(tmp_path: Path) -> None:
    goog = {
        "syncToken": "42",
        "creationTime": "2026-11-28T00:00:00",
        "prefixes": [{"ipv4Prefix": "34.0.0.0/15"}, {"ipv6Prefix": "2600:1900::/28"}],
    }
    cloud = {"prefixes": [{"ipv4Prefix": "34.1.0.0/16"}, {"ipv6Prefix": "2600:1900:4000::/44"}]}
    (tmp_path / "goog.json").write_text(json.dumps(goog))
    (tmp_path / "cloud.json").write_text(json.dumps(cloud))
    output = tmp_path / "google_ranges.py"

    argv = ["--goog", str(tmp_path / "goog.json"), "--cloud", str(tmp_path / "cloud.json")]
    assert refresh.main([*argv, "--output", str(output)]) == 0

    namespace: dict = {}
    exec(output.read_text(), namespace)
    assert namespace["SYNC_TOKEN"] == "42"
    ranges = namespace["RANGES"]
    assert "34.0.0.0/16" in ranges
    assert not [r for r in ranges if r.startswith("34.1.")]
    assert "2600:1900::/34" in ranges  # the first part of the IPv6 range left after the cut
