"""Per-client rate limits and the daily write cap, alone, with a clock the test moves."""

from __future__ import annotations

import pytest

from counter.daily_limit import DailyWrites
from counter.limits import ADDRESS_FACTOR, RateLimiter


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    """Time for the limiter."""
    return Clock()


def test_a_burst_is_cut_at_the_limit_and_refills_over_a_minute(clock: Clock) -> None:
    limiter = RateLimiter(60, clock=clock)
    decisions = [limiter.check("203.0.113.7", "Mozilla/5.0") for _ in range(100)]
    assert [d.allowed for d in decisions] == [True] * 60 + [False] * 40
    assert [d.remaining for d in decisions[:3]] == [59, 58, 57]
    refused = decisions[-1]
    assert (refused.remaining, refused.retry_after_seconds) == (0, 1)
    assert refused.headers()["Retry-After"] == "1"
    assert refused.headers()["RateLimit-Limit"] == "60"
    clock.now += 10  # a sixth of a minute: ten more
    assert sum(limiter.check("203.0.113.7", "Mozilla/5.0").allowed for _ in range(20)) == 10


def test_other_clients_are_not_held_back_by_one_that_floods(clock: Clock) -> None:
    limiter = RateLimiter(30, clock=clock)
    for _ in range(100):
        limiter.check("203.0.113.7", "Mozilla/5.0")
    assert limiter.check("203.0.113.8", "Mozilla/5.0").allowed
    assert limiter.check("203.0.113.7", "Firefox").allowed  # another browser, same household


def test_changing_user_agents_does_not_escape_the_address_limit(clock: Clock) -> None:
    limiter = RateLimiter(10, clock=clock)
    allowed = sum(
        limiter.check("203.0.113.7", f"Mozilla/5.0 rotation {n}").allowed for n in range(500)
    )
    assert allowed == 10 * ADDRESS_FACTOR


def test_the_table_of_clients_stays_bounded(clock: Clock) -> None:
    limiter = RateLimiter(60, max_clients=1_000, clock=clock)
    for n in range(20_000):
        limiter.check(f"198.51.{n // 256}.{n % 256}", "Mozilla/5.0")
    assert len(limiter) == 1_000  # full, and no fuller: the oldest were forgotten


def test_nothing_about_the_client_is_kept_in_clear(clock: Clock) -> None:
    limiter = RateLimiter(60, clock=clock)
    limiter.check("203.0.113.7", "UniqueAgent/1.0")
    assert len(limiter) == 2  # the client and its address are held, as keyed hashes
    held = repr(vars(limiter))
    assert "203.0.113" not in held
    assert "UniqueAgent" not in held


def test_the_daily_cap_is_reached_once_and_resets_at_midnight() -> None:
    now = [86_400.0 * 20_000 + 3_600]
    writes = DailyWrites(3, clock=lambda: now[0])
    taken = [writes.reserve(None) for _ in range(5)]
    assert [t.allowed for t in taken] == [True, True, True, False, False]
    assert [t.reached for t in taken] == [False, False, True, False, False]
    assert writes.exhausted()
    now[0] += 86_400
    assert not writes.exhausted()


def test_a_place_given_back_is_taken_again_and_the_cap_still_holds() -> None:
    writes = DailyWrites(2)
    first, second = writes.reserve(None), writes.reserve(None)
    writes.release(second)  # that visit was a repeat after all
    again, past = writes.reserve(None), writes.reserve(None)
    assert (first.allowed, again.allowed, past.allowed) == (True, True, False)


def test_one_address_takes_at_most_its_share_of_the_day() -> None:
    writes = DailyWrites(300)  # a share of 300 // ADDRESS_SHARE = 3
    greedy = [writes.reserve(b"one").allowed for _ in range(5)]
    assert greedy == [True, True, True, False, False]
    assert writes.reserve(b"another").allowed


def test_a_cap_of_zero_is_no_cap() -> None:
    writes = DailyWrites(0)
    assert all(writes.reserve(b"one").allowed for _ in range(1_000))
    assert not writes.exhausted()
