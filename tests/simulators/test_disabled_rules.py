"""A scenario whose rule the rules files switch off (`enabled: false`, e.g. a tuning file's
`override: {enabled: replace}`) is refused by replay, simulate and demo, naming the scenario, the
rule and the FILE:LINE of the `enabled: false`: Falco sends no alert for a disabled rule, and the
demo passed (replay and verify too) with the tuning that silenced it."""

from __future__ import annotations

from pathlib import Path

import pytest

from responder.cli import main as cli_main
from responder.rulespack.paths import default_pack
from tests.simulators.test_scenario_rules_known import user_error

SHELL = "Shell in serving pod"
DISABLE_SHELL = f"""\
# tuning: switch the shell rule off
- rule: {SHELL}
  enabled: false
  override:
    enabled: replace
"""
DEPRECATED_DISABLE_SHELL = f"- rule: {SHELL}\n  enabled: false\n"


@pytest.fixture
def tuning(tmp_path: Path) -> Path:
    path = tmp_path / "tuning.yaml"
    path.write_text(DISABLE_SHELL, encoding="utf-8")
    return path


# The shipped scenarios of the shell rule, in load order; the demo leaves shell-from-model-server
# out (no demo part), so only the others are refused there.
SHELL_SCENARIOS = ("interactive-interpreter", "shell-from-model-server", "shell-in-serving-pod")
DEMO_SHELL_SCENARIOS = ("interactive-interpreter", "shell-in-serving-pod")


def _refusal(rules: list[str], at: str, names: tuple[str, ...] = ("shell-in-serving-pod",)) -> str:
    problems = "; ".join(
        f"scenario {name}: rule {SHELL!r} is disabled (enabled: false at {at})" for name in names
    )
    return (
        f"serving-guard: error: --rules {', '.join(rules)}: {problems}: Falco sends no alert for a disabled"
        " rule, so the scenario would prove nothing; enable the rule or leave the scenario out"
    )


def test_replay_refuses_a_scenario_whose_rule_the_tuning_disables(
    tuning: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = [str(default_pack()), str(tuning)]
    out_file = tmp_path / "alerts.jsonl"
    argv = ["replay", "--pod", "ml-serving/x", "--forge", "--file", str(out_file), "shell-in-serving-pod"]
    assert user_error([*argv, "--rules", *rules], capsys) == _refusal(rules, f"{tuning}:3")
    assert not out_file.exists()
    # Another scenario (its rule still on) replays with the same files.
    assert cli_main([*argv[:-1], "credential-read", "--rules", *rules]) == 0
    capsys.readouterr()


def test_the_deprecated_enabled_item_is_refused_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tuning = tmp_path / "old-style.yaml"
    tuning.write_text(DEPRECATED_DISABLE_SHELL, encoding="utf-8")
    rules = [str(default_pack()), str(tuning)]
    argv = ["replay", "--pod", "ml-serving/x", "--forge", "--file", str(tmp_path / "a.jsonl"), "all"]
    assert user_error([*argv, "--rules", *rules], capsys) == _refusal(rules, f"{tuning}:2", SHELL_SCENARIOS)


def test_a_rule_enabled_again_later_is_not_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tuning = tmp_path / "off-on.yaml"
    tuning.write_text(DISABLE_SHELL + DISABLE_SHELL.replace("false", "true"), encoding="utf-8")
    argv = ["replay", "--pod", "ml-serving/x", "--forge", "--file", str(tmp_path / "a.jsonl")]
    assert cli_main([*argv, "shell-in-serving-pod", "--rules", str(default_pack()), str(tuning)]) == 0
    capsys.readouterr()


def test_simulate_refuses_it_before_anything_runs(
    tuning: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    rules = [str(default_pack()), str(tuning)]
    argv = ["simulate", "shell-in-serving-pod", "--workdir", str(work), "--rules", *rules]
    assert user_error(argv, capsys) == _refusal(rules, f"{tuning}:3")
    assert list(work.iterdir()) == []


def test_demo_refuses_it_before_anything_runs(
    tuning: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = [str(default_pack()), str(tuning)]
    work = tmp_path / "work"
    argv = ["demo", "--no-report", "--workdir", str(work), "--rules", *rules]
    assert user_error(argv, capsys) == _refusal(rules, f"{tuning}:3", DEMO_SHELL_SCENARIOS)
    assert not work.exists()
