"""Alerts the gRPC input loses are known only as it stops, after the responder's metrics endpoint has
closed: no scrape could see their count. The stop records them beside the journal
(``<journal>.lost``) and the next start counts them in serving_guard_alerts_lost_total, once, and
names them in its log."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from responder.alert_json import alert_from_mapping
from responder.cluster.api import KubeGateway
from responder.config import Config
from responder.ingest.lost_record import LOST_IDS_KEPT, LostRecord
from responder.ingest.sink import InputName
from responder.metrics import Metrics
from responder.service import Responder, count_lost_at_last_stop
from simulators.cluster_emulator import RunningCluster
from simulators.falco_grpc_server import FalcoGrpcServer
from simulators.falco_json import falco_alert
from simulators.seed import SeededPod
from tests.helpers import SHELL_RULE, Records
from tests.responder.test_grpc_service import eventually, grpc_input_config

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]
LOST = 'serving_guard_alerts_lost_total{input="grpc"}'


async def scrape(url: str | None) -> str:
    assert url is not None
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
        return await response.text()


def lost_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(LOST)]


async def started(config: Config) -> Responder:
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    await responder.start()
    return responder


async def test_alerts_lost_at_stop_are_counted_by_the_next_start(
    tmp_path: Path, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, pods, kubeconfig = seeded
    socket_path = tmp_path / "falco.sock"
    server = FalcoGrpcServer(f"unix://{socket_path}")
    server.start()
    config = grpc_input_config(tmp_path, kubeconfig, socket_path)
    alert = alert_from_mapping(
        falco_alert(pods["vllm"], SHELL_RULE, "Critical", "a shell", {"proc.name": "sh"})
    )
    try:
        responder = await started(config)
        try:
            assert responder.pipeline is not None and responder.grpc_input is not None

            async def refuse(*args: Any, **kwargs: Any) -> Any:
                raise sqlite3.OperationalError("disk I/O error")

            # The journal refuses the alert: held and retried while the input runs, not lost.
            monkeypatch.setattr(responder.pipeline, "submit", refuse)
            server.publish(alert)
            state = responder.grpc_input.state
            await eventually(lambda: state.held == 1, "the alert held")
            assert lost_lines(await scrape(responder.metrics_url)) == []
        finally:
            await responder.stop()  # the alert is lost now, with the endpoint closed
        assert state.lost == 1
        monkeypatch.undo()
        record = LostRecord(config.journal.path)
        assert Path(record.path).is_file()

        with Records("serving_guard.service", logging.ERROR) as records:
            again = await started(config)
        try:
            assert lost_lines(await scrape(again.metrics_url)) == [f"{LOST} 1.0"]
        finally:
            await again.stop()
        [said] = [r for r in records.records if "lost alerts as it stopped" in r.getMessage()]
        assert getattr(said, "alert_ids") == [alert.alert_id]  # noqa: B009 - set by extra=
        assert getattr(said, "counts") == {"grpc": 1}  # noqa: B009
        assert not Path(record.path).exists()

        third = await started(config)  # counted once: not again by a later start
        try:
            assert lost_lines(await scrape(third.metrics_url)) == []
        finally:
            await third.stop()
    finally:
        server.stop()


async def test_a_stop_that_loses_nothing_leaves_no_record(tmp_path: Path, seeded: Seeded) -> None:
    _, _, kubeconfig = seeded
    socket_path = tmp_path / "falco.sock"
    server = FalcoGrpcServer(f"unix://{socket_path}")
    server.start()
    config = grpc_input_config(tmp_path, kubeconfig, socket_path)
    try:
        responder = await started(config)
        await asyncio.sleep(0.2)
        await responder.stop()
        assert not Path(LostRecord(config.journal.path).path).exists()
    finally:
        server.stop()


# -- the record ---------------------------------------------------------------------------------------


def test_stops_not_yet_counted_add_up_and_the_ids_kept_are_bounded(tmp_path: Path) -> None:
    record = LostRecord(str(tmp_path / "journal.db"))
    assert record.read() is None
    record.add(InputName.GRPC, [f"a{n}" for n in range(80)], now=0)
    record.add(InputName.GRPC, [f"b{n}" for n in range(80)], now=60)  # a crash loop: no start read it
    lost = record.read()
    assert lost is not None
    assert (lost.counts, lost.stops, lost.last_stop) == ({"grpc": 160}, 2, "1970-01-01T00:01:00Z")
    assert len(lost.alert_ids) == LOST_IDS_KEPT and lost.alert_ids[:2] == ("a0", "a1")
    record.clear()
    record.clear()  # nothing there: nothing to do
    assert record.read() is None


@pytest.mark.parametrize(
    "content",
    [b"not json", b'{"counts": {"kafka": 3}}', b'{"counts": {"grpc": "3"}}', b"[]"],
    ids=["not-json", "unknown-input", "count-not-a-number", "not-an-object"],
)
def test_what_is_not_a_record_is_said_and_counts_nothing(tmp_path: Path, content: bytes) -> None:
    """Its input names become metric labels: only the responder's own pass."""
    record = LostRecord(str(tmp_path / "journal.db"))
    Path(record.path).write_bytes(content)
    with pytest.raises(ValueError, match=r"not a record|Expecting value"):
        record.read()
    metrics = Metrics()
    with Records("serving_guard.service", logging.ERROR) as records:
        count_lost_at_last_stop(record, metrics)
    assert any("cannot be read" in message for message in records.messages)
    assert "serving_guard_alerts_lost_total{" not in metrics.render().decode()
    assert not Path(record.path).exists()
    record.add(InputName.GRPC, ["a"])  # a stop after it writes a record of its own
    assert json.loads(Path(record.path).read_text())["counts"] == {"grpc": 1}
