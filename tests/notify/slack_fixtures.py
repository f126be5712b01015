"""Builders for the Slack tests: reports in every state, Slack settings pointing at the sink."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from responder.actions.outcome import ActionOutcome, OutcomeStatus
from responder.alert import FieldValue, Priority, build_alert
from responder.cluster.context import ContainerInfo, OwnerRef, PodContext
from responder.cluster.verify import Verification, VerificationStatus
from responder.config import ActionName, Slack
from responder.incident import IncidentKey, IncidentReport
from responder.policy import DRY_RUN_BY_GUARDRAILS, Decision
from simulators.slack_sink import DEFAULT_TOKEN, SlackSink

CONTAINER_ID = "0123456789ab"
FULL_CONTAINER_ID = "containerd://" + CONTAINER_ID + "cd" * 26
TIME_NS = 1_738_058_400_123_456_789  # 2025-01-28 10:00:00 UTC

BASE_FIELDS: dict[str, FieldValue] = {
    "k8s.ns.name": "ml",
    "k8s.pod.name": "triton-0",
    "container.id": CONTAINER_ID,
    "container.image.repository": "nvcr.io/nvidia/tritonserver",
    "proc.name": "bash",
    "proc.cmdline": "bash -i",
    "proc.pname": "tritonserver",
    "user.name": "root",
    "fd.name": "/etc/shadow",
    "evt.type": "openat",
}


def bot_settings(sink: SlackSink, **overrides: Any) -> Slack:
    data: dict[str, Any] = {
        "mode": "bot",
        "token": {"env": "SG_TEST_SLACK_TOKEN"},
        "default_channel": "#sec-alerts",
        "base_url": sink.base_url,
        "timeout_seconds": 5,
    }
    data.update(overrides)
    return Slack.model_validate(data)


def webhook_settings(**overrides: Any) -> Slack:
    data: dict[str, Any] = {"mode": "webhook", "webhook_url": {"env": "SG_TEST_SLACK_WEBHOOK"}}
    data.update(overrides)
    return Slack.model_validate(data)


TOKEN = DEFAULT_TOKEN


def make_alert(
    fields: Mapping[str, FieldValue] | None = None,
    *,
    rule: str = "Shell in serving pod",
    priority: Priority = Priority.CRITICAL,
    output: str = "10:00:00.123: Critical Shell in serving pod (user=root command=bash -i)",
    hostname: str = "node-1",
    tags: tuple[str, ...] = ("T1059", "serving_guard"),
) -> Any:
    return build_alert(
        rule=rule,
        priority=priority.label,
        time_ns=TIME_NS,
        source="syscall",
        output=output,
        fields=dict(BASE_FIELDS if fields is None else fields),
        tags=list(tags),
        hostname=hostname,
    )


def make_pod() -> PodContext:
    return PodContext(
        namespace="ml",
        name="triton-0",
        uid="uid-1",
        node="node-1",
        labels={"app": "triton"},
        containers=(
            ContainerInfo(
                name="triton",
                image="nvcr.io/nvidia/tritonserver:24.05-py3",
                image_id="nvcr.io/nvidia/tritonserver@sha256:" + "ab" * 32,
                container_id=FULL_CONTAINER_ID,
            ),
        ),
        owners=(OwnerRef("ReplicaSet", "triton-5d9f"), OwnerRef("Deployment", "triton")),
        namespace_labels={"serving-guard.io/enforce": "true"},
    )


def make_decision(**overrides: Any) -> Decision:
    data: dict[str, Any] = {
        "policy": "shell-or-reverse-shell",
        "actions": (ActionName.NOTIFY, ActionName.QUARANTINE),
        "requested": (ActionName.NOTIFY, ActionName.QUARANTINE),
        "slack_channel": "#sec-oncall",
    }
    # dry_run=True alone stands for guardrails.dry_run (Decision.dry_run follows dry_run_by).
    if overrides.pop("dry_run", False) and "dry_run_by" not in overrides:
        overrides["dry_run_by"] = DRY_RUN_BY_GUARDRAILS
    data.update(overrides)
    return Decision(**data)


def quarantined(**overrides: Any) -> ActionOutcome:
    data: dict[str, Any] = {"action": "quarantine", "status": OutcomeStatus.QUARANTINED}
    data.update(overrides)
    return ActionOutcome(**data)


def make_report(
    *,
    alert: Any = None,
    pod: PodContext | None = None,
    no_pod: bool = False,
    verification: Verification | None = None,
    decision: Decision | None = None,
    outcomes: tuple[ActionOutcome, ...] = (),
    count: int = 1,
    incident_id: str = "inc-0123456789abcdef0123",
) -> IncidentReport:
    alert = alert if alert is not None else make_alert()
    return IncidentReport(
        incident_id=incident_id,
        key=IncidentKey.of(alert),
        alert=alert,
        count=count,
        first_seen_ns=TIME_NS,
        last_seen_ns=TIME_NS + (count - 1) * 5_000_000_000,
        pod=None if no_pod else (pod or make_pod()),
        verification=verification or Verification(VerificationStatus.VERIFIED, container_name="triton"),
        decision=decision or make_decision(),
        outcomes=outcomes,
    )


def all_texts(blocks: Any) -> list[str]:
    """Every string inside the blocks (texts, fields, context elements), for invariant checks."""
    found: list[str] = []
    if isinstance(blocks, str):
        found.append(blocks)
    elif isinstance(blocks, Mapping):
        for value in blocks.values():
            found += all_texts(value)
    elif isinstance(blocks, list | tuple):
        for item in blocks:
            found += all_texts(item)
    return found


def visible_text(blocks: Any) -> str:
    """The mrkdwn/plain text of all text objects joined (what a human reads, still escaped)."""
    texts: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            if node.get("type") in ("mrkdwn", "plain_text") and isinstance(node.get("text"), str):
                texts.append(node["text"])
            for value in node.values():
                if isinstance(value, Mapping | list | tuple):
                    walk(value)
        elif isinstance(node, list | tuple):
            for item in node:
                walk(item)

    walk(blocks)
    return "\n".join(texts)
