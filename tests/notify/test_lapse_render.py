"""What Slack is told when the recheck finds that what an incident put on its pod no longer holds:
the broadcast reply in its thread, its own post (which leads with it), the incident opened by the
next alert (one line naming the earlier one), and a workload thread's count. What undid it comes
from the cluster (policy names): it reaches Slack as text, within Block Kit's limits."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from responder.actions.outcome import (
    BLOCK_DESTINATION,
    LAPSED_ACTION,
    LAPSED_LABEL_GONE,
    RECHECK,
    ActionOutcome,
    Lapse,
    OutcomeStatus,
)
from responder.notify.blocks import REASON_LIMIT
from responder.notify.escape import BACKTICK_LOOKALIKE
from responder.notify.render import EVENT_TYPE, MessageKind, SlackMessage, render_incident, render_lapse
from responder.policy import Reopened
from responder.records import decision_from_json, decision_to_json
from tests.notify.slack_fixtures import make_decision, make_report, quarantined, visible_text
from tests.notify.test_slack_render import (
    HOSTILE_TEXT,
    NON_EMPTY_HOSTILE,
    RAW_AMP,
    assert_valid,
    benign_twin,
    headline_of,
    text_of,
)

INCIDENT = "inc-0123456789abcdef0123"
EARLIER = "inc-fedcba98765432100123"
CHECKED_NS = 1_738_058_415_000_000_000  # 2025-01-28 10:00:15 UTC
GONE = "NetworkPolicy serving-guard-quarantine is gone"


def lapsed(detail: str = GONE, action: str = "quarantine", *, label_gone: bool = False) -> ActionOutcome:
    """The recheck's record, as the pipeline journals it."""
    return ActionOutcome(
        RECHECK,
        OutcomeStatus.LAPSED,
        detail,
        started_ns=CHECKED_NS - 2_000_000,
        finished_ns=CHECKED_NS,
        extra={LAPSED_ACTION: action, **({LAPSED_LABEL_GONE: True} if label_gone else {})},
    )


def blocked(address: str = "203.0.113.7") -> ActionOutcome:
    return ActionOutcome(
        BLOCK_DESTINATION, OutcomeStatus.BLOCKED, extra={"address": address, "labelled": True}
    )


def assert_no_markup(message: SlackMessage) -> None:
    for text in [message.text, *visible_text(message.blocks_json()).split("\n")]:
        assert "<" not in text and ">" not in text, text
        assert not RAW_AMP.search(text), text
        assert "@channel" not in text.lower() and "@here" not in text.lower(), text


# -- the reply in the incident's thread ------------------------------------------------------------


def test_the_reply_says_what_no_longer_holds_when_it_was_checked_and_what_comes_next() -> None:
    message = render_lapse(INCIDENT, "ml-serving", "vllm-0", lapsed(), 42)
    assert_valid(message)
    assert message.kind is MessageKind.LAPSE
    # Found again by its action after an ambiguous failure, as a by-hand reply is.
    assert message.metadata() == {
        "event_type": EVENT_TYPE,
        "event_payload": {"incident_id": INCIDENT, "kind": "lapse", "action_id": 42},
    }
    assert text_of(message) == (
        ":warning: *The quarantine no longer holds* on `ml-serving/vllm-0`: NetworkPolicy"
        " serving-guard-quarantine is gone.\n"
        "Checked at 2025-01-28 10:00:15 UTC.\n"
        "If the attack goes on, its next alert on the pod opens a new incident, which acts again; a"
        " one-off attack (a reverse shell alerts once) sends none, so do not wait for it.\n"
        f"Incident `{INCIDENT}` · 2025-01-28 10:00:15 UTC"
    )
    # With the command to quarantine the pod again by hand (the worker gives the incident's).
    command = "serving-guard quarantine --namespace ml-serving vllm-0 --incident inc-1"
    again = text_of(render_lapse(INCIDENT, "ml-serving", "vllm-0", lapsed(), 42, command=command))
    assert "*To quarantine it again now*" in again and f"```{command}```" in again
    assert message.text == (
        f"ml-serving/vllm-0: the quarantine of incident {INCIDENT} no longer holds"
        f" ({GONE}); the next alert opens a new incident"
    )


def test_a_block_that_no_longer_holds_is_said_as_a_destination_block() -> None:
    detail = "NetworkPolicy allow-partner now allows egress to 203.0.113.7"
    message = render_lapse(INCIDENT, "ml-serving", "vllm-0", lapsed(detail, BLOCK_DESTINATION), 7)
    assert_valid(message)
    assert text_of(message).startswith(
        f":warning: *The destination block no longer holds* on `ml-serving/vllm-0`: {detail}.\n"
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy=NON_EMPTY_HOSTILE, other=HOSTILE_TEXT, pod=NON_EMPTY_HOSTILE, block=st.booleans())
def test_cluster_text_in_the_reply_never_becomes_markup(
    policy: str, other: str, pod: str, block: bool
) -> None:
    """A policy's name (anyone who may write NetworkPolicies in the namespace chooses it) and the
    pod's reach Slack as text: no mention, link or code span of their own."""

    def render(twin: bool) -> SlackMessage:
        def t(text: str) -> str:
            return benign_twin(text) if twin else text

        detail = f"NetworkPolicy {t(policy)} now allows its ingress+egress; NetworkPolicy {t(other)} is gone"
        action = BLOCK_DESTINATION if block else "quarantine"
        return render_lapse(INCIDENT, "ml-serving", t(pod), lapsed(detail, action), 3)

    hostile, benign = render(twin=False), render(twin=True)
    assert_valid(hostile)
    assert_no_markup(hostile)
    # Code spans are exactly ours: cluster text adds no backtick anywhere.
    assert visible_text(hostile.blocks_json()).count("`") == visible_text(benign.blocks_json()).count("`")
    assert hostile.text.count("`") == 0
    if "`" in policy:
        assert BACKTICK_LOOKALIKE in visible_text(hostile.blocks_json())


def test_a_huge_lapse_stays_within_slacks_limits() -> None:
    """Every policy of a namespace may let the pod's traffic through: the words are bounded."""
    detail = "; ".join(f"NetworkPolicy {'&<>' * 80}-{n} now allows its ingress+egress" for n in range(400))
    reply = render_lapse(INCIDENT, "ml-serving", "p" * 253, lapsed(detail), 1)
    assert_valid(reply)
    assert_no_markup(reply)
    assert "…" in text_of(reply)
    post = render_incident(make_report(outcomes=(quarantined(), lapsed(detail))))
    assert_valid(post)
    reopened = render_incident(
        make_report(
            decision=make_decision(reopens=Reopened(EARLIER, Lapse("quarantine", detail), CHECKED_NS))
        )
    )
    assert_valid(reopened)
    assert_no_markup(reopened)
    line = next(line for line in headline_of(reopened).split("\n") if "*Reopens*" in line)
    assert len(line) < REASON_LIMIT + 200


# -- the incident's own post: the latest state leads ---------------------------------------------


def test_the_incidents_post_leads_with_the_lapse_and_what_it_undid_is_history() -> None:
    message = render_incident(make_report(outcomes=(quarantined(), lapsed())))
    assert_valid(message)
    assert headline_of(message) == (
        f":warning: *The quarantine no longer holds*: {GONE}. Checked at 2025-01-28 10:00:15 UTC; the next"
        " alert on the pod opens a new incident, which acts again.\n"
        "_Before that:_\n• quarantined"
    )
    assert message.text.endswith(f": quarantine no longer holds: {GONE}")
    # The label may still be on the pod: the release stays offered.
    assert "serving-guard release --namespace ml triton-0" in text_of(message)
    assert make_report(outcomes=(quarantined(), lapsed())).needs_eyes


def test_a_lapse_whose_label_is_gone_offers_no_release_of_it() -> None:
    """Nothing of the quarantine is left on the pod to release: a release command beside the
    lapse would be a second one for the same pod once the next alert's incident quarantines it."""
    label_gone = lapsed("its quarantine label is gone", label_gone=True)
    report = make_report(outcomes=(quarantined(), label_gone))
    assert not report.labelled and report.release_command() is None
    text = text_of(render_incident(report))
    assert "its quarantine label is gone" in text
    assert "serving-guard release" not in text and "To release" not in text
    # A block still on the pod is still offered for release: only the quarantine's label went.
    with_block = make_report(outcomes=(quarantined(), blocked(), label_gone))
    assert with_block.blocked and with_block.release_command() is not None
    # A block's label gone leaves the quarantine's release.
    block_gone = lapsed("its block label is gone", BLOCK_DESTINATION, label_gone=True)
    only_quarantine = make_report(outcomes=(quarantined(), blocked(), block_gone))
    assert only_quarantine.labelled and not only_quarantine.blocked
    # Read back from the journal's extra, as the outcome is stored.
    assert label_gone.lapse is not None and label_gone.lapse.label_gone


def test_a_lapsed_block_leads_and_leaves_the_quarantine_in_force() -> None:
    detail = "NetworkPolicy serving-guard-block-0a1b is gone"
    headline = headline_of(
        render_incident(make_report(outcomes=(quarantined(), blocked(), lapsed(detail, BLOCK_DESTINATION))))
    )
    lines = headline.split("\n")
    assert lines[0].startswith(f":warning: *The destination block no longer holds*: {detail}.")
    assert lines[1].startswith(":lock: *Quarantined*")
    assert lines[2:] == ["_Before that:_", "• blocked egress to 203.0.113.7"]


def test_a_quarantine_by_hand_after_the_lapse_leads_and_the_lapse_is_history() -> None:
    by_carol = quarantined(extra={"by_hand": "carol", "reason": "put it back"})
    headline = headline_of(render_incident(make_report(outcomes=(quarantined(), lapsed(), by_carol))))
    assert headline == (
        ":lock: *Quarantined*: the deny-all NetworkPolicy refuses the pod's traffic both ways"
        " (connections already open end only where the network plugin cuts them)."
        " :raised_hand: By hand, by *carol*: put it back.\n"
        f"_Before that:_\n• quarantined\n• quarantine no longer holds: {GONE}"
    )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy=NON_EMPTY_HOSTILE)
def test_cluster_text_in_the_incidents_post_never_becomes_markup(policy: str) -> None:
    def render(twin: bool) -> SlackMessage:
        name = benign_twin(policy) if twin else policy
        detail = f"NetworkPolicy {name} now allows its ingress+egress"
        reopens = Reopened(EARLIER, Lapse("quarantine", detail), CHECKED_NS)
        report = make_report(
            decision=make_decision(reopens=reopens), outcomes=(quarantined(), lapsed(detail))
        )
        return render_incident(report)

    hostile, benign = render(twin=False), render(twin=True)
    assert_valid(hostile)
    assert_no_markup(hostile)
    assert visible_text(hostile.blocks_json()).count("`") == visible_text(benign.blocks_json()).count("`")
    assert hostile.text.count("`") == 0


# -- the incident the next alert opens ------------------------------------------------------------


def test_the_incident_opened_after_a_lapse_says_in_one_line_which_it_reopens_and_why() -> None:
    reopens = Reopened(EARLIER, Lapse("quarantine", GONE), CHECKED_NS)
    decision = make_decision(reopens=reopens)
    message = render_incident(make_report(decision=decision, outcomes=(quarantined(),)))
    assert_valid(message)
    assert headline_of(message) == (
        ":lock: *Quarantined*: the deny-all NetworkPolicy refuses the pod's traffic both ways"
        " (connections already open end only where the network plugin cuts them).\n"
        f":arrows_counterclockwise: *Reopens* incident `{EARLIER}`: its quarantine no longer held ({GONE};"
        " checked at 2025-01-28 10:00:15 UTC)."
    )
    assert message.text == (
        f"[Critical] Shell in serving pod in ml/triton-0: quarantined (reopens {EARLIER}: its quarantine"
        " no longer held)"
    )
    # Read back from the journal (a restart), it says the same.
    assert decision_from_json(decision_to_json(decision)) == decision
    assert decision_from_json(decision_to_json(make_decision())).reopens is None


def test_a_workload_threads_root_counts_a_lapse() -> None:
    root = make_report(outcomes=(quarantined(),))
    text = text_of(render_incident(root, thread_replies=(OutcomeStatus.QUARANTINED, OutcomeStatus.LAPSED)))
    assert "in this thread: 1 quarantined, 1 no longer held." in text


def test_a_pod_gone_since_leads_the_post_and_offers_no_release() -> None:
    gone = ActionOutcome(
        RECHECK,
        OutcomeStatus.POD_GONE,
        "the pod was deleted since: what this incident put on it went with it",
        started_ns=CHECKED_NS - 2_000_000,
        finished_ns=CHECKED_NS,
    )
    report = make_report(outcomes=(quarantined(), gone))
    assert not report.labelled and report.release_command() is None
    message = render_incident(report)
    assert_valid(message)
    assert headline_of(message) == (
        ":ghost: *Pod gone*: the pod was deleted since: what this incident put on it went with it.\n"
        "_Before that:_\n• quarantined"
    )
    assert "serving-guard release" not in text_of(message)
