"""SIGKILL the responder mid-burst, restart it, and check that every accepted alert reached its
final outcome exactly once: no lost quarantine, no duplicate action record, no duplicate Slack post."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from bench.procs import free_port
from simulators.cluster_emulator import RunningCluster
from simulators.falco_json import falco_alert, falco_bytes
from simulators.seed import SeededPod
from simulators.slack_sink import DEFAULT_TOKEN, Fault, RunningSlackSink, SlackSink

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]
LABEL = "serving-guard.io/quarantine"
RULES = [f"Crash test rule {i}" for i in range(6)]
TARGETS = ("triton", "torchserve", "vllm", "kserve")


def start_responder(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "responder", "serve", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


async def wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"responder exited: {log.read_text()[-2000:]}")
            try:
                async with session.get(f"{url}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("responder did not become healthy")


def journal_rows(path: Path, sql: str) -> list[sqlite3.Row]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.fixture
def sink() -> Any:
    with RunningSlackSink() as running:
        yield running


async def send(session: aiohttp.ClientSession, url: str, body: bytes) -> str | None:
    try:
        async with session.post(f"{url}/v1/alerts", data=body) as response:
            if response.status == 202:
                return str((await response.json())["alert_id"])
    except (TimeoutError, aiohttp.ClientError):
        return None
    return None


async def test_sigkill_mid_burst_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    running, pods, kubeconfig = seeded
    http_port, metrics_port = free_port(), free_port()
    token_file = tmp_path / "slack-token"
    token_file.write_text(DEFAULT_TOKEN)
    journal = tmp_path / "journal.db"
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "inputs": {"http": {"listen": f"127.0.0.1:{http_port}", "allow_unauthenticated": True}},
                "server": {"metrics_listen": f"127.0.0.1:{metrics_port}"},
                "cluster": {"kubeconfig": kubeconfig},
                "journal": {"path": str(journal)},
                "guardrails": {"max_quarantines": {"count": 1000, "window_seconds": 60}},
                "policies": [
                    {
                        "name": "isolate",
                        "match": {"rules": ["Crash test rule *"]},
                        "actions": ["notify", "quarantine"],
                    }
                ],
                "slack": {
                    "mode": "bot",
                    "token": {"file": str(token_file)},
                    "default_channel": "#sec-oncall",
                    "base_url": sink.base_url,
                    "min_priority": "notice",
                    "update_interval_seconds": 0.2,
                },
                "logging": {"level": "warning"},
            }
        )
    )
    # A slow Slack: posts are in flight when the process dies.
    sink.inject(Fault(status=200, delay_seconds=0.15, times=10_000, method="chat.postMessage"))
    url = f"http://127.0.0.1:{http_port}"
    log = tmp_path / "responder.log"
    bodies = [
        falco_bytes(
            falco_alert(
                pods[target],
                rule,
                "Critical",
                "crash test",
                {"proc.name": "sh", "proc.cmdline": f"sh -c 'true # {n}'"},
            )
        )
        for n in range(8)
        for target in TARGETS
        for rule in RULES
    ]
    accepted: set[str] = set()

    process = start_responder(config, log)
    await wait_healthy(f"http://127.0.0.1:{metrics_port}", process, log)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        pending = list(bodies)
        killed = False
        while pending and not killed:
            batch, pending = pending[:16], pending[16:]
            results = await asyncio.gather(*(send(session, url, body) for body in batch))
            accepted.update(r for r in results if r)
            if len(accepted) >= len(bodies) // 3:
                process.send_signal(signal.SIGKILL)  # mid-burst, with work and Slack posts in flight
                process.wait(timeout=10)
                killed = True
        assert killed
        unfinished_at_kill = journal_rows(
            journal,
            "SELECT (SELECT COUNT(*) FROM alerts WHERE state = 'pending')"
            " + (SELECT COUNT(*) FROM notifications WHERE state IN ('pending', 'sending'))",
        )[0][0]

        process = start_responder(config, log)
        try:
            await wait_healthy(f"http://127.0.0.1:{metrics_port}", process, log)
            # The sender goes on with what was not accepted (Falco itself would drop it).
            for body in bodies:
                result = await send(session, url, body)
                if result:
                    accepted.add(result)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                busy = journal_rows(
                    journal,
                    "SELECT (SELECT COUNT(*) FROM alerts WHERE state = 'pending')"
                    " + (SELECT COUNT(*) FROM notifications WHERE state IN ('pending', 'sending'))",
                )[0][0]
                if busy == 0:
                    break
                await asyncio.sleep(0.2)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=20)

    alerts = journal_rows(journal, "SELECT alert_id, state, outcome, incident_id FROM alerts")
    by_id = {row["alert_id"]: row for row in alerts}
    assert accepted <= set(by_id), "an accepted alert is missing from the journal"
    assert all(row["state"] == "done" for row in alerts), "an alert never reached its final outcome"
    incidents = journal_rows(journal, "SELECT incident_id, namespace, pod FROM incidents")
    assert len(incidents) == len(TARGETS) * len(RULES)
    assert Counter(row["outcome"] for row in alerts)["opened"] == len(incidents)

    quarantines = Counter(
        row["incident_id"]
        for row in journal_rows(journal, "SELECT incident_id FROM actions WHERE action = 'quarantine'")
    )
    assert set(quarantines.values()) == {1}, f"duplicate action records: {quarantines}"
    assert len(quarantines) == len(incidents)
    for target in TARGETS:
        stored = running.call(
            running.emulator.get_object, "v1/pods", pods[target].namespace, pods[target].name
        )
        assert stored["metadata"]["labels"][LABEL] == "true"

    posts = Counter(
        (message.metadata or {}).get("event_payload", {}).get("incident_id")
        for message in sink.all_messages()
        if (message.metadata or {}).get("event_type") == "serving_guard_incident"
    )
    assert set(posts) == {row["incident_id"] for row in incidents}, "an incident was never posted"
    assert set(posts.values()) == {1}, f"duplicate Slack posts: {[k for k, v in posts.items() if v > 1]}"
    notifications = journal_rows(journal, "SELECT state FROM notifications WHERE kind = 'incident'")
    assert {row["state"] for row in notifications} == {"sent"}
    # The kill really interrupted work (otherwise this test proves nothing).
    assert unfinished_at_kill > 0
