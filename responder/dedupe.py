"""Incidents in memory: the same rule on the same pod (same container, same node) within the
window is one incident with a count, so a burst costs one lookup, one action, one Slack post."""

from __future__ import annotations

import re
import sys
from collections import OrderedDict
from dataclasses import dataclass, field

from responder.actions.pod_records import ReleaseRecord
from responder.alert import Alert
from responder.clock import deadline_passed, within_window
from responder.incident import IncidentKey, IncidentReport
from responder.policy import Reopened

DEFAULT_MAX_OPEN = 100_000
DEFAULT_MAX_OPEN_BYTES = 64 * 1024**2
# What an open incident holds beside its opening alert's bytes (its state, its report, the pod as
# read): measured ~10.6 KB for an incident of a 1 KB alert.
INCIDENT_OVERHEAD_BYTES = 10 * 1024
# A repeat after this long re-decides an incident whose isolation did not happen for a passing
# reason (the longest an incident's reopen_after_ns is set ahead).
REDECIDE_AFTER_SECONDS = 10.0


# An incident's id, as incident_id_for makes it (and Slack and the audit trail show it).
INCIDENT_ID = re.compile(r"inc-[0-9a-f]{20}")


def incident_id_for(first_alert: Alert) -> str:
    """Deterministic: re-processing the opening alert after a crash re-opens the same incident."""
    return "inc-" + first_alert.alert_id[:20]


@dataclass(slots=True)
class IncidentState:
    incident_id: str
    key: IncidentKey
    first_alert: Alert
    opened_ns: int
    last_seen_ns: int
    count: int = 1
    # Set once the opening alert is decided and acted on.
    report: IncidentReport | None = None
    # A repeat notification is queued and not yet sent.
    repeat_pending: bool = False
    last_repeat_ns: int = 0
    # Repeat counts sent to Slack (an incoming webhook waits longer after each: routing).
    repeats_sent: int = 0
    # Read back from the journal, or opened again by its opening alert resumed after a restart:
    # opening it resets the action records an interrupted run may have left.
    restored: bool = field(default=False)
    # From this time on, a repeat opens a new incident (decided afresh) instead of folding in:
    # set when the decision could not act for a passing reason (API outage, breaker, failure)
    # or when the quarantine it made is found lifted (released, or the label removed).
    reopen_after_ns: int | None = None
    # When to look again whether the quarantine this incident made still holds.
    recheck_after_ns: int | None = None
    # What the recheck found no longer holding of what this incident put on the pod (then
    # reopen_after_ns is set): the incident the next alert opens says it reopens this one.
    lapsed: Reopened | None = None
    # This incident was opened by the first alert after the lapse of an earlier one's (its lapsed).
    reopens: Reopened | None = None
    # A person released the pod since this incident acted on it (`serving-guard release`): its
    # repeats fold in without acting, and the label gone is no lapse.
    released: ReleaseRecord | None = None
    # Addresses a repeat named that a follow-up block_destination took on, and from when each may
    # be tried again (a failed block, after a while; else never within this incident).
    blocking: dict[str, int] = field(default_factory=dict)
    # Repeats folded in before the incident was decided, by the address they name (bounded): once
    # it is decided to block, the ones its own block did not cover are blocked too.
    blocks_waiting: dict[str, Alert] = field(default_factory=dict)
    # About the memory it holds (incident_bytes), counted against the table's bound.
    weight: int = 0

    def folds(self, received_ns: int, window_ns: int) -> bool:
        """Whether an alert received now is a repeat of this incident."""
        if self.reopen_after_ns is not None and deadline_passed(
            self.reopen_after_ns, received_ns, int(REDECIDE_AFTER_SECONDS * 1e9)
        ):
            return False
        return within_window(received_ns, self.opened_ns, window_ns)


def incident_bytes(first_alert: Alert) -> int:
    """About the memory an open incident holds: its opening alert, and what it keeps beside it."""
    return alert_bytes(first_alert) + INCIDENT_OVERHEAD_BYTES


def alert_bytes(alert: Alert) -> int:
    """About the memory an alert's text holds: Python keeps a string at 1, 2 or 4 bytes a character,
    by its widest (one emoji makes a long output four times its length), so each value is counted
    as sys.getsizeof counts it, not by its length."""
    fields = sum(sys.getsizeof(name) + sys.getsizeof(value) for name, value in alert.fields.items())
    return sys.getsizeof(alert.rule) + sys.getsizeof(alert.output) + fields


class IncidentTable:
    """The open incidents, bounded by count and by bytes: past either, the one longest without a
    repeat is forgotten (``evicted`` counts them), so a flood of large alerts, each its own incident
    (a forger's made-up ids), holds no more memory than the bound, also when a restart restores
    them, and an attack still repeating keeps its incident."""

    def __init__(
        self, window_seconds: float, max_open: int = DEFAULT_MAX_OPEN, max_bytes: int = DEFAULT_MAX_OPEN_BYTES
    ) -> None:
        self._window_ns = int(window_seconds * 1e9)
        self._max_open = max_open
        self._max_bytes = max_bytes
        self._bytes = 0
        self.evicted = 0
        self._evicted_untold = 0
        self._open: OrderedDict[IncidentKey, IncidentState] = OrderedDict()
        self._by_id: dict[str, IncidentState] = {}

    @property
    def held_bytes(self) -> int:
        return self._bytes

    def reweigh(self, state: IncidentState, more_bytes: int) -> None:
        """``state`` holds ``more_bytes`` more (less, when negative): alerts it keeps for later
        (blocks_waiting). Counted while it is in the table, and given back with it."""
        state.weight += more_bytes
        if self._by_id.get(state.incident_id) is state and self._open.get(state.key) is state:
            self._bytes += more_bytes

    def take_evicted(self) -> int:
        """The incidents forgotten at the bound since the last call (for a counter)."""
        evicted, self._evicted_untold = self._evicted_untold, 0
        return evicted

    def __len__(self) -> int:
        return len(self._open)

    def observe(self, alert: Alert, received_ns: int) -> tuple[IncidentState, bool]:
        """The incident this alert belongs to, and whether the alert opened it."""
        key = IncidentKey.of(alert)
        state = self._open.get(key)
        if state is not None and state.incident_id == incident_id_for(alert):
            return state, True  # the opener itself, resumed after a crash: open it again, count unchanged
        if state is not None and state.folds(received_ns, self._window_ns):
            state.count += 1
            state.last_seen_ns = max(state.last_seen_ns, received_ns)
            self._open.move_to_end(key)  # in use: a flood of new ones forgets it last
            return state, False
        state = IncidentState(
            incident_id=incident_id_for(alert),
            key=key,
            first_alert=alert,
            opened_ns=received_ns,
            last_seen_ns=received_ns,
            reopens=state.lapsed if state is not None else None,
        )
        self._put(state)
        return state, True

    def _put(self, state: IncidentState) -> None:
        previous = self._open.pop(state.key, None)
        if previous is not None:
            self._forget(previous)
        state.weight = incident_bytes(state.first_alert) + sum(
            map(alert_bytes, state.blocks_waiting.values())
        )
        self._open[state.key] = state
        self._by_id[state.incident_id] = state
        self._bytes += state.weight
        while len(self._open) > 1 and (len(self._open) > self._max_open or self._bytes > self._max_bytes):
            # The oldest incident goes; a later repeat of it simply opens a new one.
            _, evicted = self._open.popitem(last=False)
            self._forget(evicted)
            self.evicted += 1
            self._evicted_untold += 1

    def _forget(self, state: IncidentState) -> None:
        """Take out of the id index and the bytes an incident already taken out of ``_open``."""
        if self._by_id.get(state.incident_id) is state:
            del self._by_id[state.incident_id]
        self._bytes -= state.weight

    def open_repeat(self, alert: Alert, received_ns: int) -> IncidentState | None:
        """The open incident this alert repeats, counted in; None when the alert opens one.

        Incidents enter this table only once their opening alert is committed to the journal
        (the pipeline observes an alert after journaling it), so a repeat found here may be
        journaled directly at its final outcome."""
        state = self._open.get(IncidentKey.of(alert))
        if (
            state is None
            or state.incident_id == incident_id_for(alert)
            or not state.folds(received_ns, self._window_ns)
        ):
            return None
        state.count += 1
        state.last_seen_ns = max(state.last_seen_ns, received_ns)
        self._open.move_to_end(state.key)  # in use: a flood of new ones forgets it last
        return state

    def resume(self, journaled: IncidentState) -> IncidentState:
        """The state to open again an incident whose opening alert is resumed after a restart (the
        journal holds the incident, or repeats naming it): the table's, when it has it; else
        ``journaled``, which becomes the live incident for its key only if none opened later holds
        the key. (One may: a repeat that came after this incident's writes were refused opened it,
        and repeats keep folding into it.)"""
        current = self._by_id.get(journaled.incident_id)
        if current is not None:
            return current
        live = self._open.get(journaled.key)
        if live is None or live.opened_ns < journaled.opened_ns:
            self._put(journaled)
        return journaled

    def restore(self, state: IncidentState) -> None:
        current = self._open.get(state.key)
        if current is None or current.opened_ns <= state.opened_ns:
            self._put(state)

    def by_id(self, incident_id: str) -> IncidentState | None:
        return self._by_id.get(incident_id)

    def rechecks_due(self, now_ns: int, limit: int, longest_wait_ns: int) -> list[IncidentState]:
        """Up to ``limit`` open incidents whose quarantine or block is due to be checked again
        (recheck_after_ns, set at most ``longest_wait_ns`` ahead, passed), the longest due first."""
        due = [
            state
            for state in self._open.values()
            if state.recheck_after_ns is not None
            and deadline_passed(state.recheck_after_ns, now_ns, longest_wait_ns)
        ]
        return sorted(due, key=lambda state: state.recheck_after_ns or 0)[:limit]

    def open_pods(self) -> set[tuple[str, str]]:
        """The pods (namespace, name) the open incidents are about."""
        return {(state.key.namespace, state.key.pod) for state in self._open.values()}

    def holds(self, state: IncidentState) -> bool:
        """Whether ``state`` is still its key's open incident (not forgotten, nor followed by a new one)."""
        return self._open.get(state.key) is state

    def expire(self, now_ns: int) -> int:
        """Forget incidents whose window has passed (memory stays bounded by traffic, not time)."""
        stale = [
            key
            for key, state in self._open.items()
            if not within_window(now_ns, state.opened_ns, self._window_ns)
        ]
        for key in stale:
            self._forget(self._open.pop(key))
        return len(stale)
