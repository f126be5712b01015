"""slack.thread_by_workload: incidents of one rule on pods of one workload share a Slack thread,
a problem in the thread is still shown in the channel, repeats update a reply in place, and a
reply lost to a crash is found in the thread rather than posted twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from responder.ingest.sink import InputName
from responder.service import Responder
from simulators.cluster_emulator import RunningCluster
from simulators.seed import SeededPod, make_pod, pod_manifest
from simulators.slack_sink import Fault, SlackSink
from tests.responder.test_notifications import Seeded, incident_posts, settle, shell, sink, start

__all__ = ["sink"]  # the fixture, used by name


def replica(running: RunningCluster, of: SeededPod, name: str) -> SeededPod:
    """Another pod of ``of``'s StatefulSet (vllm), on the same node."""
    pod = make_pod(of.namespace, name, of.node, of.container, of.image, dict(of.labels))
    owner = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": "vllm",
        "uid": "u-vllm",
        "controller": True,
    }
    running.call(running.emulator.put_object, "v1/pods", pod_manifest(pod, owner))
    return pod


def top_level(sink: SlackSink) -> list[Any]:
    return [m for m in incident_posts(sink) if m.thread_ts is None]


def posts(sink: SlackSink) -> list[dict[str, Any]]:
    return [r.params for r in sink.requests("chat.postMessage") if r.status == 200]


async def submit(responder: Responder, *alerts: Any) -> None:
    assert responder.pipeline is not None
    for alert in alerts:
        await responder.pipeline.submit(alert, InputName.HTTP)


async def test_replicas_share_one_thread_and_other_workloads_do_not(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    running, pods, _ = seeded
    vllm = pods["vllm"]
    siblings = [replica(running, vllm, f"vllm-{n}") for n in (1, 2)]
    responder = await start(tmp_path, seeded, sink, thread_by_workload=True)
    try:
        await submit(responder, shell(vllm))
        await settle(responder, lambda: len(incident_posts(sink)) == 1)
        await submit(responder, *(shell(pod) for pod in siblings), shell(pods["triton"]))
        await settle(
            responder,
            lambda: (
                len(top_level(sink)) == 2 and len(sink.replies("#sec-alerts", top_level(sink)[0].ts)) == 2
            ),
        )
        roots = top_level(sink)
        # vllm-0's post in the channel, its replicas in its thread; Triton (another workload) apart.
        assert [("vllm-0" in m.text, "triton" in m.text) for m in roots] == [(True, False), (False, True)]
        replies = sink.replies("#sec-alerts", roots[0].ts)
        assert sorted(name for reply in replies for name in ("vllm-1", "vllm-2") if name in reply.text) == [
            "vllm-1",
            "vllm-2",
        ]
        assert "The same rule on another pod of `StatefulSet/vllm`." in str(replies[0].blocks)
        # The channel's message counts what its thread holds.
        summary = "The same rule on *2 more pods* of `StatefulSet/vllm`, in this thread: 2 quarantined."
        await settle(responder, lambda: summary in str(top_level(sink)[0].blocks))
        # Quarantined as it should be: the thread is enough; nothing broadcast to the channel.
        assert all(not p.get("reply_broadcast") for p in posts(sink))
        assert all((r.metadata or {})["event_payload"]["kind"] == "incident" for r in replies)
    finally:
        await responder.stop()


async def test_a_problem_in_the_thread_is_shown_in_the_channel_and_repeats_update_the_reply(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    running, pods, _ = seeded
    vllm = pods["vllm"]
    sibling = replica(running, vllm, "vllm-1")
    # The breaker holds the replica's quarantine back: on-call must see that in the channel.
    guardrails = {"max_quarantines": {"count": 1, "window_seconds": 300}}
    responder = await start(tmp_path, seeded, sink, extra={"guardrails": guardrails}, thread_by_workload=True)
    try:
        await submit(responder, shell(vllm))
        await settle(responder, lambda: len(incident_posts(sink)) == 1)
        await submit(responder, shell(sibling, 0))
        root = top_level(sink)[0]
        await settle(responder, lambda: len(sink.replies("#sec-alerts", root.ts)) == 1)
        (reply,) = sink.replies("#sec-alerts", root.ts)
        assert "withheld" in str(reply.blocks)
        summary = "The same rule on *1 more pod* of `StatefulSet/vllm`, in this thread: 1 withheld."
        await settle(responder, lambda: summary in str(top_level(sink)[0].blocks))
        assert [p.get("reply_broadcast") for p in posts(sink) if p.get("thread_ts")] == [True]
        # Repeats of the replica's incident update its own reply: no new message in the thread.
        for n in range(1, 4):
            await submit(responder, shell(sibling, n))
        await settle(responder, lambda: "Seen 4 times" in str(sink.replies("#sec-alerts", root.ts)[0].blocks))
        assert len(sink.replies("#sec-alerts", root.ts)) == 1 and len(top_level(sink)) == 1
    finally:
        await responder.stop()


async def test_turned_off_each_replica_is_its_own_post(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    running, pods, _ = seeded
    sibling = replica(running, pods["vllm"], "vllm-1")
    responder = await start(tmp_path, seeded, sink, thread_by_workload=False)
    try:
        await submit(responder, shell(pods["vllm"]), shell(sibling))
        await settle(responder, lambda: len(incident_posts(sink)) == 2)
        assert len(top_level(sink)) == 2
    finally:
        await responder.stop()


async def test_a_reply_whose_answer_was_lost_is_found_in_the_thread_not_posted_twice(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    running, pods, _ = seeded
    sibling = replica(running, pods["vllm"], "vllm-1")
    responder = await start(tmp_path, seeded, sink, thread_by_workload=True)
    try:
        await submit(responder, shell(pods["vllm"]))
        await settle(responder, lambda: len(incident_posts(sink)) == 1)
        # Slack stores the reply, then answers 503: the retry must look in the thread first.
        sink.inject(Fault(status=503, apply=True, method="chat.postMessage"))
        await submit(responder, shell(sibling))

        def settled() -> bool:
            with responder.journal.reader() as conn:
                states = [
                    r[0] for r in conn.execute("SELECT state FROM notifications WHERE kind = 'incident'")
                ]
            return states == ["sent", "sent"]

        await settle(responder, settled, timeout=20)
        root = top_level(sink)[0]
        assert len(sink.replies("#sec-alerts", root.ts)) == 1 and len(top_level(sink)) == 1
        assert [r.method for r in sink.requests() if r.method == "conversations.replies"]
        with responder.journal.reader() as conn:
            thread = conn.execute(
                "SELECT slack_thread_ts FROM notifications WHERE kind = 'incident' ORDER BY id"
            ).fetchall()
        assert [r[0] for r in thread] == [None, root.ts]
    finally:
        await responder.stop()
