"""The journal: an embedded SQLite (WAL) record of every accepted alert, decision, action and
notification. It is the source of truth: an input answers only after the alert is here, and
recovery after a crash is "resume every alert that has no final outcome".

This module is the journal's interface: the writes (``op_*``, values that the writer runs inside
its transaction), who waits for them (threads, coroutines, callbacks on the event loop) and the
reads. One writer owns the write connection and commits in groups (responder/journal/writer.py),
in a child process by default (responder/journal/process.py) or on a thread of this one. Readers
(audit, recovery) use their own connections; WAL lets them run beside the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import stat
import threading
import time
import zlib
from collections.abc import Callable, Collection, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from responder.actions.outcome import (
    BLOCK_DESTINATION,
    RECHECK,
    RESPONDER_ACTOR,
    THREAD_KEPT_OUT,
    ActionOutcome,
    OutcomeStatus,
)
from responder.actions.pod_records import RELEASED_AT
from responder.alert import Alert, AlertError
from responder.errors import UserError
from responder.isolated_pods import IsolationRecord
from responder.journal.ops import (
    ROW_BYTES,
    THROTTLED_DUE_AFTER,
    UNTHROTTLED_DUE_AFTER,
    BumpIncident,
    DueAgain,
    FinishAlert,
    FoldDuplicate,
    ForgetThread,
    NotificationState,
    OpenIncident,
    PostsGivenUp,
    Prune,
    Pruned,
    PruneToSize,
    RecordAction,
    RecordActionByHand,
    RecordDecision,
    RecordTold,
    RecountIncident,
    ResetActions,
    ScheduleNotification,
    Undefer,
    used_bytes,
)
from responder.journal.posts import posts_due
from responder.journal.process import ProcessWriter
from responder.journal.rows import AlertRow, decode_journaled
from responder.journal.schema import (
    JournalDamaged,
    connect,
    is_damage,
    unreadable_journal,
)
from responder.journal.walsync import WriterFailed
from responder.journal.writer import Op, ThreadWriter, WriterOptions

if TYPE_CHECKING:
    from responder.incident import IncidentReport, WorkloadGroup

log = logging.getLogger("serving_guard.journal")

T = TypeVar("T")


class LoopCallback:
    """A waiter that is a function called on its event loop with ``(value, error)`` once its op is
    committed: no future and no extra turn of the loop per op, for the ingest hot path."""

    __slots__ = ("_loop", "function")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, function: Callable[[Any, BaseException | None], None]
    ):
        self._loop = loop
        self.function = function

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop


# Who waits for an op: a thread (``submit``/``run_sync``), a coroutine on some event loop (``run``),
# or a callback on some event loop (``schedule_call``).
Waiter = Future[Any] | asyncio.Future[Any] | LoopCallback

FINAL_ALERT_OUTCOMES = ("opened", "duplicate", "rejected")


def journal_path_problem(path: str, *, parent_must_exist: bool = True) -> str | None:
    """What makes ``path`` no place for a journal, in words, or None. SQLite and the lock's open()
    say it in their own terms, naming neither cause nor place ("disk I/O error", "unable to open
    database file", "No such file or directory" of the lock): a directory given for the file, and
    (``parent_must_exist``; the writer makes a missing one otherwise) a parent directory that does
    not exist or is no directory. Problems this does not find (permissions) are said where the
    file is opened."""
    if os.path.isdir(path):
        return f"is a directory: give the journal's file (e.g. {os.path.join(path, 'journal.db')})"
    if not parent_must_exist:
        return None
    parent = os.path.dirname(os.path.abspath(path))
    try:
        is_directory = stat.S_ISDIR(os.stat(parent).st_mode)
    except FileNotFoundError:
        return f"parent directory {parent} does not exist"
    except NotADirectoryError:
        return f"parent directory {parent} does not exist (a file stands on its path)"
    except OSError:  # permission denied on the way: said by the open itself
        return None
    return None if is_directory else f"its parent {parent} is not a directory"


def check_journal_path(path: str, *, parent_must_exist: bool = True) -> None:
    """UserError naming the journal and :func:`journal_path_problem`, if there is one."""
    problem = journal_path_problem(path, parent_must_exist=parent_must_exist)
    if problem is not None:
        raise UserError(f"journal {path}: {problem}")


# Incidents with ``seen``, how many alerts each has seen: the larger of its counter (which counts
# every repeat) and its journaled alerts that are not repeats (found through alerts_incident_kept).
# Callers add their WHERE on ``i``.
INCIDENTS_WITH_SEEN_SQL = (
    "SELECT i.*, MAX(i.count, (SELECT COUNT(*) FROM alerts a"
    " WHERE a.incident_id = i.incident_id AND a.outcome IS NOT 'duplicate')) AS seen FROM incidents i"
)


def room_check_step(max_bytes: int) -> int:
    """Bytes of alerts journaled between two checks of the size bound: 1/64 of it, at least
    64 KiB (two stat calls), at most 16 MiB. A burst overshoots the bound by about that much."""
    return min(max(max_bytes // 64, 64 * 1024), 16 * 1024 * 1024)


# What reading back a damaged (or foreign) JSON record raises: json.loads, and the from_json
# functions of responder/records.py and ActionOutcome given a value of the wrong shape.
UNREADABLE_RECORD = (ValueError, KeyError, TypeError, AttributeError)


class JournalFull(Exception):
    """The journal is at its size bound with nothing old enough to prune."""


# Incident ids to a statement when asking for incidents by id (within the 999 bound variables of
# the oldest SQLite builds).
_IDS_PER_STATEMENT = 500


@dataclass(frozen=True, slots=True)
class PendingAlert:
    alert: Alert
    input: str
    received_ns: int
    # The alert's row: rows journaled after it have a larger one.
    seq: int


@dataclass(frozen=True, slots=True)
class JournaledRepeats:
    """The repeats journaled for an incident (final, outcome 'duplicate')."""

    count: int
    last_received_ns: int


@dataclass(frozen=True, slots=True)
class IncidentRow:
    incident_id: str
    key_digest: str
    rule: str
    namespace: str
    pod: str
    container_id: str
    hostname: str
    first_alert_id: str
    opened_ns: int
    last_seen_ns: int
    count: int
    decided: bool
    # The first alert's event time: with its id, how its row is found. None: that row is gone.
    first_event_ns: int | None


@dataclass(frozen=True, slots=True)
class NotificationRow:
    id: int
    incident_id: str
    kind: str
    channel: str | None
    state: str
    attempts: int
    next_attempt_ns: int
    created_ns: int
    slack_channel: str | None
    slack_ts: str | None
    # Set when the post went into a workload's thread (that thread's root ts): then it is a reply.
    slack_thread_ts: str | None = None
    # A 'by_hand' notification's action (actions.id): what a person did about the incident; a
    # 'lapse' notification's: the recheck's record of what no longer holds; a 'retry' one's: what
    # a withheld isolation did when tried again.
    action_id: int | None = None


@dataclass(frozen=True, slots=True)
class ActionByHand:
    """An action a person took, as journaled: what a ``by_hand`` notification tells."""

    actor: str
    namespace: str
    pod: str
    outcome: ActionOutcome


@dataclass(frozen=True, slots=True)
class ActionTold:
    """An action the responder took after its decision, as journaled: the recheck's record of a
    lapse (what a ``lapse`` notification tells), or what a retry did (a ``retry`` notification)."""

    namespace: str
    pod: str
    outcome: ActionOutcome


WRITERS = ("process", "thread")
# The longest dedupe window responder/config.py allows.
MAX_DEDUPE_WINDOW_SECONDS = 86400.0
# Posts waiting for Slack (an outage, a refused token) keep their incidents and opening alerts from
# pruning. Past this share of the bound held by those incidents, when pruning to size cannot get
# under it otherwise, the oldest posts give way (ops.give_way): alerts win over old posts
# (a full journal refuses every alert, and Falco does not send one again), and a short outage,
# which holds less, loses none.
WAITING_POSTS_SHARE = 0.5


class Journal:
    def __init__(
        self,
        path: str,
        *,
        max_bytes: int,
        retention_seconds: float,
        commit_interval_seconds: float = 0.002,
        synchronous: str = "FULL",
        recent_ids: int = 10_000,
        fsync: Callable[[int], None] | None = None,
        writer: str = "thread",
    ) -> None:
        self.path = path
        self._options = WriterOptions(path, commit_interval_seconds, synchronous, recent_ids)
        if writer not in WRITERS:
            raise ValueError(f"writer must be process or thread, got {writer!r}")
        if writer == "process" and fsync is not None:
            raise ValueError("an fsync function can only be given to the thread writer")
        self._writer_kind = writer
        self._fsync = fsync  # None: os.fsync
        self._max_bytes = max_bytes
        self._retention_ns = int(retention_seconds * 1e9)
        # Ops scheduled by the event loop since its last hand-over (see ``schedule``).
        self._scheduled: list[tuple[Op, Waiter]] = []
        self._scheduling_loop: asyncio.AbstractEventLoop | None = None
        self._writer: ThreadWriter[Waiter] | ProcessWriter | None = None
        self._read_local = threading.local()
        # Set, for good, when a read met a damaged page (is_damage): reported as ``failure``.
        self._damaged: JournalDamaged | None = None
        # Reads at start (start_failures_as_user_error): one that meets damage is said by the UserError.
        self._reads_said_by_start = False
        self._full = False
        # The live records' bytes as last measured (check_size, _measure_room): read by the metrics
        # at no cost, and fresh after each prune to size.
        self._used_bytes = 0
        # The size bound, checked as alert rows are handed to the writer (``account_alert``), not
        # only by the maintenance pass: a burst of large alerts once overshot it 760 times between
        # two passes. Past ``_prune_above``, the oldest finished alerts are pruned down to
        # ``_prune_to``: so the inputs are refused only when pending alerts fill the journal.
        self._check_step = room_check_step(max_bytes)
        self._prune_above = max_bytes - self._check_step
        self._prune_to = max_bytes - 2 * self._check_step
        self._unchecked_bytes = 0
        self._pruning = False
        self._waiting_posts_bytes = int(max_bytes * WAITING_POSTS_SHARE)
        # Told of the posts pruning gave up (the notifier counts them).
        self._given_up_listeners: list[Callable[[PostsGivenUp], None]] = []
        # Until the pipeline says (keep_incidents_open_for), the longest dedupe window the config
        # allows: kept too long rather than pruned while open.
        self._open_incident_ns = int(MAX_DEDUPE_WINDOW_SECONDS * 1e9)

    # -- lifecycle ----------------------------------------------------------------------------

    def open(self, lock_fd: int | None = None) -> None:
        """Open the journal (creating or upgrading it) and start its writer. UserError names the
        journal and what is wrong with it. ``lock_fd``: the journal's lock (JournalLock.fileno),
        which a writer process holds on until it exits."""
        # A missing parent directory the writer makes (one that cannot be made it says so).
        check_journal_path(self.path, parent_must_exist=False)
        writer: ThreadWriter[Waiter] | ProcessWriter
        if self._writer_kind == "process":
            writer = ProcessWriter(self._options, self._settle, lock_fd)
        else:
            writer = ThreadWriter(self._options, self._settle, self._fsync)
        writer.start()
        self._writer = writer

    def close(self) -> None:
        if self._writer is not None:
            self._hand_over()
            self._writer.stop()
            self._writer = None

    def __enter__(self) -> Journal:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def failure(self) -> str | None:
        """Why no write can succeed until the responder restarts (its writer is gone), or None.
        The responder's liveness check reports it, so that Kubernetes restarts it."""
        if self._damaged is not None:
            return self._damaged.refusal
        return self._writer.failure if self._writer is not None else None

    @property
    def commits(self) -> int:
        """Transactions the writer has committed (each holds a group of ops)."""
        return self._writer.commits if self._writer is not None else 0

    @property
    def ops_committed(self) -> int:
        return self._writer.ops_committed if self._writer is not None else 0

    # -- writes ----------------------------------------------------------------------------------

    @staticmethod
    def _settle(results: list[tuple[Waiter, Any, BaseException | None]]) -> None:
        """Hand each result to its waiter. Coroutines waiting in ``run`` are woken with one
        ``call_soon_threadsafe`` per event loop and group, not one per op: each wake-up is a
        write to the loop's self-pipe and a GIL hand-over, which dominated the journal's cost."""
        by_loop: dict[
            asyncio.AbstractEventLoop,
            list[tuple[asyncio.Future[Any] | LoopCallback, Any, BaseException | None]],
        ]
        by_loop = {}
        for waiter, value, error in results:
            if isinstance(waiter, Future):
                if waiter.done():  # cancelled by its caller: nobody is waiting for the result
                    continue
                if error is not None:
                    waiter.set_exception(error)
                else:
                    waiter.set_result(value)
            else:
                by_loop.setdefault(waiter.get_loop(), []).append((waiter, value, error))
        for loop, settled in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody is waiting
                loop.call_soon_threadsafe(_resolve_all, settled)

    def submit(self, op: Op) -> Future[Any]:
        if self._writer is None:
            raise RuntimeError("journal is not open")
        future: Future[Any] = Future()
        if self._scheduled and _running_loop() is self._scheduling_loop:
            # Called on the loop with ops of this turn still to hand over: keep the loop's order.
            self._scheduled.append((op, future))
        else:
            self._writer.put([(op, future)])
        return future

    def schedule(self, op: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Queue an op from the running event loop; the future is settled on that loop once the op
        is committed. Cheaper than a task per write: the pipeline folds duplicates with a callback."""
        loop = self._scheduling()
        future: asyncio.Future[T] = loop.create_future()
        self._scheduled.append((op, future))
        return future

    def schedule_call(
        self,
        op: Callable[[sqlite3.Connection], T],
        callback: Callable[[T | None, BaseException | None], None],
    ) -> None:
        """Like :meth:`schedule`, but ``callback(value, error)`` is called on the running loop once
        the op is committed (value) or has failed (error), instead of settling a future."""
        loop = self._scheduling()
        self._scheduled.append((op, LoopCallback(loop, callback)))

    def _scheduling(self) -> asyncio.AbstractEventLoop:
        """The running loop, with a hand-over to the writer arranged for this turn."""
        if self._writer is None:
            raise RuntimeError("journal is not open")
        loop = asyncio.get_running_loop()
        # Ops scheduled in one turn of the loop go to the writer together: one hand-over (a queue
        # put, or a frame to the writer process) and one wake-up of the writer per turn, not per op.
        if not self._scheduled:
            self._scheduling_loop = loop
            loop.call_soon(self._hand_over)
        return loop

    def _hand_over(self) -> None:
        scheduled, self._scheduled = self._scheduled, []
        if scheduled and self._writer is not None:
            self._writer.put(scheduled)

    async def run(self, op: Callable[[sqlite3.Connection], T]) -> T:
        return await self.schedule(op)

    def run_sync(self, op: Callable[[sqlite3.Connection], T]) -> T:
        return self.submit(op).result()  # type: ignore[no-any-return]

    # -- reads ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def reader(self) -> Iterator[sqlite3.Connection]:
        conn = getattr(self._read_local, "conn", None)
        if conn is None:
            conn = connect(self.path)
            self._read_local.conn = conn
        try:
            yield conn
        except sqlite3.DatabaseError as exc:
            if is_damage(exc) and not self._reads_said_by_start:
                self._read_damaged(exc)
            raise

    def _read_damaged(self, exc: sqlite3.DatabaseError) -> None:
        """A read met a damaged page: logged once, with how to recover the file, and reported as
        ``failure`` (so that /healthz fails) rather than left to fail reads one by one."""
        if self._damaged is not None:
            return
        self._damaged = JournalDamaged.found(self.path, exc)
        log.critical("journal: damaged; the responder must be restarted", extra={"error": str(self._damaged)})

    @contextlib.contextmanager
    def start_failures_as_user_error(self) -> Iterator[None]:
        """Around the start's work on the journal (recovery reads every open incident and pending
        alert, the first prune writes): a journal SQLite cannot read (a damaged page), or a write
        fatal to the writer (a damaged page, a failed fsync), is said as a UserError naming it, not a
        traceback."""
        self._reads_said_by_start = True
        try:
            yield
        except sqlite3.DatabaseError as exc:
            raise unreadable_journal(self.path, exc, "cannot be read") from None
        except WriterFailed as exc:
            raise UserError(str(exc)) from None
        finally:
            self._reads_said_by_start = False

    # -- operations (each runs inside the writer's transaction) --------------------------------

    @property
    def full(self) -> bool:
        return self._full

    def check_size(self) -> int:
        """Remember whether the live records exceed the bound (then inputs get 503); returns the
        size on disk. Pages freed by pruning are reused, so the file need not shrink for this to clear.

        Called on the event loop (the maintenance pass, after op_prune), a journal still near its
        bound is pruned to size as writes do, and measured once that is done: incidents, actions
        and posts are not counted as they are written, and only that prune lets posts waiting for
        Slack give way (a journal held full by them would refuse every alert, and with it every
        write that would prune it). What the prune removes refuses no alert meanwhile."""
        with self.reader() as conn:
            used = self._used_bytes = used_bytes(conn)
        pruning = used > self._prune_above and _running_loop() is not None and self._prune_to_size()
        if not pruning:  # else measured once pruned (_pruned)
            self._full = used > self._max_bytes
        return self.size_bytes()

    async def measured(self) -> None:
        """Wait until a prune to size under way has reported and the bound is measured again (at
        start: inputs open on a journal known full or not, not on one a prune is still judging)."""
        while self._pruning:
            await asyncio.sleep(0.01)

    def on_posts_given_up(self, listener: Callable[[PostsGivenUp], None]) -> None:
        """Call ``listener`` on the event loop with the posts each prune to size gives up."""
        self._given_up_listeners.append(listener)

    def account_alert(self, payload_bytes: int) -> None:
        """Count an alert row handed to the writer; every ``room_check_step`` bytes, check the
        size bound. The event loop's hot path: an addition per alert, two stat calls per step."""
        self._unchecked_bytes += payload_bytes + ROW_BYTES
        if self._unchecked_bytes >= self._check_step:
            self._check_room()

    def _check_room(self) -> None:
        """The live records are at most the files' size: only when that is near the bound are
        they counted (three PRAGMAs), and then the oldest finished alerts pruned if they are."""
        self._unchecked_bytes = 0
        if self.size_bytes() <= self._prune_above:
            self._full = False
            return
        used = self._measure_room()
        if used > self._prune_above:
            self._prune_to_size()

    @property
    def measured_used_bytes(self) -> int:
        """The live records' bytes, what ``max_bytes`` bounds, as last measured (no query)."""
        return self._used_bytes

    def _measure_room(self) -> int:
        with self.reader() as conn:
            used = self._used_bytes = used_bytes(conn)
        self._full = used > self._max_bytes
        return used

    def _prune_to_size(self) -> bool:
        """Prune now, on the writer (one prune at a time); the bound is measured again after it.
        Whether a prune is on its way (False: the journal is closed)."""
        if self._writer is None:
            return False
        if not self._pruning:
            self._pruning = True
            prune = PruneToSize(
                self._prune_to, self._open_since_ns(time.time_ns()), self._waiting_posts_bytes
            )
            self.schedule_call(prune, self._pruned)
        return True

    def _pruned(self, pruned: Pruned | None, error: BaseException | None) -> None:
        self._pruning = False
        if error is not None:
            log.error(
                "journal: pruning to its size bound failed",
                extra={"error": f"{type(error).__name__}: {error}"},
            )
        self._measure_room()
        if pruned is not None:
            log.debug("journal: pruned to its size bound", extra={"batch": pruned.alerts})
            if pruned.given_up is not None:
                self._report_given_up(pruned.given_up)

    def _report_given_up(self, given_up: PostsGivenUp) -> None:
        """Say loudly that posts were given up, how many and since when the oldest waited, and
        tell the listeners (the notifier's metric)."""
        log.error(
            "journal at its size bound, held by Slack posts still waiting: the oldest are given up"
            " (on-call is not told of their incidents) so that alerts are still taken",
            extra={
                "posts": given_up.posts,
                "incidents": given_up.incidents,
                "kinds": dict(given_up.by_kind),
                "waiting_since": time.strftime(
                    "%Y-%m-%dT%H:%M:%SZ", time.gmtime(given_up.waiting_since_ns / 1e9)
                ),
            },
        )
        for listener in self._given_up_listeners:
            listener(given_up)

    def size_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                total += os.path.getsize(self.path + suffix)
        return total

    @staticmethod
    def op_append_alert(
        alert: Alert, input_name: str, received_ns: int, raw: bytes | None = None
    ) -> AlertRow:
        return AlertRow(alert, input_name, received_ns, raw)

    @staticmethod
    def op_append_deferred(
        alert: Alert, input_name: str, received_ns: int, raw: bytes | None = None
    ) -> AlertRow:
        """An alert taken while the pipeline had no room: journaled "deferred", and processed when
        it has (Pipeline.run_deferred; after a restart too), so that a sender that does not retry
        (Falco, Falcosidekick) loses nothing to a busy responder."""
        return AlertRow(alert, input_name, received_ns, raw, deferred=True)

    @staticmethod
    def op_undefer(seq: int) -> Undefer:
        """A deferred alert taken up: pending from now on, as if it had just come (a crash while it is
        processed resumes it as any pending alert)."""
        return Undefer(seq)

    @staticmethod
    def op_append_duplicate(
        alert: Alert,
        input_name: str,
        received_ns: int,
        raw: bytes | None,
        incident_id: str,
        count: int,
    ) -> AlertRow:
        """A repeat of an incident whose opening alert is already journaled: stored directly at its
        final outcome, with the incident's counter, in one write (most of a storm takes this path)."""
        return AlertRow(alert, input_name, received_ns, raw, incident_id, count)

    @staticmethod
    def op_finish_alert(alert: Alert, incident_id: str | None, outcome: str, finished_ns: int) -> FinishAlert:
        return FinishAlert(alert.time_ns, alert.alert_id, incident_id, outcome, finished_ns)

    @staticmethod
    def op_open_incident(row: IncidentRow) -> OpenIncident:
        return OpenIncident(
            (
                row.incident_id,
                row.key_digest,
                row.rule,
                row.namespace,
                row.pod,
                row.container_id,
                row.hostname,
                row.first_alert_id,
                row.first_event_ns,
                row.opened_ns,
                row.last_seen_ns,
                row.count,
            )
        )

    @staticmethod
    def op_bump_incident(incident_id: str, count: int, last_seen_ns: int) -> BumpIncident:
        return BumpIncident(incident_id, count, last_seen_ns)

    @staticmethod
    def op_recount_incident(incident_id: str, count: int) -> RecountIncident:
        return RecountIncident(incident_id, count)

    @staticmethod
    def op_fold_duplicate(
        alert: Alert, incident_id: str, count: int, last_seen_ns: int, finished_ns: int
    ) -> FoldDuplicate:
        """A repeat folded into its incident: bump the incident and finish the alert in one write."""
        return FoldDuplicate(
            BumpIncident(incident_id, count, last_seen_ns),
            FinishAlert(alert.time_ns, alert.alert_id, incident_id, "duplicate", finished_ns),
        )

    @staticmethod
    def op_record_decision(
        incident_id: str,
        decided_ns: int,
        verification: dict[str, Any],
        decision: dict[str, Any],
        pod_context: dict[str, Any] | None,
        *,
        again: bool = False,
    ) -> RecordDecision:
        """``again``: a decision made again, which keeps the incident's first decision time."""
        return RecordDecision(
            incident_id,
            decided_ns,
            json.dumps(verification),
            json.dumps(decision),
            json.dumps(pod_context) if pod_context is not None else None,
            again,
        )

    @staticmethod
    def op_record_action(
        incident_id: str | None,
        alert_id: str | None,
        namespace: str | None,
        pod: str | None,
        outcome: ActionOutcome,
        actor: str = RESPONDER_ACTOR,
    ) -> RecordAction:
        return RecordAction(
            (
                incident_id,
                alert_id,
                namespace,
                pod,
                outcome.action,
                outcome.status.value,
                outcome.detail,
                json.dumps(outcome.to_json()),
                outcome.started_ns,
                outcome.finished_ns,
                actor,
            )
        )

    @staticmethod
    def op_record_action_by_hand(
        incident_id: str | None,
        namespace: str,
        pod: str,
        outcome: ActionOutcome,
        actor: str,
        now_ns: int,
    ) -> RecordActionByHand:
        """Record what a person did (``actor``) and, under an incident posted to Slack, queue its
        ``by_hand`` notification in the same transaction: the two are never apart."""
        action = Journal.op_record_action(incident_id, None, namespace, pod, outcome, actor=actor)
        released_at = outcome.extra.get(RELEASED_AT) if outcome.status is OutcomeStatus.RELEASED else None
        return RecordActionByHand(action, incident_id, now_ns, str(released_at) if released_at else None)

    @staticmethod
    def op_record_lapse(
        incident_id: str, namespace: str, pod: str, outcome: ActionOutcome, now_ns: int, *, tell: bool
    ) -> RecordTold:
        """Record what the recheck found no longer holding (``outcome``: RECHECK, LAPSED) under the
        incident and, with ``tell`` and an incident posted to Slack, queue its ``lapse``
        notification in the same transaction."""
        action = Journal.op_record_action(incident_id, None, namespace, pod, outcome)
        return RecordTold(action, incident_id, now_ns, tell, "lapse")

    @staticmethod
    def op_record_retry(
        incident_id: str,
        alert_id: str,
        namespace: str,
        pod: str,
        outcome: ActionOutcome,
        now_ns: int,
        *,
        tell: bool,
    ) -> RecordTold:
        """Record an action the incident's withheld isolation took when tried again (``outcome``)
        under the incident and, with ``tell`` and an incident posted to Slack, queue its ``retry``
        notification in the same transaction."""
        action = Journal.op_record_action(incident_id, alert_id, namespace, pod, outcome)
        return RecordTold(action, incident_id, now_ns, tell, "retry")

    @staticmethod
    def op_record_release_found(
        incident_id: str,
        namespace: str,
        pod: str,
        outcome: ActionOutcome,
        actor: str,
        now_ns: int,
        *,
        tell: bool,
        released_at: str,
    ) -> RecordActionByHand:
        """Record a release the responder found on the incident's pod (``outcome``: release,
        RELEASED, by ``actor``, as the pod's ``released_at`` record says) and, with ``tell``, queue
        its ``by_hand`` notification, in one transaction; neither when the journal holds it already."""
        action = Journal.op_record_action(incident_id, None, namespace, pod, outcome, actor=actor)
        return RecordActionByHand(action, incident_id, now_ns, released_at, found=True, tell=tell)

    @staticmethod
    def op_schedule_notification(
        incident_id: str,
        kind: str,
        channel: str | None,
        due_ns: int,
        now_ns: int,
        *,
        decided_only: bool = False,
    ) -> ScheduleNotification:
        """Queue a notification; a repeat is coalesced with one already waiting for the incident.
        ``decided_only``: an incident's post only if the journal holds its decision."""
        return ScheduleNotification(incident_id, kind, channel, due_ns, now_ns, decided_only)

    @staticmethod
    def op_notification_state(
        notification_id: int,
        state: str,
        *,
        attempts: int | None = None,
        next_attempt_ns: int | None = None,
        error: str | None = None,
        slack_channel: str | None = None,
        slack_ts: str | None = None,
        slack_thread_ts: str | None = None,
        sent_ns: int | None = None,
        count_sent: int | None = None,
    ) -> NotificationState:
        return NotificationState(
            (
                state,
                attempts,
                next_attempt_ns,
                error,
                slack_channel,
                slack_ts,
                slack_thread_ts,
                sent_ns,
                count_sent,
                notification_id,
            )
        )

    @staticmethod
    def op_forget_thread(
        notification_id: int, due_ns: int, error: str | None = None, state: str = "pending"
    ) -> ForgetThread:
        """Drop a notification's chosen thread and channel (the thread was deleted, or the channel
        refused the bot, ``error``): it is sent afresh at ``due_ns``, in ``state`` ('sending' when
        an earlier try may have landed)."""
        return ForgetThread(notification_id, due_ns, error, state)

    @staticmethod
    def op_due_again(now_ns: int, longest_ns: int, throttled_longest_ns: int) -> DueAgain:
        """The waiting notifications notifications_set_beyond finds: due at ``now_ns``."""
        return DueAgain(now_ns, longest_ns, throttled_longest_ns)

    @staticmethod
    def op_reset_actions(incident_id: str) -> ResetActions:
        """Forget the actions of an interrupted run: the resumed run redoes them (idempotently)
        and its records are the incident's one final set."""
        return ResetActions(incident_id)

    def op_prune(self, now_ns: int) -> Prune:
        """Retention: drop finished records older than the retention period; if still over the size
        bound, prune to it (ops.prune_to_size: never pending alerts, nor open incidents)."""
        cutoff_ns = now_ns - self._retention_ns
        return Prune(cutoff_ns, self._max_bytes, self._prune_to, self._open_since_ns(now_ns))

    def keep_incidents_open_for(self, seconds: float) -> None:
        """Incidents last seen within ``seconds`` are open (the pipeline's dedupe window: what its
        recovery restores); pruning to the size bound keeps them and their opening alerts."""
        self._open_incident_ns = int(seconds * 1e9)

    def _open_since_ns(self, now_ns: int) -> int:
        return now_ns - self._open_incident_ns

    # -- recovery and queries -----------------------------------------------------------------

    def pending_alerts(self) -> list[PendingAlert]:
        with self.reader() as conn:
            rows = conn.execute(
                "SELECT seq, alert_id, input, received_ns, payload, sender FROM alerts"
                " WHERE state = 'pending' ORDER BY seq"
            ).fetchall()
        return [pending for row in rows if (pending := _pending_alert(row)) is not None]

    def deferred_rows(self, after_seq: int, limit: int) -> list[tuple[int, int, str]]:
        """The oldest ``limit`` deferred alerts journaled after row ``after_seq`` (op_append_deferred),
        as (row, bytes of its body, its sender's record or ""): each is read whole only once it
        holds a slot (deferred_alert)."""
        with self.reader() as conn:
            return [
                (int(seq), int(size), str(sender or ""))
                for seq, size, sender in conn.execute(
                    "SELECT seq, length(payload), sender FROM alerts INDEXED BY alerts_deferred"
                    " WHERE state = 'deferred' AND seq > ? ORDER BY seq LIMIT ?",
                    (after_seq, limit),
                )
            ]

    def deferred_bytes_by_sender(self) -> dict[str, int]:
        """The bytes of the deferred alerts, by sender record ("" for none), as the size accounting
        counts a row (account_alert: its body and ROW_BYTES)."""
        with self.reader() as conn:
            return {
                str(sender or ""): int(size)
                for sender, size in conn.execute(
                    "SELECT sender, SUM(length(payload)) + COUNT(*) * ?"
                    " FROM alerts INDEXED BY alerts_deferred WHERE state = 'deferred' GROUP BY sender",
                    (ROW_BYTES,),
                )
            }

    def deferred_alert(self, seq: int) -> PendingAlert | None:
        """Deferred alert row ``seq``; None when it is no longer deferred, or cannot be read (logged:
        it stays deferred, as an unreadable pending alert stays pending, for a person to look at)."""
        with self.reader() as conn:
            row = conn.execute(
                "SELECT seq, alert_id, input, received_ns, payload, sender FROM alerts"
                " WHERE seq = ? AND state = 'deferred'",
                (seq,),
            ).fetchone()
        return None if row is None else _pending_alert(row)

    def deferred_backlog(self) -> tuple[int, int | None]:
        """How many alerts are deferred, and when the oldest of them was received (None: none)."""
        with self.reader() as conn:
            count, oldest = conn.execute(
                "SELECT COUNT(*), MIN(received_ns) FROM alerts INDEXED BY alerts_deferred"
                " WHERE state = 'deferred'"
            ).fetchone()
        return int(count), None if oldest is None else int(oldest)

    def pending_count(self) -> int:
        """Alerts not at a final outcome yet: in flight, resumed, or deferred."""
        with self.reader() as conn:
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM alerts WHERE state IN ('pending', 'deferred')"
            ).fetchone()
        return int(count)

    def incidents_since(self, since_ns: int) -> list[IncidentRow]:
        """The incidents seen since ``since_ns``, the one seen last last: restored in this order into
        a table bounded by bytes, the ones still repeating are those it keeps."""
        with self.reader() as conn:
            rows = conn.execute(
                INCIDENTS_WITH_SEEN_SQL + " WHERE i.last_seen_ns >= ? ORDER BY i.last_seen_ns, i.incident_id",
                (since_ns,),
            ).fetchall()
        return [_incident_row(row) for row in rows]

    def incidents_by_id(self, incident_ids: Collection[str]) -> dict[str, IncidentRow]:
        """The incidents the journal holds among ``incident_ids``, by id (primary key lookups)."""
        with self.reader() as conn:
            rows = _rows_by_incident_id(conn, INCIDENTS_WITH_SEEN_SQL + " WHERE i.incident_id", incident_ids)
            return {row["incident_id"]: _incident_row(row) for row in rows}

    def isolation_records(self, after_id: int) -> list[IsolationRecord]:
        """The action records after row ``after_id`` that put a quarantine or block on a pod, or
        end one (a release, a lapse the recheck found, the pod gone), in order: what IsolatedPods
        reads. By the primary key: after the first read, a few rows a minute."""
        with self.reader() as conn:
            rows = conn.execute(
                "SELECT id, incident_id, namespace, pod, action, status, outcome FROM actions"
                " WHERE id > ? AND namespace IS NOT NULL AND pod IS NOT NULL AND ("
                "(action = 'quarantine' AND status IN ('quarantined', 'leaky'))"
                " OR (action = 'block_destination' AND status IN ('blocked', 'leaky'))"
                " OR (action = 'release' AND status = 'released')"
                " OR (action = 'recheck' AND status IN ('lapsed', 'pod_gone'))) ORDER BY id",
                (after_id,),
            ).fetchall()
        records = []
        for row in rows:
            action = row["action"]
            # A block puts something on the pod only where it labelled it (not when its address
            # was out of reach already); one whose record cannot be read counts, as _labelled.
            if action == "block_destination" and not _block_labelled(row):
                continue
            puts_on = action in ("quarantine", "block_destination")
            records.append(
                IsolationRecord(row["id"], row["incident_id"], row["namespace"], row["pod"], puts_on)
            )
        return records

    def incidents_acted_on(self, incident_ids: Collection[str]) -> set[str]:
        """Those of ``incident_ids`` that action records name (index lookups)."""
        with self.reader() as conn:
            sql = "SELECT DISTINCT incident_id FROM actions WHERE incident_id"
            return {row["incident_id"] for row in _rows_by_incident_id(conn, sql, incident_ids)}

    def repeats_after(self, after_seq: int, incident_ids: Collection[str]) -> dict[str, JournaledRepeats]:
        """The repeats journaled for ``incident_ids`` (outcome 'duplicate') in the alert rows after
        row ``after_seq``, by incident id (those with none are left out).

        One pass over those rows, found by their sequence number (the rowid): repeats are not
        indexed by incident (alerts_incident_kept leaves them out, to keep a storm's writes cheap),
        so asking incident by incident would scan them once per incident."""
        wanted = set(incident_ids)
        if not wanted:
            return {}
        with self.reader() as conn:
            rows = conn.execute(
                "SELECT incident_id, COUNT(*), MAX(received_ns) FROM alerts"
                " WHERE seq > ? AND outcome = 'duplicate' GROUP BY incident_id",
                (after_seq,),
            ).fetchall()
        return {row[0]: JournaledRepeats(row[1], row[2]) for row in rows if row[0] in wanted}

    def quarantine_times_since(self, since_ns: int) -> list[int]:
        """When each quarantine the responder made that labelled its pod finished
        (ActionOutcome.labelled): the circuit breaker's window, rebuilt after a restart. A person's
        quarantines by hand are not the breaker's to count, as they are not while it runs."""
        with self.reader() as conn:
            rows = conn.execute(
                "SELECT id, finished_ns, status, outcome FROM actions"
                " WHERE action = 'quarantine' AND status IN ('quarantined', 'leaky', 'failed')"
                " AND finished_ns >= ? AND (actor IS NULL OR actor = ?) ORDER BY finished_ns",
                (since_ns, RESPONDER_ACTOR),
            ).fetchall()
        return [int(row["finished_ns"]) for row in rows if row["status"] != "failed" or _labelled(row)]

    def block_times_since(self, since_ns: int) -> list[int]:
        """When each destination block the responder made that added its address finished
        (ActionOutcome.newly_blocked): the block circuit breaker's window, rebuilt after a restart."""
        return [finished for finished, _ in self.blocks_since(since_ns)]

    def blocks_since(self, since_ns: int) -> list[tuple[int, tuple[str, str]]]:
        """block_times_since, each with the pod it blocked on (namespace, name): the pods' shares
        of the block breaker (guardrails.max_blocks.per_pod), rebuilt after a restart too."""
        with self.reader() as conn:
            rows = conn.execute(
                "SELECT id, finished_ns, outcome, namespace, pod FROM actions WHERE action = ?"
                " AND finished_ns >= ? AND (actor IS NULL OR actor = ?) ORDER BY finished_ns",
                (BLOCK_DESTINATION, since_ns, RESPONDER_ACTOR),
            ).fetchall()
        return [
            (int(row["finished_ns"]), (str(row["namespace"]), str(row["pod"])))
            for row in rows
            if _newly_blocked(row)
        ]

    def due_notifications(self, now_ns: int, limit: int = 100) -> list[NotificationRow]:
        """The notifications due at ``now_ns``, those on-call needs first: verified incidents' posts
        and replies telling what a person did or what no longer holds, then every other incident's
        post, then repeat counts and updates; in each, the longest due first.

        Only a verified incident's post goes first (a whitelist): anyone holding a sender's
        credential can make the others in any number (alerts that do not match their pod, name a
        pod the cluster does not have, name no pod, or name one the responder may not read), and a
        storm of them must not hold back a genuine post.

        Each queue is read in its index's order (schema.QUEUE_INDEXES), at most ``limit``
        rows of it: a batch costs about as much with a backlog of 200,000 posts as with none (sorting
        the backlog for each batch made draining it quadratic, on the event loop)."""
        with self.reader() as conn:
            rows = posts_due(conn, now_ns, limit)
        return [_notification(row) for row in rows]

    def notifications_set_beyond(self, now_ns: int, longest_ns: int, throttled_longest_ns: int) -> bool:
        """Whether a waiting notification is due further ahead of ``now_ns`` than any is ever set
        (``longest_ns``; ``throttled_longest_ns`` for a repeat count or a workload thread's summary):
        set before the clock was stepped back (op_due_again). An index seek per queue."""
        with self.reader() as conn:
            row = conn.execute(
                f"SELECT EXISTS (SELECT 1 {THROTTLED_DUE_AFTER})"
                f" OR EXISTS (SELECT 1 {UNTHROTTLED_DUE_AFTER})",
                (now_ns + throttled_longest_ns, now_ns + longest_ns),
            ).fetchone()
        return bool(row[0])

    def notifications_unsent(self, since_ns: int) -> UnsentPosts:
        """Slack messages still to go out (and the latest error of one tried), and those made since
        ``since_ns`` that Slack refused for good: what `ingest` says before it exits."""
        with self.reader() as conn:

            def tally(where: str, *args: int) -> tuple[int, str | None]:
                # ``where``: one of the two constant conditions below, never text from outside.
                count = conn.execute(f"SELECT COUNT(*) FROM notifications WHERE {where}", args).fetchone()[0]  # noqa: S608
                row = conn.execute(
                    f"SELECT last_error FROM notifications WHERE {where} AND last_error IS NOT NULL"  # noqa: S608
                    " ORDER BY id DESC LIMIT 1",
                    args,
                ).fetchone()
                return int(count), (None if row is None else str(row[0]))

            waiting = tally("state IN ('pending', 'sending')")
            failed = tally("state = 'failed' AND created_ns >= ?", since_ns)
        return UnsentPosts(*waiting, *failed)

    def next_notification_due(self) -> int | None:
        with self.reader() as conn:
            row = conn.execute(
                "SELECT MIN(next_attempt_ns) FROM notifications WHERE state IN ('pending', 'sending')"
            ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def workload_thread(
        self,
        incident_id: str,
        channel: str | None,
        group: WorkloadGroup,
        since_ns: int,
        gone: Collection[tuple[str, str]] = (),
    ) -> tuple[str, str] | None:
        """(channel id, ts) of the newest top-level post, to ``channel``, of another incident in
        ``group`` opened since ``since_ns``: the thread that gathers the group's incidents. Posts in
        ``gone`` (deleted in Slack) are passed over."""
        return self._thread_root(
            incident_id,
            channel,
            since_ns,
            gone,
            " AND i.namespace = ? AND i.rule = ?"
            " AND json_extract(i.pod_context, '$.owners[#-1].kind') = ?"
            " AND json_extract(i.pod_context, '$.owners[#-1].name') = ?",
            (group.namespace, group.rule, group.kind, group.name),
        )

    def forgery_thread(
        self, incident_id: str, channel: str | None, since_ns: int, gone: Collection[tuple[str, str]] = ()
    ) -> tuple[str, str] | None:
        """(channel id, ts) of the newest top-level post, to ``channel``, of another unverified
        incident (a possible forgery: a pod named that does not exist counts) opened since
        ``since_ns``: the thread that gathers them, so forged alerts with made-up ids or pods, each
        its own incident, do not each post in the channel. Posts in ``gone`` (deleted in Slack) are
        passed over."""
        unverified = (
            " AND (json_extract(i.decision, '$.unverified') = 1"
            " OR json_extract(i.verification, '$.status') = 'pod_not_found')"
        )
        return self._thread_root(incident_id, channel, since_ns, gone, unverified, ())

    def _thread_root(
        self,
        incident_id: str,
        channel: str | None,
        since_ns: int,
        gone: Collection[tuple[str, str]],
        also: str,
        also_params: tuple[object, ...],
    ) -> tuple[str, str] | None:
        """The newest top-level incident post to ``channel`` of another incident opened since
        ``since_ns`` that ``also`` (SQL on incidents ``i``) holds for, not in ``gone``. Never a
        drill's: Falco's alerts are not tucked into a drill's thread (read as a drill)."""
        with self.reader() as conn:
            rows = conn.execute(
                # ``also`` is one of this module's constant conditions, its values placeholders.
                "SELECT n.slack_channel, n.slack_ts FROM notifications n"  # noqa: S608
                " JOIN incidents i ON i.incident_id = n.incident_id"
                " WHERE n.kind = 'incident' AND n.state = 'sent' AND n.slack_ts IS NOT NULL"
                " AND n.slack_thread_ts IS NULL AND n.slack_channel IS NOT NULL AND n.channel IS ?"
                " AND i.opened_ns >= ? AND i.incident_id != ?"
                + also
                + _NOT_A_DRILL
                + " ORDER BY i.opened_ns DESC LIMIT ?",
                (channel, since_ns, incident_id, *also_params, len(gone) + 1),
            ).fetchall()
        return next(((row[0], row[1]) for row in rows if (row[0], row[1]) not in gone), None)

    def thread_root_incident(self, channel_id: str, ts: str) -> str | None:
        """The incident whose top-level post is at ``ts`` in ``channel_id``."""
        with self.reader() as conn:
            row = conn.execute(
                "SELECT incident_id FROM notifications WHERE kind = 'incident' AND slack_channel = ?"
                " AND slack_ts = ? AND slack_thread_ts IS NULL ORDER BY id LIMIT 1",
                (channel_id, ts),
            ).fetchone()
        return None if row is None else str(row[0])

    def thread_replies(self, channel_id: str, root_ts: str) -> list[str | None]:
        """For each incident posted in the thread at ``root_ts``: the status of its latest
        quarantine, block, annotate or release (by hand) action, or recheck that found it no longer
        holding (LAPSED) (THREAD_KEPT_OUT for a block that found its address already out of reach:
        no block made), or None (notified only, or not acted on)."""
        with self.reader() as conn:
            rows = conn.execute(
                "SELECT (SELECT json_array(a.status, a.action, json_extract(a.outcome, '$.extra.kept_out'))"
                " FROM actions a WHERE a.incident_id = n.incident_id"
                " AND a.action IN ('quarantine', 'block_destination', 'annotate', 'release', 'recheck')"
                " ORDER BY a.id DESC LIMIT 1)"
                " FROM notifications n WHERE n.kind = 'incident' AND n.state = 'sent'"
                " AND n.slack_channel = ? AND n.slack_thread_ts = ? ORDER BY n.id",
                (channel_id, root_ts),
            ).fetchall()
        statuses: list[str | None] = []
        for (latest,) in rows:
            if latest is None:
                statuses.append(None)
                continue
            status, action, kept_out = json.loads(latest)
            statuses.append(THREAD_KEPT_OUT if action == BLOCK_DESTINATION and kept_out else status)
        return statuses

    def incident_thread(self, incident_id: str) -> tuple[NotificationRow | None, NotificationRow | None]:
        """The sent incident post and the latest sent repeat reply (for threading and updates)."""
        with self.reader() as conn:
            parent = conn.execute(
                "SELECT * FROM notifications WHERE incident_id = ? AND kind = 'incident' AND state = 'sent'"
                " ORDER BY id LIMIT 1",
                (incident_id,),
            ).fetchone()
            reply = conn.execute(
                "SELECT * FROM notifications WHERE incident_id = ? AND kind = 'repeat' AND state = 'sent'"
                " AND slack_ts IS NOT NULL ORDER BY id DESC LIMIT 1",
                (incident_id,),
            ).fetchone()
        return (_notification(parent) if parent else None, _notification(reply) if reply else None)

    def action_by_hand(self, action_id: int) -> ActionByHand | None:
        """A journaled action a person took, or None when there is no such record (or it is the
        responder's own)."""
        with self.reader() as conn:
            row = conn.execute(
                "SELECT actor, namespace, pod, outcome FROM actions WHERE id = ? AND actor IS NOT NULL"
                " AND actor != ?",
                (action_id, RESPONDER_ACTOR),
            ).fetchone()
        if row is None:
            return None
        return ActionByHand(
            actor=row["actor"],
            namespace=row["namespace"] or "",
            pod=row["pod"] or "",
            outcome=ActionOutcome.from_json(json.loads(row["outcome"])),
        )

    def lapse_found(self, action_id: int) -> ActionTold | None:
        """The recheck's journaled record of a lapse (or of the pod found gone), or None when there
        is no such record."""
        with self.reader() as conn:
            row = conn.execute(
                "SELECT namespace, pod, outcome FROM actions"
                " WHERE id = ? AND action = ? AND status IN (?, ?)",
                (action_id, RECHECK, OutcomeStatus.LAPSED.value, OutcomeStatus.POD_GONE.value),
            ).fetchone()
        return _found(row)

    def retry_done(self, action_id: int) -> ActionTold | None:
        """The journaled record of what a withheld isolation did when tried again (the responder's
        own action, not a person's), or None when there is no such record."""
        with self.reader() as conn:
            row = conn.execute(
                "SELECT namespace, pod, outcome FROM actions WHERE id = ? AND actor = ?",
                (action_id, RESPONDER_ACTOR),
            ).fetchone()
        return _found(row)

    def repeats_sent(self, incident_id: str) -> tuple[int, int]:
        """How many repeat counts of the incident were sent to Slack, and when the last one was
        (0 when none): the repeat throttle carries on after a restart where it was."""
        with self.reader() as conn:
            row = conn.execute(
                "SELECT COUNT(*), MAX(sent_ns) FROM notifications"
                " WHERE incident_id = ? AND kind = 'repeat' AND state = 'sent'",
                (incident_id,),
            ).fetchone()
        return (0, 0) if row is None else (int(row[0]), int(row[1] or 0))

    def incident_record(self, incident_id: str) -> dict[str, Any] | None:
        with self.reader() as conn:
            row = conn.execute(
                INCIDENTS_WITH_SEEN_SQL + " WHERE i.incident_id = ?",
                (incident_id,),
            ).fetchone()
            if row is None:
                return None
            record = dict(row)
            record["count"] = record.pop("seen")
            first = conn.execute(
                "SELECT payload, sender FROM alerts WHERE event_ns = ? AND alert_id = ?",
                (row["first_event_ns"], row["first_alert_id"]),
            ).fetchone()
            record["first_alert"] = None
            if first is not None:
                try:
                    record["first_alert"] = decode_journaled(
                        first["payload"], row["first_alert_id"], first["sender"]
                    )
                except (AlertError, ValueError, zlib.error) as exc:
                    # One damaged record must not stop recovery: this incident is skipped, logged.
                    log.error(
                        "journaled alert unreadable", extra={"incident": incident_id, "error": str(exc)}
                    )
            # Its own pod's actions only: versions that wrote schema 4 or earlier let `--incident` record an
            # action on another pod under it (audit still lists that row as journaled).
            record["outcomes"] = [
                ActionOutcome.from_json(json.loads(r["outcome"]))
                for r in conn.execute(
                    "SELECT outcome FROM actions WHERE incident_id = ?"
                    " AND (namespace IS NULL OR (namespace = ? AND pod = ?)) ORDER BY id",
                    (incident_id, row["namespace"], row["pod"]),
                ).fetchall()
            ]
            lapses = [o.finished_ns for o in record["outcomes"] if o.lapse is not None]
            record["reopened_by"] = _reopened_by(conn, record, min(lapses)) if lapses else None
        return record


def _found(row: sqlite3.Row | None) -> ActionTold | None:
    if row is None:
        return None
    return ActionTold(
        namespace=row["namespace"] or "",
        pod=row["pod"] or "",
        outcome=ActionOutcome.from_json(json.loads(row["outcome"])),
    )


def _reopened_by(conn: sqlite3.Connection, record: Mapping[str, Any], lapsed_ns: int) -> str | None:
    """The incident that says it reopens ``record``'s (opened on its pod after its lapse), or None."""
    for row in conn.execute(
        "SELECT incident_id, decision FROM incidents WHERE namespace = ? AND pod = ? AND opened_ns >= ?"
        " AND incident_id != ? ORDER BY opened_ns",
        (record["namespace"], record["pod"], lapsed_ns, record["incident_id"]),
    ):
        try:
            reopens = (json.loads(row["decision"] or "null") or {}).get("reopens") or {}
        except (ValueError, AttributeError):
            continue
        if isinstance(reopens, dict) and reopens.get("incident_id") == record["incident_id"]:
            return str(row["incident_id"])
    return None


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _resolve_all(settled: list[tuple[asyncio.Future[Any] | LoopCallback, Any, BaseException | None]]) -> None:
    for future, value, error in settled:
        if isinstance(future, LoopCallback):
            try:
                future.function(value, error)
            except Exception:  # one failing callback must not strand the rest of the group
                log.exception("journal: callback failed")
            continue
        if future.done():  # the awaiting task was cancelled
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


def _journaled_outcome(row: sqlite3.Row) -> ActionOutcome | None:
    """An action row's outcome (id, outcome); None when it cannot be read (logged by its id)."""
    try:
        return ActionOutcome.from_json(json.loads(row["outcome"]))
    except UNREADABLE_RECORD as exc:
        log.error("journaled action unreadable", extra={"action_id": row["id"], "error": str(exc)})
        return None


def _labelled(row: sqlite3.Row) -> bool:
    """Whether a failed quarantine labelled its pod. One whose record cannot be read counts: the
    breaker errs towards holding quarantines back, never towards more."""
    outcome = _journaled_outcome(row)
    return outcome is None or outcome.labelled


def _block_labelled(row: sqlite3.Row) -> bool:
    """Whether a block put its label on the pod; one whose record cannot be read counts."""
    outcome = _journaled_outcome(row)
    return outcome is None or outcome.block_labelled


def _newly_blocked(row: sqlite3.Row) -> bool:
    """Whether a block added its address; one whose record cannot be read counts (as _labelled)."""
    outcome = _journaled_outcome(row)
    return outcome is None or outcome.newly_blocked


def _pending_alert(row: sqlite3.Row) -> PendingAlert | None:
    """An unfinished alert row (seq, alert_id, input, received_ns, payload, sender); None when its
    body cannot be read (logged: the row stays as it is, for a person to look at)."""
    try:
        alert = decode_journaled(row["payload"], row["alert_id"], row["sender"])
    except (AlertError, ValueError, zlib.error) as exc:
        log.error("journaled alert unreadable", extra={"alert_id": row["alert_id"], "error": str(exc)})
        return None
    return PendingAlert(alert, row["input"], row["received_ns"], row["seq"])


class UnsentPosts(NamedTuple):
    """Journal.notifications_unsent: messages waiting (and the latest error), and failed for good."""

    waiting: int
    waiting_error: str | None
    failed: int
    failed_error: str | None


# An incident opened by a drill's alert (its sender's record says so): see Sender.drill.
_NOT_A_DRILL = (
    " AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.event_ns = i.first_event_ns"
    " AND a.alert_id = i.first_alert_id AND json_extract(a.sender, '$.drill') = 1)"
)


def report_from_record(record: dict[str, Any]) -> IncidentReport | None:
    """Rebuild an incident's report from its journal record (after a restart)."""
    from responder.incident import IncidentKey, IncidentReport
    from responder.records import decision_from_json, pod_from_json, verification_from_json

    first = record.get("first_alert")
    if first is None or record.get("decision") is None or record.get("verification") is None:
        return None
    pod = json.loads(record["pod_context"]) if record.get("pod_context") else None
    return IncidentReport(
        incident_id=record["incident_id"],
        key=IncidentKey.of(first),
        alert=first,
        count=int(record["count"]),
        first_seen_ns=int(record["opened_ns"]),
        last_seen_ns=int(record["last_seen_ns"]),
        pod=pod_from_json(pod) if pod else None,
        verification=verification_from_json(json.loads(record["verification"])),
        decision=decision_from_json(json.loads(record["decision"])),
        outcomes=tuple(record.get("outcomes") or ()),
        reopened_by=record.get("reopened_by"),
    )


def log_failed_write(
    logger: logging.Logger, error: BaseException, what: str, incident_id: str, alert_id: str | None
) -> None:
    """Say at once that a journal write about an incident was refused, naming the op and the alert:
    unheard, the journal could lack what the responder went on as if it held."""
    logger.error(
        "journal write failed",
        exc_info=error,
        extra={
            "alert_id": alert_id,
            "incident": incident_id,
            "op": what,
            "error": f"{type(error).__name__}: {error}",
        },
    )


def _rows_by_incident_id(
    conn: sqlite3.Connection, sql_before_in: str, incident_ids: Collection[str]
) -> Iterator[sqlite3.Row]:
    """The rows of ``sql_before_in + " IN (...)"`` over ``incident_ids``, in statements of at most
    _IDS_PER_STATEMENT ids. Only placeholders are formatted in; the ids are bound parameters."""
    ids = list(incident_ids)
    for start in range(0, len(ids), _IDS_PER_STATEMENT):
        chunk = ids[start : start + _IDS_PER_STATEMENT]
        yield from conn.execute(f"{sql_before_in} IN ({','.join('?' * len(chunk))})", chunk)


def _incident_row(row: sqlite3.Row) -> IncidentRow:
    """An incident row read with INCIDENTS_WITH_SEEN_SQL (its count is what it has seen)."""
    return IncidentRow(
        incident_id=row["incident_id"],
        key_digest=row["key_digest"],
        rule=row["rule"],
        namespace=row["namespace"],
        pod=row["pod"],
        container_id=row["container_id"],
        hostname=row["hostname"],
        first_alert_id=row["first_alert_id"],
        first_event_ns=row["first_event_ns"],
        opened_ns=row["opened_ns"],
        last_seen_ns=row["last_seen_ns"],
        count=row["seen"],
        decided=row["decided_ns"] is not None,
    )


def _notification(row: sqlite3.Row) -> NotificationRow:
    return NotificationRow(
        id=row["id"],
        incident_id=row["incident_id"],
        kind=row["kind"],
        channel=row["channel"],
        state=row["state"],
        attempts=row["attempts"],
        next_attempt_ns=row["next_attempt_ns"],
        created_ns=row["created_ns"],
        slack_channel=row["slack_channel"],
        slack_ts=row["slack_ts"],
        slack_thread_ts=row["slack_thread_ts"],
        action_id=row["action_id"],
    )
