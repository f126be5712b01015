"""The journal's bound is judged on its live records, not its file: the file never shrinks (SQLite
reuses pruned pages), so an alert on the file's size would fire for good once it had grown. The
responder exposes what the bound is judged on (serving_guard_journal_used_bytes) and the bound
(serving_guard_journal_max_bytes); the first falls after a prune while the file's size does not."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from responder.cluster.api import KubeGateway
from responder.journal.store import Journal
from responder.service import Responder
from simulators.cluster_emulator import RunningCluster
from simulators.seed import SeededPod
from tests.helpers import FakeClock, responder_config
from tests.responder.test_journal_size_bound import MIB, big_alert, live_bytes

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]
DAY = 86400.0


async def scraped(responder: Responder) -> dict[str, float]:
    assert responder.metrics_url is not None
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{responder.metrics_url}/metrics") as response,
    ):
        text = await response.text()
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}


async def test_the_used_bytes_fall_after_a_prune_while_the_file_stays(tmp_path: Path, seeded: Seeded) -> None:
    _, _, kubeconfig = seeded
    config = responder_config(
        tmp_path, kubeconfig, extra={"journal": {"max_bytes": 2 * MIB, "retention_days": 1}}
    )
    clock = FakeClock()
    responder = Responder(config, KubeGateway.from_config(config.cluster), clock_ns=clock)
    await responder.start()
    try:
        journal = responder.journal
        # ~1.9 MB of finished alerts: over 90% of the bound, not over it (nothing pruned to size).
        for n in range(150):
            alert = big_alert(n)
            await journal.run(Journal.op_append_alert(alert, "http", clock.now))
            await journal.run(Journal.op_finish_alert(alert, None, "opened", clock.now))
        await responder._maintain_once()  # the maintenance pass
        full = await scraped(responder)
        assert full["serving_guard_journal_max_bytes"] == 2 * MIB
        assert full["serving_guard_journal_used_bytes"] == live_bytes(journal) > 0.9 * 2 * MIB
        file_bytes = full["serving_guard_journal_bytes"]
        assert file_bytes >= full["serving_guard_journal_used_bytes"]

        clock.advance(2 * DAY)  # past journal.retention_days: the next pass prunes them all
        await responder._maintain_once()
        pruned = await scraped(responder)
        assert pruned["serving_guard_journal_used_bytes"] == live_bytes(journal) < 0.2 * 2 * MIB
        # The file keeps its size (its pages are free for reuse): the gauge for sizing the volume.
        assert pruned["serving_guard_journal_bytes"] >= min(file_bytes, 0.9 * 2 * MIB)
    finally:
        await responder.stop()
