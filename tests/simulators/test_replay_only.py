"""Replay-only scenarios (no live actions) and scenarios without a demo part: they load, simulate
skips them in one line (and runs the others), replay sends them, the demo sends them or leaves them
out saying so; and the shipped replay-only scenarios against the shipped rules pack."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from responder.alert import Priority
from responder.cli import main as cli_main
from responder.rulespack.expand import load_paths
from responder.rulespack.paths import default_pack
from simulators.alerts import TIME_FIELD, field_refs, load_rule_specs, scenario_alerts
from simulators.identity import forged_identity
from simulators.scenario import Outcome, load_scenarios
from simulators.simulate_command import skipped_line

SCENARIOS = load_scenarios()
SPECS = load_rule_specs(default_pack())
NEW = (
    "interactive-interpreter",
    "service-account-token-read",
    "process-environ-read",
    "download-one-liner",
    "shell-from-model-server",
)

# A replay-only scenario of one's own, as the review's user wrote it (live: [] and no demo part).
INTERACTIVE = """\
name: my-interactive
summary: kubectl exec -it POD -- python3 (an interpreter on a terminal).
rule: Shell in serving pod
priority: Warning
tags: [container, maturity_stable, mitre_execution, process, serving_guard, shell, T1059.004, T1059.006]
live: []
alerts:
  - fields: {proc.name: python3, proc.exepath: /usr/bin/python3.11, proc.cmdline: "python3 # {marker}",
             proc.pname: runc, proc.tty: 34816}
expect: {outcome: quarantined, slack: true}
"""


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli_main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def scenarios_dir(tmp_path: Path) -> Path:
    """A live scenario (the shell's), a replay-only one without a demo part, and one with `live`
    left out altogether."""
    directory = tmp_path / "scenarios"
    directory.mkdir()
    shutil.copy(SCENARIOS.directory / "shell-in-serving-pod.yaml", directory)
    (directory / "my-interactive.yaml").write_text(INTERACTIVE, encoding="utf-8")
    absent = INTERACTIVE.replace("my-interactive", "no-live-key").replace("live: []\n", "")
    (directory / "no-live-key.yaml").write_text(absent, encoding="utf-8")
    return directory


def test_a_replay_only_scenario_without_demo_loads(scenarios_dir: Path) -> None:
    loaded = load_scenarios(scenarios_dir)
    for name in ("my-interactive", "no-live-key"):
        scenario = loaded.by_name[name]
        assert scenario.replay_only and scenario.live == () and scenario.demo is None
        assert not scenario.needs_target
        assert scenario.demo_expect() == scenario.expect  # no demo part: the scenario's own
    assert not loaded.by_name["shell-in-serving-pod"].replay_only


def test_simulate_skips_a_replay_only_scenario_in_one_line_and_runs_the_others(
    scenarios_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work, models, shm = tmp_path / "work", tmp_path / "models", tmp_path / "shm"
    for directory in (work, models, shm):
        directory.mkdir()
    flags = ["--workdir", str(work), "--model-dir", str(models), "--shm-dir", str(shm)]
    argv = ["simulate", "all", "--scenarios-dir", str(scenarios_dir), "--run-id", "ronly1", *flags]
    code, out, err = _cli(argv, capsys)
    assert code == 0, out + err
    lines = out.splitlines()
    skipped = [line for line in lines if line.startswith("SKIPPED ")]
    assert skipped == [
        "SKIPPED my-interactive: replay-only (no live actions: an alert shape with no harmless action to"
        " perform here); send its alerts with serving-guard replay my-interactive",
        skipped_line(load_scenarios(scenarios_dir).by_name["no-live-key"]),
    ]
    # The live scenario ran, and only it is in the verify command.
    assert "shell-in-serving-pod  (Shell in serving pod)" in lines
    verify = next(line for line in lines if line.startswith("check the responder: "))
    assert "serving-guard verify shell-in-serving-pod --run-id ronly1 --steps shell-in-serving-pod=" in verify
    assert "my-interactive" not in verify and "no-live-key" not in verify
    assert not list(work.iterdir()) and not list(models.iterdir())  # cleaned up

    # Naming only replay-only scenarios: nothing to do, said so (after their lines).
    argv = ["simulate", "my-interactive", "--scenarios-dir", str(scenarios_dir), *flags]
    code, out, err = _cli(argv, capsys)
    assert code == 2
    assert out.startswith("SKIPPED my-interactive: replay-only")
    assert "nothing to simulate: my-interactive is replay-only (no live actions); send its alerts with" in err


def test_replay_sends_a_replay_only_scenario(
    scenarios_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The review's repro (M4): it used to be refused for `live: []` and the missing demo part."""
    target = tmp_path / "alerts.jsonl"
    argv = ["replay", "my-interactive", "--scenarios-dir", str(scenarios_dir), "--file", str(target)]
    code, out, err = _cli([*argv, "--forge", "--pod", "ml-serving/vllm-0", "--run-id", "rvscen2"], capsys)
    assert code == 0, out + err
    alerts = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert len(alerts) == 1
    assert alerts[0]["rule"] == "Shell in serving pod"
    assert alerts[0]["output_fields"]["proc.tty"] == 34816
    assert "cmdline=python3 # sg-run=rvscen2.my-interactive.1 parent=runc" in alerts[0]["output"]


SHELL_FROM_SERVER_ON_TRITON = "demo: {pod: triton, input: http}\n"


def test_the_demo_sends_a_scenario_with_a_demo_part_and_leaves_out_one_without(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """shell-from-model-server has no demo part in the shipped set (on the demo's one Triton pod
    its alerts fold into shell-in-serving-pod's incident). Alone there, its expectation holds:
    the responder quarantines, leaky through allow-gateway-to-triton. And a scenario without a demo
    part is left out with one line."""
    directory = tmp_path / "scenarios"
    directory.mkdir()
    source = (SCENARIOS.directory / "shell-from-model-server.yaml").read_text(encoding="utf-8")
    assert "\ndemo:" not in source
    (directory / "shell-from-model-server.yaml").write_text(source + SHELL_FROM_SERVER_ON_TRITON, "utf-8")
    (directory / "my-interactive.yaml").write_text(INTERACTIVE, encoding="utf-8")
    argv = ["demo", "--no-report", "--scenarios-dir", str(directory)]
    code, out, err = _cli([*argv, "--expect", "shell-from-model-server=leaky"], capsys)
    assert code == 0, out + err
    assert (
        "demo: my-interactive has no demo part (the seeded pod and input to send it with): left out;"
        " send its alerts with serving-guard replay my-interactive"
    ) in out.splitlines()
    rows = [line for line in out.splitlines() if line.endswith(("PASS", "FAIL")) and not line.startswith(" ")]
    assert len(rows) == 1
    assert rows[0].startswith("shell-from-model-server  http   Shell in serving pod")
    assert "LEAKY: still allowed by allow-gateway-to-triton" in rows[0] and rows[0].endswith("PASS")
    assert "all 1 expectations held" in out

    # --expect for a scenario the demo leaves out is refused, naming why.
    code, out, err = _cli([*argv, "--expect", "my-interactive=quarantined"], capsys)
    assert code == 2
    assert "--expect 'my-interactive=quarantined': my-interactive has no demo part" in err


# -- the shipped replay-only scenarios, rendered against the shipped pack ---------------------------


def test_the_new_scenarios_are_replay_only_and_shipped() -> None:
    for name in NEW:
        assert SCENARIOS.by_name[name].replay_only, name


@pytest.mark.parametrize("name", NEW)
def test_a_new_scenario_renders_from_its_enabled_rule(name: str) -> None:
    scenario = SCENARIOS.by_name[name]
    assert scenario.rule is not None
    spec = SPECS[scenario.rule]
    assert spec.disabled_at is None, f"{name}: rule {scenario.rule!r} is disabled at {spec.disabled_at}"
    assert scenario.priority is spec.priority and tuple(sorted(scenario.tags)) == spec.tags
    printed = field_refs(spec.output)
    alerts = scenario_alerts(scenario, forged_identity("ml-serving", "p-0"), "run1234", SPECS)
    assert len(alerts) == len(scenario.alerts)
    for template, item in zip(scenario.alerts, alerts, strict=True):
        rendered = item.alert
        assert rendered["rule"] == scenario.rule and Priority.parse(rendered["priority"]) is spec.priority
        # Exactly the rule's output fields (and the time of the prefix), as Falco sends them.
        assert set(rendered["output_fields"]) == {*printed, TIME_FIELD}
        # Every field the template gives is one the rule outputs, and is in the output line.
        for field, value in template.fields.items():
            assert field in printed, f"{name}: {field} is not in the output of {scenario.rule!r}"
            assert rendered["output_fields"][field] is not None
            if not isinstance(value, str) or "{" not in value:
                assert f"={value}" in rendered["output"], (name, field)
        assert item.carries_step and item.marker == f"sg-run=run1234.{name}.{item.step}"
        assert item.marker in rendered["output"]


def _fields(name: str) -> list[dict[str, object]]:
    scenario = SCENARIOS.by_name[name]
    return [
        item.alert["output_fields"]
        for item in scenario_alerts(scenario, forged_identity("ml-serving", "p-0"), "r1234", SPECS)
    ]


PACK_LISTS = load_paths([str(default_pack())]).list_items


def test_interactive_interpreter_is_the_shell_rules_tty_branch() -> None:
    (fields,) = _fields("interactive-interpreter")
    # Not a shell (the first branch), on a terminal, started by something that is not a shell.
    assert fields["proc.name"] not in PACK_LISTS["serving_guard_shell_binaries"]
    assert fields["proc.exepath"] not in PACK_LISTS["serving_guard_shell_paths"]
    assert fields["proc.tty"] not in (0, None)
    assert fields["proc.pname"] not in PACK_LISTS["serving_guard_shell_binaries"]


def test_service_account_token_read_names_the_token() -> None:
    files = [fields["fd.name"] for fields in _fields("service-account-token-read")]
    assert files == [
        "/var/run/secrets/kubernetes.io/serviceaccount/token",
        "/proc/1/root/var/run/secrets/kubernetes.io/serviceaccount/token",
    ]
    assert "/var/run/secrets/kubernetes.io/serviceaccount" in PACK_LISTS["serving_guard_credential_dirs"]


def test_process_environ_read_is_another_processs_environment() -> None:
    (fields,) = _fields("process-environ-read")
    assert fields["fd.name"] == "/proc/1/environ"
    assert fields["fd.name"] not in PACK_LISTS["serving_guard_own_environ_files"]


def test_download_one_liner_is_inline_code_that_downloads_from_outside() -> None:
    (fields,) = _fields("download-one-liner")
    cmdline = str(fields["proc.cmdline"])
    assert cmdline.startswith("python3 -c ") and "urllib" in cmdline and "urlretrieve" in cmdline
    assert fields["proc.name"] not in PACK_LISTS["serving_guard_download_tools"]  # not the tool branch
    assert "127.0.0.1" not in cmdline and "localhost" not in cmdline  # not the loopback exception
    assert SCENARIOS.by_name["download-one-liner"].expect.outcome is Outcome.DRY_RUN


def test_shell_from_model_server_has_tritonserver_as_parent_and_is_no_stub_launch() -> None:
    first, second = _fields("shell-from-model-server")
    for fields in (first, second):
        assert fields["proc.pname"] == "tritonserver"
    assert first["proc.name"] == "sh" and str(first["proc.cmdline"]).startswith("sh -c id ")
    # Triton's stub launch is excepted only for a model in a model repository; this one is in
    # the localization directory of the model-load API.
    stub = str(second["proc.cmdline"])
    assert "triton_python_backend_stub /tmp/folder" in stub
    assert not any(f"triton_python_backend_stub {d}/" in stub for d in PACK_LISTS["serving_guard_model_dirs"])
