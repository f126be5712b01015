"""What the pipeline does when the pod check cannot be sure: a forged id that extends a real one, a
cached pod that no longer verifies and cannot be read again, a pod missing for a moment, a namespace
whose labels could not be read. Not knowing is never taken as a forgery or a "no", and is decided
again by a later repeat."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from responder.alert_json import alert_from_mapping
from simulators.cluster_emulator import Fault
from simulators.falco_json import falco_alert
from tests.helpers import FakeClock
from tests.responder.test_pipeline import (
    LABEL,
    Seeded,
    labels,
    rows,
    shell,
    start_with_clock,
    submit_all,
)
from tests.responder.test_quarantine import Harness
from tests.responder.test_verify_restarted_container import NEW_ID, alert_from, restart


def incidents(responder: Any) -> list[dict[str, Any]]:
    found = rows(
        responder.config,
        "SELECT incident_id, verification, decision FROM incidents WHERE rule = 'Shell in serving pod'"
        " ORDER BY opened_ns",
    )
    return [
        {
            "id": r["incident_id"],
            "verification": json.loads(r["verification"]),
            "decision": json.loads(r["decision"]),
        }
        for r in found
    ]


async def test_a_forged_id_extending_the_real_one_does_not_hold_back_the_genuine_alert(
    tmp_path: Path, seeded: Seeded
) -> None:
    running, pods, kubeconfig = seeded
    triton = pods["triton"]
    responder = await start_with_clock(tmp_path, kubeconfig, FakeClock())
    forged = shell(triton, n=1)
    forged = alert_from_mapping(
        {
            **forged.to_falco_json(),
            "output_fields": dict(forged.fields, **{"container.id": triton.container_id[:12] + "0"}),
        }
    )
    await submit_all(responder, [forged])
    assert LABEL not in labels(running, triton)
    await submit_all(responder, [shell(triton, n=2)])  # the genuine alert, Falco's 12 characters

    opened = incidents(responder)
    await responder.stop()
    assert [i["verification"]["status"] for i in opened] == ["unverified", "verified"]
    assert "is not a container of the pod" in opened[0]["verification"]["reason"]
    assert labels(running, triton)[LABEL] == "true"


async def test_a_cached_pod_that_fails_and_cannot_be_read_again_is_not_called_a_forgery(
    tmp_path: Path, seeded: Seeded
) -> None:
    running, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    clock = FakeClock()
    responder = await start_with_clock(tmp_path, kubeconfig, clock)
    try:
        # An alert of a rule no policy isolates on reads the pod into the cache.
        warm = falco_alert(vllm, "Some other rule", "Notice", "x", {"proc.name": "ls"})
        await submit_all(responder, [alert_from_mapping(warm)])
        restart(Harness(running, kubeconfig), vllm)  # a new id the cached pod does not have
        running.call(running.emulator.inject, Fault(status=503, method="GET", plural="pods", times=100))
        await submit_all(responder, [alert_from(vllm, NEW_ID, **{"proc.cmdline": "sh -c 0"})])

        [opened] = incidents(responder)
        assert opened["verification"]["status"] == "lookup_failed"
        assert not opened["decision"]["unverified"]
        assert LABEL not in labels(running, vllm)

        running.emulator.faults.clear()
        clock.advance(11)
        await submit_all(responder, [alert_from(vllm, NEW_ID, **{"proc.cmdline": "sh -c 1"})])
        assert [i["verification"]["status"] for i in incidents(responder)] == ["lookup_failed", "verified"]
        assert labels(running, vllm)[LABEL] == "true"
    finally:
        await responder.stop()


async def test_a_pod_missing_for_a_moment_is_not_remembered_as_missing(
    tmp_path: Path, seeded: Seeded
) -> None:
    running, pods, kubeconfig = seeded
    triton = pods["triton"]
    responder = await start_with_clock(tmp_path, kubeconfig, FakeClock())
    # Deleted and being re-created by its StatefulSet: one 404, then the pod is back.
    running.call(
        running.emulator.inject, Fault(status=404, method="GET", plural="pods", name=triton.name, times=1)
    )
    early = shell(triton, n=1)
    early = alert_from_mapping(
        {**early.to_falco_json(), "output_fields": dict(early.fields, **{"container.id": "a" * 12})}
    )
    await submit_all(responder, [early])
    await submit_all(responder, [shell(triton, n=2)])
    opened = incidents(responder)
    await responder.stop()
    assert [i["verification"]["status"] for i in opened] == ["pod_not_found", "verified"]
    assert labels(running, triton)[LABEL] == "true"


async def test_a_namespace_that_could_not_be_read_is_unknown_not_opted_out(
    tmp_path: Path, seeded: Seeded
) -> None:
    running, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    clock = FakeClock()
    responder = await start_with_clock(tmp_path, kubeconfig, clock)
    try:
        running.call(running.emulator.inject, Fault(status=503, method="GET", plural="namespaces", times=100))
        await submit_all(responder, [shell(vllm, n=0)])
        [opened] = incidents(responder)
        assert opened["verification"]["status"] == "verified"
        assert opened["decision"]["opt_in_unknown"] is True
        [withheld] = opened["decision"]["withheld"]
        assert f"whether namespace {vllm.namespace} opted in" in withheld and "unknown" in withheld
        assert "not opted in" not in withheld
        assert LABEL not in labels(running, vllm)

        running.emulator.faults.clear()
        clock.advance(2)
        await submit_all(responder, [shell(vllm, n=1)])  # too soon: folds into the incident
        assert LABEL not in labels(running, vllm)
        clock.advance(10)
        await submit_all(responder, [shell(vllm, n=2)])  # decided again: the namespace reads
        assert labels(running, vllm)[LABEL] == "true"
        assert not incidents(responder)[-1]["decision"].get("opt_in_unknown")
    finally:
        await responder.stop()
