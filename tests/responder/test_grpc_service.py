"""The responder's gRPC input inside the running service, against a Falco-compatible server."""

from __future__ import annotations

import asyncio
from pathlib import Path

from responder.cluster.api import KubeGateway
from responder.service import Responder
from simulators.cluster_emulator import RunningCluster
from simulators.falco_grpc_server import FalcoGrpcServer
from simulators.falco_json import falco_alert
from simulators.seed import SeededPod
from tests.helpers import SHELL_RULE, responder_config

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]


async def test_alerts_streamed_by_falco_over_grpc_are_acted_on(tmp_path: Path, seeded: Seeded) -> None:
    running, pods, kubeconfig = seeded
    socket_path = tmp_path / "falco.sock"
    server = FalcoGrpcServer(f"unix://{socket_path}", falco_version="0.42.0")
    server.start()
    try:
        config = responder_config(
            tmp_path,
            kubeconfig,
            extra={
                "inputs": {
                    "grpc": {
                        "enabled": True,
                        "address": f"unix://{socket_path}",
                        "poll_interval_seconds": 0.05,
                        "backoff": {"initial_seconds": 0.05, "max_seconds": 0.2},
                    }
                }
            },
        )
        responder = Responder(config, KubeGateway.from_config(config.cluster))
        await responder.start()
        try:
            for name in ("vllm", "kserve"):
                server.publish(falco_alert(pods[name], SHELL_RULE, "Critical", "shell", {"proc.name": "sh"}))
            assert await asyncio.to_thread(server.wait_drained, 10)
            assert responder.pipeline is not None
            for _ in range(200):
                if responder.pipeline.stats.processed >= 2:
                    break
                await asyncio.sleep(0.05)
            assert await responder.pipeline.drain(timeout=10)
            for name in ("vllm", "kserve"):
                stored = running.call(running.emulator.get_object, "v1/pods", "ml-serving", pods[name].name)
                assert stored["metadata"]["labels"]["serving-guard.io/quarantine"] == "true"
            assert responder.grpc_input is not None and responder.grpc_input.state.falco_version == "0.42.0"
            text = responder.metrics.render().decode()
            assert 'serving_guard_alerts_received_total{input="grpc",source="syscall"} 2.0' in text
        finally:
            await responder.stop()
    finally:
        server.stop()
