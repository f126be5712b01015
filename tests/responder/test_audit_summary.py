"""format_summary over audit entries: one line per incident, then the outcomes counted."""

from __future__ import annotations

from typing import Any

from responder.audit.text import format_incidents, format_summary, format_table, incident_outcome_text


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


def test_incidents_naming_no_pod_are_not_counted_as_a_pod() -> None:
    """Falco's own events (a syscall drop) and host events name no pod: they were counted as one."""
    undecided = {"count": 1, "actions": []}
    drop = "Falco internal: syscall event drop"
    internal = {**entry("inc-3", "", undecided), "namespace": "", "rule": drop}
    entries = [entry("inc-1", "a", undecided), internal, {**internal, "incident_id": "inc-4"}]
    lines = format_summary(entries).splitlines()
    assert "ml/a" in lines[1] and " -/- " in lines[2]
    assert lines[5] == "3 incident(s) on 1 pod(s) (2 naming no pod), 3 alert(s) in all:"


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
    sent = [{"kind": "incident", "state": "sent"}]
    assert incident_outcome_text({"actions": [], "notifications": sent}) == "notified only"


def test_an_incident_nothing_was_done_about_says_whether_anyone_was_told() -> None:
    """Slack disabled (no notification recorded), or a notification not sent: not "notified"."""
    assert incident_outcome_text({"actions": []}) == "recorded only (no one notified)"
    assert incident_outcome_text({"actions": [], "notifications": []}) == "recorded only (no one notified)"

    def told(*states: str) -> str:
        notifications = [{"kind": "incident", "state": state} for state in states]
        return incident_outcome_text({"actions": [], "notifications": notifications})

    assert told("pending") == told("sending") == "notification pending (no one notified yet)"
    assert told("failed") == told("dropped") == "notification failed (no one notified)"
    assert told("failed", "sent") == "notified only"
    assert told("failed", "pending") == "notification pending (no one notified yet)"
    # The summary counts them apart.
    decided = {"policy": "default", "actions": ["notify"]}
    entries = [
        entry("inc-1", "a", {"count": 1, "decision": decided, "actions": [], "notifications": []}),
        entry(
            "inc-2",
            "b",
            {
                "count": 1,
                "decision": decided,
                "actions": [],
                "notifications": [{"kind": "incident", "state": "sent"}],
            },
        ),
    ]
    assert format_summary(entries).splitlines()[-2:] == [
        "       1  recorded only (no one notified)",
        "       1  notified only",
    ]


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


def test_each_repeat_row_says_its_own_place_among_its_incidents_alerts() -> None:
    """#2, #3, ... by the row's place, not the incident's total count on every row."""
    incident = {"count": 4, "decision": {"policy": "shells", "actions": ["notify"]}, "actions": []}
    other = {"count": 2, "decision": {"policy": "shells", "actions": ["notify"]}, "actions": []}
    entries = [
        entry("inc-1", "a", incident),
        entry("inc-1", "a", incident, "duplicate"),
        entry("inc-2", "b", other),
        entry("inc-1", "a", incident, "duplicate"),
        entry("inc-2", "b", other, "duplicate"),
        entry("inc-1", "a", incident, "duplicate"),
    ]
    said = [
        line.split("(repeat ")[1].split(")")[0]
        for line in format_table(entries).splitlines()
        if "(repeat" in line
    ]
    assert said == ["#2 of inc-1", "#3 of inc-1", "#2 of inc-2", "#4 of inc-1"]


def test_repeats_whose_opening_alert_is_past_the_limit_count_back_from_the_newest() -> None:
    """The trail is the newest alerts: without the opening row, the last row is the count-th alert."""
    incident = {"count": 40, "decision": {"policy": "shells", "actions": ["notify"]}, "actions": []}
    entries = [entry("inc-1", "a", incident, "duplicate") for _ in range(3)]
    said = [line.split("(repeat ")[1].split(")")[0] for line in format_table(entries).splitlines()[1:]]
    assert said == ["#38 of inc-1", "#39 of inc-1", "#40 of inc-1"]
    # A count that cannot be right for the rows shown (or none): the place is not made up.
    short = [entry("inc-1", "a", {"count": 2, "actions": []}, "duplicate") for _ in range(2)]
    assert all("(repeat #? of inc-1)" in line for line in format_table(short).splitlines()[1:])
