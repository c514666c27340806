"""Whether a user agent is a bot, by crawlerdetect's rules, without its slow first use.

crawlerdetect joins some 1,460 patterns into one regular expression, and compiling it is a
noticeable part of the first request of every instance. Nearly all of them are plain words,
and for an ASCII user agent a plain word matches under re.IGNORECASE exactly when its lower
case occurs in the agent's lower case. So the words are looked up by their first two letters,
and only the 80 or so real patterns are compiled. An agent
with any other character goes through crawlerdetect's own expression, where Unicode case rules
could differ. Either way the answer is crawlerdetect's; tests/test_bots.py compares them.
"""

from __future__ import annotations

import functools
import re

from crawlerdetect.crawlerdetect import get_compiled_crawler_regex, get_compiled_exclusions_regex
from crawlerdetect.providers.crawlers import data as crawler_patterns

_SYNTAX = frozenset(".^$*+?{}[]()|\\")
"""Characters that make a pattern more than a plain word, unless escaped."""


def plain_word(pattern: str) -> str | None:
    """The text a pattern matches if it is a plain word (escapes of punctuation allowed)."""
    text = []
    escaped = False
    for char in pattern:
        if escaped:
            if char.isalnum():  # \d, \s, \b …: a class or an anchor, not a character
                return None
            text.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char in _SYNTAX:
            return None
        else:
            text.append(char)
    return None if escaped or not text else "".join(text)


class BotRule:
    """crawlerdetect's crawler patterns, split into plain words and real expressions."""

    def __init__(self, patterns: list[str]) -> None:
        self._words: dict[str, list[str]] = {}
        self._short: list[str] = []
        expressions = []
        for pattern in patterns:
            word = plain_word(pattern)
            if word is None or not word.isascii():
                expressions.append(f"(?:{pattern})")
            elif len(word) < 2:
                self._short.append(word.lower())
            else:
                self._words.setdefault(word[:2].lower(), []).append(word.lower())
        self._expressions = re.compile("|".join(expressions), re.IGNORECASE)

    def matches(self, agent: str) -> bool:
        """Whether any pattern occurs in this ASCII agent, as crawlerdetect's search decides."""
        lowered = agent.lower()
        if any(word in lowered for word in self._short):
            return True
        for start in range(len(lowered) - 1):
            for word in self._words.get(lowered[start : start + 2], ()):
                if lowered.startswith(word, start):
                    return True
        return self._expressions.search(agent) is not None


@functools.cache
def _rule() -> BotRule:
    return BotRule(crawler_patterns)


@functools.lru_cache(maxsize=1024)
def is_crawler(user_agent: str) -> bool:
    """crawlerdetect's `is_crawler` for a stripped, non-empty user agent."""
    # As crawlerdetect: the parts every browser sends (Mozilla/5.0, AppleWebKit …) go first.
    agent = get_compiled_exclusions_regex().sub("", user_agent)
    if not agent:
        return False
    if agent.isascii():
        return _rule().matches(agent)
    return get_compiled_crawler_regex().search(agent) is not None


def is_bot(user_agent: str | None) -> bool:
    """Crawlers, link previewers, scripts and an empty user agent are not visitors."""
    agent = (user_agent or "").strip()
    return not agent or is_crawler(agent)
