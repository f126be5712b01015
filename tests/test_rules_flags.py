"""`--rules` and `--override` take several rules files the same way in every command: `--rules A B`
and `--rules A --rules B` both give [A, B], in load order. Before, replay, demo and rules test took
one (a second --rules silently replaced the first), config check kept only its last --rules, and
`rules test --override A B` was refused though the README showed it. Where --rules takes every word
after it, scenario names it took are said to be; the metavars agree (--timeout SECONDS, --workdir
DIR, --rules FILE)."""

from __future__ import annotations

import argparse
import importlib
import json
import re
from pathlib import Path

import pytest

from responder.cli import COMMANDS, main
from responder.rulespack.examples import load_examples
from responder.rulespack.paths import default_examples

# (command, the arguments it needs besides the flag, the flag, where argparse keeps it)
FLAGS = [
    (("config", "check"), ["c.yaml"], "--rules", "rules"),
    (("rules", "test"), [], "--rules", "rules"),
    (("rules", "test"), [], "--override", "override"),
    (("simulate",), ["all"], "--rules", "rules"),
    (("replay",), ["all", "--file", "-", "--pod", "ml-serving/x-0"], "--rules", "rules"),
    (("demo",), [], "--rules", "rules"),
]


def _parser(words: tuple[str, ...]) -> argparse.ArgumentParser:
    command = next(command for command in COMMANDS if command.words == words)
    parser = argparse.ArgumentParser(prog=f"serving-guard {' '.join(words)}")
    importlib.import_module(command.module).configure(parser)
    return parser


@pytest.mark.parametrize(
    ("words", "needed", "flag", "dest"), FLAGS, ids=[f"{' '.join(w)} {f}" for w, _, f, _ in FLAGS]
)
def test_both_forms_give_every_file_in_load_order(
    words: tuple[str, ...], needed: list[str], flag: str, dest: str
) -> None:
    parser = _parser(words)
    for form in (
        [flag, "a.yaml", "b.yaml"],
        [flag, "a.yaml", flag, "b.yaml"],
    ):
        assert getattr(parser.parse_args([*needed, *form]), dest) == ["a.yaml", "b.yaml"], form
    mixed = [flag, "a.yaml", "b.yaml", flag, "c.yaml"]
    assert getattr(parser.parse_args([*needed, *mixed]), dest) == ["a.yaml", "b.yaml", "c.yaml"]
    assert getattr(parser.parse_args(needed), dest) in (None, [])


@pytest.mark.parametrize(
    ("words", "shown"),
    [
        (("simulate",), ["--rules FILE [FILE ...]", "--workdir DIR", "--timeout SECONDS"]),
        (("replay",), ["--rules FILE [FILE ...]", "--timeout SECONDS"]),
        (("demo",), ["--rules FILE [FILE ...]", "--workdir DIR", "--timeout SECONDS"]),
        (("verify",), ["--timeout SECONDS"]),
        (("rules", "test"), ["--rules FILE [FILE ...]", "--override FILE [FILE ...]"]),
        (("config", "check"), ["--rules FILE [FILE ...]"]),
    ],
)
def test_the_metavars_agree(words: tuple[str, ...], shown: list[str]) -> None:
    text = _parser(words).format_help()
    for option in shown:
        assert option in text, option
    assert not re.search(
        r"--(rules|override|workdir|timeout|scenarios-dir) [A-Z_]*(RULES|OVERRIDE|WORKDIR|TIMEOUT)", text
    )


SHELL = "Shell in serving pod"
FORGED = ["--pod", "ml-serving/x-0", "--forge", "--run-id", "run-1234"]


@pytest.fixture
def pack_and_tuning(tmp_path: Path) -> tuple[Path, Path]:
    """A rule, and a tuning file that replaces its output (it defines no rule of its own)."""
    pack = tmp_path / "pack.yaml"
    pack.write_text(
        f"- rule: {SHELL}\n  desc: d\n  condition: proc.name = sh\n  output: first %proc.cmdline\n"
        "  priority: CRITICAL\n  tags: [mine]\n",
        encoding="utf-8",
    )
    tuning = tmp_path / "tuning.yaml"
    tuning.write_text(
        f"- rule: {SHELL}\n  output: tuned %proc.cmdline\n  override:\n    output: replace\n",
        encoding="utf-8",
    )
    return pack, tuning


@pytest.mark.parametrize("form", ["one flag", "repeated"])
def test_replay_follows_every_rules_file_in_load_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pack_and_tuning: tuple[Path, Path], form: str
) -> None:
    """`replay --rules pack.yaml --rules my.yaml` used my.yaml alone (a tuning file, no rule)."""
    pack, tuning = pack_and_tuning
    rules = ["--rules", str(pack), str(tuning)]
    if form == "repeated":
        rules = ["--rules", str(pack), "--rules", str(tuning)]
    out_file = tmp_path / "alerts.jsonl"
    assert main(["replay", "shell-in-serving-pod", "--file", str(out_file), *FORGED, *rules]) == 0
    capsys.readouterr()
    for line in out_file.read_text(encoding="utf-8").splitlines():
        alert = json.loads(line)
        assert alert["priority"] == "Critical" and alert["tags"] == ["mine"]
        assert alert["output"].split(": ", 1)[1].startswith("Critical tuned ")


def test_replay_says_when_rules_took_the_scenarios(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pack_and_tuning: tuple[Path, Path]
) -> None:
    pack, _ = pack_and_tuning
    out_file = tmp_path / "alerts.jsonl"
    argv = ["replay", "--file", str(out_file), *FORGED, "--rules", str(pack), "shell-in-serving-pod"]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        "serving-guard: error: no scenario named: --rules took every word after it,"
        " 'shell-in-serving-pod' too; name the scenarios first (serving-guard replay SCENARIO..."
        " --rules FILE...) or end the files with --\n"
    )
    assert not out_file.exists()
    # `--` ends the files.
    assert main([*argv[:-1], "--", "shell-in-serving-pod"]) == 0
    capsys.readouterr()
    assert out_file.exists()


def test_simulate_says_when_rules_took_the_scenarios(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from responder.rulespack.paths import default_pack

    argv = ["simulate", "--workdir", str(tmp_path), "--rules", str(default_pack()), "all"]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        "serving-guard: error: no scenario named: --rules took every word after it, 'all' too; name the"
        " scenarios first (serving-guard simulate SCENARIO... --rules FILE...) or end the files with --\n"
    )
    # Without scenarios and without a word taken, as before.
    assert main(["simulate", "--workdir", str(tmp_path), "--rules", str(default_pack())]) == 2
    assert capsys.readouterr().err == (
        "serving-guard: error: name at least one scenario (or all), or --cleanup\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_config_check_reads_every_rules_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`config check c.yaml --rules a.yaml --rules b.yaml` read b.yaml alone: R1 'matched no rule'."""
    for name, rule in (("a.yaml", "R1"), ("b.yaml", "R2")):
        (tmp_path / name).write_text(
            f"- rule: {rule}\n  desc: d\n  condition: proc.name = x\n  output: o %proc.name\n"
            "  priority: WARNING\n",
            encoding="utf-8",
        )
    config = tmp_path / "c.yaml"
    config.write_text(
        "inputs:\n  http:\n    allow_unauthenticated: true\n"
        "policies:\n  - name: p\n    match: {rules: [R1, R2]}\n    actions: [notify]\n",
        encoding="utf-8",
    )
    a, b = str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")
    for rules in (["--rules", a, b], ["--rules", a, "--rules", b]):
        assert main(["config", "check", str(config), *rules]) == 0, rules
        assert "matches no rule" not in capsys.readouterr().err
    assert main(["config", "check", str(config), "--rules", b]) == 1
    assert f"'R1' matches no rule in {b}" in capsys.readouterr().err


def test_rules_test_loads_the_packs_the_scope_override_then_the_overrides() -> None:
    from responder.rulespack.test_command import _rules_files

    argv = ["--rules", "p.yaml", "q.yaml", "--override", "t1.yaml", "t2.yaml", "--override", "t3.yaml"]
    args = _parser(("rules", "test")).parse_args([*argv, "--scope-override", "s.yaml"])
    examples = load_examples(default_examples())
    assert _rules_files(args, Path("captures"), examples) == [
        "p.yaml",
        "q.yaml",
        "s.yaml",
        "t1.yaml",
        "t2.yaml",
        "t3.yaml",
    ]


def test_the_readmes_show_the_same_usage() -> None:
    root = Path(__file__).resolve().parents[1]
    simulators = (root / "simulators" / "README.md").read_text(encoding="utf-8")
    usage = simulators.split("## Commands", 1)[1].split("```")[1]
    for command in ("simulate SCENARIO", "replay SCENARIO", "demo "):
        lines = usage.split("serving-guard " + command, 1)[1].split("serving-guard ", 1)[0]
        assert "[--rules FILE...]" in lines and "[--timeout SECONDS]" in lines, command
    assert "[--rules FILE]" not in usage and "--timeout S]" not in usage
    assert "`--rules A B` and `--rules A --rules B` are the same" in " ".join(simulators.split())
    readme = (root / "README.md").read_text(encoding="utf-8")
    rules_test_usage = "[--captures DIR] [--rules FILE...] [--override FILE...] [--accept NAME]..."
    assert f"`serving-guard rules test {rules_test_usage}`" in readme


def test_config_check_without_rules_says_the_rule_names_were_not_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A misspelt rule name passes without --rules: "ok" alone read as a full pass (review-operator
    M1). Said once, at the first policy naming rules or tags; not said with --rules, nor for a
    config whose policies name none."""
    config = tmp_path / "c.yaml"
    config.write_text(
        "inputs:\n  http:\n    allow_unauthenticated: true\n"
        "policies:\n  - name: ns\n    match: {namespaces: [ml]}\n    actions: [notify]\n"
        "  - name: p\n    match: {rules: [Shell in serving pd]}\n    actions: [notify]\n"
        "  - name: t\n    match: {tags: [shell]}\n    actions: [notify]\n",
        encoding="utf-8",
    )
    assert main(["config", "check", str(config)]) == 0
    err = capsys.readouterr().err
    assert (
        f"note: {config}:9: policies[1].match.rules: the policies' rule names and tags are not checked"
        " against any rules file: a misspelt one matches no alert; give --rules"
    ) in err, err
    assert err.count("are not checked against") == 1
    assert main(["config", "check", str(config), "--rules", "rules/serving_guard_rules.yaml"]) == 1
    err = capsys.readouterr().err
    assert "not checked against" not in err and "'Shell in serving pd' matches no rule" in err, err


def test_config_check_notes_a_policy_that_acts_only_in_protected_namespaces(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It can only ever notify: "ok" alone hid that (review-operator L6). Not for a glob, which may
    match other namespaces, nor for a policy that only notifies."""
    config = tmp_path / "c.yaml"
    config.write_text(
        "inputs:\n  http:\n    allow_unauthenticated: true\n"
        "policies:\n  - name: system\n    match: {namespaces: [kube-system]}\n    actions: [quarantine]\n"
        "  - name: told\n    match: {namespaces: [kube-public]}\n    actions: [notify]\n"
        "  - name: kube\n    match: {namespaces: ['kube-*']}\n    actions: [quarantine]\n",
        encoding="utf-8",
    )
    assert main(["config", "check", str(config)]) == 0
    err = capsys.readouterr().err
    assert (
        f"note: {config}:6: policies[0].match.namespaces: policy 'system' acts only in protected namespaces"
        " (guardrails.protected_namespaces): it never changes a pod, only notifies"
    ) in err, err
    assert "'kube'" not in err and "'told'" not in err, err


def test_config_check_with_rules_warns_of_address_fields_no_rule_outputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A misspelt address field leaves every block "nothing to block" (review-operator L10). Only
    where a policy blocks; the pack's fd.sip is found."""
    config = tmp_path / "c.yaml"
    text = (
        "inputs:\n  http:\n    allow_unauthenticated: true\n"
        "block_destination:\n  address_fields: [{fields}]\n"
        "policies:\n  - name: egress\n    match: {{rules: [Anomalous egress from serving pod]}}\n"
        "    actions: [{action}]\n"
    )
    pack = ["--rules", "rules/serving_guard_rules.yaml"]
    config.write_text(text.format(fields="fd.sipp", action="block_destination"), encoding="utf-8")
    assert main(["config", "check", str(config), *pack]) == 0  # a warning, not a finding
    assert (
        "warning: block_destination.address_fields (fd.sipp): no rule of rules/serving_guard_rules.yaml"
        " outputs any of them, so no alert names the remote address and no destination is ever blocked"
    ) in capsys.readouterr().err
    for fields, action in (("fd.sipp, fd.sip", "block_destination"), ("fd.sipp", "notify")):
        config.write_text(text.format(fields=fields, action=action), encoding="utf-8")
        assert main(["config", "check", str(config), *pack]) == 0
        assert "address_fields" not in capsys.readouterr().err
