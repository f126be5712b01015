"""Bad command-line values for `simulate`, `demo` and `ingest` are refused before anything runs, each
with one line naming the flag (argparse's or the CLI's `serving-guard: error:`) and exit status 2."""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from responder.cli import COMMANDS
from responder.cli import main as cli_main
from responder.commands import ingest
from responder.commands.common import MAX_SECONDS
from simulators.demo import WORKDIR_MARKER


def _usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The last stderr line of an argparse refusal (exit status 2)."""
    with pytest.raises(SystemExit) as exited:
        cli_main(argv)
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    return err.strip().splitlines()[-1]


def _user_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The whole stderr of a refusal the command itself makes (exit status 2, no traceback)."""
    code = cli_main(argv)
    out, err = capsys.readouterr()
    assert code == 2, out + err
    assert out == ""
    return err


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "0"])
def test_simulate_timeout_must_be_positive_seconds(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    # "--timeout -inf" would be read as an unknown option: the = form reaches the check.
    line = _usage_error(["simulate", "shell-in-serving-pod", f"--timeout={value}"], capsys)
    assert line == (
        f"serving-guard simulate: error: argument --timeout: {value!r}: "
        "seconds must be finite and more than 0"
    )
    if value == "-1":  # a negative number after a space is the flag's value too
        assert _usage_error(["simulate", "shell-in-serving-pod", "--timeout", value], capsys) == line
    line = _usage_error(["simulate", "shell-in-serving-pod", "--timeout", "soon"], capsys)
    assert line == "serving-guard simulate: error: argument --timeout: 'soon' is not a number of seconds"


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
def test_demo_timeout_must_be_positive_seconds(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    line = _usage_error(["demo", "--no-report", "--timeout", value], capsys)
    assert (
        line
        == f"serving-guard demo: error: argument --timeout: {value!r}: seconds must be finite and more than 0"
    )


@pytest.mark.parametrize("value", ["-5", "nan", "inf"])
def test_ingest_settle_seconds_must_be_finite_and_not_negative(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _usage_error(["ingest", "-", "--config", "unused.yaml", "--settle-seconds", value], capsys)
    assert line == (
        f"serving-guard ingest: error: argument --settle-seconds: {value!r}: "
        "seconds must be finite and 0 or more"
    )


def test_ingest_settle_seconds_may_be_zero() -> None:
    parser = argparse.ArgumentParser()
    ingest.configure(parser)
    assert parser.parse_args(["-", "--config", "c.yaml", "--settle-seconds", "0"]).settle_seconds == 0.0
    assert parser.parse_args(["-", "--config", "c.yaml"]).settle_seconds == 30.0


# Every duration flag, with the arguments its command needs besides: one bound (a week) for all,
# past which the standard library's timeouts overflowed (simulate --timeout 1e7, demo 1e12).
VERIFY = ["verify", "shell-in-serving-pod", "--run-id", "r1", "--responder", "http://127.0.0.1:1"]
DURATIONS = [
    (["simulate", "shell-in-serving-pod"], "--timeout", "more than 0"),
    (["demo", "--no-report"], "--timeout", "more than 0"),
    (["ingest", "-", "--config", "unused.yaml"], "--settle-seconds", "0 or more"),
    (VERIFY, "--timeout", "more than 0"),
    (VERIFY, "--interval", "more than 0"),
    (VERIFY, "--settle", "more than 0"),
    (
        ["replay", "shell-in-serving-pod", "--pod", "ns/p", "--to", "http://127.0.0.1:1"],
        "--timeout",
        "more than 0",
    ),
]


@pytest.mark.parametrize(("argv", "flag", "bound"), DURATIONS)
@pytest.mark.parametrize("value", ["604800.001", "604801", "1e7", "1e12", "1e300"])
def test_durations_are_at_most_a_week(
    argv: list[str], flag: str, bound: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _usage_error([*argv, flag, value], capsys)
    assert line == (
        f"serving-guard {argv[0]}: error: argument {flag}: {value!r}: "
        f"seconds must be finite, {bound} and at most 604800 (7 days)"
    )


@pytest.mark.parametrize(("argv", "flag", "bound"), DURATIONS)
def test_a_duration_of_a_week_is_accepted(argv: list[str], flag: str, bound: str) -> None:
    module = importlib.import_module(next(c.module for c in COMMANDS if c.words == (argv[0],)))
    parser = argparse.ArgumentParser()
    module.configure(parser)
    for value in ("604800", "6.048e5", "604799.5"):
        options = parser.parse_args([*argv[1:], flag, value])
        assert getattr(options, flag.lstrip("-").replace("-", "_")) == float(value)


def test_a_week_does_not_overflow_the_waits_it_reaches(tmp_path: Path) -> None:
    """The waits the reviewer saw overflow (simulate's subprocess timeout at 1e7, demo's drain of
    the fake Falco at 1e12) take the longest duration allowed."""
    from responder.ingest.proto import outputs_pb2
    from simulators.falco_grpc_server import FalcoGrpcServer

    server = FalcoGrpcServer(f"unix://{tmp_path}/falco.sock")  # not started: only its queue is used
    server.publish(outputs_pb2.response())
    consumer = threading.Timer(0.2, lambda: list(server._drain()))
    consumer.start()
    try:
        assert server.wait_drained(MAX_SECONDS) is True  # waited on the condition, then drained
    finally:
        consumer.join()
    done = subprocess.run(
        [sys.executable, "-c", "import time; time.sleep(0.2)"],
        capture_output=True,
        timeout=MAX_SECONDS,
        check=False,
    )
    assert done.returncode == 0


def test_demo_report_and_no_report_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--report", "x.html", "--no-report"], ["--no-report", "--report", "x.html"]):
        line = _usage_error(["demo", *argv], capsys)
        first, second = ("--no-report", "--report") if argv[0] == "--report" else ("--report", "--no-report")
        assert line == f"serving-guard demo: error: argument {first}: not allowed with argument {second}"


def test_demo_refuses_empty_paths(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        _user_error(["demo", "--workdir="], capsys) == "serving-guard: error: --workdir: the path is empty\n"
    )
    assert _user_error(["demo", "--report="], capsys) == "serving-guard: error: --report: the path is empty\n"


def test_demo_workdir_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "file"
    file.write_text("mine", encoding="utf-8")
    err = _user_error(["demo", "--no-report", "--workdir", str(file)], capsys)
    assert err == f"serving-guard: error: --workdir {file}: exists and is not a directory\n"
    err = _user_error(["demo", "--no-report", "--workdir", str(file / "sub")], capsys)
    assert (
        err
        == f"serving-guard: error: --workdir {file / 'sub'}: cannot create the directory: Not a directory\n"
    )
    assert file.read_text(encoding="utf-8") == "mine"


def test_demo_refuses_a_non_empty_directory_that_is_not_a_demos(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "config.yaml").write_text("mine", encoding="utf-8")
    err = _user_error(["demo", "--no-report", "--workdir", str(tmp_path)], capsys)
    assert err == (
        f"serving-guard: error: --workdir {tmp_path}: not empty and not a previous demo run's directory "
        f"(it has no {WORKDIR_MARKER}); give a new or empty directory\n"
    )
    assert {p.name for p in tmp_path.iterdir()} == {"config.yaml"}
    assert (tmp_path / "config.yaml").read_text(encoding="utf-8") == "mine"


def test_demo_workdir_with_something_else_named_pki(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / WORKDIR_MARKER).write_text("", encoding="utf-8")
    (tmp_path / "pki").write_text("mine", encoding="utf-8")
    err = _user_error(["demo", "--no-report", "--workdir", str(tmp_path)], capsys)
    assert err == (
        f"serving-guard: error: --workdir {tmp_path}: pki is in the way (not a directory); "
        "the demo writes its PKI there\n"
    )


# -- permissions, checked as an unprivileged user (root ignores them) --------------------------------


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory any user can reach (tmp_path is private to its owner, root here)."""
    with tempfile.TemporaryDirectory(prefix="sg-args-") as name:
        path = Path(name)
        path.chmod(0o755)
        try:
            yield path
        finally:
            for sub in path.rglob("*"):
                if sub.is_dir():
                    sub.chmod(stat.S_IRWXU)


def _cli_unprivileged(argv: list[str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "responder.cli", *argv]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root and setpriv is not installed to drop privileges")
        command = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    return subprocess.run(command, capture_output=True, text=True, cwd="/", timeout=60, check=False)


def test_demo_workdir_that_cannot_be_created_or_written(shared_dir: Path) -> None:
    read_only = shared_dir / "read-only"
    read_only.mkdir()
    read_only.chmod(0o555)
    done = _cli_unprivileged(["demo", "--no-report", "--workdir", str(read_only / "new")])
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"serving-guard: error: --workdir {read_only / 'new'}: "
        "cannot create the directory: Permission denied\n"
    )
    done = _cli_unprivileged(["demo", "--no-report", "--workdir", str(read_only)])
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"serving-guard: error: --workdir {read_only}: cannot write in the directory: Permission denied\n"
    )
    assert list(read_only.iterdir()) == []
