"""Each scenario's live actions, run for real in temporary directories against loopback listeners
only; they clean up after themselves, tag their processes, and say why when they cannot run."""

from __future__ import annotations

import os
import socket
import stat
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


@pytest.mark.parametrize("name", sorted(SCENARIOS.names()))
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
    expected = f"sg-run={run_id}.anomalous-egress".encode()
    assert _eventually(lambda: listener.tcp_data == [expected] and listener.udp_data == [expected])
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
        == f"busybox|sh -c true # sg-run={run_id}.shell-in-serving-pod|{run_id}\n"
    )
    assert result.steps[0].command == ("sh", "-c", f"true # sg-run={run_id}.shell-in-serving-pod")


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
    assert result.steps[0].command == ("cat", f"{home}/.aws/credentials")
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
    assert f"serving-guard verify unexpected-model-load drift-exec --run-id {run_id} --responder URL" in out
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
