"""When the recheck finds that what an incident put on its pod no longer holds (here: the deny-all
deleted while its alerts still come), on-call hears it in Slack: a reply in the incident's thread,
shown in the channel too, naming what undid it and when it was checked; the incident's own post is
rendered again, leading with it; the audit trail tells it; and the incident the next alert opens
says in one line which incident it reopens, and why. Once, across a lost answer and a restart; not
at all without Slack. Against the Kubernetes emulator and the Slack sink, over loopback HTTP."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from responder.audit.answer import read_answer
from responder.audit.query import AuditQuery
from responder.audit.text import format_incidents
from responder.audit.trail import load_trail
from responder.notify.blocks import format_utc
from responder.service import Responder
from simulators.seed import SeededPod
from simulators.slack_sink import Fault, SlackSink
from tests.helpers import FakeClock
from tests.notify.slack_fixtures import visible_text
from tests.responder.test_isolation_recheck import DENY_ALL, delete_policy, rechecked
from tests.responder.test_notifications import Seeded, incident_posts, settle, shell, sink, start
from tests.responder.test_pipeline import labels, rows, start_with_clock, submit_all
from tests.responder.test_quarantine import NP, Harness
from tests.responder.test_workload_threads import posts, replica, submit, top_level

__all__ = ["sink"]  # the fixture, used by name

LABEL = "serving-guard.io/quarantine"
CHANNEL = "#sec-alerts"


def lapse_replies(sink: SlackSink) -> list[Any]:
    """Every message the responder posted telling a lapse (in a thread or in the channel)."""
    return [
        m
        for m in sink.all_messages()
        if ((m.metadata or {}).get("event_payload") or {}).get("kind") == "lapse"
    ] + [
        reply
        for m in sink.all_messages()
        for reply in m.replies
        if ((reply.metadata or {}).get("event_payload") or {}).get("kind") == "lapse"
    ]


def lapse_rows(responder: Responder) -> list[tuple[Any, ...]]:
    with responder.journal.reader() as conn:
        return [
            tuple(row)
            for row in conn.execute(
                "SELECT n.state, n.attempts, a.action, a.status, a.detail FROM notifications n"
                " JOIN actions a ON a.id = n.action_id WHERE n.kind = 'lapse' ORDER BY n.id"
            )
        ]


def headline(message: Any) -> str:
    """The section under the header of an incident's post: its latest state first."""
    return str(message.blocks[1]["text"]["text"])


def incident_ids(responder: Responder) -> list[str]:
    with responder.journal.reader() as conn:
        return [row[0] for row in conn.execute("SELECT incident_id FROM incidents ORDER BY opened_ns")]


def lapse_post_statuses(sink: SlackSink) -> list[int | None]:
    """The answers to the lapse notice's chat.postMessage calls, in order."""
    calls = sink.requests("chat.postMessage")
    return [r.status for r in calls if "lapse" in str(r.params.get("metadata"))]


def past_the_backoff(responder: Responder, clock: FakeClock) -> None:
    """Move the clock past a failed notification's retry backoff, and let the notifier look."""
    clock.advance(10)
    assert responder.notifier is not None
    responder.notifier.wake()


async def quarantined_and_posted(responder: Responder, sink: SlackSink, vllm: SeededPod) -> Any:
    """A shell on vllm, its quarantine, its post, and a repeat's reply in its thread."""
    await submit(responder, shell(vllm, 0), shell(vllm, 1))
    await settle(responder, lambda: len(incident_posts(sink)) == 1 and bool(incident_posts(sink)[0].replies))
    (post,) = incident_posts(sink)
    return post


async def deny_all_deleted_and_rechecked(
    responder: Responder, seeded: Seeded, clock: FakeClock, vllm: SeededPod
) -> int:
    """Someone deletes the deny-all; the next repeat after RECHECK_SECONDS finds it. When it was checked."""
    running, _, kubeconfig = seeded
    delete_policy(Harness(running, kubeconfig), vllm.namespace, DENY_ALL)
    clock.advance(16)
    await submit(responder, shell(vllm, 2))
    assert await rechecked(responder)
    return clock.now


async def test_a_deleted_deny_all_is_told_in_the_thread_and_the_channel_and_the_post_leads_with_it(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    running, pods, _ = seeded
    vllm = pods["vllm"]
    clock = FakeClock()
    responder = await start(tmp_path, seeded, sink, clock)
    try:
        post = await quarantined_and_posted(responder, sink, vllm)
        (first,) = incident_ids(responder)
        checked = await deny_all_deleted_and_rechecked(responder, seeded, clock, vllm)
        await settle(responder, lambda: [r[0] for r in lapse_rows(responder)] == ["sent"])

        # One reply in the incident's thread, shown in the channel too.
        (reply,) = lapse_replies(sink)
        assert reply.thread_ts == post.ts
        said = visible_text(reply.blocks)
        assert said.startswith(
            f":warning: *The quarantine no longer holds* on `{vllm.namespace}/{vllm.name}`: NetworkPolicy"
            f" {DENY_ALL} is gone.\n"
            f"Checked at {format_utc(checked)}.\n"
            "If the attack goes on, its next alert on the pod opens a new incident, which acts again; a"
            " one-off attack (a reverse shell alerts once) sends none, so do not wait for it.\n"
            "*To quarantine it again now*"
        )
        # The incident's own command, to run now rather than wait for an alert that may not come.
        assert f"serving-guard quarantine --namespace {vllm.namespace} {vllm.name} --incident {first}" in said
        assert said.endswith(f"Incident `{first}` · {format_utc(checked)}")
        (sent,) = [p for p in posts(sink) if "lapse" in str(p.get("metadata"))]
        assert sent.get("reply_broadcast") in (True, "true", "1")
        assert sent["thread_ts"] == post.ts
        assert lapse_rows(responder) == [
            ("sent", 1, "recheck", "lapsed", f"NetworkPolicy {DENY_ALL} is gone"),
        ]

        # The incident's own post is rendered again: it leads with what no longer holds.
        await settle(responder, lambda: headline(incident_posts(sink)[0]).startswith(":warning:"))
        assert headline(incident_posts(sink)[0]) == (
            f":warning: *The quarantine no longer holds*: NetworkPolicy {DENY_ALL} is gone. Checked at"
            f" {format_utc(checked)}; the next alert on the pod opens a new"
            " incident, which acts again.\n_Before that:_\n• quarantined"
        )
        assert len(incident_posts(sink)) == 1  # an update, not a new post

        # The next alert opens a new incident, which quarantines again and says which it reopens.
        await submit(responder, shell(vllm, 3))
        await settle(responder, lambda: len(incident_posts(sink)) == 2)
        assert running.call(running.emulator.get_object, NP, vllm.namespace, DENY_ALL) is not None
        assert labels(running, vllm)[LABEL] == "true"
        first_id, second = incident_ids(responder)
        assert first_id == first
        new_post = incident_posts(sink)[1]
        assert new_post.thread_ts is None
        assert headline(new_post) == (
            ":lock: *Quarantined*: the deny-all NetworkPolicy refuses the pod's traffic both ways"
            " (connections already open end only where the network plugin cuts them)."
            f" Details: created NetworkPolicy {DENY_ALL}.\n"
            f":arrows_counterclockwise: *Reopens* incident `{first}`: its quarantine no longer held"
            f" (NetworkPolicy {DENY_ALL} is gone; checked at {format_utc(checked)})."
        )
        assert f"(reopens {first}: its quarantine no longer held)" in new_post.text
        assert len(lapse_replies(sink)) == 1
        # The first incident's post, rendered again, names the incident that reopened it.
        await settle(responder, lambda: "*Reopened*" in headline(incident_posts(sink)[0]))
        assert headline(incident_posts(sink)[0]) == (
            f":warning: *The quarantine no longer holds*: NetworkPolicy {DENY_ALL} is gone. Checked at"
            f" {format_utc(checked)}; the next alert on the pod opens a new"
            f" incident, which acts again.\n:arrows_counterclockwise: *Reopened* as incident `{second}`.\n"
            "_Before that:_\n• quarantined"
        )

        # The audit trail tells both: the lapse in the first incident's story, the reopening in the second's.
        with responder.journal.reader() as conn:
            story = format_incidents(load_trail(conn, AuditQuery(incident=first))).splitlines()
            reopened = format_incidents(load_trail(conn, AuditQuery(incident=second))).splitlines()
        actions = [line.split(" UTC  ", 1)[1] for line in story if line.startswith("  action    ")]
        assert actions == [
            f"quarantine quarantined (created NetworkPolicy {DENY_ALL}) by responder",
            f"recheck lapsed: the quarantine no longer holds (NetworkPolicy {DENY_ALL} is gone) by responder",
        ]
        assert any(
            line.startswith("  slack     lapse sent at C") and f"in thread {post.ts}" in line
            for line in story
        )
        # As GET /v1/audit answers it (JSON), the reopening is a record a client reads back.
        with responder.journal.reader() as conn:
            answer = json.loads(json.dumps({"entries": load_trail(conn, AuditQuery(incident=second))}))
        (entry,) = [e for e in read_answer(answer) if e["outcome"] == "opened"]
        decision = entry["incident"].get("decision")
        assert decision is not None
        assert decision.get("reopens") == {
            "incident_id": first,
            "lapsed": "quarantine",
            "detail": f"NetworkPolicy {DENY_ALL} is gone",
            "checked_ns": checked,
        }
        (decided,) = [line for line in reopened if line.startswith("  decided   ")]
        assert decided.startswith("  decided   policy isolate-shells: notify, quarantine; reopens " + first)
        assert f"its quarantine no longer held (NetworkPolicy {DENY_ALL} is gone; checked " in decided
    finally:
        await responder.stop()


async def test_a_lost_answer_is_retried_without_a_second_reply(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    vllm = seeded[1]["vllm"]
    clock = FakeClock()
    responder = await start(tmp_path, seeded, sink, clock)
    try:
        post = await quarantined_and_posted(responder, sink, vllm)
        # Slack stores the reply, then answers 503: the retry must look in the thread first.
        sink.inject(Fault(status=503, apply=True, method="chat.postMessage"))
        await deny_all_deleted_and_rechecked(responder, seeded, clock, vllm)
        await settle(responder, lambda: [r[:2] for r in lapse_rows(responder)] == [("sending", 1)])
        assert len(lapse_replies(sink)) == 1
        past_the_backoff(responder, clock)
        await settle(responder, lambda: [r[:2] for r in lapse_rows(responder)] == [("sent", 2)])
        assert len(lapse_replies(sink)) == 1
        # One call posted it (answered 503): the retry looked for it, and found it.
        calls = [r for r in sink.requests("chat.postMessage") if "lapse" in str(r.params.get("metadata"))]
        assert [r.status for r in calls] == [503]
        assert any(r.method == "conversations.replies" for r in sink.requests())
        # Found, not posted again: the incident's post is still rendered again with it.
        await settle(responder, lambda: "no longer holds" in headline(incident_posts(sink)[0]))
        assert lapse_replies(sink)[0].thread_ts == post.ts
    finally:
        await responder.stop()


async def test_a_rate_limit_then_an_outage_are_retried_and_told_once(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    vllm = seeded[1]["vllm"]
    clock = FakeClock()
    responder = await start(tmp_path, seeded, sink, clock)
    try:
        await quarantined_and_posted(responder, sink, vllm)
        sink.rate_limit(times=1, retry_after=1.0, method="chat.postMessage")
        sink.server_error(times=1, method="chat.postMessage")  # not stored, but it may have been
        await deny_all_deleted_and_rechecked(responder, seeded, clock, vllm)
        # A rate limit is waited out, not counted against max_attempts. (Its 429 must have come:
        # the row is pending, attempt 0, before its first try too.)
        await settle(
            responder,
            lambda: (
                lapse_post_statuses(sink) == [429]
                and [r[:2] for r in lapse_rows(responder)] == [("pending", 0)]
            ),
        )
        past_the_backoff(responder, clock)
        # A 5xx may hide a reply that landed: the next attempt looks in the thread before posting.
        await settle(responder, lambda: [r[:2] for r in lapse_rows(responder)] == [("sending", 1)])
        past_the_backoff(responder, clock)
        await settle(responder, lambda: [r[:2] for r in lapse_rows(responder)] == [("sent", 2)])
        assert len(lapse_replies(sink)) == 1
        assert lapse_post_statuses(sink) == [429, 500, 200]
        assert any(r.method == "conversations.replies" for r in sink.requests())
    finally:
        await responder.stop()


async def test_a_lapse_journaled_before_a_restart_is_told_once_and_the_next_alert_still_reopens(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    vllm = seeded[1]["vllm"]
    clock = FakeClock()
    responder = await start(tmp_path, seeded, sink, clock)
    try:
        await quarantined_and_posted(responder, sink, vllm)
        (first,) = incident_ids(responder)
        sink.inject(Fault(status=503, apply=True, method="chat.postMessage"))
        await deny_all_deleted_and_rechecked(responder, seeded, clock, vllm)
        # The row says "sending" before the post goes out: wait for Slack's (lost) answer too, or the
        # stop below may cancel the post before Slack stored it.
        await settle(
            responder,
            lambda: (
                [r[0] for r in lapse_rows(responder)] == ["sending"] and lapse_post_statuses(sink) == [503]
            ),
        )
    finally:
        await responder.stop()
    # The process is gone with the reply's answer lost; it starts again on the same journal.
    clock.advance(5)
    responder = await start(tmp_path, seeded, sink, clock)
    try:
        await settle(responder, lambda: [r[0] for r in lapse_rows(responder)] == ["sent"])
        assert len(lapse_replies(sink)) == 1
        # The restored incident knows its lapse: the next alert opens a new one, which says so.
        await submit(responder, shell(vllm, 3))
        await settle(responder, lambda: len(incident_posts(sink)) == 2)
        assert f"*Reopens* incident `{first}`: its quarantine no longer held" in headline(
            incident_posts(sink)[1]
        )
    finally:
        await responder.stop()


async def test_in_a_workload_thread_the_lapse_is_told_there_and_the_root_counts_it(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    running, pods, _ = seeded
    vllm = pods["vllm"]
    sibling = replica(running, vllm, "vllm-1")
    clock = FakeClock()
    responder = await start(tmp_path, seeded, sink, clock, thread_by_workload=True)
    try:
        await submit(responder, shell(vllm))
        await settle(responder, lambda: len(incident_posts(sink)) == 1)
        await submit(responder, shell(sibling, 0))
        root = top_level(sink)[0]
        await settle(responder, lambda: len(sink.replies(CHANNEL, root.ts)) == 1)
        await deny_all_deleted_and_rechecked_of(responder, seeded, clock, vllm, sibling)
        # Slack threads are one level deep: the replica's incident is answered in the workload's thread.
        await settle(responder, lambda: len(lapse_replies(sink)) == 1)
        (reply,) = lapse_replies(sink)
        assert reply.thread_ts == root.ts and f"`{sibling.namespace}/{sibling.name}`" in visible_text(
            reply.blocks
        )
        summary = "in this thread: 1 no longer held."
        await settle(responder, lambda: summary in str(top_level(sink)[0].blocks))
        # The replica's own reply is rendered again in place, leading with it.
        await settle(
            responder,
            lambda: "*The quarantine no longer holds*" in headline(sink.replies(CHANNEL, root.ts)[0]),
        )
    finally:
        await responder.stop()


async def deny_all_deleted_and_rechecked_of(
    responder: Responder, seeded: Seeded, clock: FakeClock, vllm: SeededPod, sibling: SeededPod
) -> None:
    """The deny-all (shared by both replicas) deleted; a repeat on the replica only finds it."""
    running, _, kubeconfig = seeded
    delete_policy(Harness(running, kubeconfig), sibling.namespace, DENY_ALL)
    clock.advance(16)
    await submit(responder, shell(sibling, 1))
    pipeline = responder.pipeline
    assert pipeline is not None
    await settle(responder, lambda: not pipeline._background)
    state = next(s for s in pipeline.incidents._open.values() if s.key.pod == sibling.name)
    assert state.lapsed is not None and state.reopen_after_ns is not None


async def test_webhook_mode_tells_the_channel(tmp_path: Path, seeded: Seeded, sink: SlackSink) -> None:
    vllm = seeded[1]["vllm"]
    clock = FakeClock()
    responder = await start(tmp_path, seeded, sink, clock, mode="webhook")
    try:
        await submit(responder, shell(vllm, 0))
        await settle(responder, lambda: sum(r.kind == "webhook" for r in sink.requests()) == 1)
        await deny_all_deleted_and_rechecked(responder, seeded, clock, vllm)
        await settle(responder, lambda: [r[0] for r in lapse_rows(responder)] == ["sent"])
        told = [visible_text(r.json["blocks"]) for r in sink.requests() if r.kind == "webhook"]
        said = f":warning: *The quarantine no longer holds* on `{vllm.namespace}/{vllm.name}`"
        lapses = [text for text in told if text.startswith(said)]
        assert len(lapses) == 1
        assert lapses[0].startswith(f"{said}: NetworkPolicy {DENY_ALL} is gone.\n")
    finally:
        await responder.stop()


async def test_without_slack_the_lapse_is_journaled_and_nothing_is_queued(
    tmp_path: Path, seeded: Seeded
) -> None:
    running, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    clock = FakeClock()
    responder = await start_with_clock(tmp_path, kubeconfig, clock)  # slack.mode: disabled
    try:
        assert responder.notifier is None
        await submit_all(responder, [shell(vllm, 0)])
        delete_policy(Harness(running, kubeconfig), vllm.namespace, DENY_ALL)
        clock.advance(16)
        await submit_all(responder, [shell(vllm, 1)])
        assert await rechecked(responder)
        await submit_all(responder, [shell(vllm, 2)])
        statuses = [
            tuple(r) for r in rows(responder.config, "SELECT action, status FROM actions ORDER BY id")
        ]
        assert statuses == [
            ("quarantine", "quarantined"),
            ("recheck", "lapsed"),
            ("quarantine", "quarantined"),
        ]
        assert rows(responder.config, "SELECT COUNT(*) FROM notifications")[0][0] == 0
        with sqlite3.connect(responder.config.journal.path) as conn:
            decisions = [row[0] for row in conn.execute("SELECT decision FROM incidents ORDER BY opened_ns")]
        assert '"reopens"' not in decisions[0] and '"reopens"' in decisions[1]
    finally:
        await responder.stop()


async def test_a_privileged_debug_container_added_to_a_quarantined_pod_is_a_lapse(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    """`kubectl debug --profile=sysadmin` on the quarantined pod: a privileged ephemeral container
    can leave the pod's network namespace, which no NetworkPolicy covers. Nothing changed in the
    policies, yet the quarantine no longer holds."""
    running, pods, _ = seeded
    vllm = pods["vllm"]
    clock = FakeClock()
    responder = await start(tmp_path, seeded, sink, clock)
    try:
        await quarantined_and_posted(responder, sink, vllm)
        stored = Harness(running, seeded[2]).stored("v1/pods", vllm.namespace, vllm.name)
        assert stored is not None
        stored["spec"]["ephemeralContainers"] = [
            {"name": "debugger", "image": "busybox", "securityContext": {"privileged": True}}
        ]
        running.call(running.emulator.put_object, "v1/pods", stored)
        clock.advance(16)
        await submit(responder, shell(vllm, 2))
        assert await rechecked(responder)
        await settle(responder, lambda: [r[0] for r in lapse_rows(responder)] == ["sent"])
        ((_, _, action, status, detail),) = lapse_rows(responder)
        assert (action, status) == ("recheck", "lapsed")
        assert (
            detail.startswith("the pod can leave its network namespace, which NetworkPolicies do not cover:")
            and "ephemeral container debugger is privileged" in detail
        )
    finally:
        await responder.stop()


async def test_after_a_restart_the_first_repeat_proves_the_quarantine_again(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    """The recheck's timer is not journaled: a restarted responder proves what its open incidents
    put on their pods at the first repeat, not never (the deny-all went while it was down)."""
    running, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    clock = FakeClock()
    responder = await start(tmp_path, seeded, sink, clock)
    try:
        post = await quarantined_and_posted(responder, sink, vllm)
    finally:
        await responder.stop()
    delete_policy(Harness(running, kubeconfig), vllm.namespace, DENY_ALL)
    clock.advance(1)
    responder = await start(tmp_path, seeded, sink, clock)
    try:
        await submit(responder, shell(vllm, 2))
        assert await rechecked(responder)
        await settle(responder, lambda: len(lapse_replies(sink)) == 1)
        (reply,) = lapse_replies(sink)
        assert reply.thread_ts == post.ts
        assert f"NetworkPolicy {DENY_ALL} is gone" in visible_text(reply.blocks)
    finally:
        await responder.stop()


async def test_after_a_restart_a_quarantine_that_holds_is_not_said_to_lapse(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    vllm = seeded[1]["vllm"]
    clock = FakeClock()
    responder = await start(tmp_path, seeded, sink, clock)
    try:
        await quarantined_and_posted(responder, sink, vllm)
    finally:
        await responder.stop()
    clock.advance(1)
    responder = await start(tmp_path, seeded, sink, clock)
    try:
        await submit(responder, shell(vllm, 2))
        assert not await rechecked(responder)
        clock.advance(16)
        await submit(responder, shell(vllm, 3))
        assert not await rechecked(responder)
        assert lapse_rows(responder) == [] and len(incident_ids(responder)) == 1
    finally:
        await responder.stop()
