"""An isolation withheld for a passing reason (the API could not be read, the breaker was open) is
tried again by itself after each of dedupe.retry_withheld_seconds, whether or not the alert repeats:
a one-off shell during an API outage is quarantined once the API answers, journaled under its
incident and told in its Slack thread. Not a pod that is not there, not after a repeat opened a new
incident, not past the waits; restored after a restart. Against the Kubernetes emulator and the
Slack sink, over loopback HTTP."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

import responder.pipeline as pipeline_module
from responder.audit.query import AuditQuery
from responder.audit.text import _utc, format_incidents, format_summary
from responder.audit.trail import load_trail
from responder.cluster.api import KubeGateway
from responder.ingest.sink import InputName
from responder.notify.blocks import format_utc
from responder.service import Responder
from simulators.cluster_emulator import Fault, RunningCluster
from simulators.seed import SeededPod
from simulators.slack_sink import SlackSink
from tests.helpers import FakeClock, responder_config
from tests.notify.slack_fixtures import visible_text
from tests.responder.test_block_destination import EGRESS_RULE, egress_alert
from tests.responder.test_lapse_notice import headline
from tests.responder.test_notifications import Seeded, incident_posts, settle, shell, sink, start
from tests.responder.test_pipeline import labels, rows, submit_all
from tests.responder.test_pipeline import shell as alert_on
from tests.responder.test_workload_threads import submit

__all__ = ["sink"]  # the fixture, used by name

LABEL = "serving-guard.io/quarantine"
# Ten tries half a second apart: 5 s for the test to bring the API back.
QUICK = {"dedupe": {"retry_withheld_seconds": [0.5] * 10}}


def api_down(running: RunningCluster) -> None:
    running.call(running.emulator.inject, Fault(status=503, method="GET", plural="pods", times=100_000))


def api_back(running: RunningCluster) -> None:
    running.call(running.emulator.faults.clear)


def load_trail_of(responder: Responder) -> list[dict[str, Any]]:
    with responder.journal.reader() as conn:
        return load_trail(conn, AuditQuery())


def retries(responder: Responder, result: str) -> float:
    """serving_guard_withheld_retries_total{result}, as /metrics shows it."""
    text = generate_latest(responder.metrics.registry).decode()
    for line in text.splitlines():
        if line.startswith(f'serving_guard_withheld_retries_total{{result="{result}"}}'):
            return float(line.split()[-1])
    return 0.0


def retry_replies(sink: SlackSink) -> list[Any]:
    return [
        reply
        for m in sink.all_messages()
        for reply in [m, *m.replies]
        if ((reply.metadata or {}).get("event_payload") or {}).get("kind") == "retry"
    ]


async def wait_for(condition: Any, timeout: float = 15.0) -> None:
    """Until ``condition()`` holds (a bound on a hang, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


async def test_a_one_off_shell_during_an_api_outage_is_quarantined_once_the_api_answers(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    running, pods, _ = seeded
    vllm = pods["vllm"]
    api_down(running)
    responder = await start(tmp_path, seeded, sink, extra=QUICK)
    try:
        await submit(responder, shell(vllm, 0))
        assert responder.pipeline is not None and await responder.pipeline.drain(timeout=15)
        assert LABEL not in labels(running, vllm)  # decided, withheld: the API is back from now on
        api_back(running)
        await settle(responder, lambda: len(incident_posts(sink)) == 1)
        (incident,) = rows(responder.config, "SELECT incident_id FROM incidents")

        # No other alert comes: the retry alone isolates the pod.
        await wait_for(lambda: labels(running, vllm).get(LABEL) == "true")
        await settle(responder, lambda: len(retry_replies(sink)) == 1)
        assert rows(responder.config, "SELECT COUNT(*) FROM alerts")[0][0] == 1
        actions = rows(responder.config, "SELECT action, status, incident_id FROM actions ORDER BY id")
        assert [(a["action"], a["status"]) for a in actions] == [
            ("quarantine", "withheld"),
            ("quarantine", "quarantined"),
        ]
        assert {a["incident_id"] for a in actions} == {incident["incident_id"]}
        # The incident's decision is the one it acted on: its pod was read and verified.
        verification = rows(responder.config, "SELECT verification FROM incidents")[0][0]
        assert json.loads(verification)["status"] == "verified"
        # ...made at the opening's time: the audit's time to decision is the opening's, the
        # retry's quarantine has its own times.
        decided = rows(responder.config, "SELECT decided_ns FROM incidents")[0][0]
        started = [r[0] for r in rows(responder.config, "SELECT started_ns FROM actions ORDER BY id")]
        assert decided <= started[0] < started[1], (decided, started)
        # ...and says when it was made again (the audit and the demo's report say both).
        decision = json.loads(rows(responder.config, "SELECT decision FROM incidents")[0][0])
        assert started[0] < decision["decided_again_ns"] <= started[1]
        assert f"decided again {_utc(decision['decided_again_ns'])}, tried again after it was withheld" in (
            format_incidents(load_trail_of(responder))
        )
        assert retries(responder, "acted") == 1

        # Told once, in the incident's thread and the channel; the post is rendered again with it.
        (reply,) = retry_replies(sink)
        (post,) = incident_posts(sink)
        assert reply.thread_ts == post.ts
        finished = rows(responder.config, "SELECT finished_ns FROM actions ORDER BY id DESC LIMIT 1")[0][0]
        text = visible_text(reply.blocks)
        assert text.startswith(
            f":arrows_counterclockwise: *Tried again* on `{vllm.namespace}/{vllm.name}`,"
            " after it was withheld:\n:lock: *Quarantined*"
        ), text
        assert text.endswith(f"Incident `{incident['incident_id']}` · {format_utc(finished)}")
        # It leads with the quarantine; what withheld it is history.
        await settle(responder, lambda: headline(incident_posts(sink)[0]).startswith(":lock:"))
        assert headline(incident_posts(sink)[0]).endswith(
            "\n_Before that:_\n• quarantine withheld: pod lookup failed: GET"
            f" /api/v1/namespaces/{vllm.namespace}/pods/{vllm.name}: HTTP 503: injected fault"
        )
        assert len(incident_posts(sink)) == 1  # an update, not a new post
        told = rows(responder.config, "SELECT kind, state FROM notifications WHERE kind = 'retry'")
        assert [tuple(r) for r in told] == [("retry", "sent")]
    finally:
        await responder.stop()


async def test_an_alert_the_pod_read_since_does_not_verify_is_told_as_a_possible_forgery_by_the_retry(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    """An alert with a made-up container id that came while the API was down: its retry reads the
    pod and finds it unverified. Told as a possible forgery, its post rendered again as an
    unverified alert's, without the command to quarantine the pod (review-52a M1: it kept a
    Critical post with that command, and the retry ended as "nothing to do")."""
    running, pods, _ = seeded
    vllm = pods["vllm"]
    api_down(running)
    responder = await start(tmp_path, seeded, sink, extra=QUICK)
    try:
        await submit(responder, shell(vllm, 0, **{"container.id": "c0ffee00c0ff"}))
        await settle(responder, lambda: len(incident_posts(sink)) == 1)
        assert "serving-guard quarantine" in visible_text(incident_posts(sink)[0].blocks)
        api_back(running)

        await wait_for(lambda: retries(responder, "unverified") == 1)
        await settle(responder, lambda: len(retry_replies(sink)) == 1)
        [reply] = retry_replies(sink)
        text = visible_text(reply.blocks)
        assert f":warning: *Possible forgery* on `{vllm.namespace}/{vllm.name}`" in text, text
        assert "container.id c0ffee00c0ff is not a container of the pod" in text, text
        assert "*Nothing more is tried* unless the alert repeats: the pod is *not* isolated." in text, text
        assert retries(responder, "nothing_to_do") == 0
        verification = json.loads(rows(responder.config, "SELECT verification FROM incidents")[0][0])
        assert verification["status"] == "unverified"
        await settle(responder, lambda: "Unverified alert" in headline(incident_posts(sink)[0]))
        assert "serving-guard quarantine" not in visible_text(incident_posts(sink)[0].blocks)
        trail = load_trail_of(responder)
        assert "\n  verified  unverified\n" in format_incidents(trail)
        assert "UNVERIFIED: " in format_summary(trail)
        assert LABEL not in labels(running, vllm)
    finally:
        await responder.stop()


async def test_while_the_api_stays_down_each_wait_is_tried_once_then_it_is_left_to_a_repeat(
    tmp_path: Path, seeded: Seeded
) -> None:
    running, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    clock = FakeClock()
    config = responder_config(
        tmp_path, kubeconfig, extra={"inputs": {}, "dedupe": {"retry_withheld_seconds": [0.1, 0.1, 0.1]}}
    )
    responder = Responder(config, KubeGateway.from_config(config.cluster), clock_ns=clock)
    await responder.start()
    try:
        api_down(running)
        await submit_all(responder, [alert_on(vllm, n=0)])
        await wait_for(lambda: retries(responder, "withheld") == 3)
        await asyncio.sleep(0.5)  # past another wait: no fourth try
        assert retries(responder, "withheld") == 3 and retries(responder, "acted") == 0
        # The opening's, and the last try's: still withheld, the tries are over (the audit says so).
        assert [r[0] for r in rows(config, "SELECT status FROM actions")] == ["withheld", "withheld"]
        assert LABEL not in labels(running, vllm)
        # A repeat still decides it again once the API answers.
        api_back(running)
        clock.advance(11)
        await submit_all(responder, [alert_on(vllm, n=1)])
        assert labels(running, vllm)[LABEL] == "true"
        assert rows(config, "SELECT COUNT(*) FROM incidents")[0][0] == 2
    finally:
        await responder.stop()


async def test_a_repeat_that_opened_a_new_incident_first_leaves_the_retry_nothing_to_do(
    tmp_path: Path, seeded: Seeded
) -> None:
    running, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    clock = FakeClock()
    config = responder_config(
        tmp_path, kubeconfig, extra={"inputs": {}, "dedupe": {"retry_withheld_seconds": [3.0]}}
    )
    responder = Responder(config, KubeGateway.from_config(config.cluster), clock_ns=clock)
    await responder.start()
    try:
        api_down(running)
        await submit_all(responder, [alert_on(vllm, n=0)])
        api_back(running)
        clock.advance(11)
        await submit_all(responder, [alert_on(vllm, n=1)])  # a new incident, which quarantines
        assert labels(running, vllm)[LABEL] == "true"
        await asyncio.sleep(3.5)  # past the first incident's wait
        assert retries(responder, "acted") + retries(responder, "nothing_to_do") == 0
        per_incident = rows(
            config, "SELECT incident_id, group_concat(status) AS statuses FROM actions GROUP BY incident_id"
        )
        assert sorted(r["statuses"] for r in per_incident) == ["quarantined", "withheld"]
    finally:
        await responder.stop()


async def test_a_pod_that_is_not_there_is_not_read_again_by_a_retry(tmp_path: Path, seeded: Seeded) -> None:
    running, pods, kubeconfig = seeded
    config = responder_config(tmp_path, kubeconfig, extra={"inputs": {}, **QUICK})
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    await responder.start()
    try:
        ghost = alert_on(
            pods["vllm"], n=0, output_fields={**alert_on(pods["vllm"]).fields, "k8s.pod.name": "ghost-0"}
        )
        await submit_all(responder, [ghost])
        assert (
            json.loads(rows(config, "SELECT verification FROM incidents")[0][0])["status"] == "pod_not_found"
        )
        reads = len([r for r in running.emulator["get"] if r.url.path.endswith("/pods/ghost-0")])
        await asyncio.sleep(1.2)  # past the first two waits
        assert len([r for r in running.emulator["get"] if r.url.path.endswith("/pods/ghost-0")]) == reads
        assert retries(responder, "withheld") + retries(responder, "acted") == 0
    finally:
        await responder.stop()


async def test_a_quarantine_the_breaker_held_back_goes_ahead_once_the_breaker_closes(
    tmp_path: Path, seeded: Seeded
) -> None:
    running, pods, kubeconfig = seeded
    clock = FakeClock()
    config = responder_config(
        tmp_path,
        kubeconfig,
        extra={
            "inputs": {},
            "guardrails": {"max_quarantines": {"count": 1, "window_seconds": 60}},
            "dedupe": {"retry_withheld_seconds": [0.5] * 10},
        },
    )
    responder = Responder(config, KubeGateway.from_config(config.cluster), clock_ns=clock)
    await responder.start()
    try:
        await submit_all(responder, [alert_on(pods["vllm"])])  # takes the breaker's one slot
        await submit_all(responder, [alert_on(pods["torchserve"])])
        assert labels(running, pods["vllm"])[LABEL] == "true"
        assert LABEL not in labels(running, pods["torchserve"])
        clock.advance(61)  # the breaker's window passes
        await wait_for(lambda: labels(running, pods["torchserve"]).get(LABEL) == "true")
        # The label goes on before its outcome is journaled.
        await wait_for(lambda: len(rows(config, "SELECT id FROM actions")) == 3)
        statuses = rows(
            config, "SELECT status FROM actions WHERE pod = ? ORDER BY id", pods["torchserve"].name
        )
        assert [r[0] for r in statuses] == ["withheld", "quarantined"]
    finally:
        await responder.stop()


async def test_a_quarantine_the_breaker_held_is_tried_as_it_reopens_once_the_tries_are_over(
    tmp_path: Path, seeded: Seeded
) -> None:
    """The tries end before the breaker's window does (one try at 0.3 s, a window of 2 s: as the
    defaults' 270 s against 300 s): one more try as the breaker reopens quarantines the pod, within
    the incident's window (review-operator M3: a one-off reverse shell was left unisolated)."""
    running, pods, kubeconfig = seeded
    config = responder_config(
        tmp_path,
        kubeconfig,
        extra={
            "inputs": {},
            "guardrails": {"max_quarantines": {"count": 1, "window_seconds": 2}},
            "dedupe": {"retry_withheld_seconds": [0.3]},
        },
    )
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    await responder.start()
    try:
        await submit_all(responder, [alert_on(pods["vllm"])])  # takes the breaker's one slot
        await submit_all(responder, [alert_on(pods["torchserve"])])
        assert labels(running, pods["vllm"])[LABEL] == "true"
        assert LABEL not in labels(running, pods["torchserve"])
        await wait_for(lambda: retries(responder, "withheld") == 1)  # its one try: the breaker still open
        assert LABEL not in labels(running, pods["torchserve"])
        await wait_for(lambda: labels(running, pods["torchserve"]).get(LABEL) == "true")
        await wait_for(lambda: retries(responder, "acted") == 1)
        statuses = rows(
            config, "SELECT status FROM actions WHERE pod = ? ORDER BY id", pods["torchserve"].name
        )
        # Its first try was not the last: nothing said the tries were over.
        assert [r[0] for r in statuses] == ["withheld", "quarantined"]
    finally:
        await responder.stop()


def _breaker_config(tmp_path: Path, kubeconfig: str, waits: list[float], **dedupe: Any) -> Any:
    """A breaker of one quarantine per 2 s; an incident window of 10 s (room for a try as the breaker
    reopens); ``waits``: dedupe.retry_withheld_seconds."""
    extra = {
        "inputs": {},
        "cluster": {"kubeconfig": kubeconfig, "retry": {"attempts": 1}},
        "guardrails": {"max_quarantines": {"count": 1, "window_seconds": 2}},
        "dedupe": {"window_seconds": 10, "retry_withheld_seconds": waits, **dedupe},
    }
    return responder_config(tmp_path, kubeconfig, extra=extra)


def _tries_over_told(config: Any, pod: SeededPod) -> bool:
    found = rows(config, "SELECT outcome FROM actions WHERE pod = ? ORDER BY id", pod.name)
    return any("tries_over" in (row[0] or "") for row in found)


async def test_the_last_try_finding_the_breaker_open_is_not_told_as_the_tries_end(
    tmp_path: Path, seeded: Seeded
) -> None:
    """Withheld for an API outage, its last try finds the breaker open (the outage's end quarantined
    another pod): a try as the breaker reopens is still to come, so Slack must not say "nothing
    more is tried" first (review-session-51 M2: judged on the decision before the try's)."""
    running, pods, kubeconfig = seeded
    config = _breaker_config(tmp_path, kubeconfig, [0.3, 0.9])
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    await responder.start()
    try:
        api_down(running)
        await submit_all(responder, [alert_on(pods["torchserve"])])  # withheld: the API is down
        await wait_for(lambda: retries(responder, "withheld") == 1)  # its first try: still down
        api_back(running)
        await submit_all(responder, [alert_on(pods["vllm"])])  # takes the breaker's one slot
        assert labels(running, pods["vllm"])[LABEL] == "true"
        await wait_for(lambda: retries(responder, "withheld") == 2)  # its last wait: the breaker holds it
        await wait_for(lambda: labels(running, pods["torchserve"]).get(LABEL) == "true")
        assert not _tries_over_told(config, pods["torchserve"])
    finally:
        await responder.stop()


async def test_after_a_restart_a_breaker_held_quarantine_is_tried_as_the_breaker_reopens(
    tmp_path: Path, seeded: Seeded
) -> None:
    """Restored incidents ask when the breaker reopens: the breaker is restored first
    (review-session-51 L1: asked of an empty breaker, the held quarantine got no try at all)."""
    running, pods, kubeconfig = seeded
    off = _breaker_config(tmp_path, kubeconfig, [])
    first = Responder(off, KubeGateway.from_config(off.cluster))
    await first.start()
    try:
        await submit_all(first, [alert_on(pods["vllm"])])  # the breaker's one slot
        await submit_all(first, [alert_on(pods["torchserve"])])  # held back by the breaker
        assert LABEL not in labels(running, pods["torchserve"])
    finally:
        await first.stop()
    # Its one wait (20 to 40 s, spread after a restart) ends past its window: only the breaker's try.
    config = _breaker_config(tmp_path, kubeconfig, [20.0])
    restarted = Responder(config, KubeGateway.from_config(config.cluster))
    await restarted.start()
    try:
        await wait_for(lambda: labels(running, pods["torchserve"]).get(LABEL) == "true")
    finally:
        await restarted.stop()


async def withheld_before_a_restart(tmp_path: Path, seeded: Seeded, *pods: SeededPod) -> None:
    """A responder that does not retry withholds a quarantine of each pod (the API down), and stops;
    the API is back for the next one."""
    running, _, kubeconfig = seeded
    never: dict[str, Any] = {"dedupe": {"retry_withheld_seconds": []}}
    off = responder_config(tmp_path, kubeconfig, extra={"inputs": {}, **never})
    first = Responder(off, KubeGateway.from_config(off.cluster))
    await first.start()
    try:
        api_down(running)
        await submit_all(first, [alert_on(pod, n=0) for pod in pods])
        await asyncio.sleep(0.5)
        assert retries(first, "withheld") + retries(first, "acted") == 0  # off: no retry
    finally:
        await first.stop()
    api_back(running)


async def test_after_a_restart_a_withheld_isolation_is_tried_again_without_an_alert(
    tmp_path: Path, seeded: Seeded
) -> None:
    running, pods, kubeconfig = seeded
    await withheld_before_a_restart(tmp_path, seeded, pods["vllm"])
    config = responder_config(tmp_path, kubeconfig, extra={"inputs": {}, **QUICK})
    restarted = Responder(config, KubeGateway.from_config(config.cluster))
    await restarted.start()
    try:
        await wait_for(lambda: labels(running, pods["vllm"]).get(LABEL) == "true")
        # The label goes on before its outcome is journaled.
        await wait_for(lambda: len(rows(config, "SELECT id FROM actions")) == 2)
        statuses = [r[0] for r in rows(config, "SELECT status FROM actions ORDER BY id")]
        assert statuses == ["withheld", "quarantined"]
        assert rows(config, "SELECT COUNT(*) FROM alerts")[0][0] == 1
    finally:
        await restarted.stop()


async def test_after_a_restart_the_first_repeat_of_a_withheld_incident_decides_afresh(
    tmp_path: Path, seeded: Seeded
) -> None:
    """It folded into the withheld incident for the rest of the window (no retry here: only the
    repeat can act)."""
    running, pods, kubeconfig = seeded
    triton = pods["triton"]
    await withheld_before_a_restart(tmp_path, seeded, triton)
    never: dict[str, Any] = {"dedupe": {"retry_withheld_seconds": []}}
    config = responder_config(tmp_path, kubeconfig, extra={"inputs": {}, **never})
    restarted = Responder(config, KubeGateway.from_config(config.cluster))
    await restarted.start()
    try:
        await submit_all(restarted, [alert_on(triton, n=1)])
        assert labels(running, triton).get(LABEL) == "true"
        assert rows(config, "SELECT COUNT(*) FROM incidents WHERE pod = ?", triton.name)[0][0] == 2
    finally:
        await restarted.stop()


async def test_a_withheld_block_or_annotation_is_taken_too(tmp_path: Path, seeded: Seeded) -> None:
    """Policies that cut one address, or only annotate: the retry takes their action as it would a
    quarantine (the shipped example config has both)."""
    running, pods, kubeconfig = seeded
    policies = [
        {"name": "block", "match": {"rules": [EGRESS_RULE]}, "actions": ["notify", "block_destination"]},
        {"name": "flag", "match": {"rules": ["Runtime download*"]}, "actions": ["notify", "annotate"]},
    ]
    config = responder_config(tmp_path, kubeconfig, extra={"inputs": {}, "policies": policies, **QUICK})
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    await responder.start()
    try:
        api_down(running)
        download = alert_on(pods["triton"], n=0, rule="Runtime download or package install in serving pod")
        await submit_all(responder, [egress_alert(pods["vllm"], "203.0.113.7"), download])
        assert sorted(r[0] for r in rows(config, "SELECT status FROM actions")) == ["withheld", "withheld"]
        api_back(running)
        await wait_for(lambda: retries(responder, "acted") == 2)
        by_action = rows(config, "SELECT action, status FROM actions ORDER BY id")
        assert sorted(tuple(r) for r in by_action if r["status"] != "withheld") == [
            ("annotate", "annotated"),
            ("block_destination", "blocked"),
        ]
        assert rows(config, "SELECT COUNT(*) FROM alerts")[0][0] == 2  # no other alert came
    finally:
        await responder.stop()


async def test_an_action_that_keeps_failing_is_journaled_each_time_and_told_once_on_the_last_try(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    running, pods, _ = seeded
    vllm = pods["vllm"]
    for method in ("POST", "PUT"):
        running.call(
            running.emulator.inject,
            Fault(status=500, plural="networkpolicies", method=method, times=100_000),
        )
    responder = await start(tmp_path, seeded, sink, extra={"dedupe": {"retry_withheld_seconds": [0.3] * 3}})
    try:
        await submit(responder, shell(vllm, 0))
        await wait_for(lambda: retries(responder, "failed") == 3)
        await settle(responder, lambda: len(retry_replies(sink)) == 1)
        await asyncio.sleep(0.5)
        statuses = [r[0] for r in rows(responder.config, "SELECT status FROM actions ORDER BY id")]
        assert statuses == ["failed"] * 4  # the opening's and each try's
        assert retries(responder, "acted") == 0
        (reply,) = retry_replies(sink)  # the last try's, not one per failure
        assert "*quarantine FAILED*" in visible_text(reply.blocks)
        assert "run the quarantine command in the incident's message." in visible_text(reply.blocks)
        # The last try's failure says the tries are over (journaled on it: the post says it too).
        assert "tried it again by itself 3 times: *nothing more is tried*" in visible_text(reply.blocks)
        outcomes = [r[0] for r in rows(responder.config, "SELECT outcome FROM actions ORDER BY id")]
        assert ['"tries_over": 3' in outcome for outcome in outcomes] == [False, False, False, True]
    finally:
        await responder.stop()
    # A restart within the incident's window does not try again what it said it would not.
    again = await start(tmp_path, seeded, sink, extra={"dedupe": {"retry_withheld_seconds": [0.3] * 3}})
    try:
        assert again.pipeline is not None and again.pipeline._retries == {}
        await asyncio.sleep(0.5)
        assert retries(again, "failed") == 0
    finally:
        await again.stop()


async def test_what_a_follow_up_block_added_meanwhile_is_kept_when_the_retry_acts(
    tmp_path: Path, seeded: Seeded
) -> None:
    """The retry waits for the pod's lock, which a follow-up block of a repeat holds: the block it
    made stays in the incident's report (the recheck proves blocks from it, Slack renders it)."""
    _, pods, kubeconfig = seeded
    clock = FakeClock()
    policy = {
        "name": "both",
        "match": {"rules": [EGRESS_RULE]},
        "actions": ["notify", "quarantine", "block_destination"],
    }
    config = responder_config(
        tmp_path,
        kubeconfig,
        extra={
            "inputs": {},
            "policies": [policy],
            "guardrails": {"max_quarantines": {"count": 1, "window_seconds": 60}},
            "dedupe": {"retry_withheld_seconds": [1.0]},
        },
    )
    responder = Responder(config, KubeGateway.from_config(config.cluster), clock_ns=clock)
    await responder.start()
    pipeline = responder.pipeline
    assert pipeline is not None
    try:
        await submit_all(responder, [egress_alert(pods["vllm"], "203.0.113.1")])  # takes the breaker
        torchserve = pods["torchserve"]
        await submit_all(responder, [egress_alert(torchserve, "203.0.113.7")])  # quarantine withheld
        real = pipeline._actions.block_destination

        def slow_block(*args: Any, **kwargs: Any) -> Any:
            time.sleep(1.5)  # on a pool thread: the follow-up block holds the pod's lock meanwhile
            return real(*args, **kwargs)

        pipeline._actions.block_destination = slow_block  # type: ignore[method-assign]
        await submit_all(responder, [egress_alert(torchserve, "198.51.100.9")])  # folds: a follow-up block
        clock.advance(61)  # the quarantine breaker's window passes before the retry
        await wait_for(lambda: retries(responder, "acted") == 1)
        (incident,) = rows(config, "SELECT incident_id FROM incidents WHERE pod = ?", torchserve.name)
        state = pipeline.incidents.by_id(incident[0])
        assert state is not None and state.report is not None
        kept = [(o.action, o.status.value, o.extra.get("address")) for o in state.report.outcomes]
        assert ("block_destination", "blocked", "198.51.100.9") in kept, kept
        assert ("quarantine", "quarantined", None) in kept, kept
    finally:
        await responder.stop()


async def test_a_stopped_responder_leaves_no_retry_behind(tmp_path: Path, seeded: Seeded) -> None:
    """Alerts still finishing while it stops schedule none; a try under way is cancelled (a restart
    tries it again)."""
    running, pods, kubeconfig = seeded
    config = responder_config(
        tmp_path, kubeconfig, extra={"inputs": {}, "dedupe": {"retry_withheld_seconds": [0.3]}}
    )
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    await responder.start()
    pipeline = responder.pipeline
    assert pipeline is not None
    real = pipeline._directory.lookup

    def slow_lookup(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.5)
        return real(*args, **kwargs)

    pipeline._directory.lookup = slow_lookup  # type: ignore[method-assign]
    api_down(running)
    await pipeline.submit(alert_on(pods["vllm"], n=0), InputName.HTTP)
    await asyncio.sleep(0.1)  # its opening is under way: it ends, withheld, while the responder stops
    await responder.stop()
    assert not pipeline._retries and not pipeline._retrying
    await asyncio.sleep(0.6)
    assert retries(responder, "failed") + retries(responder, "withheld") == 0


async def test_past_the_cap_a_withheld_isolation_waits_for_a_repeat_and_says_so(
    tmp_path: Path, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    running, pods, kubeconfig = seeded
    monkeypatch.setattr(pipeline_module, "MAX_RETRIES_WAITING", 2)
    later = {"dedupe": {"retry_withheld_seconds": [30]}}
    config = responder_config(tmp_path, kubeconfig, extra={"inputs": {}, **later})
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    await responder.start()
    try:
        api_down(running)
        await submit_all(responder, [alert_on(pods[name]) for name in ("vllm", "triton", "torchserve")])
        assert retries(responder, "not_scheduled") == 1
        assert responder.pipeline is not None and len(responder.pipeline._retries) == 2
    finally:
        await responder.stop()
