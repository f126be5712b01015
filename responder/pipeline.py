"""The pipeline: journal -> dedupe -> enrich+verify -> policy -> actions -> notify.

Every input calls :meth:`Pipeline.submit` (the AlertSink). An alert is answered for only once
it is in the journal; an incident's opening alert then runs on the event loop as its own task, a
repeat is folded into its incident (one journal write and a callback, no task). Memory is bounded by
``journal.max_pending`` slots: with none free an input is pushed back (Overloaded).

Ordering: alerts are observed by the incident table in arrival order (no await before it);
the work of opening an incident (API reads and writes) runs under a per-pod lock, so actions
for one pod happen in order while different pods proceed concurrently. The synchronous
Kubernetes client runs on a bounded thread pool, never on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from responder.actions import destination
from responder.actions.block import QUARANTINE_EGRESS_ADVICE
from responder.actions.outcome import (
    BLOCK_BREAKER_OPEN,
    BLOCK_DESTINATION,
    BLOCKED_ADDRESS,
    BY_HAND,
    HELD_ESCALATION,
    LAPSED_ACTION,
    LAPSED_LABEL_GONE,
    POLICY_FULL,
    REASON,
    RECHECK,
    RETRIED,
    ActionOutcome,
    Lapse,
    OutcomeStatus,
    known_leaks,
    release_note,
)
from responder.actions.pod_patch import ReleasedMeanwhile
from responder.actions.pod_records import (
    CLOCK_SKEW_NS,
    RELEASED_AT,
    ReleaseRecord,
    dated_credibly,
    release_record,
)
from responder.actions.quarantine import ClusterActions
from responder.alert import Alert
from responder.breaker import CircuitBreaker
from responder.clock import deadline_passed, within_window
from responder.cluster.context import PodContext
from responder.cluster.enrich import LookupStatus, PodDirectory
from responder.cluster.live_check import LivePodCheck
from responder.cluster.pool import in_pool
from responder.cluster.verify import (
    Verification,
    VerificationStatus,
)
from responder.config import ActionName, Config, Isolation, widest
from responder.dedupe import (
    REDECIDE_AFTER_SECONDS,
    IncidentState,
    IncidentTable,
    alert_bytes,
    incident_id_for,
)
from responder.deferred_shares import DeferredShares, sender_key
from responder.incident import TRIES_OVER, AlertingAfterRelease, IncidentKey, IncidentReport
from responder.incident_history import (
    done_actions,
    names_address,
    put_on_pod,
    released_in,
    said_held,
    still_withheld,
    withheld_for_passing_reason,
)
from responder.ingest.sink import Accepted, InputName, Overloaded, OverShare
from responder.isolated_pods import IsolatedPods
from responder.journal.ops import ROW_BYTES, RepeatDueNow
from responder.journal.rows import encode_payload, estimated_payload_bytes
from responder.journal.store import (
    IncidentRow,
    Journal,
    JournaledRepeats,
    log_failed_write,
)
from responder.journal.writer import Op
from responder.journaled_incidents import JournaledIncidents
from responder.logs import current_alert_id
from responder.metrics import Metrics
from responder.notify.routing import repeat_interval_ns
from responder.policy import (
    CUTTING,
    ISOLATING,
    Decision,
    GuardrailState,
    Reopened,
    block_breaker_reason,
    decide,
    is_blocked,
    is_quarantined,
    pod_past_block_share,
    quarantine_breaker_reason,
)
from responder.records import DECIDED_AGAIN, decision_to_json, pod_to_json, verification_to_json
from responder.sender import is_drill
from responder.slots import Slots

log = logging.getLogger("serving_guard.pipeline")

T = TypeVar("T")
# A write handed to the journal: by a thread's future (``Journal.submit``) or the loop's (``schedule``).
Written = Future[Any] | asyncio.Future[Any]
RETRY_AFTER_SECONDS = 1.0
# Deferred alerts read from the journal at a time (each then waits for its own slot).
DEFERRED_BATCH = 64
# Never again, as a time (a follow-up block taken on, or done).
_NEVER = 2**63 - 1
# While repeats come, whether a quarantine still holds is checked at most this often.
RECHECK_SECONDS = 15.0
# A quarantine the breaker held is tried as the breaker reopens only with this much of the
# incident's window left for the try itself (see Pipeline._breaker_try_ns).
BREAKER_TRY_ROOM_NS = 5_000_000_000
# While none comes (a reverse shell alerts once), it is checked this often, while its incident is
# open (dedupe.window_seconds), at most this many incidents a pass: each check reads the pod and the
# namespace's policies on the pool the new alerts' lookups share.
IDLE_RECHECK_SECONDS = 60.0
IDLE_RECHECKS_PER_PASS = 50
# What a parsed alert holds beyond its bytes as text (objects, dict, strings' headers): measured
# with tracemalloc at ~1.9 KB for Falco's shell alert of 1 KB, 7.8 KB and 28.9 KB alike.
ALERT_OVERHEAD_BYTES = 2048
# Alert ids remembered as maybe journaled but never dispatched (Pipeline._alert_written): 10,000
# ids take about 1 MB.
MAX_UNDISPATCHED = 10_000
# Withheld isolations waiting to be tried again (dedupe.retry_withheld_seconds): a flood of alerts
# withheld at once (an API outage during a storm of forged ones) schedules no more; those are tried
# again by a repeat, as before.
MAX_RETRIES_WAITING = 1_000
# Tries under way at once: each reads the pod on the pool the new alerts' lookups share.
RETRIES_AT_ONCE = 2


class JournalWriteFailed(RuntimeError):
    """Writes about an alert's incident that the journal refused: the alert is not finished (it
    stays pending, and a restart resumes it), so the audit trail shows it unfinished, not done."""

    def __init__(self, failed: list[str]) -> None:
        super().__init__("journal refused " + "; ".join(failed))


@dataclass
class PipelineStats:
    processed: int = 0
    failed: int = 0
    in_flight: int = 0
    last_error: str = ""
    # Alert ids whose processing raised: they stay pending in the journal and are resumed on restart.
    stuck: deque[str] = field(default_factory=lambda: deque(maxlen=100))


class Pipeline:
    def __init__(
        self,
        config: Config,
        journal: Journal,
        directory: PodDirectory,
        actions: ClusterActions,
        metrics: Metrics,
        executor: ThreadPoolExecutor,
        *,
        notify: Callable[[], None] | None = None,
        notifications_enabled: bool = True,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._config = config
        self._journal = journal
        self._directory = directory
        self._actions = actions
        self._metrics = metrics
        self._executor = executor
        self._wake_notifier = notify or (lambda: None)
        self._notifications = notifications_enabled
        self._clock_ns = clock_ns
        self._journaled = JournaledIncidents(journal, config, clock_ns)
        self.incidents = IncidentTable(config.dedupe.window_seconds, max_bytes=config.dedupe.max_open_bytes)
        guardrails = config.guardrails
        quarantines, blocks = guardrails.max_quarantines, guardrails.max_blocks
        self._breaker = CircuitBreaker(quarantines.count, quarantines.window_seconds)
        self._block_breaker = CircuitBreaker(blocks.count, blocks.window_seconds)
        # Whether any policy blocks destinations (default_actions may not): else a repeat, folded
        # on the storm's hot path, has no address to look at.
        self._blocks_destinations = any(ActionName.BLOCK_DESTINATION in p.actions for p in config.policies)
        self._slots = Slots(
            config.journal.max_pending, config.journal.max_pending_bytes, ALERT_OVERHEAD_BYTES
        )
        self._pod_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._pod_check = LivePodCheck(directory, executor, config.cluster.verify_node, clock_ns)
        self._tasks: set[asyncio.Task[None]] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        # Set when an alert is deferred (journaled while there was no room): run_deferred reads them.
        self._deferred_waiting = asyncio.Event()
        journal_settings = config.journal
        self._deferred_shares = DeferredShares(
            int(journal_settings.max_bytes * journal_settings.max_deferred_share)
        )
        self.stats = PipelineStats()
        # Incidents whose withheld isolation is tried again later, by id: the timer of each; the
        # tries under way; how many may be under way at once.
        self._retries: dict[str, asyncio.TimerHandle] = {}
        self._retrying: set[asyncio.Task[None]] = set()
        self._retry_turns = asyncio.Semaphore(RETRIES_AT_ONCE)
        # Incidents no longer open whose quarantine or block was checked again (recheck_closed):
        # when each was, so that the longest unchecked goes first.
        self._closed_checked: dict[str, int] = {}
        self._isolated = IsolatedPods()
        self._closed = False
        # Alerts maybe journaled (pending) but never dispatched: see _alert_written.
        self._undispatched: dict[str, None] = {}

    # -- the AlertSink --------------------------------------------------------------------------

    def offer(
        self,
        alert: Alert,
        source: InputName,
        raw: bytes | None,
        on_done: Callable[[Accepted | BaseException], None],
    ) -> bool:
        """Take the alert if there is room now, without waiting: ``on_done`` is called on the loop
        with the Accepted once the alert is journaled (or with the error). False when no slot is
        free (nothing was taken: use :meth:`submit` to wait); Overloaded when the journal is full.

        The HTTP input's path: no task and no future per alert. The work goes on once taken,
        whether or not the input is still there to hear the answer."""
        self._check_journal_room(source)
        weight = _weight(alert, raw)
        if not self._slots.try_take(weight):
            return False
        self._take(alert, source, raw, on_done, weight)
        return True

    async def submit(
        self, alert: Alert, source: InputName, *, wait_seconds: float | None = None, raw: bytes | None = None
    ) -> Accepted:
        self._check_journal_room(source)
        weight = _weight(alert, raw)
        if not self._slots.try_take(weight):
            if wait_seconds is None:
                await self._slots.take(weight)
            else:
                # A repeat of an open incident needs no room: it does not wait for it either.
                folded = self._fold_without_slot(alert, source, raw, weight)
                if folded is not None:
                    return await folded
                try:
                    await asyncio.wait_for(self._slots.take(weight), timeout=wait_seconds)
                except TimeoutError:
                    return await self._defer(alert, source, raw, weight)
        answer: asyncio.Future[Accepted] = asyncio.get_running_loop().create_future()
        self._take(alert, source, raw, lambda result: _settle(answer, result), weight)
        return await answer

    def _fold_without_slot(
        self, alert: Alert, source: InputName, raw: bytes | None, weight: int
    ) -> asyncio.Future[Accepted] | None:
        """A repeat of an open incident, written final at once as on the storm path, without a slot:
        it holds nothing after its write. None: not such a repeat (nothing was done)."""
        received_ns = self._clock_ns()
        repeat = self.incidents.open_repeat(alert, received_ns)
        if repeat is None:
            return None
        self._journal.account_alert(weight)
        answer: asyncio.Future[Accepted] = asyncio.get_running_loop().create_future()
        self._write_repeat(
            repeat, alert, source, raw, received_ns, lambda result: _settle(answer, result), None
        )
        return answer

    def _write_repeat(
        self,
        repeat: IncidentState,
        alert: Alert,
        source: InputName,
        raw: bytes | None,
        received_ns: int,
        on_done: Callable[[Accepted | BaseException], None],
        weight: int | None,
    ) -> None:
        """The storm path: a repeat of a journaled incident is written once, already final; the slot
        of ``weight`` it holds (None: none) is given back once written."""
        self._journal.schedule_call(
            Journal.op_append_duplicate(
                alert, source.value, received_ns, raw, repeat.incident_id, repeat.count
            ),
            lambda new, error: self._repeat_written(new, error, repeat, alert, source, on_done, weight),
        )

    async def _defer(self, alert: Alert, source: InputName, raw: bytes | None, weight: int) -> Accepted:
        """No room came in time: journal the alert, to be processed once there is (run_deferred),
        rather than refuse it (Falco's http_output and Falcosidekick drop a refused alert: no retry).
        Its memory goes with the answer; the journal's size bounds how many wait. A repeat of an
        incident opened meanwhile is folded at once."""
        self._check_journal_room(source)
        folded = self._fold_without_slot(alert, source, raw, weight)
        if folded is not None:
            return await folded
        # As the journal's size accounting counts a row: its body and the rest of the row.
        key, size = sender_key(alert.sender), len(encode_payload(alert, raw)) + ROW_BYTES
        refused = self._deferred_shares.refusal(key, size)
        if refused is not None:
            self._metrics.overloaded.labels(source.value).inc()
            raise OverShare(RETRY_AFTER_SECONDS * 5, refused)
        received_ns = self._clock_ns()
        self._journal.account_alert(weight)
        self._deferred_shares.add(key, size)  # before the write: a sender's concurrent deferrals count
        try:
            new = await self._journal.run(Journal.op_append_deferred(alert, source.value, received_ns, raw))
        except BaseException:
            self._deferred_shares.remove(key, size)
            raise
        if not new:
            self._deferred_shares.remove(key, size)
            self._metrics.redelivered.labels(source.value).inc()
            return Accepted(alert.alert_id, new=False)
        self._metrics.count_received(source.value, alert.source, drill=is_drill(alert.sender))
        self._metrics.deferred.labels(source.value).inc()
        self._deferred_waiting.set()
        return Accepted(alert.alert_id, new=True, deferred=True)

    async def run_deferred(self) -> None:
        """Process the deferred alerts (see _defer), oldest first, each as room frees, as if it had
        just come: it takes a slot and is journaled pending before it is dispatched (a crash then
        resumes it as any pending alert). Those an earlier run left are taken up at start. An error
        is logged and the backlog read again later: this never stops while the responder runs."""
        after = 0  # the last deferred row taken up
        self._deferred_waiting.set()
        while True:
            await self._deferred_waiting.wait()
            self._deferred_waiting.clear()
            try:
                after = await self._take_up_deferred(after)
            except Exception:
                # A row taken up already is not taken up again (Undefer is conditional).
                log.exception("taking up deferred alerts failed; trying again")
                self._take_up_later()

    async def run_idle_rechecks(self) -> None:
        """Check again, every IDLE_RECHECK_SECONDS, the quarantines and blocks of open incidents
        whose alerts stopped coming (a repeat checks its own incident's): proven when made is not
        proven for good. Runs until the pipeline closes."""
        while not self._closed:
            await asyncio.sleep(IDLE_RECHECK_SECONDS)
            try:
                started = self.recheck_idle()
                await self.recheck_closed(IDLE_RECHECKS_PER_PASS - started)
            except Exception:  # never ends while the responder runs: the next pass tries again
                log.exception("checking quarantines again failed")

    def recheck_idle(self) -> int:
        """One pass of run_idle_rechecks: the rechecks started (the longest due first, a bounded
        number: the others are due next pass)."""
        due = self.incidents.rechecks_due(
            self._clock_ns(), IDLE_RECHECKS_PER_PASS, int(RECHECK_SECONDS * 1e9)
        )
        for state in due:
            self._maybe_recheck(state)
        return len(due)

    async def recheck_closed(self, budget: int) -> int:
        """Check again, one after another, up to ``budget`` quarantines and blocks whose incidents
        are no longer open (their window passed, or the responder restarted): of each pod, the
        latest incident that put one on, until a release, a lapse or the pod gone is journaled
        (IsolatedPods, read from the journal a few records at a time), the longest unchecked first.
        Each is rebuilt from the journal and rechecked as an open one is (a lapse journaled and told
        in its thread, a release found, the pod gone). Returns how many were checked."""
        if budget <= 0 or self._closed:
            return 0
        records = await asyncio.to_thread(self._journal.isolation_records, self._isolated.after)
        self._isolated.read(records)
        listed = self._isolated.incidents()
        # Forget the incidents no longer listed: the memory stays bounded by those that are.
        for gone in self._closed_checked.keys() - set(listed.values()):
            del self._closed_checked[gone]
        # An open incident of the pod (the latest, or a newer one) is its own rechecks' to prove.
        open_pods = self.incidents.open_pods()
        closed = [(pod, incident_id) for pod, incident_id in listed.items() if pod not in open_pods]
        closed.sort(key=lambda item: self._closed_checked.get(item[1], 0))
        checked = 0
        for pod, incident_id in closed[:budget]:
            if self._closed:
                break
            self._closed_checked[incident_id] = self._clock_ns()
            rows = await asyncio.to_thread(self._journal.incidents_by_id, [incident_id])
            state = (
                await asyncio.to_thread(self._journaled.restored_state, rows[incident_id]) if rows else None
            )
            report = state.report if state is not None else None
            if state is None or report is None or not (report.labelled or report.blocked):
                self._isolated.forget(pod)  # pruned or unreadable (logged), or nothing of it on the pod
                continue
            await self._recheck(state)
            checked += 1
        return checked

    def _take_up_later(self) -> None:
        asyncio.get_running_loop().call_later(REDECIDE_AFTER_SECONDS, self._deferred_waiting.set)

    async def _take_up_deferred(self, after: int) -> int:
        """Take up the deferred alerts journaled after row ``after``; returns the last row read."""
        while rows := await asyncio.to_thread(self._journal.deferred_rows, after, DEFERRED_BATCH):
            for seq, size, sender in rows:
                if not await self._take_up(seq, size):  # the journal refused: again in a while
                    self._take_up_later()
                    return after
                self._deferred_shares.remove(sender, size + ROW_BYTES)
                after = seq
        return after

    async def _take_up(self, seq: int, size: int) -> bool:
        """Dispatch deferred row ``seq`` (a body of ``size`` bytes) once it holds a slot: read whole
        only then, so that what waits for room is a row number. False: the journal refused to mark
        it taken up."""
        weight = size
        await self._slots.take(weight)
        try:
            item = await asyncio.to_thread(self._journal.deferred_alert, seq)
            taken = item is not None and await self._journal.run(Journal.op_undefer(seq))
        except Exception as exc:
            self._slots.release(weight)
            log.warning(
                "a deferred alert could not be taken up; tried again later",
                extra={"seq": seq, "error": f"{type(exc).__name__}: {exc}"},
            )
            return False
        if item is None or not taken:  # unreadable (logged), or no longer deferred: taken up already
            self._slots.release(weight)
            return True
        try:
            self._dispatch(item.alert, item.received_ns, weight)
        except Exception as exc:  # journaled pending: a restart resumes it
            self._failed(item.alert, exc)
        return True

    def _check_journal_room(self, source: InputName) -> None:
        if self._journal.full:
            self._metrics.overloaded.labels(source.value).inc()
            raise Overloaded(RETRY_AFTER_SECONDS * 5, "journal is at its size limit")

    def _take(
        self,
        alert: Alert,
        source: InputName,
        raw: bytes | None,
        on_done: Callable[[Accepted | BaseException], None],
        weight: int,
    ) -> None:
        """Journal an alert that holds a slot of ``weight`` (its bytes); ``on_done`` hears the outcome."""
        received_ns = self._clock_ns()
        self._journal.account_alert(weight)
        repeat = self.incidents.open_repeat(alert, received_ns)
        if repeat is not None:
            self._write_repeat(repeat, alert, source, raw, received_ns, on_done, weight)
            return
        self._journal.schedule_call(
            Journal.op_append_alert(alert, source.value, received_ns, raw),
            lambda new, error: self._alert_written(new, error, alert, source, received_ns, on_done, weight),
        )

    def _alert_written(
        self,
        new: bool | None,
        error: BaseException | None,
        alert: Alert,
        source: InputName,
        received_ns: int,
        on_done: Callable[[Accepted | BaseException], None],
        weight: int,
    ) -> None:
        if error is not None:
            # Refused, yet maybe committed (an fsync that failed after its commit, a writer
            # process gone mid-answer): its sender's retry then finds it journaled, and must
            # still have it processed.
            self._remember_undispatched(alert.alert_id)
            self._slots.release(weight)
            on_done(error)
            return
        if not new and alert.alert_id in self._undispatched:
            # Journaled, pending, and never dispatched (nothing else takes it up before a restart):
            # this retry is the one that gets it processed, not a redelivery.
            new = True
        if not new:
            self._slots.release(weight)
            self._metrics.redelivered.labels(source.value).inc()
            on_done(Accepted(alert.alert_id, new=False))
            return
        self._undispatched.pop(alert.alert_id, None)
        self._metrics.count_received(source.value, alert.source, drill=is_drill(alert.sender))
        try:
            self._dispatch(alert, received_ns, weight)  # the slot is now the dispatched work's
        except Exception as exc:  # journaled: it stays pending and is resumed after a restart
            self._remember_undispatched(alert.alert_id)
            self._failed(alert, exc)
            on_done(exc)
            return
        on_done(Accepted(alert.alert_id, new=True))

    def _remember_undispatched(self, alert_id: str) -> None:
        """Keep the newest MAX_UNDISPATCHED such ids: one forgotten is resumed by the next restart
        (after a failed fsync or a lost writer, /healthz asks for one)."""
        self._undispatched[alert_id] = None
        if len(self._undispatched) > MAX_UNDISPATCHED:
            del self._undispatched[next(iter(self._undispatched))]

    def _repeat_written(
        self,
        new: bool | None,
        error: BaseException | None,
        state: IncidentState,
        alert: Alert,
        source: InputName,
        on_done: Callable[[Accepted | BaseException], None],
        weight: int | None,
    ) -> None:
        if weight is not None:  # None: written without a slot (a deferred repeat)
            self._slots.release(weight)
        if error is not None:
            self._uncount(state)
            on_done(error)
            return
        if not new:
            self._uncount(state)  # a redelivery: it was counted when it first came
            self._metrics.redelivered.labels(source.value).inc()
            on_done(Accepted(alert.alert_id, new=False))
            return
        self._metrics.count_received(source.value, alert.source, drill=is_drill(alert.sender))
        self._metrics.count_duplicate(alert.rule)
        self.stats.processed += 1
        try:
            self._maybe_tell_after_release(state, alert)
            self._maybe_schedule_repeat(state)
            self._maybe_recheck(state)
            self._maybe_block_more(state, alert)
        except Exception:  # the repeat is journaled and final; only its follow-up failed
            log.exception("repeat follow-up failed", extra={"alert_id": alert.alert_id})
        on_done(Accepted(alert.alert_id, new=True))

    def reject(self, source: InputName, reason: str, detail: str, *, said: bool = False) -> None:
        """Count a refused alert, and log it unless ``said`` (a command printed it already)."""
        self._metrics.rejected.labels(source.value, reason).inc()
        if not said:
            log.warning(
                "alert rejected", extra={"input": source.value, "reason": reason, "detail": detail[:500]}
            )

    # -- lifecycle ------------------------------------------------------------------------------

    async def recover(self) -> int:
        """Rebuild in-memory state from the journal and resume unfinished alerts. Returns how many.
        UserError, naming the journal, when SQLite cannot read it (a damaged page)."""
        with self._journal.start_failures_as_user_error():
            return await self._recover()

    async def _recover(self) -> int:
        now = self._clock_ns()
        window_seconds = self._config.dedupe.window_seconds
        # What this restores, pruning keeps: an open incident and its opening alert.
        self._journal.keep_incidents_open_for(window_seconds)
        window_ns = int(window_seconds * 1e9)
        # The breakers first: a restored incident's retry asks when the quarantine breaker reopens
        # (review-session-51 L1: asked of an empty breaker, a held quarantine got no try at all).
        guardrails = self._config.guardrails
        breaker_window = int(guardrails.max_quarantines.window_seconds * 1e9)
        for finished in self._journal.quarantine_times_since(now - breaker_window):
            self._breaker.take(finished)
        block_window = int(guardrails.max_blocks.window_seconds * 1e9)
        for finished, owner in self._journal.blocks_since(now - block_window):
            self._block_breaker.take(finished, owner)
        for row in self._journal.incidents_since(now - window_ns):
            restored = self._journaled.restored_state(row)
            if restored is not None:
                self.incidents.restore(restored)
                report = restored.report
                if report is not None and still_withheld(
                    report, self._address_of(restored.first_alert), self._cut_asked(report.decision)
                ):
                    # As when it was decided: a repeat decides it again (a block the block breaker
                    # held: a repeat takes it on), and so does a retry.
                    if withheld_for_passing_reason(report.verification, report.decision, report.outcomes):
                        restored.reopen_after_ns = restored.reopen_after_ns or row.opened_ns
                    # Not once its tries were over (told so in its thread): a repeat decides it.
                    found = report.verification.status is not VerificationStatus.POD_NOT_FOUND
                    if found and report.tries_over is None:
                        self._schedule_retry(restored, 0, spread=True)
        # A backlog deferred by the last run counts against its senders' shares until taken up.
        self._deferred_shares.load(self._journal.deferred_bytes_by_sender())
        pending = self._journal.pending_alerts()
        held, repeats = self._journaled.openings(pending)
        held = {incident_id: self._journaled.decision_readable(row) for incident_id, row in held.items()}
        for item in pending:
            weight = _weight(item.alert, None)
            await self._slots.take(weight)
            self._resume(item.alert, item.received_ns, held, repeats, weight)
        if pending:
            log.info("resuming unfinished alerts", extra={"count": len(pending)})
        return len(pending)

    async def close(self) -> None:
        """No more retries of withheld isolations (the service stops): none is scheduled from now
        on (alerts still finishing), each timer is cancelled, and so is each try under way (what it
        had not journaled, the next start tries again)."""
        self._closed = True
        for timer in self._retries.values():
            timer.cancel()
        self._retries.clear()
        for task in list(self._retrying):
            task.cancel()
        for task in list(self._retrying):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until no alert is in flight (tests, ingest, shutdown)."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    @property
    def in_flight(self) -> int:
        return self.stats.in_flight

    def breaker_open(self) -> bool:
        return self._breaker.is_open(self._clock_ns())

    def block_breaker_open(self) -> bool:
        return self._block_breaker.is_open(self._clock_ns())

    # -- processing -----------------------------------------------------------------------------

    def _dispatch(self, alert: Alert, received_ns: int, weight: int) -> None:
        """Fold or open: the work holds the alert's slot (of ``weight``) until it is done."""
        self.stats.in_flight += 1
        self._idle.clear()
        state, opens = self.incidents.observe(alert, received_ns)
        if not opens:
            self._fold(state, alert, weight)
            return
        self._open(state, alert, received_ns, weight)

    def _resume(
        self,
        alert: Alert,
        received_ns: int,
        held: dict[str, IncidentRow],
        repeats: dict[str, JournaledRepeats],
        weight: int,
    ) -> None:
        """Dispatch an alert resumed after a restart (see :meth:`JournaledIncidents.openings`).

        The opener of an incident the journal holds opens that incident again (decided again,
        finished "opened"), even when a later incident of its key is live: folded into that one,
        it would leave its own undecided for good, though its pod was acted on. So does an alert
        whose incident the journal lacks but whose repeats or action records name it, counting the
        repeats in: folded into a later incident, it would leave them naming an incident the
        journal never gets. Any other alert is dispatched as a new one."""
        incident_id = incident_id_for(alert)
        row = held.get(incident_id)
        journaled = repeats.get(incident_id)
        if row is None and journaled is None:
            self._dispatch(alert, received_ns, weight)
            return
        self.stats.in_flight += 1
        self._idle.clear()
        if row is not None:
            state = self.incidents.by_id(incident_id)
            if state is None:  # not restored: a later incident holds its key, or it is past the window
                state = self.incidents.resume(self._journaled.opened_by(alert, row))
        else:
            assert journaled is not None  # one of the two, or dispatched above
            # Repeats were journaled into its incident while the opening write (refused) was in
            # flight, or the writes after that one recorded its actions: open that incident,
            # counting the repeats, even if a later one now holds the key, so that they do not name
            # an incident the journal never gets. Its actions are reset (and taken again).
            state = self.incidents.resume(
                IncidentState(
                    incident_id=incident_id,
                    key=IncidentKey.of(alert),
                    first_alert=alert,
                    opened_ns=received_ns,
                    last_seen_ns=max(received_ns, journaled.last_received_ns),
                    count=1 + journaled.count,
                    restored=True,
                )
            )
        self._open(state, alert, received_ns, weight)

    def _open(self, state: IncidentState, alert: Alert, received_ns: int, weight: int) -> None:
        coroutine = self._opening(state, alert, received_ns)
        task = asyncio.get_running_loop().create_task(self._guarded(coroutine, alert, weight))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _opening(self, state: IncidentState, alert: Alert, received_ns: int) -> None:
        """Open the incident; one that fails before it is decided (an error no step expected) is
        decided afresh by a repeat after REDECIDE_AFTER_SECONDS, not left undecided while every
        repeat of its window folds into it, with no action and no one told."""
        try:
            await self._open_incident(state, alert, received_ns)
        except Exception:
            if state.report is None and state.reopen_after_ns is None:
                state.reopen_after_ns = self._clock_ns() + int(REDECIDE_AFTER_SECONDS * 1e9)
            raise

    async def _guarded(self, work: Any, alert: Alert, weight: int) -> None:
        # This task's own context: every log line written while processing the alert names it.
        current_alert_id.set(alert.alert_id)
        try:
            await work
            self.stats.processed += 1
        except Exception as exc:
            self._failed(alert, exc)
        finally:
            self._done_one(weight)

    def _failed(self, alert: Alert, exc: BaseException) -> None:
        # The alert stays pending in the journal: a restart resumes it. Never crash the loop.
        self.stats.failed += 1
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
        self.stats.stuck.append(alert.alert_id)
        log.error("alert processing failed", exc_info=exc, extra={"alert_id": alert.alert_id})

    def _done_one(self, weight: int) -> None:
        self._slots.release(weight)
        self.stats.in_flight -= 1
        if self.stats.in_flight == 0:
            self._idle.set()

    def _fold(self, state: IncidentState, alert: Alert, weight: int) -> None:
        """A repeat within the window: count it, and let the incident's thread say so.

        Repeats are most of a storm, so this is the hot path: one journal write and a callback,
        no task of its own (a task per alert cost more than the rest of the fold)."""
        self._metrics.count_duplicate(alert.rule)
        written = self._journal.schedule(
            Journal.op_fold_duplicate(
                alert, state.incident_id, state.count, state.last_seen_ns, self._clock_ns()
            )
        )
        written.add_done_callback(lambda future: self._folded(future, state, alert, weight))

    def _folded(self, written: asyncio.Future[None], state: IncidentState, alert: Alert, weight: int) -> None:
        try:
            if written.cancelled():
                return
            error = written.exception()
            if error is not None:
                self._uncount(state)  # not journaled (it stays pending): a restart counts it when resumed
                self._failed(alert, error)
                return
            self.stats.processed += 1
            self._maybe_tell_after_release(state, alert)
            self._maybe_schedule_repeat(state)
            self._maybe_recheck(state)
            self._maybe_block_more(state, alert)
        finally:
            self._done_one(weight)

    def _maybe_block_more(self, state: IncidentState, alert: Alert) -> None:
        """A repeat of an incident that blocks destinations, naming an address it has not blocked:
        block that one too (in the background), or the attack could switch destinations within the
        window while its repeats fold in."""
        if not self._blocks_destinations or state.released is not None:
            return
        report = state.report
        # A block the block breaker held back at the decision is taken on here too, once it closes.
        if report is not None and not (
            ActionName.BLOCK_DESTINATION in report.decision.actions or report.decision.block_breaker_open
        ):
            return
        settings = self._config.block_destination
        address = self._address_of(alert)
        if not address:
            return
        if report is None:  # not decided yet: looked at once it is
            if len(state.blocks_waiting) < settings.max_per_pod and address not in state.blocks_waiting:
                state.blocks_waiting[address] = alert
                self.incidents.reweigh(state, alert_bytes(alert))  # kept until the decision
            return
        now = self._clock_ns()
        retry_ns = state.blocking.get(address, 0)
        if (
            retry_ns == _NEVER
            or not deadline_passed(retry_ns, now, int(REDECIDE_AFTER_SECONDS * 1e9))
            or any(names_address(o, address) and not o.held_by_block_breaker for o in report.outcomes)
        ):
            return
        state.blocking[address] = _NEVER  # taken on: repeats meanwhile do not start another
        task = asyncio.get_running_loop().create_task(self._block_more(state, alert, address))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _block_more(self, state: IncidentState, alert: Alert, address: str) -> None:
        key = state.key
        retry_ns = self._clock_ns() + int(REDECIDE_AFTER_SECONDS * 1e9)
        try:
            async with self._pod_lock(key.namespace, key.pod):
                # Read fresh: a release since the cached read must not be undone by this block.
                verification, pod = await self._pod_check.verify(alert, fresh=True)
                report = state.report
                if not verification.verified or pod is None or report is None:
                    state.blocking[address] = retry_ns
                    return
                released = self._released_since(state, pod)
                if released is not None:  # a person gave the pod back its traffic: not blocked again
                    self._found_released(state, released, pod)
                    return
                dry_run = report.decision.dry_run
                now = self._clock_ns()
                owner = (key.namespace, key.pod)
                past_share = (
                    ""
                    if dry_run
                    else pod_past_block_share(self._block_breaker.recent_of(owner, now), pod, self._config)
                )
                if past_share:
                    outcome = await self._quarantine_egress_instead(state.incident_id, pod, alert, past_share)
                elif not dry_run and self._block_breaker.is_open(now):
                    state.blocking[address] = retry_ns
                    if any(names_address(o, address) for o in report.outcomes):
                        return  # said once; tried again after REDECIDE_AFTER_SECONDS
                    outcome = self._block_withheld(address, now)
                    self._metrics.block_breaker_open.set(1)
                else:
                    token = None if dry_run else self._block_breaker.take(now, owner)
                    counted = False
                    try:
                        # A release made after the fresh read above stops it too (its patch would
                        # clear the release's record and label the pod again).
                        outcome = await self._block_destination(
                            state.incident_id, pod, alert, dry_run=dry_run, yield_to_release=True
                        )
                        counted = outcome.newly_blocked
                    except ReleasedMeanwhile as released_meanwhile:
                        state.blocking.pop(address, None)  # not taken on: a person released the pod
                        # What other configs hold, as read before the release: it changes none of theirs.
                        self._found_released(state, released_meanwhile.record, pod)
                        return
                    finally:
                        if token is not None and not counted:  # also when it raised
                            self._block_breaker.give_back(token)
                if outcome.status is OutcomeStatus.WITHHELD and said_held(report, outcome):
                    state.blocking[address] = retry_ns
                    return  # held back as before (the quarantine breaker): said once, tried again later
                self._metrics.outcomes.labels(outcome.action, outcome.status.value).inc()
                await self._journal.run(
                    Journal.op_record_action(
                        state.incident_id, alert.alert_id, alert.namespace, alert.pod, outcome
                    )
                )
        except Exception as exc:  # the pool is shutting down, the API or the journal failed
            state.blocking[address] = retry_ns
            log.warning(
                "follow-up block failed",
                extra={"incident": state.incident_id, "error": f"{type(exc).__name__}: {exc}"},
            )
            return
        if outcome.status in (OutcomeStatus.FAILED, OutcomeStatus.WITHHELD):
            state.blocking[address] = retry_ns  # tried again by a repeat after REDECIDE_AFTER_SECONDS
        if state.report is not None:
            state.report = dataclasses.replace(state.report, outcomes=(*state.report.outcomes, outcome))
            if state.report.decision.notify and self._notifications:
                now = self._clock_ns()
                channel = state.report.decision.slack_channel
                self._journal.schedule(
                    Journal.op_schedule_notification(state.incident_id, "update", channel, now, now)
                ).add_done_callback(
                    lambda written: self._notification_written(written, state, None, "update")
                )

    def _block_withheld(self, address: str, now: int) -> ActionOutcome:
        """A follow-up block the block circuit breaker holds back."""
        reason = block_breaker_reason(self._block_breaker.recent(now), self._config)
        return ActionOutcome(
            action=BLOCK_DESTINATION,
            status=OutcomeStatus.WITHHELD,
            detail=f"{reason}; {address} is not blocked, tried again on a later repeat",
            started_ns=now,
            finished_ns=now,
            extra={BLOCKED_ADDRESS: address},
        )

    async def _quarantine_egress_instead(
        self, incident_id: str, pod: PodContext, alert: Alert, why: str
    ) -> ActionOutcome:
        """A block one too many for the pod (``why``: past its share of the block breaker, or its
        block policy full): the pod reaches too many places to block one by one, or spends the
        cluster's blocks on decoys, so its egress is quarantined instead
        (block_destination.escalate_to_quarantine), taking a slot of the quarantine breaker.
        Withheld, and said, when escalation is off or that breaker is open."""
        now = self._clock_ns()
        address = self._address_of(alert)
        extra: dict[str, Any] = {BLOCKED_ADDRESS: address} if address else {}
        if not self._config.block_destination.escalate_to_quarantine:
            detail = f"{why}; block_destination.escalate_to_quarantine is off"
            return ActionOutcome(
                BLOCK_DESTINATION,
                OutcomeStatus.WITHHELD,
                detail,
                started_ns=now,
                finished_ns=now,
                extra=extra,
            )
        quarantined = is_quarantined(pod, self._config)
        if not quarantined and self._breaker.is_open(now):
            held = quarantine_breaker_reason(self._breaker.recent(now), self._config)
            return ActionOutcome(
                ActionName.QUARANTINE.value,
                OutcomeStatus.WITHHELD,
                f"{why}; its egress is not quarantined instead: {held}",
                started_ns=now,
                finished_ns=now,
                extra={**extra, HELD_ESCALATION: True},
            )
        token = None if quarantined else self._breaker.take(now)
        outcome: ActionOutcome | None = None
        try:
            outcome = await self._quarantine(pod, alert, incident_id, dry_run=False, isolate=Isolation.EGRESS)
        finally:
            if token is not None and (outcome is None or not outcome.labelled):
                self._breaker.give_back(token)
        return _instead_of_block(why, outcome)

    async def _quarantine(
        self, pod: PodContext, alert: Alert, incident_id: str, *, dry_run: bool, isolate: Isolation | None
    ) -> ActionOutcome:
        """Quarantine ``pod`` for ``alert`` (the actions' quarantine, on the pool)."""
        outcome = await self._in_pool(
            self._actions.quarantine,
            pod,
            alert,
            incident_id,
            f"{alert.priority.label}: {alert.rule}",
            dry_run=dry_run,
            isolate=isolate,
        )
        # Its labels changed, or a release the read missed withheld it: the next read must be fresh.
        if outcome.labelled or outcome.status is OutcomeStatus.WITHHELD:
            self._directory.forget(pod.namespace, pod.name)
        return outcome

    def _cut_asked(self, decision: Decision) -> Isolation:
        """The cut ``decision``'s quarantine asks for: its policy's, else quarantine.isolate."""
        return Isolation(decision.isolate) if decision.isolate else self._config.quarantine.isolate

    def _address_of(self, alert: Alert) -> str:
        """The remote address a block of ``alert`` is about, or "" when it names none to block."""
        settings = self._config.block_destination
        target = destination.target_of(alert, settings.address_fields, settings.never_block)
        return "" if isinstance(target, str) else str(target.address)

    async def _block_destination(
        self,
        incident_id: str,
        pod: PodContext,
        alert: Alert,
        *,
        dry_run: bool,
        yield_to_release: bool = False,
    ) -> ActionOutcome:
        """An incident's block: its opening one gives way (WITHHELD) to a release after the alert's
        event that the pod's read missed, as the quarantine does; a follow-up (``yield_to_release``)
        to any release since the read (ReleasedMeanwhile). A pod whose block policy is full has its
        egress quarantined instead (_quarantine_egress_instead)."""
        outcome = await self._block_destination_once(
            pod, alert, dry_run=dry_run, yield_to_release=yield_to_release
        )
        if outcome.status is OutcomeStatus.LEAKY and outcome.extra.get(POLICY_FULL):
            why = outcome.detail.removesuffix(f"; {QUARANTINE_EGRESS_ADVICE}")
            return await self._quarantine_egress_instead(incident_id, pod, alert, why)
        return outcome

    async def _block_destination_once(
        self, pod: PodContext, alert: Alert, *, dry_run: bool, yield_to_release: bool
    ) -> ActionOutcome:
        try:
            outcome = await self._in_pool(
                self._actions.block_destination,
                pod,
                alert,
                dry_run=dry_run,
                yield_to_release=yield_to_release,
                release_since_ns=None if yield_to_release else alert.time_ns + CLOCK_SKEW_NS,
            )
        except ReleasedMeanwhile:
            self._directory.forget(pod.namespace, pod.name)  # released: the next read must be fresh
            raise
        # Its labels changed, or a release the read missed withheld it: the next read must be fresh.
        if outcome.block_labelled or outcome.status is OutcomeStatus.WITHHELD:
            self._directory.forget(pod.namespace, pod.name)
        return outcome

    def _uncount(self, state: IncidentState) -> None:
        """Take back a repeat counted when it came, whose write was refused or was a redelivery.
        Writes queued meanwhile carried the count with it in; the journal's counter is set back
        after them (best effort: if that write is refused too, the counter stays one high)."""
        state.count -= 1
        try:
            self._journal.schedule_call(
                Journal.op_recount_incident(state.incident_id, state.count),
                lambda _, error: _log_refused_recount(state.incident_id, error),
            )
        except RuntimeError as exc:  # the journal is closing: the answer still goes out
            _log_refused_recount(state.incident_id, exc)

    def _maybe_schedule_repeat(self, state: IncidentState) -> None:
        report = state.report
        if report is None or not report.decision.notify or not self._notifications or state.repeat_pending:
            return
        if state.count <= 1:
            return
        now = self._clock_ns()
        # A repeat sent "later than now" was sent at most now (the clock was set back since).
        last_sent = min(state.last_repeat_ns, now)
        due = max(now, last_sent + repeat_interval_ns(self._config.slack, state.repeats_sent))
        if report.after_release is not None and not report.after_release.told:
            due = now  # the pod still alerts after its release: told at once (_maybe_tell_after_release)
        state.repeat_pending = True
        # schedule(): settled on this loop, so waking the notifier happens on its own loop.
        self._journal.schedule(
            Journal.op_schedule_notification(
                state.incident_id, "repeat", report.decision.slack_channel, due, now
            )
        ).add_done_callback(lambda written: self._notification_written(written, state, None, "repeat"))

    def _maybe_tell_after_release(self, state: IncidentState, alert: Alert) -> None:
        """The first repeat after a person released the pod: the release may have been a mistake.
        Its repeat reply is posted anew, at once and shown in the channel, with what it ran and
        the command to quarantine the pod again (not quarantined again by itself: the person
        judged it safe). Later repeats are counted in that reply; a later release is told again
        on its first repeat."""
        report = state.report
        if report is None or not report.decision.notify or not self._notifications:
            return
        released = released_in(report) or state.released
        told = report.after_release
        if released is None or (told is not None and told.released_at_ns == released.at_ns):
            return
        state.report = dataclasses.replace(
            report, after_release=AlertingAfterRelease(released.at_ns, released.by, alert, state.last_seen_ns)
        )
        if state.repeat_pending:  # its update waits for the repeat interval: it goes now
            self._journal.schedule(RepeatDueNow(state.incident_id, self._clock_ns())).add_done_callback(
                lambda written: self._notification_written(written, state, alert.alert_id, "repeat, due now")
            )

    def _notification_written(
        self, written: asyncio.Future[Any], state: IncidentState, alert_id: str | None, kind: str
    ) -> None:
        """Wake the notifier for a queued notification, or say (an error) why it was not queued."""
        error = None if written.cancelled() else written.exception()
        if error is None:
            self._wake_notifier()
            return
        if kind == "repeat":
            state.repeat_pending = False  # not queued: a later repeat queues it again
        log_failed_write(log, error, f"schedule_notification({kind})", state.incident_id, alert_id)

    def _write(self, what: str, incident_id: str, alert: Alert, op: Op) -> tuple[str, Future[Any]]:
        """Hand an incident's write to the journal without waiting for it. A write that fails is
        logged as an error at once, naming the alert and the op (it used to go unheard: the
        incident could be missing from the journal while its alert was finished "opened")."""
        written = self._journal.submit(op)
        alert_id = alert.alert_id

        def heard(done: Future[Any]) -> None:  # on the journal writer's thread
            error = None if done.cancelled() else done.exception()
            if error is not None:
                log_failed_write(log, error, what, incident_id, alert_id)

        written.add_done_callback(heard)
        return what, written

    async def _confirm(self, state: IncidentState, writes: Sequence[tuple[str, Written]]) -> None:
        """Wait until ``writes`` are committed (mostly they are already); JournalWriteFailed when
        any failed. The next repeat then opens the incident afresh instead of folding into one the
        journal may not hold."""
        failed: list[str] = []
        for what, written in writes:
            if not written.done():
                with contextlib.suppress(Exception):  # read below, with the ones already done
                    await asyncio.wrap_future(written)
            error = None if written.cancelled() else written.exception()
            if error is not None:
                failed.append(f"{what}: {type(error).__name__}: {error}")
        if failed:
            state.reopen_after_ns = self._clock_ns()
            raise JournalWriteFailed(failed)

    def _pod_lock(self, namespace: str, pod: str) -> asyncio.Lock:
        key = (namespace, pod)
        lock = self._pod_locks.get(key)
        if lock is None:
            if len(self._pod_locks) > 10000:
                self._pod_locks = {k: v for k, v in self._pod_locks.items() if v.locked()}
            lock = self._pod_locks[key] = asyncio.Lock()
        return lock

    async def _in_pool(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await in_pool(self._executor, function, *args, **kwargs)

    async def _open_incident(self, state: IncidentState, alert: Alert, received_ns: int) -> None:
        key = state.key
        self._metrics.incidents.labels(self._metrics.rule_label(alert.rule)).inc()
        opening = [
            self._write(
                "open_incident",
                state.incident_id,
                alert,
                Journal.op_open_incident(
                    IncidentRow(
                        incident_id=state.incident_id,
                        key_digest=key.digest(),
                        rule=key.rule,
                        namespace=key.namespace,
                        pod=key.pod,
                        container_id=key.container_id,
                        hostname=key.hostname,
                        first_alert_id=alert.alert_id,
                        first_event_ns=alert.time_ns,
                        opened_ns=received_ns,
                        # Later than received_ns when repeats came first: those folded in before
                        # this write, or journaled into the incident before a restart.
                        last_seen_ns=state.last_seen_ns,
                        count=state.count,
                        decided=False,
                    )
                ),
            )
        ]
        if state.restored:
            opening.append(
                self._write(
                    "reset_actions", state.incident_id, alert, Journal.op_reset_actions(state.incident_id)
                )
            )
        deciding: list[tuple[str, Written]] = []
        # Before the pod's lock: its other incidents go on meanwhile.
        before = await self._pod_check.wait_until_listed(alert, received_ns)
        async with self._pod_lock(key.namespace, key.pod):
            verification, pod = await self._pod_check.verify(
                alert, read=before.failed, recheck=not before.fresh, received_ns=received_ns
            )
            self._metrics.verifications.labels(verification.status.value).inc()
            decision = self._decide(alert, pod, verification, state.reopens, received_ns)
            decided_ns = self._clock_ns()
            self._metrics.alert_to_decision.observe((decided_ns - received_ns) / 1e9)
            self._count_decision(decision)
            deciding.append(
                self._write(
                    "record_decision",
                    state.incident_id,
                    alert,
                    Journal.op_record_decision(
                        state.incident_id,
                        decided_ns,
                        verification_to_json(verification),
                        decision_to_json(decision),
                        pod_to_json(pod) if pod is not None else None,
                    ),
                )
            )
            outcomes = await self._act_within_breakers(state, alert, pod, decision, received_ns, deciding)
        self._plan_follow_up(state, verification, decision, outcomes)
        # No notification about, and no "opened" for, an incident the journal does not hold.
        await self._confirm(state, opening)
        now = self._clock_ns()
        if decision.notify and self._notifications:
            # Queued behind the decision's write, and only if that write is taken (else nothing
            # could render it after a restart); confirmed with it: refused, the alert is not
            # finished, and a restart decides it again and queues the post then (finished
            # "opened", the post would be lost for good).
            queued = self._journal.schedule(
                Journal.op_schedule_notification(
                    state.incident_id, "incident", decision.slack_channel, now, now, decided_only=True
                )
            )
            queued.add_done_callback(
                lambda written: self._notification_written(written, state, alert.alert_id, "incident")
            )
            deciding.append(("schedule_notification(incident)", queued))
        await self._confirm(state, deciding)
        # Set once the journal holds the incident and its decision: a repeat (queued only for an
        # incident with a report) must not follow an incident notification that was never queued,
        # nor be queued for an incident that a restart could not render (its decision refused).
        # (Until then the notifier renders the incident's post from the journal.)
        state.report = IncidentReport(
            incident_id=state.incident_id,
            key=key,
            alert=alert,
            count=state.count,
            first_seen_ns=received_ns,
            last_seen_ns=state.last_seen_ns,
            pod=pod,
            verification=verification,
            decision=decision,
            outcomes=tuple(outcomes),
        )
        for waiting_alert in self._take_blocks_waiting(state):
            self._maybe_block_more(state, waiting_alert)
        await self._journal.run(Journal.op_finish_alert(alert, state.incident_id, "opened", now))
        # What needs a person (a LEAKY or failed action, one held back, a possible forgery) is a
        # warning, seen where only warnings are logged.
        log.log(
            logging.WARNING if state.report.needs_eyes else logging.INFO,
            "incident decided",
            extra={
                "alert_id": alert.alert_id,
                "incident": state.incident_id,
                "rule": alert.rule,
                "pod": key.pod_ref,
                "verification": verification.status.value,
                "decision": decision.summary(),
                "outcomes": [o.describe() for o in outcomes],
                # Who delivered the opening alert (the HTTP input names its senders).
                **({"sender": alert.sender.text()} if alert.sender is not None else {}),
            },
        )
        # Repeats that arrived while we were deciding get their thread update now.
        self._maybe_schedule_repeat(state)

    def _take_blocks_waiting(self, state: IncidentState) -> list[Alert]:
        """The repeats kept for their addresses until the incident was decided, no longer kept."""
        waiting, state.blocks_waiting = list(state.blocks_waiting.values()), {}
        self.incidents.reweigh(state, -sum(map(alert_bytes, waiting)))
        return waiting

    def _decide(
        self,
        alert: Alert,
        pod: PodContext | None,
        verification: Verification,
        reopens: Reopened | None,
        received_ns: int,
    ) -> Decision:
        """The decision on ``alert`` as checked against ``pod``, with the breakers as they are now;
        a release on the pod weighed against the alert as dated credibly when it came (``received_ns``)."""
        alert = dated_credibly(alert, received_ns)
        key = IncidentKey.of(alert)
        now = self._clock_ns()
        guardrail_state = GuardrailState(
            self._breaker.recent(now),
            self._block_breaker.recent(now),
            self._block_breaker.recent_of((key.namespace, key.pod), now),
            now,
        )
        decision = decide(alert, pod, verification, guardrail_state, self._config)
        if reopens is not None:
            decision = dataclasses.replace(decision, reopens=reopens)
        self._metrics.breaker_open.set(1 if decision.breaker_open else 0)
        self._metrics.block_breaker_open.set(1 if decision.block_breaker_open else 0)
        return decision

    def _count_decision(self, decision: Decision) -> None:
        for action in decision.actions or (None,):
            label = action.value if action is not None else "none"
            self._metrics.decisions.labels(self._metrics.policy_label(decision.policy), label).inc()

    async def _act_within_breakers(
        self,
        state: IncidentState,
        alert: Alert,
        pod: PodContext | None,
        decision: Decision,
        received_ns: int,
        writes: list[tuple[str, Written]],
        *,
        retry: RetryTell | None = None,
    ) -> list[ActionOutcome]:
        """:meth:`_act`, a breaker's slot taken for the quarantine and for the block it may make,
        given back when it did not make them."""
        key = state.key
        now = self._clock_ns()
        token = block_token = None
        if decision.isolates and not decision.dry_run and not is_quarantined(pod, self._config):
            token = self._breaker.take(now)
        if ActionName.BLOCK_DESTINATION in decision.actions and not decision.dry_run:
            block_token = self._block_breaker.take(now, (key.namespace, key.pod))
        outcomes: list[ActionOutcome] = []
        try:
            # Its actions weigh a release made meanwhile against the alert as dated credibly too.
            credible = dated_credibly(alert, received_ns)
            outcomes = await self._act(state, credible, pod, decision, received_ns, writes, retry=retry)
        finally:
            # Slots of what did not happen (or raised) go back.
            if token is not None and not any(o.labelled for o in outcomes):
                self._breaker.give_back(token)
            if block_token is not None and not any(o.newly_blocked for o in outcomes):
                self._block_breaker.give_back(block_token)
        return outcomes

    def _plan_follow_up(
        self,
        state: IncidentState,
        verification: Verification,
        decision: Decision,
        outcomes: list[ActionOutcome],
        *,
        tried: int = 0,
    ) -> None:
        """Decide when repeats stop folding into this incident.

        An isolation that did not happen for a passing reason (the API was down, the pod was not
        found yet, the breaker was open, the action failed) is decided again by the first repeat
        after REDECIDE_AFTER_SECONDS: a blip must not leave an attack alone for the whole window.
        Without a repeat it is tried again after each of dedupe.retry_withheld_seconds in turn
        (``tried``: how many tries were made already), so a one-off alert is too.
        A quarantine that did happen is checked again now and then while repeats come: if its
        label is gone (released, or removed), the next repeat opens a new incident."""
        now = self._clock_ns()
        # (A block the block breaker held back is not reopened for: repeats take it on, see
        # _maybe_block_more, without a new incident every REDECIDE_AFTER_SECONDS.)
        if withheld_for_passing_reason(verification, decision, outcomes):
            state.reopen_after_ns = now + int(REDECIDE_AFTER_SECONDS * 1e9)
            # Not a pod that is not there (a forger names made-up pods; a deleted one needs nothing),
            # nor a prediction: a repeat still decides those again.
            if not decision.dry_run and verification.status is not VerificationStatus.POD_NOT_FOUND:
                self._schedule_retry(state, tried, decision=decision)
            return
        if decision.block_breaker_open and not decision.dry_run:
            # Its repeats fold in and take the block on too.
            self._schedule_retry(state, tried, decision=decision)
        if state.lapsed is None:
            # Decided afresh (a resumed opener restored as withheld, or one whose dry-run was
            # lifted): its repeats fold in again.
            state.reopen_after_ns = None
        if any(put_on_pod(o) for o in outcomes):
            state.recheck_after_ns = now + int(RECHECK_SECONDS * 1e9)

    def _schedule_retry(
        self, state: IncidentState, tried: int, *, spread: bool = False, decision: Decision | None = None
    ) -> None:
        """Try the incident's withheld isolation again after the next wait of
        dedupe.retry_withheld_seconds (none left after ``tried`` tries: a repeat still may).
        ``spread``: restored incidents, all due at once after a restart, each wait up to twice as long.
        Once the waits are over, or the next would end past the incident's window, a quarantine the
        quarantine breaker holds back is tried once more as the breaker reopens, if the window still
        holds it (review-operator M3: the tries' 270 s by default ended inside a 300 s breaker window
        that was full when the alert came, and a one-off reverse shell stayed unisolated)."""
        waits = self._config.dedupe.retry_withheld_seconds
        if self._closed or not waits or state.incident_id in self._retries:
            return
        wait = None
        if tried < len(waits):
            wait = waits[tried] * (1.0 + random.random() if spread else 1.0)  # noqa: S311
        window_ns = int(self._config.dedupe.window_seconds * 1e9)
        if wait is None or not within_window(self._clock_ns() + int(wait * 1e9), state.opened_ns, window_ns):
            reopens_ns = self._breaker_try_ns(state, decision)
            if reopens_ns is None:
                return
            wait = max(0.0, (reopens_ns - self._clock_ns()) / 1e9)
        if len(self._retries) >= MAX_RETRIES_WAITING:
            self._metrics.retries.labels("not_scheduled").inc()
            log.warning(
                "too many withheld isolations wait to be tried again; this one is tried again by a repeat",
                extra={"incident": state.incident_id, "waiting": len(self._retries)},
            )
            return
        # By its id, not the incident: one forgotten meanwhile (the table's bound) is not kept.
        self._retries[state.incident_id] = asyncio.get_running_loop().call_later(
            wait, self._retry_due, state.incident_id, tried
        )

    def _retry_due(self, incident_id: str, tried: int) -> None:
        self._retries.pop(incident_id, None)
        state = self.incidents.by_id(incident_id)
        if state is None or not self._retry_wanted(state):
            return
        if state.report is None:
            self._schedule_retry(state, tried)  # still being decided (a slow journal): not a try
            return
        task = asyncio.get_running_loop().create_task(self._guarded_retry(state, tried + 1))
        self._retrying.add(task)
        task.add_done_callback(self._retrying.discard)

    def _last_try(self, state: IncidentState, tried: int, decision: Decision) -> bool:
        """Try ``tried`` is the last: no wait is left, or the next would end past the incident's
        window (a slow API's lookups add up), when the try would be dropped unsaid."""
        dedupe = self._config.dedupe
        if tried < len(dedupe.retry_withheld_seconds):
            next_try_ns = self._clock_ns() + int(dedupe.retry_withheld_seconds[tried] * 1e9)
            if within_window(next_try_ns, state.opened_ns, int(dedupe.window_seconds * 1e9)):
                return False
        return self._breaker_try_ns(state, decision) is None

    def _breaker_try_ns(self, state: IncidentState, decision: Decision | None = None) -> int | None:
        """When a quarantine the quarantine breaker holds back is tried once its tries are over: as
        the breaker reopens, if the incident's window still holds it; None for an isolation withheld
        for another reason, or with the breaker closed now (what withholds it is not the breaker:
        a repeat decides it). Each such try is later than the last: the breaker reopens ahead."""
        if decision is None:
            decision = state.report.decision if state.report is not None else None
        if decision is None or not decision.breaker_open or decision.dry_run:
            return None
        reopens_ns = self._breaker.reopens_at(self._clock_ns())
        if reopens_ns is None:
            return None
        # Room for the try itself before the window ends (its turn, the pod's lock, the lookup): one
        # due in the window's last instants would find it closed, and be dropped unsaid.
        window_ns = int(self._config.dedupe.window_seconds * 1e9)
        latest = reopens_ns + BREAKER_TRY_ROOM_NS
        return reopens_ns if within_window(latest, state.opened_ns, window_ns) else None

    def _retry_wanted(self, state: IncidentState) -> bool:
        """Whether the incident still waits for its withheld isolation to be tried again (one still
        being decided: once its decision is there)."""
        window_ns = int(self._config.dedupe.window_seconds * 1e9)
        return (
            not self._closed
            and self.incidents.holds(state)  # not forgotten, nor followed by a new incident
            and (
                state.reopen_after_ns is not None  # being decided, or withheld: a repeat decides again
                if state.report is None
                else still_withheld(
                    state.report, self._address_of(state.first_alert), self._cut_asked(state.report.decision)
                )
            )
            and state.released is None
            and state.lapsed is None
            and within_window(self._clock_ns(), state.opened_ns, window_ns)
        )

    async def _guarded_retry(self, state: IncidentState, tried: int) -> None:
        current_alert_id.set(state.first_alert.alert_id)
        try:
            await self._retry(state, tried)
        except Exception as exc:  # as an opening that failed: a repeat decides it again, as the next try
            if state.reopen_after_ns is None:
                state.reopen_after_ns = self._clock_ns()
            self._metrics.retries.labels("failed").inc()
            log.error(
                "retry of a withheld isolation failed", exc_info=exc, extra={"incident": state.incident_id}
            )
            self._schedule_retry(state, tried)

    async def _retry(self, state: IncidentState, tried: int) -> None:
        """Decide the incident's opening alert again, on its pod read afresh, and take what is to be
        taken now (what it did already is not done again): journaled under the incident with its
        decision as now made, and told in its Slack thread when it changed the pod (or on the last
        try). Still withheld for a passing reason: tried again later (_plan_follow_up). Nothing to
        do now: left to a repeat, as before."""
        key, alert = state.key, state.first_alert
        writes: list[tuple[str, Written]] = []
        outcomes: list[ActionOutcome] = []
        # A few at a time: the pool's threads are the new alerts' too (an API outage ends with
        # every withheld incident due).
        async with self._retry_turns, self._pod_lock(key.namespace, key.pod):
            report = state.report  # as it is now: a follow-up block or a person may have acted
            if report is None or not self._retry_wanted(state):
                return
            withheld_since = state.reopen_after_ns
            state.reopen_after_ns = None  # repeats meanwhile fold in: this decides for them
            try:
                verification, pod = await self._pod_check.verify(
                    alert, fresh=True, received_ns=state.opened_ns, again=True
                )
            except BaseException:
                state.reopen_after_ns = withheld_since
                raise
            self._metrics.verifications.labels(verification.status.value).inc()
            decision = self._decide(alert, pod, verification, report.decision.reopens, state.opened_ns)
            # After the lookup (a slow API's time counts), on the decision just made: a quarantine
            # the breaker holds now is tried again as it reopens (review-session-51 M2).
            last = self._last_try(state, tried, decision)
            decided_ns = self._clock_ns()
            if report.decision.notify and not decision.notify:
                # Told at its opening (a withheld action needs eyes): what the retry does is told
                # there too, and the incident stays routed to its channel.
                decision = dataclasses.replace(
                    decision, notify=True, slack_channel=report.decision.slack_channel
                )
            done = done_actions(report.outcomes, self._address_of(alert), self._cut_asked(decision))
            if decision.escalated and ActionName.BLOCK_DESTINATION.value in done:
                # Its own block is made: the quarantine standing for it (the pod past its share
                # counting that block) is not taken, unless the policy asks for one.
                kept = decision.requested if ActionName.QUARANTINE in decision.requested else ()
                actions = tuple(a for a in decision.actions if a is not ActionName.QUARANTINE or a in kept)
                decision = dataclasses.replace(decision, actions=actions, escalated="")
            # What it did already is neither taken again nor said to be held back again.
            taking = dataclasses.replace(
                decision,
                actions=tuple(a for a in decision.actions if a.value not in done),
                requested=tuple(a for a in decision.requested if a.value not in done),
            )
            if not decision.dry_run and any(action in ISOLATING for action in taking.actions):
                outcomes = await self._act_within_breakers(
                    state,
                    alert,
                    pod,
                    taking,
                    state.opened_ns,
                    writes,
                    retry=RetryTell(decision.notify and self._notifications, last=last, tries=tried),
                )
        passing = withheld_for_passing_reason(verification, decision, outcomes) or decision.block_breaker_open
        # The alert's container, not listed yet when it came, is still not listed past the kubelet's
        # lag, or the pod, unread when it came, does not match it now: a possible forgery, told as
        # the tries' end rather than left "not verified yet" (review-52a M1: an alert forged during
        # an API outage kept its Critical post and the command to quarantine the pod by hand).
        found_unverified = (
            verification.status is VerificationStatus.UNVERIFIED
            and report.verification.status
            in (VerificationStatus.NOT_LISTED_YET, VerificationStatus.LOOKUP_FAILED)
            and not decision.dry_run
        )
        given_up = (
            self._tries_over(state, alert, decision, tried, writes, blocks=found_unverified)
            if (last and not outcomes and not decision.dry_run and passing) or found_unverified
            else []
        )
        if outcomes or given_up:
            # After its actions: a crash between them leaves the decision that withheld them, and a
            # restart tries again what they did not put on the pod.
            decided = Journal.op_record_decision(
                state.incident_id,
                decided_ns,
                verification_to_json(verification),
                # The incident keeps its first decision's time; this one's is said with it.
                {**decision_to_json(decision), DECIDED_AGAIN: decided_ns},
                pod_to_json(pod) if pod is not None else None,
                again=True,
            )
            writes.append(self._write("record_decision", state.incident_id, alert, decided))
            # Before the writes are awaited: the notifier may send the retry's reply as soon as they
            # are in, and renders it on this decision (a possible forgery, not "still withheld").
            current = state.report or report
            state.report = dataclasses.replace(
                current,
                pod=pod,
                verification=verification,
                decision=decision,
                outcomes=(*current.outcomes, *outcomes, *given_up),
            )
            await self._confirm(state, writes)
            self._count_decision(decision)
            self._wake_notifier()
        result = _retry_result(outcomes, passing=passing, found_unverified=found_unverified)
        self._metrics.retries.labels(result).inc()
        log.log(
            logging.INFO if result == "acted" else logging.WARNING,
            "withheld isolation tried again",
            extra={
                "incident": state.incident_id,
                "pod": key.pod_ref,
                "tried": tried,
                "verification": verification.status.value,
                "decision": decision.summary(),
                "outcomes": [o.describe() for o in outcomes],
            },
        )
        if found_unverified:
            # No more tries; a repeat decides again, after REDECIDE_AFTER_SECONDS: a run the kubelet
            # lists later still is then verified and isolated (a made-up id is unverified at once).
            state.reopen_after_ns = self._clock_ns() + int(REDECIDE_AFTER_SECONDS * 1e9)
        elif outcomes or passing:
            self._plan_follow_up(state, verification, decision, outcomes, tried=tried)
        else:
            state.reopen_after_ns = withheld_since  # nothing to do now: a repeat decides, as before

    def _tries_over(
        self,
        state: IncidentState,
        alert: Alert,
        decision: Decision,
        tried: int,
        writes: list[tuple[str, Written]],
        *,
        blocks: bool = False,
    ) -> list[ActionOutcome]:
        """The last automatic try found the isolation still withheld (the API still down), or a
        try found the alert unverified: what it withheld, journaled as the retry's and told in the
        incident's thread, so that Slack says the tries are over (with the command to quarantine
        by hand) rather than reading as if something may still happen. Without ``blocks``, nothing
        when nothing but a block was withheld (the block breaker's hold: its repeats take it on)."""
        withheld = [
            dataclasses.replace(o, extra={**o.extra, RETRIED: True, TRIES_OVER: tried})
            for o in self._withheld_outcomes(alert, decision)
            if blocks or o.action != BLOCK_DESTINATION
        ]
        tell = decision.notify and self._notifications
        for outcome in withheld:
            self._metrics.outcomes.labels(outcome.action, outcome.status.value).inc()
            writes.append(self._record_retry(state, alert, outcome, tell=tell))
        return withheld

    def _record_retry(
        self, state: IncidentState, alert: Alert, outcome: ActionOutcome, *, tell: bool
    ) -> tuple[str, Written]:
        """Journal ``outcome`` as a retry's, under the incident (told in its thread with ``tell``)."""
        op = Journal.op_record_retry(
            state.incident_id,
            alert.alert_id,
            state.key.namespace,
            state.key.pod,
            outcome,
            self._clock_ns(),
            tell=tell,
        )
        return self._write(f"record_action({outcome.action})", state.incident_id, alert, op)

    def _maybe_recheck(self, state: IncidentState) -> None:
        now = self._clock_ns()
        if state.recheck_after_ns is None or not deadline_passed(
            state.recheck_after_ns, now, int(RECHECK_SECONDS * 1e9)
        ):
            return
        state.recheck_after_ns = now + int(RECHECK_SECONDS * 1e9)
        task = asyncio.get_running_loop().create_task(self._recheck(state))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _recheck(self, state: IncidentState) -> None:
        """Is the quarantine (or destination block) this incident made still in place? Reads the
        pod afresh. When it no longer holds, the next alert opens a new incident (which acts
        again), and the lapse is journaled under this incident and told in its Slack thread."""
        key = state.key
        started_ns = self._clock_ns()
        try:
            lookup = await self._in_pool(self._directory.lookup, key.namespace, key.pod, fresh=True)
        except Exception as exc:  # the pool is shutting down, or the API failed: look again later
            log.debug("quarantine recheck skipped", extra={"incident": state.incident_id, "error": str(exc)})
            return
        if lookup.status is LookupStatus.NOT_FOUND:
            self._pod_gone(state, "deleted since", started_ns)
            return
        if lookup.status is not LookupStatus.FOUND or lookup.pod is None:
            return
        acted_on = state.report.pod if state.report is not None else None
        if acted_on is not None and acted_on.uid and lookup.pod.uid and acted_on.uid != lookup.pod.uid:
            self._pod_gone(
                state, f"replaced since by a new pod of its name (uid {lookup.pod.uid})", started_ns
            )
            return
        released = self._released_since(state, lookup.pod)
        if released is not None:
            self._found_released(state, released, lookup.pod)
            return
        state.released = None  # isolated again since (a quarantine by hand): proven as any
        lapse = self._lifted(state, lookup.pod)
        if lapse is None:
            # The label alone proves nothing: its deny-all, and every other policy, decide.
            try:
                lapse = await self._in_pool(self._lapse, state, lookup.pod)
            except Exception as exc:  # as above: look again later
                skipped = {"incident": state.incident_id, "error": str(exc)}
                log.debug("quarantine recheck skipped", extra=skipped)
                return
            if lapse is None:
                return
        if state.lapsed is not None:  # a recheck that overlapped this one said it already
            return
        self._lapsed(state, lapse, started_ns)

    def _pod_gone(self, state: IncidentState, how: str, started_ns: int) -> None:
        """The incident's pod is gone (``how``: deleted, or replaced under its name): what the
        incident put on it went with it, so the rechecks stop and its post offers no release.
        Not a lapse: nothing undid the isolation while the pod ran, and a pod made again under its
        name (a StatefulSet's) runs new containers, whose alerts open incidents of their own.
        Journaled under the incident and told in its thread (its post, rendered again, leads with
        it and offers no release), as a lapse is."""
        state.recheck_after_ns = None
        now = self._clock_ns()
        outcome = ActionOutcome(
            RECHECK,
            OutcomeStatus.POD_GONE,
            f"the pod was {how}: what this incident put on it went with it",
            started_ns=started_ns,
            finished_ns=now,
        )
        log.info(
            f"the incident's pod was {how}; its rechecks stop",
            extra={"incident": state.incident_id, "pod": state.key.pod_ref},
        )
        self._record_recheck(state, outcome, "record_lapse(pod gone)")

    def _lapsed(self, state: IncidentState, lapse: Lapse, started_ns: int) -> None:
        """What this incident put on the pod no longer holds (``lapse``): the next alert opens a new
        incident, which says it reopens this one; journaled under this incident (its audit trail
        shows it) with, when the incident is told in Slack, a broadcast reply in its thread (the
        notifier then renders its post again, leading with it)."""
        now = self._clock_ns()
        key = state.key
        state.recheck_after_ns = None
        state.reopen_after_ns = now
        state.lapsed = Reopened(state.incident_id, lapse, now)
        outcome = ActionOutcome(
            RECHECK,
            OutcomeStatus.LAPSED,
            lapse.detail,
            started_ns=started_ns,
            finished_ns=now,
            extra={LAPSED_ACTION: lapse.action, **({LAPSED_LABEL_GONE: True} if lapse.label_gone else {})},
        )
        log.warning(
            f"the {lapse.what} this incident put on the pod no longer holds ({lapse.detail}) while the"
            " pod runs; the next alert opens a new incident",
            extra={"incident": state.incident_id, "pod": key.pod_ref},
        )
        self._record_recheck(state, outcome, "record_lapse")

    def _record_recheck(self, state: IncidentState, outcome: ActionOutcome, what: str) -> None:
        """What the recheck found (a lapse, the pod gone: ``outcome``) added to the incident's report
        and journaled under it, with its thread reply when the incident is told in Slack (the write
        ``what``, named in the error line if the journal is closing: the log line above says it)."""
        self._metrics.outcomes.labels(outcome.action, outcome.status.value).inc()
        report = state.report
        if report is not None:
            state.report = dataclasses.replace(report, outcomes=(*report.outcomes, outcome))
        tell = report is not None and report.decision.notify and self._notifications
        key = state.key
        op = Journal.op_record_lapse(
            state.incident_id, key.namespace, key.pod, outcome, outcome.finished_ns, tell=tell
        )
        try:
            written = self._journal.schedule(op)
        except RuntimeError as exc:  # the journal is closing
            log_failed_write(log, exc, what, state.incident_id, None)
            return
        written.add_done_callback(lambda done: self._reply_written(done, what, state.incident_id))

    def _reply_written(self, written: asyncio.Future[int | None], what: str, incident_id: str) -> None:
        """Wake the notifier for the thread reply the write ``what`` queued, or say (an error) that
        it was not journaled: then neither the audit trail nor Slack tells it (the log line does)."""
        if written.cancelled():
            return
        error = written.exception()
        if error is not None:
            log_failed_write(log, error, what, incident_id, None)
        elif written.result() is not None:
            self._wake_notifier()

    def _released_since(self, state: IncidentState, pod: PodContext) -> ReleaseRecord | None:
        """The release a person made of the pod (`serving-guard release`) since this incident put a
        quarantine or block on it, as the pod records it; None: none. (Its quarantine and blocks
        clear an earlier release's record, so a record on the pod is a later one.)"""
        outcomes = state.report.outcomes if state.report is not None else ()
        put_on = [o.finished_ns for o in outcomes if put_on_pod(o)]
        if not put_on:
            return None
        # Made after what this incident put on the pod (give or take the clocks of the machines
        # `release` runs on): an earlier version's block left an older record in place.
        return release_record(pod, self._config.quarantine.label, since_ns=max(put_on) - CLOCK_SKEW_NS)

    def _found_released(self, state: IncidentState, released: ReleaseRecord, pod: PodContext) -> None:
        """A person released the pod: a lift, not a lapse. Its repeats fold in as before and act no
        more (the person judged the pod safe for now; an alert after the incident's window is
        decided afresh), and the rechecks go on: a quarantine by hand since is proven as any.
        Journaled under the incident and told in its thread once (not when the command, run with
        the journal, recorded the same release: both name its released-at), with what another
        config still holds on ``pod`` (read since the release)."""
        if state.released == released:
            return
        state.released = released
        log.info(
            f"the pod was released by {released.by} ({released.reason}); this incident's repeats are"
            " counted, not acted on",
            extra={"incident": state.incident_id, "pod": state.key.pod_ref},
        )
        self._record_release(state, released, self._actions.held_elsewhere(pod))

    def _record_release(self, state: IncidentState, released: ReleaseRecord, standing: list[str]) -> None:
        """Journal the release found on the pod under the incident, as the person's action, with
        its thread reply when the incident is told in Slack (not when the journal holds it);
        ``standing``: what other configs still hold on the pod, said with it."""
        now = self._clock_ns()
        key = state.key
        report = state.report
        tell = report is not None and report.decision.notify and self._notifications
        outcome = ActionOutcome(
            "release",
            OutcomeStatus.RELEASED,
            "; ".join(
                [
                    f"{release_note(released.by, released.reason)}; as the pod's annotations record it,"
                    " found by the responder (the command did not journal it)",
                    *standing,
                ]
            ),
            started_ns=released.at_ns,  # as the pod records it: when the person released it
            finished_ns=released.at_ns,
            extra={BY_HAND: released.by, REASON: released.reason, RELEASED_AT: released.at},
        )
        try:
            written = self._journal.schedule(
                Journal.op_record_release_found(
                    state.incident_id,
                    key.namespace,
                    key.pod,
                    outcome,
                    released.by,
                    now,
                    tell=tell,
                    released_at=released.at,
                )
            )
        except RuntimeError as exc:  # the journal is closing: the pod record and the Event still say it
            log_failed_write(log, exc, "record_release_found", state.incident_id, None)
            return
        written.add_done_callback(
            lambda done: self._reply_written(done, "record_release_found", state.incident_id)
        )

    def _lifted(self, state: IncidentState, pod: PodContext | None) -> Lapse | None:
        """What this incident put on the pod that the pod no longer carries (its label), or None."""
        outcomes = state.report.outcomes if state.report is not None else ()
        blocked = any(o.block_labelled for o in outcomes)
        quarantined = any(o.action == "quarantine" and put_on_pod(o) for o in outcomes)
        # Without a report (its decision's write was refused) the recheck is a quarantine's.
        if (quarantined or not blocked) and not is_quarantined(pod, self._config):
            return Lapse("quarantine", "its quarantine label is gone", label_gone=True)
        if blocked and not is_blocked(pod, self._config):
            return Lapse(BLOCK_DESTINATION, "its block label is gone", label_gone=True)
        return None

    def _lapse(self, state: IncidentState, pod: PodContext) -> Lapse | None:
        """What undid, since, the quarantine and blocks this incident made (ClusterActions.lapse_of),
        with ``pod`` as read afresh; None: they hold. Blocks count where proven in force; a
        quarantine is held to the leaks it was reported with, no more."""
        outcomes = state.report.outcomes if state.report is not None else ()
        quarantines = [o for o in outcomes if o.action == "quarantine" and put_on_pod(o)]
        cut: Isolation | None = None
        for outcome in quarantines:
            cut = widest(cut, Isolation(outcome.cut_only) if outcome.cut_only else Isolation.BOTH)
        known = known_leaks(quarantines)  # by policy and direction: a known leak opening more is said
        blocked = {
            str(o.extra[BLOCKED_ADDRESS])
            for o in outcomes
            if o.block_labelled and o.status is OutcomeStatus.BLOCKED and BLOCKED_ADDRESS in o.extra
        }
        # A way out of the pod's network namespace counts where the quarantine was called isolated:
        # a LEAKY one was never said to hold.
        proven = bool(quarantines) and all(o.status is OutcomeStatus.QUARANTINED for o in quarantines)
        return self._actions.lapse_of(pod, cut=cut, known_leaks=known, blocked=blocked, proven=proven)

    def _withheld_outcomes(self, alert: Alert, decision: Decision) -> list[ActionOutcome]:
        """What the decision held back: the block the block breaker held (with its address, for
        the command to block it by hand, and its own reason) apart from the rest."""
        if not decision.withheld:
            return []
        now = self._clock_ns()
        reasons = list(decision.withheld)
        outcomes = []
        if decision.block_breaker_open:
            breaker = next(r for r in reasons if r.startswith(BLOCK_BREAKER_OPEN))
            reasons.remove(breaker)
            address = self._address_of(alert)
            extra = {BLOCKED_ADDRESS: address} if address else {}
            outcomes.append(
                ActionOutcome(
                    BLOCK_DESTINATION,
                    OutcomeStatus.WITHHELD,
                    breaker,
                    started_ns=now,
                    finished_ns=now,
                    extra=extra,
                )
            )
        # The first other action held back (a block may be beside a quarantine that went ahead).
        held = [
            a
            for a in decision.requested
            if a in ISOLATING
            and a not in decision.actions
            and not (a is ActionName.BLOCK_DESTINATION and decision.block_breaker_open)
        ]
        if reasons:
            action = held[0].value if held else "quarantine"
            outcomes.insert(
                0,
                ActionOutcome(
                    action, OutcomeStatus.WITHHELD, "; ".join(reasons), started_ns=now, finished_ns=now
                ),
            )
        return outcomes

    async def _act(
        self,
        state: IncidentState,
        alert: Alert,
        pod: PodContext | None,
        decision: Decision,
        received_ns: int,
        writes: list[tuple[str, Written]],
        *,
        retry: RetryTell | None = None,
    ) -> list[ActionOutcome]:
        """Take the decision's actions; each outcome's write is added to ``writes``. ``retry``: the
        decision tries a withheld isolation again; each outcome is journaled as the retry's, and
        one may be told in the incident's thread (see RetryTell)."""
        outcomes: list[ActionOutcome] = []
        reason = f"{alert.priority.label}: {alert.rule}"
        for action in decision.actions:
            if action is ActionName.QUARANTINE and pod is not None:
                outcome = await self._quarantine(
                    pod,
                    alert,
                    state.incident_id,
                    dry_run=decision.dry_run,
                    isolate=Isolation(decision.isolate) if decision.isolate else None,
                )
                if decision.escalated:  # it stands for the block the pod was past its share for
                    outcome = _instead_of_block(decision.escalated, outcome)
                # (A retry's quarantine comes its waits later: not the responder's speed.)
                if outcome.status in (OutcomeStatus.QUARANTINED, OutcomeStatus.LEAKY) and retry is None:
                    self._metrics.alert_to_quarantine.observe((outcome.finished_ns - received_ns) / 1e9)
            elif action is ActionName.ANNOTATE and pod is not None:
                outcome = await self._in_pool(
                    self._actions.annotate, pod, alert, state.incident_id, reason, dry_run=decision.dry_run
                )
            elif action is ActionName.BLOCK_DESTINATION and pod is not None:
                outcome = await self._block_destination(
                    state.incident_id, pod, alert, dry_run=decision.dry_run
                )
            else:
                continue
            outcomes.append(outcome)
        outcomes.extend(self._withheld_outcomes(alert, decision))
        told = None
        if retry is not None:  # it stands for the incident's own action (Slack's post says so)
            outcomes = [dataclasses.replace(o, extra={**o.extra, RETRIED: True}) for o in outcomes]
            if retry.last:  # a failure now is the last word of the automatic tries
                outcomes = [
                    dataclasses.replace(o, extra={**o.extra, TRIES_OVER: retry.tries})
                    if o.status is OutcomeStatus.FAILED
                    else o
                    for o in outcomes
                ]
            # What it tells: what it put on the pod's traffic, else what it did, else what failed.
            done = [o for o in outcomes if o.ok or put_on_pod(o)]
            tried = [o for o in outcomes if o.status is not OutcomeStatus.WITHHELD]
            told = next(
                (o for o in done if o.action in _CUTTING_ACTIONS), next(iter(done or tried or outcomes), None)
            )
        for outcome in outcomes:
            self._metrics.outcomes.labels(outcome.action, outcome.status.value).inc()
            if retry is None:
                op = Journal.op_record_action(
                    state.incident_id, alert.alert_id, alert.namespace, alert.pod, outcome
                )
                writes.append(self._write(f"record_action({outcome.action})", state.incident_id, alert, op))
            else:
                tell = outcome is told and retry.tells(outcome)
                writes.append(self._record_retry(state, alert, outcome, tell=tell))
        return outcomes


def _settle(future: asyncio.Future[T], result: T | BaseException) -> None:
    if future.done():  # its awaiter was cancelled; the alert's work goes on regardless
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


def _weight(alert: Alert, raw: bytes | None) -> int:
    """An alert's bytes: its body as received, or about what its JSON would be (the journal counts
    them; in flight, the slots add ALERT_OVERHEAD_BYTES)."""
    return len(raw) if raw is not None else estimated_payload_bytes(alert)


def _instead_of_block(why: str, outcome: ActionOutcome) -> ActionOutcome:
    """A quarantine of the pod's egress made for a block one too many (``why``), saying so."""
    return dataclasses.replace(outcome, detail=f"{why}: its egress is quarantined instead; {outcome.detail}")


_CUTTING_ACTIONS = frozenset(action.value for action in CUTTING)


@dataclass(frozen=True, slots=True)
class RetryTell:
    """What a retry of a withheld isolation tells in the incident's thread: what it put on the pod
    or did (an annotation), and on its last try whatever came of it; not a failure again and again
    (each is journaled, and the incident's post already says it is not isolated)."""

    notify: bool
    last: bool
    tries: int = 0  # this try's number: on the last, a failure says the tries are over after it

    def tells(self, outcome: ActionOutcome) -> bool:
        return self.notify and (self.last or outcome.ok or put_on_pod(outcome))


def _retry_result(outcomes: Sequence[ActionOutcome], *, passing: bool, found_unverified: bool) -> str:
    """What a retry of a withheld isolation came to (serving_guard_withheld_retries_total's result)."""
    if any(o.ok or put_on_pod(o) for o in outcomes):
        return "acted"
    if outcomes:
        return "failed"
    if found_unverified:
        return "unverified"
    return "withheld" if passing else "nothing_to_do"


def _log_refused_recount(incident_id: str, error: BaseException | None) -> None:
    if error is not None:
        log.warning(
            "incident count not set back; it may count a refused repeat once more",
            extra={"incident_id": incident_id, "error": f"{type(error).__name__}: {error}"},
        )
