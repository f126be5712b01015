"""A failed fsync is fatal to the journal's writer: nothing after it is acknowledged, or committed,
and the liveness check asks for the restart that resumes what reached the disk. A retried alert
that was journaled but never dispatched is processed, not taken for a redelivery."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import pickle
import sqlite3
from multiprocessing import Pipe
from pathlib import Path
from typing import Any

import pytest

from responder.alert import Alert
from responder.cluster.api import KubeGateway
from responder.ingest.sink import Accepted, InputName
from responder.journal.ops import Touch
from responder.journal.process import ProcessWriter
from responder.journal.store import Journal
from responder.journal.walsync import SyncFailed
from responder.journal.writer import WriterOptions
from responder.service import Responder
from tests.helpers import responder_config
from tests.responder.test_journal import alert, open_journal
from tests.responder.test_pipeline import LABEL, Seeded, labels, rows, shell


class FsyncFailingOnce:
    """An fsync that fails (EIO, as after a writeback error) on its ``failing_call``-th call."""

    def __init__(self, failing_call: int) -> None:
        self.calls = 0
        self._failing_call = failing_call

    def __call__(self, descriptor: int) -> None:
        self.calls += 1
        if self.calls == self._failing_call:
            raise OSError(errno.EIO, "Input/output error")
        os.fsync(descriptor)


def committed_alert_ids(journal: Journal) -> set[str]:
    with contextlib.closing(sqlite3.connect(journal.path)) as reader:
        return {row[0] for row in reader.execute("SELECT alert_id FROM alerts")}


def test_after_a_failed_fsync_no_later_write_is_acknowledged_or_committed(tmp_path: Path) -> None:
    # Calls: the first group's WAL and its directory, then the second group's WAL (fails).
    journal = open_journal(tmp_path, fsync=FsyncFailingOnce(failing_call=3))
    try:
        assert journal.run_sync(Journal.op_append_alert(alert(1), "http", 1)) is True
        assert journal.failure is None
        with pytest.raises(SyncFailed, match="journal fsync failed: Input/output error"):
            journal.run_sync(Journal.op_append_alert(alert(2), "grpc", 2))
        # The disk may lack the WAL frames before it: a later write could be lost after its answer.
        with pytest.raises(SyncFailed, match="journal fsync failed"):
            journal.run_sync(Journal.op_append_alert(alert(3), "http", 3))
        with pytest.raises(SyncFailed):  # its sender's retry of the second one is refused too
            journal.run_sync(Journal.op_append_alert(alert(2), "grpc", 4))
        assert alert(3).alert_id not in committed_alert_ids(journal)
        # /healthz reports it, so that Kubernetes restarts the responder.
        assert journal.failure is not None and "journal fsync failed" in journal.failure
        assert "until the responder restarts" in journal.failure
    finally:
        journal.close()
    # The restart resumes what the journal holds, the second alert included.
    reopened = open_journal(tmp_path)
    try:
        assert reopened.failure is None
        assert [pending.alert.alert_id for pending in reopened.pending_alerts()] == [
            alert(1).alert_id,
            alert(2).alert_id,
        ]
    finally:
        reopened.close()


def test_the_process_writer_refuses_writes_once_its_writer_reports_a_failed_fsync(tmp_path: Path) -> None:
    settled: list[tuple[Any, Any, BaseException | None]] = []
    writer = ProcessWriter(WriterOptions(str(tmp_path / "j.db")), settled.extend)
    ours, theirs = Pipe()
    # The writer process's end: it answers op 0 with the failed fsync, then closes.
    writer._link = ours
    writer._waiting[0] = "first"
    failed = SyncFailed(errno.EIO, "journal fsync failed: Input/output error")
    theirs.send_bytes(pickle.dumps(("settled", [(0, None, failed)], 1, 1)))
    theirs.send_bytes(pickle.dumps(("closed",)))
    writer._receive_until_closed()
    assert settled[0][0] == "first" and isinstance(settled[0][2], SyncFailed)
    assert writer.failure is not None and "journal fsync failed" in writer.failure
    writer.put([(Touch(), "later")])
    assert settled[-1][0] == "later" and isinstance(settled[-1][2], SyncFailed)
    assert not theirs.poll(0.1), "a write went to a writer whose fsync failed"
    ours.close()
    theirs.close()


async def test_a_retry_of_an_alert_journaled_but_never_dispatched_is_processed(
    tmp_path: Path, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    running, pods, kubeconfig = seeded
    config = responder_config(tmp_path, kubeconfig, extra={"inputs": {}})
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    await responder.start()
    try:
        pipeline = responder.pipeline
        assert pipeline is not None

        def broken_dispatch(alert: Alert, received_ns: int, weight: int) -> None:
            raise RuntimeError("dispatch broke")

        attack = shell(pods["torchserve"], n=1)
        monkeypatch.setattr(pipeline, "_dispatch", broken_dispatch)
        with pytest.raises(RuntimeError, match="dispatch broke"):
            await asyncio.wait_for(pipeline.submit(attack, InputName.HTTP), timeout=10)
        monkeypatch.undo()
        # Journaled and pending, answered with an error: its sender retries it.
        answer = await asyncio.wait_for(pipeline.submit(attack, InputName.HTTP), timeout=10)
        assert answer == Accepted(attack.alert_id, new=True)
        assert await pipeline.drain(timeout=20)
        assert labels(running, pods["torchserve"])[LABEL] == "true"
        finished = rows(config, "SELECT state, outcome FROM alerts")
        assert [tuple(row) for row in finished] == [("done", "opened")]
        # A retry of it now is a redelivery.
        again = await asyncio.wait_for(pipeline.submit(attack, InputName.HTTP), timeout=10)
        assert again == Accepted(attack.alert_id, new=False)
    finally:
        await responder.stop()
