"""What an input refuses, counted and logged without letting a flood of refusals flood the log.

Every refusal is counted by a short reason from a fixed set (a metric label). The first refusal of
each reason from each address is logged whole; the others in the same window are only counted,
and one summary line at the window's end says how many there were, by reason. Anyone who can reach
the port can make refusals as fast as the network carries them: at most MAX_SAID_PER_WINDOW + 1
lines per window, whatever they send.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable

# How long a window lasts: refusals past the first of their reason and address are summed over it.
REFUSAL_LOG_SECONDS = 10.0
# Refusals logged one by one per window at most, whatever the number of reasons and addresses.
MAX_SAID_PER_WINDOW = 20
# Addresses counted in a summary at most (a flood from many addresses must not grow memory).
MAX_ADDRESSES_COUNTED = 1000
# Longest detail logged: it may quote what the client sent.
MAX_DETAIL_CHARS = 300


class RefusalLog:
    def __init__(
        self,
        what: str,
        logger: logging.Logger,
        count: Callable[[str], None] | None = None,
        window_seconds: float = REFUSAL_LOG_SECONDS,
    ) -> None:
        """``what`` names the input in the log ("HTTP input"); ``count`` is called with the reason
        of every refusal (the metric)."""
        self._what = what
        self._log = logger
        self._count = count
        self._window_seconds = window_seconds
        self._window: asyncio.TimerHandle | None = None
        self._said: set[tuple[str, str]] = set()
        self._unsaid: collections.Counter[str] = collections.Counter()
        self._unsaid_from: set[str] = set()

    def record(self, reason: str, peer: str, detail: str) -> None:
        """One refusal: ``reason`` is the metric's label (a fixed set), ``detail`` says what was
        wrong in words (the first of its reason from ``peer`` in a window is logged)."""
        if self._count is not None:
            self._count(reason)
        if self._window is None:
            self._window = asyncio.get_running_loop().call_later(self._window_seconds, self.end_window)
        key = (reason, peer)
        if key not in self._said and len(self._said) < MAX_SAID_PER_WINDOW:
            self._said.add(key)
            self._log.warning(
                "%s refused %s: %s",
                self._what,
                peer or "a client",
                detail[:MAX_DETAIL_CHARS],
                extra={"reason": reason, "peer": peer},
            )
            return
        self._unsaid[reason] += 1
        if len(self._unsaid_from) < MAX_ADDRESSES_COUNTED:
            self._unsaid_from.add(peer)

    def end_window(self) -> None:
        """Log the summary of the refusals not logged one by one, and start afresh (also at stop)."""
        if self._window is not None:
            self._window.cancel()
            self._window = None
        if self._unsaid:
            self._log.warning(
                "%s refused %d more in the last %g s, not logged one by one (the first of each reason "
                "from each address was)",
                self._what,
                sum(self._unsaid.values()),
                self._window_seconds,
                extra={"by_reason": dict(sorted(self._unsaid.items())), "addresses": len(self._unsaid_from)},
            )
        self._said.clear()
        self._unsaid.clear()
        self._unsaid_from.clear()
