"""Bad command-line values for `simulate`, `demo` and `ingest` are refused before anything runs, each
with one line naming the flag (argparse's or the CLI's `serving-guard: error:`) and exit status 2."""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from responder.cli import main as cli_main
from responder.commands import ingest
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
