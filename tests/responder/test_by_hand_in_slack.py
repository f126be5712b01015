"""`serving-guard quarantine --incident` and `release --incident`: what a person did by hand is told
in the incident's Slack thread by the running responder (and shown in the channel), once, even
across a lost answer; where the incident has no post to answer, nothing is queued."""

from __future__ import annotations

import asyncio
import html
import re
import shlex
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml

from responder.audit.query import AuditQuery
from responder.audit.text import format_incidents, format_summary, format_table
from responder.audit.trail import load_trail
from responder.cli import main
from responder.service import Responder
from simulators.seed import SeededPod
from simulators.slack_sink import Fault, SlackSink
from tests.helpers import SHELL_RULE
from tests.notify.slack_fixtures import visible_text
from tests.responder.test_notifications import Seeded, incident_posts, settle, shell, sink, start
from tests.responder.test_workload_threads import posts, replica, submit, top_level

__all__ = ["sink"]  # the fixture, used by name

LABEL = "serving-guard.io/quarantine"
# The policy on trial: its quarantine is predicted, and Slack gives the command to run.
ON_TRIAL = {"guardrails": {"dry_run": True}}


def cli_config(tmp_path: Path, kubeconfig: str, slack: dict[str, Any] | None = None) -> Path:
    """The config a person passes the command: the responder's journal and cluster (and its Slack
    settings, where the test says)."""
    path = tmp_path / "cli.yaml"
    data = {
        "cluster": {"kubeconfig": kubeconfig},
        "journal": {"path": str(tmp_path / "journal.db")},
        "logging": {"level": "error"},
        **({"slack": slack} if slack is not None else {}),
    }
    path.write_text(yaml.safe_dump(data))
    return path


def incident_of(responder: Responder) -> str:
    with responder.journal.reader() as conn:
        (incident_id,) = conn.execute("SELECT incident_id FROM incidents").fetchone()
    return str(incident_id)


async def quarantine_by_hand(
    tmp_path: Path,
    seeded: Seeded,
    pod: SeededPod,
    incident_id: str,
    capsys: pytest.CaptureFixture[str],
    slack: dict[str, Any] | None = None,
) -> tuple[int, str]:
    argv = [
        "quarantine",
        "-n",
        pod.namespace,
        pod.name,
        "--reason",
        "the trial predicted it; *confirmed* <by eye>",
        "--by",
        "carol",
        "--incident",
        incident_id,
        "--config",
        str(cli_config(tmp_path, seeded[2], slack)),
    ]
    code = await asyncio.to_thread(main, argv)
    return code, capsys.readouterr().out


def by_hand_rows(responder: Responder) -> list[tuple[Any, ...]]:
    with responder.journal.reader() as conn:
        return [
            tuple(row)
            for row in conn.execute(
                "SELECT n.state, n.action_id, a.actor FROM notifications n"
                " JOIN actions a ON a.id = n.action_id WHERE n.kind = 'by_hand'"
            )
        ]


def by_hand_posts(sink: SlackSink) -> list[dict[str, Any]]:
    return [p for p in posts(sink) if "by_hand" in str(p.get("metadata"))]


async def incident_post(responder: Responder, sink: SlackSink, pod: SeededPod) -> Any:
    """A shell on ``pod``, and the incident's post once it is in the channel."""
    await submit(responder, shell(pod))
    await settle(responder, lambda: len(incident_posts(sink)) == 1)
    (post,) = incident_posts(sink)
    return post


async def test_a_quarantine_by_hand_is_told_in_the_incidents_thread_and_the_channel(
    tmp_path: Path, seeded: Seeded, sink: SlackSink, capsys: pytest.CaptureFixture[str]
) -> None:
    running, pods, _ = seeded
    vllm = pods["vllm"]
    responder = await start(tmp_path, seeded, sink, extra=ON_TRIAL)
    try:
        post = await incident_post(responder, sink, vllm)
        assert "Dry-run" in str(post.blocks)
        incident_id = incident_of(responder)

        code, out = await quarantine_by_hand(tmp_path, seeded, vllm, incident_id, capsys)
        assert code == 0
        assert f"the responder tells incident {incident_id}'s Slack thread" in out
        stored = running.call(running.emulator.get_object, "v1/pods", vllm.namespace, vllm.name)
        assert stored["metadata"]["labels"][LABEL] == "true"

        await settle(responder, lambda: bool(sink.replies("#sec-alerts", post.ts)))
        (reply,) = sink.replies("#sec-alerts", post.ts)
        text = str(reply.blocks)
        assert f"*carol* quarantined `{vllm.namespace}/{vllm.name}` by hand: quarantined." in text
        # The reason is the person's text: escaped, never markup of its own.
        assert "Reason: the trial predicted it;" in text
        assert "&lt;by eye&gt;" in text and "<by eye>" not in text
        payload = (reply.metadata or {})["event_payload"]
        assert payload["kind"] == "by_hand" and payload["incident_id"] == incident_id
        # Shown in the channel too: the incident's own message still says only "would quarantine".
        (sent,) = by_hand_posts(sink)
        assert sent.get("reply_broadcast") in (True, "true", "1")
        await settle(responder, lambda: by_hand_rows(responder) == [("sent", payload["action_id"], "carol")])
        assert len(incident_posts(sink)) == 1
        # The incident's own message is rendered again: it leads with who quarantined the pod (the
        # prediction is history) and no longer offers a command already run; it offers the release.
        await settle(responder, lambda: "By hand, by *carol*" in str(incident_posts(sink)[0].blocks))
        updated = str(incident_posts(sink)[0].blocks)
        headline = incident_posts(sink)[0].blocks[1]["text"]["text"]
        assert headline.startswith(":lock: *Quarantined*") and "By hand, by *carol*" in headline
        assert headline.endswith("_Before that:_\n• dry-run: would quarantine")
        assert "To quarantine it by hand" not in updated
        assert f"serving-guard release --namespace ml-serving {vllm.name} --incident {incident_id}" in updated
        # Its repeats say where the pod stands now.
        await submit(responder, shell(vllm, 1))
        await settle(
            responder, lambda: "Now: quarantined" in str(sink.replies("#sec-alerts", post.ts)[-1].blocks)
        )
    finally:
        await responder.stop()


async def test_a_leaky_quarantine_by_hand_says_it_did_not_isolate(
    tmp_path: Path, seeded: Seeded, sink: SlackSink, capsys: pytest.CaptureFixture[str]
) -> None:
    _, pods, _ = seeded
    triton = pods["triton"]  # another policy still allows its traffic (the seeded gateway policy)
    responder = await start(tmp_path, seeded, sink, extra=ON_TRIAL)
    try:
        post = await incident_post(responder, sink, triton)
        code, _ = await quarantine_by_hand(tmp_path, seeded, triton, incident_of(responder), capsys)
        assert code == 1
        await settle(responder, lambda: bool(sink.replies("#sec-alerts", post.ts)))
        text = str(sink.replies("#sec-alerts", post.ts)[0].blocks)
        assert ":warning: *carol* tried to quarantine" in text
        assert "*LEAKY quarantine: still allowed by" in text and "*not* proven isolated" in text
    finally:
        await responder.stop()


async def test_a_by_hand_reply_whose_answer_was_lost_is_found_not_posted_twice(
    tmp_path: Path, seeded: Seeded, sink: SlackSink, capsys: pytest.CaptureFixture[str]
) -> None:
    vllm = seeded[1]["vllm"]
    responder = await start(tmp_path, seeded, sink, extra=ON_TRIAL)
    try:
        post = await incident_post(responder, sink, vllm)
        # Slack stores the reply, then answers 503: the retry must look in the thread first.
        sink.inject(Fault(status=503, apply=True, method="chat.postMessage"))
        await quarantine_by_hand(tmp_path, seeded, vllm, incident_of(responder), capsys)
        await settle(responder, lambda: [r[0] for r in by_hand_rows(responder)] == ["sent"], timeout=30)
        assert len(sink.replies("#sec-alerts", post.ts)) == 1
        assert [r.method for r in sink.requests() if r.method == "conversations.replies"]
        # The reply found, the incident's own post is still rendered again with it.
        await settle(responder, lambda: "By hand, by *carol*" in str(incident_posts(sink)[0].blocks))
    finally:
        await responder.stop()


async def test_in_a_workload_thread_the_reply_goes_there_and_the_root_counts_it(
    tmp_path: Path, seeded: Seeded, sink: SlackSink, capsys: pytest.CaptureFixture[str]
) -> None:
    running, pods, _ = seeded
    vllm = pods["vllm"]
    sibling = replica(running, vllm, "vllm-1")
    responder = await start(tmp_path, seeded, sink, extra=ON_TRIAL, thread_by_workload=True)
    try:
        await submit(responder, shell(vllm))
        await settle(responder, lambda: len(incident_posts(sink)) == 1)
        await submit(responder, shell(sibling))
        root = top_level(sink)[0]
        await settle(responder, lambda: len(sink.replies("#sec-alerts", root.ts)) == 1)
        with responder.journal.reader() as conn:
            (sibling_incident,) = conn.execute(
                "SELECT incident_id FROM incidents WHERE pod = ?", (sibling.name,)
            ).fetchone()
        await quarantine_by_hand(tmp_path, seeded, sibling, sibling_incident, capsys)
        # Slack threads are one level deep: the reply to a reply goes into the workload's thread.
        await settle(responder, lambda: len(sink.replies("#sec-alerts", root.ts)) == 2)
        assert "*carol* quarantined" in str(sink.replies("#sec-alerts", root.ts)[1].blocks)
        # The replica's own message, a reply in the thread, is rendered again in place.
        await settle(
            responder, lambda: "By hand, by *carol*" in str(sink.replies("#sec-alerts", root.ts)[0].blocks)
        )
        assert "The same rule on another pod of" in str(sink.replies("#sec-alerts", root.ts)[0].blocks)
        summary = "The same rule on *1 more pod* of `StatefulSet/vllm`, in this thread: 1 quarantined."
        await settle(responder, lambda: summary in str(top_level(sink)[0].blocks))
    finally:
        await responder.stop()


async def test_webhook_mode_tells_the_channel(
    tmp_path: Path, seeded: Seeded, sink: SlackSink, capsys: pytest.CaptureFixture[str]
) -> None:
    vllm = seeded[1]["vllm"]
    responder = await start(tmp_path, seeded, sink, mode="webhook", extra=ON_TRIAL)
    try:
        await submit(responder, shell(vllm))
        await settle(responder, lambda: sum(r.kind == "webhook" for r in sink.requests()) == 1)
        hook = tmp_path / "hook"
        hook.write_text(sink.webhook_url)
        webhook = {"mode": "webhook", "webhook_url": {"file": str(hook)}}
        incident_id = incident_of(responder)
        code, out = await quarantine_by_hand(tmp_path, seeded, vllm, incident_id, capsys, webhook)
        assert code == 0
        # No thread to tell, nor a post edited: the command says where it is told.
        assert (
            f"the responder tells the channel of incident {incident_id} (an incoming webhook has no threads)"
            in out
        )
        await settle(responder, lambda: sum(r.kind == "webhook" for r in sink.requests()) == 2)
        told = [str(r.json) for r in sink.requests() if r.kind == "webhook"][1]
        assert "*carol* quarantined" in told
    finally:
        await responder.stop()


async def test_an_incident_without_a_post_queues_nothing(
    tmp_path: Path, seeded: Seeded, sink: SlackSink, capsys: pytest.CaptureFixture[str]
) -> None:
    vllm = seeded[1]["vllm"]
    # Alerts of this rule are quarantined without a word to Slack.
    quiet = {
        "policies": [
            {"name": "quiet", "match": {"rules": ["*"]}, "actions": ["quarantine"]},
        ],
        **ON_TRIAL,
    }
    responder = await start(tmp_path, seeded, sink, extra=quiet)
    try:
        await submit(responder, shell(vllm))
        assert responder.pipeline is not None and await responder.pipeline.drain(timeout=10)
        code, out = await quarantine_by_hand(tmp_path, seeded, vllm, incident_of(responder), capsys)
        assert code == 0 and "Slack" not in out
        assert by_hand_rows(responder) == []
        with sqlite3.connect(tmp_path / "journal.db") as conn:
            assert conn.execute("SELECT COUNT(*) FROM actions WHERE actor = 'carol'").fetchone()[0] == 1
    finally:
        await responder.stop()


async def test_the_audit_trail_shows_who_and_why_and_where_slack_has_it(
    tmp_path: Path, seeded: Seeded, sink: SlackSink, capsys: pytest.CaptureFixture[str]
) -> None:
    vllm = seeded[1]["vllm"]
    responder = await start(tmp_path, seeded, sink, extra=ON_TRIAL)
    try:
        post = await incident_post(responder, sink, vllm)
        await quarantine_by_hand(tmp_path, seeded, vllm, incident_of(responder), capsys)
        await settle(responder, lambda: [r[0] for r in by_hand_rows(responder)] == ["sent"])
        with responder.journal.reader() as conn:
            entries = load_trail(conn, AuditQuery())
        (incident,) = {id(e["incident"]): e["incident"] for e in entries if e.get("incident")}.values()
        by_hand = [a for a in incident["actions"] if a["actor"] == "carol"]
        assert [(a["status"], a["reason"]) for a in by_hand] == [
            ("quarantined", "the trial predicted it; *confirmed* <by eye>")
        ]
        kinds = {n["kind"]: n for n in incident["notifications"]}
        assert kinds["by_hand"]["slack_thread_ts"] == post.ts and kinds["incident"]["slack_thread_ts"] is None
        assert "quarantine=quarantined(by carol)" in format_table(entries)
        assert "dry-run: would quarantine; quarantined by carol" in format_summary(entries)
        story = format_incidents(entries).splitlines()
        assert story[0] == f"{incident['incident_id']}  {SHELL_RULE}  ml-serving/{vllm.name}"
        assert "  verified  verified" in story
        assert "  decided   policy isolate-shells: notify, quarantine (dry-run by guardrails)" in story
        actions = [line for line in story if line.startswith("  action    ")]
        assert [line.split(" UTC  ")[1] for line in actions] == [
            "quarantine dry_run (would label the pod into serving-guard-quarantine) by responder",
            "quarantine quarantined (created NetworkPolicy serving-guard-quarantine) by carol:"
            " the trial predicted it; *confirmed* <by eye>",
        ]
        slack = [line for line in story if line.startswith("  slack     ")]
        assert slack[0].startswith("  slack     incident sent at C") and "in thread" not in slack[0]
        assert any(
            line.startswith("  slack     by_hand sent at C") and f"in thread {post.ts}" in line
            for line in slack
        )
    finally:
        await responder.stop()


async def test_a_release_by_hand_is_told_in_the_thread_as_slack_gave_the_command(
    tmp_path: Path, seeded: Seeded, sink: SlackSink, capsys: pytest.CaptureFixture[str]
) -> None:
    running, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    responder = await start(tmp_path, seeded, sink)  # the policy quarantines
    try:
        post = await incident_post(responder, sink, vllm)
        # The command as the incident's message gives it, with the person's config.
        (command,) = re.findall(r"```(serving-guard release [^`]*)```", str(post.blocks))
        reason = "model rebuilt from the signed image"
        # As Slack shows it (it undoes its escaping on display).
        as_given = shlex.split(html.unescape(command).replace("<why it is safe>", reason))
        assert as_given[as_given.index("--incident") + 1] == incident_of(responder)
        as_given += ["--config", str(cli_config(tmp_path, kubeconfig))]
        # Run without filling in who acts: refused, the pod left as it is.
        assert await asyncio.to_thread(main, as_given[1:]) == 2
        assert "--by '<you>': replace <you> with your own name" in capsys.readouterr().err
        stored = running.call(running.emulator.get_object, "v1/pods", vllm.namespace, vllm.name)
        assert stored["metadata"]["labels"][LABEL] == "true"
        argv = [("bob" if arg == "<you>" else arg) for arg in as_given]
        code = await asyncio.to_thread(main, argv[1:])
        assert code == 0
        assert "Slack thread" in capsys.readouterr().out
        stored = running.call(running.emulator.get_object, "v1/pods", vllm.namespace, vllm.name)
        assert LABEL not in stored["metadata"]["labels"]
        await settle(responder, lambda: bool(sink.replies("#sec-alerts", post.ts)))
        text = visible_text(sink.replies("#sec-alerts", post.ts)[-1].blocks)
        assert f"*bob* released `{vllm.namespace}/{vllm.name}` by hand.\nReason: {reason}" in text
        assert text.count(reason) == 1
        # The incident's message, rendered again, leads with the release; the quarantine is history.
        await settle(responder, lambda: ":unlock:" in str(incident_posts(sink)[0].blocks))
        headline = incident_posts(sink)[0].blocks[1]["text"]["text"]
        assert headline.startswith(f":unlock: *Released*. :raised_hand: By hand, by *bob*: {reason}.\n")
        assert headline.endswith("_Before that:_\n• quarantined")
        assert visible_text(incident_posts(sink)[0].blocks).count(reason) == 1
    finally:
        await responder.stop()


def test_release_refuses_an_incident_id_it_cannot_be(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["release", "-n", "ml-serving", "vllm-0", "--reason", "r", "--incident", "inc-zz"])
    assert code == 2
    assert "--incident: 'inc-zz' is not an incident id" in capsys.readouterr().err


async def test_an_incident_of_another_namespace_is_refused_before_the_cluster_is_touched(
    tmp_path: Path, seeded: Seeded, sink: SlackSink, capsys: pytest.CaptureFixture[str]
) -> None:
    _, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    responder = await start(tmp_path, seeded, sink, extra=ON_TRIAL)
    try:
        await incident_post(responder, sink, vllm)
        argv = ["quarantine", "-n", "other", "vllm-0", "--reason", "r", "--by", "carol"]
        argv += ["--incident", incident_of(responder), "--config", str(cli_config(tmp_path, kubeconfig))]
        assert await asyncio.to_thread(main, argv) == 2
        assert (
            "an incident in namespace 'ml-serving', not 'other'; nothing was done" in capsys.readouterr().err
        )
        assert by_hand_rows(responder) == []
    finally:
        await responder.stop()


async def test_a_quarantine_by_hand_brings_the_repeat_replys_now_line_up_to_date(
    tmp_path: Path, seeded: Seeded, sink: SlackSink, capsys: pytest.CaptureFixture[str]
) -> None:
    vllm = seeded[1]["vllm"]
    responder = await start(tmp_path, seeded, sink, extra=ON_TRIAL)
    try:
        post = await incident_post(responder, sink, vllm)
        await submit(responder, shell(vllm, 1))
        await settle(responder, lambda: len(sink.replies("#sec-alerts", post.ts)) == 1)
        assert "Now: dry-run" in str(sink.replies("#sec-alerts", post.ts)[0].blocks)
        code, _ = await quarantine_by_hand(tmp_path, seeded, vllm, incident_of(responder), capsys)
        assert code == 0

        def counted() -> str:
            return str(sink.replies("#sec-alerts", post.ts)[0].blocks)

        await settle(responder, lambda: "Now: dry-run" not in counted())
        assert "Now: quarantine" in counted()
    finally:
        await responder.stop()


async def test_a_quarantine_by_hand_in_a_deleted_thread_is_told_in_the_channel(
    tmp_path: Path, seeded: Seeded, sink: SlackSink, capsys: pytest.CaptureFixture[str]
) -> None:
    vllm = seeded[1]["vllm"]
    responder = await start(tmp_path, seeded, sink, extra=ON_TRIAL)
    try:
        post = await incident_post(responder, sink, vllm)
        assert sink.delete("#sec-alerts", post.ts)  # someone deletes the incident's post
        code, _ = await quarantine_by_hand(tmp_path, seeded, vllm, incident_of(responder), capsys)
        assert code == 0
        await settle(responder, lambda: [row[0] for row in by_hand_rows(responder)] == ["sent"])
        (told,) = sink.messages("#sec-alerts")
        assert told.thread_ts is None and "*carol* quarantined" in str(told.blocks)
        assert "the thread it belonged in was deleted" in str(told.blocks)
    finally:
        await responder.stop()
