"""The audit trail in words: an incident's outcome in a few words, the summary, the incidents' and
the table's text forms (`serving-guard audit`, `GET /v1/audit?format=table`, `serving-guard verify`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from responder.actions.outcome import (
    LAPSED_WORDS,
    RECHECK,
    RESPONDER_ACTOR,
    OutcomeStatus,
)
from responder.alert import format_time_ns
from responder.audit.trail import BY_HAND
from responder.records import DECIDED_AGAIN
from responder.sender import sender_text
from responder.terminal import printable

# An action's statuses that changed the pod (a quarantine, leaky or not, or an annotation).
DONE_STATUSES = frozenset(
    {OutcomeStatus.QUARANTINED, OutcomeStatus.LEAKY, OutcomeStatus.ANNOTATED, OutcomeStatus.BLOCKED}
)


def incident_outcome_text(incident: Mapping[str, Any]) -> str:
    """What was done to the pod, or predicted, in a few words (an audit entry's incident)."""
    parts = []
    for action in incident.get("actions") or []:
        status = action.get("status", "?")
        leaky = ", ".join(action.get("leaky_policies") or [])
        if status == OutcomeStatus.BLOCKED and action.get("kept_out"):
            address = action.get("address", "?")
            parts.append(f"no block made: {address} already kept out by {action['kept_out']}")
        elif status == OutcomeStatus.BLOCKED:
            parts.append(f"blocked {action.get('address', '?')}")
        elif status == OutcomeStatus.LEAKY:
            parts.append("LEAKY: still allowed by " + (leaky or "?"))
        elif status == OutcomeStatus.LAPSED:
            parts.append(f"{_lapsed_words(action)} no longer held")
        elif status == OutcomeStatus.WITHHELD:
            parts.append(f"{action.get('action')} withheld")
        elif status == OutcomeStatus.DRY_RUN:
            parts.append(
                f"dry-run: would {action.get('action')}" + (f", LEAKY through {leaky}" if leaky else "")
            )
        else:
            parts.append(f"{status}" if status in DONE_STATUSES else f"{action.get('action')} {status}")
        actor = action.get("actor")
        if actor and actor != RESPONDER_ACTOR:
            parts[-1] += f" by {actor}"
    return "; ".join(parts) or _told_only_text(incident)


def _told_only_text(incident: Mapping[str, Any]) -> str:
    """What became of an incident nothing was done about: whether anyone was told, as its Slack
    notifications say (none at all: Slack disabled, or the decision told no one)."""
    states = {n.get("state") for n in incident.get("notifications") or []}
    if "sent" in states:
        return "notified only"
    if not states:
        return "recorded only (no one notified)"
    if states & {"pending", "sending"}:
        return "notification pending (no one notified yet)"
    return "notification failed (no one notified)"  # failed, or dropped


def _incidents_of(
    entries: Sequence[Mapping[str, Any]],
) -> tuple[dict[str, Mapping[str, Any]], dict[str, Mapping[str, Any]]]:
    """The entries' incidents by id, in the order they first appear, and each one's first entry."""
    incidents: dict[str, Mapping[str, Any]] = {}
    first: dict[str, Mapping[str, Any]] = {}
    for entry in entries:
        incident = entry.get("incident")
        if incident and entry["incident_id"] not in incidents:
            incidents[entry["incident_id"]] = incident
            first[entry["incident_id"]] = entry
    return incidents, first


def _marked(entry: Mapping[str, Any], incident: Mapping[str, Any]) -> str:
    """What an incident's outcome is read with: a drill's (a replay decided in dry-run, not a policy
    that did not act on an attack) and a possible forgery's (nothing done to the pod on purpose)
    are told apart, as the table's SENDER and VERIFIED columns do (review-operator L1)."""
    marks = []
    if (entry.get("sender") or {}).get("drill"):
        marks.append("DRILL")
    if (incident.get("verification") or {}).get("status") in ("unverified", "pod_not_found"):
        marks.append("UNVERIFIED")
    return f"{' '.join(marks)}: " if marks else ""


def format_summary(entries: Sequence[Mapping[str, Any]], *, cut_at: int | None = None) -> str:
    """The entries' incidents, one line each (what was done to which pod, or predicted, and how
    many alerts it took), then how many incidents ended each way: what a policy on trial would have
    done, or what an alert storm amounted to. ``cut_at``: the --limit that left older entries out."""
    incidents, first = _incidents_of(entries)
    header = ("OPENED (UTC)", "RULE", "POD", "POLICY", "ALERTS", "OUTCOME")
    rows = [header]
    outcomes: dict[str, int] = {}
    pods = set()
    podless = 0
    for incident_id, incident in incidents.items():
        entry = first[incident_id]
        opened = incident.get("opened_ns")
        outcome = _marked(entry, incident) + (
            incident_outcome_text(incident) if incident.get("decision") else "not decided yet"
        )
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if entry["namespace"] and entry["pod"]:  # a host event or Falco's own names none
            pods.add((entry["namespace"], entry["pod"]))
        else:
            podless += 1
        rows.append(
            (
                _table_time(format_time_ns(opened) if isinstance(opened, int) else entry["received"])[:19],
                entry["rule"][:48],
                f"{entry['namespace'] or '-'}/{entry['pod'] or '-'}",
                (incident.get("decision") or {}).get("policy", "-"),
                str(incident.get("count", "?")),
                outcome,
            )
        )
    shown = [[printable(value) for value in row] for row in rows]
    widths = [max(len(r[i]) for r in shown) for i in range(len(header))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in shown]
    alerts = sum(int(i.get("count") or 0) for i in incidents.values())
    without = f" ({podless} naming no pod)" if podless else ""
    lines += ["", f"{len(incidents)} incident(s) on {len(pods)} pod(s){without}, {alerts} alert(s) in all:"]
    lines += [
        f"  {count:>6}  {printable(text)}" for text, count in sorted(outcomes.items(), key=lambda o: -o[1])
    ]
    by_hand = [entry for entry in entries if entry["outcome"] == BY_HAND]
    if by_hand:
        lines += ["", f"{len(by_hand)} action(s) by hand outside any incident:"]
        lines += [
            printable(f"  {entry['namespace']}/{entry['pod']}: {_action_text(entry.get('action') or {})}")
            for entry in by_hand
        ]
    if cut_at is not None:
        lines.append(truncated_note(cut_at))
    return "\n".join(lines)


def truncated_note(limit: int) -> str:
    """Said when --limit left older entries out (or, at MAX_LIMIT, may have)."""
    return f"(read from the newest {limit} entries only: raise --limit to take in older ones)"


def _utc(time_ns: object) -> str:
    """A journal time as people read it (milliseconds, UTC), or '-'."""
    return format_time_ns(time_ns)[:23].replace("T", " ") + " UTC" if isinstance(time_ns, int) else "-"


def _decision_text(decision: Mapping[str, Any] | None) -> str:
    if not decision:
        return "not decided yet"
    text = f"policy {decision.get('policy', '-')}: {', '.join(decision.get('actions') or []) or 'nothing'}"
    if decision.get("isolate") in ("egress", "ingress"):
        text += f" ({decision['isolate']} cut)"
    if decision.get("dry_run"):
        text += f" (dry-run by {decision.get('dry_run_by') or 'guardrails'})"
    withheld = decision.get("withheld") or []
    if withheld:
        text += "; withheld: " + "; ".join(str(reason) for reason in withheld)
    again = decision.get(DECIDED_AGAIN)
    if isinstance(again, int):
        text += f"; decided again {_utc(again)}, tried again after it was withheld"
    reopens = decision.get("reopens")
    if isinstance(reopens, Mapping):
        text += (
            f"; reopens {reopens.get('incident_id', '?')}: its {_lapsed_words(reopens)} no longer held"
            f" ({reopens.get('detail') or '?'}; checked {_utc(reopens.get('checked_ns'))})"
        )
    return text


def _lapsed_words(record: Mapping[str, Any]) -> str:
    """What a lapse (a recheck's record, or a decision's reopens) says no longer holds."""
    lapsed = str(record.get("lapsed") or "quarantine")
    return LAPSED_WORDS.get(lapsed, lapsed)


def _action_text(action: Mapping[str, Any]) -> str:
    text = f"{_utc(action.get('finished_ns'))}  {action.get('action')} {action.get('status')}"
    if action.get("action") == RECHECK and action.get("status") == OutcomeStatus.LAPSED:
        text += f": the {_lapsed_words(action)} no longer holds"
    # A release's detail starts with who and why, said at the end as for every action by hand.
    said = f"{action.get('status')} by {action.get('actor')}: {action.get('reason')}"
    detail = str(action.get("detail") or "")
    if action.get("reason") and detail.startswith(said):
        detail = detail[len(said) :].lstrip("; ")
    if action.get("leaky_policies"):
        text += " (still allowed by " + ", ".join(action["leaky_policies"]) + ")"
    elif detail:
        text += f" ({detail})"
    text += f" by {action.get('actor') or RESPONDER_ACTOR}"
    if action.get("other_pod"):
        text += f" on {action['other_pod']}, not this incident's pod"
    return text + (f": {action['reason']}" if action.get("reason") else "")


def _notification_text(notification: Mapping[str, Any]) -> str:
    text = f"{notification.get('kind')} {notification.get('state')}"
    where = notification.get("slack_channel") or notification.get("channel")
    if notification.get("slack_ts"):
        text += f" at {where} {notification['slack_ts']}"
        thread = notification.get("slack_thread_ts")
        if thread and thread != notification["slack_ts"]:
            text += f" in thread {thread}"
    if notification.get("attempts", 0) > 1:
        text += f" after {notification['attempts']} attempts"
    if notification.get("state") != "sent" and notification.get("last_error"):
        text += f": {notification['last_error']}"
    return text


def format_incidents(entries: Sequence[Mapping[str, Any]]) -> str:
    """Each incident's story, a block each: what fired on which pod and how often, what was
    decided, each action (when, by the responder or by whom by hand, and why) and each Slack post
    (where it went). With --incident, the whole of one incident."""
    incidents, first = _incidents_of(entries)
    blocks = []
    for entry in entries:
        if entry["outcome"] == BY_HAND:
            blocks.append("\n".join(printable(line) for line in _by_hand_lines(entry)))
            continue
        incident_id = entry.get("incident_id")
        if not incident_id or first.get(incident_id) is not entry:
            continue  # told at its incident's first entry
        incident = incidents[incident_id]
        verification = (incident.get("verification") or {}).get("status", "-")
        lines = [
            f"{incident_id}  {entry['rule']}  {entry['namespace'] or '-'}/{entry['pod'] or '-'}",
            f"  alerts    {incident.get('count', '?')}, first {_utc(incident.get('opened_ns'))},"
            f" last {_utc(incident.get('last_seen_ns'))}",
            f"  verified  {verification}",
            f"  decided   {_decision_text(incident.get('decision'))}",
        ]
        if entry.get("sender"):  # the alert that opened it, when its input names senders
            lines.insert(2, f"  sent by   {sender_text(entry['sender'])}")
        lines += [f"  action    {_action_text(action)}" for action in incident.get("actions") or []]
        lines += [f"  slack     {_notification_text(n)}" for n in incident.get("notifications") or []]
        blocks.append("\n".join(printable(line) for line in lines))
    return "\n\n".join(blocks) if blocks else "no incidents"


def _by_hand_lines(entry: Mapping[str, Any]) -> list[str]:
    """An action by hand outside any incident, as the incidents' stories tell it."""
    return [
        f"by hand  {entry['namespace'] or '-'}/{entry['pod'] or '-'}, outside any incident",
        f"  action    {_action_text(entry.get('action') or {})}",
    ]


def _table_time(text: str) -> str:
    """A journaled time (Falco's form, UTC) as a table shows it: 2026-12-04 06:59:53.790..."""
    return text.replace("T", " ", 1)


def _repeat_numbers(entries: Sequence[Mapping[str, Any]]) -> dict[int, int]:
    """Each repeat row's place among its incident's alerts (the opening alert is #1), by the row's
    index in ``entries`` (oldest first). Counted on from the incident's opening row when it is
    among them; else back from the incident's count, the last of its rows being its newest alert
    (the trail is the newest alerts: older ones may be past --limit or --since). A place that
    cannot be known (no count, or a count short of the rows) is left out."""
    rows: dict[str, list[int]] = {}
    for index, entry in enumerate(entries):
        if entry.get("incident_id") and entry["outcome"] in ("opened", "duplicate"):
            rows.setdefault(entry["incident_id"], []).append(index)
    numbers: dict[int, int] = {}
    for indexes in rows.values():
        opened = next((i for i in indexes if entries[i]["outcome"] == "opened"), None)
        if opened is not None:
            after = [i for i in indexes if i > opened]
            numbers.update({index: place for place, index in enumerate(after, start=2)})
            continue
        count = (entries[indexes[-1]].get("incident") or {}).get("count")
        if isinstance(count, int) and count >= len(indexes) + 1:
            first = count - len(indexes) + 1
            numbers.update({index: place for place, index in enumerate(indexes, start=first)})
    return numbers


def format_table(entries: Iterable[Mapping[str, Any]]) -> str:
    listed = list(entries)
    repeats = _repeat_numbers(listed)
    header = (
        "RECEIVED (UTC)",
        "RULE",
        "POD",
        "OUTCOME",
        "VERIFIED",
        "DECISION",
        "ACTIONS",
        "SLACK",
        "TO ACT",
        "SENDER",
    )
    rows = [header]
    for index, entry in enumerate(listed):
        incident = entry.get("incident") or {}
        decision = incident.get("decision") or {}
        verification = (incident.get("verification") or {}).get("status", "-")
        if entry["outcome"] == "duplicate":
            actions = f"(repeat #{repeats.get(index, '?')} of {entry['incident_id']})"
            decided = slack = verification = "-"
        elif entry["outcome"] == BY_HAND:
            action = entry.get("action") or {}
            actions = f"{action.get('action')}={action.get('status')}(by {action.get('actor')})"
            reason = action.get("reason")
            decided = f"by hand: {reason}" if reason else "by hand"
            slack = verification = "-"
        else:
            actions = (
                ", ".join(
                    f"{a['action']}={a['status']}"
                    + (f"({a['isolated']} cut)" if a.get("isolated") else "")
                    + (f"(by {a['actor']})" if a.get("actor") not in (None, RESPONDER_ACTOR) else "")
                    for a in incident.get("actions", [])
                )
                or "-"
            )
            decided = f"{decision.get('policy', '-')}: {','.join(decision.get('actions', [])) or 'nothing'}"
            slack = ",".join(f"{n['kind']}={n['state']}" for n in incident.get("notifications", [])) or "-"
        timing = (entry.get("timings_ms") or {}).get("to_quarantine")
        rows.append(
            (
                # The date too: the trail reaches back days (journal.retention_days).
                _table_time(entry["received"])[:23],
                entry["rule"][:48] or "-",
                f"{entry['namespace'] or '-'}/{entry['pod'] or '-'}",
                entry["outcome"],
                verification,
                decided,
                actions,
                slack,
                f"{timing:.1f} ms" if timing is not None else "-",
                sender_text(entry.get("sender")),
            )
        )
    shown = [[printable(value) for value in row] for row in rows]
    widths = [max(len(r[i]) for r in shown) for i in range(len(header))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in shown)
