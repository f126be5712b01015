"""What Slack is told when an isolation the incident withheld for a passing reason is tried again by
the responder: the broadcast reply in its thread (what the retry did, found again by its action after
an ambiguous failure), and its own post, which leads with the retry's outcome, what withheld it
kept as history."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from responder.actions.outcome import BLOCK_DESTINATION, ActionOutcome, OutcomeStatus
from responder.notify.blocks import format_utc
from responder.notify.render import MessageKind, render_incident, render_retry
from tests.notify.slack_fixtures import make_decision, make_report, quarantined, visible_text
from tests.notify.test_lapse_render import assert_no_markup
from tests.notify.test_slack_render import HOSTILE_TEXT, assert_valid, headline_of

INCIDENT = "inc-0123456789abcdef0123"
TRIED_NS = 1_738_058_415_000_000_000  # 2025-01-28 10:00:15 UTC
API_DOWN = "pod lookup failed: GET /api/v1/namespaces/ml/pods/triton-0: HTTP 503"


def withheld(detail: str = API_DOWN, action: str = "quarantine", **extra: object) -> ActionOutcome:
    return ActionOutcome(action, OutcomeStatus.WITHHELD, detail, extra=dict(extra))


def tried(outcome: ActionOutcome) -> ActionOutcome:
    return ActionOutcome(
        outcome.action,
        outcome.status,
        outcome.detail,
        started_ns=TRIED_NS - 1,
        finished_ns=TRIED_NS,
        extra=outcome.extra,
    )


def test_the_reply_says_it_was_tried_again_what_came_of_it_and_when() -> None:
    message = render_retry(INCIDENT, "ml", "triton-0", tried(quarantined()), 7, make_decision())
    assert_valid(message)
    assert message.kind is MessageKind.RETRY and message.action_id == 7
    assert message.metadata()["event_payload"]["action_id"] == 7  # found again by it
    assert visible_text(message.blocks_json()) == (
        ":arrows_counterclockwise: *Tried again* on `ml/triton-0`, after it was withheld:\n"
        ":lock: *Quarantined*: the deny-all NetworkPolicy refuses the pod's traffic both ways"
        " (connections already open end only where the network plugin cuts them).\n"
        f"Incident `{INCIDENT}` · {format_utc(TRIED_NS)}"
    )
    assert message.text == f"ml/triton-0: incident {INCIDENT} tried again: quarantined"


def test_a_retry_that_failed_again_points_to_the_incidents_message_for_the_command() -> None:
    failed = tried(ActionOutcome("quarantine", OutcomeStatus.FAILED, "HTTP 500 creating the policy"))
    text = visible_text(render_retry(INCIDENT, "ml", "triton-0", failed, 8, make_decision()).blocks_json())
    assert "The pod is *not* isolated" in text
    assert "quarantine it by hand with the command in the incident's message." in text
    assert "below" not in text
    # The incident's own message still says "below", where its command is.
    post = render_incident(make_report(outcomes=(failed,)))
    assert "with the command below." in headline_of(post)


def test_a_failure_says_whether_the_responder_still_tries_it_by_itself() -> None:
    failed = tried(ActionOutcome("quarantine", OutcomeStatus.FAILED, "HTTP 500 creating the policy"))
    by_itself = headline_of(render_incident(make_report(outcomes=(failed,))))
    assert (
        "the responder tries it again by itself over the next minutes, and a repeat of this alert"
        in by_itself
    )
    # dedupe.retry_withheld_seconds: [] : only a repeat tries again.
    repeats_only = headline_of(render_incident(make_report(outcomes=(failed,)), tries_by_itself=False))
    assert "the next repeat of this alert tries again, or quarantine it by hand" in repeats_only
    assert "by itself" not in repeats_only
    # The last automatic try failed too: the tries are over, and both the post and the reply say so.
    last = tried(
        ActionOutcome(
            "quarantine",
            OutcomeStatus.FAILED,
            "HTTP 500 creating the policy",
            extra={"retried": True, "tries_over": 3},
        )
    )
    over = "the responder tried it again by itself 3 times: *nothing more is tried* unless this alert repeats"
    assert over in headline_of(render_incident(make_report(outcomes=(failed, last))))
    reply = visible_text(
        render_retry(INCIDENT, "ml", "triton-0", last, 9, make_decision(), before=(failed,)).blocks_json()
    )
    assert over in reply and "after it failed" in reply


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(detail=HOSTILE_TEXT)
def test_hostile_text_in_the_outcome_reaches_slack_as_text(detail: str) -> None:
    """An outcome's detail may quote the API's answer or a policy's name: never markup."""
    outcome = tried(ActionOutcome("quarantine", OutcomeStatus.FAILED, detail))
    message = render_retry(INCIDENT, "ml", "triton-0", outcome, 9, make_decision())
    assert_valid(message)
    assert_no_markup(message)


def test_the_incidents_post_leads_with_the_retry_and_what_withheld_it_is_history() -> None:
    headline = headline_of(render_incident(make_report(outcomes=(withheld(), tried(quarantined())))))
    assert headline == (
        ":lock: *Quarantined*: the deny-all NetworkPolicy refuses the pod's traffic both ways"
        " (connections already open end only where the network plugin cuts them).\n"
        f"_Before that:_\n• quarantine withheld: {API_DOWN}"
    )


def test_a_block_withheld_becomes_history_only_when_its_own_address_is_blocked() -> None:
    held = withheld("block circuit breaker open", BLOCK_DESTINATION, address="203.0.113.7")
    other = ActionOutcome(
        BLOCK_DESTINATION, OutcomeStatus.BLOCKED, extra={"address": "198.51.100.9", "labelled": True}
    )
    same = ActionOutcome(
        BLOCK_DESTINATION, OutcomeStatus.BLOCKED, extra={"address": "203.0.113.7", "labelled": True}
    )
    assert "_Before that:_" not in headline_of(render_incident(make_report(outcomes=(held, other))))
    headline = headline_of(render_incident(make_report(outcomes=(held, same))))
    assert headline.endswith("_Before that:_\n• block_destination withheld: block circuit breaker open")
