from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import yaml

from responder.actions.pod_records import dated_credibly
from responder.alert import Alert, Priority
from responder.alert_json import alert_from_mapping
from responder.cluster.context import ContainerInfo, PodContext
from responder.cluster.verify import Verification, VerificationStatus
from responder.config import ActionName, Config, load_config_text
from responder.policy import GuardrailState, decide, dry_run_lifted, is_quarantined
from responder.records import decision_from_json, decision_to_json

Q = ActionName.QUARANTINE
N = ActionName.NOTIFY
A = ActionName.ANNOTATE
B = ActionName.BLOCK_DESTINATION
VERIFIED = Verification(VerificationStatus.VERIFIED, container_name="triton")


def make_config(**overrides: Any) -> Config:
    data: dict[str, Any] = {
        "policies": [
            {
                "name": "shells",
                "match": {"rules": ["Shell in serving pod", "Reverse shell*"], "min_priority": "notice"},
                "actions": ["notify", "quarantine"],
                "slack": {"channel": "#sec-oncall"},
            },
            {"name": "tagged", "match": {"tags": ["T1105"]}, "actions": ["annotate"]},
            {
                "name": "labelled",
                "match": {"pod_labels": {"tier": "gold"}},
                "actions": ["notify", "quarantine"],
            },
            {
                "name": "sandbox",
                "match": {"namespaces": ["ml-sand*"], "sources": ["syscall"]},
                "actions": ["notify"],
            },
        ],
        "slack": {"mode": "disabled", "default_channel": "#sec-alerts", "min_priority": "warning"},
    }
    data.update(overrides)
    return load_config_text(yaml.safe_dump(data))


def make_alert(
    rule: str = "Shell in serving pod",
    priority: str = "Notice",
    namespace: str = "ml",
    tags: list[str] | None = None,
) -> Alert:
    return alert_from_mapping(
        {
            "rule": rule,
            "priority": priority,
            "time": "2026-01-01T00:00:00.000000001Z",
            "output": "x",
            "hostname": "node-1",
            "tags": tags or ["serving_guard"],
            "output_fields": {"k8s.ns.name": namespace, "k8s.pod.name": "p", "container.id": "abcdefabcdef"},
        }
    )


def make_pod(
    namespace: str = "ml", labels: dict[str, str] | None = None, opted_in: bool = True
) -> PodContext:
    return PodContext(
        namespace=namespace,
        name="p",
        uid="u",
        node="node-1",
        labels=labels or {},
        containers=(ContainerInfo("triton", "img", container_id="containerd://abcdefabcdef0000"),),
        namespace_labels={"serving-guard.io/enforce": "true"} if opted_in else {},
    )


def test_matching_policy_quarantines_a_verified_alert_and_routes_to_its_channel() -> None:
    decision = decide(make_alert(), make_pod(), VERIFIED, GuardrailState(), make_config())
    assert decision.policy == "shells"
    assert decision.actions == (N, Q)
    assert decision.slack_channel == "#sec-oncall"
    assert not decision.withheld and not decision.unverified


def test_glob_rule_names_match() -> None:
    alert = make_alert(rule="Reverse shell or interpreter one-liner in serving pod", priority="Critical")
    assert decide(alert, make_pod(), VERIFIED, GuardrailState(), make_config()).policy == "shells"


def test_below_min_priority_falls_to_the_default_policy() -> None:
    decision = decide(
        make_alert(priority="Informational"), make_pod(), VERIFIED, GuardrailState(), make_config()
    )
    assert decision.policy == "default"
    assert decision.actions == (N,)
    # Informational is below slack.min_priority (warning): recorded, not sent.
    assert decision.notify is False


def test_tags_namespaces_sources_and_pod_labels_match() -> None:
    config = make_config()
    tagged = make_alert(rule="Runtime download", tags=["T1105", "serving_guard"])
    assert decide(tagged, make_pod(), VERIFIED, GuardrailState(), config).actions == (A,)
    gold = decide(
        make_alert(rule="Other"), make_pod(labels={"tier": "gold"}), VERIFIED, GuardrailState(), config
    )
    assert gold.policy == "labelled"
    # Without the live pod, label-based policies cannot match.
    unknown = Verification(VerificationStatus.POD_NOT_FOUND)
    assert decide(make_alert(rule="Other"), None, unknown, GuardrailState(), config).policy == "default"
    sandbox = make_alert(rule="Other", namespace="ml-sandbox")
    assert decide(sandbox, make_pod("ml-sandbox"), VERIFIED, GuardrailState(), config).policy == "sandbox"


@pytest.mark.parametrize(
    "unread",
    [
        Verification(VerificationStatus.LOOKUP_FAILED, "503 Service Unavailable"),
        Verification(VerificationStatus.POD_NOT_FOUND, 'pods "p" not found'),
    ],
)
def test_a_label_policy_that_may_apply_to_an_unread_pod_is_withheld_and_decided_again(
    unread: Verification,
) -> None:
    """The API blinks: the pod's labels are unknown. A policy that would quarantine the pod if it
    carries tier=gold must not silently fall to the default's notify (nothing withheld, so no
    second decision for the whole dedupe window): its quarantine is asked for and withheld."""
    decision = decide(make_alert(rule="Other"), None, unread, GuardrailState(), make_config())
    assert decision.policy == "default"
    assert Q in decision.requested and Q not in decision.actions
    assert (
        decision.withheld[0]
        == "policy labelled applies if the pod carries tier=gold, unknown until it is read"
    )
    assert decision.notify is True
    # Read, the pod decides it either way; and an alert that names no pod has no labels to wait for.
    gold = decide(
        make_alert(rule="Other"), make_pod(labels={"tier": "gold"}), VERIFIED, GuardrailState(), make_config()
    )
    assert gold.policy == "labelled" and not gold.withheld
    plain = decide(make_alert(rule="Other"), make_pod(), VERIFIED, GuardrailState(), make_config())
    assert plain.requested == (N,) and not plain.withheld
    no_pod = Verification(VerificationStatus.NO_POD_IDENTITY)
    assert not decide(make_alert(rule="Other"), None, no_pod, GuardrailState(), make_config()).withheld
    # A policy selected ahead of it by what the alert says settles it: nothing is unknown.
    shells = decide(make_alert(), None, unread, GuardrailState(), make_config())
    assert shells.policy == "shells" and not any("labelled" in reason for reason in shells.withheld)


def test_unverified_alert_never_isolates_and_always_notifies() -> None:
    forged = Verification(VerificationStatus.UNVERIFIED, "container.id abc is not a container of the pod")
    decision = decide(make_alert(priority="Debug"), make_pod(), forged, GuardrailState(), make_config())
    assert decision.unverified
    assert Q not in decision.actions and N in decision.actions
    assert decision.notify is True
    # Debug priority is below the policy min, so it falls to default; still a loud security notice.


def test_unverified_alert_matching_a_quarantine_policy_says_why_it_was_withheld() -> None:
    forged = Verification(
        VerificationStatus.UNVERIFIED, "alert came from host 'evil' but the pod runs on 'node-1'"
    )
    decision = decide(make_alert(), make_pod(), forged, GuardrailState(), make_config())
    assert decision.actions == (N,)
    assert "not verified" in decision.withheld[0] and "evil" in decision.withheld[0]


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (VerificationStatus.POD_NOT_FOUND, "pod not found"),
        (VerificationStatus.NO_POD_IDENTITY, "names no pod"),
        (VerificationStatus.LOOKUP_FAILED, "lookup failed"),
    ],
)
def test_unverifiable_alerts_withhold_quarantine(status: VerificationStatus, words: str) -> None:
    decision = decide(make_alert(), None, Verification(status, "boom"), GuardrailState(), make_config())
    assert Q not in decision.actions
    assert words in decision.withheld[0]
    assert decision.notify


def test_protected_namespace_is_never_quarantined() -> None:
    alert = make_alert(namespace="kube-system")
    decision = decide(alert, make_pod("kube-system"), VERIFIED, GuardrailState(), make_config())
    assert Q not in decision.actions
    assert "protected" in decision.withheld[0]


@pytest.mark.parametrize(
    ("released_at", "withheld"),
    [
        ("2026-01-01T00:10:00Z", True),  # released ten minutes after the alert's event
        ("2026-01-01T00:01:00Z", False),  # within the clocks' skew: the alert may be the newer
        ("2025-12-31T23:50:00Z", False),  # released before it: a new attack
    ],
)
def test_an_alert_older_than_a_persons_release_of_the_pod_does_not_isolate_it_again(
    released_at: str, withheld: bool
) -> None:
    """An alert taken up late (deferred while the pipeline was full, a slow API, a replayed file)
    whose event came before a person released the pod: their judgement is the newer one."""
    pod = dataclasses.replace(
        make_pod(),
        annotations={"serving-guard.io/released-at": released_at, "serving-guard.io/released-by": "bob"},
    )
    decision = decide(make_alert(), pod, VERIFIED, GuardrailState(), make_config())
    assert (Q not in decision.actions) is withheld
    if withheld:
        assert decision.withheld == (
            f"the pod was released by bob at {released_at}, after this alert's event"
            " (2026-01-01T00:00:00.000000001Z): not isolated again on it; quarantine it by hand if it"
            " should be",
        )
        assert decision.notify


def test_the_release_reason_says_when_an_alert_dated_ahead_came_not_its_event() -> None:
    """An alert dated ahead of when it came is weighed as of then (dated_credibly): the reason says
    that time is when it came, and what its event was dated (review-48 L1: it called it the event)."""
    pod = dataclasses.replace(
        make_pod(),
        annotations={
            "serving-guard.io/released-at": "2026-01-01T00:10:00Z",
            "serving-guard.io/released-by": "bob",
        },
    )
    came_ns = make_alert().time_ns - 1
    ahead = dated_credibly(dataclasses.replace(make_alert(), time_ns=came_ns + 3600 * 10**9), came_ns)
    decision = decide(ahead, pod, VERIFIED, GuardrailState(), make_config())
    assert decision.withheld == (
        "the pod was released by bob at 2026-01-01T00:10:00Z, after this alert came"
        " (2026-01-01T00:00:00.000000000Z; its event was dated 2026-01-01T01:00:00.000000000Z, ahead of the"
        " responder's clock): not isolated again on it; quarantine it by hand if it should be",
    )


@pytest.mark.parametrize(
    ("released_at", "withheld"),
    [
        ("2099-01-01T00:00:00Z", False),  # made up to hold back every alert to come
        ("2026-01-01T00:14:00Z", False),  # a workstation's clock ten minutes ahead
        ("2026-01-01T00:03:00Z", True),  # after the alert's event, before now
        ("2026-01-01T00:05:00Z", True),  # ahead of the responder's clock, within the skew
    ],
)
def test_a_release_record_dated_past_the_responders_clock_does_not_hold_back_an_alert(
    released_at: str, withheld: bool
) -> None:
    """A release is a person's judgement made after the alert's event, and before now: one dated
    later than the responder's clock (past the skew clocks may have) is a wrong clock or a forged
    record, and a new attack isolates the pod."""
    pod = dataclasses.replace(
        make_pod(),
        annotations={"serving-guard.io/released-at": released_at, "serving-guard.io/released-by": "bob"},
    )
    alert = make_alert()  # 2026-01-01T00:00:00, decided four minutes later
    now_ns = alert.time_ns + 4 * 60 * 10**9
    decision = decide(alert, pod, VERIFIED, GuardrailState(now_ns=now_ns), make_config())
    assert (Q not in decision.actions) is withheld


def test_namespace_must_opt_in_unless_the_label_is_disabled() -> None:
    pod = make_pod(opted_in=False)
    decision = decide(make_alert(), pod, VERIFIED, GuardrailState(), make_config())
    assert Q not in decision.actions and "not opted in" in decision.withheld[0]
    # The label it lacks, for Slack's next step (kept in the journal's record of the decision).
    assert decision.opt_in_missing == "serving-guard.io/enforce"
    assert decision_from_json(decision_to_json(decision)).opt_in_missing == "serving-guard.io/enforce"
    assert decide(make_alert(), make_pod(), VERIFIED, GuardrailState(), make_config()).opt_in_missing == ""
    open_config = make_config(guardrails={"enforce_namespace_label": None})
    assert Q in decide(make_alert(), pod, VERIFIED, GuardrailState(), open_config).actions


def test_circuit_breaker_turns_quarantine_into_a_loud_alert() -> None:
    config = make_config(guardrails={"max_quarantines": {"count": 2, "window_seconds": 60}})
    assert Q in decide(make_alert(), make_pod(), VERIFIED, GuardrailState(1), config).actions
    decision = decide(make_alert(), make_pod(), VERIFIED, GuardrailState(2), config)
    assert decision.breaker_open and Q not in decision.actions
    assert "circuit breaker open" in decision.withheld[0]
    assert decision.notify


def test_dry_run_keeps_the_action_and_marks_it() -> None:
    config = make_config(guardrails={"dry_run": True})
    decision = decide(make_alert(), make_pod(), VERIFIED, GuardrailState(100), config)
    assert decision.dry_run and Q in decision.actions  # the breaker does not count dry runs
    assert decision.summary().startswith("policy shells: dry-run")


def test_a_policy_on_trial_is_dry_run_while_the_others_act() -> None:
    trial = {"name": "trial", "match": {"rules": ["Anomalous egress*"]}, "actions": ["notify", "quarantine"]}
    enforced = {
        "name": "shells",
        "match": {"rules": ["Shell in serving pod"]},
        "actions": ["notify", "quarantine"],
    }
    config = make_config(policies=[enforced, {**trial, "dry_run": True}])

    egress = decide(
        make_alert("Anomalous egress from serving pod"), make_pod(), VERIFIED, GuardrailState(100), config
    )
    assert egress.dry_run and egress.dry_run_by == "policy" and Q in egress.actions
    assert not egress.breaker_open  # a prediction takes no breaker slot, so the breaker does not stop it
    assert egress.summary() == "policy trial: dry-run notify, quarantine"

    shell = decide(make_alert(), make_pod(), VERIFIED, GuardrailState(), config)
    assert not shell.dry_run and shell.dry_run_by == "" and Q in shell.actions
    assert decide(make_alert(), make_pod(), VERIFIED, GuardrailState(100), config).breaker_open


def test_the_global_dry_run_wins_over_a_policy_on_trial() -> None:
    trial = {"name": "trial", "match": {"rules": ["*"]}, "actions": ["annotate"], "dry_run": True}
    config = make_config(policies=[trial], guardrails={"dry_run": True})
    decision = decide(make_alert(), make_pod(), VERIFIED, GuardrailState(), config)
    assert decision.dry_run and decision.dry_run_by == "guardrails" and decision.actions == (A,)
    assert decision.summary() == "policy trial: dry-run annotate"


@pytest.mark.parametrize(
    ("dry_run_by", "guardrails", "policy_dry_run", "lifted"),
    [
        ("policy", False, False, True),  # the trial is over
        ("policy", False, True, False),  # still on trial
        ("policy", True, False, False),  # now everything is dry-run
        ("guardrails", False, False, True),  # the global switch is off
        ("guardrails", False, True, False),  # ... but this policy is on trial
        ("guardrails", True, False, False),
    ],
)
def test_a_dry_run_is_lifted_when_neither_switch_holds_it(
    dry_run_by: str, guardrails: bool, policy_dry_run: bool, lifted: bool
) -> None:
    shells = {
        "name": "shells",
        "match": {"rules": ["*"]},
        "actions": ["quarantine"],
        "dry_run": policy_dry_run,
    }
    config = make_config(policies=[shells], guardrails={"dry_run": guardrails})
    decision = decide(make_alert(), make_pod(), VERIFIED, GuardrailState(), make_config())
    predicted = dataclasses.replace(decision, dry_run_by=dry_run_by)
    assert dry_run_lifted(predicted, config) is lifted
    assert not dry_run_lifted(decision, config)  # not a dry-run: nothing to lift
    gone = dataclasses.replace(predicted, policy="renamed-since")
    assert dry_run_lifted(gone, config) is not guardrails
    told_only = dataclasses.replace(predicted, actions=(N,))  # nothing it would have changed
    assert not dry_run_lifted(told_only, config)


def test_quarantine_only_policy_still_tells_a_human_when_withheld() -> None:
    config = make_config(policies=[{"name": "silent", "match": {"rules": ["*"]}, "actions": ["quarantine"]}])
    decision = decide(
        make_alert(namespace="kube-system"), make_pod("kube-system"), VERIFIED, GuardrailState(), config
    )
    assert decision.actions == (N,) and decision.notify


def test_priority_order_helper() -> None:
    assert Priority.CRITICAL.at_least(Priority.NOTICE)


def test_a_policy_may_cut_one_way_and_the_decision_and_its_command_carry_the_cut() -> None:
    policies = [
        {
            "name": "shells",
            "match": {"rules": ["Shell in serving pod"]},
            "actions": ["quarantine"],
            "isolate": "egress",
        },
        {"name": "tagged", "match": {"tags": ["T1105"]}, "actions": ["annotate"]},
        {"name": "labelled", "match": {"pod_labels": {"tier": "gold"}}, "actions": ["quarantine"]},
    ]
    config = make_config(policies=policies)
    egress = decide(make_alert(), make_pod(), VERIFIED, GuardrailState(), config)
    assert egress.isolate == "egress"
    assert decision_from_json(decision_to_json(egress)) == egress
    # Others take quarantine.isolate; a decision that quarantines nothing has no cut.
    gold = decide(make_alert(rule="x"), make_pod(labels={"tier": "gold"}), VERIFIED, GuardrailState(), config)
    assert gold.policy == "labelled" and gold.isolate == "both"
    assert (
        decide(make_alert(rule="x", tags=["T1105"]), make_pod(), VERIFIED, GuardrailState(), config).isolate
        == ""
    )
    # Records from before cuts per policy read as quarantine.isolate's.
    assert decision_from_json({"policy": "shells"}).isolate == ""
    # A pod in any of our cuts is quarantined (the breaker costs no slot to re-assert it).
    assert is_quarantined(make_pod(labels={"serving-guard.io/quarantine": "true-egress"}), config)
    assert not is_quarantined(make_pod(labels={"serving-guard.io/quarantine": "nope"}), config)


def test_the_block_breaker_holds_back_the_block_alone_and_not_a_prediction() -> None:
    both = {
        "name": "egress",
        "match": {"rules": ["Anomalous egress*"]},
        "actions": ["notify", "quarantine", "block_destination"],
    }
    config = make_config(policies=[both], guardrails={"max_blocks": {"count": 3, "window_seconds": 60}})
    alert = make_alert("Anomalous egress from serving pod")
    under = decide(alert, make_pod(), VERIFIED, GuardrailState(0, 2), config)
    assert under.actions == (N, Q, B) and not under.block_breaker_open
    full = decide(alert, make_pod(), VERIFIED, GuardrailState(0, 3), config)
    assert full.actions == (N, Q) and full.block_breaker_open and not full.breaker_open
    assert full.withheld == (
        "block circuit breaker open: 3 destinations blocked in the last 60s (limit 3);"
        " no destination is blocked until the window passes",
    )
    # A pod blocked before keeps those blocks: said, as this address may be among them.
    blocked_pod = make_pod(labels={"serving-guard.io/block": "0123456789ab"})
    held = decide(alert, blocked_pod, VERIFIED, GuardrailState(0, 3), config)
    assert held.withheld[0].endswith("until the window passes; the pod's blocks in force stay")
    # The quarantine breaker leaves the block alone, in turn.
    quarantines_full = decide(alert, make_pod(), VERIFIED, GuardrailState(5, 0), config)
    assert quarantines_full.actions == (N, B) and quarantines_full.breaker_open
    # A prediction takes no slot, so the breaker does not stop it.
    trial = make_config(
        policies=[{**both, "dry_run": True}], guardrails={"max_blocks": {"count": 3, "window_seconds": 60}}
    )
    predicted = decide(alert, make_pod(), VERIFIED, GuardrailState(0, 3), trial)
    assert predicted.dry_run and B in predicted.actions and not predicted.block_breaker_open
