"""Slack refusing for good is not the end of an incident's post: a policy channel that refuses the
bot sends it to the default channel; with nowhere else to go, or with the credentials refused, the
post waits in the journal and goes out once Slack takes it; a rate limit however long never uses up
max_attempts; a deleted workload thread starts a new one; a storm of replicas held back shows the
channel the first, not all of them; an incoming webhook's repeat posts space out."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from responder.config import Slack, SlackMode
from responder.ingest.sink import InputName
from responder.notify.routing import WEBHOOK_REPEAT_LONGEST_SECONDS, repeat_interval_ns
from responder.service import Responder
from simulators.slack_sink import Fault, SlackSink
from tests.helpers import SHELL_RULE, FakeClock, Records
from tests.responder.test_notifications import Seeded, incident_posts, settle, shell, sink, start
from tests.responder.test_workload_threads import posts, replica, top_level

__all__ = ["sink"]  # the fixture, used by name

ML_ALERTS = "#ml-alerts"
# Shell alerts go to their policy's own channel.
TO_ML_ALERTS = {
    "policies": [
        {
            "name": "isolate-shells",
            "match": {"rules": [SHELL_RULE]},
            "actions": ["notify", "quarantine"],
            "slack": {"channel": ML_ALERTS},
        }
    ]
}


def incident_rows(responder: Responder) -> list[dict[str, Any]]:
    with responder.journal.reader() as conn:
        rows = conn.execute(
            "SELECT state, attempts, last_error, slack_channel, channel FROM notifications"
            " WHERE kind = 'incident' ORDER BY id"
        ).fetchall()
    return [dict(row) for row in rows]


def posted_to(sink: SlackSink, channel: str) -> list[dict[str, Any]]:
    """The chat.postMessage calls naming ``channel`` (answered or refused)."""
    return [r.params for r in sink.requests("chat.postMessage") if r.params.get("channel") == channel]


async def submit(responder: Responder, *alerts: Any) -> None:
    assert responder.pipeline is not None
    for alert in alerts:
        await responder.pipeline.submit(alert, InputName.HTTP)


async def test_a_policy_channel_the_bot_is_not_in_sends_its_incidents_to_the_default_channel(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    sink.leave(ML_ALERTS)
    clock = FakeClock()
    responder = await start(tmp_path, seeded, sink, clock, extra=TO_ML_ALERTS)
    try:
        pods = seeded[1]
        await submit(responder, shell(pods["vllm"]))
        await settle(responder, lambda: [r["state"] for r in incident_rows(responder)] == ["sent"])
        (post,) = sink.messages("#sec-alerts")
        note = "Meant for `#ml-alerts`, but Slack refused it there (not_in_channel)"
        assert note in str(post.blocks)
        assert incident_rows(responder)[0]["slack_channel"] == sink.channel_id("#sec-alerts")
        assert incident_rows(responder)[0]["attempts"] == 1
        # The next incident goes straight to the default channel: no refused call first.
        await submit(responder, shell(pods["triton"]))
        await settle(responder, lambda: len(sink.messages("#sec-alerts")) == 2)
        assert len(posted_to(sink, ML_ALERTS)) == 1
        # Once the bot is invited and the wait is over, the policy's channel is tried again.
        sink.join(ML_ALERTS)
        clock.advance(31)
        await submit(responder, shell(pods["torchserve"]))
        await settle(responder, lambda: len(sink.messages(ML_ALERTS)) == 1)
        assert "Meant for" not in str(sink.messages(ML_ALERTS)[0].blocks)
        assert len(sink.messages("#sec-alerts")) == 2
    finally:
        await responder.stop()


async def test_with_no_other_channel_the_post_waits_for_the_bot_to_be_invited(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    """The default channel refusing the bot leaves nowhere to post: the incident waits in the
    journal (its attempts not used up) and goes out once the channel takes it."""
    sink.leave("#sec-alerts")
    clock = FakeClock()
    responder = await start(tmp_path, seeded, sink, clock, max_attempts=1)
    try:
        await submit(responder, shell(seeded[1]["vllm"]))
        await settle(responder, lambda: len(posted_to(sink, "#sec-alerts")) == 1)
        await settle(responder, lambda: "not_in_channel" in (incident_rows(responder)[0]["last_error"] or ""))
        (row,) = incident_rows(responder)
        assert (row["state"], row["attempts"]) == ("pending", 0)
        clock.advance(10)  # within the wait: not tried again, nor is the next incident sent there
        await submit(responder, shell(seeded[1]["triton"]))
        await settle(responder, lambda: len(incident_rows(responder)) == 2)
        await asyncio.sleep(0.5)
        assert len(posted_to(sink, "#sec-alerts")) == 1
        sink.join("#sec-alerts")
        clock.advance(25)
        await settle(responder, lambda: [r["state"] for r in incident_rows(responder)] == ["sent", "sent"])
        assert len(sink.messages("#sec-alerts")) == 2
        assert len(posted_to(sink, "#sec-alerts")) == 3
    finally:
        await responder.stop()


async def test_a_revoked_token_pauses_sending_until_the_replaced_one_works(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    """A refused token (revoked, say) is not the incident's fault: its post waits, the secret is
    read again before each try, and the new token sends it; max_attempts is not used up."""
    clock = FakeClock()
    sink.token = "xoxb-rotated"  # the token the responder holds is no longer valid
    responder = await start(tmp_path, seeded, sink, clock, max_attempts=1)
    try:
        await submit(responder, shell(seeded[1]["vllm"]))
        await settle(responder, lambda: "invalid_auth" in (incident_rows(responder)[0]["last_error"] or ""))
        assert incident_rows(responder)[0]["state"] == "pending"
        (tmp_path / "slack-token").write_text("xoxb-rotated\n")  # the Secret is replaced
        clock.advance(31)
        await settle(responder, lambda: [r["state"] for r in incident_rows(responder)] == ["sent"])
        assert len(incident_posts(sink)) == 1
        tokens = [r.token for r in sink.requests("chat.postMessage")]
        assert tokens[-1] == "xoxb-rotated" and tokens[0] != "xoxb-rotated"
    finally:
        await responder.stop()


async def test_a_long_rate_limit_does_not_use_up_max_attempts(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    sink.rate_limit(times=4, retry_after=0.1, method="chat.postMessage")
    responder = await start(tmp_path, seeded, sink, max_attempts=2)
    try:
        await submit(responder, shell(seeded[1]["vllm"]))
        await settle(
            responder, lambda: [r["state"] for r in incident_rows(responder)] == ["sent"], timeout=20
        )
        assert [r.status for r in sink.requests("chat.postMessage")] == [429, 429, 429, 429, 200]
        assert incident_rows(responder)[0]["attempts"] == 1
    finally:
        await responder.stop()


async def test_a_deleted_workload_thread_starts_the_next_one(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    running, pods, _ = seeded
    vllm = pods["vllm"]
    siblings = [replica(running, vllm, f"vllm-{n}") for n in (1, 2)]
    responder = await start(tmp_path, seeded, sink, thread_by_workload=True)
    try:
        await submit(responder, shell(vllm))
        await settle(responder, lambda: len(top_level(sink)) == 1)
        assert sink.delete("#sec-alerts", top_level(sink)[0].ts)  # someone deletes the thread
        await submit(responder, shell(siblings[0]))
        await settle(responder, lambda: len(top_level(sink)) == 1 and "vllm-1" in top_level(sink)[0].text)
        (root,) = top_level(sink)
        assert "the thread it belonged in was deleted" in str(root.blocks)
        # The next replica joins the new thread, not the deleted one.
        await submit(responder, shell(siblings[1]))
        await settle(responder, lambda: len(sink.replies("#sec-alerts", root.ts)) == 1)
        assert "vllm-2" in sink.replies("#sec-alerts", root.ts)[0].text
        # The journal marks a row sent after Slack's answer arrives: wait for it, not just the reply.
        await settle(responder, lambda: [r["state"] for r in incident_rows(responder)] == ["sent"] * 3)
    finally:
        await responder.stop()


async def test_a_storm_of_held_back_replicas_shows_the_channel_the_first(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    """The breaker holds back every replica after the first: the first held back is shown in the
    channel; the rest stay in the thread, counted by its root (not one channel message each)."""
    running, pods, _ = seeded
    vllm = pods["vllm"]
    siblings = [replica(running, vllm, f"vllm-{n}") for n in range(1, 6)]
    guardrails = {"max_quarantines": {"count": 1, "window_seconds": 300}}
    responder = await start(tmp_path, seeded, sink, extra={"guardrails": guardrails}, thread_by_workload=True)
    try:
        await submit(responder, shell(vllm))
        await settle(responder, lambda: len(top_level(sink)) == 1)
        await submit(responder, *(shell(pod) for pod in siblings))
        root = top_level(sink)[0]
        await settle(responder, lambda: len(sink.replies("#sec-alerts", root.ts)) == 5)
        broadcast = [bool(p.get("reply_broadcast")) for p in posts(sink) if p.get("thread_ts")]
        assert broadcast == [True, False, False, False, False]
        summary = "The same rule on *5 more pods* of `StatefulSet/vllm`, in this thread: 5 withheld."
        await settle(responder, lambda: summary in str(top_level(sink)[0].blocks))
    finally:
        await responder.stop()


def test_an_incoming_webhooks_repeat_posts_space_out() -> None:
    bot = Slack(mode=SlackMode.DISABLED, update_interval_seconds=30)
    hook = Slack(mode=SlackMode.DISABLED, update_interval_seconds=30).model_copy(
        update={"mode": SlackMode.WEBHOOK}
    )
    assert [repeat_interval_ns(bot, n) // 10**9 for n in (0, 1, 5)] == [30, 30, 30]
    assert [repeat_interval_ns(hook, n) // 10**9 for n in (0, 1, 2, 3, 10, 1000)] == [
        30,
        60,
        120,
        240,
        WEBHOOK_REPEAT_LONGEST_SECONDS,
        WEBHOOK_REPEAT_LONGEST_SECONDS,
    ]
    # An interval set longer than the cap is never shortened.
    long = hook.model_copy(update={"update_interval_seconds": 3600.0})
    assert repeat_interval_ns(long, 3) // 10**9 == 3600
    # With no wait set (0), a webhook's repeat posts still space out: a storm is not a post per repeat.
    eager = hook.model_copy(update={"update_interval_seconds": 0.0})
    assert [repeat_interval_ns(eager, n) / 10**9 for n in (0, 1, 2, 3, 12)] == [0, 2, 4, 8, 3600]
    assert repeat_interval_ns(bot.model_copy(update={"update_interval_seconds": 0.0}), 5) == 0


async def test_in_webhook_mode_each_repeat_post_waits_twice_as_long_as_the_last(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    clock = FakeClock()
    responder = await start(tmp_path, seeded, sink, clock, mode="webhook", update_interval_seconds=30)
    try:
        vllm = seeded[1]["vllm"]

        def repeats() -> list[Any]:
            with responder.journal.reader() as conn:
                return conn.execute(
                    "SELECT state, next_attempt_ns, sent_ns FROM notifications"
                    " WHERE kind = 'repeat' ORDER BY id"
                ).fetchall()

        await submit(responder, shell(vllm, 0))
        await settle(responder, lambda: sum(r.kind == "webhook" for r in sink.requests()) == 1)
        await submit(responder, shell(vllm, 1))  # the first repeat post goes at once
        await settle(responder, lambda: [r["state"] for r in repeats()] == ["sent"])
        first = repeats()[0]["sent_ns"]
        clock.advance(1)
        await submit(responder, shell(vllm, 2))
        await settle(responder, lambda: len(repeats()) == 2)
        assert repeats()[1]["next_attempt_ns"] == first + 60 * 10**9
    finally:
        await responder.stop()


async def test_at_start_the_responder_names_the_channels_that_cannot_take_its_posts(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    sink.leave(ML_ALERTS)
    with Records("serving_guard.service", logging.WARNING) as records:
        responder = await start(tmp_path, seeded, sink, extra=TO_ML_ALERTS)
        try:
            await settle(responder, lambda: bool(records.records))
        finally:
            await responder.stop()
    (record,) = records.records
    assert record.getMessage() == (
        "a Slack channel cannot take the bot's posts; its incidents go to the default channel"
    )
    assert (record.__dict__["channel"], record.__dict__["policies"]) == (ML_ALERTS, ["isolate-shells"])
    assert record.__dict__["reason"].startswith("not_in_channel")
    # The default channel was checked too, and is fine; nothing was posted to check.
    info = [str(r.params.get("channel")) for r in sink.requests("conversations.info")]
    assert sorted(info) == sorted([str(sink.channel_id("#sec-alerts")), str(sink.channel_id(ML_ALERTS))])
    assert sink.requests("chat.postMessage") == []


async def test_forged_alerts_with_made_up_ids_share_one_thread(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    """Each forged alert with another made-up container id is an incident of its own: the first is
    posted in the channel, the rest gather in its thread (not shown in the channel again), and none
    goes into a workload's thread."""
    running, pods, _ = seeded
    vllm = pods["vllm"]
    sibling = replica(running, vllm, "vllm-1")
    responder = await start(tmp_path, seeded, sink, thread_by_workload=True)
    try:
        await submit(responder, shell(sibling))  # a genuine incident: a workload thread's root
        await settle(responder, lambda: len(top_level(sink)) == 1)
        forged = [shell(vllm, n, **{"container.id": f"c0ffee00000{n}"}) for n in range(4)]
        await submit(responder, forged[0])
        await settle(responder, lambda: len(top_level(sink)) == 2)
        await submit(responder, *forged[1:])
        root = top_level(sink)[1]
        await settle(responder, lambda: len(sink.replies("#sec-alerts", root.ts)) == 3)
        assert "forg" in str(root.blocks).lower()
        assert len(top_level(sink)) == 2
        assert sink.replies("#sec-alerts", top_level(sink)[0].ts) == []  # not in the workload's thread
        replies = sink.replies("#sec-alerts", root.ts)
        named = sorted(n for n in range(1, 4) for r in replies if f"c0ffee00000{n}" in str(r.blocks))
        assert named == [1, 2, 3]
        assert not any(p.get("reply_broadcast") for p in posts(sink) if p.get("thread_ts"))
        assert all("in this thread of possible forgeries" in str(r.blocks) for r in replies)
        assert not any("another pod of" in str(r.blocks) for r in replies)
        summary = "*3 more alerts* that do not match their live pods, in this thread"
        await settle(responder, lambda: summary in str(top_level(sink)[1].blocks))
    finally:
        await responder.stop()


async def test_a_slack_outage_longer_than_the_retries_loses_no_post(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    """Slack answers 503 to every call for a while: after a few failures in a row sending pauses
    (the tries not counted against max_attempts), and the post goes out once Slack is back."""
    sink.server_error(times=6, status=503, method="chat.postMessage")
    clock = FakeClock()
    responder = await start(tmp_path, seeded, sink, clock, max_attempts=3)
    try:
        await submit(responder, shell(seeded[1]["vllm"]))
        assert responder.notifier is not None
        for _ in range(100):  # a bound on a hang: the loop ends once the post is sent
            if [r["state"] for r in incident_rows(responder)] == ["sent"]:
                break
            await asyncio.sleep(0.3)
            clock.advance(310)  # past any backoff or outage wait
            responder.notifier.wake()  # the notifier's sleep runs on the real clock: look now
        assert [r["state"] for r in incident_rows(responder)] == ["sent"]
        assert [r.status for r in sink.requests("chat.postMessage")] == [503] * 6 + [200]
        assert len(incident_posts(sink)) == 1
        # The first two failures counted; the ones while Slack was down did not.
        assert incident_rows(responder)[0]["attempts"] == 3
    finally:
        await responder.stop()


async def test_a_rate_limit_after_a_lost_answer_still_looks_before_posting_again(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    """The post landed but its answer was lost (503): the retry must look for it first; a rate
    limit on that look must not turn the next retry into a blind post (a duplicate)."""
    sink.inject(Fault(status=503, apply=True, method="chat.postMessage"))
    sink.rate_limit(times=1, retry_after=0.1, method="conversations.history")
    clock = FakeClock()
    responder = await start(tmp_path, seeded, sink, clock)
    try:
        await submit(responder, shell(seeded[1]["vllm"]))
        assert responder.notifier is not None
        for _ in range(100):  # a bound on a hang: the loop ends once the post is sent
            if [r["state"] for r in incident_rows(responder)] == ["sent"]:
                break
            await asyncio.sleep(0.2)
            clock.advance(5)
            responder.notifier.wake()
        assert [r["state"] for r in incident_rows(responder)] == ["sent"]
        assert len(incident_posts(sink)) == 1
        assert [r.status for r in sink.requests("chat.postMessage")] == [503]
    finally:
        await responder.stop()
