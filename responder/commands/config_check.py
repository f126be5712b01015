"""`serving-guard config check FILE [--rules FILE...]`: validate a config, print the effective
policy, and report what its policies can never do (a policy an earlier one shadows; with --rules, a
rule name or glob that matches no rule). Exit 2 for an invalid config, 1 for such findings."""

from __future__ import annotations

import argparse
import json
import os
import sys

from responder.config import Config, SecretRef, SlackMode, config_from_document, located
from responder.errors import UserError
from responder.policy_review import unmatched_rule_patterns, unreachable_policies
from responder.rulespack.expand import load_paths
from responder.yamlsource import load_yaml_file


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="the responder's YAML config")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument(
        "--rules",
        nargs="+",
        metavar="FILE",
        help="the Falco rules files loaded beside it (the pack, Falco's own): every rule name or glob"
        " in the policies must match a rule of these",
    )


def effective_policy(config: Config) -> dict[str, object]:
    guard = config.guardrails
    return {
        "policies": [
            {
                "name": policy.name,
                "match": {
                    "rules": list(policy.match.rules) or ["*"],
                    "tags": list(policy.match.tags),
                    "min_priority": policy.match.min_priority.label if policy.match.min_priority else None,
                    "namespaces": list(policy.match.namespaces),
                    "pod_labels": dict(policy.match.pod_labels),
                    "sources": list(policy.match.sources),
                },
                "actions": [a.value for a in policy.actions],
                "dry_run": policy.dry_run,
                # The cut its quarantines make (the policy's own, else quarantine.isolate).
                "isolate": config.policy_isolation(policy).value,
                "slack_channel": policy.slack.channel or config.slack.default_channel,
            }
            for policy in config.policies
        ],
        "default_actions": [a.value for a in config.default_actions],
        "guardrails": {
            "dry_run": guard.dry_run,
            "protected_namespaces": list(guard.protected_namespaces),
            "enforce_namespace_label": guard.enforce_namespace_label,
            "max_quarantines": guard.max_quarantines.model_dump(mode="json"),
            "max_blocks": guard.max_blocks.model_dump(mode="json"),
        },
        "quarantine": config.quarantine.model_dump(mode="json"),
        "block_destination": config.block_destination.model_dump(mode="json"),
        "dedupe_window_seconds": config.dedupe.window_seconds,
        "inputs": {
            "http": config.inputs.http.listen if config.inputs.http.enabled else None,
            "grpc": config.inputs.grpc.address if config.inputs.grpc.enabled else None,
        },
        "slack": config.slack.mode.value,
    }


def _text(policy: dict[str, object]) -> str:
    lines = []
    policies = policy["policies"]
    assert isinstance(policies, list)
    for index, item in enumerate(policies, 1):
        match = item["match"]
        conditions = [f"rules {', '.join(match['rules'])}"]
        if match["tags"]:
            conditions.append(f"any tag of {', '.join(match['tags'])}")
        if match["min_priority"]:
            conditions.append(f"priority >= {match['min_priority']}")
        if match["namespaces"]:
            conditions.append(f"namespace in {', '.join(match['namespaces'])}")
        if match["pod_labels"]:
            conditions.append("pod labels " + ", ".join(f"{k}={v}" for k, v in match["pod_labels"].items()))
        if match["sources"]:
            conditions.append(f"source in {', '.join(match['sources'])}")
        lines.append(f"{index}. {item['name']}: when {' and '.join(conditions)}")
        trial = " (dry-run: predicted and reported, nothing changed)" if item["dry_run"] else ""
        cut = f" cutting {_CUTS[item['isolate']]}" if "quarantine" in item["actions"] else ""
        lines.append(
            f"   do {', '.join(item['actions'])}{cut}{trial};"
            f" Slack channel {item['slack_channel'] or '(none)'}"
        )
    default_actions = policy["default_actions"]
    assert isinstance(default_actions, list)
    lines.append(f"otherwise: {', '.join(default_actions) or 'nothing'}")
    guard = policy["guardrails"]
    assert isinstance(guard, dict)
    # What blocks do is said only where a policy blocks.
    blocking = any("block_destination" in item["actions"] for item in policies)
    lines.append(
        f"guardrails: dry_run={guard['dry_run']}, protected={', '.join(guard['protected_namespaces'])}, "
        f"opt-in label={guard['enforce_namespace_label'] or '(none: every namespace)'}, "
        f"at most {guard['max_quarantines']['count']} quarantines per "
        f"{guard['max_quarantines']['window_seconds']:g}s"
        + (
            f" and {guard['max_blocks']['count']} destinations newly blocked per"
            f" {guard['max_blocks']['window_seconds']:g}s"
            if blocking
            else ""
        )
    )
    quarantine = policy["quarantine"]
    assert isinstance(quarantine, dict)
    others = "patched to exclude the pod" if quarantine["patch_other_policies"] else "reported"
    lines.append(
        f"quarantine: label {quarantine['label']}={quarantine['label_value']} into NetworkPolicy "
        f"{quarantine['network_policy']}, cutting {_CUTS[quarantine['isolate']]}; other policies that let "
        f"traffic through are {others}"
    )
    if blocking:
        block = policy["block_destination"]
        assert isinstance(block, dict)
        kept = ", ".join(block["never_block"]) or "(none)"
        lines.append(
            f"block_destination: the address in {' or '.join(block['address_fields'])}, through the pod's"
            f" own NetworkPolicy {block['network_policy_prefix']}-<hash of its uid> and label"
            f" {block['label']}; never blocked: {kept}"
        )
    return "\n".join(lines)


_ELSEWHERE = "(serve refuses to start on it, unless it is there where the responder runs)"


def unreadable_here(config: Config) -> list[str]:
    """The secrets and certificate files the responder would read at start that cannot be read
    here: `serve` refuses to start on them. Notes, not findings (the exit status is unchanged): the
    files may exist only where the responder runs."""
    secrets: list[tuple[str, SecretRef | None]] = []
    files: list[tuple[str, str | None]] = []
    http, grpc, slack = config.inputs.http, config.inputs.grpc, config.slack
    if http.enabled:
        secrets += [("inputs.http.token", http.token), ("inputs.http.audit_token", http.audit_token)]
        if http.tls is not None:
            tls = http.tls
            files += [
                ("inputs.http.tls.cert_file", tls.cert_file),
                ("inputs.http.tls.key_file", tls.key_file),
                ("inputs.http.tls.client_ca_file", tls.client_ca_file),
            ]
    if grpc.enabled and grpc.tls is not None:
        files += [
            ("inputs.grpc.tls.ca_file", grpc.tls.ca_file),
            ("inputs.grpc.tls.cert_file", grpc.tls.cert_file),
            ("inputs.grpc.tls.key_file", grpc.tls.key_file),
        ]
    if slack.mode is SlackMode.BOT:
        secrets.append(("slack.token", slack.token))
    elif slack.mode is SlackMode.WEBHOOK:
        secrets.append(("slack.webhook_url", slack.webhook_url))
    notes = []
    for key, ref in secrets:
        if ref is None:
            continue
        try:
            ref.read(key)
        except UserError as exc:
            notes.append(f"{exc} {_ELSEWHERE}")
    for key, path in files:
        if path is not None and not os.access(path, os.R_OK):
            notes.append(f"{key}: cannot read {path} here {_ELSEWHERE}")
    return notes


_CUTS = {
    "both": "ingress and egress",
    "egress": "egress only (the pod still receives requests)",
    "ingress": "ingress only (the pod can still send)",
}


def run(args: argparse.Namespace) -> int:
    document = load_yaml_file(args.file, "a config file")
    config = config_from_document(document)
    findings = unreachable_policies(config)
    if args.rules:
        ruleset = load_paths(list(args.rules))
        findings += unmatched_rule_patterns(config, ruleset.rules.keys(), ", ".join(args.rules))
    findings.sort(key=lambda finding: finding.path)
    problems = [located(document, finding.path, finding.message) for finding in findings]
    policy = effective_policy(config)
    if args.format == "json":
        print(json.dumps({**policy, "findings": problems}, indent=2))
    else:
        print(f"{args.file}: ok" if not problems else f"{args.file}: valid, with {len(problems)} finding(s)")
        print(_text(policy))
    for problem in problems:
        print(problem, file=sys.stderr)
    for note in unreadable_here(config):
        print(f"note: {note}", file=sys.stderr)
    return 1 if problems else 0
