"""Evaluate the rules on a recorded capture with the real libsinsp (sysdig), and attribute every alert
to the scenario action it belongs to.

Batching: one sysdig pass per capture evaluates all rules at once (their conditions joined with
'or'). An event is attributed to a rule by its event type when only one rule can match that type
(event types come from Falco's evttype resolution of each condition); where several rules can,
one more pass per candidate rule, limited to those event numbers, decides. A final consistency
check makes sure every event of the joined pass was claimed by at least one rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from responder.rulespack.condition import Node
from responder.rulespack.evttypes import EventTypes, event_types
from responder.rulespack.examples import CaptureAction
from responder.rulespack.sysdig import Sysdig, SysdigError

EVENT_FIELDS = [
    "evt.num",
    "evt.type",
    "proc.pid",
    "proc.ppid",
    "proc.name",
    "proc.exepath",
    "proc.cmdline",
    "proc.pcmdline",
    "fd.name",
]
_LINEAGE_FILTER = "evt.type in (execve, execveat) and evt.rawres = 0"
_MAX_ANCESTORS = 32


@dataclass(frozen=True)
class PreparedRule:
    """A rule ready for sysdig: its translated condition and the event types it can match."""

    name: str
    condition: str
    types: EventTypes

    @classmethod
    def from_tree(cls, name: str, condition: str, tree: Node) -> PreparedRule:
        return cls(name, condition, event_types(tree))


@dataclass(frozen=True)
class Alert:
    rule: str
    evt_num: int
    evt_type: str
    pid: int | None
    ppid: int | None
    proc_name: str | None
    exepath: str | None
    cmdline: str | None
    pcmdline: str | None
    fd_name: str | None
    action: str | None = None  # id of the capture action it belongs to

    def describe(self) -> str:
        parts = [f"#{self.evt_num} {self.evt_type}", f"proc={self.proc_name}", f"cmdline={self.cmdline!r}"]
        if self.fd_name:
            parts.append(f"fd={self.fd_name}")
        return " ".join(parts)


@dataclass(frozen=True)
class CaptureRun:
    capture: str
    alerts: tuple[Alert, ...]
    sysdig_runs: int
    events: int | None = None  # the events sysdig read from it (None: not counted)


def _number(value: Any) -> int | None:
    return value if isinstance(value, int) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _alert(rule: str, event: dict[str, Any]) -> Alert:
    return Alert(
        rule=rule,
        evt_num=int(event["evt.num"]),
        evt_type=str(event.get("evt.type")),
        pid=_number(event.get("proc.pid")),
        ppid=_number(event.get("proc.ppid")),
        proc_name=_text(event.get("proc.name")),
        exepath=_text(event.get("proc.exepath")),
        cmdline=_text(event.get("proc.cmdline")),
        pcmdline=_text(event.get("proc.pcmdline")),
        fd_name=_text(event.get("fd.name")),
    )


def _matching_rules(sysdig: Sysdig, capture: str, rules: Sequence[PreparedRule]) -> tuple[list[Alert], int]:
    if not rules:
        return [], 0  # an empty filter would match every event
    combined = " or ".join(f"({rule.condition})" for rule in rules)
    events = sysdig.read_capture(capture, combined, EVENT_FIELDS)
    runs = 1
    alerts: list[Alert] = []
    ambiguous: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        candidates = [rule for rule in rules if event.get("evt.type") in rule.types]
        if not candidates:
            raise SysdigError(
                f"{capture}: event #{event.get('evt.num')} ({event.get('evt.type')}) matched the rules but "
                "no rule can match its event type: the event-type resolution is wrong"
            )
        if len(candidates) == 1:
            alerts.append(_alert(candidates[0].name, event))
            continue
        for rule in candidates:
            ambiguous.setdefault(rule.name, []).append(event)
    claimed: set[int] = set()
    for rule in rules:
        candidates_events = ambiguous.get(rule.name)
        if not candidates_events:
            continue
        numbers = ", ".join(str(event["evt.num"]) for event in candidates_events)
        matched = sysdig.read_capture(capture, f"evt.num in ({numbers}) and ({rule.condition})", ["evt.num"])
        runs += 1
        matched_numbers = {int(event["evt.num"]) for event in matched}
        for event in candidates_events:
            if int(event["evt.num"]) in matched_numbers:
                alerts.append(_alert(rule.name, event))
                claimed.add(int(event["evt.num"]))
    unclaimed = {int(e["evt.num"]) for events_of in ambiguous.values() for e in events_of} - claimed
    if unclaimed:
        raise SysdigError(
            f"{capture}: events {sorted(unclaimed)} matched the joined rules but no single rule: "
            "batched evaluation is inconsistent"
        )
    return sorted(alerts, key=lambda a: (a.evt_num, a.rule)), runs


def _lineage(sysdig: Sysdig, capture: str) -> dict[int, tuple[int | None, str | None]]:
    """pid -> (ppid, cmdline) of every program started in the capture."""
    events = sysdig.read_capture(capture, _LINEAGE_FILTER, ["proc.pid", "proc.ppid", "proc.cmdline"])
    table: dict[int, tuple[int | None, str | None]] = {}
    for event in events:
        pid = _number(event.get("proc.pid"))
        if pid is not None:
            table[pid] = (_number(event.get("proc.ppid")), _text(event.get("proc.cmdline")))
    return table


def _attribute(
    alert: Alert, actions: Sequence[CaptureAction], lineage: dict[int, tuple[int | None, str | None]] | None
) -> str | None:
    """The action whose marker or command line is nearest in the alert's process chain."""
    chain: list[str | None] = [alert.cmdline, alert.pcmdline]
    if lineage is not None:
        parent = alert.ppid
        for _ in range(_MAX_ANCESTORS):
            if parent is None or parent not in lineage:
                break
            grandparent, cmdline = lineage[parent]
            chain.append(cmdline)
            parent = grandparent
    for cmdline in chain:
        for action in actions:
            if action.matches(cmdline):
                return action.id
    return None


def evaluate_capture(
    sysdig: Sysdig, capture: str, rules: Sequence[PreparedRule], actions: Sequence[CaptureAction]
) -> CaptureRun:
    # Counted first: a truncated capture reads as 0 events with exit 0, and judges as "no alert".
    events = sysdig.count_events(capture)
    alerts, runs = _matching_rules(sysdig, capture, rules)
    runs += 1
    attributed = []
    lineage: dict[int, tuple[int | None, str | None]] | None = None
    for alert in alerts:
        action = _attribute(alert, actions, None)
        if action is None and actions:
            if lineage is None:
                lineage = _lineage(sysdig, capture)
                runs += 1
            action = _attribute(alert, actions, lineage)
        attributed.append(replace(alert, action=action))
    return CaptureRun(Path(capture).name, tuple(attributed), runs, events)
