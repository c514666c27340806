"""Who is visiting, privately: bots, and a keyed hash that recognises a visitor for a day."""

from __future__ import annotations

import hashlib
import hmac

from counter import bots


def is_bot(user_agent: str | None) -> bool:
    """Crawlers, link previewers, scripts and an empty user agent are not visitors."""
    agent = (user_agent or "").strip()
    return not agent or bots.is_crawler(agent)


def visitor_id(salt: bytes, address: str, user_agent: str, page: str) -> str:
    """A keyed hash that recognises one visitor of one page for one salt, and nothing more."""
    message = "\n".join((address, user_agent, page)).encode("utf-8", "surrogatepass")
    return hmac.new(salt, message, hashlib.sha256).hexdigest()[:32]
