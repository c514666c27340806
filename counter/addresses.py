"""Which client a request came from, as far as the function can tell, without storing it.

Google's front end appends the address it saw to X-Forwarded-For; entries to its left come from
the client and can be forged. Between the client and the function there may be Google's own
hops (a proxy, API Gateway), and behind a load balancer its address. So the client is the
right-most entry that is not one of Google's own addresses (the published ranges, see
counter/google_ranges.py) nor a private, loopback or link-local one. FORWARDED_HOPS overrides
this with a fixed position from the right, as werkzeug's ProxyFix would; ProxyFix itself can't
express the default rule, whose number of hops depends on the path the request took.

An IPv6 client is its /64: one host can take any address of its /64 at will. Limits per address
take an IPv6 client's /48 (`site`), the prefix a site gets.
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
import socket

from counter import google_ranges

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

IPV6_CLIENT_PREFIX = 64
IPV6_SITE_PREFIX = 48
"""An IPv6 site's prefix: end sites get a /48 or a /56, so a client can't cheaply leave it."""
UNPARSED = "unparsed"
"""The one identity of every forwarding entry that is not an address."""

# Addresses no visitor on the internet has: private networks, shared address space (carrier
# NAT), loopback and link-local. (Python's is_private would also take the documentation ranges.)
_LOCAL = tuple(
    ipaddress.ip_network(net)
    for net in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
    )
)


def client(forwarded_for: str | None, remote_addr: str | None, *, hops: int = 0) -> str:
    """The client's address (an IPv6 client as its /64), from the request's forwarding chain.

    hops=0 finds it by the rule above; hops=N takes the N-th entry from the right. Without a
    forwarding header (a local run) the socket's peer is the client.
    """
    entries = [entry.strip() for entry in (forwarded_for or "").split(",") if entry.strip()]
    if not entries:
        return _identity(remote_addr or "")
    if hops:
        return _identity(entries[-hops] if len(entries) >= hops else remote_addr or "")
    for entry in reversed(entries):
        address = parse(entry)
        if address is None or not is_proxy(address):
            return _identity(entry)
    return _identity(entries[0])  # every hop is Google's or private: the furthest one known


def site(identity: str) -> str:
    """The network a client identity belongs to for per-address limits: an IPv6 one's /48."""
    if ":" not in identity:
        return identity  # an IPv4 address, or UNPARSED
    network = ipaddress.ip_network(identity, strict=False)
    return str(network.supernet(new_prefix=IPV6_SITE_PREFIX))


def parse(entry: str) -> Address | None:
    """An address from a forwarding entry ('1.2.3.4', '1.2.3.4:80', '[2001:db8::1]:443')."""
    text = entry.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]  # IPv4 with a port
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def is_proxy(address: Address) -> bool:
    """Whether an address is a hop rather than a visitor: Google's own, private or local."""
    if any(address in net for net in _LOCAL if net.version == address.version):
        return True
    starts, ends = _google_ranges(address.version)
    at = bisect.bisect_right(starts, int(address)) - 1
    return at >= 0 and int(address) <= ends[at]


def _identity(entry: str) -> str:
    """The text a client is known by: its address, an IPv6 one as its /64."""
    address = parse(entry)
    if address is None:
        # One identity for all of them: a forged entry must not be a new client each time.
        return UNPARSED
    if address.version == 6:
        network = ipaddress.ip_network((address, IPV6_CLIENT_PREFIX), strict=False)
        return str(network)
    return str(address)


@functools.cache
def _google_ranges(version: int) -> tuple[list[int], list[int]]:
    """Google's ranges of one IP version as sorted, non-overlapping [start, end] integers."""
    spans = sorted(span for span in map(_span, google_ranges.RANGES) if span[0] == version)
    return [start for _version, start, _end in spans], [end for _version, _start, end in spans]


def _span(cidr: str) -> tuple[int, int, int]:
    """A CIDR block's IP version, first and last address as integers.

    Done with socket.inet_pton rather than ipaddress.ip_network, which takes several times as
    long over Google's ranges: this runs on an instance's first request.
    """
    address, _, length = cidr.partition("/")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    packed = socket.inet_pton(family, address)
    start = int.from_bytes(packed, "big")
    size = 1 << (len(packed) * 8 - int(length))
    return (6 if family == socket.AF_INET6 else 4), start, start + size - 1
