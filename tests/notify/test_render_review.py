"""The on-call review of the Slack messages: a failed quarantine says the pod is not isolated and
gives the command; forged ids cannot format the warning; the header is plain text, not entities;
one long field does not hide the others; the event's own time is shown when it differs, and when
each action finished; the top-level post does not claim a count it cannot keep; the demo's commands
name its config."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from responder.actions.outcome import ActionOutcome, OutcomeStatus
from responder.cli import main as cli_main
from responder.cluster.verify import Verification, VerificationStatus
from responder.config import ActionName
from responder.incident import CommandForm, IncidentReport
from responder.notify.blocks import HEADER_LIMIT
from responder.notify.render import SlackMessage, render_incident, render_repeat
from tests.notify.slack_fixtures import BASE_FIELDS, make_alert, make_decision, make_report, visible_text


def failed_quarantine(**extra: object) -> ActionOutcome:
    return ActionOutcome(
        "quarantine", OutcomeStatus.FAILED, 'HTTP 403: pods "triton-0" is forbidden', extra=extra
    )


def test_a_failed_quarantine_says_the_pod_is_not_isolated_and_gives_the_command() -> None:
    report = make_report(outcomes=(failed_quarantine(),))
    text = visible_text(render_incident(report, form=CommandForm("/etc/sg/config.yaml")).blocks)
    assert "The pod is *not* isolated" in text
    command = report.quarantine_command(CommandForm("/etc/sg/config.yaml"))
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
    assert "custom.a=xxx" in text and "x" * 1200 not in text
    # Cut in its middle: its head and its tail, and how much is left out between.
    assert re.search(r"custom\.a=x+ … \d+ characters left out … x+\n", text), text


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
    assert "event at" not in on_time and "actions finished" not in on_time
    done = dataclasses.replace(acted, finished_ns=report.alert.time_ns + 2 * 10**9)
    text = visible_text(render_incident(dataclasses.replace(report, outcomes=(done,))).blocks)
    assert "At 2025-01-28 10:00:00 UTC · actions finished: quarantine 10:00:02 UTC" in text


def test_a_failed_quarantine_after_labelling_offers_the_quarantine_and_the_release() -> None:
    """The label is on, the deny-all policy is not: quarantine again (makes the policy), or release."""
    labelled = failed_quarantine(labelled=True)
    text = visible_text(render_incident(make_report(outcomes=(labelled,))).blocks)
    assert "The pod is *not* isolated until that policy exists" in text
    assert "*To quarantine it by hand* once you have looked" in text
    assert "*To release the pod* once it is safe" in text
    # Release lifts a block too, whoever made it: said beside the command (review-operator M4).
    assert "It lifts every cut of this responder on the pod, whichever incident or person made it" in text
    # Quarantined by hand since: nothing left to quarantine.
    by_hand = ActionOutcome("quarantine", OutcomeStatus.QUARANTINED, extra={"by_hand": "carol"})
    assert make_report(outcomes=(labelled, by_hand)).quarantine_command() is None


def test_a_quarantined_pod_is_said_to_still_run_beside_the_release() -> None:
    """The quarantine cuts the pod's network only: a shell or a miner in it still runs, and a release
    reconnects it (review-oncall 7)."""
    still_runs = "*The pod still runs*, its processes too (a shell, a miner): the quarantine cuts its network"
    quarantined = ActionOutcome("quarantine", OutcomeStatus.QUARANTINED)
    text = visible_text(render_incident(make_report(outcomes=(quarantined,))).blocks)
    assert still_runs in text
    assert text.index(still_runs) < text.index("*To release the pod* once it is safe")
    assert "releasing it reconnects whatever still runs in it" in text
    # Nothing on it (a dry run, a withheld quarantine): not said.
    for outcome in (
        ActionOutcome("quarantine", OutcomeStatus.DRY_RUN),
        ActionOutcome("quarantine", OutcomeStatus.WITHHELD, "pod lookup failed"),
    ):
        assert still_runs not in visible_text(render_incident(make_report(outcomes=(outcome,))).blocks)


# ---- 2. alert text outside code spans cannot format the message -----------------------------


def outside_code(text: str) -> str:
    """What Slack reads as mrkdwn: ``text`` without its code spans and blocks (ours: the alert's
    backticks are look-alikes, so every backtick left is one of ours)."""
    return "".join(part for n, part in enumerate(text.split("`")) if n % 2 == 0)


def mrkdwn_texts(message: SlackMessage) -> list[str]:
    """The message's mrkdwn: its fallback text and every mrkdwn text object (not plain_text)."""
    found = [message.text]

    def walk(node: object) -> None:
        if isinstance(node, Mapping):
            if node.get("type") == "mrkdwn":
                found.append(str(node["text"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list | tuple):
            for item in node:
                walk(item)

    walk(message.blocks_json())
    return found


# What Slack may read as bold, italic or strike: every * and ~, and an _ at a word's edge (between
# two ASCII letters or digits it opens and closes nothing: snake_case).
MAY_FORMAT = re.compile(r"[*~]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def formatting_marks(message: SlackMessage) -> int:
    return sum(len(MAY_FORMAT.findall(outside_code(text))) for text in mrkdwn_texts(message))


def forged_report(hostname: str, pod: str, rule: str, status: VerificationStatus) -> IncidentReport:
    """A report whose alert-supplied values are the arguments, quoted in the reasons as the
    responder quotes them (verify.py, policy.py)."""
    fields = {**BASE_FIELDS, "k8s.pod.name": pod}
    alert = make_alert(fields, rule=rule, hostname=hostname)
    if status is VerificationStatus.UNVERIFIED:
        reason = f"alert came from host {hostname!r} but the pod runs on 'node-1'"
        withheld = f"alert not verified against the live pod: {reason}"
    else:
        reason = f'pods "{pod}" is forbidden'
        withheld = f"pod lookup failed: {reason}"
    decision = make_decision(
        unverified=status is VerificationStatus.UNVERIFIED, actions=(ActionName.NOTIFY,), withheld=(withheld,)
    )
    return make_report(alert=alert, decision=decision, verification=Verification(status, reason))


def test_a_forged_host_name_in_the_withheld_reason_cannot_format_it() -> None:
    report = forged_report("*boss*_says_~ok~", "triton-0", "Shell", VerificationStatus.UNVERIFIED)
    message = render_incident(report)
    text = visible_text(message.blocks)
    assert ":pause_button: *quarantine withheld*, because:" in text
    # Shown as look-alikes (\u2217 \u02cd \u223c): read the same, format nothing.
    host = "\u2217boss\u2217\u02cdsays\u02cd\u223cok\u223c"
    assert f"• alert not verified against the live pod: alert came from host '{host}'" in text
    assert formatting_marks(message) == formatting_marks(
        render_incident(forged_report("xbossxxsaysxxokx", "triton-0", "Shell", VerificationStatus.UNVERIFIED))
    )


def test_a_pod_name_in_a_lookup_failure_or_the_fallback_text_cannot_format_them() -> None:
    report = forged_report("node-1", "*x*_y_", "Shell ~in~ *pod*", VerificationStatus.LOOKUP_FAILED)
    message = render_incident(report)
    text = visible_text(message.blocks)
    pod, rule = "\u2217x\u2217\u02cdy\u02cd", "Shell \u223cin\u223c \u2217pod\u2217"
    assert f':grey_question: Not verified: pod lookup failed: pods "{pod}" is forbidden' in text
    assert message.text == f"[Critical] {rule} in ml/{pod}: quarantine withheld"
    repeat = render_repeat(dataclasses.replace(report, count=2))
    assert repeat.text.startswith(f"{rule} in ml/{pod}: seen 2 times")


FORMATTING_TEXT = st.text(alphabet="*_~ab .-", min_size=1, max_size=12).filter(lambda s: bool(s.strip()))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    hostname=FORMATTING_TEXT,
    pod=FORMATTING_TEXT,
    rule=FORMATTING_TEXT,
    unverified=st.booleans(),
)
def test_no_alert_value_adds_a_formatting_mark_outside_code(
    hostname: str, pod: str, rule: str, unverified: bool
) -> None:
    """Every *, _ and ~ Slack could read as bold, italic or strike is one of ours: the same count
    as for a benign alert of the same lengths (look-alikes keep the lengths, so the cuts agree)."""
    status = VerificationStatus.UNVERIFIED if unverified else VerificationStatus.LOOKUP_FAILED

    def render(twin: bool) -> list[SlackMessage]:
        def t(text: str) -> str:
            return "x" * len(text) if twin else text

        report = forged_report(t(hostname), t(pod), t(rule), status)
        return [render_incident(report), render_repeat(dataclasses.replace(report, count=3))]

    for hostile, benign in zip(render(twin=False), render(twin=True), strict=True):
        assert formatting_marks(hostile) == formatting_marks(benign)


# ---- 3. when the event happened, and when each action finished ------------------------------


def test_each_action_says_when_it_finished_in_the_context_line() -> None:
    base = make_report().alert.time_ns
    done = ActionOutcome(
        "quarantine", OutcomeStatus.QUARANTINED, started_ns=base, finished_ns=base + 2 * 10**9
    )
    released = ActionOutcome(
        "release", OutcomeStatus.RELEASED, "released by carol: fine", finished_ns=base + 86_400 * 10**9
    )
    predicted = ActionOutcome("block_destination", OutcomeStatus.DRY_RUN, finished_ns=base + 10**9)
    text = visible_text(render_incident(make_report(outcomes=(done, predicted, released))).blocks)
    # The same day as the alert: the time alone; another day: the date too. A prediction did nothing.
    assert " · actions finished: quarantine 10:00:02 UTC, release 2025-01-29 10:00:00 UTC" in text
    assert "block_destination 10:00:01" not in text
    many = tuple(dataclasses.replace(done, finished_ns=base + n * 10**9) for n in range(1, 9))
    text = visible_text(render_incident(make_report(outcomes=many)).blocks)
    assert "actions finished: 3 earlier, quarantine 10:00:04 UTC, quarantine 10:00:05 UTC," in text


# ---- 4. the top-level post does not claim a count it cannot keep -----------------------------


def test_the_top_level_post_says_its_count_is_as_of_its_last_repeat() -> None:
    """The post is rendered when the incident opens (and again when it is updated); later repeats
    are counted in the thread's repeat reply, so its own count says when it was true."""
    once = visible_text(render_incident(make_report()).blocks)
    assert "At 2025-01-28 10:00:00 UTC · later repeats are counted in the thread" in once
    seven = visible_text(render_incident(make_report(count=7)).blocks)
    assert (
        "Seen 7 times as of 2025-01-28 10:00:30 UTC (first 2025-01-28 10:00:00 UTC)"
        " · later repeats are counted in the thread"
    ) in seven
    assert "Seen 7 times · " not in seven
    # Without threads (an incoming webhook) each repeat is a message of its own.
    hook = visible_text(render_incident(make_report(count=7), repeats_in_thread=False).blocks)
    assert "(first 2025-01-28 10:00:00 UTC) · later repeats are posted on their own" in hook
    # A reply in its workload's thread is updated in place on every repeat: its count is current.
    reply = visible_text(render_incident(make_report(count=7), in_workload_thread=True).blocks)
    assert "Seen 7 times · first 2025-01-28 10:00:00 UTC · last 2025-01-28 10:00:30 UTC" in reply
    assert "later repeats" not in reply


# ---- 6. the header is plain text ------------------------------------------------------------


def header(message: SlackMessage) -> Mapping[str, Any]:
    block = message.blocks[0]
    assert block["type"] == "header" and block["text"]["type"] == "plain_text"
    return cast(Mapping[str, Any], block["text"])


def test_the_header_is_plain_text_as_slack_shows_it() -> None:
    rule = 'Write below /etc & "<home>"\nby\tshell \x1b[31m\u202e @channel'
    text = header(render_incident(make_report(alert=make_alert(rule=rule))))["text"]
    # No entities (plain_text shows them as typed); no line breaks; hidden characters shown; < >
    # as look-alikes (no "<" anywhere in a message, even where Slack would not read it).
    assert text == (
        ':rotating_light: Critical: Write below /etc & "\uff1chome\uff1e" by shell'
        " \\x1b[31m\\u202e @\u2060channel"
    )
    long = header(render_incident(make_report(alert=make_alert(rule="&" * 500))))["text"]
    assert len(long) == HEADER_LIMIT and long.endswith("&&…") and "&amp;" not in long
    forged = render_incident(
        make_report(alert=make_alert(rule="a & b"), decision=make_decision(unverified=True))
    )
    assert header(forged)["text"] == ":no_entry: UNVERIFIED Critical alert: a & b"


# ---- 7. the demo's commands can be pasted as they are ----------------------------------------


def test_the_demos_slack_commands_name_its_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "report.html"
    workdir = tmp_path / "work"
    assert cli_main(["demo", "--report", str(report), "--workdir", str(workdir)]) == 0, capsys.readouterr()
    html = report.read_text(encoding="utf-8")
    offered = re.findall(r"serving-guard (?:release|quarantine|block) --namespace [^<\n]*", html)
    assert offered
    config = f"--config {workdir / 'config.yaml'}"
    assert all(command.endswith(config) for command in offered), offered


def test_what_short_fields_leave_goes_to_the_long_one() -> None:
    fields = {**BASE_FIELDS, "custom.a": "x" * 3000, "custom.b": "short"}
    message = render_incident(make_report(alert=make_alert(fields)))
    text = visible_text(message.blocks)
    assert "custom.b=short" in text and "x" * 1200 not in text
    # Its head and its tail together take what the short one left: about 1,000 of its characters.
    cut = re.search(r"custom\.a=(x+) … (\d+) characters left out … (x+)\n", text)
    assert cut is not None, text
    assert len(cut.group(1)) + len(cut.group(3)) >= 1000 and int(cut.group(2)) <= 2000


def test_a_padded_path_keeps_its_end_in_view() -> None:
    """An executable or file path padded past its span's room (a long run of directories, then the
    payload's name) shows its head and its tail, as a padded command line does."""
    padded = "/tmp/" + "a/" * 1500 + "evil-miner"
    fields = {**BASE_FIELDS, "proc.exepath": padded, "fd.name": padded + ".conf"}
    text = visible_text(render_incident(make_report(alert=make_alert(fields))).blocks)
    executable = re.search(
        r"\*Executable\* `/tmp/a/a/[a/]+ … \d+ characters left out … [a/]+/evil-miner`", text
    )
    assert executable is not None, text
    assert re.search(r"\*File\* `/tmp/a/[a/]+ … \d+ characters left out … [a/]+/evil-miner\.conf`", text), (
        text
    )
