"""The responder's gRPC input inside the running service, against a Falco-compatible server."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from responder.alert_json import alert_from_mapping
from responder.cli import main
from responder.cluster.api import KubeGateway
from responder.config import Config
from responder.errors import UserError
from responder.service import Responder
from simulators.cluster_emulator import RunningCluster
from simulators.falco_grpc_server import FalcoGrpcServer
from simulators.falco_json import falco_alert
from simulators.pki import TestPKI, make_test_pki
from simulators.seed import SeededPod
from tests.helpers import SHELL_RULE, Records, responder_config
from tests.responder.test_http_input_sender import journaled_senders
from tests.responder.test_journal_process import writer_pid

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
            assert "serving_guard_grpc_connected 1.0" in text  # as the stream is, not as of the last pass
            # Journaled with the Falco that sent them, as the audit trail and Slack name it.
            socket_sender = {"address": f"unix://{socket_path}", "proof": "socket"}
            assert journaled_senders(responder) == [socket_sender, socket_sender]
        finally:
            await responder.stop()
    finally:
        server.stop()


def grpc_input_config(tmp_path: Path, kubeconfig: str, socket_path: Path) -> Config:
    return responder_config(
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


async def eventually(predicate: Callable[[], bool], what: str) -> None:
    """Wait for what the responder brings about (the bound only keeps a bug from hanging CI)."""
    for _ in range(400):
        if predicate():
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"timed out waiting for: {what}")


def journaled_ids(path: str) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT alert_id FROM alerts")}


async def test_a_dead_journal_writer_stops_the_grpc_input_and_no_alert_it_took_is_lost_unsaid(
    tmp_path: Path, seeded: Seeded
) -> None:
    """The audit's case: the journal's writer process is killed under a running gRPC input. Every
    alert Falco published is journaled, still in Falco's queue, or named as lost."""
    _, pods, kubeconfig = seeded
    socket_path = tmp_path / "falco.sock"
    server = FalcoGrpcServer(f"unix://{socket_path}")
    server.start()
    config = grpc_input_config(tmp_path, kubeconfig, socket_path)

    def published(rule: str, count: int) -> list[str]:
        alerts = [
            alert_from_mapping(falco_alert(pods["vllm"], rule, "Notice", f"event {n}", {"proc.name": "sh"}))
            for n in range(count)
        ]
        server.publish_many(alerts)
        return [alert.alert_id for alert in alerts]

    try:
        with Records("serving_guard.service.grpc", logging.INFO) as records:
            responder = Responder(config, KubeGateway.from_config(config.cluster))
            await responder.start()
            try:
                grpc_input = responder.grpc_input
                assert grpc_input is not None
                before = published("Before the writer died", 20)
                await eventually(lambda: grpc_input.state.submitted == 20, "the first alerts journaled")
                os.kill(writer_pid(responder.journal), signal.SIGKILL)
                await eventually(lambda: responder.journal.failure is not None, "the writer's death noticed")
                taken = published("While the writer is dead", 20)
                await eventually(lambda: grpc_input.state.journal_error is not None, "the input stopping")
                await let_requests_land(server)
                kept = published("Kept in Falco's queue", 10)
                await asyncio.sleep(0.5)  # ten poll intervals: the input asks for nothing meanwhile
                assert server.pending() == 10
                text = responder.metrics.render().decode()
                assert 'serving_guard_input_journal_stalls_total{input="grpc"} 1.0' in text
            finally:
                await responder.stop()
        lost = [
            i for r in records.records if r.levelno == logging.ERROR for i in r.__dict__.get("alert_ids", ())
        ]
        assert sorted(lost) == sorted(taken)
        assert sum(1 for r in records.records if "reading from Falco stops" in r.getMessage()) == 1
        assert journaled_ids(config.journal.path) == set(before)

        # Restarted (as liveness does), the responder gets what Falco kept.
        responder = Responder(config, KubeGateway.from_config(config.cluster))
        await responder.start()
        try:
            await eventually(lambda: server.pending() == 0, "Falco's queue drained")
            assert responder.pipeline is not None and await responder.pipeline.drain(timeout=10)
            restarted = responder.grpc_input
            assert restarted is not None
            await eventually(lambda: restarted.state.submitted == 10, "the kept alerts journaled")
        finally:
            await responder.stop()
        assert journaled_ids(config.journal.path) == {*before, *kept}
    finally:
        server.stop()


async def let_requests_land(server: FalcoGrpcServer) -> None:
    """Until no request has reached Falco for a while: one written just before the input stopped
    asking may still be on its way."""
    while True:
        landed = server.sub_requests
        await asyncio.sleep(0.25)
        if server.sub_requests == landed:
            return


# -- the local TLS files are checked at start, like the HTTP input's ------------------------------


def grpc_tls_config(tmp_path: Path, kubeconfig: str, tls: dict[str, str]) -> Config:
    return responder_config(
        tmp_path,
        kubeconfig,
        extra={
            "inputs": {
                "grpc": {
                    "enabled": True,
                    "address": "127.0.0.1:9",  # nothing listens: only the files are checked at start
                    "tls": tls,
                    "backoff": {"initial_seconds": 0.05, "max_seconds": 0.2},
                }
            }
        },
    )


def tls_files(pki: TestPKI, **override: str) -> dict[str, str]:
    return {
        "ca_file": pki.ca_file,
        "cert_file": pki.client.cert_file,
        "key_file": pki.client.key_file,
        **override,
    }


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("ca_file", "missing"),
        ("cert_file", "missing"),
        ("key_file", "missing"),
        ("ca_file", "garbage"),
        ("cert_file", "garbage"),
        ("key_file", "garbage"),
        ("key_file", "other key"),
        ("ca_file", "directory"),
    ],
)
async def test_unusable_grpc_tls_files_stop_the_start(
    tmp_path: Path, seeded: Seeded, key: str, problem: str
) -> None:
    pki = make_test_pki(tmp_path / "pki")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not PEM at all\n")
    path = {
        "missing": str(tmp_path / "missing.pem"),
        "garbage": str(garbage),
        "other key": pki.server.key_file,
        "directory": str(tmp_path),
    }[problem]
    expected = {
        "missing": f"inputs.grpc.tls.{key}: cannot read {path}: No such file or directory",
        "garbage": (
            f"inputs.grpc.tls.key_file: {path} holds no unencrypted PEM private key"
            if key == "key_file"
            else f"inputs.grpc.tls.{key}: {path} holds no PEM certificate"
        ),
        "other key": (
            f"inputs.grpc.tls.key_file: {path} is not the private key of {pki.client.cert_file} (cert_file)"
        ),
        "directory": f"inputs.grpc.tls.{key}: cannot read {path}: Is a directory",
    }[problem]
    config = grpc_tls_config(tmp_path, seeded[2], tls_files(pki, **{key: path}))
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    try:
        with pytest.raises(UserError) as caught:
            await responder.start()
        assert str(caught.value) == expected
        assert responder.grpc_input is None
    finally:
        await responder.stop()


def test_serve_exits_at_start_on_a_missing_grpc_certificate(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = make_test_pki(tmp_path / "pki")
    missing = str(tmp_path / "missing.key")
    data: dict[str, Any] = {
        "inputs": {
            "grpc": {"enabled": True, "address": "127.0.0.1:9", "tls": tls_files(pki, key_file=missing)}
        },
        "server": {"metrics_listen": None, "event_loop": "asyncio"},
        "cluster": {"kubeconfig": seeded[2]},
        "journal": {"path": str(tmp_path / "journal.db")},
        "logging": {"level": "error"},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data))
    assert main(["serve", "--config", str(tmp_path / "config.yaml")]) == 2
    assert capsys.readouterr().err == (
        f"serving-guard: error: inputs.grpc.tls.key_file: cannot read {missing}: No such file or directory\n"
    )


async def test_usable_grpc_tls_files_start_and_an_unreachable_falco_is_retried(
    tmp_path: Path, seeded: Seeded
) -> None:
    pki = make_test_pki(tmp_path / "pki")
    config = grpc_tls_config(tmp_path, seeded[2], tls_files(pki))
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    await responder.start()
    try:
        assert responder.grpc_input is not None
        for _ in range(200):
            if responder.grpc_input.state.failures >= 2:
                break
            await asyncio.sleep(0.05)
        assert responder.grpc_input.state.failures >= 2
        assert "127.0.0.1:9" in (responder.grpc_input.state.last_error or "")
        # Said in /readyz's detail (and the metric), not held against readiness: the HTTP input
        # may take alerts, and a restart brings no Falco gRPC back.
        assert await responder.check_ready()
        assert "grpc: no Falco stream for " in responder.readiness_detail()
        assert "127.0.0.1:9" in responder.readiness_detail().split("grpc: ")[1]
        assert "serving_guard_grpc_connected 0.0" in responder.metrics.render().decode()
    finally:
        await responder.stop()
