"""The pipeline end to end (journal, dedupe, verification, policy, actions) against the emulator."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from responder.alert import Alert
from responder.alert_json import alert_from_mapping
from responder.cluster.api import KubeGateway
from responder.config import Config
from responder.ingest.sink import InputName
from responder.journal.rows import estimated_payload_bytes
from responder.pipeline import ALERT_OVERHEAD_BYTES
from responder.service import Responder
from simulators.cluster_emulator import Fault, RunningCluster
from simulators.falco_json import falco_alert
from simulators.seed import SeededPod
from tests.helpers import SHELL_RULE, FakeClock, Records, responder_config

LABEL = "serving-guard.io/quarantine"
Seeded = tuple[RunningCluster, dict[str, SeededPod], str]


def shell(pod: SeededPod, *, n: int = 0, **overrides: Any) -> Alert:
    payload = falco_alert(
        pod, SHELL_RULE, "Notice", "shell", {"proc.name": "sh", "proc.cmdline": f"sh -c {n}"}
    )
    payload.update(overrides)
    return alert_from_mapping(payload)


def labels(running: RunningCluster, pod: SeededPod) -> dict[str, str]:
    return running.call(running.emulator.get_object, "v1/pods", pod.namespace, pod.name)["metadata"]["labels"]  # type: ignore[no-any-return]


def rows(config: Config, sql: str, *args: Any) -> list[sqlite3.Row]:
    conn = sqlite3.connect(config.journal.path)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


@pytest.fixture
async def started(
    tmp_path: Path, seeded: Seeded
) -> AsyncIterator[tuple[Responder, RunningCluster, dict[str, SeededPod]]]:
    running, pods, kubeconfig = seeded
    config = responder_config(tmp_path, kubeconfig, extra={"inputs": {}})
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    await responder.start()
    yield responder, running, pods
    await responder.stop()


async def submit_all(responder: Responder, alerts: list[Alert]) -> None:
    assert responder.pipeline is not None
    for alert in alerts:
        await responder.pipeline.submit(alert, InputName.JSONL)
    assert await responder.pipeline.drain(timeout=20)


async def test_a_burst_for_one_pod_is_one_incident_one_action(started: Any) -> None:
    responder, running, pods = started
    await submit_all(responder, [shell(pods["vllm"], n=i) for i in range(40)])
    incidents = rows(responder.config, "SELECT incident_id, count FROM incidents")
    assert len(incidents) == 1
    assert (
        rows(responder.config, "SELECT COUNT(*) FROM alerts WHERE incident_id = ?", incidents[0][0])[0][0]
        == 40
    )
    actions = rows(responder.config, "SELECT action, status FROM actions")
    assert [(a["action"], a["status"]) for a in actions] == [("quarantine", "quarantined")]
    assert rows(responder.config, "SELECT COUNT(*) FROM alerts WHERE state != 'done'")[0][0] == 0
    outcomes = rows(
        responder.config, "SELECT outcome, COUNT(*) FROM alerts GROUP BY outcome ORDER BY outcome"
    )
    assert [tuple(r) for r in outcomes] == [("duplicate", 39), ("opened", 1)]
    # One API read of the pod for the whole burst (plus owners and namespace once), and the
    # quarantine's own read after its leak check (its label still on: ClusterActions._confirm_label).
    gets = [r for r in running.emulator["get"] if r.url.path.endswith(f"/pods/{pods['vllm'].name}")]
    assert len(gets) == 2


async def test_forged_alert_with_a_wrong_container_id_is_refused_and_does_not_mask_the_real_one(
    started: Any,
) -> None:
    responder, running, pods = started
    triton = pods["triton"]
    forged = shell(triton, n=1)
    forged_fields = dict(forged.fields, **{"container.id": "deadbeef0000"})
    forged = alert_from_mapping({**forged.to_falco_json(), "output_fields": forged_fields})
    await submit_all(responder, [forged])
    assert LABEL not in labels(running, triton)
    decision = rows(responder.config, "SELECT decision, verification FROM incidents")[0]
    assert '"unverified": true' in decision["decision"]
    assert "not a container of the pod" in decision["verification"]
    # The genuine alert right after is its own incident and is acted on.
    await submit_all(responder, [shell(triton, n=2)])
    assert labels(running, triton)[LABEL] == "true"


async def test_alert_from_the_wrong_node_is_refused(started: Any) -> None:
    responder, running, pods = started
    await submit_all(responder, [shell(pods["vllm"], hostname="worker-9")])
    assert LABEL not in labels(running, pods["vllm"])
    verification = rows(responder.config, "SELECT verification FROM incidents")[0][0]
    assert "worker-9" in verification


async def test_unknown_pod_and_host_alerts_are_recorded_without_action(started: Any) -> None:
    responder, _, pods = started
    ghost = shell(pods["vllm"])
    ghost = alert_from_mapping(
        {**ghost.to_falco_json(), "output_fields": {**ghost.fields, "k8s.pod.name": "no-such-pod"}}
    )
    host_alert = alert_from_mapping(
        {
            "rule": SHELL_RULE,
            "priority": "Notice",
            "time": "2026-01-01T00:00:00Z",
            "output": "x",
            "output_fields": {"container.id": "host"},
        }
    )
    await submit_all(responder, [ghost, host_alert])
    statuses = sorted(
        r[0] for r in rows(responder.config, "SELECT json_extract(verification, '$.status') FROM incidents")
    )
    assert statuses == ["no_pod_identity", "pod_not_found"]
    assert [r[0] for r in rows(responder.config, "SELECT status FROM actions")] == ["withheld", "withheld"]


async def test_not_opted_in_namespace_is_withheld(started: Any) -> None:
    responder, running, pods = started
    await submit_all(responder, [shell(pods["sandbox"])])
    assert LABEL not in labels(running, pods["sandbox"])
    detail = rows(responder.config, "SELECT detail FROM actions")[0][0]
    assert "not opted in" in detail


async def test_redelivered_alert_is_accepted_once(started: Any) -> None:
    responder, _, pods = started
    alert = shell(pods["vllm"])
    assert responder.pipeline is not None
    first = await responder.pipeline.submit(alert, InputName.HTTP)
    again = await responder.pipeline.submit(alert, InputName.HTTP)
    assert first.new and not again.new and first.alert_id == again.alert_id
    assert await responder.pipeline.drain(timeout=10)
    assert rows(responder.config, "SELECT COUNT(*) FROM alerts")[0][0] == 1


async def test_circuit_breaker_stops_quarantines_past_the_limit(tmp_path: Path, seeded: Seeded) -> None:
    running, pods, kubeconfig = seeded
    config = responder_config(
        tmp_path, kubeconfig, extra={"guardrails": {"max_quarantines": {"count": 2, "window_seconds": 600}}}
    )
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    await responder.start()
    try:
        await submit_all(responder, [shell(pods[name]) for name in ("triton", "torchserve", "vllm")])
        quarantined = [
            n for n in ("triton", "torchserve", "vllm") if labels(running, pods[n]).get(LABEL) == "true"
        ]
        assert len(quarantined) == 2
        withheld = rows(config, "SELECT detail FROM actions WHERE status = 'withheld'")
        assert len(withheld) == 1 and "circuit breaker open" in withheld[0][0]
        assert responder.pipeline is not None and responder.pipeline.breaker_open()
    finally:
        await responder.stop()


async def test_dry_run_records_what_it_would_do(tmp_path: Path, seeded: Seeded) -> None:
    running, pods, kubeconfig = seeded
    config = responder_config(tmp_path, kubeconfig, extra={"guardrails": {"dry_run": True}})
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    await responder.start()
    try:
        await submit_all(responder, [shell(pods["triton"])])
        assert LABEL not in labels(running, pods["triton"])
        action = rows(config, "SELECT status, detail FROM actions")[0]
        assert action["status"] == "dry_run" and "LEAKY" in action["detail"]
    finally:
        await responder.stop()


async def test_kubernetes_outage_leaves_no_action_and_no_crash(started: Any) -> None:
    responder, running, pods = started
    running.call(running.emulator.inject, Fault(status=503, method="GET", plural="pods", times=100))
    await submit_all(responder, [shell(pods["vllm"])])
    verification = rows(responder.config, "SELECT json_extract(verification, '$.status') FROM incidents")[0][
        0
    ]
    assert verification == "lookup_failed"
    assert LABEL not in labels(running, pods["vllm"])


async def all_done(responder: Responder, timeout: float = 30) -> None:
    """Wait until every journaled alert is at its final outcome, deferred ones included (a bound on a
    hang, not a timing assertion)."""
    config = responder.config
    deadline = time.monotonic() + timeout
    while rows(config, "SELECT COUNT(*) FROM alerts WHERE state != 'done'")[0][0]:
        assert time.monotonic() < deadline, rows(config, "SELECT state, COUNT(*) FROM alerts GROUP BY state")
        await asyncio.sleep(0.05)
    assert responder.pipeline is not None and await responder.pipeline.drain(timeout=timeout)


async def test_alerts_past_a_full_pipeline_are_deferred_not_refused(tmp_path: Path, seeded: Seeded) -> None:
    """Past journal.max_pending the alert is journaled deferred (Falco and Falcosidekick drop a
    refused alert: they do not retry), and processed once there is room."""
    running, pods, kubeconfig = seeded
    config = responder_config(tmp_path, kubeconfig, extra={"journal": {"max_pending": 10}})
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    running.emulator.latency_seconds = 0.3  # each pod read is slow: in-flight alerts pile up
    await responder.start()
    try:
        assert responder.pipeline is not None
        answers = []
        for i in range(50):
            # Distinct rules on one pod: distinct incidents that queue behind the pod's lock.
            answers.append(
                await responder.pipeline.submit(
                    shell(pods["vllm"], n=i, rule=f"Rule {i}"), InputName.HTTP, wait_seconds=0.01
                )
            )
        assert all(a.new for a in answers)
        assert [a.deferred for a in answers[:10]] == [False] * 10
        assert sum(a.deferred for a in answers) >= 30  # the slow reads hold the first ten's slots
        assert rows(config, "SELECT COUNT(*) FROM alerts")[0][0] == 50
        running.emulator.latency_seconds = 0
        await all_done(responder)
        assert (
            rows(config, "SELECT COUNT(DISTINCT incident_id) FROM alerts WHERE outcome = 'opened'")[0][0]
            == 50
        )
        assert responder.metrics.deferred.labels("http")._value.get() == sum(a.deferred for a in answers)
    finally:
        await responder.stop()


async def test_deferred_alerts_left_by_a_stopped_responder_are_processed_at_start(
    tmp_path: Path, seeded: Seeded
) -> None:
    _, pods, kubeconfig = seeded
    config = responder_config(tmp_path, kubeconfig, extra={"journal": {"max_pending": 10}})
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    await responder.start()
    try:
        from responder.journal.store import Journal

        for i in range(3):  # as _defer journals them, the responder stopping before it takes them up
            alert = shell(pods["triton"], n=i, rule=f"Rule {i}")
            await responder.journal.run(Journal.op_append_deferred(alert, "http", 1))
    finally:
        await responder.stop()
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    await responder.start()
    try:
        await all_done(responder)
        assert [tuple(r) for r in rows(config, "SELECT outcome, COUNT(*) FROM alerts GROUP BY outcome")] == [
            ("opened", 3)
        ]
    finally:
        await responder.stop()


async def test_the_deferred_alerts_are_taken_up_after_a_failed_read_and_past_unreadable_rows(
    tmp_path: Path, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What takes up deferred alerts never stops while the responder runs: a journal read that
    fails is logged and tried again; a batch of rows it cannot read (a later version's parser may
    refuse an older body) does not hold back the rows after it."""
    from responder import pipeline as pipeline_module
    from responder.journal.store import Journal

    monkeypatch.setattr(pipeline_module, "REDECIDE_AFTER_SECONDS", 0.05)
    _, pods, kubeconfig = seeded
    config = responder_config(tmp_path, kubeconfig)
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    await responder.start()
    try:
        deferred_rows = responder.journal.deferred_rows
        failures = iter([sqlite3.OperationalError("disk I/O error")])

        def failing_once(after: int, limit: int) -> list[tuple[int, int, str]]:
            failure = next(failures, None)
            if failure is not None:
                raise failure
            return deferred_rows(after, limit)

        monkeypatch.setattr(responder.journal, "deferred_rows", failing_once)
        unreadable = pipeline_module.DEFERRED_BATCH + 1
        for i in range(unreadable + 1):
            alert = shell(pods["vllm"], n=i, rule=f"Rule {i}")
            await responder.journal.run(Journal.op_append_deferred(alert, "http", 1))
        with closing(sqlite3.connect(config.journal.path, timeout=30)) as conn, conn:
            conn.execute("UPDATE alerts SET payload = X'00' WHERE seq <= ?", (unreadable,))
        assert responder.pipeline is not None
        responder.pipeline._deferred_waiting.set()  # as _defer does
        deadline = time.monotonic() + 30  # a bound on a hang, not a timing assertion
        while rows(config, "SELECT COUNT(*) FROM alerts WHERE state = 'done'")[0][0] < 1:
            assert time.monotonic() < deadline, "the readable row after the unreadable ones waits"
            await asyncio.sleep(0.05)
        assert [tuple(r) for r in rows(config, "SELECT state, COUNT(*) FROM alerts GROUP BY state")] == [
            ("deferred", unreadable),
            ("done", 1),
        ]
        assert responder._deferred_task is not None and not responder._deferred_task.done()
    finally:
        await responder.stop()


async def test_a_repeat_does_not_wait_for_room_in_a_full_pipeline(tmp_path: Path, seeded: Seeded) -> None:
    """A repeat of an open incident is written final at once, without a slot: with the pipeline full
    it is neither deferred nor made to wait out the admission time (one Falco sends one alert at a
    time: each such wait would hold back every alert behind it)."""
    running, pods, kubeconfig = seeded
    config = responder_config(tmp_path, kubeconfig, extra={"journal": {"max_pending": 10}})
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    await responder.start()
    try:
        pipeline = responder.pipeline
        assert pipeline is not None
        await pipeline.submit(shell(pods["vllm"], n=0, rule="Rule 0"), InputName.HTTP)
        assert await pipeline.drain(timeout=30)
        running.emulator.latency_seconds = 0.5  # the next ten hold every slot
        for i in range(1, 11):
            await pipeline.submit(shell(pods["triton"], n=i, rule=f"Rule {i}"), InputName.HTTP)
        repeat = pipeline.submit(shell(pods["vllm"], n=99, rule="Rule 0"), InputName.HTTP, wait_seconds=60)
        answer = await asyncio.wait_for(repeat, timeout=20)  # a bound on a hang: it waited 60 s before
        assert answer.new and not answer.deferred
        assert (
            rows(config, "SELECT outcome FROM alerts WHERE alert_id = ?", answer.alert_id)[0][0]
            == "duplicate"
        )
    finally:
        running.emulator.latency_seconds = 0
        await responder.stop()


async def test_alerts_in_flight_are_bounded_by_bytes_too(tmp_path: Path, seeded: Seeded) -> None:
    """journal.max_pending_bytes: large alerts fill it long before max_pending; each slot's bytes
    come back when its alert is done, whether it opened an incident, folded in or was redelivered."""
    running, pods, kubeconfig = seeded
    bound = 1024 * 1024
    config = responder_config(tmp_path, kubeconfig, extra={"journal": {"max_pending_bytes": bound}})
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    running.emulator.latency_seconds = 0.3
    await responder.start()
    try:
        pipeline = responder.pipeline
        assert pipeline is not None
        large = "x" * 15_000  # Falco's drivers cut a field at 4 KiB; the responder refuses past 16 KiB

        def big(n: int, rule: str) -> Alert:
            payload = falco_alert(
                pods["vllm"],
                rule,
                "Notice",
                "shell",
                {
                    "proc.name": "sh",
                    "proc.cmdline": f"sh {n} {large}",
                    "proc.pcmdline": large,
                    "fd.name": large,
                },
            )
            return alert_from_mapping(payload)

        answers = [
            await pipeline.submit(big(i, f"Rule {i}"), InputName.HTTP, wait_seconds=0.01) for i in range(50)
        ]
        # ~93 KB each (three fields, the output that shows them, ~2 KiB of objects): 11 fit in 1 MiB,
        # not the 20,000 of max_pending; the next is deferred (journaled, processed once there is room).
        each = estimated_payload_bytes(big(0, "Rule 0")) + ALERT_OVERHEAD_BYTES
        taken = next(n for n, answer in enumerate(answers) if answer.deferred)
        assert 90_000 < each < 95_000 and taken == bound // each == 11
        running.emulator.latency_seconds = 0
        await all_done(responder)
        await pipeline.submit(big(0, "Rule 0"), InputName.HTTP)  # a redelivery
        await pipeline.submit(big(99, "Rule 0"), InputName.HTTP)  # a repeat
        assert await pipeline.drain(timeout=30)
        assert pipeline._slots.free_bytes == bound
        assert pipeline._slots.free == config.journal.max_pending
    finally:
        await responder.stop()


async def test_unfinished_alerts_are_resumed_after_a_restart(tmp_path: Path, seeded: Seeded) -> None:
    running, pods, kubeconfig = seeded
    config = responder_config(tmp_path, kubeconfig, extra={"inputs": {}})
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    await responder.start()
    # Journal the alert exactly as an input would, but stop before it is processed: a crash.
    from responder.journal.store import Journal

    alert = shell(pods["torchserve"])
    await responder.journal.run(Journal.op_append_alert(alert, "http", 1))
    await responder.stop()
    assert LABEL not in labels(running, pods["torchserve"])

    again = Responder(config, KubeGateway.from_config(config.cluster))
    await again.start()
    try:
        assert again.pipeline is not None
        assert await again.pipeline.drain(timeout=10)
        assert labels(running, pods["torchserve"])[LABEL] == "true"
        assert rows(config, "SELECT state, outcome FROM alerts")[0][:] == ("done", "opened")
    finally:
        await again.stop()
    await asyncio.sleep(0)


async def test_log_lines_about_an_alert_carry_its_id(tmp_path: Path, seeded: Seeded) -> None:
    import io
    import json
    import logging

    from responder.logs import setup_logging

    running, pods, kubeconfig = seeded
    stream = io.StringIO()
    config = responder_config(tmp_path, kubeconfig, extra={"inputs": {}})
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    await responder.start()
    setup_logging("info", "json", stream)
    try:
        # One failed pod read: the retry is logged by the Kubernetes gateway, on a pool thread.
        running.call(running.emulator.inject, Fault(status=503, method="GET", plural="pods", times=1))
        alert = shell(pods["kserve"])
        await submit_all(responder, [alert])
    finally:
        await responder.stop()
        logging.getLogger("serving_guard").handlers.clear()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    about = [
        line for line in lines if line["msg"] in ("kubernetes call failed, retrying", "incident decided")
    ]
    assert {line["msg"] for line in about} == {"kubernetes call failed, retrying", "incident decided"}
    assert all(line["alert_id"] == alert.alert_id for line in about)


async def start_with_clock(tmp_path: Path, kubeconfig: str, clock: FakeClock, **extra: Any) -> Responder:
    config = responder_config(tmp_path, kubeconfig, extra={"inputs": {}, **extra})
    responder = Responder(config, KubeGateway.from_config(config.cluster), clock_ns=clock)
    await responder.start()
    return responder


async def test_a_passing_api_failure_is_decided_again_by_a_later_repeat(
    tmp_path: Path, seeded: Seeded
) -> None:
    running, pods, kubeconfig = seeded
    clock = FakeClock()
    responder = await start_with_clock(tmp_path, kubeconfig, clock)
    try:
        running.call(running.emulator.inject, Fault(status=503, method="GET", plural="pods", times=100))
        await submit_all(responder, [shell(pods["vllm"], n=0)])
        assert LABEL not in labels(running, pods["vllm"])
        running.emulator.faults.clear()
        clock.advance(2)
        await submit_all(responder, [shell(pods["vllm"], n=1)])  # too soon: folded
        assert LABEL not in labels(running, pods["vllm"])
        clock.advance(10)
        await submit_all(responder, [shell(pods["vllm"], n=2)])  # re-decided: the API is back
        assert labels(running, pods["vllm"])[LABEL] == "true"
        statuses = [r[0] for r in rows(responder.config, "SELECT status FROM actions ORDER BY id")]
        assert statuses == ["withheld", "quarantined"]
    finally:
        await responder.stop()


async def test_a_forged_quiet_alert_cannot_swallow_the_real_one(started: Any) -> None:
    responder, running, pods = started
    triton = pods["triton"]
    quiet = shell(triton, n=0, priority="Debug")  # same rule, pod, container and node; matches no policy
    await submit_all(responder, [quiet, shell(triton, n=1)])
    assert labels(running, triton)[LABEL] == "true"
    assert len(rows(responder.config, "SELECT * FROM incidents")) == 2


async def test_a_labelled_pod_whose_policy_could_not_be_made_counts_against_the_breaker(
    tmp_path: Path, seeded: Seeded
) -> None:
    """The label goes on before the deny-all policy is ensured. If the policy cannot be made, the
    labels stay, and once the policy exists every labelled pod is isolated at once: so each such
    pod takes its slot in the breaker, also after a restart."""
    running, pods, kubeconfig = seeded
    config = responder_config(
        tmp_path,
        kubeconfig,
        extra={"inputs": {}, "guardrails": {"max_quarantines": {"count": 1, "window_seconds": 600}}},
    )
    running.call(
        running.emulator.inject, Fault(status=500, method="POST", plural="networkpolicies", times=10_000)
    )
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    await responder.start()
    try:
        await submit_all(responder, [shell(pods["vllm"])])
        assert labels(running, pods["vllm"])[LABEL] == "true"
        first = rows(config, "SELECT status, detail FROM actions WHERE pod = ?", pods["vllm"].name)
        assert [r["status"] for r in first] == ["failed"] and "the pod is labelled" in first[0]["detail"]
        await submit_all(responder, [shell(pods["torchserve"])])
        assert LABEL not in labels(running, pods["torchserve"])
        assert "circuit breaker open" in rows(config, "SELECT detail FROM actions ORDER BY id DESC")[0][0]
    finally:
        await responder.stop()
    restarted = Responder(config, KubeGateway.from_config(config.cluster))
    await restarted.start()
    try:
        assert restarted.pipeline is not None and restarted.pipeline.breaker_open()
        await submit_all(restarted, [shell(pods["kserve"])])
        assert LABEL not in labels(running, pods["kserve"])
    finally:
        await restarted.stop()


async def test_the_breaker_counts_pods_not_rules(tmp_path: Path, seeded: Seeded) -> None:
    running, pods, kubeconfig = seeded
    config = responder_config(
        tmp_path,
        kubeconfig,
        extra={"inputs": {}, "guardrails": {"max_quarantines": {"count": 2, "window_seconds": 600}}},
    )
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    await responder.start()
    try:
        # One compromised pod trips three rules: it is one quarantine, not three.
        for rule in ("Shell in serving pod", "Reverse shell or interpreter one-liner in serving pod"):
            await submit_all(responder, [shell(pods["vllm"], rule=rule)])
        await submit_all(responder, [shell(pods["torchserve"])])
        assert labels(running, pods["torchserve"])[LABEL] == "true"
        await submit_all(responder, [shell(pods["kserve"])])
        assert LABEL not in labels(running, pods["kserve"])  # the third pod is past the limit
        assert "circuit breaker open" in rows(config, "SELECT detail FROM actions ORDER BY id DESC")[0][0]
    finally:
        await responder.stop()


async def test_a_quarantine_label_removed_by_hand_is_noticed_and_the_next_repeat_isolates_again(
    tmp_path: Path, seeded: Seeded
) -> None:
    """kubectl label ... - (not `serving-guard release`, a lift: test_release_is_a_lift.py)."""
    running, pods, kubeconfig = seeded
    clock = FakeClock()
    responder = await start_with_clock(tmp_path, kubeconfig, clock)
    try:
        vllm = pods["vllm"]
        await submit_all(responder, [shell(vllm, n=0)])
        assert labels(running, vllm)[LABEL] == "true"
        KubeGateway.from_config(responder.config.cluster).patch_pod(
            vllm.namespace, vllm.name, {"metadata": {"labels": {LABEL: None}}}
        )
        assert LABEL not in labels(running, vllm)
        clock.advance(16)
        await submit_all(responder, [shell(vllm, n=1)])  # folds, and starts a recheck of the pod
        assert responder.pipeline is not None
        for _ in range(100):
            state = next(iter(responder.pipeline.incidents._open.values()))
            if state.reopen_after_ns is not None:
                break
            await asyncio.sleep(0.02)
        await submit_all(responder, [shell(vllm, n=2)])  # a new incident: isolated again
        assert labels(running, vllm)[LABEL] == "true"
        assert rows(responder.config, "SELECT COUNT(*) FROM incidents")[0][0] == 2
    finally:
        await responder.stop()


async def test_a_failure_after_journaling_is_answered_not_left_hanging(
    started: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    responder, _, pods = started
    pipeline = responder.pipeline
    assert pipeline is not None

    def broken_dispatch(alert: Alert, received_ns: int, weight: int) -> None:
        raise RuntimeError("dispatch broke")

    monkeypatch.setattr(pipeline, "_dispatch", broken_dispatch)
    with pytest.raises(RuntimeError, match="dispatch broke"):
        await asyncio.wait_for(pipeline.submit(shell(pods["vllm"], n=1), InputName.JSONL), timeout=10)
    answers: list[object] = []
    assert pipeline.offer(shell(pods["vllm"], n=2), InputName.HTTP, None, answers.append)
    for _ in range(500):
        if answers:
            break
        await asyncio.sleep(0.01)
    assert len(answers) == 1 and isinstance(answers[0], RuntimeError)
    # Both are journaled, still pending: a restart resumes them.
    pending = rows(responder.config, "SELECT COUNT(*) FROM alerts WHERE outcome IS NULL")
    assert pending[0][0] == 2


async def test_turning_a_trial_policy_on_acts_on_the_attack_still_going_on(
    tmp_path: Path, seeded: Seeded
) -> None:
    """From trial to enforcement takes a restart (a new config). The incident the trial predicted
    comes back from the journal, but its next repeat is decided afresh and quarantines the pod,
    instead of folding into the prediction for the rest of the dedupe window."""
    running, pods, kubeconfig = seeded
    clock = FakeClock()
    trial = {"name": "shells", "match": {"rules": [SHELL_RULE]}, "actions": ["notify", "quarantine"]}
    responder = await start_with_clock(tmp_path, kubeconfig, clock, policies=[{**trial, "dry_run": True}])
    try:
        await submit_all(responder, [shell(pods["vllm"], n=0)])
        clock.advance(1)
        await submit_all(responder, [shell(pods["vllm"], n=1)])  # folded into the prediction
    finally:
        await responder.stop()
    assert LABEL not in labels(running, pods["vllm"])

    clock.advance(1)
    enforced = await start_with_clock(tmp_path, kubeconfig, clock, policies=[trial])
    try:
        await submit_all(enforced, [shell(pods["vllm"], n=2)])
        assert labels(running, pods["vllm"])[LABEL] == "true"
        incidents = rows(
            enforced.config,
            "SELECT count, json_extract(decision, '$.dry_run') AS dry FROM incidents ORDER BY opened_ns",
        )
        assert [(r["count"], r["dry"]) for r in incidents] == [(2, 1), (1, 0)]
    finally:
        await enforced.stop()


async def test_a_prediction_still_on_trial_after_a_restart_keeps_folding(
    tmp_path: Path, seeded: Seeded
) -> None:
    running, pods, kubeconfig = seeded
    clock = FakeClock()
    trial = {
        "name": "shells",
        "match": {"rules": [SHELL_RULE]},
        "actions": ["notify", "quarantine"],
        "dry_run": True,
    }
    for n in range(2):
        responder = await start_with_clock(tmp_path, kubeconfig, clock, policies=[trial])
        try:
            await submit_all(responder, [shell(pods["vllm"], n=n)])
        finally:
            await responder.stop()
        clock.advance(1)
    assert rows(responder.config, "SELECT count FROM incidents")[0][0] == 2
    assert LABEL not in labels(running, pods["vllm"])


async def test_each_policy_cuts_its_own_way_and_a_second_widens_the_quarantine(
    tmp_path: Path, seeded: Seeded
) -> None:
    """Anomalous egress cuts egress only (the model goes on serving); a shell on the same pod then
    cuts both ways. Neither decision takes a second slot of the circuit breaker for the one pod."""
    running, pods, kubeconfig = seeded
    egress_rule = "Anomalous egress from serving pod"
    policies = [
        {"name": "isolate-shells", "match": {"rules": [SHELL_RULE]}, "actions": ["quarantine"]},
        {
            "name": "cut-egress",
            "match": {"rules": [egress_rule]},
            "actions": ["quarantine"],
            "isolate": "egress",
        },
    ]
    guardrails = {"max_quarantines": {"count": 1, "window_seconds": 600}}
    config = responder_config(tmp_path, kubeconfig, extra={"policies": policies, "guardrails": guardrails})
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    await responder.start()
    try:
        kserve = pods["kserve"]
        egress = alert_from_mapping(
            falco_alert(kserve, egress_rule, "Warning", "egress", {"fd.sip": "203.0.113.9"})
        )
        await submit_all(responder, [egress])
        assert labels(running, kserve)[LABEL] == "true-egress"
        decided = rows(config, "SELECT decision FROM incidents")
        assert '"isolate": "egress"' in decided[0][0]
        await submit_all(responder, [shell(kserve)])
        assert labels(running, kserve)[LABEL] == "true"
        details = [
            r["detail"]
            for r in rows(config, "SELECT detail FROM actions WHERE action = 'quarantine' ORDER BY id")
        ]
        assert len(details) == 2 and "widened its egress cut to both" in details[1]
        assert not rows(config, "SELECT 1 FROM actions WHERE status = 'withheld'")
        stored = running.call(
            running.emulator.get_object,
            "networking.k8s.io/v1/networkpolicies",
            kserve.namespace,
            "serving-guard-quarantine-egress",
        )
        assert stored["spec"]["policyTypes"] == ["Egress"]
    finally:
        await responder.stop()


async def test_an_incident_that_needs_a_person_is_logged_as_a_warning(started: Any) -> None:
    """A LEAKY quarantine must be seen where only warnings are logged; a clean one is information."""
    responder, _, pods = started
    with Records("serving_guard.pipeline", logging.INFO) as records:
        await submit_all(responder, [shell(pods["triton"])])  # allow-gateway-to-triton leaks
        await submit_all(responder, [shell(pods["vllm"])])
    decided = [
        level
        for level, message in zip(records.levels, records.messages, strict=True)
        if message == "incident decided"
    ]
    assert decided == [logging.WARNING, logging.INFO]
