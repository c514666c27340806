"""The bot rule answers exactly as crawlerdetect does, without compiling its big expression for
an ordinary user agent."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from crawlerdetect import CrawlerDetect
from crawlerdetect.providers.crawlers import data as crawler_patterns
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT
from counter import bots
from user_agents import BOTS, BROWSERS

DETECTOR = CrawlerDetect()
WORDS = [word for word in map(bots.plain_word, crawler_patterns) if word]
EXPRESSIONS = [pattern for pattern in crawler_patterns if bots.plain_word(pattern) is None]
AGENTS = [agent for agent in (*BROWSERS.values(), *BOTS.values()) if agent]
# Characters whose case rules differ from ASCII's: the Kelvin sign and the long s match k and s
# under re.IGNORECASE, and the dotted I lowers to two characters.
UNICODE = "\u212a\u017f\u0130\u0131ßöé€"


def agrees(agent: str) -> None:
    """The rule and crawlerdetect give the same answer for this user agent."""
    agent = agent.strip()
    if agent:
        assert bots.is_crawler(agent) == DETECTOR.is_crawler(agent), agent


@pytest.mark.parametrize("agent", AGENTS)
def test_the_tests_browsers_and_bots_are_judged_as_crawlerdetect_judges_them(agent: str) -> None:
    agrees(agent)
    assert bots.is_crawler(agent) == (agent in BOTS.values())


def test_every_plain_word_is_a_bot_in_any_case_and_anywhere_in_the_agent() -> None:
    flagged = 0
    for word in WORDS:
        for agent in (word, word.upper(), word.swapcase()):
            agrees(agent)
        embedded = f"Mozilla/5.0 (compatible; {word} 1)"
        agrees(embedded)
        flagged += bots.is_crawler(embedded)
    # Not agreement on "no" alone: nearly every word makes a bot (crawlerdetect's exclusions
    # remove the few that are also parts of browsers' agents).
    assert flagged > 0.95 * len(WORDS)


@given(st.data())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_text_matching_any_real_expression_is_judged_the_same(data: st.DataObject) -> None:
    pattern = data.draw(st.sampled_from(EXPRESSIONS))
    agrees(data.draw(st.from_regex(pattern, alphabet=st.characters(max_codepoint=0x7F))))


fragments = st.one_of(
    st.sampled_from(WORDS),
    st.sampled_from(AGENTS),
    st.sampled_from(["Mozilla/5.0 ", "(", ")", "; ", "/", " ", "-", "_", ".", "1.0"]),
    st.text(alphabet=UNICODE + "abcXYZ019 /;", max_size=4),
)


@given(st.lists(fragments, max_size=6), st.sampled_from([str, str.upper, str.swapcase]))
@settings(max_examples=500, deadline=None)
def test_any_mix_of_words_agents_and_unicode_is_judged_the_same(
    parts: list[str], case: object
) -> None:
    agrees(case("".join(parts)))


def test_an_ascii_agent_never_compiles_crawlerdetects_big_expression() -> None:
    probe = (
        "import json\n"
        "from crawlerdetect.crawlerdetect import get_compiled_crawler_regex as big\n"
        "from counter import bots\n"
        f"answers = [bots.is_bot(a) for a in {AGENTS!r}]\n"
        "before = big.cache_info().currsize\n"
        "bots.is_bot('Googlebot \\u212a')\n"
        "print(json.dumps([before, big.cache_info().currsize, any(answers)]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    # Not compiled for any ASCII agent, bots included; compiled once for one that is not ASCII.
    assert json.loads(result.stdout) == [0, 1, True]


@pytest.mark.parametrize(
    ("pattern", "word"),
    [
        ("Googlebot", "Googlebot"),
        (r"Apache Ant\/", "Apache Ant/"),
        (r"Barracuda Sentinel \(EE\)", "Barracuda Sentinel (EE)"),
        (r"^git\/", None),
        (r"Go [\d\.]* package http", None),
        (r"Yandex(?!Search)", None),
        ("trailing\\", None),
    ],
)
def test_a_plain_word_is_text_with_nothing_but_escaped_punctuation(
    pattern: str, word: str | None
) -> None:
    assert bots.plain_word(pattern) == word
