"""Inputs a command cannot use are said in one line naming what and where: a closed stdin, a
journal whose directory the reader cannot write, an alert's bad field, a bad --pod-label."""

from __future__ import annotations

import codecs
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from responder.alert import AlertError
from responder.alert_json import parse_falco_json
from responder.cli import main
from responder.errors import UserError
from responder.journal.store import Journal
from responder.rulespack.sysdig import REQUIRE_ENV, sysdig_required
from tests.test_cli_review_output import SERVING_GUARD, shell


def test_config_explain_from_a_closed_stdin_says_so(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"journal: {{path: {tmp_path / 'journal.db'}}}\n")
    result = shell(f"{SERVING_GUARD} config explain {config} - <&-")
    assert (result.returncode, result.stderr) == (
        2,
        b"serving-guard: error: config explain: stdin is closed\n",
    )


@pytest.fixture
def shared_directory() -> Iterator[Path]:
    """A directory another user can reach (pytest's own are the owner's alone)."""
    directory = Path(tempfile.mkdtemp(prefix="sg-review-"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_audit_of_a_journal_in_a_directory_the_reader_cannot_write_says_so(shared_directory: Path) -> None:
    journal = shared_directory / "journal.db"
    config = shared_directory / "config.yaml"
    config.write_text(f"journal: {{path: {journal}}}\n")
    with Journal(str(journal), max_bytes=1 << 20, retention_seconds=60, writer="thread"):
        pass
    for path in shared_directory.iterdir():
        path.chmod(0o644)
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    result = subprocess.run(
        [*nobody, str(SERVING_GUARD), "audit", "--journal", str(journal)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd="/",
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"serving-guard: error: journal {journal}: cannot be read from here: its directory"
        f" {shared_directory} is not writable, and SQLite creates the journal's -wal and -shm files there"
        " even to read it (run as the journal's owner, or copy the journal with its -wal file to a"
        " writable directory)\n"
    )


GOOD_ALERT = (
    b'{"rule": "Shell in serving pod", "priority": "Warning", "time": "2025-01-28T10:00:00Z",'
    b' "output_fields": {"k8s.ns.name": "ml", "k8s.pod.name": "p1", "proc.cmdline": "sh"}, "output": "o"}'
)


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (
            GOOD_ALERT.replace(b'"o"}', b'"o\xff"}'),
            "field 'output': not UTF-8 (byte 184 of the alert is 0xff)",
        ),
        (
            GOOD_ALERT.replace(b'"sh"', b'"s\x1bh"'),
            "field 'output_fields.proc.cmdline': holds a raw control character (U+001B, line 1, column 168):"
            " JSON text must escape it",
        ),
    ],
)
def test_an_alert_refused_for_a_byte_names_its_field(body: bytes, said: str) -> None:
    with pytest.raises(AlertError) as refused:
        parse_falco_json(body)
    assert str(refused.value) == said


def test_config_explain_skips_a_byte_order_mark_as_ingest_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"journal: {{path: {tmp_path / 'journal.db'}}}\n")
    alert = tmp_path / "alert.json"
    alert.write_bytes(codecs.BOM_UTF8 + GOOD_ALERT + b"\n")
    assert main(["config", "explain", str(config), str(alert)]) == 0
    assert capsys.readouterr().out.startswith("alert: 'Shell in serving pod', priority Warning")


@pytest.mark.parametrize(
    ("label", "said"),
    [
        ("Bad Key=v", "--pod-label 'Bad Key=v': the key must be a Kubernetes label key"),
        ("app=a b", "--pod-label 'app=a b': the value must be a Kubernetes label value"),
        ("app\n=v", "--pod-label 'app\\n=v': the key must be a Kubernetes label key"),
    ],
)
def test_config_explain_refuses_a_pod_label_no_pod_can_carry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], label: str, said: str
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"journal: {{path: {tmp_path / 'journal.db'}}}\n")
    alert = tmp_path / "alert.json"
    alert.write_bytes(GOOD_ALERT)
    assert main(["config", "explain", str(config), str(alert), "--pod-label", label]) == 2
    assert capsys.readouterr().err.startswith(f"serving-guard: error: {said}")


def test_replay_refuses_an_empty_run_id(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "all", "--file", "-", "--pod", "ml/p", "--forge", "--run-id", ""]) == 2
    assert "--run-id '': use 4 to 64 letters" in capsys.readouterr().err


@pytest.mark.parametrize(("value", "required"), [("1", True), ("true", True), ("YES", True), ("0", False)])
def test_require_sysdig_takes_the_usual_words_for_yes_and_no(
    monkeypatch: pytest.MonkeyPatch, value: str, required: bool
) -> None:
    monkeypatch.setenv(REQUIRE_ENV, value)
    assert sysdig_required() is required


def test_require_sysdig_refuses_a_value_it_cannot_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REQUIRE_ENV, "ture")
    with pytest.raises(UserError) as refused:
        sysdig_required()
    assert str(refused.value).startswith("SERVING_GUARD_REQUIRE_SYSDIG='ture': set it to 1, true or yes")
