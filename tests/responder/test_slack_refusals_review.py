"""Review of the Slack refusal handling: a post whose answer was lost is looked for, not posted
again, whatever fails on the way (a rate limit, a refused token, a redirect that ended, a restart,
a sibling's thread opened meanwhile, a deleted thread); and while a policy channel refuses the bot,
forgeries and replica storms still gather in threads in the default channel."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from responder.service import Responder
from simulators.slack_sink import Fault, SlackSink
from tests.helpers import FakeClock
from tests.responder.test_by_hand_in_slack import (
    ON_TRIAL,
    by_hand_rows,
    incident_of,
    incident_post,
    quarantine_by_hand,
)
from tests.responder.test_notifications import Seeded, incident_posts, settle, shell, sink, start
from tests.responder.test_slack_refusals import ML_ALERTS, TO_ML_ALERTS, incident_rows, submit
from tests.responder.test_workload_threads import replica, top_level

__all__ = ["sink"]


def lost_answer() -> Fault:
    """chat.postMessage stores the message, then answers 500: the answer, not the post, is lost."""
    return Fault(status=500, apply=True, method="chat.postMessage")


async def waiting_to_look(responder: Responder) -> None:
    """Until the incident's post, its answer lost, is left to be looked for ('sending')."""
    await settle(
        responder,
        lambda: [(r["state"], r["attempts"]) for r in incident_rows(responder)][:1] == [("sending", 1)],
    )


async def run_clock(clock: FakeClock, seconds: float, steps: int = 8) -> None:
    for _ in range(steps):
        await asyncio.sleep(0.3)
        clock.advance(seconds / steps)
    await asyncio.sleep(0.5)


async def test_a_revoked_token_after_a_lost_answer_does_not_post_twice(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    sink.inject(lost_answer())
    clock = FakeClock()
    responder = await start(tmp_path, seeded, sink, clock)
    try:
        await submit(responder, shell(seeded[1]["vllm"]))
        await waiting_to_look(responder)
        sink.token = "xoxb-rotated"
        await run_clock(clock, 5)
        await settle(responder, lambda: "invalid_auth" in (incident_rows(responder)[0]["last_error"] or ""))
        (tmp_path / "slack-token").write_text("xoxb-rotated\n")
        await run_clock(clock, 60)
        await settle(responder, lambda: incident_rows(responder)[0]["state"] == "sent")
        assert len(incident_posts(sink)) == 1
    finally:
        await responder.stop()


async def test_a_lost_top_level_answer_is_not_posted_again_in_a_siblings_thread(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    running, pods, _ = seeded
    vllm = pods["vllm"]
    sibling = replica(running, vllm, "vllm-1")
    sink.inject(lost_answer())
    responder = await start(tmp_path, seeded, sink, thread_by_workload=True)
    try:
        await submit(responder, shell(vllm))
        await waiting_to_look(responder)
        await submit(responder, shell(sibling))
        await settle(
            responder, lambda: [r["state"] for r in incident_rows(responder)] == ["sent", "sent"], timeout=20
        )
        messages = sink.all_messages()
        vllm0 = [m for m in messages if "vllm-0" in m.text] + [
            r for m in messages for r in m.replies if "vllm-0" in r.text
        ]
        assert len(vllm0) == 1
    finally:
        await responder.stop()


@pytest.mark.parametrize("invited_back", [True, False])
async def test_a_redirected_post_whose_answer_was_lost_is_found_after_a_restart(
    tmp_path: Path, seeded: Seeded, sink: SlackSink, invited_back: bool
) -> None:
    """Redirected to the default channel, the post lands but its answer is lost; the process
    restarts (it no longer knows of the redirect): the retry looks where the post went."""
    sink.leave(ML_ALERTS)
    sink.inject(Fault(status=200, error="not_in_channel", method="chat.postMessage"))
    sink.inject(lost_answer())
    clock = FakeClock()
    responder = await start(tmp_path, seeded, sink, clock, extra=TO_ML_ALERTS)
    try:
        await submit(responder, shell(seeded[1]["vllm"]))
        await waiting_to_look(responder)
    finally:
        await responder.stop()
    if invited_back:
        sink.join(ML_ALERTS)
    responder = await start(tmp_path, seeded, sink, clock, extra=TO_ML_ALERTS)
    try:
        await run_clock(clock, 10)
        await settle(responder, lambda: incident_rows(responder)[0]["state"] == "sent")
        assert len(incident_posts(sink)) == 1
        assert len(sink.messages("#sec-alerts")) == 1
    finally:
        await responder.stop()


async def test_a_by_hand_reply_falling_back_to_the_top_level_is_posted_once(
    tmp_path: Path, seeded: Seeded, sink: SlackSink, capsys: pytest.CaptureFixture[str]
) -> None:
    vllm = seeded[1]["vllm"]
    responder = await start(tmp_path, seeded, sink, extra=ON_TRIAL)
    try:
        post = await incident_post(responder, sink, vllm)
        assert sink.delete("#sec-alerts", post.ts)
        sink.inject(Fault(status=200, method="chat.postMessage"))  # the reply: thread_not_found
        sink.inject(lost_answer())  # the top-level post lands, its answer lost
        code, _ = await quarantine_by_hand(tmp_path, seeded, vllm, incident_of(responder), capsys)
        assert code == 0
        await settle(responder, lambda: [r[0] for r in by_hand_rows(responder)] == ["sent"], timeout=30)
        assert len([m for m in sink.all_messages() if "by_hand" in str(m.metadata)]) == 1
    finally:
        await responder.stop()


async def test_while_redirected_forgeries_and_a_replica_storm_still_gather_in_threads(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    running, pods, _ = seeded
    vllm = pods["vllm"]
    siblings = [replica(running, vllm, f"vllm-{n}") for n in range(1, 6)]
    sink.leave(ML_ALERTS)
    guardrails = {"max_quarantines": {"count": 1, "window_seconds": 300}}
    extra = {**TO_ML_ALERTS, "guardrails": guardrails}
    responder = await start(tmp_path, seeded, sink, extra=extra, thread_by_workload=True)
    try:
        await submit(responder, shell(vllm))
        await settle(responder, lambda: len(top_level(sink)) == 1)
        await submit(responder, *(shell(pod) for pod in siblings))
        await settle(responder, lambda: [r["state"] for r in incident_rows(responder)] == ["sent"] * 6)
        assert len(top_level(sink)) == 1  # the replicas are replies in the first one's thread
        forged = [shell(vllm, n, **{"container.id": f"c0ffee00000{n}"}) for n in range(4)]
        await submit(responder, forged[0])
        await settle(responder, lambda: len(top_level(sink)) == 2)
        await submit(responder, *forged[1:])
        await settle(responder, lambda: [r["state"] for r in incident_rows(responder)] == ["sent"] * 10)
        assert len(top_level(sink)) == 2 and sink.messages(ML_ALERTS) == []
    finally:
        await responder.stop()
