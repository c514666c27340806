"""Who is visiting, privately: bots, the client's address, and a daily keyed visitor hash."""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress

from crawlerdetect import CrawlerDetect


@functools.cache
def _detector() -> CrawlerDetect:
    return CrawlerDetect()


def is_bot(user_agent: str | None) -> bool:
    """Crawlers, link previewers, scripts and an empty user agent are not visitors."""
    agent = (user_agent or "").strip()
    return not agent or _detector().is_crawler(agent)


def client_address(forwarded_for: str | None, remote_addr: str | None, hops: int) -> str:
    """The client's address: the entry `hops` from the right of X-Forwarded-For.

    Google's front end appends the address it saw to X-Forwarded-For; entries to its left come
    from the client and can be forged, so the count is taken from the right. Without the header
    (a local run) the socket's peer address is used.
    """
    entries = [e.strip() for e in (forwarded_for or "").split(",") if e.strip()]
    candidate = entries[-hops] if len(entries) >= hops else (remote_addr or "")
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return candidate[:64]  # not an address; still hashed, never stored


def visitor_id(salt: bytes, address: str, user_agent: str, page: str) -> str:
    """A keyed hash that recognises one visitor of one page for one salt, and nothing more."""
    message = "\n".join((address, user_agent, page)).encode("utf-8", "surrogatepass")
    return hmac.new(salt, message, hashlib.sha256).hexdigest()[:32]
