"""The on-call review of the Slack messages: a failed quarantine says the pod is not isolated and
gives the command; forged ids cannot format the warning; the header is plain text, not entities;
one long field does not hide the others; the event's own time is shown when it differs; the
top-level post does not claim a count it cannot keep; forgeries gathered in a thread read as such."""

from __future__ import annotations

import dataclasses

from responder.actions.outcome import ActionOutcome, OutcomeStatus
from responder.cluster.verify import Verification, VerificationStatus
from responder.notify.render import render_incident
from tests.notify.slack_fixtures import BASE_FIELDS, make_alert, make_decision, make_report, visible_text


def failed_quarantine(**extra: object) -> ActionOutcome:
    return ActionOutcome(
        "quarantine", OutcomeStatus.FAILED, 'HTTP 403: pods "triton-0" is forbidden', extra=extra
    )


def test_a_failed_quarantine_says_the_pod_is_not_isolated_and_gives_the_command() -> None:
    report = make_report(outcomes=(failed_quarantine(),))
    text = visible_text(render_incident(report, config_path="/etc/sg/config.yaml").blocks)
    assert "The pod is *not* isolated" in text
    command = report.quarantine_command("/etc/sg/config.yaml")
    assert command is not None and command.startswith("serving-guard quarantine --namespace ml triton-0")
    assert "*To quarantine it by hand* once you have looked" in text
    assert command.replace("<", "&lt;").replace(">", "&gt;") in text


def test_no_quarantine_command_once_released_or_for_a_forgery() -> None:
    released = ActionOutcome(
        "release", OutcomeStatus.RELEASED, "released by carol: fine", extra={"by": "carol"}
    )
    assert make_report(outcomes=(failed_quarantine(), released)).quarantine_command() is None
    forged = make_report(
        outcomes=(failed_quarantine(),),
        decision=make_decision(unverified=True),
        verification=Verification(VerificationStatus.UNVERIFIED, "container id does not match"),
    )
    assert forged.quarantine_command() is None
    # A quarantine that worked needs no command.
    fine = ActionOutcome("quarantine", OutcomeStatus.QUARANTINED)
    assert make_report(outcomes=(failed_quarantine(), fine)).quarantine_command() is None


def test_a_forged_host_name_cannot_format_the_warning() -> None:
    reason = "alert came from host '*boss*_says_~ok~' but the pod runs on 'node-1'"
    report = make_report(
        alert=make_alert(hostname="*boss*_says_~ok~"),
        decision=make_decision(unverified=True),
        verification=Verification(VerificationStatus.UNVERIFIED, reason),
    )
    text = visible_text(render_incident(report).blocks)
    # Inside code spans only, where Slack shows * _ ~ as they are.
    assert f"does not match the live pod: `{reason}`." in text
    assert f":no_entry: UNVERIFIED: `{reason}`" in text
    outside = "".join(part for n, part in enumerate(text.split("`")) if n % 2 == 0)
    assert "*boss*" not in outside and "~ok~" not in outside


def test_one_long_field_does_not_hide_the_others() -> None:
    extra = {f"custom.f{n}": f"value-{n}" for n in range(6)}
    fields = {**BASE_FIELDS, "custom.a": "x" * 3000, **extra}
    text = visible_text(render_incident(make_report(alert=make_alert(fields))).blocks)
    assert all(f"custom.f{n}=value-{n}" in text for n in range(6))
    assert "custom.a=xxx" in text and "x" * 1000 not in text


def test_too_many_fields_say_how_many_are_left_out() -> None:
    fields = {**BASE_FIELDS, **{f"custom.f{n:03}": "v" * 50 for n in range(100)}}
    text = visible_text(render_incident(make_report(alert=make_alert(fields))).blocks)
    shown = sum(f"custom.f{n:03}=" in text for n in range(100))
    assert 0 < shown < 100
    assert f"… {100 - shown} more" in text


def test_a_late_alert_shows_when_its_event_happened_and_when_the_pod_was_acted_on() -> None:
    acted = ActionOutcome("quarantine", OutcomeStatus.QUARANTINED, started_ns=0, finished_ns=0)
    report = make_report(outcomes=(acted,))
    late = dataclasses.replace(report, first_seen_ns=report.alert.time_ns + 600 * 10**9)
    text = visible_text(render_incident(late).blocks)
    assert "At 2025-01-28 10:10:00 UTC · event at 2025-01-28 10:00:00 UTC" in text
    on_time = visible_text(render_incident(report).blocks)
    assert "event at" not in on_time and "acted at" not in on_time
    done = dataclasses.replace(acted, finished_ns=report.alert.time_ns + 2 * 10**9)
    text = visible_text(render_incident(dataclasses.replace(report, outcomes=(done,))).blocks)
    assert "acted at 2025-01-28 10:00:02 UTC" in text
