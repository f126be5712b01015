"""Deadlines on the wall clock that a clock stepped back (an NTP step) cannot hold off.

The in-process waits (an incident's re-decide and recheck, a follow-up block's retry) are set a
known, short time ahead. A deadline further ahead than that was set before the clock went back:
it counts as come, instead of waiting for the clock to catch up (a step of an hour would leave an
attack undecided for the hour)."""

from __future__ import annotations


def deadline_passed(deadline_ns: int, now_ns: int, longest_wait_ns: int) -> bool:
    """Whether ``deadline_ns``, set at most ``longest_wait_ns`` ahead of its clock, has come at
    ``now_ns``."""
    return now_ns >= deadline_ns or deadline_ns - now_ns > longest_wait_ns


def within_window(time_ns: int, opened_ns: int, window_ns: int) -> bool:
    """Whether ``time_ns`` falls in the window opened at ``opened_ns``. A time before the opening
    (the clock set back since) counts for at most one window back: a larger step ends the window
    rather than stretching it by the step."""
    return -window_ns <= time_ns - opened_ns <= window_ns
