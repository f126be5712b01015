"""The circuit breakers' sliding window against the wall clock the pipeline is given."""

from __future__ import annotations

from responder.breaker import CircuitBreaker

SECOND = 10**9


def test_a_window_ages_out_and_a_slot_given_back_frees_it() -> None:
    breaker = CircuitBreaker(limit=2, window_seconds=60)
    first = breaker.take(0)
    breaker.take(10 * SECOND)
    assert breaker.is_open(20 * SECOND)
    breaker.give_back(first)
    assert not breaker.is_open(20 * SECOND)
    breaker.take(30 * SECOND)
    assert breaker.recent(71 * SECOND) == 1  # the one of 10 s aged out


def test_a_clock_set_back_does_not_hold_the_breaker_open_until_it_catches_up() -> None:
    """NTP steps the clock back an hour after two quarantines: they count for a window from
    the new now, not for the hour and a window it takes the clock to reach them again."""
    breaker = CircuitBreaker(limit=2, window_seconds=60)
    hour = 3600 * SECOND
    breaker.take(hour)
    breaker.take(hour + SECOND)
    assert breaker.is_open(0)  # right after the step: still within a window of them
    assert breaker.recent(61 * SECOND) == 0
    assert not breaker.is_open(61 * SECOND)
