"""Did the responder do what a scenario expects? Judged from its audit trail (``GET /v1/audit``):
the alert for each expected rule reached it carrying the run's marker (one for every step that ran,
when the steps are known), the incident is this run's (opened by one of its alerts, or acted on for
them: never an earlier run's that they folded into), it was verified against the live pod (or
refused, for a forgery), the decision and action outcome are the expected ones, and on-call got a
Slack message. The control expects nothing at all for its marker, and its silence counts only when
a positive scenario of the same run passed on the same pod (else Falco may simply be down).

:func:`judge` is pure (entries in, verdict out); :func:`poll` asks a running responder (or reads its
journal file: :class:`JournalTrail`) until every expectation holds or the time is up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from responder.actions.outcome import RESPONDER_ACTOR
from responder.alert import format_time_ns, parse_time_ns
from responder.audit.query import audit_query_from
from responder.audit.text import DONE_STATUSES as ISOLATED
from responder.audit.text import incident_outcome_text as _outcome_text
from responder.cluster.verify import UNREACHED
from responder.commands.audit import read_journal_trail
from responder.errors import UserError
from responder.policy import DRY_RUN_BY_DRILL, ISOLATING
from responder.sender import sender_text
from responder.wording import first_few
from simulators.scenario import (
    Expect,
    Outcome,
    Scenario,
    alert_mentions,
    alert_steps,
    marker_id,
    marker_pattern,
)

Entry = Mapping[str, Any]


@dataclass(frozen=True)
class Expectation:
    name: str  # the scenario (or the demo's forged case)
    run_marker: str  # what the audit trail's run_id filter looks for: <run id>.<name>
    rules: tuple[str, ...]
    outcome: Outcome
    slack: bool
    leaky_policies: tuple[str, ...] = ()
    run_id: str = ""
    # The steps (numbered from 1, as their markers sg-run=<run id>.<name>.<n>) that each need an
    # alert of the rule: those simulate ran, or the alerts replay sent. None: not known, any alert
    # of the rule will do.
    steps: tuple[int, ...] | None = None
    # NAMESPACE/NAME of the pod the run happened in, when known: only its alerts count.
    pod: str | None = None

    @classmethod
    def of(
        cls,
        scenario: Scenario,
        run_id: str,
        expect: Expect,
        *,
        name: str | None = None,
        steps: Sequence[int] | None = None,
        pod: str | None = None,
    ) -> Expectation:
        label = name or scenario.name
        return cls(
            label,
            marker_id(run_id, label),
            (scenario.rule,) if scenario.rule is not None else (),
            expect.outcome,
            expect.slack,
            expect.leaky_policies,
            run_id=run_id,
            steps=tuple(sorted(set(steps))) if steps is not None else None,
            pod=pod,
        )

    @property
    def silent(self) -> bool:
        return self.outcome is Outcome.SILENT

    def ours(self, entries: Sequence[Entry]) -> list[Entry]:
        """The entries whose alert carries this run's marker as a whole (``sg-run=<run id>.<name>``,
        nothing more before it nor another name after it: a responder that matches the run filter
        as a substring also answers run team-a-run1 for a-run1, or scenario shell-in-serving-pod
        for shell), and are of the pod, when it is known."""
        pattern = marker_pattern(self.run_marker)
        found = [e for e in entries if alert_mentions(e.get("alert") or {}, pattern)]
        if self.pod is not None:
            found = [e for e in found if _pod_of(e) == self.pod]
        return found


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
    # Who sent this run's alerts, as the responder authenticated them (a drill said so).
    sent_by: str = "-"
    also_fired: tuple[str, ...] = ()
    entries: tuple[Entry, ...] = field(default=(), repr=False)
    # The incident judged: this run's (for a folded one, only what was done for this run's alerts).
    judged: Mapping[str, Any] | None = field(default=None, repr=False)

    @property
    def incident(self) -> Mapping[str, Any] | None:
        if self.judged is not None:
            return self.judged
        return _main_entry(self.entries, self.rule).get("incident") if self.entries else None

    @property
    def pods(self) -> set[str]:
        """The pods (NAMESPACE/NAME) this run's alerts of the expected rules came from."""
        return {_pod_of(e) for e in self.entries if e.get("rule") in self.expectation.rules}


def _pod_of(entry: Entry) -> str:
    return f"{entry.get('namespace') or '-'}/{entry.get('pod') or '-'}"


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


# Actions of an incident that were not done for its alerts: a person's release, and a recheck's
# finding that what the incident put on the pod no longer holds.
_NOT_FOR_ALERTS = ("released", "lapsed")


# The responder decides an incident again on a repeat (REDECIDE_AFTER_SECONDS later, in a new
# incident) where its pod was not reached (UNREACHED) and its decision asked for an isolating action
# (Pipeline._plan_follow_up): the same sets, as words.
_DECIDED_AGAIN = frozenset(status.value for status in UNREACHED)
_ISOLATING = frozenset(action.value for action in ISOLATING)


def _decided_again(incident: Mapping[str, Any]) -> bool:
    if (incident.get("verification") or {}).get("status") not in _DECIDED_AGAIN:
        return False
    decision = incident.get("decision") or {}
    # "requested" since the decision said what was asked before the guardrails; "actions" before.
    asked = decision.get("requested", decision.get("actions")) or []
    return any(action in _ISOLATING for action in asked)


def _run_incident(rule: str, of_rule: Sequence[Entry]) -> tuple[Entry, Mapping[str, Any] | None]:
    """The entry and incident that are this run's for ``rule``: the first incident one of its
    alerts opened (past one the responder decides again on a repeat, when a repeat opened a later
    one); else the one they folded into (the same rule, pod, container and node within the
    dedupe window), with only what the responder did once this run's first alert was received
    (what it did before was for another run's). A folded incident in which nothing was done for
    them is no verdict on this run: a settled _Miss saying so."""
    openers = sorted(
        (e for e in of_rule if e.get("outcome") == "opened" and e.get("incident")),
        key=lambda e: int(e.get("received_ns") or 0),
    )
    if openers:
        entry = next((e for e in openers if not _decided_again(e["incident"])), openers[-1])
        return entry, entry["incident"]
    folded = [e for e in of_rule if e.get("incident")]
    if not folded:
        return of_rule[0], None
    entry = min(folded, key=lambda e: int(e.get("received_ns") or 0))
    incident: Mapping[str, Any] = entry["incident"]
    if not _complete(incident):
        return entry, incident  # still being decided: what it does may yet be for this run's alerts
    first_received = min(int(e.get("received_ns") or 0) for e in of_rule)
    for_us = [
        a
        for a in incident.get("actions") or []
        if a.get("actor") in (None, "responder")
        and a.get("status") not in _NOT_FOR_ALERTS
        and isinstance(a.get("finished_ns"), int)
        and a["finished_ns"] >= first_received
    ]
    if for_us:
        return entry, {**incident, "actions": for_us}
    opened = incident.get("opened_ns")
    when = f" at {format_time_ns(opened)}" if isinstance(opened, int) else ""
    released = [a for a in incident.get("actions") or [] if a.get("status") == "released"]
    since = ""
    if released:
        last = released[-1]
        at = last.get("finished_ns")
        by = f" by {last['actor']}" if last.get("actor") not in (None, "responder") else ""
        since = (
            f"; the pod was released since{' at ' + format_time_ns(at) if isinstance(at, int) else ''}{by},"
            " and an incident's repeats put nothing back"
        )
    raise _Miss(
        f"this run's alerts for {rule!r} folded into incident {incident.get('incident_id', '?')},"
        f" opened{when} by an alert of another run (same rule, pod, container and node within the"
        " dedupe window):"
        f" nothing was done for this run's alerts{since}; wait out the dedupe window"
        " (dedupe.window_seconds) or run the scenario on another pod",
        settled=True,
    )


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
        if _changed_by_responder(incident):
            raise _Miss(f"an unverified alert was acted on: {_outcome_text(incident)}", settled=True)
        return
    if status != "verified":
        reason = verification.get("reason") or ""
        said = f"alert not verified against the live pod ({status}{': ' + reason if reason else ''})"
        if _decided_again(incident):
            # Not a verdict yet: the scenario's next alert, 10 s on or later, is decided afresh.
            raise _Miss(said + "; the responder decides it again on the rule's next alert", settled=False)
        raise _Miss(said, settled=True)
    if outcome is Outcome.DRY_RUN:
        _check_dry_run(incident, decision)
        return
    _check_not_only_predicted(outcome, incident, decision)
    if outcome in (Outcome.QUARANTINED, Outcome.LEAKY):
        action = _action(incident, "quarantine")
        if action is None:
            raise _Miss(f"no quarantine: decision was {_decision_text(decision)}", settled=True)
        got = action.get("status")
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
    if _changed_by_responder(incident):
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
    if decision.get("dry_run_by") == DRY_RUN_BY_DRILL:
        return "the alerts are a drill (the responder's guardrails.enforce_drills is off)"
    return "guardrails.dry_run is on"


# At most this many senders are named in a verdict (a run's alerts come from one or two).
_SENDERS_SHOWN = 3


def _senders_text(entries: Sequence[Entry]) -> str:
    """Who sent ``entries``, as the responder authenticated them; a drill's said to prove no detection
    (replayed alerts; only the drill token, or ingest --drill, makes one)."""
    senders = [entry.get("sender") for entry in entries]
    names = sorted({sender_text(sender) for sender in senders})
    if not names:
        return "-"
    text = first_few(names, _SENDERS_SHOWN)
    drills = [bool(sender and sender.get("drill") is True) for sender in senders]
    if all(drills):
        return text + " (a DRILL: replayed alerts prove the responder, not detection)"
    if any(drills):
        return text + f" ({sum(drills)} of {len(drills)} a DRILL)"
    return text


# The action whose status each outcome that changes the pod is.
_ACTION_FOR = {
    Outcome.QUARANTINED: "quarantine",
    Outcome.LEAKY: "quarantine",
    Outcome.ANNOTATED: "annotate",
    Outcome.BLOCKED: "block_destination",
}


def _check_not_only_predicted(
    expectation_outcome: Outcome, incident: Mapping[str, Any], decision: Mapping[str, Any]
) -> None:
    """A real action expected, only predicted (dry-run). With the global guardrail on, every
    scenario's action is only predicted: one flag says so for them all (a policy on trial is one
    scenario's matter, and the scenario files expect it)."""
    name = _ACTION_FOR.get(expectation_outcome)
    action = _action(incident, name) if name is not None else None
    if action is None or action.get("status") != "dry_run":
        return
    reason = f"expected {expectation_outcome.value}, but {_dry_run_text(decision)}: nothing was changed"
    if decision.get("dry_run_by") == DRY_RUN_BY_DRILL:
        reason += (
            "; to verify a drill, expect its dry-run (--expect all=dry_run), or have the responder act on"
            " drills (guardrails.enforce_drills)"
        )
    elif decision.get("dry_run_by") != "policy":
        reason += "; to verify a responder in dry-run, expect it: --expect all=dry_run"
    raise _Miss(reason, settled=True)


def _changed_by_responder(incident: Mapping[str, Any]) -> bool:
    """Whether the responder itself changed the pod: what a person did by hand since (the
    prediction confirmed, a notify-only alert acted on) is theirs, not the responder's outcome
    (review-operator L2: a trial confirmed by hand failed as "expected a dry-run, but the pod was
    dry-run: ... by demo-oncall")."""
    return any(
        a.get("status") in ISOLATED and (a.get("actor") or RESPONDER_ACTOR) == RESPONDER_ACTOR
        for a in incident.get("actions") or []
    )


def _check_dry_run(incident: Mapping[str, Any], decision: Mapping[str, Any]) -> None:
    """A policy on trial (or the global dry-run): an action predicted, none done."""
    if _changed_by_responder(incident):
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
    attempts = note.get("attempts") or 0
    # A refusal (a channel the bot cannot post to), a rate limit or a Slack outage is tried again
    # without counting against slack.max_attempts: "0 attempts" would read as never tried.
    tried = (
        f"{attempts} counted attempt(s)"
        if attempts
        else "tried, and waiting to try again"
        if error
        else "not tried yet"
    )
    raise _Miss(f"Slack message not sent yet ({state}, {tried}{error})", settled=False)


def _missing_steps(expectation: Expectation, of_rule: Sequence[Entry]) -> list[int]:
    if expectation.steps is None:
        return []
    label = expectation.name
    seen: set[int] = set()
    for entry in of_rule:
        seen |= alert_steps(entry.get("alert") or {}, expectation.run_id, label)
    return [n for n in expectation.steps if n not in seen]


def judge(expectation: Expectation, entries: Sequence[Entry]) -> Verdict:
    """The verdict for one expectation from the audit entries that mention its marker."""
    entries = expectation.ours(entries)
    if expectation.silent:
        if entries:
            rules = ", ".join(sorted({str(e.get("rule")) for e in entries}))
            reason = f"expected silence, but {len(entries)} alert(s) mention this run: {rules}"
            return Verdict(expectation, False, reason, entries=tuple(entries))
        return Verdict(expectation, True, "nothing fired", rule="(none)", outcome="silent", slack="none")
    seen = {str(e.get("rule")) for e in entries}
    also = tuple(sorted(seen - set(expectation.rules)))
    first = expectation.rules[0]
    summary: dict[str, Any] = {
        "rule": first,
        "also_fired": also,
        "entries": tuple(entries),
        "sent_by": _senders_text([e for e in entries if e.get("rule") in expectation.rules]),
    }
    try:
        for rule in expectation.rules:
            of_rule = [e for e in entries if e.get("rule") == rule]
            if not of_rule:
                instead = f"; fired instead: {', '.join(also)}" if also else ""
                raise _Miss(f"no alert for rule {rule!r} with this run's marker{instead}", settled=False)
            in_flight = [e for e in of_rule if e.get("outcome") in (None, "pending", "deferred")]
            if in_flight:
                waiting = any(e.get("outcome") == "deferred" for e in in_flight)
                why = (
                    "deferred: the responder's pipeline was full, it waits for room"
                    if waiting
                    else "not decided yet"
                )
                raise _Miss(f"alert for {rule!r} received, {why}", settled=False)
            entry, incident = _run_incident(rule, of_rule)
            if not incident or not _complete(incident):
                raise _Miss(f"alert for {rule!r} received, not decided yet", settled=False)
            latency = _latency_ms(entry, incident)
            if rule == first:
                summary.update(
                    verified=(incident.get("verification") or {}).get("status", "-"),
                    decision=_decision_text(incident.get("decision") or {}),
                    outcome=_outcome_text(incident),
                    slack=_slack_text(incident),
                    latency_ms=latency,
                    judged=incident,
                )
            if latency is not None and latency < 0:
                raise _Miss(
                    f"alert->action {latency:.1f} ms: the action on incident"
                    f" {incident.get('incident_id', '?')} finished before this run's alert was made, so it"
                    " was not done for it",
                    settled=True,
                )
            _check_outcome(expectation, incident)
            if expectation.slack:
                _check_slack(incident)
            missing = _missing_steps(expectation, of_rule)
            if missing:
                raise _Miss(
                    f"no alert for step(s) {', '.join(map(str, missing))} of {len(expectation.steps or ())}"
                    f" that ran (rule {rule!r}, markers sg-run={expectation.run_marker}.<step>):"
                    " not detected, or not yet in",
                    settled=False,
                )
    except _Miss as miss:
        return Verdict(expectation, False, miss.reason, settled=miss.settled, **summary)
    reason = f"{expectation.outcome.value}" + (f" (also fired: {', '.join(also)})" if also else "")
    if expectation.steps:
        reason += f", every step alerted ({len(expectation.steps)})"
    return Verdict(expectation, True, reason, **summary)


def confirm_controls(verdicts: Sequence[Verdict]) -> list[Verdict]:
    """A control's silence proves something only if Falco was watching: a positive scenario of the
    same run passed on the same pod (the control's, when known; else the one pod the run's passing
    scenarios alerted from). Otherwise the silent control fails, saying so."""
    confirmed = []
    for verdict in verdicts:
        expectation = verdict.expectation
        if not (expectation.silent and verdict.passed):
            confirmed.append(verdict)
            continue
        witnesses = [
            v
            for v in verdicts
            if not v.expectation.silent and v.passed and v.expectation.run_id == expectation.run_id
        ]
        pods = {pod for v in witnesses for pod in v.pods}
        if expectation.pod is not None:
            witnesses = [v for v in witnesses if expectation.pod in v.pods]
            pods = {expectation.pod} if witnesses else set()
        if len(pods) == 1 and witnesses:
            names = ", ".join(v.expectation.name for v in witnesses)
            reason = f"nothing fired, while {names} of the same run alerted from {next(iter(pods))}"
            confirmed.append(replace(verdict, reason=reason))
            continue
        if len(pods) > 1:
            why = (
                f"the positive scenarios that passed alerted from several pods ({', '.join(sorted(pods))}):"
                " name the control's with --pod"
            )
        else:
            where = f" on {expectation.pod}" if expectation.pod is not None else ""
            why = (
                f"no positive scenario of run {expectation.run_id} passed{where} in this verify, so Falco may"
                " not be watching (or not running): verify the control together with a positive scenario"
                " of the same run, such as shell-in-serving-pod"
            )
        reason = f"nothing fired, but silence alone proves nothing: {why}"
        confirmed.append(replace(verdict, passed=False, reason=reason, outcome="-"))
    return confirmed


class TrailSource(Protocol):
    """Where verify reads the audit trail: a running responder (ResponderClient, GET /v1/audit) or
    its journal file (JournalTrail); ``params`` are the HTTP API's query parameters."""

    async def audit(self, **params: str) -> Sequence[Entry]: ...


class JournalTrail:
    """The audit trail read from a journal file, answering what GET /v1/audit would (the same query,
    built the same way): for a responder without the HTTP input (gRPC only, or `ingest`)."""

    def __init__(self, path: str) -> None:
        self.path = path

    async def audit(self, **params: str) -> list[dict[str, Any]]:
        try:
            query = audit_query_from({key: value for key, value in params.items() if value})
        except ValueError as exc:
            raise UserError(str(exc)) from None
        # SQLite reads block: off the event loop, as the responder reads it for GET /v1/audit.
        return await asyncio.to_thread(read_journal_trail, self.path, query)


async def poll(
    client: TrailSource,
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
            entries = await _audit(client, expectation.run_marker, since, limit, expectation.pod)
            verdicts[expectation.name] = judge(expectation, entries)
        waiting = [
            v for v in verdicts.values() if not v.expectation.silent and not v.passed and not v.settled
        ]
        now = clock()
        silence_pending = any(e.silent for e in expectations) and now - start < settle
        if (not waiting and not silence_pending) or now >= deadline:
            break
        await asyncio.sleep(min(interval, deadline - now))
    for verdict in waiting:
        # Still waiting at the deadline: said as a wait that ended, not as a final answer.
        reason = f"{verdict.reason} (gave up waiting after --timeout {timeout:g} s)"
        if not verdict.entries:
            reason += await _what_the_run_left(client, verdict.expectation, since, limit)
        verdicts[verdict.expectation.name] = replace(verdict, reason=reason)
    return confirm_controls([verdicts[e.name] for e in expectations])


# Where the trail's alerts of a run are summed up (pod and rule), at most this many places are named.
_PLACES_SHOWN = 3


async def _what_the_run_left(
    client: TrailSource, expectation: Expectation, since: str | None, limit: int
) -> str:
    """For a scenario none of whose alerts came: what the trail holds of its whole run, on any pod
    (another --pod than the alerts', another scenario's rule), or that it holds none (Falco not
    running, the marker not in the rule's output, the alerts refused: a wrong credential)."""
    try:
        entries = await _audit(client, expectation.run_id, since, limit)
    except UserError:  # the trail could not be read just now: the verdict stands without it
        return ""
    if not entries:
        return (
            f"; the trail holds no alert of run {expectation.run_id} at all (alerts refused, say a wrong"
            " credential, or Falco not sending them: is it running, and does the rule's output carry the"
            " marker?)"
        )
    places: dict[str, int] = {}
    for entry in entries:
        place = f"{entry.get('rule')} on {_pod_of(entry)}"
        places[place] = places.get(place, 0) + 1
    shown = first_few([f"{place} ({count})" for place, count in sorted(places.items())], _PLACES_SHOWN)
    held = f"{len(entries)}" if len(entries) < limit else f"at least {len(entries)}"
    return f"; the trail holds {held} alert(s) of run {expectation.run_id}: {shown}"


async def _audit(
    client: TrailSource, run_marker: str, since: str | None, limit: int, pod: str | None = None
) -> Sequence[Entry]:
    # The client reports a responder it cannot reach, or whose answer is not an audit trail of the
    # shape this version reads (the journal reader: a journal it cannot read), as a UserError.
    return await client.audit(run_id=run_marker, since=since or "", limit=str(limit), pod=pod or "")


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
        if verdict.sent_by != "-":
            lines.append(f"      sent by: {verdict.sent_by}")
    return "\n".join(lines)
