"""Delivers the notifications the pipeline queued in the journal, and retries them from there.

Slack being slow, rate-limited or down never delays an action: the pipeline only writes a
row; this worker sends it later. A 429 holds back the calls of its API method for its
Retry-After (the delivery's pacing); other retryable failures back off per notification; an
incident's post is never given up for a failure that may pass; permanent failures are
recorded, never hidden. Verified incidents' posts go before every other incident's post, and
those before repeats and updates (the journal's order of due rows).

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
from collections.abc import Awaitable, Callable, Sequence

from responder.actions.outcome import ActionOutcome, OutcomeStatus
from responder.clock import deadline_passed
from responder.cluster.verify import VerificationStatus
from responder.config import Slack
from responder.dedupe import IncidentTable
from responder.errors import UserError
from responder.incident import (
    NEEDS_EYES_STATUSES,
    PLAIN_COMMANDS,
    AlertingAfterRelease,
    CommandForm,
    IncidentReport,
)
from responder.journal.ops import PostsGivenUp
from responder.journal.store import Journal, NotificationRow, log_failed_write, report_from_record
from responder.logs import current_alert_id
from responder.metrics import Metrics
from responder.notify.redirect import followed_up, out_of_thread, posted_again, redirected
from responder.notify.render import (
    MessageKind,
    SlackMessage,
    render_by_hand,
    render_incident,
    render_lapse,
    render_repeat,
    render_retry,
)
from responder.notify.routing import repeat_interval_ns, slack_route
from responder.notify.slack import DeliveryError, FailureKind, Refusal, SlackDelivery, SlackRef, refusal_of

log = logging.getLogger("serving_guard.notify")

MAX_BACKOFF_SECONDS = 300.0
# A retry's backoff is spread by up to this share either way, so that a burst's retries do not
# come back together.
BACKOFF_JITTER = 0.2
# A try waits for at most this much of Slack's Retry-After (the delivery holds the method back for
# all of it, and says so again when the try comes early), so that a retry is never set further
# ahead than LONGEST_WAIT_SECONDS.
MAX_RETRY_AFTER_SECONDS = 600.0
# How often an idle notifier looks at the journal for rows it was not woken for: those queued by
# another process (`serving-guard quarantine`, `block` or `release` with --incident, run by hand),
# told within about a second.
IDLE_POLL_SECONDS = 1.0
PARENT_WAIT_SECONDS = 2.0
CRASH_LOOKBACK_SECONDS = 120.0
# The result serving_guard_notifications_total counts a post the journal gave up for room under
# (responder.journal.ops.give_way: Slack refused or down for long while alerts kept coming).
JOURNAL_FULL_RESULT = "journal_full"
# Failures after which a post may have landed anyway (the answer, not the request, was lost).
AMBIGUOUS_FAILURES = frozenset({FailureKind.TRANSPORT, FailureKind.UNAVAILABLE, FailureKind.PROTOCOL})
# The notifications that are new posts, each found again (by its metadata) rather than posted twice
# after an ambiguous failure: an incident's post, and a reply telling an action by hand, a lapse or a retry.
_POSTED_ONCE = frozenset({"incident", "by_hand", "lapse", "retry"})
# ...and the repeat counter's first reply: each is looked for (by its metadata) before it is posted
# again after an ambiguous failure, and the thread it went into is saved with it.
_FOUND_AGAIN = _POSTED_ONCE | {"repeat"}
# After Slack refuses the credentials, or a channel with nowhere else to post, sending waits this
# long before trying again, doubling up to the longest: the rows wait in the journal, never dropped.
REFUSED_FIRST_WAIT_SECONDS = 30.0
REFUSED_LONGEST_WAIT_SECONDS = 600.0
# Failures for want of Slack (5xx, timeouts, connections) in a row, with no call going through,
# after which Slack is taken to be down: all sending waits (5 s, doubling to 5 min) and the
# notifications' tries are not counted against max_attempts until a call goes through again.
OUTAGE_AFTER_FAILURES = 3
OUTAGE_FIRST_WAIT_SECONDS = 5.0
# Answers that are not Slack's (unreadable, or an HTTP error without a Slack error code: a proxy or
# gateway) count as Slack down too: they pass when what stands in the way does.
_OUTAGE_FAILURES = frozenset({FailureKind.TRANSPORT, FailureKind.UNAVAILABLE, FailureKind.PROTOCOL})
# The longest the worker sets any wait ahead on the wall clock: a row's retry (its backoff with
# jitter, Retry-After as capped, a refused credential's or channel's wait, Slack down's), the pause
# of all sending, a channel's refusal, the wait for a post's thread. A wait further ahead than that
# was set before the clock was stepped back: it counts as come (responder/clock.py), or a step of
# an hour would hold every post the hour. Repeat counts and thread summaries wait their interval too.
LONGEST_WAIT_SECONDS = max(
    MAX_BACKOFF_SECONDS * (1 + BACKOFF_JITTER),
    MAX_RETRY_AFTER_SECONDS,
    REFUSED_LONGEST_WAIT_SECONDS,
    PARENT_WAIT_SECONDS,
)
# Repeat counts sent past which an incoming webhook's interval doubles no more (routing.repeat_interval_ns).
_REPEATS_PAST_DOUBLING = 64
# How many incidents remember when their post was last rendered again (its throttle).
_THREAD_MEMORY = 4096
# How many workload threads remember which problems their replies already showed in the channel.
_BROADCAST_MEMORY = 1024


def _problems(report: IncidentReport) -> frozenset[str]:
    """Why the incident needs eyes (its ``needs_eyes``), one word each: what it withheld, and the
    statuses of its actions that went wrong."""
    if not report.needs_eyes:
        return frozenset()
    decision = report.decision
    reasons = {f"{o.action}:{o.status.value}" for o in report.outcomes if o.status in NEEDS_EYES_STATUSES}
    # A breaker's words carry its count, the same reason for every replica it holds back.
    if decision.breaker_open:
        reasons.add("withheld:breaker")
    if decision.block_breaker_open:
        reasons.add("withheld:block breaker")
    if _claimed_only(report):
        reasons.add("unverified")
    elif not decision.breaker_open and not decision.block_breaker_open:
        reasons.update(f"withheld:{reason}" for reason in decision.withheld)
    return frozenset(reasons)


def _after_release_untold(report: IncidentReport) -> bool:
    """The pod still alerts after its release, and its repeat reply saying so is not posted yet."""
    after = report.alerting_after_release
    return after is not None and not after.told


def _claimed_only(report: IncidentReport) -> bool:
    """The alert could not be checked against its pod (it does not match it, or names a pod the
    cluster does not have): a possible forgery, threaded with the others."""
    return report.decision.unverified or report.verification.status is VerificationStatus.POD_NOT_FOUND


def _longer_wait(
    previous: float, first: float = REFUSED_FIRST_WAIT_SECONDS, longest: float = REFUSED_LONGEST_WAIT_SECONDS
) -> float:
    """The next wait after a refusal (or in an outage): the first, then doubling up to the longest."""
    return min(max(previous * 2, first), longest)


def retry_delay(attempts: int, retry_after: float | None) -> float:
    """Capped exponential backoff with jitter, never sooner than Slack's Retry-After (up to
    MAX_RETRY_AFTER_SECONDS): at most LONGEST_WAIT_SECONDS."""
    spread = 1 - BACKOFF_JITTER + random.random() * 2 * BACKOFF_JITTER  # noqa: S311
    backoff = min(2.0 ** max(attempts - 1, 0), MAX_BACKOFF_SECONDS) * spread
    return max(backoff, min(retry_after or 0.0, MAX_RETRY_AFTER_SECONDS))


def longest_repeat_wait_ns(settings: Slack) -> int:
    """The longest a repeat count or a workload thread's summary is set ahead for its interval
    (slack.update_interval_seconds; an incoming webhook's doubles, up to an hour), or any wait."""
    interval = repeat_interval_ns(settings, _REPEATS_PAST_DOUBLING)
    return max(interval, int(settings.update_interval_seconds * 1e9), int(LONGEST_WAIT_SECONDS * 1e9))


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
        commands: CommandForm = PLAIN_COMMANDS,
        tries_by_itself: bool = True,
    ) -> None:
        self._journal = journal
        # Withheld isolations are tried again on their own (dedupe.retry_withheld_seconds not
        # empty): the incident's post says so only then.
        self._tries_by_itself = tries_by_itself
        # How the by-hand commands its messages give are written (the config, the pod's prefix).
        self._commands = commands
        # How far back a workload's thread gathers incidents (the dedupe window).
        self._thread_window_ns = int(thread_window_seconds * 1e9)
        # When each workload thread's root message last got its replies' summary (throttled as repeats are).
        self._thread_updated_ns: dict[str, int] = {}
        self._delivery = delivery
        # Its rate-limit waits end by the clock this worker schedules retries by.
        delivery.use_clock(clock_ns)
        self._settings = settings
        self._metrics = metrics
        self._clock_ns = clock_ns
        # How far ahead a wait is ever set (a throttled update's may be further): past it, come.
        self._longest_wait_ns = int(LONGEST_WAIT_SECONDS * 1e9)
        self._longest_repeat_wait_ns = longest_repeat_wait_ns(settings)
        journal.on_posts_given_up(self._given_up)
        self._incidents: IncidentTable | None = None
        self._wake = asyncio.Event()
        self._paused_until_ns = 0
        # Slack refused the token (or webhook): how long the current wait is, and that the secret is
        # read again before the next try (a replaced Secret is used without a restart).
        self._credentials_wait_seconds = 0.0
        self._reload_secret = False
        # Calls that failed for want of Slack (5xx, timeouts, refused connections) since the last
        # that went through; past OUTAGE_AFTER_FAILURES, Slack is down and all sending waits.
        self._failures_in_a_row = 0
        self._outage_wait_seconds = 0.0
        # Channels (as configured) that refused the bot: until when, how long the wait was, why.
        self._refused_channels: dict[str, tuple[int, float, str]] = {}
        # Posts deleted in Slack ((channel id, ts)): no reply goes into their threads any more.
        self._gone_posts: set[tuple[str, str]] = set()
        # For each workload thread, the problems (LEAKY, withheld...) a reply already showed in the
        # channel: in a storm the channel gets the first of each, the thread's root counts the rest.
        self._broadcast: dict[tuple[str, str], set[str]] = {}
        self.sent = 0
        self.failed = 0

    def attach(self, incidents: IncidentTable) -> None:
        self._incidents = incidents

    def wake(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            now = self._clock_ns()
            if self._paused(now):
                # In steps: the clock may be stepped, and a long wait must not outlive it.
                await self._sleep(stop, min((self._paused_until_ns - now) / 1e9, IDLE_POLL_SECONDS))
                continue
            if self._reload_secret:
                self._read_secret_again()
            # Cleared before the read: set again, a row was queued since (it may go first).
            self._wake.clear()
            await self._due_again_after_step(now)
            rows = self._journal.due_notifications(now, limit=50)
            if not rows:
                upcoming = self._journal.next_notification_due()
                delay = (
                    IDLE_POLL_SECONDS if upcoming is None else min(IDLE_POLL_SECONDS, (upcoming - now) / 1e9)
                )
                await self._sleep(stop, max(delay, 0.01))
                continue
            for row in rows:
                if stop.is_set() or self._paused(self._clock_ns()):
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
                if self._wake.is_set():
                    # A row was queued since this batch was read, and may go first (a verified
                    # incident's post before a storm's forgeries): read the due rows again.
                    break

    def _paused(self, now: int) -> bool:
        """Whether all sending waits (refused credentials, Slack down); not past its longest wait."""
        return not deadline_passed(self._paused_until_ns, now, self._longest_wait_ns)

    async def _due_again_after_step(self, now: int) -> None:
        """Rows due further ahead than the worker ever sets one were set before the clock was
        stepped back: due now, not after the step (each is set at most that far ahead again once
        tried, so none comes round and round)."""
        longest, repeats = self._longest_wait_ns, self._longest_repeat_wait_ns
        if not self._journal.notifications_set_beyond(now, longest, repeats):
            return
        moved = await self._journal.run(Journal.op_due_again(now, longest, repeats))
        log.warning(
            "notifications were set further ahead than any wait (the clock was stepped back): due now",
            extra={"batch": moved},
        )

    def _given_up(self, given_up: PostsGivenUp) -> None:
        """Count the posts the journal gave up for room (it logs them):
        serving_guard_notifications_total{result="journal_full"}."""
        for kind, count in given_up.by_kind:
            self._metrics.notifications.labels(kind, JOURNAL_FULL_RESULT).inc(count)

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
            now = self._clock_ns()
            later = upcoming is None or upcoming > now + 1_000_000_000
            if later and not self._journal.notifications_set_beyond(
                now, self._longest_wait_ns, self._longest_repeat_wait_ns
            ):
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
        blocked_until = self._refused_until(channel)
        if blocked_until is not None and row.kind in _POSTED_ONCE:
            # Its channel refuses the bot and so does the default one: no call until its wait ends.
            await self._journal.run(
                Journal.op_notification_state(row.id, row.state, next_attempt_ns=blocked_until)
            )
            return
        try:
            if row.kind == "incident":
                ref: SlackRef | None = await self._send_incident(row, report, channel)
            elif row.kind in ("thread", "update"):
                ref = await self._send_incident_update(row, report)
            elif row.kind == "by_hand":
                ref = await self._send_by_hand(row, channel)
            elif row.kind == "lapse":
                ref = await self._send_lapse(row, channel, report)
            elif row.kind == "retry":
                ref = await self._send_retry(row, channel, report)
            else:
                ref = await self._send_repeat(row, report)
            if ref is None:
                return  # rescheduled or dropped inside
        except DeliveryError as error:
            await self._failed(row, channel, error)
            return
        now = self._clock_ns()
        self._credentials_wait_seconds = 0.0
        if self._outage_wait_seconds:
            log.info("Slack answers again; sending resumes")
        self._failures_in_a_row = 0
        self._outage_wait_seconds = 0.0
        await self._journal.run(
            Journal.op_notification_state(
                row.id,
                "sent",
                attempts=row.attempts + 1,
                slack_channel=ref.channel,
                slack_ts=ref.ts,
                slack_thread_ts=ref.thread_ts if row.kind in _FOUND_AGAIN else None,
                sent_ns=now,
                count_sent=report.count,
            )
        )
        self.sent += 1
        self._metrics.notifications.labels(row.kind, "sent").inc()
        if row.kind == "repeat":
            self._repeat_done(row.incident_id, now, shown=report.count)
        elif row.kind in ("thread", "update"):
            if len(self._thread_updated_ns) >= _THREAD_MEMORY:
                del self._thread_updated_ns[next(iter(self._thread_updated_ns))]  # the oldest
            self._thread_updated_ns[row.incident_id] = now
        elif row.kind == "incident" and ref.thread_ts is not None:
            self._schedule_thread_summary(ref, row.channel, now)
        elif row.kind == "incident":
            # What it shows in the channel, its thread's replies need not show there again.
            self._remember_broadcast(ref, _problems(report))
        if row.kind == "incident" and report.decision.reopens is not None:
            self._schedule_update(report.decision.reopens.incident_id, row.channel, now)
        log.info(
            "notification sent", extra={"incident": row.incident_id, "kind": row.kind, "slack_ts": ref.ts}
        )

    async def _failed(self, row: NotificationRow, channel: str | None, error: DeliveryError) -> None:
        """One try of ``row`` failed: wait it out, post elsewhere, try again later, or give it up."""
        self._metrics.notifications.labels(row.kind, error.kind.value).inc()
        # A timeout or a 5xx may hide a post that landed: the retry looks for it first. So does the
        # retry of a row an earlier such failure left to look (whatever failed this time).
        ambiguous = row.kind in _FOUND_AGAIN and (error.kind in AMBIGUOUS_FAILURES or row.state == "sending")
        state = "sending" if ambiguous else "pending"
        if await self._refused(row, channel, error, state):
            return
        if error.kind is FailureKind.RATE_LIMITED:
            # Slack asks to slow down this method (the delivery holds its calls back; other methods,
            # a new post while chat.update is limited, go on); this try does not count against
            # max_attempts (a long rate limit must not use them up and drop the incident).
            pause = error.retry_after_seconds or 1.0
            await self._reschedule(row, error.reason, retry_after=pause, state=state, counted=False)
            return
        if error.retryable and error.kind in _OUTAGE_FAILURES and self._slack_down(error):
            # Slack is down for every call, not refusing this one: waiting it out uses up none
            # of max_attempts (an outage longer than their backoff would drop every post).
            wait = self._outage_wait_seconds
            await self._reschedule(row, error.reason, retry_after=wait, state=state, counted=False)
        elif error.retryable and (row.kind == "incident" or row.attempts + 1 < self._settings.max_attempts):
            # An incident's post is never given up for what may pass: on-call must hear of it.
            await self._reschedule(row, error.reason, retry_after=error.retry_after_seconds, state=state)
        else:
            await self._fail(row, error.reason)

    def _workload_root(self, row: NotificationRow, report: IncidentReport) -> SlackRef | None:
        """The thread this incident's post goes into (slack.thread_by_workload), or None: top level.
        An earlier attempt's choice stands, so that a retry looks for the post where it was sent."""
        if row.slack_thread_ts and row.slack_channel:
            if (row.slack_channel, row.slack_thread_ts) not in self._gone_posts:
                return SlackRef(channel=row.slack_channel, ts=row.slack_thread_ts)
            return None
        if row.slack_channel and row.state == "sending":
            return None  # an earlier try went to the top level: its retry looks for it there
        group = report.workload_group
        if (
            not self._settings.thread_by_workload
            or not self._delivery.supports_threads
            # An incident opened because an earlier one's isolation of the same pod no longer held
            # is no other pod of the workload, and the attack goes on past that isolation.
            or report.decision.reopens is not None
            # A drill posts on its own: never read as one of Falco's alerts, nor gathering them.
            or report.key.drill
        ):
            return None
        since = report.first_seen_ns - self._thread_window_ns
        if _claimed_only(report):
            # A possible forgery is never tucked into a workload's thread, but forgeries share one:
            # made-up container ids open an incident each, and must not each post in the channel.
            found = self._journal.forgery_thread(row.incident_id, row.channel, since, self._gone_posts)
        elif group is None:
            return None
        else:
            found = self._journal.workload_thread(
                row.incident_id, row.channel, group, since, self._gone_posts
            )
        if found is None:
            return None
        # Only a thread in the channel posted to now (the default one while the policy's refuses
        # the bot, or the policy's once it takes posts again): else this post starts the next.
        target = self._delivery.default_channel if self._redirect_reason(row.channel) else row.channel
        wanted = self._delivery.known_channel_id(target) if target else None
        if wanted is not None and found[0] != wanted:
            return None
        return SlackRef(channel=found[0], ts=found[1])

    async def _send_incident(
        self, row: NotificationRow, report: IncidentReport, channel: str | None
    ) -> SlackRef:
        root = self._workload_root(row, report)
        thread_gone = False
        if root is not None:
            try:
                return await self._send_in_workload_thread(row, report, root)
            except DeliveryError as error:
                if not self._message_gone(error, root):
                    raise
            # The workload's thread was deleted: this incident starts the group's next one.
            log.warning(
                "workload thread deleted in Slack; the incident is posted at the top level",
                extra={"incident": row.incident_id, "slack_ts": root.ts},
            )
            await self._journal.run(Journal.op_forget_thread(row.id, self._clock_ns()))
            row = dataclasses.replace(row, state="pending", slack_channel=None, slack_thread_ts=None)
            thread_gone = True
        # Webhook mode has no thread: each repeat count is a message of its own.
        threads = self._delivery.supports_threads
        message = self._incident_message(report, repeats_in_thread=threads)
        return await self._post_top_level(row, out_of_thread(message) if thread_gone else message, channel)

    async def _post_top_level(
        self, row: NotificationRow, message: SlackMessage, channel: str | None
    ) -> SlackRef:
        """Post ``message`` (an incident, or what was done about one) at the top level of ``channel``,
        or of the default channel while ``channel`` refuses the bot (saying so). Once: a retry after
        an ambiguous failure looks for the earlier post first."""
        refused = self._redirect_reason(channel)
        target = self._delivery.default_channel if refused is not None else channel
        # Where the earlier try went (saved when it was made): the redirect may have ended since,
        # or the process restarted without knowing of it.
        earlier = row.slack_channel if row.slack_channel and not row.slack_thread_ts else target
        if row.state == "sending" and self._delivery.supports_threads and earlier:
            # In flight when the process died, or its answer was lost: did it land?
            oldest = row.created_ns / 1e9 - CRASH_LOOKBACK_SECONDS
            search = self._delivery.find_posted(earlier, row.incident_id, oldest, action_id=message.action_id)
            found = await self._earlier_post(search, row)
            if found is not None:
                return found
        # The channel is saved with the try: a retry looks there, and takes no workload thread.
        await self._journal.run(Journal.op_notification_state(row.id, "sending", slack_channel=target))
        if refused is not None and channel is not None:
            message = redirected(message, channel, refused)
        ref = await self._delivery.post(message, channel=target)
        if target is not None:
            self._refused_channels.pop(target, None)  # it takes posts (again)
        return ref

    def _redirect_reason(self, channel: str | None) -> str | None:
        """Why ``channel`` is not posted to now (it refused the bot, and the default channel can take
        its posts instead), or None: post there. Once its wait is over it is tried again."""
        if channel is None:
            return None
        refused = self._refused_channels.get(channel)
        if refused is None or self._wait_over(refused[0]):
            return None
        default = self._delivery.default_channel
        if default is None or default == channel:
            return None
        default_refused = self._refused_channels.get(default)
        if default_refused is not None and not self._wait_over(default_refused[0]):
            return None  # it refuses too: the post waits
        return refused[2]

    def _refused_until(self, channel: str | None) -> int | None:
        """Until when ``channel`` refuses the bot, when no other channel can take its posts (the
        default one refuses too, or it is the default one); None: post (or redirect) now."""
        refused = self._refused_channels.get(channel) if channel is not None else None
        if refused is None or self._wait_over(refused[0]) or self._redirect_reason(channel) is not None:
            return None
        return refused[0]

    def _wait_over(self, until_ns: int) -> bool:
        """Whether a wait the worker set until ``until_ns`` has come (or the clock went back past it)."""
        return deadline_passed(until_ns, self._clock_ns(), self._longest_wait_ns)

    def _message_gone(self, error: DeliveryError, post: SlackRef) -> bool:
        """Slack says ``post`` (replied to, or updated) was deleted: remembered, so nothing more
        goes into its thread. False for any other error."""
        if refusal_of(error, self._delivery.mode) is not Refusal.MESSAGE_GONE or post.ts is None:
            return False
        self._gone_posts.add((post.channel, post.ts))
        return True

    async def _refused(
        self, row: NotificationRow, channel: str | None, error: DeliveryError, state: str
    ) -> bool:
        """Handle a refusal that waiting or another channel can get past (True), rather than give the
        notification up: refused credentials pause all sending until they work again (read afresh
        before each try); a channel refusing the bot sends its new posts to the default channel
        (or, with none to go to, has them wait)."""
        refusal = refusal_of(error, self._delivery.mode)
        now = self._clock_ns()
        if refusal is Refusal.CREDENTIALS:
            wait = _longer_wait(self._credentials_wait_seconds)
            self._credentials_wait_seconds = wait
            self._paused_until_ns = now + int(wait * 1e9)
            self._reload_secret = True
            log.error(
                "Slack refuses the responder's credentials; notifications wait in the journal and"
                " are sent once it accepts them (the secret is read again before each try)",
                extra={"reason": error.reason, "wait_seconds": wait},
            )
            await self._reschedule(row, error.reason, retry_after=wait, state=state, counted=False)
            return True
        if refusal is not Refusal.CHANNEL or channel is None or row.kind not in _POSTED_ONCE:
            return False
        # The channel that refused: the default one when this post was sent there instead.
        refusing = self._delivery.default_channel if self._redirect_reason(channel) is not None else channel
        assert refusing is not None
        earlier = self._refused_channels.get(refusing)
        wait = _longer_wait(0.0 if earlier is None else earlier[1])
        self._refused_channels[refusing] = (now + int(wait * 1e9), wait, error.code or error.reason)
        fallback = self._redirect_reason(channel) is not None
        log.error(
            "Slack channel refuses the bot; its posts go to the default channel meanwhile"
            if fallback
            else "Slack channel refuses the bot and there is no other channel; its posts wait",
            extra={"channel": refusing, "reason": error.reason, "wait_seconds": wait},
        )
        due = now if fallback else now + int(wait * 1e9)
        await self._journal.run(Journal.op_forget_thread(row.id, due, error.reason, state))
        return True

    def _slack_down(self, error: DeliveryError) -> bool:
        """Count a failure for want of Slack; True once they come in a row (no call going through
        between them): then all sending pauses, for a wait that doubles while it lasts."""
        self._failures_in_a_row += 1
        if self._failures_in_a_row < OUTAGE_AFTER_FAILURES:
            return False
        first = not self._outage_wait_seconds
        self._outage_wait_seconds = _longer_wait(
            self._outage_wait_seconds, OUTAGE_FIRST_WAIT_SECONDS, MAX_BACKOFF_SECONDS
        )
        self._paused_until_ns = self._clock_ns() + int(self._outage_wait_seconds * 1e9)
        if first:
            log.warning(
                "Slack looks down; sending pauses and notifications wait in the journal until it answers",
                extra={"reason": error.reason, "failures": self._failures_in_a_row},
            )
        return True

    def _read_secret_again(self) -> None:
        self._reload_secret = False
        try:
            changed = self._delivery.reload_secret()
        except UserError as exc:
            log.error("cannot read the Slack secret again", extra={"reason": str(exc)})
            return
        if changed:
            log.info("Slack secret changed; sending with the new one")

    async def _earlier_post(
        self, search: Awaitable[SlackRef | None], row: NotificationRow
    ) -> SlackRef | None:
        """The post an earlier attempt made (its answer lost, or the process died), or None. A
        search Slack cannot answer now is asked again later (raised); one it cannot answer at all
        (scope, membership) gives None: a possible duplicate beats a lost incident."""
        try:
            found = await search
        except DeliveryError as error:
            # Tried again later: Slack busy or down, or the token refused (it would refuse the post
            # too). A missing history scope is no such thing: then nobody can ever look.
            token_refused = refusal_of(error, self._delivery.mode) is Refusal.CREDENTIALS
            if error.retryable or (token_refused and error.code != "missing_scope"):
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
        """Post the incident as a reply in its workload's thread (or the possible forgeries'); shown
        in the channel too when it needs eyes for a reason the thread has not shown there yet
        (LEAKY, failed, withheld), so a thread never hides a problem."""
        if row.state == "sending" and row.slack_thread_ts:
            found = await self._earlier_post(self._delivery.find_posted_reply(root, row.incident_id), row)
            if found is not None:
                return found
        await self._journal.run(
            Journal.op_notification_state(
                row.id, "sending", slack_channel=root.channel, slack_thread_ts=root.ts
            )
        )
        message = self._incident_message(report, in_workload_thread=True)
        shown = self._broadcast.get((root.channel, root.ts or ""), set())
        problems = _problems(report)
        # Shown in the channel too when it needs eyes for a reason no earlier reply in this thread
        # showed there: in a storm the channel gets the first replica withheld, not all of them.
        ref = await self._delivery.post_in_thread(root, message, broadcast=bool(problems - shown))
        self._remember_broadcast(root, problems)
        return ref

    def _remember_broadcast(self, root: SlackRef, problems: frozenset[str]) -> None:
        if not problems:
            return
        key = (root.channel, root.ts or "")
        if key not in self._broadcast and len(self._broadcast) >= _BROADCAST_MEMORY:
            del self._broadcast[next(iter(self._broadcast))]  # the oldest thread
        self._broadcast.setdefault(key, set()).update(problems)

    def _schedule_thread_summary(self, reply: SlackRef, channel: str | None, now: int) -> None:
        """A reply went into a workload thread: its root message's summary of the replies is
        brought up to date (at most once per update interval; a waiting one absorbs the next)."""
        assert reply.thread_ts is not None
        root = self._journal.thread_root_incident(reply.channel, reply.thread_ts)
        if root is None:
            return
        interval = int(self._settings.update_interval_seconds * 1e9)
        # At most an interval ahead: an update "later than now" was made before the clock went back.
        due = min(max(now, self._thread_updated_ns.get(root, 0) + interval), now + interval)
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
        outcomes (kind ``thread``), or any post after a person acted on the incident (``update``).
        An incoming webhook cannot edit its posts: there the incident as it is now is a new one."""
        if not self._delivery.supports_threads:
            message = self._incident_message(report, repeats_in_thread=False)
            return await self._post_top_level(row, followed_up(message), row.channel)
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
            return await self._delivery.update(own, self._incident_message(report, in_workload_thread=True))
        replies = self._journal.thread_replies(channel, parent.slack_ts)
        root = SlackRef(channel=channel, ts=parent.slack_ts)
        ref = await self._delivery.update(root, self._incident_message(report, thread_replies=replies))
        if row.kind == "update":
            # A person acted (or a lapse was found): the repeat reply's "Now:" line says it too.
            _, counted = self._journal.incident_thread(row.incident_id)
            # Not the incident posted again (after its first post was deleted): it is no counter.
            if (
                counted is not None
                and counted.slack_ts is not None
                and counted.slack_ts != counted.slack_thread_ts
            ):
                reply = SlackRef(
                    channel=counted.slack_channel or channel, ts=counted.slack_ts, thread_ts=root.ts
                )
                await self._delivery.update(reply, render_repeat(report, self._commands))
        return ref

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

    async def _send_lapse(
        self, row: NotificationRow, channel: str | None, report: IncidentReport
    ) -> SlackRef | None:
        """Tell the incident's thread that what it put on the pod no longer holds (the pipeline's
        recheck journaled it), shown in the channel too, and have the incident's own post rendered
        again, leading with it."""
        found = self._journal.lapse_found(row.action_id) if row.action_id is not None else None
        if found is None or row.action_id is None:
            await self._fail(row, "the lapse it tells of is missing from the journal")
            return None
        gone = found.outcome.status is OutcomeStatus.POD_GONE
        message = render_lapse(
            row.incident_id,
            found.namespace,
            found.pod,
            found.outcome,
            row.action_id,
            command=None if gone else report.quarantine_again_command(self._commands),
            form=self._commands,
        )
        return await self._tell_thread(row, channel, message, found.outcome)

    async def _send_retry(
        self, row: NotificationRow, channel: str | None, report: IncidentReport
    ) -> SlackRef | None:
        """Tell the incident's thread what its isolation, withheld for a passing reason, did when the
        pipeline tried it again (journaled by it), shown in the channel too, and have the incident's
        own post rendered again with it."""
        done = self._journal.retry_done(row.action_id) if row.action_id is not None else None
        if done is None or row.action_id is None:
            await self._fail(row, "the retry it tells of is missing from the journal")
            return None
        message = render_retry(
            row.incident_id,
            done.namespace,
            done.pod,
            done.outcome,
            row.action_id,
            report.decision,
            before=report.outcomes,
            command=report.quarantine_command(self._commands),
            form=self._commands,
            tries_by_itself=self._tries_by_itself,
        )
        return await self._tell_thread(row, channel, message, done.outcome)

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
        thread = None
        if parent is not None and parent.slack_ts is not None and parent.slack_channel is not None:
            # Slack threads are one level deep: an incident that is itself a reply in its workload's
            # thread is answered in that thread.
            thread = SlackRef(channel=parent.slack_channel, ts=parent.slack_thread_ts or parent.slack_ts)
        elif threads and not self._incident_post_failed(row.incident_id):
            # The incident's own post is still on its way: its thread is not there yet.
            due = self._clock_ns() + int(PARENT_WAIT_SECONDS * 1e9)
            await self._journal.run(Journal.op_notification_state(row.id, "pending", next_attempt_ns=due))
            return None
        gone = thread is not None and (thread.channel, thread.ts) in self._gone_posts
        if thread is not None and not gone and self._redirect_reason(channel) is None:
            found = None
            if row.state == "sending":
                search = self._delivery.find_posted_reply(thread, row.incident_id, action_id=row.action_id)
                found = await self._earlier_post(search, row)
            try:
                if found is None:
                    await self._journal.run(Journal.op_notification_state(row.id, "sending"))
                    # A retry's reply on a replica in its workload's thread stays there: after an
                    # outage a storm's replicas are tried again together, and the thread's root
                    # counts what they did (a person's action, or a lapse, is shown in the channel).
                    quiet = row.kind == "retry" and parent is not None and bool(parent.slack_thread_ts)
                    found = await self._delivery.post_in_thread(thread, message, broadcast=not quiet)
            except DeliveryError as error:
                if not self._message_gone(error, thread):
                    raise
                gone = True
            else:
                # Also when an earlier attempt's reply is found: that attempt may have ended before these.
                self._learn_by_hand(row, outcome, update_post=True)
                if parent is not None and parent.slack_thread_ts:
                    # The workload thread's root counts its replies' outcomes: this one may have changed.
                    self._schedule_thread_summary(found, row.channel, self._clock_ns())
                return found
        # No thread to answer in (webhook mode, the incident never reached Slack, its thread was
        # deleted, or its channel refuses the bot): what was done is told in the channel instead.
        if gone:
            message = out_of_thread(message)
        found = await self._post_top_level(row, message, channel)
        self._learn_by_hand(row, outcome, update_post=False)
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
        after_release = _after_release_untold(report)
        if (
            parent is not None
            and parent.slack_thread_ts
            and parent.slack_ts
            and self._delivery.supports_threads
        ):
            if after_release:
                # Not only the reply in its workload's thread updated in place: the channel is told.
                thread = SlackRef(channel=parent.slack_channel or "", ts=parent.slack_thread_ts)
                await self._journal.run(Journal.op_notification_state(row.id, "sending"))
                message = render_repeat(report, self._commands, counted_here=False)
                ref = await self._delivery.post_in_thread(thread, message, broadcast=True)
                self._told_after_release(row.incident_id, report.after_release)
                return ref
            # The incident is a reply in its workload's thread: its count is updated in place.
            return await self._update_post(row, report, parent)
        if not self._delivery.supports_threads:
            await self._journal.run(Journal.op_notification_state(row.id, "sending"))
            message = render_repeat(report, self._commands, top_level=True, counted_here=False)
            ref = await self._delivery.post(message, channel=row.channel)
            if after_release:
                self._told_after_release(row.incident_id, report.after_release)
            return ref
        if parent is None or parent.slack_ts is None:
            if not self._incident_post_failed(row.incident_id):
                due = self._clock_ns() + int(PARENT_WAIT_SECONDS * 1e9)
                await self._journal.run(Journal.op_notification_state(row.id, "pending", next_attempt_ns=due))
            elif row.attempts == 0 and await self._post_incident_again(row.incident_id):
                # The repeat waits for it once (its first try), then counts in its thread.
                due = self._clock_ns() + int(PARENT_WAIT_SECONDS * 1e9)
                await self._journal.run(
                    Journal.op_notification_state(row.id, "pending", attempts=1, next_attempt_ns=due)
                )
            else:
                await self._fail(row, "the incident post itself failed; no thread to update")
            return None
        root, counter = self._repeat_thread(parent, reply)
        if root is not None:
            try:
                return await self._count_in_thread(row, report, root, counter)
            except DeliveryError as error:
                if not self._message_gone(error, root):
                    raise
        # The incident's post (its thread) was deleted in Slack while its alerts still come: it is
        # posted again, and the next repeats are counted in the new post's thread.
        log.warning(
            "incident post deleted in Slack; posting it again for its repeats",
            extra={"incident": row.incident_id},
        )
        message = self._incident_message(report)
        ref = await self._post_top_level(row, posted_again(message), row.channel)
        # Its own ts as its thread: the repeat row names the thread later repeats are counted in.
        return SlackRef(channel=ref.channel, ts=ref.ts, thread_ts=ref.ts)

    def _repeat_thread(
        self, parent: NotificationRow, reply: NotificationRow | None
    ) -> tuple[SlackRef | None, SlackRef | None]:
        """Where the incident's repeats are counted: the thread's root and the reply counting them
        there (None: none yet). The incident post's thread or, once that was deleted, the thread of
        the post a repeat made again (its row's thread is its own ts). (None, None): deleted."""
        channel = parent.slack_channel or ""
        root = SlackRef(channel=channel, ts=parent.slack_ts)
        counter = None
        if reply is not None and reply.slack_ts is not None:
            at = reply.slack_channel or channel
            if reply.slack_thread_ts == reply.slack_ts:
                root = SlackRef(channel=at, ts=reply.slack_ts)
            else:
                # Replies sent before their thread was saved with them are in the incident post's.
                thread = reply.slack_thread_ts or parent.slack_ts
                root = SlackRef(channel=at, ts=thread)
                counter = SlackRef(channel=at, ts=reply.slack_ts, thread_ts=thread)
        if (root.channel, root.ts) in self._gone_posts:
            return None, None
        return root, counter

    async def _count_in_thread(
        self, row: NotificationRow, report: IncidentReport, root: SlackRef, counter: SlackRef | None
    ) -> SlackRef:
        """Update the thread's repeat counter, or post it: once (a retry after an ambiguous failure
        looks for the earlier try's reply first). A counter deleted on its own is posted anew. The
        first repeat after a release is a new counter, shown in the channel (an edit tells no one)."""
        message = render_repeat(report, self._commands)
        earlier_try = row.state == "sending"
        await self._journal.run(Journal.op_notification_state(row.id, "sending"))
        if _after_release_untold(report):
            # (An earlier try whose answer was lost may have posted it: told twice, not never.)
            ref = await self._delivery.post_in_thread(root, message, broadcast=True)
            self._told_after_release(row.incident_id, report.after_release)
            return ref
        if counter is not None:
            try:
                return await self._delivery.update(counter, message)
            except DeliveryError as error:
                if refusal_of(error, self._delivery.mode) is not Refusal.MESSAGE_GONE:
                    raise
            # Its thread may be gone with it: then posting in it says so (thread_not_found).
        elif earlier_try:
            search = self._delivery.find_posted_reply(root, row.incident_id, kind=MessageKind.REPEAT)
            found = await self._earlier_post(search, row)
            if found is not None:
                return await self._delivery.update(found, message)
        return await self._delivery.post_in_thread(root, message)

    def _incident_message(
        self,
        report: IncidentReport,
        *,
        in_workload_thread: bool = False,
        thread_replies: Sequence[str | None] = (),
        repeats_in_thread: bool = True,
    ) -> SlackMessage:
        """The incident's post, with this responder's commands and retry schedule."""
        return render_incident(
            report,
            in_workload_thread=in_workload_thread,
            thread_replies=thread_replies,
            repeats_in_thread=repeats_in_thread,
            form=self._commands,
            tries_by_itself=self._tries_by_itself,
        )

    def _told_after_release(self, incident_id: str, told: AlertingAfterRelease | None) -> None:
        """The repeat after the release ``told`` (as rendered) is told: the later ones update its
        reply, as any counter. Not a later release's, come while it was being posted: that one is
        told on its own."""
        state = self._incidents.by_id(incident_id) if self._incidents is not None else None
        after = state.report.after_release if state is not None and state.report is not None else None
        if state is None or state.report is None or after is None or told is None:
            return
        if after.released_at_ns == told.released_at_ns:
            told_now = dataclasses.replace(after, told=True)
            state.report = dataclasses.replace(state.report, after_release=told_now)

    async def _post_incident_again(self, incident_id: str) -> bool:
        """Queue the incident's failed post again (a repeat came: its alerts still come, and
        on-call has not been told); False when there is none to queue (not routed to Slack)."""
        with self._journal.reader() as conn:
            found = conn.execute(
                "SELECT id FROM notifications WHERE incident_id = ? AND kind = 'incident'"
                " AND state = 'failed'",
                (incident_id,),
            ).fetchone()
        if found is None:
            return False
        now = self._clock_ns()
        await self._journal.run(Journal.op_notification_state(int(found[0]), "pending", next_attempt_ns=now))
        log.warning("incident post failed earlier; a repeat queues it again", extra={"incident": incident_id})
        self.wake()
        return True

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
        if shown is not None:
            state.repeats_sent += 1
        report = state.report
        if shown is not None and state.count > shown and report is not None:
            # Repeats arrived while this update was on its way: the thread must end on the real
            # count, so one more update follows (no later repeat may come to trigger it).
            state.repeat_pending = True
            due = now_ns + repeat_interval_ns(self._settings, state.repeats_sent)
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
        self,
        row: NotificationRow,
        reason: str,
        *,
        retry_after: float | None,
        state: str = "pending",
        counted: bool = True,
    ) -> None:
        """Try ``row`` again later; ``counted``: this try uses up one of its max_attempts (not for a
        rate limit or refused credentials: waiting those out is not failing)."""
        attempts = row.attempts + 1 if counted else row.attempts
        due = self._clock_ns() + int(retry_delay(max(attempts, 1), retry_after) * 1e9)
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
        # serving_guard_notifications_total{kind="incident",result="failed"}: on-call was not told.
        self._metrics.notifications.labels(row.kind, "failed").inc()
        if row.kind == "repeat":
            self._repeat_done(row.incident_id, self._clock_ns())
        log.error(
            "incident post failed; on-call was not told (its next repeat tries again)"
            if row.kind == "incident"
            else "notification failed for good",
            extra={"incident": row.incident_id, "kind": row.kind, "reason": reason},
        )
