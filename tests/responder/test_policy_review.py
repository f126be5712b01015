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
from responder.policy_review import covers, unmatched_rule_patterns, unreachable_policies
from responder.rulespack.expand import load_paths
from responder.rulespack.paths import PROJECT_ROOT, default_pack
from simulators.scenario import load_reference_policy

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


def test_the_shipped_configs_have_no_findings() -> None:
    """The example config and the demo's reference policy, against the pack they ship with."""
    names = load_paths([str(default_pack())]).rules.keys()
    for config in (
        load_config(str(PROJECT_ROOT / "responder" / "config.example.yaml")),
        Config.model_validate(load_reference_policy()),
    ):
        assert unreachable_policies(config) == []
        assert unmatched_rule_patterns(config, names, "the pack") == []


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
        "    actions: [notify, quarantine]\n"
    )
    pack = str(default_pack())
    assert main(["config", "check", str(path), "--rules", pack]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{path}: valid, with 2 finding(s)\n")
    assert captured.err.splitlines() == [
        f"{path}:5: policies[1]: policy 'isolate-shells' never applies: policy 'tell-everything' above it"
        " (policies[0]) matches every alert it does, and the first match decides; move it up or narrow"
        " the other",
        f"{path}:9: policies[1].match.rules[1]: 'Shell in servng pod' matches no rule in {pack}",
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
