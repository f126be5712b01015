"""Output that cannot be written (a full disk, a closed stdout, stderr's reader gone) is one line
and a status of its own (74), never a traceback; `ingest` goes on journaling every good line when
its reports cannot be written, and its status says reports were lost."""

from __future__ import annotations

import json
import shlex
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from responder.cli import EXIT_OUTPUT_LOST

SERVING_GUARD = Path(sys.executable).with_name("serving-guard")
GOOD_LINES = 300
CANNOT_WRITE = b"serving-guard: cannot write output: stdout: No space left on device\n"


def shell(command: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["bash", "-c", f"set -o pipefail; {command}"], capture_output=True, timeout=120, check=False
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A config for `ingest` with no policy: the cluster (unreachable) is never asked."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: 'http://127.0.0.1:1'}\n"
        "users:\n- name: u\n  user: {token: abc}\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\n"
        "current-context: x\n"
    )
    path = tmp_path / "config.yaml"
    path.write_text(
        f"journal:\n  path: {tmp_path / 'journal.db'}\nlogging:\n  level: warning\n"
        f"cluster:\n  kubeconfig: {kubeconfig}\n  retry: {{attempts: 1}}\n  request_timeout_seconds: 1\n"
    )
    return path


@pytest.fixture
def alternating(tmp_path: Path) -> Path:
    """A good alert, then a bad line (each reported on stderr), GOOD_LINES times: ~40 KB of reports."""
    lines = []
    for number in range(GOOD_LINES):
        alert = {
            "rule": "Pipe test",
            "priority": "Warning",
            "time": "2025-01-28T10:00:00.123456789Z",
            "output": f"alert {number}",
            "output_fields": {"k8s.ns.name": "ml", "k8s.pod.name": "p1", "container.id": "abcdef123456"},
            "hostname": "n1",
        }
        lines += [json.dumps(alert), f"bad line {number} " + "x" * 100]
    path = tmp_path / "alerts.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def journaled(tmp_path: Path) -> int:
    with sqlite3.connect(tmp_path / "journal.db") as db:
        return int(db.execute("SELECT count(*) FROM alerts").fetchone()[0])


def ingest(config: Path, source: Path) -> str:
    return (
        f"{shlex.quote(str(SERVING_GUARD))} ingest --config {shlex.quote(str(config))}"
        f" --settle-seconds 0 {shlex.quote(str(source))}"
    )


def test_ingest_with_a_full_stderr_journals_every_good_line_and_says_reports_were_lost(
    tmp_path: Path, config: Path, alternating: Path
) -> None:
    result = shell(f"{ingest(config, alternating)} 2>/dev/full")
    assert result.returncode == EXIT_OUTPUT_LOST == 74
    assert journaled(tmp_path) == GOOD_LINES


def test_ingest_whose_stderr_reader_goes_away_journals_every_good_line(
    tmp_path: Path, config: Path, alternating: Path
) -> None:
    result = shell(f"{ingest(config, alternating)} 2>&1 >/dev/null | head -c 10")
    assert result.returncode == EXIT_OUTPUT_LOST
    assert result.stdout == str(alternating).encode()[:10]
    assert journaled(tmp_path) == GOOD_LINES


def test_ingest_help_documents_the_status_for_lost_reports() -> None:
    result = shell(f"{shlex.quote(str(SERVING_GUARD))} ingest --help")
    assert result.returncode == 0
    assert b"74 reports or the tally could not be written to stderr" in b" ".join(result.stdout.split())


@pytest.mark.parametrize("command", ["config check {config}", "audit --config {config}"])
def test_a_full_stdout_is_one_line_and_status_74(config: Path, alternating: Path, command: str) -> None:
    shell(f"{ingest(config, alternating)} 2>/dev/null")  # a journal for audit to read
    result = shell(f"{SERVING_GUARD} {command.format(config=config)} >/dev/full")
    assert (result.returncode, result.stderr) == (EXIT_OUTPUT_LOST, CANNOT_WRITE)


def test_a_full_stdout_found_while_the_command_runs_is_one_line_too(tmp_path: Path, config: Path) -> None:
    """Output far beyond a buffer fails on a write the command makes, not on the flush at the end."""
    rules = "\n".join(f"    - rule number {number} {'x' * 60}" for number in range(3000))
    big = tmp_path / "big.yaml"
    big.write_text(
        config.read_text() + f"policies:\n- name: many\n  actions: [notify]\n  match:\n    rules:\n{rules}\n"
    )
    result = shell(f"{SERVING_GUARD} config check {big} >/dev/full")
    assert (result.returncode, result.stderr) == (EXIT_OUTPUT_LOST, CANNOT_WRITE)


@pytest.mark.parametrize(
    ("redirect", "said"),
    [
        (">&-", b"serving-guard: cannot write output: stdout is closed\n"),
        (">/dev/full", CANNOT_WRITE),
    ],
)
def test_replay_to_a_stdout_it_cannot_write_is_one_line(redirect: str, said: bytes) -> None:
    result = shell(f"{SERVING_GUARD} replay all --file - --pod ml/p --forge {redirect}")
    assert result.returncode == EXIT_OUTPUT_LOST
    assert result.stderr.endswith(said) and b"Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["config check {config}", "audit --config {config}", "--version"])
def test_a_closed_stdout_is_one_line_and_status_74(config: Path, alternating: Path, command: str) -> None:
    """fd 1 closed as the command starts: Python has no sys.stdout, and print() would write nowhere."""
    shell(f"{ingest(config, alternating)} 2>/dev/null")  # a journal for audit to read
    module = f"{shlex.quote(sys.executable)} -m responder"
    result = shell(f"{module} {command.format(config=config)} >&-")
    assert (result.returncode, result.stderr) == (
        EXIT_OUTPUT_LOST,
        b"serving-guard: cannot write output: stdout is closed\n",
    )


def test_ingest_with_a_closed_stdout_journals_as_ever(
    config: Path, alternating: Path, tmp_path: Path
) -> None:
    """ingest writes nothing to stdout: a closed one is no failure of it."""
    result = shell(f"{ingest(config, alternating)} 2>/dev/null >&-")
    assert result.returncode == 1  # the bad lines, each reported
    assert journaled(tmp_path) == GOOD_LINES
