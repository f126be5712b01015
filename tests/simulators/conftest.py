"""Fixtures for the simulator tests: a seeded cluster emulator, the Slack sink, and a running
responder configured with the reference policy (the chain `replay`/`verify` talk to)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from responder.cluster.api import KubeGateway
from responder.config import load_config_text
from responder.notify.slack import SlackDelivery
from responder.service import Responder
from simulators.cluster_emulator import RunningCluster
from simulators.scenario import load_reference_policy
from simulators.seed import SeededPod, seed_serving_cluster
from simulators.slack_sink import DEFAULT_TOKEN, RunningSlackSink, SlackSink


@dataclass
class Seeded:
    cluster: RunningCluster
    pods: dict[str, SeededPod]
    kubeconfig: str


@pytest.fixture
def seeded(tmp_path: Path) -> Iterator[Seeded]:
    with RunningCluster() as running:
        pods = running.call(seed_serving_cluster, running.emulator)
        yield Seeded(running, pods, running.write_kubeconfig(str(tmp_path / "kubeconfig.json")))


@pytest.fixture
def sink() -> Iterator[SlackSink]:
    with RunningSlackSink() as running:
        yield running


@pytest.fixture
def run_id() -> str:
    return "t" + secrets.token_hex(5)


def chain_config_data(
    tmp_path: Path, kubeconfig: str, sink: SlackSink | None, **overrides: Any
) -> dict[str, Any]:
    """The reference policy, plain HTTP on loopback (no TLS: these tests are about the chain), Slack
    to the sink when given."""
    reference = load_reference_policy()
    token_file = tmp_path / "slack-token"
    token_file.write_text(DEFAULT_TOKEN, encoding="utf-8")
    slack: dict[str, Any] = {"mode": "disabled"}
    if sink is not None:
        slack = {
            "mode": "bot",
            "token": {"file": str(token_file)},
            "default_channel": "#sec-alerts",
            "base_url": sink.base_url,
            "timeout_seconds": 5,
            "max_attempts": 1,
            **reference.get("slack", {}),
        }
    data: dict[str, Any] = {
        "inputs": {"http": {"listen": "127.0.0.1:0", "allow_unauthenticated": True}},
        "server": {"metrics_listen": None},
        "cluster": {"kubeconfig": kubeconfig, "retry": {"attempts": 2, "initial_backoff_seconds": 0.01}},
        "journal": {"path": str(tmp_path / "journal.db"), "commit_interval_ms": 1},
        "logging": {"level": "warning", "format": "text"},
        **{key: value for key, value in reference.items() if key != "slack"},
        "slack": slack,
    }
    data.update(overrides)
    http = data["inputs"].get("http")
    if http is not None and "audit_token" not in http:
        # verify and audit read the trail with a token of its own: no sender's credential reads it.
        readers = tmp_path / "trail-readers-token"
        readers.write_text(secrets.token_hex(16), encoding="utf-8")
        data["inputs"] = {**data["inputs"], "http": {**http, "audit_token": {"file": str(readers)}}}
    return data


def trail_token(responder: Responder) -> str:
    """The token that reads the responder's audit trail (chain_config_data gives it one)."""
    token = responder.config.inputs.http.audit_token
    assert token is not None
    return token.read("inputs.http.audit_token")


def reads_trail(responder: Responder) -> list[str]:
    """verify's and audit's flags to read the responder's audit trail."""
    token = responder.config.inputs.http.audit_token
    assert token is not None and token.file is not None
    return ["--token-file", token.file]


@asynccontextmanager
async def running_responder(data: dict[str, Any], tmp_path: Path) -> AsyncIterator[Responder]:
    config = load_config_text(yaml.safe_dump(data), str(tmp_path / "config.yaml"))
    responder = Responder(
        config, KubeGateway.from_config(config.cluster), delivery=SlackDelivery.from_config(config.slack)
    )
    await responder.start()
    try:
        yield responder
    finally:
        await responder.stop()


ChainFactory = Callable[..., Any]


@pytest.fixture
def chain(tmp_path: Path, seeded: Seeded, sink: SlackSink) -> ChainFactory:
    """``async with chain(**config overrides) as responder`` (``slack=False``: no Slack at all)."""

    def start(*, slack: bool = True, **overrides: Any) -> Any:
        data = chain_config_data(tmp_path, seeded.kubeconfig, sink if slack else None, **overrides)
        return running_responder(data, tmp_path)

    return start
