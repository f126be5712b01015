"""The responder's gRPC input inside the running service, against a Falco-compatible server."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

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
    finally:
        await responder.stop()
