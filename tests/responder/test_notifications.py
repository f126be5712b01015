"""Slack through the running responder: one post per incident, repeats in a thread counter,
rate limits honoured, and Slack trouble never holding up a quarantine."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from responder.alert import Alert
from responder.alert_json import alert_from_mapping
from responder.cluster.api import KubeGateway
from responder.commands.serve import build_responder
from responder.config import Config
from responder.dedupe import incident_id_for
from responder.ingest.sink import InputName
from responder.journal.store import Journal
from responder.notify.slack import SlackDelivery
from responder.service import Responder
from simulators.cluster_emulator import RunningCluster
from simulators.falco_json import falco_alert
from simulators.seed import SeededPod
from simulators.slack_sink import DEFAULT_TOKEN, RunningSlackSink, SlackSink
from tests.helpers import SHELL_RULE, FakeClock, responder_config
from tests.notify.slack_fixtures import visible_text
from tests.test_pipeline_journal_failure import Refused

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]
LABEL = "serving-guard.io/quarantine"


@pytest.fixture
def sink() -> Iterator[SlackSink]:
    with RunningSlackSink() as running:
        yield running


def shell(pod: SeededPod, n: int = 0, **fields: Any) -> Alert:
    return alert_from_mapping(
        falco_alert(
            pod, SHELL_RULE, "Critical", "shell", {"proc.name": "sh", "proc.cmdline": f"sh {n}", **fields}
        )
    )


async def start(
    tmp_path: Path,
    seeded: Seeded,
    sink: SlackSink,
    clock: FakeClock | None = None,
    extra: dict[str, Any] | None = None,
    **slack: Any,
) -> Responder:
    config = sink_config(tmp_path, seeded, sink, extra, **slack)
    responder = Responder(
        config,
        KubeGateway.from_config(config.cluster),
        delivery=SlackDelivery.from_config(config.slack),
        clock_ns=clock or time.time_ns,
    )
    await responder.start()
    return responder


def sink_config(
    tmp_path: Path, seeded: Seeded, sink: SlackSink, extra: dict[str, Any] | None = None, **slack: Any
) -> Config:
    """A responder config whose Slack is ``sink`` (bot mode, or webhook with mode="webhook")."""
    token = tmp_path / "slack-token"
    token.write_text(DEFAULT_TOKEN)
    settings = {
        "mode": "bot",
        "token": {"file": str(token)},
        "default_channel": "#sec-alerts",
        "base_url": sink.base_url,
        "update_interval_seconds": 0,
        **slack,
    }
    if slack.get("mode") == "webhook":
        hook = tmp_path / "webhook"
        hook.write_text(sink.webhook_url)
        interval = slack.get("update_interval_seconds", 0)
        settings = {
            "mode": "webhook",
            "webhook_url": {"file": str(hook)},
            "update_interval_seconds": interval,
        }
    return responder_config(tmp_path, seeded[2], extra={"inputs": {}, "slack": settings, **(extra or {})})


async def settle(responder: Responder, until: Any, timeout: float = 15.0) -> None:
    assert responder.pipeline is not None
    assert await responder.pipeline.drain(timeout=timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if until():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


def incident_posts(sink: SlackSink) -> list[Any]:
    return [
        m for m in sink.all_messages() if (m.metadata or {}).get("event_type") == "serving_guard_incident"
    ]


async def test_one_post_per_incident_and_repeats_update_a_thread_counter(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    responder = await start(tmp_path, seeded, sink)
    try:
        assert responder.pipeline is not None
        vllm = seeded[1]["vllm"]
        await responder.pipeline.submit(shell(vllm, 0), InputName.HTTP)
        await settle(responder, lambda: len(incident_posts(sink)) == 1)
        for n in range(1, 6):
            await responder.pipeline.submit(shell(vllm, n), InputName.HTTP)
        await settle(
            responder,
            lambda: (
                bool(incident_posts(sink)[0].replies)
                and "6 times" in str(incident_posts(sink)[0].replies[-1].blocks)
            ),
        )
        post = incident_posts(sink)[0]
        assert len(incident_posts(sink)) == 1
        assert "quarantined" in str(post.blocks).lower()
        assert f"serving-guard release --namespace ml-serving {vllm.name}" in str(post.blocks)
        assert len(post.replies) == 1, "repeats must update one reply, not add many"
    finally:
        await responder.stop()


async def test_rate_limit_is_honoured_and_does_not_delay_the_quarantine(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    sink.rate_limit(times=1, retry_after=1.0, method="chat.postMessage")
    responder = await start(tmp_path, seeded, sink)
    try:
        assert responder.pipeline is not None
        running, pods, _ = seeded
        started = time.monotonic()
        await responder.pipeline.submit(shell(pods["torchserve"]), InputName.HTTP)
        assert await responder.pipeline.drain(timeout=10)
        acted = time.monotonic() - started
        stored = running.call(running.emulator.get_object, "v1/pods", "ml-serving", pods["torchserve"].name)
        assert stored["metadata"]["labels"][LABEL] == "true"
        await settle(responder, lambda: len(incident_posts(sink)) == 1)
        posted = time.monotonic() - started
        assert posted >= 1.0 > acted  # the post waited for Retry-After; the quarantine did not
        limited = [r for r in sink.requests("chat.postMessage") if r.status == 429]
        assert len(limited) == 1
    finally:
        await responder.stop()


async def test_slack_down_is_retried_from_the_journal(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    sink.server_error(times=2, method="chat.postMessage")
    responder = await start(tmp_path, seeded, sink)
    try:
        assert responder.pipeline is not None
        await responder.pipeline.submit(shell(seeded[1]["kserve"]), InputName.HTTP)
        await settle(responder, lambda: len(incident_posts(sink)) == 1, timeout=20)

        def recorded() -> tuple[str, int]:
            with responder.journal.reader() as conn:
                query = "SELECT state, attempts FROM notifications WHERE kind = 'incident'"
                return tuple(conn.execute(query).fetchone())

        # The sink sees the post before the worker's "sent" is committed to the journal.
        await settle(responder, lambda: recorded()[0] == "sent", timeout=5)
        assert recorded() == ("sent", 3)
    finally:
        await responder.stop()


async def test_a_permanent_slack_error_is_recorded_not_retried_forever(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    """A refusal no wait, no other channel and no text-only message can get past (the call's
    arguments refused)."""
    sink.api_error("invalid_arguments", times=5, method="chat.postMessage")
    responder = await start(tmp_path, seeded, sink)
    try:
        assert responder.pipeline is not None
        await responder.pipeline.submit(shell(seeded[1]["vllm"]), InputName.HTTP)

        def failed() -> bool:
            with responder.journal.reader() as conn:
                row = conn.execute("SELECT state, last_error FROM notifications").fetchone()
            return row is not None and row["state"] == "failed" and "invalid_arguments" in row["last_error"]

        await settle(responder, failed)
        assert len(sink.requests("chat.postMessage")) == 1
    finally:
        await responder.stop()


async def test_unverified_alerts_raise_a_distinct_security_message(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    responder = await start(tmp_path, seeded, sink)
    try:
        assert responder.pipeline is not None
        forged = shell(seeded[1]["triton"], 0, **{"container.id": "c0ffee000000"})
        await responder.pipeline.submit(forged, InputName.HTTP)
        await settle(responder, lambda: len(incident_posts(sink)) == 1)
        text = str(incident_posts(sink)[0].blocks).lower()
        assert "forg" in text and "c0ffee000000" in text
    finally:
        await responder.stop()


async def test_webhook_mode_posts_incidents_and_counts_repeats(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    responder = await start(tmp_path, seeded, sink, mode="webhook")
    try:
        assert responder.pipeline is not None
        vllm = seeded[1]["vllm"]
        await responder.pipeline.submit(shell(vllm, 0), InputName.HTTP)
        await settle(
            responder,
            lambda: len(sink.requests("webhook")) >= 1 or any(r.kind == "webhook" for r in sink.requests()),
        )
        await responder.pipeline.submit(shell(vllm, 1), InputName.HTTP)
        await settle(responder, lambda: sum(r.kind == "webhook" for r in sink.requests()) == 2)
        bodies = [str(r.json) for r in sink.requests() if r.kind == "webhook"]
        assert "Seen" in bodies[1] and "2 times" in bodies[1]
        # A channel message, not a reply under its post: it names the rule and the pod itself.
        repeat = next(r.json for r in sink.requests() if r.kind == "webhook" and "Seen" in str(r.json))
        assert visible_text(repeat["blocks"]).startswith(f"`{SHELL_RULE}` on `ml-serving/{vllm.name}`:\n")
    finally:
        await responder.stop()


async def test_a_post_whose_answer_was_lost_is_found_not_posted_twice(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    from simulators.slack_sink import Fault

    # Slack stores the message, then answers 503: the retry must look before posting again.
    sink.inject(Fault(status=503, apply=True, method="chat.postMessage"))
    responder = await start(tmp_path, seeded, sink)
    try:
        assert responder.pipeline is not None
        await responder.pipeline.submit(shell(seeded[1]["vllm"]), InputName.HTTP)

        def settled() -> bool:
            with responder.journal.reader() as conn:
                row = conn.execute("SELECT state FROM notifications WHERE kind = 'incident'").fetchone()
            return row is not None and row["state"] == "sent"

        await settle(responder, settled, timeout=20)
        assert len(incident_posts(sink)) == 1
        assert [r.method for r in sink.requests() if r.method == "conversations.history"]
    finally:
        await responder.stop()


async def test_without_history_access_the_post_goes_out_rather_than_being_lost(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    sink.server_error(times=1, method="chat.postMessage")  # not stored: an ambiguous failure
    sink.api_error("missing_scope", times=5, method="conversations.history")
    responder = await start(tmp_path, seeded, sink)
    try:
        assert responder.pipeline is not None
        await responder.pipeline.submit(shell(seeded[1]["kserve"]), InputName.HTTP)
        await settle(responder, lambda: len(incident_posts(sink)) == 1, timeout=20)
    finally:
        await responder.stop()


async def test_thread_updates_are_spaced_by_the_update_interval(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    clock = FakeClock()
    responder = await start(tmp_path, seeded, sink, clock, update_interval_seconds=30)
    try:
        assert responder.pipeline is not None
        vllm = seeded[1]["vllm"]

        def repeats() -> list[Any]:
            with responder.journal.reader() as conn:
                return conn.execute(
                    "SELECT state, next_attempt_ns, sent_ns FROM notifications"
                    " WHERE kind = 'repeat' ORDER BY id"
                ).fetchall()

        await responder.pipeline.submit(shell(vllm, 0), InputName.HTTP)
        await settle(responder, lambda: len(incident_posts(sink)) == 1)
        await responder.pipeline.submit(shell(vllm, 1), InputName.HTTP)  # the first update goes at once
        await settle(responder, lambda: [r["state"] for r in repeats()] == ["sent"])
        sent_at = repeats()[0]["sent_ns"]
        clock.advance(1)
        for n in range(2, 6):
            await responder.pipeline.submit(shell(vllm, n), InputName.HTTP)
        await settle(responder, lambda: len(repeats()) == 2)
        waiting = repeats()[1]
        assert waiting["state"] == "pending"  # coalesced into one, and held back
        assert waiting["next_attempt_ns"] == sent_at + 30 * 10**9
        clock.advance(30)
        await settle(responder, lambda: [r["state"] for r in repeats()] == ["sent", "sent"])
        assert "6 times" in str(incident_posts(sink)[0].replies[-1].blocks)
    finally:
        await responder.stop()


async def test_a_refused_follow_up_update_is_logged_and_the_next_repeat_queues_it_again(
    tmp_path: Path,
    seeded: Seeded,
    sink: SlackSink,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """When repeats came while a thread update was on its way, the worker queues one more; if the
    journal refuses that write, it says so and lets the next repeat queue the update (left
    'pending', the thread would get no update until a restart)."""
    responder = await start(tmp_path, seeded, sink)
    try:
        assert responder.pipeline is not None and responder.notifier is not None
        vllm = seeded[1]["vllm"]
        opener = shell(vllm, 0)
        await responder.pipeline.submit(opener, InputName.HTTP)
        await settle(responder, lambda: len(incident_posts(sink)) == 1)
        state = responder.pipeline.incidents.by_id(incident_id_for(opener))
        assert state is not None and state.report is not None
        real = Journal.op_schedule_notification
        monkeypatch.setattr(
            Journal,
            "op_schedule_notification",
            staticmethod(lambda *args, **kwargs: Refused("schedule_notification")),
        )
        state.count = 3  # two repeats came while an update showing 2 was on its way
        with caplog.at_level(logging.ERROR, logger="serving_guard.notify"):
            responder.notifier._repeat_done(state.incident_id, time.time_ns(), shown=2)
            assert state.repeat_pending  # the follow-up update is on its way to the journal
            await settle(responder, lambda: not state.repeat_pending)
        refused = [r for r in caplog.records if r.getMessage() == "journal write failed"]
        assert [(r.__dict__["op"], r.__dict__["incident"]) for r in refused] == [
            ("schedule_notification(repeat)", state.incident_id)
        ]
        # The next repeat queues the update, and the thread shows every alert.
        monkeypatch.setattr(Journal, "op_schedule_notification", staticmethod(real))
        state.count = 1
        for n in range(1, 4):
            await responder.pipeline.submit(shell(vllm, n), InputName.HTTP)
        await settle(
            responder,
            lambda: (
                bool(incident_posts(sink)[0].replies)
                and "4 times" in str(incident_posts(sink)[0].replies[-1].blocks)
            ),
        )
    finally:
        await responder.stop()


async def test_the_commands_slack_gives_name_the_responders_config_file(
    tmp_path: Path, seeded: Seeded, sink: SlackSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`serve --config FILE` (a relative path too) puts `--config <absolute FILE>` in the commands
    to act by hand: without it they would use default labels, or fail (block requires it)."""
    config = sink_config(tmp_path, seeded, sink)
    monkeypatch.chdir(tmp_path)
    responder = build_responder(config, "config.yaml")
    await responder.start()
    try:
        assert responder.pipeline is not None
        vllm = seeded[1]["vllm"]
        await responder.pipeline.submit(shell(vllm), InputName.HTTP)
        await settle(responder, lambda: len(incident_posts(sink)) == 1)
        blocks = str(incident_posts(sink)[0].blocks)
        assert (
            f"--reason '<why it is safe>' --by '<you>' --config {tmp_path / 'config.yaml'}"
            in blocks.replace("&lt;", "<").replace("&gt;", ">")
        )
    finally:
        await responder.stop()
