"""A journal the responder cannot write (a read-only file, directory or filesystem) is refused when
it is opened, with either writer, instead of every write failing later with a traceback.

File modes do not stop root: as root the journal is made read-only the way the kernel enforces for
everyone, by a read-only bind mount in a private mount namespace (skipped where that is not allowed);
as another user, by its mode."""

from __future__ import annotations

import functools
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from responder.errors import UserError
from responder.journal import writer as journal_writer
from responder.journal.store import Journal
from simulators.cluster_emulator import RunningCluster
from simulators.falco_json import falco_alert, falco_bytes
from simulators.seed import SeededPod
from tests.helpers import SHELL_RULE

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]
REPO = Path(__file__).parents[2]
NOT_WRITABLE = (
    "(the file, its -wal and -shm files, its directory or its filesystem is read-only for this user)"
)
OPEN_JOURNAL = """
import sys
from responder.errors import UserError
from responder.journal.store import Journal

journal = Journal(sys.argv[1], max_bytes=1 << 20, retention_seconds=60, writer=sys.argv[2])
try:
    journal.open()
except UserError as exc:
    print(exc)
    sys.exit(2)
journal.close()
print("opened")
"""


@functools.cache
def _can_bind_read_only() -> bool:
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", 'mount --bind -o ro "$0" "$0"', "/"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    return probe.returncode == 0


@pytest.fixture
def read_only() -> Iterator[list[tuple[Path, int]]]:
    """Restores the modes ``run_read_only`` changed (else pytest could not remove tmp_path)."""
    changed: list[tuple[Path, int]] = []
    yield changed
    for path, mode in reversed(changed):
        path.chmod(mode)


def run_read_only(
    target: Path, argv: list[str], changed: list[tuple[Path, int]]
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` with ``target`` (a file or directory) read-only to it."""
    if os.geteuid() == 0:
        if not _can_bind_read_only():
            pytest.skip("root ignores file modes, and no read-only bind mount is allowed here")
        script = 'mount --bind -o ro "$0" "$0" && exec "$@"'
        command = ["unshare", "-m", "sh", "-c", script, str(target), *argv]
    else:
        changed.append((target, target.stat().st_mode & 0o7777))
        target.chmod(0o555 if target.is_dir() else 0o444)
        command = argv
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, cwd=REPO)


def make_journal(path: Path) -> None:
    with Journal(str(path), max_bytes=1 << 20, retention_seconds=60, writer="thread"):
        pass


@pytest.mark.parametrize("writer", ["thread", "process"])
@pytest.mark.parametrize("read_only_part", ["file", "directory"])
def test_a_journal_that_cannot_be_written_is_refused_at_open(
    tmp_path: Path, writer: str, read_only_part: str, read_only: list[tuple[Path, int]]
) -> None:
    directory = tmp_path / "journal"
    directory.mkdir()
    path = directory / "j.db"
    make_journal(path)
    target = path if read_only_part == "file" else directory
    result = run_read_only(target, [sys.executable, "-c", OPEN_JOURNAL, str(path), writer], read_only)
    assert result.returncode == 2, (result.stdout, result.stderr)
    message = result.stdout.strip()
    assert message.startswith(f"journal {path}: not writable: ") and message.endswith(NOT_WRITABLE), message
    assert "Traceback" not in result.stderr


def test_a_read_only_sqlite_connection_is_refused_at_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without privileges or a second user: SQLite's own read-only mode gives the same refusal."""
    path = tmp_path / "j.db"
    make_journal(path)

    def read_only_connect(
        name: str, *, readonly: bool = False, factory: type[sqlite3.Connection] = sqlite3.Connection
    ) -> sqlite3.Connection:
        conn = sqlite3.connect(f"file:{name}?mode=ro", uri=True, isolation_level=None, factory=factory)
        conn.row_factory = sqlite3.Row
        return conn

    monkeypatch.setattr(journal_writer, "connect", read_only_connect)
    with pytest.raises(UserError) as caught:
        Journal(str(path), max_bytes=1 << 20, retention_seconds=60, writer="thread").open()
    assert (
        str(caught.value)
        == f"journal {path}: not writable: attempt to write a readonly database {NOT_WRITABLE}"
    )


@pytest.mark.parametrize("writer", ["thread", "process"])
def test_ingest_into_a_read_only_journal_is_a_clear_error(
    tmp_path: Path, seeded: Seeded, writer: str, read_only: list[tuple[Path, int]]
) -> None:
    _, pods, kubeconfig = seeded
    path = tmp_path / "journal.db"
    make_journal(path)
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "cluster": {"kubeconfig": kubeconfig},
                "journal": {"path": str(path), "writer": writer},
                "logging": {"level": "error"},
            }
        )
    )
    source = tmp_path / "alerts.jsonl"
    source.write_bytes(falco_bytes(falco_alert(pods["vllm"], SHELL_RULE, "Notice", "x", {"proc.name": "sh"})))
    argv = [sys.executable, "-m", "responder", "ingest", str(source), "--config", str(config)]
    result = run_read_only(path, [*argv, "--settle-seconds", "0"], read_only)
    assert result.returncode == 2, result.stderr
    reason = f"not writable: attempt to write a readonly database {NOT_WRITABLE}"
    assert result.stderr == f"serving-guard: error: journal {path}: {reason}\n"
