"""The notifier's waits on the wall clock hold no post for a clock stepped back (an NTP step, a VM
restored): a post waiting for its retry, or behind a pause of all sending, goes out once the wait it
was set would have ended, not after the step, and is not tried again and again meanwhile. A wait
still to run is waited. The real journal and SlackDelivery against the local Slack recorder, with a
clock the test moves."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from responder.cluster.verify import Verification, VerificationStatus
from responder.journal.store import IncidentRow, Journal
from responder.metrics import Metrics
from responder.notify.slack import SlackDelivery
from responder.notify.worker import (
    LONGEST_WAIT_SECONDS,
    NotificationWorker,
    longest_repeat_wait_ns,
    retry_delay,
)
from responder.policy import Decision
from responder.records import decision_to_json, verification_to_json
from simulators.slack_sink import SlackSink
from tests.helpers import FakeClock
from tests.notify.slack_fixtures import TOKEN, bot_settings, webhook_settings
from tests.responder.test_journal import alert, open_journal

HOUR = 3600.0
SECOND = 1_000_000_000
INCIDENT = "inc-stepped"


def queue_incident_post(journal: Journal, incident_id: str, now_ns: int, n: int = 0) -> None:
    """An incident decided (an alert that does not match its pod: told in Slack), its post due now."""
    first = alert(n)
    journal.run_sync(Journal.op_append_alert(first, "http", now_ns))
    row = IncidentRow(
        incident_id,
        incident_id,
        "r",
        "ml",
        "p1",
        "c",
        "h",
        first.alert_id,
        now_ns,
        now_ns,
        1,
        False,
        first.time_ns,
    )
    journal.run_sync(Journal.op_open_incident(row))
    decision = Decision(policy="p", actions=(), requested=(), unverified=True)
    verification = Verification(VerificationStatus.UNVERIFIED, "container id not on the pod")
    journal.run_sync(
        Journal.op_record_decision(
            incident_id, now_ns, verification_to_json(verification), decision_to_json(decision), None
        )
    )
    journal.run_sync(Journal.op_finish_alert(first, incident_id, "opened", now_ns))
    journal.run_sync(Journal.op_schedule_notification(incident_id, "incident", None, now_ns, now_ns))


def post_row(journal: Journal) -> tuple[str, int, int, str | None]:
    """The incident post's state, tries, when it is due and why its last try failed."""
    with journal.reader() as conn:
        row = conn.execute(
            "SELECT state, attempts, next_attempt_ns, last_error FROM notifications WHERE incident_id = ?",
            (INCIDENT,),
        ).fetchone()
    return row["state"], row["attempts"], row["next_attempt_ns"], row["last_error"]


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


@asynccontextmanager
async def running_worker(tmp_path: Path, sink: SlackSink, clock: FakeClock) -> AsyncIterator[Journal]:
    journal = open_journal(tmp_path)
    settings = bot_settings(sink)
    stop = asyncio.Event()
    try:
        async with SlackDelivery(settings, token=TOKEN) as delivery:
            worker = NotificationWorker(journal, delivery, settings, Metrics(), clock_ns=clock)
            task = asyncio.create_task(worker.run(stop))
            try:
                yield journal
            finally:
                stop.set()
                await task
    finally:
        journal.close()


@pytest.fixture(autouse=True)
def slack_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """The token bot_settings names (read again after Slack refuses it)."""
    monkeypatch.setenv("SG_TEST_SLACK_TOKEN", TOKEN)


async def test_a_post_waiting_for_its_retry_is_sent_after_the_clock_steps_back_an_hour(
    tmp_path: Path, sink: SlackSink
) -> None:
    clock = FakeClock()
    sink.server_error(times=1, method="chat.postMessage")  # one 5xx: tried again about 1 s later
    async with running_worker(tmp_path, sink, clock) as journal:
        queue_incident_post(journal, INCIDENT, clock.now)
        await until(lambda: post_row(journal)[1] == 1)
        state, _, due_ns, _ = post_row(journal)
        assert state == "sending" and 0 < due_ns - clock.now <= 2 * SECOND
        await asyncio.sleep(1.5)  # the clock stands still: its retry waits
        assert len(sink.requests("chat.postMessage")) == 1
        clock.advance(-HOUR)  # NTP steps the clock back: the retry was due in a second, not an hour
        await until(lambda: post_row(journal)[0] == "sent", timeout=5)
        calls = len(sink.requests())
        await asyncio.sleep(2.0)  # nothing comes round again
        assert len(sink.requests()) == calls
    # The 5xx, then the retry, which first looked for the post the 5xx may have hidden: once each.
    assert len(sink.requests("chat.postMessage")) == 2
    assert len(sink.requests("conversations.history")) == 1 and len(sink.requests()) <= 4


async def test_a_pause_of_all_sending_ends_when_the_clock_steps_back(tmp_path: Path, sink: SlackSink) -> None:
    clock = FakeClock()
    sink.api_error("invalid_auth", times=1)  # the token refused once: all sending waits 30 s
    async with running_worker(tmp_path, sink, clock) as journal:
        queue_incident_post(journal, INCIDENT, clock.now)
        await until(lambda: post_row(journal)[3] is not None)
        clock.advance(5)
        await asyncio.sleep(1.5)  # 25 s of the pause to go: waited
        assert len(sink.requests("chat.postMessage")) == 1
        clock.advance(-HOUR)
        await until(lambda: post_row(journal)[0] == "sent", timeout=5)
        calls = len(sink.requests())
        await asyncio.sleep(2.0)
        assert len(sink.requests()) == calls
    assert len(sink.requests("chat.postMessage")) == 2


def wait_ahead(journal: Journal, incident_id: str, kind: str, due_ns: int, now_ns: int) -> None:
    """The incident's post due at ``due_ns`` or, ``kind`` "repeat", its post sent and a repeat
    count due then."""
    with journal.reader() as conn:
        (post,) = conn.execute(
            "SELECT id FROM notifications WHERE incident_id = ?", (incident_id,)
        ).fetchone()
    if kind == "repeat":
        journal.run_sync(Journal.op_notification_state(post, "sent"))
        journal.run_sync(Journal.op_schedule_notification(incident_id, "repeat", None, due_ns, now_ns))
    else:
        journal.run_sync(Journal.op_notification_state(post, "pending", next_attempt_ns=due_ns))


async def test_rows_set_further_ahead_than_any_wait_are_due_now_once(tmp_path: Path) -> None:
    now = time.time_ns()
    longest = int(LONGEST_WAIT_SECONDS * SECOND)
    repeats = longest_repeat_wait_ns(webhook_settings())  # a webhook's repeat counts: up to an hour
    journal = open_journal(tmp_path)
    try:
        waits = [
            ("inc-retry", "incident", 60.0),  # a retry a minute ahead: waited
            ("inc-stepped", "incident", HOUR),  # no retry is set an hour ahead: the clock went back
            ("inc-repeat", "repeat", 50 * 60.0),  # a webhook's repeat count may wait that long
            ("inc-repeat-stepped", "repeat", 2 * HOUR),
        ]
        for n, (incident_id, kind, ahead) in enumerate(waits):
            queue_incident_post(journal, incident_id, now, n)
            wait_ahead(journal, incident_id, kind, now + int(ahead * SECOND), now)
        assert journal.due_notifications(now) == []
        assert journal.notifications_set_beyond(now, longest, repeats)
        assert journal.run_sync(Journal.op_due_again(now, longest, repeats)) == 2
        rows = journal.due_notifications(now)
        assert [(row.kind, row.incident_id) for row in rows] == [
            ("incident", "inc-stepped"),
            ("repeat", "inc-repeat-stepped"),
        ]
        assert not journal.notifications_set_beyond(now, longest, repeats)
    finally:
        journal.close()


def test_no_wait_the_notifier_sets_is_further_ahead_than_its_longest() -> None:
    # Slack's Retry-After (up to a day) is waited at most so long per try.
    assert all(retry_delay(attempts, 86400.0) <= LONGEST_WAIT_SECONDS for attempts in range(1, 40))
    assert all(retry_delay(attempts, None) <= LONGEST_WAIT_SECONDS for attempts in range(1, 40))
    assert longest_repeat_wait_ns(webhook_settings()) == int(HOUR * SECOND)
