"""The responder's gRPC input stopping while the journal's disk is slow: with the real pipeline,
whose submit hands the write to the journal before it waits, an alert journaled after the input
gave up waiting is not named as lost (the input asks the journal it was given)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from responder.alert_json import alert_from_mapping
from responder.cluster.api import KubeGateway
from responder.ingest.grpc import STOP_GRACE_SECONDS
from responder.ingest.grpc_journal import JournaledAmong
from responder.journal import walsync
from responder.service import Responder
from simulators.cluster_emulator import RunningCluster
from simulators.falco_grpc_server import FalcoGrpcServer
from simulators.falco_json import falco_alert
from simulators.seed import SeededPod
from tests.helpers import SHELL_RULE, Records
from tests.responder.test_grpc_service import eventually, grpc_input_config, journaled_ids
from tests.responder.test_walsync import GatedFsync

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]
T = TypeVar("T")


async def test_an_alert_committed_after_the_grace_is_journaled_and_not_named_lost(
    tmp_path: Path, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, pods, kubeconfig = seeded
    fsync = GatedFsync()
    monkeypatch.setattr(walsync, "DURABLE_SYNC", fsync)  # the journal's disk, held by the test
    socket_path = tmp_path / "falco.sock"
    server = FalcoGrpcServer(f"unix://{socket_path}")
    server.start()
    config = grpc_input_config(tmp_path, kubeconfig, socket_path)
    config = config.model_copy(update={"journal": config.journal.model_copy(update={"writer": "thread"})})
    alert = alert_from_mapping(
        falco_alert(pods["vllm"], SHELL_RULE, "Critical", "a shell", {"proc.name": "sh"})
    )
    try:
        with Records("serving_guard.service.grpc", logging.INFO) as records:
            responder = Responder(config, KubeGateway.from_config(config.cluster))
            await responder.start()
            stopping: asyncio.Task[None] | None = None
            try:
                grpc_input = responder.grpc_input
                assert grpc_input is not None
                asked = asyncio.Event()
                run = responder.journal.run

                async def run_and_say(op: Callable[[sqlite3.Connection], T]) -> T:
                    if isinstance(op, JournaledAmong):
                        asked.set()
                    return await run(op)

                monkeypatch.setattr(responder.journal, "run", run_and_say)
                fsync.entered.clear()
                fsync.gate.clear()
                server.publish(alert)
                # Handed to the journal and committed; its sync (so its answer) waits for the disk.
                assert await asyncio.to_thread(fsync.entered.wait, 10)
                await eventually(lambda: grpc_input.state.received == 1, "the alert read")
                stopping = asyncio.create_task(responder.stop())
                await asyncio.wait_for(asked.wait(), STOP_GRACE_SECONDS + 5)
                assert not stopping.done() and grpc_input.state.submitted == 0  # the submit was cut short
                fsync.gate.set()
                await asyncio.wait_for(stopping, 30)
            finally:
                fsync.gate.set()
                if stopping is None:
                    await responder.stop()
                elif not stopping.done():
                    await asyncio.wait_for(stopping, 30)
        assert journaled_ids(config.journal.path) == {alert.alert_id}
        errors: list[Any] = [r for r in records.records if r.levelno >= logging.ERROR]
        assert errors == []
        assert any("cut short by the stop are journaled" in m for m in records.messages)
        assert (grpc_input.state.lost, grpc_input.state.submitted) == (0, 1)
        assert 'serving_guard_alerts_lost_total{input="grpc"} 1.0' not in responder.metrics.render().decode()
    finally:
        server.stop()
