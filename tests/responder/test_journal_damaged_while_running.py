"""A journal found damaged while the responder runs (a page SQLite cannot read, met by a write or a
read after the start read past it) is final, as a failed fsync is: logged once with the file and
how to recover what it holds, every later write refused, and /healthz failing so that Kubernetes
restarts the responder; `ingest` stops at the line it reached and says the same."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from pathlib import Path

import aiohttp
import pytest
import yaml

from responder.alert_json import parse_falco_json
from responder.cli import main
from responder.cluster.api import KubeGateway
from responder.ingest.sink import InputName
from responder.journal.store import Journal
from responder.service import Responder
from tests.helpers import Records, responder_config
from tests.responder.test_journal import alert, open_journal
from tests.responder.test_pipeline import Seeded, shell

RECOVERY = ".recover | sqlite3"


def alert_line(n: int, second: int) -> str:
    return json.dumps(
        {
            "rule": "r",
            "priority": "Warning",
            "time": f"2026-01-01T00:{second // 60:02d}:{second % 60:02d}.{n:09d}Z",
            "output": "x" * 200,
            "output_fields": {"k8s.ns.name": "ml", "k8s.pod.name": f"p{n % 7}", "n": n},
        }
    )


def damage_first_leaf(path: str, name: str, *, middle: bool = False) -> None:
    """Overwrite the first leaf page of table or index ``name`` (its lowest keys; ``middle``: its
    middle one), as a bad sector would; the pages a start reads (the newest keys, the schema) stay
    whole."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        leaves = conn.execute(
            "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY path", (name,)
        ).fetchall()
    assert len(leaves) > 2, f"{name} fits a page or two: nothing to damage apart from what a start reads"
    with open(path, "r+b") as damaged:
        damaged.seek((leaves[len(leaves) // 2 if middle else 0][0] - 1) * size)
        damaged.write(b"\xa5" * size)


def journaled(path: str, n: int) -> bool:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT payload FROM alerts INDEXED BY alerts_received").fetchall()
    return any(f'"n": {n}}}'.encode() in bytes(row[0]) for row in rows)


def journal_with_a_damaged_page(tmp_path: Path, kubeconfig: str, capsys: pytest.CaptureFixture[str]) -> Path:
    """A journal of 3000 alerts (by `ingest`, whose config is returned), the first leaf page of its
    events' index (the oldest events) damaged; the incidents' first alerts, which a start reads,
    have the newest events, far from it."""
    config = tmp_path / "ingest.yaml"
    settings = {"cluster": {"kubeconfig": kubeconfig}, "journal": {"path": str(tmp_path / "journal.db")}}
    config.write_text(yaml.safe_dump({**settings, "logging": {"level": "error"}}))
    first = tmp_path / "first.jsonl"
    first.write_text("".join(alert_line(n, 3599 if n < 7 else 60 + n) + "\n" for n in range(3000)))
    assert main(["ingest", str(first), "--config", str(config), "--settle-seconds", "0"]) == 0
    capsys.readouterr()
    damage_first_leaf(str(tmp_path / "journal.db"), "alerts_event")
    return config


def test_ingest_stops_at_a_write_into_a_damaged_page_and_says_how_to_recover(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    config = journal_with_a_damaged_page(tmp_path, seeded[2], capsys)
    # The first alert's event is older than any journaled: its row goes into the damaged page.
    second = tmp_path / "second.jsonl"
    second.write_text(alert_line(5000, 0) + "\n" + alert_line(5001, 3599) + "\n")

    assert main(["ingest", str(second), "--config", str(config), "--settle-seconds", "0"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    journal = tmp_path / "journal.db"
    assert f"{second}:1: journal write failed (journal {journal}: damaged: " in err
    assert RECOVERY in err and "resume from line 1" in err
    assert not journaled(str(journal), 5001), "written into a journal known to be damaged"


async def test_a_write_into_a_damaged_page_fails_healthz_and_every_later_write(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    _, pods, kubeconfig = seeded
    await asyncio.to_thread(journal_with_a_damaged_page, tmp_path, kubeconfig, capsys)
    config = responder_config(tmp_path, kubeconfig, extra={"inputs": {}})
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    await responder.start()
    try:
        assert responder.pipeline is not None and responder.metrics_url is not None
        oldest = parse_falco_json(alert_line(5000, 0).encode())
        with Records("serving_guard", logging.ERROR) as records:
            with pytest.raises(OSError, match="damaged"):  # its event is older than any journaled
                await responder.pipeline.submit(oldest, InputName.HTTP)
            with pytest.raises(OSError, match="damaged"):  # refused, wherever it would go
                await responder.pipeline.submit(shell(pods["torchserve"]), InputName.HTTP)
        said = [r for r in records.records if r.getMessage().startswith("journal: damaged")]
        assert len(said) == 1, records.messages
        assert config.journal.path in said[0].__dict__["error"] and RECOVERY in said[0].__dict__["error"]
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{responder.metrics_url}/healthz") as response,
        ):
            assert response.status == 503
            body = await response.json()
        assert "damaged" in body["journal"] and RECOVERY in body["journal"]
        assert "writes are refused until the responder restarts" in body["journal"]
    finally:
        await responder.stop()


def test_a_read_of_a_damaged_page_is_logged_once_and_reported_as_the_journals_failure(
    tmp_path: Path,
) -> None:
    journal = open_journal(tmp_path)
    try:
        for n in range(3000):
            journal.submit(Journal.op_append_alert(alert(n + 100), "http", n))
        journal.run_sync(Journal.op_append_alert(alert(99_999), "http", 3000))
        damage_first_leaf(journal.path, "alerts")
        assert journal.failure is None
        with Records("serving_guard.journal", logging.ERROR) as records:
            for _ in range(2):
                with pytest.raises(sqlite3.DatabaseError):
                    journal.pending_alerts()  # the oldest rows too
        assert journal.failure is not None and "damaged" in journal.failure and RECOVERY in journal.failure
        assert len(records.records) == 1
        assert journal.path in records.records[0].__dict__["error"]
    finally:
        journal.close()


def test_a_damaged_page_the_start_reads_stops_it_with_one_line_not_a_traceback(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """The start's first pass over the journal (its size, the pending alerts) reads every page of
    the alerts: a damaged one there is said as the reads before it are, naming the file and how to
    save what it holds."""
    config = journal_with_a_damaged_page(tmp_path, seeded[2], capsys)
    damage_first_leaf(str(tmp_path / "journal.db"), "alerts", middle=True)  # no alert recovery reads
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["ingest", str(empty), "--config", str(config), "--settle-seconds", "0"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert f"journal {tmp_path / 'journal.db'}: cannot be read: " in err and RECOVERY in err
