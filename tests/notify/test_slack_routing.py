from __future__ import annotations

from responder.alert import Priority
from responder.cluster.verify import Verification, VerificationStatus
from responder.config import Slack, load_config_text
from responder.notify.routing import SlackRoute, slack_route
from responder.policy import GuardrailState, decide
from tests.notify.slack_fixtures import make_alert, make_decision, make_pod

CONFIG = """
policies:
  - name: shells
    match: {rules: ["Shell in serving pod"]}
    actions: [notify, quarantine]
    slack: {channel: "#sec-oncall", min_priority: critical}
  - name: model-load
    match: {rules: ["Unexpected model load"]}
    actions: [notify]
slack:
  mode: bot
  token: {env: SG_TEST_SLACK_TOKEN}
  default_channel: "#sec-alerts"
  min_priority: warning
"""

BOT = Slack.model_validate({"mode": "bot", "token": {"env": "T"}, "default_channel": "#sec-alerts"})
WEBHOOK = Slack.model_validate({"mode": "webhook", "webhook_url": {"env": "W"}})


def test_policy_channel_else_default_and_priority_from_the_decision() -> None:
    config = load_config_text(CONFIG)
    verified = Verification(VerificationStatus.VERIFIED, container_name="triton")
    shell = decide(make_alert(), make_pod(), verified, GuardrailState(), config)
    assert slack_route(shell, config.slack) == SlackRoute("#sec-oncall")
    model = make_alert(rule="Unexpected model load", priority=Priority.WARNING)
    assert slack_route(decide(model, make_pod(), verified, GuardrailState(), config), config.slack) == (
        SlackRoute("#sec-alerts")
    )
    # Below the minimum: not sent (journaled).
    quiet = make_alert(rule="Unexpected model load", priority=Priority.NOTICE)
    assert slack_route(decide(quiet, make_pod(), verified, GuardrailState(), config), config.slack) is None
    # ... unless the pod is cut off: a quarantine is always told, below the policy's own minimum too.
    quiet_shell = decide(make_alert(priority=Priority.ERROR), make_pod(), verified, GuardrailState(), config)
    assert slack_route(quiet_shell, config.slack) == SlackRoute("#sec-oncall")


def test_a_cut_is_told_even_when_the_policy_asks_for_no_message() -> None:
    """A policy listing quarantine or block_destination without notify still tells on-call: a pod
    cut off (and whether the cut held, or failed) is never left for someone to discover; a dry-run
    prediction and a record on the pod (annotate) follow the policy's actions."""
    config = load_config_text(
        CONFIG.replace("actions: [notify, quarantine]", "actions: [quarantine]").replace(
            "actions: [notify]", "actions: [annotate]"
        )
    )
    verified = Verification(VerificationStatus.VERIFIED, container_name="triton")
    cut = decide(make_alert(), make_pod(), verified, GuardrailState(), config)
    assert cut.notify and slack_route(cut, config.slack) == SlackRoute("#sec-oncall")
    annotated = decide(
        make_alert(rule="Unexpected model load", priority=Priority.WARNING),
        make_pod(),
        verified,
        GuardrailState(),
        config,
    )
    assert not annotated.notify
    trial = load_config_text(
        CONFIG.replace("actions: [notify, quarantine]", "actions: [quarantine]\n    dry_run: true")
    )
    assert not decide(make_alert(), make_pod(), verified, GuardrailState(), trial).notify


def test_a_possible_forgery_is_always_sent_whatever_the_priority() -> None:
    config = load_config_text(CONFIG)
    forged = make_alert(priority=Priority.DEBUG)
    mismatch = Verification(VerificationStatus.UNVERIFIED, "container.id is not a container of the pod")
    decision = decide(forged, make_pod(), mismatch, GuardrailState(), config)
    assert decision.unverified
    assert slack_route(decision, config.slack) == SlackRoute("#sec-oncall")


def test_disabled_webhook_and_not_notified() -> None:
    assert slack_route(make_decision(), Slack()) is None
    assert slack_route(make_decision(), WEBHOOK) == SlackRoute(None)
    assert slack_route(make_decision(notify=False), BOT) is None
    assert slack_route(make_decision(slack_channel=None), BOT) == SlackRoute("#sec-alerts")
