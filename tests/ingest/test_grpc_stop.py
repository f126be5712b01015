"""The gRPC input at stop: every alert Falco sent is journaled or named, and none is named that is
journaled; but when the stop's read ends on its deadline with Falco still sending, those Falco
wrote ahead into the stream are left unread: bounded by flow control, and said. Real grpcio on
both ends (the Falco-compatible simulator), and a real journal where the journal's answer
matters."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from responder.alert import Alert
from responder.ingest.grpc import (
    IN_FLIGHT,
    JOURNAL_CHECK_SECONDS,
    LOST_IDS_LOGGED,
    STOP_GRACE_SECONDS,
    UNREAD_BYTES_AT_MOST,
    GrpcAlertInput,
    alert_from_response,
)
from responder.ingest.proto import outputs_pb2
from responder.ingest.sink import Accepted, InputName
from responder.journal.store import Journal
from responder.metrics import Metrics
from responder.slots import Slots
from tests.ingest.test_grpc import (
    Falco,
    RecordingSink,
    eventually,
    let_requests_land,
    lost_ids,
    make_response,
    metric,
    running,
    unix_falco,
)
from tests.responder.test_walsync import GatedFsync

T = TypeVar("T")


@pytest.fixture
def unix() -> Iterator[Falco]:
    # unix socket paths are limited to ~107 bytes; pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="sg-grpc-") as directory:
        made = unix_falco(Path(directory))
        try:
            yield made
        finally:
            made.server.stop()


@pytest.fixture
def logger() -> logging.Logger:
    return logging.getLogger("test.grpc_stop")


# -- more alerts in the stream than places to put them ---------------------------------------------


class Sink(RecordingSink):
    """RecordingSink that takes the first ``take`` alerts, then blocks (a full pipeline, a slow
    journal) or, with ``full``, answers Overloaded (a journal at its size bound), and counts calls.
    Once freed (``free_up``) it takes every alert."""

    def __init__(self, take: int, full: bool) -> None:
        super().__init__()
        self.take = take
        self.full = full
        self.freed = False
        self.calls: list[str] = []

    def free_up(self) -> None:
        self.freed = True
        self.gate.set()

    async def submit(
        self, alert: Alert, source: InputName, *, wait_seconds: float | None = None, raw: bytes | None = None
    ) -> Accepted:
        self.calls.append(alert.alert_id)
        if len(self.alerts) < self.take:
            self.alerts.append((alert, source))
            return Accepted(alert.alert_id, True)
        self.overload_first = 1 if self.full else 0
        if not self.freed:
            self.gate.clear()
        return await super().submit(alert, source)


@pytest.mark.parametrize("sink_state", ["blocked", "full"])
async def test_more_alerts_than_in_flight_at_stop_are_each_journaled_or_named(
    unix: Falco, logger: logging.Logger, caplog: pytest.LogCaptureFixture, sink_state: str
) -> None:
    sent = IN_FLIGHT + 40  # the lost ids fit one log line (LOST_IDS_LOGGED)
    published = [make_response(f"Alert {n}") for n in range(sent)]
    ids = [alert_from_response(response).alert_id for response in published]
    sink = Sink(take=10, full=sink_state == "full")
    metrics = Metrics()
    grpc_input = GrpcAlertInput(unix.config, sink, logger, metrics=metrics)
    unix.server.publish_many(published)
    with caplog.at_level(logging.INFO, logger=logger.name):
        async with running(grpc_input):
            await eventually(lambda: len(sink.alerts) == 10, "the first alerts journaled")
            await eventually(lambda: grpc_input.state.received == 10 + IN_FLIGHT, "every place taken")
            await let_requests_land(unix.server)
            # Every place is taken: nothing more is read (none waits, read, with nowhere to go).
            assert grpc_input.state.received == 10 + IN_FLIGHT
            assert unix.server.delivered == sent  # Falco put the rest into the stream
            calls_at_stop = len(sink.calls)
            stopping = time.monotonic()
        stopped_in = time.monotonic() - stopping
    journaled = [alert.alert_id for alert, _ in sink.alerts]
    lost = lost_ids(caplog)
    # Every alert Falco sent is journaled or named as lost, once: those read and never taken, and
    # those still in the stream, read at stop to be named.
    assert journaled == ids[:10]
    assert sorted(lost) == sorted(ids[10:])
    assert len(lost) == len(set(lost)) == sent - 10
    assert (grpc_input.state.lost, metric(metrics, "serving_guard_alerts_lost_total")) == (
        sent - 10,
        sent - 10,
    )
    assert grpc_input.state.received == sent and unix.server.pending() == 0
    assert grpc_input.state.stops_left_unread == 0  # the stop read the stream to its end
    # Nothing was submitted again while stopping (what the stream still held was offered once, as
    # read, and not taken), and the stop stayed bounded.
    if sink_state == "blocked":
        assert calls_at_stop == 10 + IN_FLIGHT and len(sink.calls) == len(set(sink.calls))
    assert all(sink.calls.count(alert_id) == 1 for alert_id in ids[10 + IN_FLIGHT :])
    assert stopped_in < STOP_GRACE_SECONDS + JOURNAL_CHECK_SECONDS + 2.5
    assert not [r for r in caplog.records if r.exc_info]


async def test_what_the_stream_holds_at_stop_is_journaled_when_the_pipeline_frees_up(
    unix: Falco, logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    """Reading at stop makes room for Falco to send more: while the journal takes writes, what is
    read then is submitted, not named lost. Here the pipeline was full until the stop began."""
    sent = IN_FLIGHT + 40
    published = [make_response(f"Alert {n}") for n in range(sent)]
    ids = [alert_from_response(response).alert_id for response in published]
    sink = Sink(take=10, full=False)
    grpc_input = GrpcAlertInput(unix.config, sink, logger, metrics=Metrics())
    unix.server.publish_many(published)

    async def free_up_at_stop() -> None:
        while not grpc_input._stopping:
            await asyncio.sleep(0.005)
        sink.free_up()  # alerts read after this are taken too (the stop may still be reading)

    with caplog.at_level(logging.INFO, logger=logger.name):
        async with running(grpc_input):
            await eventually(lambda: grpc_input.state.received == 10 + IN_FLIGHT, "every place taken")
            await let_requests_land(unix.server)
            freeing = asyncio.create_task(free_up_at_stop())
        await freeing
    assert sorted(alert.alert_id for alert, _ in sink.alerts) == sorted(ids)
    assert lost_ids(caplog) == [] and grpc_input.state.lost == 0
    assert grpc_input.state.submitted == sent and unix.server.pending() == 0


# -- a slow commit at stop: the journal is asked, not guessed ---------------------------------------


class PipelineLike:
    """What ``Pipeline.submit`` does with the journal: wait for one of ``places`` (Slots, as the
    pipeline's), hand the write to the journal (``schedule_call``), then wait for the commit. A
    cancelled wait takes a handed-over write back no more than it does in the pipeline."""

    def __init__(self, journal: Journal, places: int) -> None:
        self.journal = journal
        self.places = Slots(places)
        self.calls: list[str] = []
        self.handed_over: list[str] = []
        self.rejects: list[tuple[InputName, str, str]] = []

    async def submit(
        self, alert: Alert, source: InputName, *, wait_seconds: float | None = None, raw: bytes | None = None
    ) -> Accepted:
        self.calls.append(alert.alert_id)
        if not self.places.try_take():
            await self.places.take()
        answer: asyncio.Future[Accepted] = asyncio.get_running_loop().create_future()

        def written(new: bool | None, error: BaseException | None) -> None:
            self.places.release()
            if answer.done():
                return
            if error is not None:
                answer.set_exception(error)
            else:
                answer.set_result(Accepted(alert.alert_id, bool(new)))

        self.journal.schedule_call(Journal.op_append_alert(alert, source.value, time.time_ns(), raw), written)
        self.handed_over.append(alert.alert_id)
        return await answer

    def reject(self, source: InputName, reason: str, detail: str) -> None:
        self.rejects.append((source, reason, detail))


class AskedJournal:
    """The journal, as the input sees it; says when the input asks it which alerts it holds."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.asked = asyncio.Event()

    async def run(self, op: Callable[[sqlite3.Connection], T]) -> T:
        self.asked.set()
        return await self.journal.run(op)


def journaled_ids(journal: Journal) -> list[str]:
    with contextlib.closing(sqlite3.connect(journal.path)) as reader:
        return [row[0] for row in reader.execute("SELECT alert_id FROM alerts ORDER BY seq")]


@pytest.fixture
def slow_disk(tmp_path: Path) -> Iterator[tuple[Journal, GatedFsync]]:
    fsync = GatedFsync()
    journal = Journal(str(tmp_path / "journal.db"), max_bytes=64 << 20, retention_seconds=3600, fsync=fsync)
    journal.open()
    try:
        yield journal, fsync
    finally:
        fsync.gate.set()
        journal.close()


async def test_an_alert_handed_to_a_slow_journal_at_stop_is_not_named_lost(
    unix: Falco,
    logger: logging.Logger,
    caplog: pytest.LogCaptureFixture,
    slow_disk: tuple[Journal, GatedFsync],
) -> None:
    """One alert's write is handed over and its commit is slower than the stop's grace (the disk
    holds the fsync); the next waits for the pipeline's one place and is never handed over. The
    first is journaled and must not be named; the second is lost and must be."""
    journal, fsync = slow_disk
    sink = PipelineLike(journal, places=1)
    asked = AskedJournal(journal)
    metrics = Metrics()
    grpc_input = GrpcAlertInput(unix.config, sink, logger, metrics=metrics, journal=asked)
    slow, waiting = make_response("Slow commit"), make_response("Waits for a place")
    slow_id, waiting_id = (alert_from_response(response).alert_id for response in (slow, waiting))
    fsync.gate.clear()
    unix.server.publish_many([slow, waiting])
    stop = asyncio.Event()
    task = asyncio.create_task(grpc_input.run(stop))
    with caplog.at_level(logging.INFO, logger=logger.name):
        try:
            await eventually(lambda: sink.calls == [slow_id, waiting_id], "both submitted")
            assert sink.handed_over == [slow_id]
            assert await asyncio.to_thread(fsync.entered.wait, 10)  # its commit waits for the disk
            stop.set()
            # The grace passes with the commit still unconfirmed; only once the input asks the
            # journal does the disk catch up (the write lands after the submit was cut short).
            await asyncio.wait_for(asked.asked.wait(), STOP_GRACE_SECONDS + 5)
            assert not task.done()
            fsync.gate.set()
            await asyncio.wait_for(task, 5)
        finally:
            fsync.gate.set()
            stop.set()
            if not task.done():
                await asyncio.wait_for(task, 5)
    assert journaled_ids(journal) == [slow_id]
    assert lost_ids(caplog) == [waiting_id]
    (named,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "the journal does not hold" in named.getMessage()  # asked and answered: not a guess
    assert any("cut short by the stop are journaled" in r.getMessage() for r in caplog.records)
    assert (grpc_input.state.lost, grpc_input.state.submitted) == (1, 1)
    assert metric(metrics, "serving_guard_alerts_lost_total") == 1
    # Neither was submitted again while stopping.
    assert sink.calls == [slow_id, waiting_id]


async def test_a_journal_that_does_not_answer_at_stop_leaves_the_alerts_named_as_unconfirmed(
    unix: Falco,
    logger: logging.Logger,
    caplog: pytest.LogCaptureFixture,
    slow_disk: tuple[Journal, GatedFsync],
) -> None:
    """A disk that never catches up: the stop is still bounded, and the alert is named, said to be
    unconfirmed (its write may land later), rather than left unsaid."""
    journal, fsync = slow_disk
    sink = PipelineLike(journal, places=1)
    metrics = Metrics()
    grpc_input = GrpcAlertInput(unix.config, sink, logger, metrics=metrics, journal=journal)
    stuck = make_response("Stuck commit")
    stuck_id = alert_from_response(stuck).alert_id
    fsync.gate.clear()
    unix.server.publish(stuck)
    with caplog.at_level(logging.INFO, logger=logger.name):
        async with running(grpc_input):
            await eventually(lambda: sink.handed_over == [stuck_id], "the write handed over")
            assert await asyncio.to_thread(fsync.entered.wait, 10)
            stopping = time.monotonic()
        stopped_in = time.monotonic() - stopping
    assert stopped_in < STOP_GRACE_SECONDS + JOURNAL_CHECK_SECONDS + 1.5
    assert lost_ids(caplog) == [stuck_id]
    (named,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "did not confirm" in named.getMessage()
    assert "did not answer within" in named.__dict__["unconfirmed"]
    assert metric(metrics, "serving_guard_alerts_lost_total") == 1


# -- nothing held is retried while stopping ------------------------------------------------------------


class RefusedWhenLetGo(RecordingSink):
    """Submits wait for ``gate``; let go, the journal refuses them."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    async def submit(
        self, alert: Alert, source: InputName, *, wait_seconds: float | None = None, raw: bytes | None = None
    ) -> Accepted:
        self.calls.append(alert.alert_id)
        await self.gate.wait()
        raise sqlite3.OperationalError("disk I/O error")


async def test_alerts_the_journal_refuses_during_the_stop_are_named_not_submitted_again(
    unix: Falco, logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    sink = RefusedWhenLetGo()
    sink.gate.clear()
    grpc_input = GrpcAlertInput(unix.config, sink, logger)
    published = [make_response(f"Refused at stop {n}") for n in range(3)]
    ids = [alert_from_response(response).alert_id for response in published]
    unix.server.publish_many(published)
    stop = asyncio.Event()
    task = asyncio.create_task(grpc_input.run(stop))
    with caplog.at_level(logging.INFO, logger=logger.name):
        try:
            await eventually(lambda: len(sink.calls) == 3, "three submits under way")
            stop.set()
            await asyncio.sleep(STOP_GRACE_SECONDS / 4)
            sink.gate.set()  # refused within the stop's grace: kept, and not retried
            await asyncio.wait_for(task, 5)
        finally:
            stop.set()
            sink.gate.set()
            await asyncio.wait_for(task, 5)
    assert sink.calls == ids
    assert sorted(lost_ids(caplog)) == sorted(ids)
    assert grpc_input.state.lost == 3 and grpc_input.state.held == 0


# -- a large backlog at stop: what Falco wrote ahead and the stop did not read is bounded and said ---


def backlog_alert(number: int) -> outputs_pb2.response:
    """An alert of a typical size (~420 bytes on the wire): Falco's fields for a shell in a pod."""
    return make_response(
        f"Shell in serving pod {number:05d}",
        hostname="node-1",
        source="syscall",
        tags=["serving_guard", "T1059", "container"],
        output_fields={
            "container.id": "0123456789ab",
            "container.image.repository": "registry.example.com/ml/triton-inference-server",
            "k8s.ns.name": "ml-serving",
            "k8s.pod.name": "triton-inference-server-7d9f8b6c5-abcde",
            "proc.cmdline": "sh -c id; uname -a",
            "proc.name": "sh",
            "proc.pname": "python3",
            "user.name": "root",
        },
    )


async def test_a_stop_mid_stream_leaves_a_bounded_unread_rest_and_says_so(
    unix: Falco, logger: logging.Logger, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """The review's scenario: Falco streams a large backlog as fast as the responder takes it, and
    the responder stops mid-stream. The stop's read ends on its deadline while Falco still sends.
    Every alert Falco took from its queue is then journaled, or named lost (read, not journaled),
    or one of the few left unread in the stream: no more than its flow-control window holds, and
    the stop says so."""
    sent = 20_000
    published = [backlog_alert(n) for n in range(sent)]
    ids = {alert_from_response(response).alert_id for response in published}
    wire_size = 5 + len(published[0].SerializeToString())  # gRPC's length prefix + the message
    journal = Journal(str(tmp_path / "journal.db"), max_bytes=256 << 20, retention_seconds=3600)
    journal.open()
    metrics = Metrics()
    try:
        sink = PipelineLike(journal, places=IN_FLIGHT)
        grpc_input = GrpcAlertInput(unix.config, sink, logger, metrics=metrics, journal=journal)
        unix.server.publish_many(published)
        with caplog.at_level(logging.INFO, logger=logger.name):
            async with running(grpc_input):
                await eventually(lambda: grpc_input.state.submitted >= 3000, "the stream flowing")
            # Falco notices the cancelled stream: nothing more leaves its queue.
            await eventually(lambda: unix.server.open_streams == 0, "the stream closed on Falco's side")
        journaled = journaled_ids(journal)
    finally:
        journal.close()
    taken = unix.server.delivered  # taken from Falco's queue: written into the stream
    assert unix.server.pending() > 0 and taken + unix.server.pending() == sent  # stopped mid-stream
    lost = lost_ids(caplog)
    assert len(journaled) == len(set(journaled)) and len(lost) == len(set(lost))
    assert set(journaled) <= ids and set(lost) <= ids and set(journaled).isdisjoint(lost)
    # What was read is journaled or named lost (the log names up to LOST_IDS_LOGGED of them, the
    # count is whole); the metric counts them. The stop reads no further ahead of the journal than
    # a run does: what it loses is at most the submits under way and IN_FLIGHT more.
    assert grpc_input.state.received == len(journaled) + grpc_input.state.lost
    assert metric(metrics, "serving_guard_alerts_lost_total") == grpc_input.state.lost
    assert len(lost) == min(grpc_input.state.lost, LOST_IDS_LOGGED)
    assert grpc_input.state.lost <= 2 * IN_FLIGHT
    # The rest of what Falco took is what the stream held, unread: bounded by flow control, and
    # said, with that bound, when the stop ended its read on the deadline with Falco still sending.
    unread = taken - len(journaled) - grpc_input.state.lost
    (said,) = [r for r in caplog.records if "were not read" in r.getMessage()]
    assert said.levelno == logging.ERROR and grpc_input.state.stops_left_unread == 1
    assert said.__dict__["unread_bytes_at_most"] == UNREAD_BYTES_AT_MOST
    at_most = said.__dict__["unread_alerts_at_most_about"]
    assert at_most == UNREAD_BYTES_AT_MOST // wire_size + 1  # every alert here is of one size
    assert 0 <= unread <= at_most, (taken, len(journaled), len(lost))


class StuckSink:
    """A pipeline whose journal never confirms a write (a disk that hangs): every submit waits."""

    def __init__(self) -> None:
        self.calls = 0

    async def submit(
        self, alert: Alert, source: InputName, *, wait_seconds: float | None = None, raw: bytes | None = None
    ) -> Accepted:
        self.calls += 1
        await asyncio.Event().wait()
        raise AssertionError("never confirmed")

    def reject(self, source: InputName, reason: str, detail: str) -> None:
        raise AssertionError(f"nothing here is refused: {reason} {detail}")


async def test_a_stop_does_not_take_from_falco_what_the_journal_cannot_take(
    unix: Falco, logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    """Falco's ``sub`` writes its whole queue into the stream as fast as it is read: an alert it
    never wrote stays in its queue for the next run, one the stop reads and cannot journal is lost.
    With the journal confirming nothing, the stop reads IN_FLIGHT more than the run had under way
    and leaves the rest of the backlog with Falco (it read thousands, all lost)."""
    sent = 20_000
    unix.server.publish_many([backlog_alert(n) for n in range(sent)])
    sink = StuckSink()
    grpc_input = GrpcAlertInput(unix.config, sink, logger, metrics=Metrics())
    with caplog.at_level(logging.INFO, logger=logger.name):
        async with running(grpc_input):
            await eventually(lambda: sink.calls >= IN_FLIGHT, "the run's submits under way")
        await eventually(lambda: unix.server.open_streams == 0, "the stream closed on Falco's side")
    state = grpc_input.state
    assert state.submitted == 0 and state.received == state.lost  # none confirmed: each named lost
    assert state.lost <= 2 * IN_FLIGHT, state
    # What Falco took from its queue beyond those is only what the stream held unread.
    assert unix.server.delivered - state.received <= sent // 10
    assert unix.server.pending() >= sent - state.received - sent // 10
