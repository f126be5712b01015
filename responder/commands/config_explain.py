"""`serving-guard config explain FILE ALERT`: which policy one Falco alert meets under a config, why
each policy above it does not, what the decision asks for, and what the responder checks on the
live pod before it acts. Offline: no cluster is read (a pod's labels come from --pod-label)."""

from __future__ import annotations

import argparse
import codecs
import json
import re
import sys
from collections.abc import Mapping

from responder.actions import destination
from responder.alert import Alert, AlertError
from responder.alert_json import parse_falco_json
from responder.cluster.context import PodContext
from responder.cluster.verify import Verification, VerificationStatus
from responder.config import (
    ActionName,
    Config,
    Isolation,
    Policy,
    SlackMode,
    load_config,
)
from responder.errors import UserError
from responder.name_patterns import LABEL_KEY_PATTERN, LABEL_VALUE_PATTERN, PATTERN_WORDS
from responder.policy import DRY_RUN_BY_POLICY, ISOLATING, GuardrailState, decide, mismatch
from responder.terminal import printable
from responder.yamlsource import FileTooLarge, read_bounded, size_text


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="the responder's YAML config")
    parser.add_argument(
        "alert", help="a file holding one Falco JSON alert (as http_output posts it), or - for stdin"
    )
    parser.add_argument(
        "--pod-label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a label of the alert's pod, for policies that match pod_labels (repeatable)",
    )


def _labels(items: list[str]) -> dict[str, str]:
    labels = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--pod-label {item!r}: must be KEY=VALUE")
        # As Kubernetes takes them: a label no pod can carry would explain a match that never happens.
        if not re.fullmatch(LABEL_KEY_PATTERN, key):
            raise UserError(f"--pod-label {item!r}: the key {PATTERN_WORDS[LABEL_KEY_PATTERN]}")
        if value and not re.fullmatch(LABEL_VALUE_PATTERN, value):
            raise UserError(f"--pod-label {item!r}: the value {PATTERN_WORDS[LABEL_VALUE_PATTERN]}, or empty")
        labels[key] = value
    return labels


def _read_alert(path: str, limit: int) -> Alert:
    name = "stdin" if path == "-" else path
    # fd 0 closed when the command started (`<&-`): Python then has no sys.stdin at all.
    if path == "-" and sys.stdin is None:
        raise UserError("config explain: stdin is closed")
    try:
        raw = sys.stdin.buffer.read(limit + 1) if path == "-" else read_bounded(path, limit)
    except FileTooLarge:
        raw = b"x" * (limit + 1)
    except IsADirectoryError:
        raise UserError(f"{name}: is a directory, not a file holding an alert") from None
    except OSError as exc:
        raise UserError(f"{name}: cannot read: {exc.strerror}") from None
    if len(raw) > limit:
        raise UserError(
            f"{name}: larger than {size_text(limit)} (inputs.http.max_body_bytes): no alert is that large"
        )
    text = raw.removeprefix(codecs.BOM_UTF8).strip()
    try:
        # A byte-order mark opening the file is skipped, as `ingest` skips one (editors write it).
        return parse_falco_json(text)
    except AlertError as exc:
        if _several_json_lines(text):
            raise UserError(
                f"{name}: {exc}: config explain takes one alert; for JSON lines (one alert each), run"
                " `serving-guard ingest FILE` with a config whose guardrails.dry_run is true"
            ) from None
        raise UserError(f"{name}: {exc}") from None


def _several_json_lines(text: bytes) -> bool:
    """Two lines or more, each a JSON object of its own: JSON lines, not one alert."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        return False
    try:
        return all(isinstance(json.loads(line), dict) for line in lines[:2])
    except ValueError:
        return False


def _matches_with_its_labels(policy: Policy, alert: Alert) -> bool:
    """``policy`` matches ``alert`` on a pod that carries the labels it asks for."""
    if not policy.match.pod_labels:
        return False
    return mismatch(policy, alert, _pod_named_by(alert, policy.match.pod_labels)) is None


def _pod_named_by(
    alert: Alert, labels: Mapping[str, str], namespace_labels: Mapping[str, str] | None = None
) -> PodContext:
    """The pod the alert names, as explain assumes it: with ``labels`` (and its namespace's)."""
    return PodContext(
        alert.namespace or "",
        alert.pod or "",
        "",
        alert.hostname,
        labels=labels,
        namespace_labels=namespace_labels or {},
    )


def _names_a_pod(alert: Alert) -> bool:
    return bool(alert.namespace and alert.pod)


def explain(config: Config, alert: Alert, pod_labels: dict[str, str]) -> list[str]:
    """The explanation, line by line."""
    named = _names_a_pod(alert)
    pod = None
    if pod_labels and named:
        pod = _pod_named_by(alert, pod_labels)
    where = f"{alert.namespace}/{alert.pod}" if named else "(no pod named)"
    lines = [f"alert: {alert.rule!r}, priority {alert.priority.label}, source {alert.source}, pod {where}"]
    if alert.tags:
        lines.append(f"  tags: {', '.join(alert.tags)}")
    matched = None
    # The first policy that matches if the live pod carries its labels: the decision below is then
    # only the one for a pod that does not.
    depends: tuple[str, str] | None = None
    for index, policy in enumerate(config.policies, 1):
        if matched is not None:
            lines.append(f"{index}. {policy.name}: not tried (the first match decides)")
            continue
        reason = mismatch(policy, alert, pod)
        if reason is None:
            matched = policy
            lines.append(f"{index}. {policy.name}: MATCHES")
        elif pod is None and named and _matches_with_its_labels(policy, alert):
            # Whether it decides is the live pod's to say, not a "no".
            lines.append(f"{index}. {policy.name}: DEPENDS on the live pod's labels: {reason}")
            if depends is None:
                wanted = " ".join(f"--pod-label {k}={v}" for k, v in policy.match.pod_labels.items())
                depends = (policy.name, wanted)
        else:
            lines.append(f"{index}. {policy.name}: no: {reason}")
    if matched is None:
        lines.append("no policy matches: default_actions apply")
    if not named:
        return lines + _decision_without_a_pod(config, alert)
    guard = config.guardrails
    # The decision as it would be for a verified alert in an opted-in namespace with the breaker
    # closed: what the policy asks for; the checks that can take it away are listed after it.
    namespace_labels = {guard.enforce_namespace_label: "true"} if guard.enforce_namespace_label else {}
    assumed = _pod_named_by(alert, pod_labels, namespace_labels)
    decision = decide(alert, assumed, Verification(VerificationStatus.VERIFIED), GuardrailState(), config)
    lines.append(f"decision: {', '.join(a.value for a in decision.requested) or 'nothing'}")
    if depends is not None:
        name, wanted = depends
        lines.append(
            f"  ONLY for a pod without the labels policy {name} asks for: on one with them, {name}"
            f" decides (run again with {wanted} to see it)"
        )
    if decision.isolate:
        cut = config.quarantine.cut(Isolation(decision.isolate))
        lines.append(
            f"  quarantine cuts {decision.isolate}: label {config.quarantine.label}={cut.label_value} into"
            f" NetworkPolicy {cut.network_policy} (a pod already cut otherwise is widened, never narrowed)"
        )
    if ActionName.BLOCK_DESTINATION in decision.requested:
        lines.append(_block_line(config, alert))
    if decision.dry_run:
        cause = (
            f"policy {decision.policy} is in dry-run"
            if decision.dry_run_by == DRY_RUN_BY_POLICY
            else "guardrails.dry_run is on"
        )
        lines.append(
            f"  dry-run ({cause}): its actions on the pod are predicted and reported, nothing is changed"
        )
    # What the pipeline does, not what the policy asked for: a pod cut off is always told.
    lines += _slack_lines(
        config, decision.slack_channel, decision.notify, ActionName.NOTIFY in decision.actions
    )
    if any(a in ISOLATING for a in decision.requested):
        lines += _checks(config, alert, decision.requested)
    return lines


def _block_line(config: Config, alert: Alert) -> str:
    settings = config.block_destination
    target = destination.target_of(alert, settings.address_fields, settings.never_block)
    if isinstance(target, str):
        return f"  block_destination: nothing to block: {target}"
    return (
        f"  block_destination: {target.address} ({target.field}), through the pod's own NetworkPolicy"
        f" {settings.network_policy_prefix}-<hash of its uid> (made only where no other policy"
        " restricts the pod's egress)"
    )


def _decision_without_a_pod(config: Config, alert: Alert) -> list[str]:
    """The decision as the pipeline makes it for an alert that names no pod (a host event, Falco
    without Kubernetes metadata): nothing to verify, so no pod is acted on, and Slack is told."""
    verification = Verification(
        VerificationStatus.NO_POD_IDENTITY, "alert carries no k8s.ns.name/k8s.pod.name"
    )
    decision = decide(alert, None, verification, GuardrailState(), config)
    lines = [f"decision: {', '.join(a.value for a in decision.requested) or 'nothing'}"]
    held = ", ".join(a.value for a in decision.requested if a in ISOLATING)
    lines += [f"  {held} WITHHELD: {reason}" for reason in decision.withheld]
    return lines + _slack_lines(
        config, decision.slack_channel, decision.notify, ActionName.NOTIFY in decision.actions
    )


def _slack_lines(config: Config, channel: str | None, notify: bool, asked: bool) -> list[str]:
    if not asked:
        return [
            "  Slack: not asked for (only a withheld action, an unverified alert or a pod cut off is told)"
        ]
    if config.slack.mode is SlackMode.DISABLED:
        return ["  Slack: slack.mode is disabled: journaled only, no channel is used"]
    if not notify:
        return ["  Slack: not sent: the priority is below the policy's or slack.min_priority"]
    if config.slack.mode is SlackMode.WEBHOOK:
        # An incoming webhook posts to the channel it was made for, whatever the config names.
        unused = f" ({channel} is not used: slack.mode is webhook)" if channel else ""
        return [f"  Slack: the webhook's own channel{unused}"]
    return [f"  Slack: {channel}"]


def _checks(config: Config, alert: Alert, requested: tuple[ActionName, ...]) -> list[str]:
    """What the responder checks on the live pod and its guardrails before it acts."""
    guard = config.guardrails
    namespace = alert.namespace
    lines = ["before it acts, the responder checks:"]
    http = config.inputs.http
    if http.enabled and http.require_sender_matches_hostname:
        # Refused at the HTTP input otherwise (403): one node's certificate cannot speak for another's.
        claimed = alert.hostname or "(none)"
        lines.append(
            f"  - over HTTP, the alert came with a client certificate naming node {claimed}"
            " (inputs.http.require_sender_matches_hostname)"
        )
    container = alert.container_id or "(none: such an alert is never acted on)"
    if not config.cluster.verify_node:
        node = ""
    elif alert.hostname:
        node = f" on node {alert.hostname}"
    else:  # as the pipeline: an alert without a node to match is never verified (cluster.verify_node)
        node = " on the alert's node (it names none: such an alert is never acted on)"
    lines.append(
        f"  - the live pod {alert.namespace}/{alert.pod} has container {container}"
        f" (running, or restarted since){node}"
    )
    if namespace is not None and namespace in guard.protected_namespaces:
        lines.append(f"  - namespace {namespace} is protected: actions on the pod are ALWAYS withheld there")
    elif guard.enforce_namespace_label:
        lines.append(f"  - namespace {namespace} carries {guard.enforce_namespace_label}=true (opted in)")
    if ActionName.QUARANTINE in requested:
        limit = guard.max_quarantines
        window = f"{limit.window_seconds:g}s"
        lines.append(
            f"  - fewer than {limit.count} pods were quarantined in the last {window} (circuit breaker)"
        )
    if ActionName.BLOCK_DESTINATION in requested:
        blocks = guard.max_blocks
        lines.append(
            f"  - fewer than {blocks.count} destinations were newly blocked in the last"
            f" {blocks.window_seconds:g}s (block circuit breaker)"
        )
    return lines


def run(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    labels = _labels(args.pod_label)
    alert = _read_alert(args.alert, config.inputs.http.max_body_bytes)
    # Line by line: the alert's words (pod, tags, reasons quoting them) can hold escape sequences.
    print("\n".join(printable(line) for line in explain(config, alert, labels)))
    return 0
