"""One responder per journal: a second one (or `ingest` with the running responder's config) is
refused at start, naming the holder; the lock goes with the process that held it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from responder.cluster.api import KubeGateway
from responder.errors import UserError
from responder.journal.lock import JournalLock
from responder.service import Responder
from tests.helpers import responder_config
from tests.responder.test_block_destination import Seeded


async def test_a_second_responder_on_the_same_journal_is_refused(tmp_path: Path, seeded: Seeded) -> None:
    config = responder_config(tmp_path, seeded[2], extra={"inputs": {}})
    first = Responder(config, KubeGateway.from_config(config.cluster))
    await first.start()
    try:
        second = Responder(config, KubeGateway.from_config(config.cluster))
        with pytest.raises(UserError) as refused:
            await second.start()
        await second.stop()  # as run_until does after a failed start: it must not drop the first's lock
        message = str(refused.value)
        assert f"journal {config.journal.path}: another responder is using it (pid {os.getpid()};" in message
        assert "give this one its own journal.path" in message
        with pytest.raises(UserError):  # still held by the first
            JournalLock(config.journal.path).acquire()
    finally:
        await first.stop()
    again = Responder(config, KubeGateway.from_config(config.cluster))
    await again.start()  # released with the first
    await again.stop()


def test_the_lock_goes_with_the_process_that_held_it(tmp_path: Path) -> None:
    """A responder that crashed (killed: nothing ran on its way out) leaves no stale lock."""
    journal = str(tmp_path / "journal.db")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from responder.journal.lock import JournalLock;"
            f" JournalLock({journal!r}).acquire(); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=f"pid {holder.pid};"):
            JournalLock(journal).acquire()
    finally:
        holder.kill()
        holder.wait()
    deadline = time.monotonic() + 5
    lock = JournalLock(journal)
    while True:
        try:
            lock.acquire()
            break
        except UserError:
            assert time.monotonic() < deadline, "the lock outlived its process"
            time.sleep(0.05)
    lock.release()
