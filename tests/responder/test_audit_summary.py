"""format_summary over audit entries: one line per incident, then the outcomes counted."""

from __future__ import annotations

from typing import Any

from responder.audit import format_summary, incident_outcome_text


def entry(
    incident_id: str | None, pod: str, incident: dict[str, Any] | None, outcome: str = "opened"
) -> dict[str, Any]:
    return {
        "incident_id": incident_id,
        "received": "2026-12-03T08:00:00.000000000Z",
        "rule": "Shell in serving pod",
        "namespace": "ml",
        "pod": pod,
        "outcome": outcome,
        "incident": incident,
    }


def test_each_incident_once_with_its_count_and_undecided_ones_said() -> None:
    quarantined = {
        "count": 7,
        "opened_ns": 1_700_000_000_000_000_000,
        "decision": {"policy": "shells", "actions": ["notify", "quarantine"]},
        "actions": [{"action": "quarantine", "status": "quarantined"}],
    }
    undecided = {"count": 1, "actions": []}
    entries = [
        entry("inc-1", "a", quarantined),
        entry("inc-1", "a", quarantined, "duplicate"),
        entry("inc-2", "b\x1b[2J", undecided),
        entry(None, "c", None, "rejected"),
    ]
    lines = format_summary(entries).splitlines()
    assert lines[1].startswith("2023-11-14T22:13:20  Shell in serving pod  ml/a")
    assert lines[1].endswith("shells  7       quarantined")
    assert "ml/b\\x1b[2J" in lines[2] and lines[2].endswith("-       1       not decided yet")
    assert lines[4:] == [
        "2 incident(s) on 2 pod(s), 8 alert(s) in all:",
        "       1  quarantined",
        "       1  not decided yet",
    ]
    assert format_summary([]).splitlines() == [
        "OPENED  RULE  POD  POLICY  ALERTS  OUTCOME",
        "",
        "0 incident(s) on 0 pod(s), 0 alert(s) in all:",
    ]


def test_outcome_text_names_withheld_leaks_and_predictions() -> None:
    actions = [
        {"action": "quarantine", "status": "leaky", "leaky_policies": ["allow-gw"]},
        {"action": "annotate", "status": "dry_run"},
        {"action": "quarantine", "status": "withheld"},
        {"action": "quarantine", "status": "failed"},
    ]
    assert incident_outcome_text({"actions": actions}) == (
        "LEAKY: still allowed by allow-gw; dry-run: would annotate; quarantine withheld; quarantine failed"
    )
    assert incident_outcome_text({"actions": []}) == "notified only"
