"""Delivers the notifications the pipeline queued in the journal, and retries them from there.

Slack being slow, rate-limited or down never delays an action: the pipeline only writes a
row; this worker sends it later. A 429 pauses all sending for its Retry-After; other
retryable failures back off per notification; permanent failures are recorded, never hidden.

Exactly one post per incident across crashes: a row is marked ``sending`` (committed) before
the call. A row found in ``sending`` at start was in flight when the process died: in bot
mode we look for the post's metadata in the channel history before posting again. Webhook
mode cannot look, so there a crash at that exact moment can repeat one post.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable

from responder.actions.outcome import ActionOutcome
from responder.config import Slack
from responder.dedupe import IncidentTable
from responder.incident import IncidentReport
from responder.journal import Journal, NotificationRow, log_failed_write, report_from_record
from responder.logs import current_alert_id
from responder.metrics import Metrics
from responder.notify.render import SlackMessage, render_by_hand, render_incident, render_lapse, render_repeat
from responder.notify.routing import slack_route
from responder.notify.slack import DeliveryError, FailureKind, SlackDelivery, SlackRef

log = logging.getLogger("serving_guard.notify")

MAX_BACKOFF_SECONDS = 300.0
# How often an idle notifier looks at the journal for rows it was not woken for: those queued by
# another process (`serving-guard quarantine`, `block` or `release` with --incident, run by hand),
# told within about a second.
IDLE_POLL_SECONDS = 1.0
PARENT_WAIT_SECONDS = 2.0
CRASH_LOOKBACK_SECONDS = 120.0
# Failures after which a post may have landed anyway (the answer, not the request, was lost).
AMBIGUOUS_FAILURES = frozenset({FailureKind.TRANSPORT, FailureKind.UNAVAILABLE, FailureKind.PROTOCOL})
# The notifications that are new posts, each found again (by its metadata) rather than posted twice
# after an ambiguous failure: an incident's post, and a reply telling an action by hand or a lapse.
_POSTED_ONCE = frozenset({"incident", "by_hand", "lapse"})


def retry_delay(attempts: int, retry_after: float | None) -> float:
    """Capped exponential backoff with jitter, never sooner than Slack's Retry-After."""
    backoff = min(2.0 ** max(attempts - 1, 0), MAX_BACKOFF_SECONDS) * (0.8 + random.random() * 0.4)  # noqa: S311
    return max(backoff, retry_after or 0.0)


class NotificationWorker:
    def __init__(
        self,
        journal: Journal,
        delivery: SlackDelivery,
        settings: Slack,
        metrics: Metrics,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
        thread_window_seconds: float = 300.0,
        config_path: str | None = None,
    ) -> None:
        self._journal = journal
        self._config_path = config_path
        # How far back a workload's thread gathers incidents (the dedupe window).
        self._thread_window_ns = int(thread_window_seconds * 1e9)
        # When each workload thread's root message last got its replies' summary (throttled as repeats are).
        self._thread_updated_ns: dict[str, int] = {}
        self._delivery = delivery
        self._settings = settings
        self._metrics = metrics
        self._clock_ns = clock_ns
        self._incidents: IncidentTable | None = None
        self._wake = asyncio.Event()
        self._paused_until_ns = 0
        self.sent = 0
        self.failed = 0

    def attach(self, incidents: IncidentTable) -> None:
        self._incidents = incidents

    def wake(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            now = self._clock_ns()
            if self._paused_until_ns > now:
                await self._sleep(stop, (self._paused_until_ns - now) / 1e9)
                continue
            rows = self._journal.due_notifications(now, limit=50)
            if not rows:
                upcoming = self._journal.next_notification_due()
                delay = (
                    IDLE_POLL_SECONDS if upcoming is None else min(IDLE_POLL_SECONDS, (upcoming - now) / 1e9)
                )
                await self._sleep(stop, max(delay, 0.01))
                continue
            for row in rows:
                if stop.is_set() or self._paused_until_ns > self._clock_ns():
                    break
                try:
                    await self._deliver(row)
                except Exception as exc:
                    # A bug here must not stop the worker: the row is retried, then given up on.
                    log.exception("notification delivery crashed", extra={"incident": row.incident_id})
                    if row.attempts + 1 < self._settings.max_attempts:
                        await self._reschedule(row, f"internal error: {type(exc).__name__}", retry_after=None)
                    else:
                        await self._fail(row, f"internal error: {type(exc).__name__}: {exc}")

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        if self._wake.is_set():  # woken while busy: a new row may be due, look again at once
            self._wake.clear()
            return
        waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._wake.clear()
            for waiter in waiters:
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter

    async def settle(self, timeout_seconds: float) -> bool:
        """Wait until nothing is due now (used by `ingest` and the demo before exiting)."""
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            upcoming = self._journal.next_notification_due()
            if upcoming is None or upcoming > self._clock_ns() + 1_000_000_000:
                return True
            self.wake()
            await asyncio.sleep(0.05)
        return False

    # -- one notification -----------------------------------------------------------------------

    def _report(self, incident_id: str) -> IncidentReport | None:
        state = self._incidents.by_id(incident_id) if self._incidents is not None else None
        if state is not None and state.report is not None:
            return dataclasses.replace(state.report, count=state.count, last_seen_ns=state.last_seen_ns)
        record = self._journal.incident_record(incident_id)
        return report_from_record(record) if record is not None else None

    async def _deliver(self, row: NotificationRow) -> None:
        report = self._report(row.incident_id)
        if report is None:
            await self._fail(row, "incident record is missing from the journal")
            return
        token = current_alert_id.set(report.alert.alert_id)  # log lines about it name its alert
        try:
            await self._deliver_report(row, report)
        finally:
            current_alert_id.reset(token)

    async def _deliver_report(self, row: NotificationRow, report: IncidentReport) -> None:
        route = slack_route(report.decision, self._settings)
        if route is None:
            await self._journal.run(
                Journal.op_notification_state(row.id, "dropped", error="not routed to Slack")
            )
            return
        channel = row.channel or route.channel
        try:
            if row.kind == "incident":
                ref: SlackRef | None = await self._send_incident(row, report, channel)
            elif row.kind in ("thread", "update"):
                ref = await self._send_incident_update(row, report)
            elif row.kind == "by_hand":
                ref = await self._send_by_hand(row, channel)
            elif row.kind == "lapse":
                ref = await self._send_lapse(row, channel)
            else:
                ref = await self._send_repeat(row, report)
            if ref is None:
                return  # rescheduled or dropped inside
        except DeliveryError as error:
            self._metrics.notifications.labels(row.kind, error.kind.value).inc()
            if error.retryable and row.attempts + 1 < self._settings.max_attempts:
                if error.kind is FailureKind.RATE_LIMITED:
                    pause = error.retry_after_seconds or 1.0
                    self._paused_until_ns = self._clock_ns() + int(pause * 1e9)
                # A timeout or a 5xx may hide a post that landed: the retry looks for it first.
                ambiguous = row.kind in _POSTED_ONCE and error.kind in AMBIGUOUS_FAILURES
                await self._reschedule(
                    row,
                    error.reason,
                    retry_after=error.retry_after_seconds,
                    state="sending" if ambiguous else "pending",
                )
            else:
                await self._fail(row, error.reason)
            return
        now = self._clock_ns()
        await self._journal.run(
            Journal.op_notification_state(
                row.id,
                "sent",
                attempts=row.attempts + 1,
                slack_channel=ref.channel,
                slack_ts=ref.ts,
                slack_thread_ts=ref.thread_ts if row.kind in _POSTED_ONCE else None,
                sent_ns=now,
                count_sent=report.count,
            )
        )
        self.sent += 1
        self._metrics.notifications.labels(row.kind, "sent").inc()
        if row.kind == "repeat":
            self._repeat_done(row.incident_id, now, shown=report.count)
        elif row.kind in ("thread", "update"):
            self._thread_updated_ns[row.incident_id] = now
        elif row.kind == "incident" and ref.thread_ts is not None:
            self._schedule_thread_summary(ref, row.channel, now)
        if row.kind == "incident" and report.decision.reopens is not None:
            self._schedule_update(report.decision.reopens.incident_id, row.channel, now)
        log.info(
            "notification sent", extra={"incident": row.incident_id, "kind": row.kind, "slack_ts": ref.ts}
        )

    def _workload_root(self, row: NotificationRow, report: IncidentReport) -> SlackRef | None:
        """The thread this incident's post goes into (slack.thread_by_workload), or None: top level.
        An earlier attempt's choice stands, so that a retry looks for the post where it was sent."""
        if row.slack_thread_ts and row.slack_channel:
            return SlackRef(channel=row.slack_channel, ts=row.slack_thread_ts)
        group = report.workload_group
        if (
            not self._settings.thread_by_workload
            or not self._delivery.supports_threads
            or group is None
            or report.decision.unverified  # a possible forgery is never tucked into a thread
            # Nor is an incident opened because an earlier one's isolation of the same pod no longer
            # held: it is no other pod of the workload, and the attack goes on past that isolation.
            or report.decision.reopens is not None
        ):
            return None
        since = report.first_seen_ns - self._thread_window_ns
        found = self._journal.workload_thread(row.incident_id, row.channel, group, since)
        return None if found is None else SlackRef(channel=found[0], ts=found[1])

    async def _send_incident(
        self, row: NotificationRow, report: IncidentReport, channel: str | None
    ) -> SlackRef:
        root = self._workload_root(row, report)
        if root is not None:
            return await self._send_in_workload_thread(row, report, root)
        if row.state == "sending" and self._delivery.supports_threads and channel:
            # In flight when the process died, or its answer was lost: did it land?
            oldest = row.created_ns / 1e9 - CRASH_LOOKBACK_SECONDS
            found = await self._earlier_post(
                self._delivery.find_posted(channel, row.incident_id, oldest), row
            )
            if found is not None:
                return found
        await self._journal.run(Journal.op_notification_state(row.id, "sending"))
        return await self._delivery.post(
            render_incident(report, config_path=self._config_path), channel=channel
        )

    async def _earlier_post(
        self, search: Awaitable[SlackRef | None], row: NotificationRow
    ) -> SlackRef | None:
        """The post an earlier attempt made (its answer lost, or the process died), or None. A
        search Slack cannot answer now is asked again later (raised); one it cannot answer at all
        (scope, membership) gives None: a possible duplicate beats a lost incident."""
        try:
            found = await search
        except DeliveryError as error:
            if error.retryable:
                raise
            log.warning(
                "cannot look for an earlier post; posting again (it may be a duplicate)",
                extra={"incident": row.incident_id, "reason": error.reason},
            )
            return None
        if found is not None:
            log.info("earlier post found, not posting again", extra={"incident": row.incident_id})
        return found

    async def _send_in_workload_thread(
        self, row: NotificationRow, report: IncidentReport, root: SlackRef
    ) -> SlackRef:
        """Post the incident as a reply in its workload's thread; shown in the channel too when it
        needs eyes there (LEAKY, failed, withheld), so a thread never hides a problem."""
        if row.state == "sending" and row.slack_thread_ts:
            found = await self._earlier_post(self._delivery.find_posted_reply(root, row.incident_id), row)
            if found is not None:
                return found
        await self._journal.run(
            Journal.op_notification_state(
                row.id, "sending", slack_channel=root.channel, slack_thread_ts=root.ts
            )
        )
        message = render_incident(report, in_workload_thread=True, config_path=self._config_path)
        return await self._delivery.post_in_thread(root, message, broadcast=report.needs_eyes)

    def _schedule_thread_summary(self, reply: SlackRef, channel: str | None, now: int) -> None:
        """A reply went into a workload thread: its root message's summary of the replies is
        brought up to date (at most once per update interval; a waiting one absorbs the next)."""
        assert reply.thread_ts is not None
        root = self._journal.thread_root_incident(reply.channel, reply.thread_ts)
        if root is None:
            return
        interval = int(self._settings.update_interval_seconds * 1e9)
        due = max(now, self._thread_updated_ns.get(root, 0) + interval)
        scheduled = self._journal.schedule(
            Journal.op_schedule_notification(root, "thread", channel, due, now)
        )
        scheduled.add_done_callback(lambda written: self._scheduled(written, root, "thread"))

    def _scheduled(self, written: asyncio.Future[int | None], incident_id: str, kind: str) -> None:
        error = None if written.cancelled() else written.exception()
        if error is None:
            self.wake()
        else:
            log_failed_write(log, error, f"schedule_notification({kind})", incident_id, None)

    async def _send_incident_update(self, row: NotificationRow, report: IncidentReport) -> SlackRef | None:
        """Render the incident's post again, as it is now: a workload thread's root with its replies'
        outcomes (kind ``thread``), or any post after a person acted on the incident (``update``)."""
        parent, _ = self._journal.incident_thread(row.incident_id)
        if parent is None or parent.slack_ts is None or parent.slack_channel is None:
            await self._fail(row, "the incident's post is not there to update")
            return None
        return await self._update_post(row, report, parent)

    async def _update_post(
        self, row: NotificationRow, report: IncidentReport, parent: NotificationRow
    ) -> SlackRef:
        """Replace the incident's sent post (``parent``) with ``report`` rendered as it is now: in
        place as a reply in its workload's thread, or top level with its thread's replies counted."""
        assert parent.slack_ts is not None
        channel = parent.slack_channel or ""
        await self._journal.run(Journal.op_notification_state(row.id, "sending"))
        if parent.slack_thread_ts:  # itself a reply in its workload's thread
            own = SlackRef(channel=channel, ts=parent.slack_ts, thread_ts=parent.slack_thread_ts)
            return await self._delivery.update(
                own, render_incident(report, in_workload_thread=True, config_path=self._config_path)
            )
        replies = self._journal.thread_replies(channel, parent.slack_ts)
        root = SlackRef(channel=channel, ts=parent.slack_ts)
        return await self._delivery.update(
            root, render_incident(report, thread_replies=replies, config_path=self._config_path)
        )

    async def _send_by_hand(self, row: NotificationRow, channel: str | None) -> SlackRef | None:
        """Tell the incident's thread what a person did about it (``serving-guard quarantine`` or
        ``release`` with ``--incident``, journaled by that command), shown in the channel too, and
        have the incident's own post rendered again with it."""
        action = self._journal.action_by_hand(row.action_id) if row.action_id is not None else None
        if action is None or row.action_id is None:
            await self._fail(row, "the action it tells of is missing from the journal")
            return None
        message = render_by_hand(
            row.incident_id, action.actor, action.namespace, action.pod, action.outcome, row.action_id
        )
        return await self._tell_thread(row, channel, message, action.outcome)

    async def _send_lapse(self, row: NotificationRow, channel: str | None) -> SlackRef | None:
        """Tell the incident's thread that what it put on the pod no longer holds (the pipeline's
        recheck journaled it), shown in the channel too, and have the incident's own post rendered
        again, leading with it."""
        found = self._journal.lapse_found(row.action_id) if row.action_id is not None else None
        if found is None or row.action_id is None:
            await self._fail(row, "the lapse it tells of is missing from the journal")
            return None
        message = render_lapse(row.incident_id, found.namespace, found.pod, found.outcome, row.action_id)
        return await self._tell_thread(row, channel, message, found.outcome)

    async def _tell_thread(
        self, row: NotificationRow, channel: str | None, message: SlackMessage, outcome: ActionOutcome
    ) -> SlackRef | None:
        """Post ``message`` (a reply telling ``outcome``, journaled as the action ``row.action_id``)
        in the incident's thread, shown in the channel too, and have the incident's post rendered
        again with it; in the channel when the incident has no thread (webhook mode, or its post
        failed). Once: a retry after an ambiguous failure looks for it first."""
        assert row.action_id is not None
        threads = self._delivery.supports_threads
        parent = self._journal.incident_thread(row.incident_id)[0] if threads else None
        if parent is None or parent.slack_ts is None or parent.slack_channel is None:
            if threads and not self._incident_post_failed(row.incident_id):
                # The incident's own post is still on its way: its thread is not there yet.
                due = self._clock_ns() + int(PARENT_WAIT_SECONDS * 1e9)
                await self._journal.run(Journal.op_notification_state(row.id, "pending", next_attempt_ns=due))
                return None
            # No thread to answer in (webhook mode, or the incident never reached Slack): what was
            # done is told in the channel instead.
            found = None
            if threads and row.state == "sending" and channel:
                oldest = row.created_ns / 1e9 - CRASH_LOOKBACK_SECONDS
                search = self._delivery.find_posted(channel, row.incident_id, oldest, action_id=row.action_id)
                found = await self._earlier_post(search, row)
            if found is None:
                await self._journal.run(Journal.op_notification_state(row.id, "sending"))
                found = await self._delivery.post(message, channel=channel)
            self._learn_by_hand(row, outcome, update_post=False)
            return found
        # Slack threads are one level deep: an incident that is itself a reply in its workload's
        # thread is answered in that thread.
        thread = SlackRef(channel=parent.slack_channel, ts=parent.slack_thread_ts or parent.slack_ts)
        found = None
        if row.state == "sending":
            search = self._delivery.find_posted_reply(thread, row.incident_id, action_id=row.action_id)
            found = await self._earlier_post(search, row)
        if found is None:
            await self._journal.run(Journal.op_notification_state(row.id, "sending"))
            found = await self._delivery.post_in_thread(thread, message, broadcast=True)
        # Also when an earlier attempt's reply is found: that attempt may have ended before these.
        self._learn_by_hand(row, outcome, update_post=True)
        if parent.slack_thread_ts:
            # The workload thread's root counts its replies' outcomes: this one may have changed.
            self._schedule_thread_summary(found, row.channel, self._clock_ns())
        return found

    def _learn_by_hand(self, row: NotificationRow, outcome: ActionOutcome, *, update_post: bool) -> None:
        """What a person did (or the recheck found) becomes part of the running incident, as it is
        of one a restart reads back (every action journaled under it); with ``update_post`` the
        incident's own post is rendered again: it no longer offers a command already run, and says
        who did what (or leads with what no longer holds)."""
        state = self._incidents.by_id(row.incident_id) if self._incidents is not None else None
        if state is not None and state.report is not None and outcome not in state.report.outcomes:
            state.report = dataclasses.replace(state.report, outcomes=(*state.report.outcomes, outcome))
        if not update_post:
            return
        self._schedule_update(row.incident_id, row.channel, self._clock_ns())

    def _schedule_update(self, incident_id: str, channel: str | None, now: int) -> None:
        """Render the incident's post again: after a person acted on it, or (the incident this one
        reopens) to name the incident that reopened it."""
        scheduled = self._journal.schedule(
            Journal.op_schedule_notification(incident_id, "update", channel, now, now)
        )
        scheduled.add_done_callback(lambda written: self._scheduled(written, incident_id, "update"))

    async def _send_repeat(self, row: NotificationRow, report: IncidentReport) -> SlackRef | None:
        parent, reply = self._journal.incident_thread(row.incident_id)
        if (
            parent is not None
            and parent.slack_thread_ts
            and parent.slack_ts
            and self._delivery.supports_threads
        ):
            # The incident is a reply in its workload's thread: its count is updated in place.
            return await self._update_post(row, report, parent)
        message = render_repeat(report)
        if not self._delivery.supports_threads:
            await self._journal.run(Journal.op_notification_state(row.id, "sending"))
            return await self._delivery.post(message, channel=row.channel)
        if parent is None or parent.slack_ts is None:
            if self._incident_post_failed(row.incident_id):
                await self._fail(row, "the incident post itself failed; no thread to update")
                self._repeat_done(row.incident_id, self._clock_ns())
            else:
                due = self._clock_ns() + int(PARENT_WAIT_SECONDS * 1e9)
                await self._journal.run(Journal.op_notification_state(row.id, "pending", next_attempt_ns=due))
            return None
        parent_ref = SlackRef(channel=parent.slack_channel or "", ts=parent.slack_ts)
        await self._journal.run(Journal.op_notification_state(row.id, "sending"))
        if reply is not None and reply.slack_ts is not None:
            existing = SlackRef(
                channel=reply.slack_channel or parent_ref.channel,
                ts=reply.slack_ts,
                thread_ts=parent.slack_ts,
            )
            return await self._delivery.update(existing, message)
        return await self._delivery.post_in_thread(parent_ref, message)

    def _incident_post_failed(self, incident_id: str) -> bool:
        with self._journal.reader() as conn:
            row = conn.execute(
                "SELECT state FROM notifications WHERE incident_id = ? AND kind = 'incident'", (incident_id,)
            ).fetchone()
        return row is None or row["state"] in ("failed", "dropped")

    def _repeat_done(self, incident_id: str, now_ns: int, *, shown: int | None = None) -> None:
        state = self._incidents.by_id(incident_id) if self._incidents is not None else None
        if state is None:
            return
        state.repeat_pending = False
        state.last_repeat_ns = now_ns
        report = state.report
        if shown is not None and state.count > shown and report is not None:
            # Repeats arrived while this update was on its way: the thread must end on the real
            # count, so one more update follows (no later repeat may come to trigger it).
            state.repeat_pending = True
            due = now_ns + int(self._settings.update_interval_seconds * 1e9)
            channel = report.decision.slack_channel
            scheduled = self._journal.schedule(
                Journal.op_schedule_notification(incident_id, "repeat", channel, due, now_ns)
            )
            scheduled.add_done_callback(lambda written: self._requeued(written, incident_id))

    def _requeued(self, written: asyncio.Future[int | None], incident_id: str) -> None:
        error = None if written.cancelled() else written.exception()
        if error is None:
            self.wake()
            return
        # Not queued: the next repeat queues the update again (left pending, the thread would get
        # no update until a restart).
        state = self._incidents.by_id(incident_id) if self._incidents is not None else None
        if state is not None:
            state.repeat_pending = False
        log_failed_write(log, error, "schedule_notification(repeat)", incident_id, None)

    async def _reschedule(
        self, row: NotificationRow, reason: str, *, retry_after: float | None, state: str = "pending"
    ) -> None:
        attempts = row.attempts + 1
        due = self._clock_ns() + int(retry_delay(attempts, retry_after) * 1e9)
        await self._journal.run(
            Journal.op_notification_state(row.id, state, attempts=attempts, next_attempt_ns=due, error=reason)
        )
        log.warning(
            "notification will be retried",
            extra={"incident": row.incident_id, "kind": row.kind, "attempts": attempts, "reason": reason},
        )

    async def _fail(self, row: NotificationRow, reason: str) -> None:
        await self._journal.run(
            Journal.op_notification_state(row.id, "failed", attempts=row.attempts + 1, error=reason)
        )
        self.failed += 1
        self._metrics.notifications.labels(row.kind, "failed").inc()
        if row.kind == "repeat":
            self._repeat_done(row.incident_id, self._clock_ns())
        log.error(
            "notification failed for good",
            extra={"incident": row.incident_id, "kind": row.kind, "reason": reason},
        )
