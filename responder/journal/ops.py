"""The journal's writes other than alert rows: each a small value that runs inside the writer's
transaction when called with its connection.

They are values, not closures, so that the writer can live in another process
(``journal.writer: process``): an op is pickled to it with its arguments, already reduced to plain
SQL parameters by its constructor in :class:`responder.journal.store.Journal`.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from responder.actions.pod_records import RELEASED_AT
from responder.journal.schema import NOTIFICATION_QUEUE


def used_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of live records: the database's pages minus its free list (the file does not shrink
    when rows are deleted; its free pages are reused)."""
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    return int((pages - free) * size)


@dataclass(frozen=True, slots=True)
class Touch:
    """A write that changes nothing: the readiness check's proof that the journal takes writes."""

    def __call__(self, conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE meta SET value = value WHERE key = 'schema'")


@dataclass(frozen=True, slots=True)
class FinishAlert:
    event_ns: int
    alert_id: str
    incident_id: str | None
    outcome: str
    finished_ns: int

    def __call__(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            "UPDATE alerts SET state = 'done', incident_id = ?, outcome = ?, finished_ns = ?"
            " WHERE event_ns = ? AND alert_id = ?",
            (self.incident_id, self.outcome, self.finished_ns, self.event_ns, self.alert_id),
        )


@dataclass(frozen=True, slots=True)
class Undefer:
    """A deferred alert (row ``seq``) taken up: pending from now on. Returns whether it still was
    deferred (False: taken up already)."""

    seq: int

    def __call__(self, conn: sqlite3.Connection) -> bool:
        cursor = conn.execute(
            "UPDATE alerts SET state = 'pending' WHERE seq = ? AND state = 'deferred'", (self.seq,)
        )
        return cursor.rowcount == 1


@dataclass(frozen=True, slots=True)
class OpenIncident:
    # incident_id, key_digest, rule, namespace, pod, container_id, hostname, first_alert_id,
    # first_event_ns, opened_ns, last_seen_ns, count
    values: tuple[object, ...]

    def __call__(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO incidents(incident_id, key_digest, rule, namespace, pod, container_id, hostname,"
            " first_alert_id, first_event_ns, opened_ns, last_seen_ns, count)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
            " ON CONFLICT(incident_id) DO NOTHING",
            self.values,
        )


@dataclass(frozen=True, slots=True)
class BumpIncident:
    incident_id: str
    count: int
    last_seen_ns: int

    def __call__(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            "UPDATE incidents SET count = MAX(count, ?), last_seen_ns = MAX(last_seen_ns, ?)"
            " WHERE incident_id = ?",
            (self.count, self.last_seen_ns, self.incident_id),
        )


@dataclass(frozen=True, slots=True)
class RecountIncident:
    """Set an incident's counter to what the pipeline holds, after a repeat it had counted was
    refused or found redelivered: writes in flight by then carried a count that included it, and
    the counter only ever takes the largest count written. Queued after them, so it lands last."""

    incident_id: str
    count: int

    def __call__(self, conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE incidents SET count = ? WHERE incident_id = ?", (self.count, self.incident_id))


@dataclass(frozen=True, slots=True)
class FoldDuplicate:
    """A repeat folded into its incident: bump the incident and finish the alert in one write."""

    bump: BumpIncident
    finish: FinishAlert

    def __call__(self, conn: sqlite3.Connection) -> None:
        self.bump(conn)
        self.finish(conn)


@dataclass(frozen=True, slots=True)
class RecordDecision:
    incident_id: str
    decided_ns: int
    verification_json: str
    decision_json: str
    pod_context_json: str | None
    # A decision made again (a retry of a withheld isolation) keeps the first one's time: the
    # audit's time to decision is the opening's, its actions' own times say when the retry acted.
    again: bool = False

    def __call__(self, conn: sqlite3.Connection) -> None:
        decided = "COALESCE(decided_ns, ?)" if self.again else "?"
        conn.execute(
            f"UPDATE incidents SET decided_ns = {decided}, verification = ?, decision = ?,"  # noqa: S608
            " pod_context = ? WHERE incident_id = ?",
            (
                self.decided_ns,
                self.verification_json,
                self.decision_json,
                self.pod_context_json,
                self.incident_id,
            ),
        )


@dataclass(frozen=True, slots=True)
class RecordAction:
    # incident_id, alert_id, namespace, pod, action, status, detail, outcome (JSON), started_ns,
    # finished_ns, actor
    values: tuple[object, ...]

    def __call__(self, conn: sqlite3.Connection) -> int:
        cursor = conn.execute(
            "INSERT INTO actions(incident_id, alert_id, namespace, pod, action, status, detail, outcome,"
            " started_ns, finished_ns, actor) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            self.values,
        )
        return int(cursor.lastrowid or 0)


@dataclass(frozen=True, slots=True)
class RecordActionByHand:
    """An action a person took (``serving-guard quarantine --incident``), and, when its incident
    was posted to Slack (or is about to be), a ``by_hand`` notification that tells the incident's
    thread: the running responder's notifier finds it in the journal and sends it.
    A release names the pod's ``released_at`` record of it: told once, whether the command (run
    with the journal) or the responder (``found`` it on the pod) journals it first; what the
    responder found is not journaled again either. ``tell`` False: journaled only.
    Returns the notification's id, or None: nothing is told."""

    action: RecordAction
    incident_id: str | None
    now_ns: int
    released_at: str | None = None
    found: bool = False
    tell: bool = True

    def __call__(self, conn: sqlite3.Connection) -> int | None:
        journaled = (
            None if self.released_at is None else release_journaled(conn, self.action, self.released_at)
        )
        if journaled is not None:
            row_id, under = journaled
            if self.found and under is None and self.incident_id is not None:
                # The command journaled it without --incident: it is this incident's release, one
                # row, in the incident's story and told in its thread (once: now attached).
                conn.execute("UPDATE actions SET incident_id = ? WHERE id = ?", (self.incident_id, row_id))
                return (
                    tell_thread(conn, self.incident_id, "by_hand", self.now_ns, row_id) if self.tell else None
                )
            if self.found or self.incident_id is None or under == self.incident_id:
                return None  # in the trail already, under its incident (or the command's own row)
        action_id = self.action(conn)
        if self.incident_id is None or journaled is not None or not self.tell:
            return None
        return tell_thread(conn, self.incident_id, "by_hand", self.now_ns, action_id)


@dataclass(frozen=True, slots=True)
class RepeatDueNow:
    """The incident's waiting repeat update goes now, not after the repeat interval: what it says
    needs eyes at once (the pod still alerts after its release)."""

    incident_id: str
    now_ns: int

    def __call__(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            "UPDATE notifications SET next_attempt_ns = MIN(next_attempt_ns, ?)"
            " WHERE incident_id = ? AND kind = 'repeat' AND state = 'pending'",
            (self.now_ns, self.incident_id),
        )


@dataclass(frozen=True, slots=True)
class RecordTold:
    """An action of the incident the responder took after its decision, and, with ``tell`` and when
    the incident was posted to Slack (or is about to be), a notification of ``kind`` that tells the
    incident's thread, in the same transaction: journaled, it is told once, across restarts.
    ``lapse``: the recheck's finding that what the incident put on its pod no longer holds (RECHECK,
    status LAPSED); ``retry``: what an isolation withheld for a passing reason did when tried again.
    Returns the notification's id, or None: nothing is told."""

    action: RecordAction
    incident_id: str
    now_ns: int
    tell: bool
    kind: str

    def __call__(self, conn: sqlite3.Connection) -> int | None:
        action_id = self.action(conn)
        if not self.tell:
            return None
        return tell_thread(conn, self.incident_id, self.kind, self.now_ns, action_id)


def release_journaled(
    conn: sqlite3.Connection, action: RecordAction, released_at: str
) -> tuple[int, str | None] | None:
    """The journal's row (its id and incident) of a release of ``action``'s pod that wrote or found
    ``released_at`` (the pod's record of one release: the command's row and the responder's finding
    name it alike), or None."""
    namespace, pod = action.values[2], action.values[3]
    rows = conn.execute(
        "SELECT id, incident_id, outcome FROM actions WHERE namespace = ? AND pod = ? AND action = 'release'"
        " AND status = 'released' AND instr(outcome, ?) > 0 ORDER BY id",
        (namespace, pod, released_at),
    )
    for row_id, incident_id, outcome in rows:
        extra = json.loads(outcome).get("extra") or {}
        if extra.get(RELEASED_AT) == released_at:
            return int(row_id), incident_id
    return None


def tell_thread(
    conn: sqlite3.Connection, incident_id: str, kind: str, now_ns: int, action_id: int
) -> int | None:
    """Queue a notification of ``kind`` telling the action ``action_id`` in the thread of the
    incident's Slack post, to the post's channel; None when the incident has no post to answer
    (none queued, or it was not routed to Slack)."""
    post = conn.execute(
        "SELECT channel FROM notifications WHERE incident_id = ? AND kind = 'incident'"
        " AND state != 'dropped' ORDER BY id LIMIT 1",
        (incident_id,),
    ).fetchone()
    if post is None:
        return None
    notify = ScheduleNotification(incident_id, kind, post[0], now_ns, now_ns)
    return notify(conn, action_id=action_id)


@dataclass(frozen=True, slots=True)
class ScheduleNotification:
    """Queue a notification; a repeat (or an update of the incident's post) is coalesced with one
    already waiting for the incident.
    Returns the new notification's id, or None when coalesced.

    With ``decided_only``, an incident's post is queued only if the journal holds the incident's
    decision (else None): the pipeline queues it while that write may still be refused, and a post
    queued without it could not be rendered after a restart (it would fail for good, and the
    alert, left pending and decided again, would find it already queued)."""

    incident_id: str
    kind: str
    channel: str | None
    due_ns: int
    now_ns: int
    decided_only: bool = False

    def __call__(self, conn: sqlite3.Connection, *, action_id: int | None = None) -> int | None:
        """``action_id``: the action a ``by_hand`` or ``lapse`` notification tells (tell_thread)."""
        if self.kind == "incident" and self.decided_only:
            decided = conn.execute(
                "SELECT 1 FROM incidents WHERE incident_id = ? AND decided_ns IS NOT NULL",
                (self.incident_id,),
            ).fetchone()
            if decided is None:
                return None
        if self.kind == "incident":
            # One post per incident, even when a crash makes us decide it twice.
            exists = conn.execute(
                "SELECT id FROM notifications WHERE incident_id = ? AND kind = 'incident'",
                (self.incident_id,),
            ).fetchone()
            if exists is not None:
                return None
        if self.kind in ("repeat", "thread", "update"):
            waiting = conn.execute(
                "SELECT id FROM notifications WHERE incident_id = ? AND kind = ? AND state = 'pending'",
                (self.incident_id, self.kind),
            ).fetchone()
            if waiting is not None:
                return None
        cursor = conn.execute(
            "INSERT INTO notifications(incident_id, kind, channel, state, next_attempt_ns, created_ns,"
            " action_id) VALUES (?, ?, ?, 'pending', ?, ?, ?)",
            (self.incident_id, self.kind, self.channel, self.due_ns, self.now_ns, action_id),
        )
        return cursor.lastrowid


@dataclass(frozen=True, slots=True)
class NotificationState:
    # state, attempts, next_attempt_ns, last_error, slack_channel, slack_ts, slack_thread_ts, sent_ns,
    # count_sent, id: None keeps a column as it is
    values: tuple[object, ...]

    def __call__(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            "UPDATE notifications SET state = ?, attempts = COALESCE(?, attempts),"
            " next_attempt_ns = COALESCE(?, next_attempt_ns), last_error = COALESCE(?, last_error),"
            " slack_channel = COALESCE(?, slack_channel), slack_ts = COALESCE(?, slack_ts),"
            " slack_thread_ts = COALESCE(?, slack_thread_ts),"
            " sent_ns = COALESCE(?, sent_ns), count_sent = COALESCE(?, count_sent) WHERE id = ?",
            self.values,
        )


@dataclass(frozen=True, slots=True)
class ForgetThread:
    """A notification's choice of thread (and channel) is dropped, and it is due at ``due_ns``: the
    thread it was to go into was deleted, or its channel refused the bot."""

    notification_id: int
    due_ns: int
    error: str | None = None
    # 'sending' when an earlier try may have landed: the retry looks for it first.
    state: str = "pending"

    def __call__(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            "UPDATE notifications SET state = ?, slack_channel = NULL, slack_thread_ts = NULL,"
            " next_attempt_ns = ?, last_error = COALESCE(?, last_error) WHERE id = ?",
            (self.state, self.due_ns, self.error, self.notification_id),
        )


# Waiting notifications of queue 2 (throttled updates), and of every other queue, due after the
# parameter (see schema.NOTIFICATION_QUEUE): each read through notifications_queue.
THROTTLED_DUE_AFTER = (
    f"FROM notifications WHERE {NOTIFICATION_QUEUE.format(n='')} = 2"
    " AND state IN ('pending', 'sending') AND next_attempt_ns > ?"
)
UNTHROTTLED_DUE_AFTER = (
    f"FROM notifications WHERE {NOTIFICATION_QUEUE.format(n='')} IN (0, 1, 3)"
    " AND state IN ('pending', 'sending') AND next_attempt_ns > ?"
)


@dataclass(frozen=True, slots=True)
class DueAgain:
    """Waiting notifications due further ahead of ``now_ns`` than any is ever set (``longest_ns``,
    ``throttled_longest_ns`` for a throttled update's) were set before the clock was stepped back:
    due at ``now_ns`` (rescheduled, each is again at most that far ahead). Returns how many."""

    now_ns: int
    longest_ns: int
    throttled_longest_ns: int

    def __call__(self, conn: sqlite3.Connection) -> int:
        moved = 0
        for rows, longest in (
            (THROTTLED_DUE_AFTER, self.throttled_longest_ns),
            (UNTHROTTLED_DUE_AFTER, self.longest_ns),
        ):
            moved += conn.execute(
                f"UPDATE notifications SET next_attempt_ns = ? WHERE id IN (SELECT id {rows})",  # noqa: S608
                (self.now_ns, self.now_ns + longest),
            ).rowcount
        return moved


@dataclass(frozen=True, slots=True)
class ResetActions:
    """Forget the actions of an interrupted run: the resumed run redoes them (idempotently)
    and its records are the incident's one final set."""

    incident_id: str

    def __call__(self, conn: sqlite3.Connection) -> None:
        conn.execute("DELETE FROM actions WHERE incident_id = ?", (self.incident_id,))


@dataclass(frozen=True, slots=True)
class Prune:
    """Retention: drop finished records older than ``cutoff_ns``; if still over ``max_bytes``,
    prune to ``prune_to_bytes`` (prune_to_size: never pending alerts, nor what an incident open
    since ``open_since_ns`` or with posts still to go out needs). Returns how many alerts were
    removed. Gives no post up: PruneToSize does, which the journal runs and reports itself."""

    cutoff_ns: int
    max_bytes: int
    prune_to_bytes: int
    open_since_ns: int

    def __call__(self, conn: sqlite3.Connection) -> int:
        cutoff = self.cutoff_ns
        removed: int = conn.execute(
            "DELETE FROM alerts WHERE state = 'done' AND received_ns < ?", (cutoff,)
        ).rowcount
        conn.execute("DELETE FROM actions WHERE finished_ns < ?", (cutoff,))
        # 'dropped': never to be sent (not routed to Slack), kept no longer than a sent one.
        conn.execute(
            "DELETE FROM notifications WHERE state IN ('sent', 'failed', 'dropped') AND created_ns < ?",
            (cutoff,),
        )
        conn.execute("DELETE FROM incidents WHERE last_seen_ns < ?", (cutoff,))
        if used_bytes(conn) > self.max_bytes:
            removed += prune_to_size(conn, self.prune_to_bytes, self.open_since_ns)
        return removed


@dataclass(frozen=True, slots=True)
class PostsGivenUp:
    """Posts still waiting for Slack that pruning to size gave up (state 'dropped') so that their
    incidents could go: how many of each kind, of how many incidents, and when the oldest of them
    was queued."""

    by_kind: tuple[tuple[str, int], ...]
    incidents: int
    waiting_since_ns: int

    @property
    def posts(self) -> int:
        return sum(count for _, count in self.by_kind)

    def __add__(self, more: PostsGivenUp) -> PostsGivenUp:
        by_kind = dict(self.by_kind)
        for kind, count in more.by_kind:
            by_kind[kind] = by_kind.get(kind, 0) + count
        since = min(self.waiting_since_ns, more.waiting_since_ns)
        return PostsGivenUp(tuple(sorted(by_kind.items())), self.incidents + more.incidents, since)


@dataclass(frozen=True, slots=True)
class Pruned:
    """What a prune to size removed: how many alerts, and the posts it gave up (None: none)."""

    alerts: int
    given_up: PostsGivenUp | None = None


@dataclass(frozen=True, slots=True)
class PruneToSize:
    """Prune until the live records are at most ``target_bytes`` (the journal asks for it as
    writes near its bound): see prune_to_size. Still over it, posts waiting for Slack give way past
    ``waiting_bytes`` (give_way), and what they kept is pruned too."""

    target_bytes: int
    open_since_ns: int
    waiting_bytes: int

    def __call__(self, conn: sqlite3.Connection) -> Pruned:
        alerts = prune_to_size(conn, self.target_bytes, self.open_since_ns)
        given_up: PostsGivenUp | None = None
        for _ in range(_PRUNE_ROUNDS):  # each round measures again: sizes are estimates
            excess = used_bytes(conn) - self.target_bytes
            if excess <= 0:
                break
            more = give_way(conn, excess, self.open_since_ns, self.waiting_bytes)
            if more is None:
                break
            given_up = more if given_up is None else given_up + more
            alerts += prune_to_size(conn, self.target_bytes, self.open_since_ns)
        return Pruned(alerts, given_up)


# Bytes an alert row takes besides its payload: its other columns and its index entries. Only an
# estimate of how many rows free the excess: each round measures again and deletes more if short.
ROW_BYTES = 256
# Likewise for an incident besides its JSON columns and its actions' records: its row, its
# indexes, its posts.
INCIDENT_BYTES = 1024
_PRUNE_ROUNDS = 4

# The opening alerts that pruning keeps: an incident's post renders from its opening alert, and
# recovery restores an incident (so that its repeats fold into it, not open a second one with a
# second post) only with it. Kept while the incident is open (last seen since the first
# parameter: the dedupe window) or has posts still to go out.
_KEPT_OPENERS = (
    "SELECT a.seq FROM incidents i JOIN alerts a"
    " ON a.event_ns = i.first_event_ns AND a.alert_id = i.first_alert_id WHERE i.last_seen_ns >= ?"
    " UNION SELECT a.seq FROM notifications n JOIN incidents i ON i.incident_id = n.incident_id"
    " JOIN alerts a ON a.event_ns = i.first_event_ns AND a.alert_id = i.first_alert_id"
    " WHERE n.state IN ('pending', 'sending')"
)


def prune_to_size(conn: sqlite3.Connection, target_bytes: int, open_since_ns: int) -> int:
    """Delete the oldest finished alerts until the live records are at most ``target_bytes``, or
    none is left: in one pass, the rows whose payloads add up to the excess, not a fixed share.
    Then, still over, the oldest finished incidents with their actions and posts: a stream that
    opens an incident per alert (forged alerts, each with a container id of its own) grows those
    too, and the journal would refuse every input until retention (days) removed them.
    Never pending alerts (not done yet), nor an open incident (last seen since ``open_since_ns``)
    or one with posts still to go out, nor their opening alerts. Pages freed are reused by SQLite,
    so deleting bounds growth. Returns how many alerts were removed."""
    removed = 0
    for _ in range(_PRUNE_ROUNDS):
        excess = used_bytes(conn) - target_bytes
        if excess <= 0:
            return removed
        last = _last_of_oldest_finished(conn, excess, open_since_ns)
        if last is None:
            break  # only pending alerts and kept openers are left
        removed += conn.execute(
            f"DELETE FROM alerts WHERE state = 'done' AND seq <= ? AND seq NOT IN ({_KEPT_OPENERS})",  # noqa: S608
            (last, open_since_ns),
        ).rowcount
    for _ in range(_PRUNE_ROUNDS):
        excess = used_bytes(conn) - target_bytes
        if excess <= 0 or not _prune_oldest_incidents(conn, excess, open_since_ns):
            break
    return removed


def _last_of_oldest_finished(conn: sqlite3.Connection, excess_bytes: int, open_since_ns: int) -> int | None:
    """The seq of the newest of the oldest finished alerts, kept openers aside, that together take
    ``excess_bytes`` (all of them if they take less), or None when there is none. length() of a
    blob reads its size from the record, not its pages."""
    prunable = f"FROM alerts WHERE state = 'done' AND seq NOT IN ({_KEPT_OPENERS})"
    row = conn.execute(
        f"SELECT seq FROM (SELECT seq, SUM(length(payload) + ?) OVER (ORDER BY seq) AS taken {prunable})"  # noqa: S608
        " WHERE taken >= ? LIMIT 1",
        (ROW_BYTES, open_since_ns, excess_bytes),
    ).fetchone()
    if row is None:
        row = conn.execute(f"SELECT MAX(seq) {prunable}", (open_since_ns,)).fetchone()
    return None if row is None or row[0] is None else int(row[0])


# The bytes an incident's record takes (``i``), its actions' included: INCIDENT_BYTES is its parameter.
_INCIDENT_SIZE = (
    "length(COALESCE(i.verification, '')) + length(COALESCE(i.decision, ''))"
    " + length(COALESCE(i.pod_context, '')) + (SELECT COALESCE(SUM(length(a.outcome) + length(a.detail)), 0)"
    " FROM actions a WHERE a.incident_id = i.incident_id) + ?"
)

# Incidents pruning may remove: not open (last seen before the parameter), no post still to go out,
# and not opened by an alert still pending (its resumption reads the incident).
_FINISHED_INCIDENTS = (
    "FROM incidents i WHERE i.last_seen_ns < ?"
    " AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.incident_id = i.incident_id"
    " AND n.state IN ('pending', 'sending'))"
    " AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.event_ns = i.first_event_ns"
    " AND a.alert_id = i.first_alert_id AND a.state != 'done')"
)


def _prune_oldest_incidents(conn: sqlite3.Connection, excess_bytes: int, open_since_ns: int) -> bool:
    """Delete the oldest finished incidents (by when last seen) that take about ``excess_bytes``,
    with their actions and notifications; False when there is none to delete."""
    sized = (  # constants only: the values are bound parameters
        "SELECT i.incident_id, i.last_seen_ns, i.rowid AS r, "
        + _INCIDENT_SIZE
        + " AS size "
        + _FINISHED_INCIDENTS
    )
    ids = [
        row[0]
        for row in conn.execute(
            # Each incident whose elders take less than the excess: together, about the excess.
            "SELECT incident_id FROM (SELECT incident_id, last_seen_ns, r,"  # noqa: S608 (constants only)
            f" SUM(size) OVER (ORDER BY last_seen_ns, r) - size AS before FROM ({sized}))"
            " WHERE before < ? ORDER BY last_seen_ns, r",
            (INCIDENT_BYTES, open_since_ns, excess_bytes),
        )
    ]
    for start in range(0, len(ids), _INCIDENTS_PER_STATEMENT):
        chunk = ids[start : start + _INCIDENTS_PER_STATEMENT]
        marks = ",".join("?" * len(chunk))
        for table in ("actions", "notifications", "incidents"):
            # Only placeholders are formatted in; the ids are bound parameters.
            conn.execute(f"DELETE FROM {table} WHERE incident_id IN ({marks})", chunk)  # noqa: S608
    return bool(ids)


# Incident ids to a statement (within the 999 bound variables of the oldest SQLite builds).
_INCIDENTS_PER_STATEMENT = 500


# Why pruning gave a post up (its last_error, shown by the audit trail).
GIVEN_UP_FOR_ROOM = "given up: the journal was at its size bound while this post waited for Slack"

# The incidents that only posts still waiting for Slack keep from pruning (closed, their opening
# alert done): each with when its oldest waiting post was queued, and the bytes it and its opening
# alert take (parameters: INCIDENT_BYTES, ROW_BYTES, open_since_ns), its oldest waiting post first.
_HELD_BY_WAITING_POSTS = (
    "SELECT w.incident_id, w.since, "  # noqa: S608 (constants only)
    + _INCIDENT_SIZE
    + " + (SELECT COALESCE(SUM(length(a.payload)), 0) + COUNT(*) * ? FROM alerts a"
    " WHERE a.event_ns = i.first_event_ns AND a.alert_id = i.first_alert_id)"
    " FROM (SELECT incident_id, MIN(id) AS oldest, MIN(created_ns) AS since FROM notifications"
    " WHERE state IN ('pending', 'sending') GROUP BY incident_id) w"
    " JOIN incidents i ON i.incident_id = w.incident_id WHERE i.last_seen_ns < ?"
    " AND NOT EXISTS (SELECT 1 FROM alerts a WHERE a.event_ns = i.first_event_ns"
    " AND a.alert_id = i.first_alert_id AND a.state != 'done') ORDER BY w.oldest"
)


def give_way(
    conn: sqlite3.Connection, excess_bytes: int, open_since_ns: int, waiting_bytes: int
) -> PostsGivenUp | None:
    """Give up the oldest posts still waiting for Slack (a long outage, a refused token), so that
    the incidents only they keep (and their opening alerts) can be pruned: alerts win over old
    posts. Only past ``waiting_bytes`` held by those incidents, and only as much as the
    ``excess_bytes`` pruning could not free: a short outage loses nothing, and an open incident
    (last seen since ``open_since_ns``) keeps its post. None when nothing was given up."""
    held = conn.execute(_HELD_BY_WAITING_POSTS, (INCIDENT_BYTES, ROW_BYTES, open_since_ns)).fetchall()
    room = min(excess_bytes, sum(size for _, _, size in held) - waiting_bytes)
    chosen: list[str] = []
    since: list[int] = []
    for incident_id, queued_ns, size in held:
        if room <= 0:
            break
        chosen.append(incident_id)
        since.append(queued_ns)
        room -= size
    if not chosen:
        return None
    by_kind: dict[str, int] = {}
    for start in range(0, len(chosen), _INCIDENTS_PER_STATEMENT):
        chunk = chosen[start : start + _INCIDENTS_PER_STATEMENT]
        # Only placeholders are formatted in; the ids are bound parameters.
        marks = ",".join("?" * len(chunk))
        waiting = f"WHERE state IN ('pending', 'sending') AND incident_id IN ({marks})"
        counted = conn.execute(f"SELECT kind, COUNT(*) FROM notifications {waiting} GROUP BY kind", chunk)  # noqa: S608
        for kind, count in counted:
            by_kind[kind] = by_kind.get(kind, 0) + count
        conn.execute(
            f"UPDATE notifications SET state = 'dropped', last_error = ? {waiting}",  # noqa: S608
            (GIVEN_UP_FOR_ROOM, *chunk),
        )
    return PostsGivenUp(tuple(sorted(by_kind.items())), len(chosen), min(since))
