"""Circuit breakers: at most so many actions of a kind (quarantines, destinations newly blocked)
in a sliding window, so that a flood of alerts, forged or real, cannot cut a whole cluster off."""

from __future__ import annotations

import contextlib
from collections import deque
from dataclasses import dataclass


@dataclass(eq=False, slots=True)
class BreakerSlot:
    """A slot taken in a circuit breaker's window (given back by itself, not by an equal one)."""

    taken_ns: int
    # Whose it is (a pod's namespace and name), for a share per pod; None: no one's in particular.
    owner: tuple[str, str] | None = None


class CircuitBreaker:
    """At most ``limit`` actions per sliding window (quarantines; destinations newly blocked); a
    slot is taken when the action is decided (no await between deciding and taking it) and given
    back if it did not happen."""

    def __init__(self, limit: int, window_seconds: float) -> None:
        self._limit = limit
        self._window_ns = int(window_seconds * 1e9)
        self._slots: deque[BreakerSlot] = deque()

    def recent(self, now_ns: int) -> int:
        if self._slots and self._slots[-1].taken_ns > now_ns:
            # The clock was set back (an NTP step): what was taken "later than now" was taken at
            # most now, and ages out a window from now, not a window after the clock catches up.
            for slot in self._slots:
                slot.taken_ns = min(slot.taken_ns, now_ns)
        while self._slots and now_ns - self._slots[0].taken_ns > self._window_ns:
            self._slots.popleft()
        return len(self._slots)

    def recent_of(self, owner: tuple[str, str], now_ns: int) -> int:
        """The slots in the window that ``owner`` took."""
        self.recent(now_ns)
        return sum(1 for slot in self._slots if slot.owner == owner)

    def take(self, now_ns: int, owner: tuple[str, str] | None = None) -> BreakerSlot:
        slot = BreakerSlot(now_ns, owner)
        self._slots.append(slot)
        return slot

    def give_back(self, slot: BreakerSlot) -> None:
        with contextlib.suppress(ValueError):  # already aged out of the window
            self._slots.remove(slot)

    def is_open(self, now_ns: int) -> bool:
        return self.recent(now_ns) >= self._limit

    def reopens_at(self, now_ns: int) -> int | None:
        """When the breaker, open at ``now_ns``, next has a slot free (the slot that must age out of
        the window has); None: it has one now."""
        held = self.recent(now_ns)
        if held < self._limit:
            return None
        return self._slots[held - self._limit].taken_ns + self._window_ns + 1
