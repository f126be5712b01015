"""`serving-guard config check FILE [--rules FILE...]`: validate a config, print the effective
policy, and report what its policies can never do (a policy an earlier one shadows; with --rules, a
rule name or glob that matches no rule, a tag no rule carries, a source no rule is of, and shadows
seen through the rules' tags). Exit 2 for an
invalid config, 1 for such findings, else 0: also for a config `serve` refuses (no input) but
`ingest` reads, whose first line says so, and for warnings and notes (on stderr)."""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import dataclass

from responder.config import (
    CERTIFICATE_FILE,
    MAX_CERTIFICATE_BYTES,
    ActionName,
    Config,
    HttpInput,
    SecretRef,
    SlackMode,
    config_from_document,
    files_beside_config,
)
from responder.config import Journal as JournalSettings
from responder.errors import UserError
from responder.ingest.http import (
    SHARED_WITH_SENDERS,
    TokenSource,
    drill_shares_with,
    share_a_token,
    unauthenticated_input,
)
from responder.policy_review import (
    PolicyFinding,
    RuleTags,
    protected_only_policies,
    shadowed_among_given_rules,
    unmatched_rule_patterns,
    unmatched_tags_and_sources,
    unreachable_policies,
)
from responder.rulespack.alert_size import output_fields, rules_past_limit
from responder.rulespack.expand import load_paths
from responder.serve_review import serve_refusal, unannounced_cuts
from responder.validation_problems import located
from responder.yamlsource import FileRefused, YamlDocument, load_yaml_file, read_regular_file


def configure(parser: argparse.ArgumentParser) -> None:
    # The config is optional to argparse only so that a config swallowed by --rules (which takes
    # every file after it) gets an error that says so, not "file is required" (see _config_file).
    parser.usage = "%(prog)s FILE [-h] [--format {text,json}] [--rules FILE [FILE ...]]"
    parser.add_argument("file", nargs="?", metavar="FILE", help="the responder's YAML config")
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text: the effective policy in words (default); json: the same as one JSON document,"
        " with the findings",
    )
    parser.add_argument(
        "--rules",
        action="extend",
        nargs="+",
        metavar="FILE",
        help="the Falco rules files loaded beside it (the pack, Falco's own), in load order (--rules A B"
        " and --rules A --rules B alike): every rule name or glob in the policies must match a rule of"
        " these, and a policy an earlier one shadows through the rules' tags is found too. Give the"
        " config file first: --rules takes every file after it",
    )
    parser.epilog = (
        "exit status: 0 valid (also when only `ingest` can use it: the first line says why serve"
        " refuses it); 1 valid, with findings (stderr, file:line); 2 invalid"
    )


def _config_file(args: argparse.Namespace) -> str:
    if args.file is not None:
        return str(args.file)
    if args.rules and len(args.rules) > 1:
        raise UserError(
            f"no config file: --rules took every file after it, {args.rules[-1]} too; put the config"
            " file first: serving-guard config check CONFIG --rules RULES_FILE..."
        )
    raise UserError("no config file: serving-guard config check CONFIG [--rules RULES_FILE...]")


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
                # Only a bot posts to a channel of ours: a webhook has its own.
                "slack_channel": (policy.slack.channel or config.slack.default_channel)
                if config.slack.mode is SlackMode.BOT
                else None,
            }
            for policy in config.policies
        ],
        "default_actions": [a.value for a in config.default_actions],
        "guardrails": {
            "dry_run": guard.dry_run,
            "enforce_drills": guard.enforce_drills,
            "protected_namespaces": list(guard.protected_namespaces),
            "enforce_namespace_label": guard.enforce_namespace_label,
            "max_quarantines": guard.max_quarantines.model_dump(mode="json"),
            "max_blocks": guard.max_blocks.model_dump(mode="json"),
        },
        "quarantine": config.quarantine.model_dump(mode="json"),
        "block_destination": config.block_destination.model_dump(mode="json"),
        "dedupe_window_seconds": config.dedupe.window_seconds,
        "retry_withheld_seconds": list(config.dedupe.retry_withheld_seconds),
        "journal": config.journal.path,
        "inputs": {
            "http": config.inputs.http.listen if config.inputs.http.enabled else None,
            "grpc": config.inputs.grpc.address if config.inputs.grpc.enabled else None,
            # GET /v1/audit is served to the audit token alone: without one, not at all.
            "audit_over_http": config.inputs.http.enabled and config.inputs.http.audit_token is not None,
            # Alerts sent with the drill token are drills: without one, none is.
            "drills_over_http": config.inputs.http.enabled and config.inputs.http.drill_token is not None,
        },
        "slack": {
            "mode": config.slack.mode.value,
            "default_channel": config.slack.default_channel if config.slack.mode is SlackMode.BOT else None,
            "min_priority": config.slack.min_priority.label,
        },
    }


def _policy_channel(item: dict[str, object], mode: str) -> str:
    if mode == SlackMode.DISABLED:
        return "Slack channel: none (slack.mode is disabled)"
    if mode == SlackMode.WEBHOOK:
        return "Slack channel: the webhook's own"
    return f"Slack channel {item['slack_channel']}"


def _slack_summary(slack: dict[str, str | None]) -> str:
    mode = slack["mode"]
    if mode == SlackMode.DISABLED:
        return (
            "slack: disabled: nothing is posted and no channel is used; the journal (serving-guard audit)"
            " is the only record"
        )
    if mode == SlackMode.WEBHOOK:
        where = (
            "to the webhook's own channel (slack.default_channel and the policies' slack.channel are"
            " not used)"
        )
    else:
        where = f"to {slack['default_channel']} unless a policy names its channel"
    return f"slack: {mode}, posting {where}, from priority {slack['min_priority']}"


def _audit_summary(over_http: bool) -> str:
    if over_http:
        return "audit trail: GET /v1/audit, read with inputs.http.audit_token (never a sender's credential)"
    return (
        "audit trail: not served over HTTP (GET /v1/audit answers 403: inputs.http.audit_token is not set,"
        " and an alert sender's credential never reads it); serving-guard audit --config reads the journal"
    )


def _drills_summary(over_http: bool, enforced: bool) -> str:
    if not over_http:
        return (
            "drills: none over HTTP (inputs.http.drill_token is not set): every alert the input takes"
            " is acted on as Falco's, a `replay --live`'s too (a replay without --live is refused, 403)"
        )
    acted = (
        "acted on as Falco's (guardrails.enforce_drills)"
        if enforced
        else "decided in dry-run (guardrails.enforce_drills is off)"
    )
    return f"drills: alerts sent with inputs.http.drill_token are drills, in incidents of their own, {acted}"


def _text(policy: dict[str, object]) -> str:
    lines = []
    policies = policy["policies"]
    assert isinstance(policies, list)
    slack = policy["slack"]
    assert isinstance(slack, dict)
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
            f"   do {', '.join(item['actions'])}{cut}{trial}; {_policy_channel(item, slack['mode'])}"
        )
    default_actions = policy["default_actions"]
    assert isinstance(default_actions, list)
    lines.append(f"otherwise: {', '.join(default_actions) or 'nothing'}")
    lines.append(_slack_summary(slack))
    lines.append(f"journal: {policy['journal']}")
    inputs = policy["inputs"]
    assert isinstance(inputs, dict)
    guard = policy["guardrails"]
    assert isinstance(guard, dict)
    if inputs["http"] is not None:
        lines.append(_audit_summary(bool(inputs["audit_over_http"])))
        lines.append(_drills_summary(bool(inputs["drills_over_http"]), bool(guard["enforce_drills"])))
    # What blocks do is said only where a policy blocks.
    blocking = any("block_destination" in item["actions"] for item in policies)
    block = policy["block_destination"]
    assert isinstance(block, dict)
    lines.append(
        f"guardrails: dry_run={guard['dry_run']}, protected={', '.join(guard['protected_namespaces'])}, "
        f"opt-in label={guard['enforce_namespace_label'] or '(none: every namespace)'}, "
        f"at most {guard['max_quarantines']['count']} quarantines per "
        f"{guard['max_quarantines']['window_seconds']:g}s"
        + (
            f" and {guard['max_blocks']['count']} destinations newly blocked per"
            f" {guard['max_blocks']['window_seconds']:g}s, {guard['max_blocks']['per_pod']} of them per pod"
            + (
                " (past it, the pod's egress is quarantined instead)"
                if block["escalate_to_quarantine"]
                else " (past it, withheld)"
            )
            if blocking
            else ""
        )
    )
    waits = policy["retry_withheld_seconds"]
    assert isinstance(waits, list)
    lines.append(
        "an isolation withheld for a passing reason (API outage, breaker, failed call) is tried again "
        + (
            f"after {', '.join(f'{wait:g}' for wait in waits)} s in turn, and by a repeat"
            if waits
            else "by a repeat only (dedupe.retry_withheld_seconds: [])"
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
        secrets += [
            ("inputs.http.token", http.token),
            ("inputs.http.audit_token", http.audit_token),
            ("inputs.http.drill_token", http.drill_token),
        ]
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
        if path is None:
            continue
        try:
            read_regular_file(path, MAX_CERTIFICATE_BYTES, CERTIFICATE_FILE)
        except FileRefused as exc:
            notes.append(f"{key}: {path} {exc} {_ELSEWHERE}")
        except OSError:
            notes.append(f"{key}: cannot read {path} here {_ELSEWHERE}")
    return notes


_CUTS = {
    "both": "ingress and egress",
    "egress": "egress only (the pod still receives requests)",
    "ingress": "ingress only (the pod can still send)",
}


def unused_channels(config: Config, document: YamlDocument) -> list[str]:
    """Policies' own Slack channels in webhook mode, where every post goes to the webhook's own
    channel: set, and without effect."""
    if config.slack.mode is not SlackMode.WEBHOOK:
        return []
    return [
        located(
            document,
            ("policies", index, "slack", "channel"),
            f"{policy.slack.channel!r} has no effect: slack.mode is webhook, which posts to the"
            " webhook's own channel",
        )
        for index, policy in enumerate(config.policies)
        if policy.slack.channel
    ]


def _names_not_checked(config: Config) -> list[PolicyFinding]:
    """Without --rules, the first policy naming rules or tags: a misspelt name matches no alert, and
    "ok" must not read as having checked it (review-operator M1)."""
    for index, policy in enumerate(config.policies):
        for key, names in (("rules", policy.match.rules), ("tags", policy.match.tags)):
            if names:
                return [
                    PolicyFinding(
                        ("policies", index, "match", key),
                        "the policies' rule names and tags are not checked against any rules file: a"
                        " misspelt one matches no alert; give --rules with the rules Falco loads (the pack:"
                        " rules/serving_guard_rules.yaml) to check them",
                    )
                ]
    return []


@dataclass(frozen=True)
class RulesReview:
    """What the rules files given (--rules) show about a config: findings fail the check, notes
    and warnings do not."""

    findings: list[PolicyFinding]
    notes: list[PolicyFinding]
    warnings: list[str]


def _review(config: Config, rules_files: list[str] | None) -> RulesReview:
    if not rules_files:
        return RulesReview(unreachable_policies(config), _names_not_checked(config), [])
    ruleset = load_paths(rules_files)
    where = ", ".join(rules_files)
    enabled = [rule for rule in ruleset.rules.values() if rule.enabled]
    # A disabled rule raises no alert, so it takes none from a policy.
    rule_tags: RuleTags = {rule.name: frozenset(rule.tags) for rule in enabled}
    sources = {rule.source for rule in enabled}
    findings = [
        *unreachable_policies(config, rule_tags, where),
        *unmatched_rule_patterns(config, ruleset.rules.keys(), where),
        *unmatched_tags_and_sources(config, rule_tags, sources, where),
    ]
    notes = shadowed_among_given_rules(config, rule_tags, where)
    http = config.inputs.http
    oversized = rules_past_limit(((r.name, r.output, r.tags) for r in enabled), http.max_body_bytes)
    warnings = []
    if http.enabled and oversized:
        largest = oversized[0]
        warnings.append(
            f"inputs.http.max_body_bytes ({http.max_body_bytes}) is below the largest alert"
            f" {len(oversized)} rule(s) of {where} can make ({largest.rule!r}: {largest.worst_case_bytes}"
            " bytes at worst): the input answers such an alert 413 and Falco's http_output drops it"
            f" without a word; set it to at least that, or leave it out for the default"
            f" ({HttpInput.model_fields['max_body_bytes'].default}, room for append_output too)"
        )
    unread = _address_fields_unread(config, [rule.output for rule in enabled], where)
    if unread:
        warnings.append(unread)
    return RulesReview(findings, notes, warnings)


def _address_fields_unread(config: Config, outputs: list[str], where: str) -> str | None:
    """Where destinations are blocked, block_destination.address_fields none of which a rule's
    output carries: no alert names the remote address, and every block is "nothing to block"
    (review-operator L10: a typo, fd.sipp, passed)."""
    blocking = ActionName.BLOCK_DESTINATION in config.default_actions or any(
        ActionName.BLOCK_DESTINATION in policy.actions for policy in config.policies
    )
    fields = config.block_destination.address_fields
    carried = {field for output in outputs for field in output_fields(output)}
    if not blocking or carried.intersection(fields):
        return None
    return (
        f"block_destination.address_fields ({', '.join(fields)}): no rule of {where} outputs any of them,"
        " so no alert names the remote address and no destination is ever blocked (a misspelt field?);"
        " the pack's egress rule outputs fd.sip (unless Falco's append_output adds yours)"
    )


def _senders_tokens(config: Config) -> TokenSource | None:
    """The senders' tokens as serve reads them, where the input takes them and they read here; None
    otherwise (unreadable: a note of unreadable_here; refused: a finding of too_many_tokens)."""
    return _read_token(config, config.inputs.http.token, "token")


def shared_tokens(config: Config) -> list[PolicyFinding]:
    """serve's refusals of an audit token that holds a sender's token, and of a drill token that
    holds a sender's or the audit token, found where the secrets can be read here (the chart mounts
    one Secret's key twice under two paths; one that cannot be read is a note of unreadable_here)."""
    http = config.inputs.http
    senders = _senders_tokens(config)
    readers = _read_token(config, http.audit_token, "audit_token")
    drill = _read_token(config, http.drill_token, "drill_token")
    found = []
    if readers is not None and senders is not None and share_a_token(readers, senders):
        found.append(PolicyFinding(("inputs", "http", "audit_token"), SHARED_WITH_SENDERS))
    for other, key in ((senders, "token"), (readers, "audit_token")):
        if drill is not None and other is not None and share_a_token(drill, other):
            found.append(PolicyFinding(("inputs", "http", "drill_token"), drill_shares_with(key)))
    return found


def _read_token(config: Config, ref: SecretRef | None, key: str) -> TokenSource | None:
    """inputs.http.``key``'s tokens as serve reads them, or None (not set, or not read here)."""
    if not config.inputs.http.enabled or ref is None:
        return None
    try:
        return TokenSource(ref, what=f"inputs.http.{key}")
    except UserError:
        return None


def too_many_tokens(config: Config) -> list[PolicyFinding]:
    """serve's refusal of a token file holding more than a rotation's two tokens, where it can be
    read here: a finding (a note when it cannot be read: unreadable_here)."""
    http = config.inputs.http
    found = []
    tokens = (("token", http.token), ("audit_token", http.audit_token), ("drill_token", http.drill_token))
    for key, ref in tokens:
        if not http.enabled or ref is None:
            continue
        try:
            ref.read(f"inputs.http.{key}")
        except UserError:
            continue  # a note of unreadable_here
        try:
            TokenSource(ref, what=f"inputs.http.{key}")
        except UserError as exc:
            found.append(PolicyFinding(("inputs", "http", key), str(exc).partition(": ")[2]))
    return found


def short_token(config: Config) -> str | None:
    """serve's warning of a senders' token short enough to guess, where the secret can be read here."""
    senders = _senders_tokens(config)
    return senders.short() if senders is not None else None


def token_falcosidekick_drops(config: Config) -> str | None:
    """A senders' token holding ',' or ':': Falcosidekick splits its custom headers on both, and
    drops a header that does not split in two, so its posts carry no token (401) and nothing says
    why. Falco's own http_output sends none either way; only the token's content is looked at."""
    senders = _senders_tokens(config)
    if senders is None or not any(b"," in token or b":" in token for token in senders.current()):
        return None
    return (
        "inputs.http.token: a token holds ',' or ':', which Falcosidekick's webhook customheaders"
        " cannot carry (it splits headers on both and drops the Authorization header): its posts would be"
        " refused (401); use a token without them (`openssl rand -hex 32`)"
    )


def retries_past_window(config: Config) -> str | None:
    """The tries of dedupe.retry_withheld_seconds that come after the incident's window, which never
    run (its repeats open a new incident by then)."""
    dedupe = config.dedupe
    late = [at for at in itertools.accumulate(dedupe.retry_withheld_seconds) if at > dedupe.window_seconds]
    if not late:
        return None
    return (
        f"dedupe.retry_withheld_seconds: {len(late)} of its tries would come after dedupe.window_seconds"
        f" ({dedupe.window_seconds:g} s), at {', '.join(f'{at:g}' for at in late)} s, and never run;"
        " shorten the waits or lengthen the window"
    )


def _headline(path: str, problems: int, refusal: str | None) -> str:
    found = f", with {problems} finding(s)" if problems else ""
    if refusal is not None:
        return f"{path}: valid for `serving-guard ingest` only{found}; serve refuses it: {refusal}"
    return f"{path}: valid{found}" if problems else f"{path}: ok"


def _empty_document(document: YamlDocument) -> str | None:
    """A config file that sets nothing (empty, comments only, ``null``, ``{}``): valid, every setting
    its default, and most often a ConfigMap key mounted wrong. A warning, not a finding: serve
    refuses it already (no input), and defaults alone are a config `ingest` can run with."""
    if document.data:
        return None
    return (
        f"{document.file} sets nothing: every setting is its default (no policy, the journal at"
        f" {JournalSettings().path}); is it the file meant (a ConfigMap key mounted wrong)?"
    )


def run(args: argparse.Namespace) -> int:
    path = _config_file(args)
    document = load_yaml_file(path, "a config file")
    config = files_beside_config(config_from_document(document), path)
    review = _review(config, args.rules)
    findings = [*review.findings, *shared_tokens(config), *too_many_tokens(config)]
    findings.sort(key=lambda finding: finding.path)
    problems = [located(document, finding.path, finding.message) for finding in findings]
    refusal = serve_refusal(config)
    warnings = [
        warning
        for warning in [
            _empty_document(document),
            unannounced_cuts(config),
            retries_past_window(config),
            token_falcosidekick_drops(config),
            short_token(config),
            unauthenticated_input(config.inputs.http),
            *review.warnings,
        ]
        if warning
    ]
    notes = [
        located(document, note.path, note.message)
        for note in [*review.notes, *protected_only_policies(config)]
    ]
    policy = effective_policy(config)
    if args.format == "json":
        extra = {"serve_refuses": refusal, "warnings": warnings, "findings": problems, "notes": notes}
        print(json.dumps({**policy, **extra}, indent=2))
    else:
        print(_headline(path, len(problems), refusal))
        print(_text(policy))
    for problem in problems:
        print(problem, file=sys.stderr)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for note in notes + unused_channels(config, document) + unreadable_here(config):
        print(f"note: {note}", file=sys.stderr)
    return 1 if problems else 0
