"""What a config's policies can never do: shadowed policies and rule names that match no rule."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from responder.cli import main
from responder.commands.serve import warn_of_unreachable_policies
from responder.config import Config, PolicyMatch, load_config, load_config_text
from responder.policy_review import (
    covers,
    covers_through_rules,
    unmatched_rule_patterns,
    unmatched_tags_and_sources,
    unreachable_policies,
)
from responder.rulespack.expand import load_paths
from responder.rulespack.paths import PROJECT_ROOT, default_pack
from simulators.scenario import load_reference_policy
from tests.responder.test_worst_case_alert import DOCUMENTED_WORST_CASE

SHELL = "Shell in serving pod"


def match(**fields: Any) -> PolicyMatch:
    return PolicyMatch.model_validate(fields)


@pytest.mark.parametrize(
    ("earlier", "later"),
    [
        ({}, {"rules": [SHELL], "min_priority": "critical"}),  # matches everything
        ({"rules": ["*"]}, {"rules": ["Drift*"], "namespaces": ["ml"]}),
        ({"rules": ["Shell*"]}, {"rules": [SHELL]}),  # a glob covers the names it matches
        ({"rules": ["Drift*"]}, {"rules": ["Drift*"], "tags": ["T1059"]}),  # the same glob
        ({"tags": ["serving_guard"]}, {"tags": ["serving_guard"], "min_priority": "critical"}),
        ({"tags": ["a", "b"]}, {"tags": ["b"]}),
        ({"min_priority": "warning"}, {"min_priority": "error"}),
        ({"namespaces": ["ml-*"]}, {"namespaces": ["ml-serving", "ml-batch"]}),
        ({"pod_labels": {"tier": "gold"}}, {"pod_labels": {"tier": "gold", "app": "x"}}),
        ({"sources": ["syscall", "k8s_audit"]}, {"sources": ["syscall"]}),
    ],
)
def test_an_earlier_policy_that_takes_every_alert_covers_the_later(
    earlier: dict[str, Any], later: dict[str, Any]
) -> None:
    assert covers(match(**earlier), match(**later))


@pytest.mark.parametrize(
    ("earlier", "later"),
    [
        ({"rules": [SHELL]}, {}),  # the later one takes any rule
        ({"rules": ["Shell*"]}, {"rules": ["Sh*"]}),  # globs are compared as text: not provable
        ({"rules": [SHELL]}, {"rules": [SHELL, "Drift: new executable in serving pod"]}),
        ({"tags": ["a"]}, {}),
        ({"tags": ["a"]}, {"tags": ["a", "b"]}),  # an alert with tag b only
        ({"min_priority": "error"}, {"min_priority": "warning"}),
        ({"min_priority": "error"}, {}),
        ({"namespaces": ["ml-serving"]}, {"namespaces": ["ml-*"]}),
        ({"namespaces": ["*"]}, {}),  # an alert with no namespace (a host's) matches only the later one
        ({"pod_labels": {"tier": "gold"}}, {"pod_labels": {"tier": "silver"}}),
        ({"sources": ["syscall"]}, {}),
    ],
)
def test_a_narrower_earlier_policy_does_not(earlier: dict[str, Any], later: dict[str, Any]) -> None:
    assert not covers(match(**earlier), match(**later))


def config_with(*policies: dict[str, Any]) -> Config:
    return load_config_text(yaml.safe_dump({"policies": list(policies)}))


def test_a_quarantine_policy_below_a_broad_notify_one_is_named() -> None:
    config = config_with(
        {"name": "tell-everything", "match": {"tags": ["serving_guard"]}, "actions": ["notify"]},
        {
            "name": "isolate",
            "match": {"tags": ["serving_guard"], "min_priority": "critical"},
            "actions": ["quarantine"],
        },
        {"name": "other", "match": {"rules": ["Custom rule"]}, "actions": ["notify"]},
    )
    (finding,) = unreachable_policies(config)
    assert finding.path == ("policies", 1)
    assert finding.message == (
        "policy 'isolate' never applies: policy 'tell-everything' above it (policies[0]) matches every"
        " alert it does, and the first match decides; move it up or narrow the other"
    )


def test_rule_names_that_match_no_rule_are_named() -> None:
    config = config_with({"name": "p", "match": {"rules": [SHELL, "Shell in servng pod", "Drift*", "Nope*"]}})
    names = load_paths([str(default_pack())]).rules.keys()
    findings = unmatched_rule_patterns(config, names, "the pack")
    assert [(f.path, f.message) for f in findings] == [
        (("policies", 0, "match", "rules", 1), "'Shell in servng pod' matches no rule in the pack"),
        (("policies", 0, "match", "rules", 3), "'Nope*' matches no rule in the pack"),
    ]


def test_tags_no_rule_carries_and_sources_no_rule_is_of_are_named() -> None:
    config = config_with(
        {
            "name": "p",
            "match": {"tags": ["serving_guard", "serving_gaurd"], "sources": ["syscall", "k8saudit"]},
        }
    )
    rules = [rule for rule in load_paths([str(default_pack())]).rules.values() if rule.enabled]
    rule_tags = {rule.name: frozenset(rule.tags) for rule in rules}
    findings = unmatched_tags_and_sources(config, rule_tags, {rule.source for rule in rules}, "the pack")
    assert [(f.path, f.message) for f in findings] == [
        (("policies", 0, "match", "tags", 1), "no rule in the pack carries the tag 'serving_gaurd'"),
        (
            ("policies", 0, "match", "sources", 1),
            "no rule in the pack is of the source 'k8saudit' (theirs: syscall)",
        ),
    ]


def test_the_shipped_configs_have_no_findings() -> None:
    """The example config and the demo's reference policy, against the pack they ship with."""
    rules = load_paths([str(default_pack())]).rules
    names = rules.keys()
    rule_tags = {rule.name: frozenset(rule.tags) for rule in rules.values() if rule.enabled}
    for config in (
        load_config(str(PROJECT_ROOT / "responder" / "config.example.yaml")),
        Config.model_validate(load_reference_policy()),
    ):
        assert unreachable_policies(config) == []
        assert unmatched_rule_patterns(config, names, "the pack") == []
        assert unmatched_tags_and_sources(config, rule_tags, {"syscall"}, "the pack") == []


def test_config_check_reports_findings_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "policies.yaml"
    path.write_text(
        "policies:\n"
        "  - name: tell-everything\n"
        "    match: {rules: ['*']}\n"
        "    actions: [notify]\n"
        "  - name: isolate-shells\n"
        "    match:\n"
        "      rules:\n"
        f"        - {SHELL}\n"
        "        - Shell in servng pod\n"
        "      tags: [serving_gaurd]\n"
        "    actions: [notify, quarantine]\n"
    )
    pack = str(default_pack())
    assert main(["config", "check", str(path), "--rules", pack]) == 1
    captured = capsys.readouterr()
    # No input: valid for `ingest` only, as the first line says (exit 1 is for the findings).
    assert captured.out.startswith(f"{path}: valid for `serving-guard ingest` only, with 3 finding(s);")
    assert [line for line in captured.err.splitlines() if not line.startswith("warning: ")] == [
        f"{path}:5: policies[1]: policy 'isolate-shells' never applies: policy 'tell-everything' above it"
        " (policies[0]) matches every alert it does, and the first match decides; move it up or narrow"
        " the other",
        f"{path}:9: policies[1].match.rules[1]: 'Shell in servng pod' matches no rule in {pack}",
        f"{path}:10: policies[1].match.tags[0]: no rule in {pack} carries the tag 'serving_gaurd'",
    ]
    assert main(["config", "check", str(path), "--format", "json"]) == 1
    # Without --rules, only the shadowing is looked for.
    assert len(json.loads(capsys.readouterr().out)["findings"]) == 1
    assert main(["config", "check", str(path), "--rules", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err


def test_serve_warns_of_a_shadowed_policy_at_start(caplog: pytest.LogCaptureFixture) -> None:
    config = config_with(
        {"name": "everything", "actions": ["notify"]},
        {"name": "isolate", "match": {"rules": [SHELL]}, "actions": ["quarantine"]},
    )
    with caplog.at_level("WARNING", logger="serving_guard"):
        warn_of_unreachable_policies(config)
    (record,) = caplog.records
    assert record.getMessage().startswith("policies[1]: policy 'isolate' never applies: policy 'everything'")
    caplog.clear()
    warn_of_unreachable_policies(config_with({"name": "only", "actions": ["notify"]}))
    assert caplog.records == []


# What the pack's rules carry, in short: every rule `serving_guard`; shells and one-liners
# `mitre_execution` (and Drift); the egress rule `mitre_exfiltration`.
PACK_TAGS = {name: frozenset(rule.tags) for name, rule in load_paths([str(default_pack())]).rules.items()}


@pytest.mark.parametrize(
    ("earlier", "later"),
    [
        ({"tags": ["serving_guard"]}, {"rules": [SHELL]}),  # every rule of the pack carries it
        (
            {"tags": ["mitre_execution"]},
            {"rules": [SHELL, "Reverse shell or interpreter one-liner in serving pod"]},
        ),
        ({"tags": ["shell"]}, {"rules": [SHELL], "tags": ["T1059.004"]}),  # two tags of one rule
    ],
)
def test_a_tag_every_rule_of_the_later_policy_carries_covers_it_through_the_rules(
    earlier: dict[str, Any], later: dict[str, Any]
) -> None:
    assert not covers(match(**earlier), match(**later))  # the config alone cannot tell
    assert covers(match(**earlier), match(**later), PACK_TAGS)
    assert covers_through_rules(match(**earlier), match(**later), PACK_TAGS)


@pytest.mark.parametrize(
    ("earlier", "later"),
    [
        ({"tags": ["mitre_execution"]}, {"rules": ["Anomalous egress from serving pod"]}),  # lacks the tag
        ({"tags": ["mitre_execution"]}, {}),  # rules without it too
        (
            {"tags": ["serving_guard"], "min_priority": "critical"},
            {"rules": [SHELL]},
        ),  # other conditions stay
        ({"tags": ["serving_guard"]}, {"rules": ["Shell in servng pod"]}),  # a typo takes no rule: no shadow
        # A later policy naming no rule takes the alerts of rules in files not given too (Falco's own).
        ({"tags": ["serving_guard"]}, {}),
        ({"tags": ["shell"]}, {"tags": ["T1059.004"]}),
    ],
)
def test_a_tag_some_rule_of_the_later_policy_lacks_does_not(
    earlier: dict[str, Any], later: dict[str, Any]
) -> None:
    assert not covers(match(**earlier), match(**later), PACK_TAGS)


def test_a_disabled_rule_takes_no_alert_from_a_policy() -> None:
    rule_tags = {"Shell in serving pod": frozenset({"serving_guard"})}  # the other is disabled: absent
    earlier, later = match(tags=["serving_guard"]), match(rules=[SHELL, "Custom disabled rule"])
    assert covers(earlier, later, rule_tags)
    assert not covers(earlier, later, {**rule_tags, "Custom disabled rule": frozenset({"custom"})})


def test_config_check_finds_a_policy_shadowed_through_tags_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The audit's case: a notify-only policy on the pack's tag above a quarantine of shells."""
    path = tmp_path / "shadow.yaml"
    path.write_text(
        "inputs:\n  http: {listen: '127.0.0.1:0', allow_unauthenticated: true}\n"
        "policies:\n"
        "  - name: tell-everything\n"
        "    match: {tags: [serving_guard]}\n"
        "    actions: [notify]\n"
        "  - name: isolate-shells\n"
        f"    match: {{rules: [{SHELL}]}}\n"
        "    actions: [notify, quarantine]\n"
    )
    pack = str(default_pack())
    assert main(["config", "check", str(path)]) == 0  # without the rules, not provable
    capsys.readouterr()
    assert main(["config", "check", str(path), "--rules", pack]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{path}: valid, with 1 finding(s)\n")
    assert [line for line in captured.err.splitlines() if not line.startswith("warning: ")] == [
        f"{path}:7: policies[1]: policy 'isolate-shells' never applies: policy 'tell-everything' above it"
        f" (policies[0]) matches every alert it does (each rule of {pack} it matches, 'tell-everything'"
        " matches too, by the tag serving_guard they carry), and the first match decides; move it up or"
        " narrow the other"
    ]


def test_the_shipped_policies_are_not_shadowed_through_the_packs_tags() -> None:
    """The chart's defaults (the pack's tag, critical first, then the rest), the example config and
    the demo's reference policy."""
    chart_values = yaml.safe_load(
        (PROJECT_ROOT / "deploy" / "chart" / "serving-guard" / "values.yaml").read_text()
    )
    for config in (
        Config.model_validate({"policies": chart_values["policies"]}),
        load_config(str(PROJECT_ROOT / "responder" / "config.example.yaml")),
        Config.model_validate(load_reference_policy()),
    ):
        assert unreachable_policies(config, PACK_TAGS, "the pack") == []


def test_a_glob_below_a_tag_policy_is_a_note_not_a_finding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`*shell*` matches Falco's own "Terminal shell in container" too, which does not carry the
    pack's tag: the policy applies there, so it is not said to never apply."""
    earlier, later = match(tags=["serving_guard"]), match(rules=["*shell*"])
    assert not covers(earlier, later, PACK_TAGS)
    assert covers(earlier, later, PACK_TAGS, given_rules_only=True)
    # Once Falco's rule is among those given, its tags are known: the policy takes its alerts.
    with_falcos = {**PACK_TAGS, "Terminal shell in container": frozenset({"container", "shell"})}
    assert not covers(earlier, later, with_falcos, given_rules_only=True)

    path = tmp_path / "glob.yaml"
    path.write_text(
        "inputs:\n  http: {listen: '127.0.0.1:0', allow_unauthenticated: true}\n"
        "policies:\n"
        "  - name: pack-alerts\n"
        "    match: {tags: [serving_guard]}\n"
        "    actions: [notify]\n"
        "  - name: any-shell\n"
        "    match: {rules: ['*shell*']}\n"
        "    actions: [notify, quarantine]\n"
    )
    pack = str(default_pack())
    assert main(["config", "check", str(path), "--rules", pack]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{path}: ok\n")
    assert (
        f"note: {path}:7: policies[1]: policy 'any-shell' takes no alert of the rules of {pack} that policy"
        " 'pack-alerts' above it (policies[0]) does not take first: it applies only to rules loaded from"
        " other files its globs match (Falco's own?)"
    ) in captured.err.splitlines()
    assert main(["config", "check", str(path), "--rules", pack, "--format", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["findings"] == [] and len(document["notes"]) == 1


def test_config_check_warns_when_the_body_limit_is_below_the_packs_worst_alert(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An upgrade with --reuse-values keeps an older, smaller limit: Falco would drop the largest
    alerts answered 413 without a word."""
    path = tmp_path / "small.yaml"
    path.write_text(
        "inputs:\n  http: {listen: '127.0.0.1:0', allow_unauthenticated: true, max_body_bytes: 65536}\n"
    )
    pack = str(default_pack())
    assert main(["config", "check", str(path), "--rules", pack]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "max_body_bytes" in line]
    assert warnings == [
        f"warning: inputs.http.max_body_bytes (65536) is below the largest alert 8 rule(s) of {pack} can"
        f" make ('Model artifact tampering in serving pod': {DOCUMENTED_WORST_CASE} bytes at worst):"
        " the input answers such an alert 413 and Falco's http_output drops it without a word; set it to"
        " at least that, or leave it"
        " out for the default (327680, room for append_output too)"
    ]
    # The default limit holds every rule of the pack: nothing to say.
    path.write_text("inputs:\n  http: {listen: '127.0.0.1:0', allow_unauthenticated: true}\n")
    assert main(["config", "check", str(path), "--rules", pack]) == 0
    assert "max_body_bytes" not in capsys.readouterr().err
