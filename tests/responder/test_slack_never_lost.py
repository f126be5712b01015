"""Slack through the running responder, where a post used to be lost or held back: answers that
are not Slack's, blocks Slack refuses, a failed post's repeats, a storm of forged alerts ahead of a
genuine one, a rate limit on another method, webhook follow-ups, a deleted post's repeats, and
answers lost after Slack stored the message."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from responder.ingest.sink import InputName
from responder.journal.store import Journal
from responder.service import Responder
from simulators.slack_sink import Fault, SlackSink
from tests.responder.test_notifications import Seeded, incident_posts, settle, shell, sink, start

__all__ = ["sink"]  # the fixture, used by name


def _state(responder: Responder, kind: str = "incident") -> str | None:
    with responder.journal.reader() as conn:
        row = conn.execute(
            "SELECT state FROM notifications WHERE kind = ? ORDER BY id DESC LIMIT 1", (kind,)
        ).fetchone()
    return None if row is None else str(row["state"])


@pytest.mark.parametrize(
    "fault",
    [
        # HTTP 200 with an HTML page, as often as the post may be tried: not Slack's answer, waited out.
        Fault(status=200, body="<html>proxy maintenance</html>", times=3, method="chat.postMessage"),
        # A proxy's 403 without a Slack error code: not Slack refusing the post for good.
        Fault(status=403, body="Forbidden by proxy", times=3, method="chat.postMessage"),
    ],
    ids=["page", "403"],
)
async def test_a_proxy_answering_for_slack_never_uses_up_an_incident_post(
    tmp_path: Path, seeded: Seeded, sink: SlackSink, fault: Fault
) -> None:
    sink.inject(fault)
    responder = await start(tmp_path, seeded, sink, max_attempts=3)
    try:
        assert responder.pipeline is not None
        await responder.pipeline.submit(shell(seeded[1]["vllm"]), InputName.HTTP)
        await settle(responder, lambda: _state(responder) in ("sent", "failed"), timeout=30)
        assert _state(responder) == "sent"
        assert len(incident_posts(sink)) == 1
    finally:
        await responder.stop()


async def test_blocks_slack_refuses_go_out_as_text_alone(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    sink.api_error("msg_blocks_too_long", times=1, method="chat.postMessage")
    responder = await start(tmp_path, seeded, sink)
    try:
        assert responder.pipeline is not None
        vllm = seeded[1]["vllm"]
        await responder.pipeline.submit(shell(vllm), InputName.HTTP)
        await settle(responder, lambda: _state(responder) in ("sent", "failed"))
        assert _state(responder) == "sent"
        [post] = incident_posts(sink)
        assert not post.blocks
        assert vllm.name in post.text and "ml-serving" in post.text and "quarantined" in post.text.lower()
        assert f"serving-guard release --namespace ml-serving {vllm.name}" in post.text
    finally:
        await responder.stop()


async def test_a_failed_incident_post_is_posted_by_its_next_repeat(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    sink.api_error("invalid_arguments", times=1, method="chat.postMessage")  # refused for good, once
    responder = await start(tmp_path, seeded, sink)
    try:
        assert responder.pipeline is not None
        vllm = seeded[1]["vllm"]
        await responder.pipeline.submit(shell(vllm, 0), InputName.HTTP)
        await settle(responder, lambda: _state(responder) == "failed")
        await responder.pipeline.submit(shell(vllm, 1), InputName.HTTP)
        await settle(responder, lambda: _state(responder, "repeat") in ("sent", "failed"), timeout=20)
        assert _state(responder) == "sent" and _state(responder, "repeat") == "sent"
        [post] = incident_posts(sink)
        assert len(post.replies) == 1 and "2 times" in str(post.replies[0].blocks)
    finally:
        await responder.stop()


async def test_a_genuine_post_goes_before_a_storm_of_forged_ones(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    # The first post is slow: the storm, then the genuine alert, queue up behind it meanwhile.
    # (Under the Slack client's 10 s timeout: a post timed out would be looked for and sent again.)
    sink.inject(Fault(status=200, delay_seconds=9.0, times=1, method="chat.postMessage"))
    responder = await start(tmp_path, seeded, sink)
    try:
        assert responder.pipeline is not None
        pods = seeded[1]
        for n in range(20):
            forged = shell(pods["triton"], n, **{"container.id": f"{n:04x}deadbeef"})
            await responder.pipeline.submit(forged, InputName.HTTP)

        def queued() -> int:
            with responder.journal.reader() as conn:
                return int(
                    conn.execute("SELECT COUNT(*) FROM notifications WHERE kind = 'incident'").fetchone()[0]
                )

        await settle(responder, lambda: queued() == 20 and bool(sink.requests("chat.postMessage")))
        await responder.pipeline.submit(shell(pods["vllm"], 99), InputName.HTTP)
        # The genuine alert's post is journaled while the slow post is still on its way (what the
        # order is about: checked, not timed).
        await settle(responder, lambda: queued() == 21)
        assert sink.requests("chat.postMessage")[0].status is None
        await settle(responder, lambda: len(sink.requests("chat.postMessage")) >= 3, timeout=30)
        genuine = [pods["vllm"].name in str(r.json or r.form) for r in sink.requests("chat.postMessage")]
        # Right after the slow one: not after the other 19 forgeries.
        assert genuine[:2] == [False, True], genuine
    finally:
        await responder.stop()


async def test_a_rate_limit_on_updates_holds_back_no_new_post(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    responder = await start(tmp_path, seeded, sink)
    try:
        assert responder.pipeline is not None
        pods = seeded[1]
        await responder.pipeline.submit(shell(pods["vllm"], 0), InputName.HTTP)
        await settle(responder, lambda: len(incident_posts(sink)) == 1)
        await responder.pipeline.submit(shell(pods["vllm"], 1), InputName.HTTP)
        await settle(responder, lambda: len(incident_posts(sink)[0].replies) == 1)
        sink.rate_limit(times=1, retry_after=8.0, method="chat.update")
        await responder.pipeline.submit(shell(pods["vllm"], 2), InputName.HTTP)
        await settle(responder, lambda: any(r.status == 429 for r in sink.requests("chat.update")))
        started = time.monotonic()
        await responder.pipeline.submit(shell(pods["kserve"]), InputName.HTTP)
        await settle(responder, lambda: len(incident_posts(sink)) == 2, timeout=15)
        assert time.monotonic() - started < 5.0
    finally:
        await responder.stop()


async def test_a_webhook_posts_a_follow_up_as_a_new_message(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    responder = await start(tmp_path, seeded, sink, mode="webhook")
    try:
        assert responder.pipeline is not None
        alert = shell(seeded[1]["vllm"], 0)
        await responder.pipeline.submit(alert, InputName.HTTP)
        await settle(responder, lambda: _state(responder) == "sent")
        with responder.journal.reader() as conn:
            incident = conn.execute(
                "SELECT incident_id FROM notifications WHERE kind = 'incident'"
            ).fetchone()[0]
        now = time.time_ns()
        await responder.journal.run(Journal.op_schedule_notification(incident, "update", None, now, now))
        assert responder.notifier is not None
        responder.notifier.wake()
        await settle(responder, lambda: _state(responder, "update") in ("sent", "failed"))
        assert _state(responder, "update") == "sent"
        hooks = [r for r in sink.requests() if r.kind == "webhook"]
        assert len(hooks) == 2 and "Follow-up" in str(hooks[1].json)
    finally:
        await responder.stop()


async def test_a_deleted_incident_posts_next_repeat_starts_a_new_one(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    responder = await start(tmp_path, seeded, sink)
    try:
        assert responder.pipeline is not None
        vllm = seeded[1]["vllm"]
        await responder.pipeline.submit(shell(vllm, 0), InputName.HTTP)
        await settle(responder, lambda: len(incident_posts(sink)) == 1)
        await responder.pipeline.submit(shell(vllm, 1), InputName.HTTP)
        await settle(responder, lambda: len(incident_posts(sink)[0].replies) == 1)
        first = incident_posts(sink)[0]
        assert sink.delete(sink.channel_id("sec-alerts") or "", first.ts)
        await responder.pipeline.submit(shell(vllm, 2), InputName.HTTP)
        await settle(
            responder, lambda: len(incident_posts(sink)) == 1 and incident_posts(sink)[0].ts != first.ts
        )
        again = incident_posts(sink)[0]
        assert "Posted again" in str(again.blocks)
        # The next repeat is counted in the new post's thread.
        await responder.pipeline.submit(shell(vllm, 3), InputName.HTTP)
        await settle(responder, lambda: len(incident_posts(sink)[0].replies) == 1, timeout=20)
        assert "4 times" in str(incident_posts(sink)[0].replies[0].blocks)
    finally:
        await responder.stop()


async def test_a_repeat_reply_whose_answer_was_lost_is_found_not_posted_twice(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    responder = await start(tmp_path, seeded, sink)
    try:
        assert responder.pipeline is not None
        vllm = seeded[1]["vllm"]
        await responder.pipeline.submit(shell(vllm, 0), InputName.HTTP)
        await settle(responder, lambda: _state(responder) == "sent")
        # Slack stores the repeat counter, then its answer is lost.
        sink.inject(Fault(status=503, apply=True, method="chat.postMessage"))
        await responder.pipeline.submit(shell(vllm, 1), InputName.HTTP)
        await settle(responder, lambda: _state(responder, "repeat") == "sent", timeout=20)
        assert len(incident_posts(sink)[0].replies) == 1
    finally:
        await responder.stop()


async def test_an_alert_naming_a_missing_pod_joins_the_forged_alerts_thread(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    responder = await start(tmp_path, seeded, sink)
    try:
        assert responder.pipeline is not None
        triton = seeded[1]["triton"]
        await responder.pipeline.submit(shell(triton, 0, **{"container.id": "c0ffee000000"}), InputName.HTTP)
        await settle(responder, lambda: len(incident_posts(sink)) == 1)
        for n in range(3):
            ghost: dict[str, Any] = {"k8s.pod.name": f"triton-ghost-{n}"}
            await responder.pipeline.submit(shell(triton, n + 1, **ghost), InputName.HTTP)
        await settle(responder, lambda: len(incident_posts(sink)[0].replies) == 3, timeout=20)
        assert len(incident_posts(sink)) == 1
        assert all("may be forged" in str(reply.blocks) for reply in incident_posts(sink)[0].replies)
    finally:
        await responder.stop()


async def test_alerts_naming_missing_pods_start_a_forged_alerts_thread_of_their_own(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    """Made-up pod names with no forged id before them: the first is posted in the channel, the
    others gather in its thread, rather than one channel post per made-up name."""
    responder = await start(tmp_path, seeded, sink)
    try:
        assert responder.pipeline is not None
        triton = seeded[1]["triton"]
        for n in range(4):
            ghost: dict[str, Any] = {"k8s.pod.name": f"triton-ghost-{n}"}
            await responder.pipeline.submit(shell(triton, n, **ghost), InputName.HTTP)
            if n == 0:
                await settle(responder, lambda: len(incident_posts(sink)) == 1)
        await settle(responder, lambda: len(incident_posts(sink)[0].replies) == 3, timeout=20)
        assert len(incident_posts(sink)) == 1
    finally:
        await responder.stop()
