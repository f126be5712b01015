"""Each scenario's live actions, run for real in temporary directories against loopback listeners
only; they clean up after themselves, tag their processes, and say why when they cannot run."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from responder.cli import main as cli_main
from responder.errors import UserError
from simulators.live import LiveSettings, ScenarioRunner, StepStatus, Target
from simulators.scenario import load_scenarios
from tests.helpers import refusing_port

SCENARIOS = load_scenarios()
MODEL_BYTES = b"pre-existing model bytes\n"


@dataclass
class Listener:
    """TCP and UDP on the same 127.0.0.1 port; records what arrives."""

    port: int
    tcp_data: list[bytes] = field(default_factory=list)
    udp_data: list[bytes] = field(default_factory=list)


@pytest.fixture
def listener() -> Iterator[Listener]:
    tcp = socket.create_server(("127.0.0.1", 0))
    port = tcp.getsockname()[1]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", port))
    tcp.settimeout(0.1)
    udp.settimeout(0.1)
    record = Listener(port)
    stop = threading.Event()

    def serve_tcp() -> None:
        while not stop.is_set():
            try:
                conn, _ = tcp.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(3)
                chunks = []
                try:
                    while chunk := conn.recv(4096):
                        chunks.append(chunk)
                except OSError:
                    pass
                record.tcp_data.append(b"".join(chunks))

    def serve_udp() -> None:
        while not stop.is_set():
            try:
                record.udp_data.append(udp.recv(4096))
            except TimeoutError:
                continue

    threads = [
        threading.Thread(target=serve_tcp, daemon=True),
        threading.Thread(target=serve_udp, daemon=True),
    ]
    for thread in threads:
        thread.start()
    yield record
    stop.set()
    for thread in threads:
        thread.join(timeout=2)
    tcp.close()
    udp.close()


@dataclass
class Dirs:
    work: Path
    models: Path
    shm: Path
    model_file: Path

    def snapshot(self) -> dict[str, tuple[bytes, int]]:
        return {
            str(path.relative_to(self.models)): (path.read_bytes(), path.stat().st_mode)
            for path in sorted(self.models.rglob("*"))
            if path.is_file()
        }


@pytest.fixture
def dirs(tmp_path: Path) -> Dirs:
    work, models, shm = tmp_path / "work", tmp_path / "models", tmp_path / "shm"
    for directory in (work, models / "resnet", shm):
        directory.mkdir(parents=True)
    model_file = models / "resnet" / "model.pt"
    model_file.write_bytes(MODEL_BYTES)
    return Dirs(work, models, shm, model_file)


def settings(dirs: Dirs, run_id: str, target: Target | None = None) -> LiveSettings:
    return LiveSettings(
        run_id=run_id,
        workdir=dirs.work,
        model_dir=dirs.models,
        shm_dir=dirs.shm,
        target=target,
        timeout_seconds=15,
    )


def assert_clean(dirs: Dirs, before: dict[str, tuple[bytes, int]]) -> None:
    assert list(dirs.work.iterdir()) == []
    assert list(dirs.shm.iterdir()) == []
    assert dirs.snapshot() == before
    assert sorted(p.name for p in dirs.models.rglob("*")) == ["model.pt", "resnet"]


# Every scenario with live actions (replay-only ones have none: simulate skips them, test_replay_only.py).
@pytest.mark.parametrize("name", sorted(s.name for s in SCENARIOS.by_name.values() if not s.replay_only))
def test_scenario_runs_for_real_and_cleans_up(name: str, dirs: Dirs, listener: Listener, run_id: str) -> None:
    scenario = SCENARIOS.by_name[name]
    target = Target("127.0.0.1", listener.port) if scenario.needs_target else None
    before = dirs.snapshot()
    result = ScenarioRunner(scenario, settings(dirs, run_id, target)).run()
    failed = [step for step in result.steps if step.status is StepStatus.FAILED]
    assert not failed, failed
    assert result.performed >= 1 and result.ok
    for step in result.steps:
        if step.status is StepStatus.SKIPPED:
            assert "is not installed here" in step.detail or "no -e option" in step.detail, step
    assert result.cleanup_problems == []
    assert_clean(dirs, before)


def test_egress_reaches_only_the_explicit_target(dirs: Dirs, listener: Listener, run_id: str) -> None:
    scenario = SCENARIOS.by_name["anomalous-egress"]
    result = ScenarioRunner(scenario, settings(dirs, run_id, Target("127.0.0.1", listener.port))).run()
    assert [s.status for s in result.steps] == [StepStatus.DONE, StepStatus.DONE]
    # Each step's process carries its own marker: step 1 the TCP connection, step 2 the datagram.
    tcp, udp = (f"sg-run={run_id}.anomalous-egress.{n}".encode() for n in (1, 2))
    assert _eventually(lambda: listener.tcp_data == [tcp] and listener.udp_data == [udp])
    with pytest.raises(UserError, match="needs an explicit --target HOST:PORT"):
        ScenarioRunner(scenario, settings(dirs, run_id)).run()


def test_egress_to_a_closed_port_is_an_attempt_not_a_failure(dirs: Dirs, run_id: str) -> None:
    scenario = SCENARIOS.by_name["anomalous-egress"]
    with refusing_port() as port:
        result = ScenarioRunner(scenario, settings(dirs, run_id, Target("127.0.0.1", port))).run()
    assert result.steps[0].status is StepStatus.DONE
    assert "not accepted" in result.steps[0].detail and "refused" in result.steps[0].detail.lower()


def test_reverse_shells_connect_only_to_their_own_listener(
    dirs: Dirs, listener: Listener, run_id: str
) -> None:
    # A --target is anomalous-egress's; the reverse shells keep to their own loopback listener.
    scenario = SCENARIOS.by_name["reverse-shell-one-liner"]
    result = ScenarioRunner(scenario, settings(dirs, run_id, Target("127.0.0.1", listener.port))).run()
    done = [s for s in result.steps if s.status is StepStatus.DONE]
    assert len(done) >= 2 and result.ok  # python pty and bash /dev/tcp; netcat with -e is rarely installed
    assert all(s.detail.startswith("connected to our own listener on 127.0.0.1:") for s in done)
    assert all(f":{listener.port}" not in " ".join(s.command) + s.detail for s in done)
    assert not _eventually(lambda: listener.tcp_data != [], timeout=0.5)
    python_pty = result.steps[0]
    assert "pty.spawn" in " ".join(python_pty.command)
    assert f"true # sg-run={run_id}.reverse-shell-one-liner" in " ".join(python_pty.command)


def test_reverse_shells_run_when_the_target_refuses_tcp(dirs: Dirs, run_id: str) -> None:
    scenario = SCENARIOS.by_name["reverse-shell-one-liner"]
    with refusing_port() as port:
        result = ScenarioRunner(scenario, settings(dirs, run_id, Target("127.0.0.1", port))).run()
    assert result.ok, result.steps
    assert all(s.status is not StepStatus.FAILED for s in result.steps)


def test_simulate_all_with_a_target_that_refuses_tcp(
    capsys: pytest.CaptureFixture[str],
    dirs: Dirs,
    tmp_path: Path,
    run_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The download tools are stand-ins (only their start matters here); curl stays real for the control.
    _fake_tools(tmp_path / "fakebin", ["pip", "wget", "git", "apt-get", "conda"], tmp_path / "calls.log")
    monkeypatch.setenv("PATH", f"{tmp_path / 'fakebin'}{os.pathsep}{os.environ['PATH']}")
    with refusing_port() as port:
        argv = ["simulate", "all", "--target", f"127.0.0.1:{port}", "--run-id", run_id]
        argv += ["--workdir", str(dirs.work), "--model-dir", str(dirs.models), "--shm-dir", str(dirs.shm)]
        code, out, _ = _cli(argv, capsys)
    assert code == 0, out
    assert "FAILED" not in out
    assert out.count("connected to our own listener on 127.0.0.1:") >= 2
    assert f"attempted tcp to 127.0.0.1:{port}; it was not accepted" in out


def _fake_tools(directory: Path, names: list[str], log: Path) -> None:
    directory.mkdir()
    for name in names:
        tool = directory / name
        tool.write_text(
            f'#!/bin/sh\nprintf "%s|%s|%s\\n" "{name}" "$*" "$SG_RUN_ID" >> "{log}"\n', encoding="utf-8"
        )
        tool.chmod(0o755)


def test_tools_get_only_version_and_the_run_tag(
    dirs: Dirs, tmp_path: Path, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "calls.log"
    fake = tmp_path / "fakebin"
    _fake_tools(fake, ["pip", "curl", "wget", "git", "apt-get", "conda"], log)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    result = ScenarioRunner(SCENARIOS.by_name["runtime-download"], settings(dirs, run_id)).run()
    assert all(step.status is StepStatus.DONE for step in result.steps)
    calls = log.read_text(encoding="utf-8").splitlines()
    assert sorted(calls) == sorted(
        f"{tool}|--version|{run_id}" for tool in ("pip", "curl", "wget", "git", "apt-get", "conda")
    )
    # Each tool's parent process carries the marker in its command line.
    assert all(f"sg-run={run_id}.runtime-download" in step.command[-1] for step in result.steps)
    assert all(step.command[1:4] == ("-m", "simulators.child", "run") for step in result.steps)


def test_shells_carry_the_marker_and_the_run_id(
    dirs: Dirs, tmp_path: Path, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "calls.log"
    fake = tmp_path / "fakebin"
    _fake_tools(fake, ["busybox"], log)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    result = ScenarioRunner(SCENARIOS.by_name["shell-in-serving-pod"], settings(dirs, run_id)).run()
    assert all(step.status is StepStatus.DONE for step in result.steps)
    assert (
        log.read_text(encoding="utf-8")
        == f"busybox|sh -c true # sg-run={run_id}.shell-in-serving-pod.3|{run_id}\n"
    )
    assert result.steps[0].command == ("sh", "-c", f"true # sg-run={run_id}.shell-in-serving-pod.1")
    assert result.steps[1].command == ("bash", "-c", f"true # sg-run={run_id}.shell-in-serving-pod.2")


def test_absent_tools_are_skipped_loudly_and_prove_nothing(
    dirs: Dirs, tmp_path: Path, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    result = ScenarioRunner(SCENARIOS.by_name["shell-in-serving-pod"], settings(dirs, run_id)).run()
    assert [s.status for s in result.steps] == [StepStatus.SKIPPED] * 3
    assert [s.detail for s in result.steps] == [
        f"{t} is not installed here" for t in ("sh", "bash", "busybox")
    ]
    assert result.performed == 0 and not result.ok
    assert list(dirs.work.iterdir()) == []


def test_an_existing_file_in_the_model_dir_is_never_touched(dirs: Dirs, run_id: str) -> None:
    squatter = dirs.models / f"sg-run={run_id}.model-tampering-model.pt"
    squatter.write_bytes(b"not ours\n")
    before = dirs.snapshot()
    result = ScenarioRunner(SCENARIOS.by_name["model-tampering"], settings(dirs, run_id)).run()
    assert result.steps[0].status is StepStatus.FAILED
    assert "exists already: refusing to touch a file this run did not create" in result.steps[0].detail
    assert all(s.status is StepStatus.SKIPPED for s in result.steps[1:4])
    assert not result.ok
    assert dirs.snapshot() == before  # still there, unchanged


def test_tampering_creates_renames_and_links_only_its_own_files(dirs: Dirs, run_id: str) -> None:
    result = ScenarioRunner(SCENARIOS.by_name["model-tampering"], settings(dirs, run_id)).run()
    assert [s.status for s in result.steps] == [StepStatus.DONE] * 6
    marker = f"sg-run={run_id}.model-tampering"
    assert f"renamed to {marker}-renamed.pt" in result.steps[2].detail
    assert (
        f"linked {dirs.models}/{marker}-link.pt -> {dirs.work}/{marker}/evil/model.pt"
        in result.steps[4].detail
    )
    assert sorted(p.name for p in dirs.models.iterdir()) == ["resnet"]


def test_missing_model_dir_or_model_is_a_skip_with_the_reason(
    dirs: Dirs, tmp_path: Path, run_id: str
) -> None:
    nowhere = LiveSettings(run_id=run_id, workdir=dirs.work, model_dir=tmp_path / "nope", shm_dir=dirs.shm)
    result = ScenarioRunner(SCENARIOS.by_name["model-tampering"], nowhere).run()
    assert {s.detail for s in result.steps if s.status is StepStatus.SKIPPED} >= {
        f"model dir {tmp_path / 'nope'} does not exist here (set --model-dir)"
    }
    dirs.model_file.unlink()
    result = ScenarioRunner(SCENARIOS.by_name["benign-serving"], settings(dirs, run_id)).run()
    assert result.steps[0].status is StepStatus.SKIPPED
    assert "no model file in" in result.steps[0].detail and "never creates one" in result.steps[0].detail


def test_drift_binaries_are_ours_and_removed(dirs: Dirs, run_id: str) -> None:
    result = ScenarioRunner(SCENARIOS.by_name["drift-exec"], settings(dirs, run_id)).run()
    assert [s.status for s in result.steps] == [StepStatus.DONE] * 3
    assert f"{dirs.shm}/sg-run={run_id}.drift-exec/sg-drift" in result.steps[0].detail
    assert "memfd" in result.steps[2].detail
    assert list(dirs.shm.iterdir()) == [] and list(dirs.work.iterdir()) == []


def test_credentials_are_dummies_in_the_runs_own_home(dirs: Dirs, run_id: str) -> None:
    result = ScenarioRunner(SCENARIOS.by_name["credential-read"], settings(dirs, run_id)).run()
    home = dirs.work / f"sg-run={run_id}.credential-read" / "home"
    # cat is started by the tagged child: its parent's command line carries the step's marker.
    assert result.steps[0].command[1:] == (
        "-m",
        "simulators.child",
        "run",
        "cat",
        f"{home}/.aws/credentials",
        f"sg-run={run_id}.credential-read.1",
    )
    assert not home.exists()


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli_main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_errors_are_one_clear_line(capsys: pytest.CaptureFixture[str], dirs: Dirs) -> None:
    code, _, err = _cli(["simulate", "anomalous-egress", "--workdir", str(dirs.work)], capsys)
    assert code == 2 and "anomalous-egress connect(s) out and need(s) an explicit --target HOST:PORT" in err
    code, _, err = _cli(["simulate", "shell"], capsys)
    assert code == 2 and "unknown scenario 'shell'" in err
    code, _, err = _cli(["simulate", "drift-exec", "--run-id", "bad id!"], capsys)
    assert code == 2 and "--run-id 'bad id!'" in err
    code, _, err = _cli(["simulate", "anomalous-egress", "--target", "127.0.0.1"], capsys)
    assert code == 2 and "--target must be HOST:PORT" in err
    assert "Traceback" not in err


def test_cli_runs_and_prints_how_to_verify(
    capsys: pytest.CaptureFixture[str], dirs: Dirs, run_id: str
) -> None:
    argv = [
        "simulate",
        "unexpected-model-load",
        "drift-exec",
        "--run-id",
        run_id,
        "--workdir",
        str(dirs.work),
        "--model-dir",
        str(dirs.models),
        "--shm-dir",
        str(dirs.shm),
    ]
    code, out, _ = _cli(argv, capsys)
    assert code == 0, out
    assert f"run id {run_id}" in out
    assert (
        f"serving-guard verify unexpected-model-load drift-exec --run-id {run_id}"
        " --steps unexpected-model-load=1,2 --steps drift-exec=1,2,3 --responder URL"
    ) in out
    assert out.count("  done     ") == 5


def test_target_parsing() -> None:
    assert Target.parse("[::1]:8443") == Target("::1", 8443)
    assert str(Target("::1", 1)) == "[::1]:1"
    for bad in ("host", "host:0", "host:99999", ":80", "host:http"):
        with pytest.raises(UserError):
            Target.parse(bad)


def test_child_refuses_bad_usage(tmp_path: Path) -> None:
    from simulators import child

    assert child.main(["write"]) == 2
    assert child.main(["nope", "marker"]) == 2
    assert child.main(["rename", "only-one", "marker"]) == 2
    existing = tmp_path / "exists.pt"
    existing.write_bytes(b"x")
    assert child.main(["write", str(existing), "marker"]) == 1  # O_EXCL: never overwrites
    assert existing.read_bytes() == b"x"
    assert stat.S_IMODE(existing.stat().st_mode) != 0o666
    assert sys.executable


def _eventually(condition: object, timeout: float = 5.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.02)
    return False


def test_simulate_warns_when_the_rules_pack_allows_the_target(
    capsys: pytest.CaptureFixture[str], dirs: Dirs, tmp_path: Path, run_id: str
) -> None:
    """Loopback and RFC 1918 are in the pack's allowed egress networks: no alert fires for them, so
    simulate says so (the run goes on: the target is the user's). Read from the rules, not assumed:
    a tuning that takes loopback out of the list takes the warning away."""
    from responder.rulespack.paths import default_pack

    with refusing_port() as port:
        argv = ["simulate", "anomalous-egress", "--target", f"127.0.0.1:{port}", "--run-id", run_id]
        argv += ["--workdir", str(dirs.work), "--timeout", "2"]
        code, out, err = _cli(argv, capsys)
        assert code == 0, out
        assert err == (
            f"warning: --target 127.0.0.1:{port}: 127.0.0.1 is in serving_guard_allowed_egress_networks"
            f" (127.0.0.0/8) of {default_pack()}: rule 'Anomalous egress from serving pod' fires no alert"
            " for it, so anomalous-egress proves nothing here; give a public address you control\n"
        )
        assert "attempted tcp to 127.0.0.1" in out  # the actions still ran
        tuning = tmp_path / "tune.yaml"
        tuning.write_text(
            "- list: serving_guard_allowed_egress_networks\n  items: [10.0.0.0/8]\n"
            "  override: {items: replace}\n",
            encoding="utf-8",
        )
        code, out, err = _cli([*argv, "--rules", str(default_pack()), "--rules", str(tuning)], capsys)
    assert code == 0, out
    assert err == ""


def test_what_the_pack_allows_is_read_from_its_lists() -> None:
    from simulators.simulate_command import allowed_by_pack

    lists = {
        "serving_guard_allowed_egress_networks": ["10.0.0.0/8", "192.168.0.0/16", "127.0.0.0/8", "::1/128"],
        "serving_guard_allowed_egress_ports": ["8443"],
    }
    assert allowed_by_pack(Target("192.168.1.20", 9), lists) == (
        "192.168.1.20 is in serving_guard_allowed_egress_networks (192.168.0.0/16)"
    )
    assert (
        allowed_by_pack(Target("::1", 9), lists)
        == "::1 is in serving_guard_allowed_egress_networks (::1/128)"
    )
    assert allowed_by_pack(Target("203.0.113.10", 8443), lists) == (
        "port 8443 is in serving_guard_allowed_egress_ports"
    )
    # Outside them the rule fires: a public address, another non-public one, a name (not resolved).
    for host in ("203.0.113.10", "100.64.0.1", "egress.example.com"):
        assert allowed_by_pack(Target(host, 443), lists) is None
    assert allowed_by_pack(Target("127.0.0.1", 9), {}) is None


# -- nothing stays behind: signals, timeouts, leftovers of runs killed outright ------------------------

ROOT = Path(__file__).resolve().parents[2]
TAMPER_THEN_WAIT = """\
name: tamper-then-wait
summary: Tamper with the model dir, run a tool that hangs, then plant a link.
rule: Model artifact tampering in serving pod
priority: Critical
live:
  - {action: model_file, op: write, name: "{marker}-model.pt"}
  - {action: model_file, op: chmod, name: "{marker}-model.pt", mode: "0666"}
  - {action: run_tool, tool: pip, args: [--version]}
  - {action: model_file, op: symlink, name: "{marker}-link.pt", target: "{rundir}/evil/model.pt"}
alerts:
  - fields: {proc.cmdline: "python3 -m simulators.child write x {marker}"}
expect: {outcome: quarantined}
demo: {pod: vllm}
"""


def _hanging_tool(directory: Path, name: str, pids: Path) -> None:
    """A stand-in for a tool that hangs, and starts a process of its own that would outlive it."""
    directory.mkdir(exist_ok=True)
    tool = directory / name
    tool.write_text(
        f'#!/bin/sh\nsleep 300 &\necho "$$ $!" > "{pids}.tmp"\nmv "{pids}.tmp" "{pids}"\nsleep 300\n'
    )
    tool.chmod(0o755)


def _gone(pid: int) -> bool:
    """Not running: no such process, or a zombie nobody reaped yet."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in (b"Z", b"X")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_simulate_stopped_by_a_signal_removes_what_it_created(
    signum: signal.Signals, dirs: Dirs, tmp_path: Path, run_id: str
) -> None:
    """Killed by SIGTERM (a Job's deadline, kubectl delete) or SIGHUP (a closed terminal), simulate
    used to die on the spot, leaving a world-writable .pt and a link into /tmp in the real model dir."""
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    (scenarios / "tamper-then-wait.yaml").write_text(TAMPER_THEN_WAIT, encoding="utf-8")
    pids = tmp_path / "pids"
    _hanging_tool(tmp_path / "fakebin", "pip", pids)
    before = dirs.snapshot()
    argv = [
        sys.executable,
        "-m",
        "responder",
        "simulate",
        "tamper-then-wait",
        "--scenarios-dir",
        str(scenarios),
    ]
    argv += ["--run-id", run_id, "--workdir", str(dirs.work), "--model-dir", str(dirs.models)]
    argv += ["--shm-dir", str(dirs.shm), "--timeout", "60"]
    env = {**os.environ, "PATH": f"{tmp_path / 'fakebin'}{os.pathsep}{os.environ['PATH']}"}
    process = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert _eventually(pids.exists, timeout=30), process.communicate(timeout=5)
        tampered = dirs.models / f"sg-run={run_id}.tamper-then-wait-model.pt"
        assert stat.S_IMODE(tampered.stat().st_mode) == 0o666  # in place while the tool hangs
        process.send_signal(signum)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 128 + signum, out + err
    assert f"stopped by {signum.name} during tamper-then-wait; what it created was removed" in out
    assert "Traceback" not in err
    assert_clean(dirs, before)
    assert all(_eventually(lambda pid=pid: _gone(pid)) for pid in map(int, pids.read_text().split()))


def test_model_dir_files_are_removed_once_the_last_model_dir_step_is_done(
    dirs: Dirs, tmp_path: Path, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The tool runs after the last model-dir step: it sees the model dir as it was before the run.
    text = TAMPER_THEN_WAIT.replace("name: tamper-then-wait", "name: tamper-then-tool")
    steps = text.split("live:\n")[1].split("alerts:\n")[0].splitlines(keepends=True)
    text = text.replace("".join(steps), steps[0] + steps[1] + steps[3] + steps[2])
    (tmp_path / "tamper-then-tool.yaml").write_text(text, encoding="utf-8")
    scenario = load_scenarios(tmp_path).by_name["tamper-then-tool"]
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "pip").write_text(
        f'#!/bin/sh\nls -A "{dirs.models}" > "{tmp_path / "listing"}"\n', encoding="utf-8"
    )
    (fake / "pip").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    result = ScenarioRunner(scenario, settings(dirs, run_id)).run()
    assert [s.status for s in result.steps] == [StepStatus.DONE] * 4, result.steps
    assert (tmp_path / "listing").read_text() == "resnet\n"


def test_a_step_that_times_out_is_killed_with_every_process_it_started(
    capsys: pytest.CaptureFixture[str],
    dirs: Dirs,
    tmp_path: Path,
    run_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only the direct child used to be killed: what it started stayed running in the pod. And a
    scenario whose actions failed said "no action could run here", as if they had been skipped."""
    pids = tmp_path / "pids"
    _hanging_tool(tmp_path / "fakebin", "pip", pids)
    text = (SCENARIOS.directory / "runtime-download.yaml").read_text(encoding="utf-8")
    live = text.split("live:\n")[1].split("alerts:\n")[0]
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    # pip --version only, and pip hangs.
    (scenarios / "runtime-download.yaml").write_text(text.replace(live, live.splitlines(keepends=True)[0]))
    monkeypatch.setenv("PATH", f"{tmp_path / 'fakebin'}{os.pathsep}{os.environ['PATH']}")
    argv = [
        "simulate",
        "runtime-download",
        "--scenarios-dir",
        str(scenarios),
        "--run-id",
        run_id,
        "--timeout",
        "1",
    ]
    argv += ["--workdir", str(dirs.work), "--model-dir", str(dirs.models), "--shm-dir", str(dirs.shm)]
    code, out, _ = _cli(argv, capsys)
    assert code == 1
    assert (
        "  failed   [1] run pip --version: timed out after 1s, killed with every process it started:" in out
    )
    assert "-> no action succeeded: 1 failed (timed out or errored): this scenario proves nothing" in out
    assert "no action could run here" not in out
    assert "1 action(s) failed (timed out or errored; see above)" in out and "skipped" not in out
    assert all(_eventually(lambda pid=pid: _gone(pid)) for pid in map(int, pids.read_text().split()))


def _leftovers(dirs: Dirs, run: str) -> list[Path]:
    rundir = dirs.work / f"sg-run={run}.model-tampering"
    (rundir / "evil").mkdir(parents=True)
    (rundir / "evil" / "model.pt").write_bytes(b"dummy\n")
    (rundir / ".sg-pid").write_text("999999999\n")  # no such process
    tampered = dirs.models / f"sg-run={run}.model-tampering-renamed.pt"
    tampered.write_bytes(b"dummy\n")
    tampered.chmod(0o666)
    link = dirs.models / f"sg-run={run}.model-tampering-link.pt"
    link.symlink_to(rundir / "evil" / "model.pt")
    shm = dirs.shm / f"sg-run={run}.drift-exec"
    shm.mkdir()
    (shm / "sg-drift").write_bytes(b"\x7fELF")
    return [rundir, shm, link, tampered]  # as found: work dir, shm dir, model dir, by name


def test_leftovers_of_a_killed_run_are_reported_and_removed_with_cleanup(
    capsys: pytest.CaptureFixture[str], dirs: Dirs, run_id: str
) -> None:
    """A run killed outright (SIGKILL) cannot clean up: the next simulate says what it left, and
    simulate --cleanup removes it (links unlinked, never followed), never what a running one uses."""
    before = dirs.snapshot()
    left = _leftovers(dirs, "old1")
    busy = dirs.work / "sg-run=busy1.shell-in-serving-pod"
    busy.mkdir()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        (busy / ".sg-pid").write_text(f"{sleeper.pid}\n")
        flags = ["--workdir", str(dirs.work), "--model-dir", str(dirs.models), "--shm-dir", str(dirs.shm)]
        code, out, err = _cli(["simulate", "credential-read", "--run-id", run_id, *flags], capsys)
        assert code == 0, out + err
        listed = "".join(f"  {path}\n" for path in left)
        assert (
            f"warning: left by earlier runs (a simulate killed before it could clean up):\n{listed}"
            f"  remove them with: serving-guard simulate --cleanup {' '.join(flags)}\n"
        ) in err
        assert str(busy) not in err  # a simulate still running uses it
        code, out, err = _cli(["simulate", "--cleanup", *flags], capsys)
        assert code == 1
        assert out == "".join(f"removed {path}\n" for path in left) + (
            f"NOT REMOVED {busy}: in use by a simulate still running (pid {sleeper.pid}), kept\n"
        )
    finally:
        sleeper.kill()
        sleeper.wait()
    shutil.rmtree(busy)
    assert_clean(dirs, before)
    code, out, _ = _cli(["simulate", "--cleanup", *flags], capsys)
    assert code == 0 and out.startswith("nothing left by earlier runs in ")
    code, _, err = _cli(["simulate", "--cleanup", "drift-exec"], capsys)
    assert code == 2 and "--cleanup runs no scenario" in err


# -- settings the rules pack makes pointless are said before the run ------------------------------------


def test_simulate_warns_when_a_directory_cannot_trigger_its_rule(
    capsys: pytest.CaptureFixture[str], dirs: Dirs, tmp_path: Path, run_id: str
) -> None:
    from responder.rulespack.paths import default_pack

    flags = ["--workdir", str(dirs.work), "--model-dir", str(dirs.models), "--shm-dir", str(dirs.shm)]
    names = ["model-tampering", "benign-serving", "drift-exec", "unexpected-model-load"]
    code, out, err = _cli(["simulate", *names, "--run-id", run_id, *flags], capsys)
    assert code == 0, out
    pack = default_pack()
    lines = err.splitlines()
    assert lines[0].startswith(
        f"warning: --model-dir {dirs.models} is not in serving_guard_model_dirs of {pack}"
        " (/models, /mnt/models,"
    )
    assert lines[0].endswith(
        "rule 'Model artifact tampering in serving pod' never fires for changes there, so model-tampering"
        " proves nothing here; give the serving pod's model dir"
    )
    assert (
        "the model benign-serving serves from there is a model loaded from outside the model dirs, which"
        " fires 'Unexpected model file load in serving pod', so the control cannot stay silent" in lines[1]
    )
    assert len(lines) == 2  # the work and shm dirs are below /tmp: the drift rule watches them
    # Tuned so that the model dir is one, the work dir is one too (a workdir inside the model dirs),
    # and only /dev/shm is watched for drift.
    tuning = tmp_path / "tune.yaml"
    tuning.write_text(
        f"- list: serving_guard_model_dirs\n  items: [{dirs.models}, {dirs.work}]\n"
        "  override: {items: append}\n"
        "- list: serving_guard_writable_exec_dirs\n  items: [/dev/shm]\n  override: {items: replace}\n",
        encoding="utf-8",
    )
    other = "u" + run_id[1:]
    rules = ["--rules", str(pack), "--rules", str(tuning)]
    code, out, err = _cli(["simulate", *names, "--run-id", other, *flags, *rules], capsys)
    lines = err.splitlines()
    assert lines[0].startswith(f"warning: --workdir {dirs.work} is inside the model dir {dirs.work}")
    assert lines[0].endswith(
        "the files every scenario creates there fire 'Model artifact tampering in serving pod', and the model"
        " files unexpected-model-load reads there fire no 'Unexpected model file load in serving pod'; give a"
        " directory outside the model dirs (/tmp)"
    )
    assert lines[1].startswith(
        f"warning: --shm-dir {dirs.shm} is not under serving_guard_writable_exec_dirs of"
    )
    assert (
        "nor a model dir: rule 'Drift: new executable in serving pod' fires for the copy drift-exec runs"
        in lines[1]
    )
    assert (
        len(lines) == 2
    )  # the model dir is one now; the work dir is inside it, which the drift rule watches


def test_simulate_says_a_host_name_target_is_not_checked(
    capsys: pytest.CaptureFixture[str], dirs: Dirs, run_id: str
) -> None:
    with refusing_port() as port:
        argv = ["simulate", "anomalous-egress", "--target", f"localhost:{port}", "--run-id", run_id]
        argv += ["--workdir", str(dirs.work), "--shm-dir", str(dirs.shm), "--model-dir", str(dirs.models)]
        code, out, err = _cli([*argv, "--timeout", "2"], capsys)
    assert code == 0, out
    assert err.startswith(
        f"note: --target localhost:{port}: a host name is not checked against"
        " serving_guard_allowed_egress_networks"
    )
    assert err.endswith("pass an IP address to have it checked\n")


def test_simulate_prints_the_steps_that_ran_and_must_alert(
    capsys: pytest.CaptureFixture[str],
    dirs: Dirs,
    tmp_path: Path,
    run_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Skipped variants (no netcat here) are not required; ones that ran are, each by number. The
    model-dir read shows the link evasion and fires nothing: it is not listed either."""
    tools = tmp_path / "tools"
    tools.mkdir()
    for name in ("sh", "bash", "true", "cat"):
        (tools / name).symlink_to(shutil.which(name) or name)
    monkeypatch.setenv("PATH", str(tools))
    argv = ["simulate", "reverse-shell-one-liner", "model-tampering", "benign-serving", "--run-id", run_id]
    argv += ["--workdir", str(dirs.work), "--model-dir", str(dirs.models), "--shm-dir", str(dirs.shm)]
    code, out, _ = _cli(argv, capsys)
    assert code == 0, out
    assert "  skipped  [3] reverse shell nc-exec: netcat (nc, ncat or netcat) is not installed here" in out
    assert (
        f"serving-guard verify reverse-shell-one-liner model-tampering benign-serving --run-id {run_id}"
        " --steps reverse-shell-one-liner=1,2 --steps model-tampering=1,2,3,4,5 --responder URL"
    ) in out
