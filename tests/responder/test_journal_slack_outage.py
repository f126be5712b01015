"""A long Slack outage (a refused token, Slack down) never fills the journal: posts waiting for Slack
keep their incidents and opening alerts from pruning only up to a share of the journal; past it, as
writes need the room, the oldest give way (logged, counted), and alerts keep being taken (Falco and
Falcosidekick do not send a refused alert again). A short outage loses no post, and an incident's
opening alert inside its dedupe window is kept whatever waits for it. The journal's own pruning,
then the running responder with the cluster emulator and the local Slack recorder."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from responder.alert import Alert
from responder.alert_json import alert_from_mapping
from responder.dedupe import incident_id_for
from responder.ingest.sink import InputName, Overloaded
from responder.journal.ops import GIVEN_UP_FOR_ROOM, PostsGivenUp, used_bytes
from responder.journal.store import WAITING_POSTS_SHARE, Journal, room_check_step
from responder.service import Responder
from simulators.falco_json import falco_alert
from simulators.seed import SeededPod
from simulators.slack_sink import SlackSink
from tests.helpers import SHELL_RULE, FakeClock, Records
from tests.responder.test_journal import alert, open_journal
from tests.responder.test_journal_review_prune import count, open_incident, post
from tests.responder.test_notifications import Seeded, incident_posts, sink, start

__all__ = ["sink"]  # the fixture, used by name

MIB = 1024 * 1024
MINUTE_NS = 60 * 10**9
# Each closed incident's record: about 20 KB (its pod's record), its opening alert aside.
INCIDENT_PADDING = 20_000


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


def waiting_posts(journal: Journal) -> list[str]:
    """The incidents whose post still waits for Slack, oldest post first."""
    with journal.reader() as conn:
        rows = conn.execute(
            "SELECT incident_id FROM notifications WHERE state IN ('pending', 'sending') ORDER BY id"
        ).fetchall()
    return [row[0] for row in rows]


def opener_kept(journal: Journal, incident_id: str) -> bool:
    """Whether the journal still holds the incident's opening alert (its post renders from it)."""
    record = journal.incident_record(incident_id)
    return record is not None and record["first_alert"] is not None


def live_bytes(journal: Journal) -> int:
    with journal.reader() as conn:
        return used_bytes(conn)


# -- the journal's pruning -------------------------------------------------------------------------


@pytest.mark.parametrize("writer", ["thread", "process"])
async def test_past_their_share_the_oldest_waiting_posts_give_way_and_the_journal_takes_alerts(
    tmp_path: Path, writer: str
) -> None:
    now = time.time_ns()
    journal = open_journal(tmp_path, writer=writer, max_bytes=MIB, retention_seconds=30 * 86400.0)
    given_up: list[PostsGivenUp] = []
    journal.on_posts_given_up(given_up.append)
    try:
        journal.keep_incidents_open_for(300)
        # Open (last seen now), its post the oldest waiting: kept, as its opening alert.
        open_incident(journal, "inc-open", alert(1000), now, pod_context_bytes=INCIDENT_PADDING)
        post(journal, "inc-open", now, "pending")
        # Closed an hour ago, one after another, their posts waiting for Slack (token refused).
        closed = [f"inc-{n:02d}" for n in range(60)]
        for n, incident_id in enumerate(closed):
            seen = now - 60 * MINUTE_NS + n * 10**9
            open_incident(journal, incident_id, alert(n), seen, pod_context_bytes=INCIDENT_PADDING)
            post(journal, incident_id, seen, "pending")
        assert live_bytes(journal) > MIB  # the old code kept it so: every alert refused
        with Records("serving_guard.journal", logging.ERROR) as records:
            journal.check_size()  # the maintenance pass (on the event loop)
            await until(lambda: bool(given_up))
            await until(lambda: not journal.full)
        assert live_bytes(journal) <= MIB - 2 * room_check_step(MIB)

        waiting = waiting_posts(journal)
        assert waiting[0] == "inc-open" and opener_kept(journal, "inc-open")
        lapsed = [incident_id for incident_id in closed if incident_id not in waiting]
        # The oldest went, as many as the room needed: the newer ones still wait.
        assert lapsed == closed[: len(lapsed)] and 0 < len(lapsed) < len(closed)
        assert waiting[1:] == closed[len(lapsed) :]

        [report] = given_up
        assert report.by_kind == (("incident", len(lapsed)),) and report.incidents == len(lapsed)
        [line] = records.records
        assert "given up" in line.getMessage()
        assert line.__dict__["posts"] == len(lapsed) and line.__dict__["incidents"] == len(lapsed)
        # Those whose record pruning has not needed yet say why they were not sent (the audit).
        left = count(journal, "SELECT COUNT(*) FROM incidents WHERE incident_id GLOB 'inc-[0-9]*'")
        dropped = "SELECT COUNT(*) FROM notifications WHERE state = 'dropped' AND last_error = "
        assert count(journal, f"{dropped}'{GIVEN_UP_FOR_ROOM}'") == left - (len(closed) - len(lapsed))
    finally:
        journal.close()


async def test_a_short_outage_gives_no_post_up_even_at_the_bound(tmp_path: Path) -> None:
    now = time.time_ns()
    journal = open_journal(tmp_path, max_bytes=MIB, retention_seconds=30 * 86400.0)
    given_up: list[PostsGivenUp] = []
    journal.on_posts_given_up(given_up.append)
    try:
        journal.keep_incidents_open_for(300)
        closed = [f"inc-{n:02d}" for n in range(15)]  # about 330 KB: under the posts' share
        assert 15 * (INCIDENT_PADDING + 2048) < MIB * WAITING_POSTS_SHARE
        for n, incident_id in enumerate(closed):
            seen = now - 60 * MINUTE_NS + n * 10**9
            open_incident(journal, incident_id, alert(n), seen, pod_context_bytes=INCIDENT_PADDING)
            post(journal, incident_id, seen, "pending")
        big = [  # ~12 KB each
            alert_from_mapping({**alert(100 + n).to_falco_json(), "output": f"{n:04d}" * 3000})
            for n in range(75)
        ]
        for item in big[:20]:  # finished: pruned first
            journal.run_sync(Journal.op_append_alert(item, "http", now))
            journal.run_sync(Journal.op_finish_alert(item, None, "rejected", now))
        for item in big[20:]:  # still to be processed: never pruned, the journal stays over its bound
            journal.run_sync(Journal.op_append_alert(item, "http", now))
        assert live_bytes(journal) > MIB
        journal.check_size()  # the maintenance pass (on the event loop)
        finished = "SELECT COUNT(*) FROM alerts WHERE state = 'done' AND length(payload) > 10000"
        await until(lambda: count(journal, finished) == 0)
        await asyncio.sleep(0.2)  # the prune's answer: measured, reported
        assert live_bytes(journal) > MIB - 2 * room_check_step(MIB)
        assert given_up == []
        assert waiting_posts(journal) == closed
        assert all(opener_kept(journal, incident_id) for incident_id in closed)
    finally:
        journal.close()


# -- through the running responder --------------------------------------------------------------


def unique_alert(pod: SeededPod, n: int) -> Alert:
    """A shell alert of ~6 KB naming a container the pod does not have: an incident of its own."""
    fields = {"proc.name": "sh", "proc.cmdline": "sh -c " + "x" * 6000, "container.id": f"{n:012x}"}
    return alert_from_mapping(falco_alert(pod, SHELL_RULE, "Critical", "shell", fields))


async def start_with_outage(tmp_path: Path, seeded: Seeded, sink: SlackSink, clock: FakeClock) -> Responder:
    sink.api_error("invalid_auth", times=10**6)  # the token is refused (revoked) until cleared
    journal = {"path": str(tmp_path / "journal.db"), "commit_interval_ms": 1, "max_bytes": 2 * MIB}
    return await start(tmp_path, seeded, sink, clock, extra={"journal": journal})


async def submit(responder: Responder, item: Alert) -> bool:
    """Whether the alert is taken (refused, an HTTP sender's is lost: Falco does not send it again)."""
    assert responder.pipeline is not None
    try:
        await responder.pipeline.submit(item, InputName.HTTP, wait_seconds=5)
    except Overloaded:
        return False
    return True


def given_up_count(responder: Responder) -> float:
    labels = {"kind": "incident", "result": "journal_full"}
    return responder.metrics.registry.get_sample_value("serving_guard_notifications_total", labels) or 0.0


# The journal measures which incidents are open (their dedupe window) on the wall clock when it
# prunes as writes near its bound, and the maintenance pass on the responder's clock: this runs
# 10,000 s behind, so that the incidents opened here 2 s apart have closed by both.
BEHIND_SECONDS = -10_000


async def test_alerts_are_taken_while_slack_refuses_the_token_for_long(
    tmp_path: Path, seeded: Seeded, sink: SlackSink
) -> None:
    clock = FakeClock()
    clock.advance(BEHIND_SECONDS)
    responder = await start_with_outage(tmp_path, seeded, sink, clock)
    try:
        assert responder.pipeline is not None
        vllm = seeded[1]["vllm"]
        sent = [unique_alert(vllm, n) for n in range(300)]  # the old code refused from about 130 on
        with Records("serving_guard.journal", logging.ERROR) as records:
            for n, item in enumerate(sent):
                clock.advance(2)
                assert await submit(responder, item), f"alert {n} refused: the journal is full"
                if n % 25 == 24:
                    assert await responder.pipeline.drain(timeout=30)
                    await responder._maintain_once()
            assert await responder.pipeline.drain(timeout=30)
        assert not responder.journal.full
        assert live_bytes(responder.journal) <= 2 * MIB + room_check_step(2 * MIB)

        waiting = waiting_posts(responder.journal)
        incidents = [incident_id_for(item) for item in sent]
        lapsed = [incident_id for incident_id in incidents if incident_id not in waiting]
        # The oldest posts gave way, the newer ones still wait for Slack.
        assert 0 < len(lapsed) < len(incidents)
        assert lapsed == incidents[: len(lapsed)] and waiting == incidents[len(lapsed) :]
        assert given_up_count(responder) == len(lapsed)
        logged = [r for r in records.records if "given up" in r.getMessage()]
        assert sum(r.__dict__["posts"] for r in logged) == len(lapsed)
        assert incident_posts(sink) == []  # Slack took nothing all along
    finally:
        await responder.stop()


async def test_a_short_outage_loses_no_post(tmp_path: Path, seeded: Seeded, sink: SlackSink) -> None:
    clock = FakeClock()
    clock.advance(BEHIND_SECONDS)
    responder = await start_with_outage(tmp_path, seeded, sink, clock)
    try:
        assert responder.pipeline is not None
        vllm = seeded[1]["vllm"]
        sent = [unique_alert(vllm, n) for n in range(40)]
        for item in sent:
            clock.advance(2)
            assert await submit(responder, item)
        assert await responder.pipeline.drain(timeout=30)
        await responder._maintain_once()
        assert len(waiting_posts(responder.journal)) == len(sent)
        sink.clear()  # the token works again
        clock.advance(700)  # past the longest wait after a refused token
        await until(lambda: waiting_posts(responder.journal) == [], timeout=60)
        sent_posts = "SELECT COUNT(*) FROM notifications WHERE kind = 'incident' AND state = 'sent'"
        assert count(responder.journal, sent_posts) == len(sent) and given_up_count(responder) == 0
        assert incident_posts(sink)  # the possible forgeries' thread, each a post in it
    finally:
        await responder.stop()
