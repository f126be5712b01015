"""format_summary over audit entries: one line per incident, then the outcomes counted."""

from __future__ import annotations

from typing import Any

from responder.audit import format_incidents, format_summary, format_table, incident_outcome_text


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
    assert lines[1].startswith("2023-11-14 22:13:20  Shell in serving pod  ml/a")
    assert lines[1].endswith("shells  7       quarantined")
    assert "ml/b\\x1b[2J" in lines[2] and lines[2].endswith("-       1       not decided yet")
    assert lines[4:] == [
        "2 incident(s) on 2 pod(s), 8 alert(s) in all:",
        "       1  quarantined",
        "       1  not decided yet",
    ]
    assert format_summary([]).splitlines() == [
        "OPENED (UTC)  RULE  POD  POLICY  ALERTS  OUTCOME",
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


def test_each_incidents_story_names_every_action_and_post_and_is_printable() -> None:
    leaky = {
        "count": 3,
        "opened_ns": 1_700_000_000_000_000_000,
        "last_seen_ns": 1_700_000_005_000_000_000,
        "verification": {"status": "verified"},
        "decision": {
            "policy": "shells",
            "actions": ["notify", "quarantine"],
            "withheld": ["breaker open"],
            "isolate": "egress",
        },
        "actions": [
            {
                "action": "quarantine",
                "status": "leaky",
                "finished_ns": 1_700_000_000_250_000_000,
                "actor": "responder",
                "leaky_policies": ["allow-gw"],
                "detail": "",
            },
            {
                "action": "release",
                "status": "released",
                "finished_ns": 1_700_000_060_000_000_000,
                "actor": "bob\x1b[31m",
                "reason": "rebuilt\nfrom the signed image",
                "detail": "",
            },
        ],
        "notifications": [
            {"kind": "incident", "state": "sent", "attempts": 1, "slack_channel": "C1", "slack_ts": "1.1"},
            {
                "kind": "by_hand",
                "state": "pending",
                "attempts": 3,
                "channel": "#sec",
                "slack_ts": None,
                "last_error": "ratelimited",
            },
        ],
    }
    story = format_incidents([entry("inc-1", "a", leaky), entry("inc-1", "a", leaky, "duplicate")])
    assert story.splitlines() == [
        "inc-1  Shell in serving pod  ml/a",
        "  alerts    3, first 2023-11-14 22:13:20.000 UTC, last 2023-11-14 22:13:25.000 UTC",
        "  verified  verified",
        "  decided   policy shells: notify, quarantine (egress cut); withheld: breaker open",
        "  action    2023-11-14 22:13:20.250 UTC  quarantine leaky (still allowed by allow-gw) by responder",
        "  action    2023-11-14 22:14:20.000 UTC  release released by bob\\x1b[31m:"
        " rebuilt\\nfrom the signed image",
        "  slack     incident sent at C1 1.1",
        "  slack     by_hand pending after 3 attempts: ratelimited",
    ]
    undecided = format_incidents([entry("inc-2", "b", {"count": 1, "actions": []})]).splitlines()
    assert undecided[3] == "  decided   not decided yet" and len(undecided) == 4
    assert format_incidents([entry(None, "c", None, "rejected")]) == "no incidents"


def test_the_table_shows_the_day_and_says_the_zone() -> None:
    """The trail reaches back days: a time of day alone would put two days' alerts side by side."""
    decided = {"count": 1, "decision": {"policy": "shells", "actions": ["notify"]}, "actions": []}
    lines = format_table([entry("inc-1", "a", decided)]).splitlines()
    assert lines[0].split()[:3] == ["RECEIVED", "(UTC)", "RULE"]
    assert lines[1].startswith("2026-12-03 08:00:00.000  Shell in serving pod")
