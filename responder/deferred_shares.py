"""How much of the journal each sender's deferred alerts take (journal.max_deferred_share).

An alert that finds no room in the pipeline is journaled deferred and processed, oldest first, once
there is room. Unbounded, one sender (a stolen credential, a runaway node) sending unique alerts
faster than they are decided would fill the journal with its backlog, and then every sender is
refused (503, which Falco and Falcosidekick do not retry), and everyone else's deferred alerts wait
behind its own. Bounded per sender, the journal keeps room for the others, and the backlog any one
sender can put ahead of them is its share.

A sender is its journal record (Sender.record: its address, proof, certificate names, token line):
nodes sharing one certificate are told apart by their address. Behind a service mesh or a NAT that
gives every sender one address, they share one share.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from responder.sender import Sender


def sender_key(sender: Sender | None) -> str:
    """A sender as the journal's sender column holds it ("" for an input that names none)."""
    return sender.record() if sender is not None else ""


@dataclass
class DeferredShares:
    limit_bytes: int
    _taken: dict[str, int] = field(default_factory=dict)

    def refusal(self, key: str, size: int) -> str | None:
        """Why a deferred alert of ``size`` bytes from sender ``key`` is refused, or None."""
        taken = self._taken.get(key, 0)
        if taken + size <= self.limit_bytes or taken == 0:  # one alert alone always fits
            return None
        return (
            f"this sender's deferred alerts take {taken} bytes of the journal, its share"
            f" (journal.max_deferred_share: {self.limit_bytes} bytes); they are processed as room frees"
        )

    def add(self, key: str, size: int) -> None:
        self._taken[key] = self._taken.get(key, 0) + size

    def remove(self, key: str, size: int) -> None:
        left = self._taken.get(key, 0) - size
        if left > 0:
            self._taken[key] = left
        else:
            self._taken.pop(key, None)

    def load(self, taken: Mapping[str, int]) -> None:
        """What the journal holds deferred, by sender (at start: a backlog from the last run)."""
        for key, size in taken.items():
            self.add(key, size)

    def taken(self, key: str) -> int:
        return self._taken.get(key, 0)
