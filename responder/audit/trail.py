"""The audit trail loaded from the journal: each alert with its incident's decision, actions and
notifications, and their timings (and the actions taken by hand, and a simulator run's marker)."""

from __future__ import annotations

import functools
import json
import re
import sqlite3
import zlib
from collections.abc import Mapping
from typing import Any

from responder.actions.outcome import (
    BLOCK_POLICY,
    BLOCKED_ADDRESS,
    EXCLUDED_BEYOND,
    ISOLATED,
    KEPT_OUT,
    KEPT_OUT_BY,
    LABELLED,
    LAPSED_ACTION,
    LAPSED_LABEL_GONE,
    NOT_PATCHED,
    REASON,
    UNBLOCKED,
    WIDENED,
)
from responder.alert import AlertError, format_time_ns
from responder.audit.query import MAX_LIMIT, PAGE, AuditQuery
from responder.journal.rows import decode_payload
from responder.journal.store import INCIDENTS_WITH_SEEN_SQL


def _ms(start: int | None, end: int | None) -> float | None:
    if not start or not end:
        return None
    return round((end - start) / 1e6, 3)


# What a simulator run's marker is made of (simulators/scenario.py uses these):
# sg-run=<run id>.<scenario>.<step>, where a run id and a scenario name hold letters, digits, '_'
# and '-', and never a '.'.
RUN_MARKER_PREFIX = "sg-run="
RUN_ID_CHARS = "A-Za-z0-9_-"


def run_marker_pattern(needle: str) -> re.Pattern[str]:
    """Where the marker ``sg-run=<needle>`` (``<id>``, ``<id>.<scenario>`` or
    ``<id>.<scenario>.<step>``) stands as a whole: not after a character that could be part of it,
    nor before one that could continue a run id or a scenario name (a '.' may follow: the scenario,
    or the step). So run a-run1 is not team-a-run1, and a scenario shell is not
    shell-in-serving-pod."""
    body = re.escape(RUN_MARKER_PREFIX + needle)
    return re.compile(f"(?<![{RUN_ID_CHARS}]){body}(?![{RUN_ID_CHARS}])")


@functools.lru_cache(maxsize=64)
def _run_filter(needle: str) -> re.Pattern[str]:
    """The audit trail's run_id filter: the whole marker (run_marker_pattern); a value that starts
    with sg-run= itself is looked for as written (a text search: a prefix of many runs)."""
    if needle.startswith(RUN_MARKER_PREFIX):
        return re.compile(re.escape(needle))
    return run_marker_pattern(needle)


def _mentions(alert_json: dict[str, Any], needle: str) -> bool:
    pattern = _run_filter(needle)
    if pattern.search(str(alert_json.get("output", ""))):
        return True
    return any(pattern.search(str(value)) for value in (alert_json.get("output_fields") or {}).values())


def load_trail(conn: sqlite3.Connection, query: AuditQuery) -> list[dict[str, Any]]:
    """The newest ``limit`` matching entries, oldest first: the alerts, and the actions people took
    by hand outside any incident (see _by_hand_entries). Scans newest-first in pages, so a run id
    from a moment ago is found on a busy responder however much older traffic there is."""
    alerts = _alert_entries(conn, query)
    by_hand = _by_hand_entries(conn, query)
    if not by_hand:
        return alerts
    merged = sorted([*alerts, *by_hand], key=lambda entry: entry["received_ns"])
    return merged[-query.limit :]


# An entry's outcome (and input) for an action a person took by hand outside any incident.
BY_HAND = "by_hand"


def _by_hand_entries(conn: sqlite3.Connection, query: AuditQuery) -> list[dict[str, Any]]:
    """The newest ``limit`` actions taken by hand (serving-guard quarantine, block, release) without
    --incident, as entries of the trail beside the alerts: a release from a workstation is in
    the trail a security engineer reads, not only in the journal. Not under a filter that selects
    alerts or incidents (a run, a policy, an incident): such an action has none of them."""
    if query.run_id is not None or query.policy is not None or query.incident is not None:
        return []
    where, params = _pod_filter(query)
    sql = f"SELECT * FROM actions WHERE incident_id IS NULL AND started_ns >= ?{where}"  # noqa: S608
    sql += " ORDER BY id DESC LIMIT ?"
    rows = conn.execute(sql, [query.since_ns, *params, min(query.limit, MAX_LIMIT)]).fetchall()
    return [
        {
            "alert_id": "",
            "received": format_time_ns(row["started_ns"]),
            "received_ns": row["started_ns"],
            "input": BY_HAND,
            "sender": None,
            "rule": "",
            "priority": "",
            "namespace": row["namespace"],
            "pod": row["pod"],
            "state": "done",
            "outcome": BY_HAND,
            "incident_id": None,
            "alert": {},
            "action": _action_record(row, None),
        }
        for row in reversed(rows)
    ]


def _pod_filter(query: AuditQuery) -> tuple[str, list[Any]]:
    """The SQL condition (`` AND ...``, or nothing) and parameters of the query's --pod."""
    where, params = "", []
    if query.namespace is not None:
        where += " AND namespace = ?"
        params.append(query.namespace)
    if query.pod is not None:
        where += " AND pod = ?"
        params.append(query.pod)
    return where, params


def _alert_entries(conn: sqlite3.Connection, query: AuditQuery) -> list[dict[str, Any]]:
    """The newest ``limit`` matching alerts, oldest first."""
    limit = min(query.limit, MAX_LIMIT)
    where, pod_params = _pod_filter(query)
    sql = f"SELECT * FROM alerts WHERE received_ns >= ? AND seq < ?{where}"  # noqa: S608
    params: list[Any] = [query.since_ns, *pod_params]
    if query.incident is not None:
        sql += " AND incident_id = ?"
        params.append(query.incident)
    sql += " ORDER BY seq DESC LIMIT ?"
    incidents: dict[str, dict[str, Any]] = {}
    newest_first: list[dict[str, Any]] = []
    before = 2**63 - 1
    while len(newest_first) < limit:
        rows = conn.execute(sql, [params[0], before, *params[1:], PAGE]).fetchall()
        if not rows:
            break
        before = rows[-1]["seq"]
        for row in rows:
            entry = _entry(conn, row, query, incidents)
            if entry is not None:
                newest_first.append(entry)
                if len(newest_first) >= limit:
                    break
    newest_first.reverse()
    return newest_first


def _entry(
    conn: sqlite3.Connection, row: sqlite3.Row, query: AuditQuery, incidents: dict[str, dict[str, Any]]
) -> dict[str, Any] | None:
    try:
        alert = decode_payload(row["payload"])
    except (AlertError, ValueError, zlib.error):
        return None
    alert_json = alert.to_falco_json()
    if query.run_id and not _mentions(alert_json, query.run_id):
        return None
    incident_id = row["incident_id"]
    entry: dict[str, Any] = {
        "alert_id": row["alert_id"],
        "received": format_time_ns(row["received_ns"]),
        "received_ns": row["received_ns"],
        "input": row["input"],
        "sender": _sender(row),
        "rule": row["rule"],
        "priority": alert.priority.label,
        "namespace": row["namespace"],
        "pod": row["pod"],
        "state": row["state"],
        # Not final yet: "deferred" (taken while the pipeline was full, waiting for room) or "pending".
        "outcome": row["outcome"] or ("deferred" if row["state"] == "deferred" else "pending"),
        "incident_id": incident_id,
        "alert": alert_json,
    }
    if query.policy is not None and not incident_id:
        return None
    if incident_id:
        if incident_id not in incidents:
            incidents[incident_id] = _incident(conn, incident_id)
        incident = incidents[incident_id]
        if query.policy is not None and (incident.get("decision") or {}).get("policy") != query.policy:
            return None
        entry["incident"] = incident
        if row["outcome"] == "opened":
            entry["timings_ms"] = _timings(row["received_ns"], incident)
    return entry


def _timings(received_ns: int, incident: dict[str, Any]) -> dict[str, float | None]:
    quarantine_done = next(
        (
            a["finished_ns"]
            for a in incident["actions"]
            if a["action"] == "quarantine" and a["status"] in ("quarantined", "leaky")
        ),
        None,
    )
    sent = next((n["sent_ns"] for n in incident["notifications"] if n["state"] == "sent"), None)
    return {
        "to_decision": _ms(received_ns, incident.get("decided_ns")),
        "to_quarantine": _ms(received_ns, quarantine_done),
        "to_notification": _ms(received_ns, sent),
    }


def _outcome_fields(outcome: Mapping[str, Any]) -> dict[str, Any]:
    """An action's record's fields from its journaled outcome beyond the actions table's columns."""
    fields = {k: v for k, v in outcome.items() if k in ("leaky_policies", "patched_policies")}
    extra = outcome.get("extra") or {}
    isolated = extra.get(ISOLATED)
    if isinstance(isolated, str):
        fields["isolated"] = isolated
    for key in (NOT_PATCHED, EXCLUDED_BEYOND, WIDENED, UNBLOCKED, KEPT_OUT_BY):
        names = extra.get(key)
        if isinstance(names, list) and names:
            fields[key] = [str(name) for name in names]
    reason = extra.get(REASON)
    if isinstance(reason, str):
        fields["reason"] = reason
    for key in (BLOCKED_ADDRESS, BLOCK_POLICY, KEPT_OUT, LAPSED_ACTION):
        value = extra.get(key)
        if isinstance(value, str):
            fields[key] = value
    if extra.get(LABELLED) is True:
        fields["labelled"] = True
    if extra.get(LAPSED_LABEL_GONE) is True:
        fields[LAPSED_LABEL_GONE] = True
    return fields


def _column(row: sqlite3.Row, name: str) -> Any:
    """A column the journal of an earlier schema has not got yet (a reader reads such a journal as
    it is, the next writer to open it brings it up to date): None there, as its rows then had."""
    return row[name] if name in row.keys() else None  # noqa: SIM118 (`in` a Row looks at its values)


def _sender(row: sqlite3.Row) -> dict[str, Any] | None:
    """The alert's sender as journaled (responder.sender.Sender.record), or None."""
    record = _column(row, "sender")
    try:
        sender = json.loads(record) if record else None
    except ValueError:  # not ours to fail the whole trail on
        return None
    return sender if isinstance(sender, dict) else None


def _other_pod(action: sqlite3.Row, incident: sqlite3.Row | None) -> dict[str, str]:
    """{"other_pod": "namespace/pod"} for an action on another pod than its incident's (as
    Journal.incident_record leaves out), else nothing."""
    if incident is None or action["namespace"] is None:
        return {}
    if (action["namespace"], action["pod"]) == (incident["namespace"], incident["pod"]):
        return {}
    return {"other_pod": f"{action['namespace']}/{action['pod']}"}


def _action_record(action: sqlite3.Row, incident: sqlite3.Row | None) -> dict[str, Any]:
    """An actions row as the trail gives it (ActionRecord); ``incident``: its incident's row."""
    return {
        "action": action["action"],
        "status": action["status"],
        "detail": action["detail"],
        "started_ns": action["started_ns"],
        "finished_ns": action["finished_ns"],
        "duration_ms": _ms(action["started_ns"], action["finished_ns"]),
        "actor": action["actor"],
        **_outcome_fields(json.loads(action["outcome"])),
        **_other_pod(action, incident),
    }


def _incident(conn: sqlite3.Connection, incident_id: str) -> dict[str, Any]:
    row = conn.execute(INCIDENTS_WITH_SEEN_SQL + " WHERE i.incident_id = ?", (incident_id,)).fetchone()
    actions = [
        _action_record(a, row)
        for a in conn.execute("SELECT * FROM actions WHERE incident_id = ? ORDER BY id", (incident_id,))
    ]
    notifications = [
        {
            "kind": n["kind"],
            "state": n["state"],
            "attempts": n["attempts"],
            "channel": n["channel"],
            "slack_channel": n["slack_channel"],
            "slack_ts": n["slack_ts"],
            "slack_thread_ts": _column(n, "slack_thread_ts"),
            "last_error": n["last_error"],
            "sent_ns": n["sent_ns"],
            **({"action_id": n["action_id"]} if _column(n, "action_id") is not None else {}),
        }
        for n in conn.execute("SELECT * FROM notifications WHERE incident_id = ? ORDER BY id", (incident_id,))
    ]
    if row is None:
        # No incident row (pruned before its alerts): its alerts, counted one by one.
        seen = conn.execute("SELECT COUNT(*) FROM alerts WHERE incident_id = ?", (incident_id,)).fetchone()[0]
        return {"incident_id": incident_id, "count": seen, "actions": actions, "notifications": notifications}
    return {
        "incident_id": incident_id,
        "count": row["seen"],
        "opened_ns": row["opened_ns"],
        "last_seen_ns": row["last_seen_ns"],
        "decided_ns": row["decided_ns"],
        "verification": json.loads(row["verification"]) if row["verification"] else None,
        "decision": json.loads(row["decision"]) if row["decision"] else None,
        "actions": actions,
        "notifications": notifications,
    }
