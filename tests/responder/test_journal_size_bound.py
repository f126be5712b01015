"""``journal.max_bytes`` holds as alerts are written, not only at the maintenance pass, and one
prune gets the journal back under it."""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp
import pytest

from responder.alert import Alert
from responder.alert_json import alert_from_mapping
from responder.cluster.api import KubeGateway
from responder.journal.ops import used_bytes
from responder.journal.store import Journal, room_check_step
from responder.service import Responder
from simulators.cluster_emulator import RunningCluster
from simulators.falco_json import falco_alert, falco_bytes
from simulators.seed import SeededPod
from tests.helpers import SHELL_RULE, responder_config

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]
MIB = 1024 * 1024


def big_alert(n: int) -> Alert:
    """An alert of ~12 KB that does not compress (as the journal does not compress)."""
    return alert_from_mapping(
        {
            "rule": "r",
            "priority": "Warning",
            "time": f"2026-01-01T00:00:{n % 60:02d}.{n:09d}Z",
            "output": os.urandom(6000).hex(),
            "output_fields": {"k8s.ns.name": "ml", "k8s.pod.name": f"p{n % 7}"},
        }
    )


def live_bytes(journal: Journal) -> int:
    with journal.reader() as conn:
        return used_bytes(conn)


@pytest.mark.parametrize("writer", ["thread", "process"])
def test_one_prune_gets_an_overfull_journal_back_under_its_bound(tmp_path: Path, writer: str) -> None:
    journal = Journal(str(tmp_path / "j.db"), max_bytes=MIB, retention_seconds=3600.0, writer=writer)
    with journal:
        alerts = [big_alert(n) for n in range(200)]  # ~2.4 MB of finished alerts in a 1 MiB journal
        for alert in alerts:
            journal.run_sync(Journal.op_append_alert(alert, "http", 1))
            journal.run_sync(Journal.op_finish_alert(alert, None, "opened", 2))
        journal.run_sync(Journal.op_append_alert(big_alert(999), "http", 3))  # pending: never pruned
        journal.check_size()
        assert journal.full
        removed = journal.run_sync(journal.op_prune(now_ns=4))
        journal.check_size()
        assert not journal.full
        # Under the bound with room for the next writes, and no more removed than that needs.
        assert live_bytes(journal) <= MIB - 2 * room_check_step(MIB)
        assert 100 < removed < 200
        assert journal.pending_count() == 1
        with journal.reader() as conn:
            kept = [row[0] for row in conn.execute("SELECT alert_id FROM alerts WHERE state = 'done'")]
        assert kept == [alert.alert_id for alert in alerts[removed:]]  # the oldest went


async def post(session: aiohttp.ClientSession, url: str, body: bytes) -> int:
    async with session.post(f"{url}/v1/alerts", data=body) as response:
        await response.read()
        return response.status


async def test_a_burst_of_large_alerts_stays_within_the_bound_and_is_accepted(
    tmp_path: Path, seeded: Seeded
) -> None:
    """The audit's burst: one sender, distinct ~60 KB alerts, a 1 MiB journal. Each answer comes
    once the alert is journaled; the journal never holds much more than its bound."""
    _, pods, kubeconfig = seeded
    config = responder_config(tmp_path, kubeconfig, extra={"journal": {"max_bytes": MIB}})
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    await responder.start()
    margin = room_check_step(MIB) + 64 * 1024  # a step of writes, and the alert in flight
    statuses: list[int] = []
    largest = 0
    try:
        async with aiohttp.ClientSession() as session:
            for n in range(120):  # ~7 MB in all
                fields = {"proc.cmdline": os.urandom(7000).hex(), "proc.pcmdline": os.urandom(7000).hex()}
                body = falco_bytes(falco_alert(pods["vllm"], SHELL_RULE, "Notice", f"shell {n}", fields))
                statuses.append(await post(session, responder.http_url or "", body))
                largest = max(largest, live_bytes(responder.journal))
        assert responder.pipeline is not None and await responder.pipeline.drain(timeout=10)
        with responder.journal.reader() as conn:
            kept = conn.execute("SELECT COUNT(*) FROM alerts").fetchone()[0]
    finally:
        await responder.stop()
    assert statuses == [202] * 120
    assert largest <= MIB + margin
    assert 0 < kept < 120  # the oldest repeats were pruned as the burst went on
    # The file grows little past the bound: freed pages are reused.
    assert os.path.getsize(config.journal.path) <= 2 * MIB
