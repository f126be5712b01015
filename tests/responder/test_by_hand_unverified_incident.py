"""`quarantine --incident` on an incident whose alert was never verified (its pod could not be
read when it came) checks that alert against the live pod first: a made-up container id is a
possible forgery, refused, nothing done; a genuine one is quarantined (review-52a M1: the command,
offered in Slack before any check could tell, cut the pod a forger named). Against the Kubernetes
emulator over loopback HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from responder.cli import main
from simulators.cluster_emulator import Fault
from simulators.falco_json import falco_alert, falco_bytes
from simulators.seed import SeededPod
from tests.helpers import SHELL_RULE
from tests.responder.test_commands import Seeded, quarantined, write_config

MADE_UP_ID = "c0ffee00c0ff"


def _ingested_while_pods_unread(tmp_path: Path, seeded: Seeded, pod: SeededPod, container_id: str) -> Path:
    """A shell alert on ``pod`` (with ``container_id``) ingested while every pod read is refused
    (no retries: the incident stays unverified), then the API answers again: the config's path."""
    running, _, kubeconfig = seeded
    config = write_config(tmp_path, kubeconfig)
    alert = falco_alert(
        pod, SHELL_RULE, "Critical", "shell", {"proc.name": "sh", "container.id": container_id}
    )
    source = tmp_path / "alerts.jsonl"
    source.write_bytes(falco_bytes(alert) + b"\n")
    running.call(running.emulator.inject, Fault(status=403, method="GET", plural="pods", times=100_000))
    try:
        assert main(["ingest", str(source), "--config", str(config), "--settle-seconds", "0"]) == 0
    finally:
        running.call(running.emulator.faults.clear)
    return config


def _incident(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    """The journal's one incident: its id and verification status."""
    capsys.readouterr()
    assert main(["audit", "--config", str(config), "--format", "json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    return entry["incident"]["incident_id"], entry["incident"]["verification"]["status"]


def _by_hand(config: Path, pod: SeededPod, incident: str) -> list[str]:
    return [
        "quarantine",
        "--namespace",
        pod.namespace,
        pod.name,
        "--config",
        str(config),
        "--incident",
        incident,
        "--reason",
        "pasted from Slack",
        "--by",
        "alice",
    ]


def test_an_unverified_incidents_made_up_id_is_refused_and_nothing_done(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    running, pods, _ = seeded
    vllm = pods["vllm"]
    config = _ingested_while_pods_unread(tmp_path, seeded, vllm, MADE_UP_ID)
    incident, status = _incident(config, capsys)
    assert status == "lookup_failed"
    assert main(_by_hand(config, vllm, incident)) == 2
    err = capsys.readouterr().err
    assert (
        f"--incident {incident}: its alert was never verified against the pod, and"
        f" {vllm.namespace}/{vllm.name} does not match it now (container.id {MADE_UP_ID} is not a container"
        " of the pod): a possible forgery; nothing was done (to cut the pod all the same, on your own"
        " judgement, leave --incident out)"
    ) in err, err
    assert not quarantined(running, vllm)


def test_an_unverified_incidents_genuine_id_is_quarantined(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    running, pods, _ = seeded
    vllm = pods["vllm"]
    config = _ingested_while_pods_unread(tmp_path, seeded, vllm, vllm.short_id)
    incident, status = _incident(config, capsys)
    assert status == "lookup_failed"
    assert main(_by_hand(config, vllm, incident)) == 0, capsys.readouterr().err
    assert quarantined(running, vllm)
