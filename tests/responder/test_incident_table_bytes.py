"""The open incidents are bounded by bytes as well as by count (dedupe.max_open_bytes): each holds its
opening alert for its window, so a flood of large alerts, each its own incident (a forger's made-up
container ids), would otherwise grow the process past its memory limit, and a restart that restores
them would do it again. Past the bound the oldest is forgotten; a repeat of it opens a new one."""

from __future__ import annotations

import time
from pathlib import Path

from responder.alert import Alert
from responder.alert_json import alert_from_mapping
from responder.cluster.api import KubeGateway
from responder.dedupe import INCIDENT_OVERHEAD_BYTES, IncidentTable, incident_bytes
from responder.service import Responder
from simulators.cluster_emulator import RunningCluster
from simulators.falco_json import falco_alert
from simulators.seed import SeededPod
from tests.helpers import SHELL_RULE, responder_config
from tests.responder.test_pipeline import submit_all

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]
MIB = 1024 * 1024


def large_forgery(pod: SeededPod, n: int, size: int, letter: str = "x") -> Alert:
    """An alert naming ``pod`` with a made-up container id (its own incident) and a long output."""
    payload = falco_alert(pod, SHELL_RULE, "Notice", letter * size, {"proc.name": "sh"})
    payload["output_fields"]["container.id"] = f"{n:012x}"
    return alert_from_mapping(payload)


def test_the_oldest_incidents_go_once_their_bytes_pass_the_bound(seeded: Seeded) -> None:
    pod = seeded[1]["vllm"]
    alerts = [large_forgery(pod, n, 60_000) for n in range(40)]
    weight = incident_bytes(alerts[0])
    assert weight >= 60_000 + INCIDENT_OVERHEAD_BYTES
    table = IncidentTable(300, max_bytes=10 * weight)
    now = time.time_ns()
    for alert in alerts:
        table.observe(alert, now)
    assert len(table) == 10 and table.evicted == 30
    assert table.held_bytes == 10 * weight
    # The newest stay; a repeat of a forgotten one opens a new incident.
    assert table.open_repeat(large_forgery(pod, 39, 10), now) is not None
    assert table.open_repeat(large_forgery(pod, 0, 10), now) is None
    # Expired ones give their bytes back.
    assert table.expire(now + 301 * 10**9) == 10 and table.held_bytes == 0


def test_one_incident_past_the_bound_alone_is_kept(seeded: Seeded) -> None:
    pod = seeded[1]["vllm"]
    table = IncidentTable(300, max_bytes=MIB // 64)
    state, opened = table.observe(large_forgery(pod, 1, 60_000), time.time_ns())
    assert opened and len(table) == 1 and table.by_id(state.incident_id) is state


async def test_a_flood_of_large_forgeries_holds_no_more_than_the_bound_also_after_a_restart(
    tmp_path: Path, seeded: Seeded
) -> None:
    _, pods, kubeconfig = seeded
    config = responder_config(
        tmp_path, kubeconfig, extra={"inputs": {}, "dedupe": {"max_open_bytes": 2 * MIB}}
    )
    alerts = [large_forgery(pods["vllm"], n, 60_000) for n in range(80)]  # ~5.6 MB of incidents
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    await responder.start()
    try:
        await submit_all(responder, alerts)
        assert responder.pipeline is not None
        table = responder.pipeline.incidents
        assert table.held_bytes <= 2 * MIB and table.evicted > 0
        await responder._maintain_once()  # what the service does every minute
        registry = responder.metrics.registry
        assert registry.get_sample_value("serving_guard_incidents_open_bytes") == table.held_bytes
        assert registry.get_sample_value("serving_guard_incidents_forgotten_total") == table.evicted
    finally:
        await responder.stop()
    restarted = Responder(config, KubeGateway.from_config(config.cluster))
    await restarted.start()
    try:
        assert restarted.pipeline is not None
        table = restarted.pipeline.incidents
        assert len(table) > 0 and table.held_bytes <= 2 * MIB
        # The newest are the ones kept.
        assert table.open_repeat(large_forgery(pods["vllm"], 79, 10), time.time_ns()) is not None
    finally:
        await restarted.stop()


def test_an_alert_of_wide_characters_is_counted_at_what_it_holds(seeded: Seeded) -> None:
    """Python keeps a string at 4 bytes a character once one is past U+FFFF: 60,000 of them hold
    ~240 KB, which the bound must count (by length it held ~3.5 times the bound)."""
    pod = seeded[1]["vllm"]
    ascii_weight = incident_bytes(large_forgery(pod, 1, 60_000))
    astral_weight = incident_bytes(large_forgery(pod, 2, 60_000, letter="\U0001f600"))
    assert astral_weight >= 4 * 60_000 > 3 * ascii_weight - 3 * INCIDENT_OVERHEAD_BYTES


def test_an_incident_still_repeating_is_forgotten_last(seeded: Seeded) -> None:
    """A flood of new incidents (forgeries) forgets the ones not in use first: the genuine attack,
    still repeating, keeps its one incident (and its one Slack post)."""
    pod = seeded[1]["vllm"]
    genuine = large_forgery(pod, 999, 100)
    table = IncidentTable(300, max_bytes=10 * incident_bytes(large_forgery(pod, 0, 60_000)))
    now = time.time_ns()
    table.observe(genuine, now)
    for n in range(40):
        table.observe(large_forgery(pod, n, 60_000), now)
        assert table.open_repeat(large_forgery(pod, 999, 10), now) is not None, n  # it repeats
    assert table.evicted > 0
