"""The scenario definitions: complete, consistent with the rules pack, its examples and the
reference policy, and strictly validated (errors name file, line and key)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from responder.alert import Alert, Priority
from responder.cluster.context import ContainerInfo, PodContext
from responder.cluster.verify import Verification, VerificationStatus
from responder.config import ActionName, Config
from responder.errors import UserError
from responder.policy import Decision, GuardrailState, decide
from responder.rulespack.examples import ExamplesFile, load_examples
from responder.rulespack.paths import default_examples, default_pack
from simulators.alerts import load_rule_specs
from simulators.scenario import (
    ModelFileAction,
    Outcome,
    RunToolAction,
    ShellAction,
    load_reference_policy,
    load_scenarios,
)

EXPECTED = {
    "shell-in-serving-pod",
    "unexpected-model-load",
    "model-tampering",
    "reverse-shell-one-liner",
    "anomalous-egress",
    "runtime-download",
    "drift-exec",
    "credential-read",
    "benign-serving",
    # Replay-only (no live actions): alert shapes with no harmless action to perform.
    "interactive-interpreter",
    "service-account-token-read",
    "process-environ-read",
    "download-one-liner",
    "shell-from-model-server",
}
REPLAY_ONLY = {
    "interactive-interpreter",
    "service-account-token-read",
    "process-environ-read",
    "download-one-liner",
    "shell-from-model-server",
}
SCENARIOS = load_scenarios()


@pytest.fixture(scope="module")
def examples() -> ExamplesFile:
    return load_examples(default_examples())


def test_every_scenario_is_defined_once() -> None:
    assert set(SCENARIOS.names()) == EXPECTED
    assert {s.name for s in SCENARIOS.by_name.values() if s.replay_only} == REPLAY_ONLY
    # The demo sends every scenario but the one whose alerts would fold into another's incident there.
    assert {s.name for s in SCENARIOS.by_name.values() if s.demo is None} == {"shell-from-model-server"}
    control = [s for s in SCENARIOS.by_name.values() if s.rule is None]
    assert [s.name for s in control] == ["benign-serving"]
    assert control[0].expect.outcome is Outcome.SILENT


@pytest.mark.parametrize("name", sorted(EXPECTED - {"benign-serving"}))
def test_scenario_matches_its_rule_in_the_pack(name: str) -> None:
    scenario = SCENARIOS.by_name[name]
    specs = load_rule_specs(default_pack())
    assert scenario.rule in specs, f"{name}: rule {scenario.rule!r} is not in the rules pack"
    spec = specs[scenario.rule]
    assert scenario.priority is spec.priority
    assert tuple(sorted(scenario.tags)) == spec.tags
    assert all((alert.rule or scenario.rule) in specs for alert in scenario.alerts)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_referenced_examples_exist_with_the_right_polarity(name: str, examples: ExamplesFile) -> None:
    scenario = SCENARIOS.by_name[name]
    by_rule = {entry.rule: entry for entry in examples.rules}
    assert scenario.examples, f"{name} reuses no example"
    for ref in scenario.examples:
        assert ref.rule in by_rule, f"{name}: no examples for rule {ref.rule!r}"
        positives = {ex.id for ex in by_rule[ref.rule].positive}
        negatives = {ex.id for ex in by_rule[ref.rule].negative}
        assert set(ref.positive) <= positives, set(ref.positive) - positives
        assert set(ref.negative) <= negatives, set(ref.negative) - negatives
    if scenario.rule is not None:
        assert any(ref.rule == scenario.rule and ref.positive for ref in scenario.examples)


def test_tool_and_shell_actions_run_exactly_the_examples_they_name(examples: ExamplesFile) -> None:
    by_id = {ex.id: ex for entry in examples.rules for ex in entry.positive}
    checked = 0
    for scenario in SCENARIOS.by_name.values():
        for step in scenario.live:
            if step.example is None:
                continue
            example = by_id[step.example]
            if isinstance(step, RunToolAction):
                assert example.action.exec == [step.tool, *step.args]
                checked += 1
            elif isinstance(step, ShellAction):
                argv0 = example.action.exec[0] if example.action.exec else None
                assert argv0 == step.shell
                checked += 1
    assert checked >= 7


def _pod(namespace_labels: dict[str, str]) -> PodContext:
    container = ContainerInfo("server", "img", container_id="containerd://" + "a" * 64)
    return PodContext(
        "ml-serving", "pod-0", "uid", "worker-1", containers=(container,), namespace_labels=namespace_labels
    )


def _decided(name: str, config: Config) -> Decision:
    """The decision ``config`` makes for the scenario's alert, verified, in an opted-in namespace."""
    scenario = SCENARIOS.by_name[name]
    assert scenario.rule is not None and scenario.priority is not None
    alert = Alert(
        rule=scenario.rule,
        priority=scenario.priority,
        time_ns=1,
        source="syscall",
        output="",
        fields={"k8s.ns.name": "ml-serving", "k8s.pod.name": "pod-0"},
        tags=scenario.tags,
    )
    pod = _pod({"serving-guard.io/enforce": "true"})
    return decide(alert, pod, Verification(VerificationStatus.VERIFIED), GuardrailState(), config)


@pytest.mark.parametrize("name", sorted(EXPECTED - {"benign-serving"}))
def test_expectations_follow_from_the_reference_policy(name: str) -> None:
    scenario = SCENARIOS.by_name[name]
    config = Config.model_validate(load_reference_policy())
    decision = _decided(name, config)
    for expect in (scenario.expect, scenario.demo_expect()):
        if expect.outcome in (Outcome.QUARANTINED, Outcome.LEAKY):
            assert ActionName.QUARANTINE in decision.actions and not decision.dry_run
        elif expect.outcome is Outcome.ANNOTATED:
            assert ActionName.ANNOTATE in decision.actions and not decision.dry_run
        elif expect.outcome is Outcome.BLOCKED:
            assert ActionName.BLOCK_DESTINATION in decision.actions and not decision.dry_run
        elif expect.outcome is Outcome.DRY_RUN:
            assert decision.dry_run and decision.changes_pod
        else:
            assert expect.outcome is Outcome.NOTIFIED
            assert decision.actions == (ActionName.NOTIFY,)
        assert decision.notify == expect.slack
    assert config.slack.min_priority is Priority.WARNING


def test_live_actions_never_touch_what_they_did_not_create() -> None:
    for scenario in SCENARIOS.by_name.values():
        for step in scenario.live:
            if isinstance(step, ModelFileAction):
                assert "{marker}" in step.name
            if isinstance(step, RunToolAction):
                assert "--version" in step.args


def test_select_all_unknown_and_duplicates() -> None:
    assert len(SCENARIOS.select(["all"])) == len(EXPECTED)
    picked = SCENARIOS.select(["drift-exec", "drift-exec", "benign-serving"])
    assert [s.name for s in picked] == ["drift-exec", "benign-serving"]
    with pytest.raises(UserError, match=r"unknown scenario 'shell' \(known: .*shell-in-serving-pod"):
        SCENARIOS.select(["shell"])


def _broken(tmp_path: Path, name: str, old: str, new: str) -> Path:
    directory = tmp_path / "scenarios"
    directory.mkdir(exist_ok=True)
    source = (SCENARIOS.directory / f"{name}.yaml").read_text(encoding="utf-8")
    assert old in source
    (directory / f"{name}.yaml").write_text(source.replace(old, new, 1), encoding="utf-8")
    return directory


@pytest.mark.parametrize(
    ("name", "old", "new", "message"),
    [
        (
            "shell-in-serving-pod",
            "  slack: true\ndemo:",
            "  slack: true\n  colour: red\ndemo:",
            r"shell-in-serving-pod.yaml:\d+: expect.colour: unknown key",
        ),
        (
            "runtime-download",
            "args: [--version], example: pip",
            "args: [install, torch], example: pip",
            r"runtime-download.yaml:\d+: live\[0\].args: .*only ever run with --version",
        ),
        (
            "model-tampering",
            'name: "{marker}-model.pt"}',
            'name: "model.pt"}',
            r"model-tampering.yaml:\d+: live\[0\]: .*plain names containing \{marker\}",
        ),
        (
            "credential-read",
            'path: "{home}/.aws/credentials"',
            "path: /root/.aws/credentials",
            r"credential-read.yaml:\d+: live\[0\].path: .*never a system path",
        ),
        ("benign-serving", "rule: null", "rule: Shell in serving pod", r"benign-serving.yaml:\d+: .*control"),
        (
            "drift-exec",
            "where: shm",
            "where: nowhere",
            r"drift-exec.yaml:\d+: live\[0\].where: must be one of shm, workdir, memfd; not 'nowhere'",
        ),
        # A tagged action's own keys are named, even where the tag is a key's name too (shell).
        (
            "shell-in-serving-pod",
            "{action: shell, shell: sh, example: shell-sh-c}",
            "{action: shell, shell: zsh, example: shell-sh-c}",
            r"shell-in-serving-pod.yaml:12: live\[0\].shell: must be one of sh, dash, bash, busybox;"
            r" not 'zsh'",
        ),
        (
            "shell-in-serving-pod",
            "{action: shell, shell: sh, example: shell-sh-c}",
            "{action: shell, example: shell-sh-c}",
            r"shell-in-serving-pod.yaml:12: live\[0\].shell: required, missing",
        ),
        (
            "shell-in-serving-pod",
            "{action: shell, shell: sh, example: shell-sh-c}",
            "{action: shel, shell: sh, example: shell-sh-c}",
            r"shell-in-serving-pod.yaml:12: live\[0\].action: must be one of shell, read_file, .*;"
            r" not 'shel'",
        ),
        (
            "shell-in-serving-pod",
            "  outcome: quarantined",
            "  outcome: Quarantined",
            r"shell-in-serving-pod.yaml:\d+: expect.outcome: must be one of quarantined, leaky, .*;"
            r" not 'Quarantined'",
        ),
        (
            "shell-in-serving-pod",
            "      proc.tty: 0\n",
            "      proc.tty: [0]\n",
            r"shell-in-serving-pod.yaml:\d+: alerts\[0\].fields.proc.tty: must be text, a whole number or a"
            r" boolean \(true or false\), not \[0\]$",
        ),
        (
            "shell-in-serving-pod",
            "{action: shell, shell: sh, example: shell-sh-c}",
            "{action: shell, shell: sh, example: no-such-example}",
            r"shell-in-serving-pod.yaml:\d+: .*'no-such-example' is not listed",
        ),
    ],
)
def test_broken_scenario_files_are_refused_with_file_and_line(
    tmp_path: Path, name: str, old: str, new: str, message: str
) -> None:
    directory = _broken(tmp_path, name, old, new)
    with pytest.raises(UserError, match=message):
        load_scenarios(directory)


def test_file_name_must_match_and_directory_must_hold_scenarios(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no scenario files"):
        load_scenarios(empty)
    with pytest.raises(UserError, match="does not exist"):
        load_scenarios(tmp_path / "missing")
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    shutil.copy(SCENARIOS.directory / "drift-exec.yaml", renamed / "drift.yaml")
    with pytest.raises(UserError, match=r"drift.yaml:\d+: name must match the file name \(drift\)"):
        load_scenarios(renamed)


def test_the_k8s_readme_says_what_the_charts_default_policies_expect() -> None:
    """simulators/k8s/README.md lists the --expect a verify against the chart's default policies
    needs: every scenario whose outcome there differs from the reference policy's, and no other."""
    root = Path(__file__).resolve().parents[2]
    values = yaml.safe_load((root / "deploy/chart/serving-guard/values.yaml").read_text(encoding="utf-8"))
    config = Config.model_validate(
        {"policies": values["policies"], "default_actions": values["defaultActions"]}
    )
    differing = {}
    # The chart's Job runs simulate, which skips the replay-only scenarios.
    for name in sorted(EXPECTED - {"benign-serving"} - REPLAY_ONLY):
        scenario = SCENARIOS.by_name[name]
        decision = _decided(name, config)
        outcome = (
            Outcome.QUARANTINED
            if ActionName.QUARANTINE in decision.actions
            else Outcome.ANNOTATED
            if ActionName.ANNOTATE in decision.actions
            else Outcome.NOTIFIED
        )
        if outcome is not scenario.expect.outcome and not (
            outcome is Outcome.QUARANTINED and scenario.expect.outcome is Outcome.LEAKY
        ):
            differing[name] = outcome.value
    readme = " ".join((root / "simulators/k8s/README.md").read_text(encoding="utf-8").split())
    listed = dict(re.findall(r"--expect ([a-z-]+)=([a-z_]+)", readme))
    assert listed == differing


# -- run_tool runs a download tool's --version, and nothing else ------------------------------------

SNEAKY = """\
name: sneaky
summary: runs whatever it likes despite the version-only check
rule: Runtime download or package install in serving pod
priority: Warning
live:
  - {action: run_tool, tool: sh, args: [-c, "echo PWNED > /tmp/pwned.txt", --version]}
  - {action: run_tool, tool: python3, args: [-c, "print('fetch')", --version]}
  - {action: run_tool, tool: pip, args: [--version, --index-url, x]}
  - {action: run_tool, tool: curl, args: [--version]}
alerts:
  - fields: {proc.cmdline: "x {marker}"}
expect: {outcome: quarantined}
demo: {pod: triton}
"""


def test_run_tool_runs_only_a_download_tools_version(tmp_path: Path) -> None:
    """The tool used to be any word and --version had only to appear among the arguments, so a
    scenario file ran `sh -c ANYTHING --version`. Now: a download tool of the runtime-download
    rule, and exactly [--version]; each refusal names the file, the line and the rule."""
    (tmp_path / "sneaky.yaml").write_text(SNEAKY, encoding="utf-8")
    with pytest.raises(UserError) as refused:
        load_scenarios(tmp_path)
    lines = str(refused.value).splitlines()
    rule = "'Runtime download or package install in serving pod' (serving_guard_download_tools)"
    assert lines[0] == "invalid scenario:"
    assert lines[1].startswith(
        f"  {tmp_path}/sneaky.yaml:6: live[0].tool: 'sh' is not a download tool of the rule {rule}"
    )
    assert lines[1].endswith("(never a shell or an interpreter)")
    assert lines[2] == (
        f"  {tmp_path}/sneaky.yaml:6: live[0].args: args must be exactly [--version], got"
        " ['-c', 'echo PWNED > /tmp/pwned.txt', '--version']: a tool is only ever run with --version"
    )
    assert lines[3].startswith(f"  {tmp_path}/sneaky.yaml:7: live[1].tool: 'python3' is not a download tool")
    assert lines[5].startswith(f"  {tmp_path}/sneaky.yaml:8: live[2].args: args must be exactly [--version]")
    assert len(lines) == 6  # live[3] (curl --version) is fine; no "too short" about live either


def test_the_tools_run_tool_may_run_are_the_packs_download_tools() -> None:
    from responder.rulespack.expand import load_paths
    from simulators.scenario import DOWNLOAD_TOOLS

    listed = load_paths([str(default_pack())]).list_items["serving_guard_download_tools"]
    assert set(DOWNLOAD_TOOLS) == set(listed)  # each tool the rule lists can be replayed
    shells_and_interpreters = {
        "sh",
        "bash",
        "dash",
        "busybox",
        "python",
        "python3",
        "perl",
        "node",
        "env",
        "xargs",
    }
    assert not shells_and_interpreters & set(DOWNLOAD_TOOLS)


def test_a_bad_item_is_not_also_reported_as_a_list_too_short(tmp_path: Path) -> None:
    (tmp_path / "badtmpl.yaml").write_text(
        "name: badtmpl\nsummary: a summary here\nrule: null\nlive:\n"
        '  - {action: read_file, path: "{rundir}/{oops}/x"}\nexpect: {outcome: silent, slack: false}\n'
        "demo: {pod: triton}\n",
        encoding="utf-8",
    )
    with pytest.raises(UserError) as refused:
        load_scenarios(tmp_path)
    assert str(refused.value) == (
        "invalid scenario:\n"
        f"  {tmp_path}/badtmpl.yaml:5: live[0].path: unknown template {{oops}} (known: marker, run_id,"
        " rundir, home, model_dir)"
    )
    # An empty list is a replay-only scenario; a control has no alerts to replay, so it needs live.
    (tmp_path / "badtmpl.yaml").write_text(
        "name: badtmpl\nsummary: a summary here\nrule: null\nlive: []\n"
        "expect: {outcome: silent, slack: false}\ndemo: {pod: triton}\n",
        encoding="utf-8",
    )
    with pytest.raises(
        UserError, match=r"badtmpl.yaml:1: \(top level\): a control scenario needs live actions"
    ):
        load_scenarios(tmp_path)


# -- every step can be told apart: its marker is in a field its rule outputs ---------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED - {"benign-serving"}))
def test_every_step_carries_its_marker_in_a_field_the_rule_outputs(name: str) -> None:
    """simulate tags each step's processes with sg-run=<run id>.<scenario>.<n> (their command line,
    or their parent's); replay puts it where the scenario file says {marker}. Either way it must be
    in a field the rule prints, or verify cannot find the step's alert."""
    from simulators.alerts import field_refs, scenario_alerts
    from simulators.identity import forged_identity

    scenario = SCENARIOS.by_name[name]
    specs = load_rule_specs(default_pack())
    assert scenario.rule is not None
    printed = set(field_refs(specs[scenario.rule].output))
    firing = [action for action in scenario.live if action.fires]
    assert firing or scenario.replay_only
    for action in firing:
        assert action.marker_fields() & printed, (name, action)
    alerts = scenario_alerts(scenario, forged_identity("ml-serving", "p-0"), "run1234", specs)
    assert [item.step for item in alerts] == list(range(1, len(scenario.alerts) + 1))
    for item in alerts:
        assert item.carries_step, (name, item.step)
        assert item.marker == f"sg-run=run1234.{name}.{item.step}"


def test_an_alert_must_carry_marker_on_its_own(tmp_path: Path) -> None:
    directory = _broken(
        tmp_path,
        "credential-read",
        '      proc.pcmdline: "python3 -m simulators.child run cat {home}/.aws/credentials {marker}"\n',
        '      proc.pcmdline: "python3 -m simulators.child run cat {home}/.aws/credentials"\n',
    )
    with pytest.raises(
        UserError,
        match=r"credential-read.yaml:\d+: alerts\[0\].fields: every alert carries \{marker\} on its own",
    ):
        load_scenarios(directory)
