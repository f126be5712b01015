"""Did the responder do what a scenario expects? Judged from its audit trail (``GET /v1/audit``):
the alert for each expected rule reached it carrying the run's marker, it was verified against the
live pod (or refused, for a forgery), the decision and action outcome are the expected ones, and
on-call got a Slack message. The control expects nothing at all for its marker.

:func:`judge` is pure (entries in, verdict out); :func:`poll` asks a running responder until every
expectation holds or the time is up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from responder.alert import parse_time_ns
from responder.audit import DONE_STATUSES as ISOLATED
from responder.audit import AuditEntry
from responder.audit import incident_outcome_text as _outcome_text
from responder.client import ResponderClient
from simulators.scenario import Expect, Outcome, Scenario, marker_id

Entry = Mapping[str, Any]


@dataclass(frozen=True)
class Expectation:
    name: str  # the scenario (or the demo's forged case)
    run_marker: str  # what the audit trail's run_id filter looks for
    rules: tuple[str, ...]
    outcome: Outcome
    slack: bool
    leaky_policies: tuple[str, ...] = ()

    @classmethod
    def of(cls, scenario: Scenario, run_id: str, expect: Expect, *, name: str | None = None) -> Expectation:
        label = name or scenario.name
        return cls(
            label,
            marker_id(run_id, label),
            (scenario.rule,) if scenario.rule is not None else (),
            expect.outcome,
            expect.slack,
            expect.leaky_policies,
        )

    @property
    def silent(self) -> bool:
        return self.outcome is Outcome.SILENT


@dataclass(frozen=True)
class Verdict:
    expectation: Expectation
    passed: bool
    reason: str
    # False while the failure could still turn into a pass (alert not in yet, Slack retrying).
    settled: bool = True
    rule: str = "-"
    verified: str = "-"
    decision: str = "-"
    outcome: str = "-"
    slack: str = "-"
    latency_ms: float | None = None
    also_fired: tuple[str, ...] = ()
    entries: tuple[Entry, ...] = field(default=(), repr=False)

    @property
    def incident(self) -> Mapping[str, Any] | None:
        return _main_entry(self.entries, self.rule).get("incident") if self.entries else None


class _Miss(Exception):
    def __init__(self, reason: str, *, settled: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.settled = settled


def _main_entry(entries: Sequence[Entry], rule: str) -> Entry:
    """The entry that opened the incident for ``rule`` (else any decided one, else any)."""
    of_rule = [e for e in entries if e.get("rule") == rule] or list(entries)
    for wanted in (("opened",), ("duplicate",)):
        for entry in of_rule:
            if entry.get("outcome") in wanted and entry.get("incident"):
                return entry
    return of_rule[0] if of_rule else {}


def _decision_text(decision: Mapping[str, Any]) -> str:
    if not decision:
        return "-"
    actions = ", ".join(decision.get("actions") or []) or "nothing"
    text = f"{decision.get('policy', '?')}: {actions}"
    withheld = decision.get("withheld") or []
    if withheld:
        text += " (withheld: " + "; ".join(withheld) + ")"
    return text


def _action(incident: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    return next((a for a in incident.get("actions") or [] if a.get("action") == name), None)


def _slack_text(incident: Mapping[str, Any]) -> str:
    sent = [n for n in incident.get("notifications") or [] if n.get("kind") == "incident"]
    if not sent:
        return "none"
    note = sent[0]
    if note.get("state") == "sent":
        return f"sent to {note.get('slack_channel') or note.get('channel') or '?'}"
    return f"{note.get('state')}" + (f" ({note.get('last_error')})" if note.get("last_error") else "")


def _latency_ms(entry: Entry, incident: Mapping[str, Any]) -> float | None:
    done = [
        a.get("finished_ns")
        for a in incident.get("actions") or []
        # A block that found its address kept out already did nothing to time.
        if a.get("status") in ISOLATED and a.get("finished_ns") and not a.get("kept_out")
    ]
    alert_time = (entry.get("alert") or {}).get("time")
    if not done or not isinstance(alert_time, str):
        return None
    try:
        return round((int(min(done)) - parse_time_ns(alert_time)) / 1e6, 1)
    except ValueError:
        return None


def _complete(incident: Mapping[str, Any]) -> bool:
    """Decided, and every isolating action decided on has its outcome recorded."""
    decision = incident.get("decision")
    if not decision:
        return False
    wanted = {a for a in decision.get("actions") or [] if a in ("quarantine", "annotate")}
    recorded = {a.get("action") for a in incident.get("actions") or []}
    return wanted <= recorded


# The outcomes that one action's status names: the action, whose status must be the outcome.
_ACTION_OF = {Outcome.ANNOTATED: "annotate", Outcome.BLOCKED: "block_destination"}


def _check_outcome(expectation: Expectation, incident: Mapping[str, Any]) -> None:
    verification = incident.get("verification") or {}
    status = verification.get("status", "unknown")
    decision = incident.get("decision") or {}
    outcome = expectation.outcome
    if outcome is Outcome.ANY:
        return
    if outcome is Outcome.UNVERIFIED:
        if status != "unverified":
            raise _Miss(
                f"expected the alert to be refused as unverified, but verification said {status}",
                settled=True,
            )
        done = [a for a in incident.get("actions") or [] if a.get("status") in ISOLATED]
        if done:
            raise _Miss(f"an unverified alert was acted on: {_outcome_text(incident)}", settled=True)
        return
    if status != "verified":
        reason = verification.get("reason") or ""
        raise _Miss(
            f"alert not verified against the live pod ({status}{': ' + reason if reason else ''})",
            settled=True,
        )
    if outcome is Outcome.DRY_RUN:
        _check_dry_run(incident, decision)
        return
    if outcome in (Outcome.QUARANTINED, Outcome.LEAKY):
        action = _action(incident, "quarantine")
        if action is None:
            raise _Miss(f"no quarantine: decision was {_decision_text(decision)}", settled=True)
        got = action.get("status")
        if got == "dry_run":
            raise _Miss(
                f"expected {outcome.value}, but {_dry_run_text(decision)}: nothing was changed", settled=True
            )
        if got == outcome.value:
            missing = set(expectation.leaky_policies) - set(action.get("leaky_policies") or [])
            if missing:
                raise _Miss(
                    f"leaky, but not reported as allowed by {', '.join(sorted(missing))}", settled=True
                )
            return
        if got == "leaky":
            policies = ", ".join(action.get("leaky_policies") or ["?"])
            raise _Miss(f"quarantine is LEAKY: still allowed by {policies}", settled=True)
        detail = f": {action.get('detail')}" if action.get("detail") else ""
        raise _Miss(f"expected {outcome.value}, quarantine ended {got}{detail}", settled=True)
    if outcome in _ACTION_OF:
        name = _ACTION_OF[outcome]
        action = _action(incident, name)
        if action is None or action.get("status") != outcome.value:
            got = action.get("status") if action else f"no {name} action"
            detail = f": {action.get('detail')}" if action and action.get("detail") else ""
            raise _Miss(
                f"expected {outcome.value}, got {got}{detail} (decision {_decision_text(decision)})",
                settled=True,
            )
        if outcome is Outcome.BLOCKED:
            _check_block_made(action)
        return
    # NOTIFIED: on-call is told and the pod is left alone.
    isolated = [a for a in incident.get("actions") or [] if a.get("status") in ISOLATED]
    if isolated:
        raise _Miss(f"expected notify only, but the pod was {_outcome_text(incident)}", settled=True)
    if "notify" not in (decision.get("actions") or []):
        raise _Miss(f"expected a notification, decision was {_decision_text(decision)}", settled=True)


def _check_block_made(action: Mapping[str, Any]) -> None:
    """A block status says only that the address is out of reach: blocked means the pod's own
    block policy was made and the pod labelled into it (the status then says it was read back and
    proven), not that a quarantine or other policies kept the address out already."""
    address = action.get("address", "?")
    kept_out = action.get("kept_out")
    if kept_out:
        by = ", ".join(action.get("kept_out_by") or []) or "?"
        raise _Miss(
            f"expected blocked, but no block was made: {address} was out of reach already, kept out by"
            f" {kept_out} ({by}); run the scenario on a pod that is neither quarantined nor restricted",
            settled=True,
        )
    if action.get("labelled") is not True or not action.get("network_policy"):
        raise _Miss(
            f"expected blocked, but the audit trail shows no block policy the pod was labelled into"
            f" for {address} (a responder older than this verify?)",
            settled=True,
        )


def _dry_run_text(decision: Mapping[str, Any]) -> str:
    if decision.get("dry_run_by") == "policy":
        return f"policy {decision.get('policy', '?')} is in dry-run"
    return "guardrails.dry_run is on"


def _check_dry_run(incident: Mapping[str, Any], decision: Mapping[str, Any]) -> None:
    """A policy on trial (or the global dry-run): an action predicted, none done."""
    done = [a for a in incident.get("actions") or [] if a.get("status") in ISOLATED]
    if done:
        raise _Miss(f"expected a dry-run, but the pod was {_outcome_text(incident)}", settled=True)
    if not any(a.get("status") == "dry_run" for a in incident.get("actions") or []):
        raise _Miss(f"expected a dry-run, decision was {_decision_text(decision)}", settled=True)


def _check_slack(incident: Mapping[str, Any]) -> None:
    notes = [n for n in incident.get("notifications") or [] if n.get("kind") == "incident"]
    if not notes:
        decision = incident.get("decision") or {}
        if decision and not decision.get("notify", True):
            raise _Miss(
                "no Slack message: the decision did not notify (priority below slack.min_priority?)",
                settled=True,
            )
        raise _Miss("no Slack message recorded (is Slack configured in the responder?)", settled=False)
    note = notes[0]
    state = note.get("state")
    if state == "sent":
        return
    error = f": {note.get('last_error')}" if note.get("last_error") else ""
    if state == "failed":
        raise _Miss(f"Slack message failed after {note.get('attempts', '?')} attempt(s){error}", settled=True)
    raise _Miss(
        f"Slack message not sent yet ({state}, {note.get('attempts', 0)} attempt(s){error})", settled=False
    )


def judge(expectation: Expectation, entries: Sequence[Entry]) -> Verdict:
    """The verdict for one expectation from the audit entries that mention its marker."""
    if expectation.silent:
        if entries:
            rules = ", ".join(sorted({str(e.get("rule")) for e in entries}))
            reason = f"expected silence, but {len(entries)} alert(s) mention this run: {rules}"
            return Verdict(expectation, False, reason, entries=tuple(entries))
        return Verdict(expectation, True, "nothing fired", rule="(none)", outcome="silent", slack="none")
    seen = {str(e.get("rule")) for e in entries}
    also = tuple(sorted(seen - set(expectation.rules)))
    first = expectation.rules[0]
    summary: dict[str, Any] = {"rule": first, "also_fired": also, "entries": tuple(entries)}
    try:
        for rule in expectation.rules:
            of_rule = [e for e in entries if e.get("rule") == rule]
            if not of_rule:
                instead = f"; fired instead: {', '.join(also)}" if also else ""
                raise _Miss(f"no alert for rule {rule!r} with this run's marker{instead}", settled=False)
            entry = _main_entry(of_rule, rule)
            incident = entry.get("incident")
            in_flight = any(e.get("outcome") in (None, "pending") for e in of_rule)
            if in_flight or not incident or not _complete(incident):
                raise _Miss(f"alert for {rule!r} received, not decided yet", settled=False)
            if rule == first:
                summary.update(
                    verified=(incident.get("verification") or {}).get("status", "-"),
                    decision=_decision_text(incident.get("decision") or {}),
                    outcome=_outcome_text(incident),
                    slack=_slack_text(incident),
                    latency_ms=_latency_ms(entry, incident),
                )
            _check_outcome(expectation, incident)
            if expectation.slack:
                _check_slack(incident)
    except _Miss as miss:
        return Verdict(expectation, False, miss.reason, settled=miss.settled, **summary)
    reason = f"{expectation.outcome.value}" + (f" (also fired: {', '.join(also)})" if also else "")
    return Verdict(expectation, True, reason, **summary)


async def poll(
    client: ResponderClient,
    expectations: Sequence[Expectation],
    *,
    timeout: float,
    interval: float = 1.0,
    settle: float = 0.0,
    since: str | None = None,
    # The audit API's maximum: a run filter scans up to 20 x limit alerts since ``since``.
    limit: int = 5000,
    clock: Callable[[], float] = time.monotonic,
) -> list[Verdict]:
    """Ask the audit trail until every expectation holds (silence: for at least ``settle`` seconds)
    or ``timeout`` passes; the last verdicts say why not. The wait between two asks is ``interval``,
    or what is left of ``timeout`` if that is less (a last ask at the deadline)."""
    start = clock()
    deadline = start + timeout
    verdicts: dict[str, Verdict] = {}
    while True:
        for expectation in expectations:
            previous = verdicts.get(expectation.name)
            if previous is not None and not expectation.silent and (previous.passed or previous.settled):
                continue
            entries = await _audit(client, expectation.run_marker, since, limit)
            verdicts[expectation.name] = judge(expectation, entries)
        waiting = [
            v for v in verdicts.values() if not v.expectation.silent and not v.passed and not v.settled
        ]
        now = clock()
        silence_pending = any(e.silent for e in expectations) and now - start < settle
        if (not waiting and not silence_pending) or now >= deadline:
            break
        await asyncio.sleep(min(interval, deadline - now))
    return [verdicts[e.name] for e in expectations]


async def _audit(client: ResponderClient, run_marker: str, since: str | None, limit: int) -> list[AuditEntry]:
    # The client reports a responder it cannot reach, or whose answer is not an audit trail of the
    # shape this version reads, as a UserError: entries here have that shape.
    return await client.audit(run_id=run_marker, since=since or "", limit=str(limit))


def format_verdicts(verdicts: Sequence[Verdict]) -> str:
    lines = []
    for verdict in verdicts:
        mark = "PASS" if verdict.passed else "FAIL"
        lines.append(
            f"{mark}  {verdict.expectation.name}  [{verdict.expectation.outcome.value}]  {verdict.reason}"
        )
        if verdict.rule not in ("-", "(none)"):
            latency = f"{verdict.latency_ms:.1f} ms" if verdict.latency_ms is not None else "-"
            lines.append(
                f"      rule: {verdict.rule}; verified: {verdict.verified}; decision: {verdict.decision}; "
                f"outcome: {verdict.outcome}; Slack: {verdict.slack}; alert->action: {latency}"
            )
    return "\n".join(lines)
