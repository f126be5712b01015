"""What an input refuses, counted and logged without letting a flood of refusals flood the log.

Every refusal is counted by a short reason from a fixed set (a metric label). The first refusal of
each reason from each address is logged whole, but no more than MAX_SAID_PER_ADDRESS from one
address and MAX_SAID_PER_WINDOW from all of them in a window; the others in the same window are
only counted, and one summary line at the window's end says how many there were, by reason, and
names the addresses most of them came from. Anyone who can reach the port can make refusals as fast
as the network carries them, and from a few addresses: the budget per address keeps them from
taking every line of a window.

A sender that proved a credential (a client certificate or a token) and was refused all the same
(an invalid alert, an alert for another node, its share of the journal full) is what the log is
most for: its refusals have lines of their own, MAX_SAID_PER_SENDER per sender and
MAX_SAID_FROM_SENDERS_PER_WINDOW for all senders together, which unauthenticated clients cannot
take. At most MAX_SAID_PER_WINDOW + MAX_SAID_FROM_SENDERS_PER_WINDOW + 1 lines per window, whatever
anyone sends.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from responder.sender import Proof, Sender

# How long a window lasts: the refusals not logged one by one are summed over it.
REFUSAL_LOG_SECONDS = 10.0
# Refusals of clients that proved no credential logged one by one per window at most, whatever the
# number of reasons and addresses.
MAX_SAID_PER_WINDOW = 20
# Of those, from one address at most: ten reasons can be had without a credential, so two addresses
# would otherwise take every line of a window, and a real sender's refusal would only be counted.
MAX_SAID_PER_ADDRESS = 3
# Refusals of one sender that proved a credential logged one by one per window at most (the first
# of each reason): its own lines, bounded, so a credential holder cannot flood the log either.
MAX_SAID_PER_SENDER = 3
# Refusals of senders that proved a credential logged one by one per window at most, all of them
# together (one credential used from many addresses is that many senders).
MAX_SAID_FROM_SENDERS_PER_WINDOW = 50
# Addresses counted in a summary at most (a flood from many addresses must not grow memory).
MAX_ADDRESSES_COUNTED = 1000
# Addresses a summary names: those most of its refusals came from.
MAX_ADDRESSES_NAMED = 3
# Longest detail logged: it may quote what the client sent.
MAX_DETAIL_CHARS = 300


def proved_credential(sender: Sender | None) -> Sender | None:
    """``sender`` when it proved who it is (a certificate or a token), else None: a sender admitted
    with no proof (inputs.http.allow_unauthenticated) is anyone who can reach the port."""
    return sender if sender is not None and sender.proof is not Proof.NONE else None


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
        # Logged one by one this window: (reason, address) of unauthenticated clients, and how many
        # each address had; (reason, sender) of senders with a credential, and how many each had.
        self._said_of_addresses: _SaidBudget[str] = _SaidBudget(MAX_SAID_PER_WINDOW, MAX_SAID_PER_ADDRESS)
        self._said_of_senders: _SaidBudget[Sender] = _SaidBudget(
            MAX_SAID_FROM_SENDERS_PER_WINDOW, MAX_SAID_PER_SENDER
        )
        # Only counted this window: by reason, and by address (up to MAX_ADDRESSES_COUNTED of them).
        self._unsaid: collections.Counter[str] = collections.Counter()
        self._unsaid_from: collections.Counter[str] = collections.Counter()

    def record(self, reason: str, peer: str, detail: str, sender: Sender | None = None) -> None:
        """One refusal: ``reason`` is the metric's label (a fixed set), ``detail`` says what was
        wrong in words; ``sender`` is who the request's credential admitted, when it got that far.
        Logged whole when its reason is new for ``peer`` (or for that sender) in this window and
        their budget has room; otherwise counted for the window's summary."""
        if self._count is not None:
            self._count(reason)
        if self._window is None:
            self._window = asyncio.get_running_loop().call_later(self._window_seconds, self.end_window)
        credential = proved_credential(sender)
        if credential is not None:
            said = self._said_of_senders.take(reason, credential)
        else:
            said = self._said_of_addresses.take(reason, peer)
        if said:
            extra: dict[str, object] = {"reason": reason, "peer": peer}
            if credential is not None:
                extra["sender"] = credential.text()[:MAX_DETAIL_CHARS]
            self._log.warning(
                "%s refused %s: %s", self._what, peer or "a client", detail[:MAX_DETAIL_CHARS], extra=extra
            )
            return
        self._unsaid[reason] += 1
        if peer in self._unsaid_from or len(self._unsaid_from) < MAX_ADDRESSES_COUNTED:
            self._unsaid_from[peer] += 1

    def end_window(self) -> None:
        """Log the summary of the refusals not logged one by one, and start afresh (also at stop)."""
        if self._window is not None:
            self._window.cancel()
            self._window = None
        if self._unsaid:
            most = self._unsaid_from.most_common(MAX_ADDRESSES_NAMED)
            self._log.warning(
                "%s refused %d more in the last %g s, not logged one by one (the first few of each address"
                " and sender were); most from %s",
                self._what,
                sum(self._unsaid.values()),
                self._window_seconds,
                ", ".join(f"{peer or 'a client'} ({count})" for peer, count in most),
                extra={
                    "by_reason": dict(sorted(self._unsaid.items())),
                    "addresses": len(self._unsaid_from),
                    "most_from": dict(most),
                },
            )
        self._said_of_addresses.clear()
        self._said_of_senders.clear()
        self._unsaid.clear()
        self._unsaid_from.clear()


# Who a budget's slots are counted by: an address, or a sender.
Who = TypeVar("Who", bound=Hashable)


class _SaidBudget(Generic[Who]):
    """The refusals logged whole in a window, of one kind of client (addresses, or senders with a
    credential): the first of each reason from each, at most ``per_client`` from one and
    ``per_window`` from all."""

    def __init__(self, per_window: int, per_client: int) -> None:
        self._per_window = per_window
        self._per_client = per_client
        self._said: set[tuple[str, Who]] = set()
        self._by_client: collections.Counter[Who] = collections.Counter()

    def take(self, reason: str, client: Who) -> bool:
        """Whether this refusal may be logged whole (and if so, its slot is taken)."""
        key = (reason, client)
        if (
            key in self._said
            or len(self._said) >= self._per_window
            or self._by_client[client] >= self._per_client
        ):
            return False
        self._said.add(key)
        self._by_client[client] += 1
        return True

    def clear(self) -> None:
        self._said.clear()
        self._by_client.clear()
