"""The Slack posts waiting in the journal, in the order they go out: what on-call needs first
(tells, verified incidents' posts), then every other incident's post, then repeat counts and
updates; each queue read in its index's order, so a batch costs the same with a backlog of 200,000
posts as with none."""

from __future__ import annotations

import heapq
import itertools
import sqlite3

from responder.journal.schema import NOTIFICATION_QUEUE, VERIFIED_INCIDENT

# The queues of schema.NOTIFICATION_QUEUE (responder/journal/schema.py).
_TELLS, _POSTS, _THROTTLED_UPDATES, _OTHER_UPDATES = 0, 1, 2, 3
_WAITING_IN_QUEUE = (
    f"{NOTIFICATION_QUEUE.format(n='n.')} = ?"
    " AND n.state IN ('pending', 'sending') AND n.next_attempt_ns <= ?"
)
_DUE_ORDER = " ORDER BY n.next_attempt_ns, n.id"
_VERIFIED = VERIFIED_INCIDENT.format(i="i.")
# How many of the incident posts due first are looked through for verified ones before the verified
# incidents are (incidents_verified): in a storm of genuine incidents they come early, in a storm
# of forged ones the verified incidents are few. A few batches: each batch reads all of them.
_VERIFIED_LOOKAHEAD = 250


def posts_due(conn: sqlite3.Connection, now_ns: int, limit: int) -> list[sqlite3.Row]:
    """The first ``limit`` notifications due at ``now_ns``, in the order Journal.due_notifications
    gives them: tells and verified incidents' posts, then the other posts, then the updates."""
    rows = _first(limit, _due_in_queue(conn, _TELLS, now_ns, limit), _verified_posts_due(conn, now_ns, limit))
    if len(rows) < limit:
        rows += _unverified_posts_due(conn, now_ns, limit - len(rows))
    if len(rows) < limit:
        left = limit - len(rows)
        rows += _first(
            left,
            _due_in_queue(conn, _THROTTLED_UPDATES, now_ns, left),
            _due_in_queue(conn, _OTHER_UPDATES, now_ns, left),
        )
    return rows


def _due_in_queue(conn: sqlite3.Connection, queue: int, now_ns: int, limit: int) -> list[sqlite3.Row]:
    """The first ``limit`` rows due at ``now_ns`` of ``queue``, in its index's order."""
    return conn.execute(
        f"SELECT n.* FROM notifications n WHERE {_WAITING_IN_QUEUE}{_DUE_ORDER} LIMIT ?",  # noqa: S608
        (queue, now_ns, limit),
    ).fetchall()


def _verified_posts_due(conn: sqlite3.Connection, now_ns: int, limit: int) -> list[sqlite3.Row]:
    """The first ``limit`` posts due of verified incidents: among the first _VERIFIED_LOOKAHEAD
    posts due, or when they hold fewer and there are more, from the verified incidents."""
    ahead = conn.execute(
        f"SELECT n.* FROM (SELECT n.* FROM notifications n WHERE {_WAITING_IN_QUEUE}{_DUE_ORDER} LIMIT ?) n"  # noqa: S608
        f" JOIN incidents i ON i.incident_id = n.incident_id WHERE {_VERIFIED}{_DUE_ORDER} LIMIT ?",
        (_POSTS, now_ns, _VERIFIED_LOOKAHEAD, limit),
    ).fetchall()
    if len(ahead) == limit:
        return ahead
    beyond = conn.execute(
        f"SELECT 1 FROM notifications n WHERE {_WAITING_IN_QUEUE}{_DUE_ORDER} LIMIT 1 OFFSET ?",  # noqa: S608
        (_POSTS, now_ns, _VERIFIED_LOOKAHEAD),
    ).fetchone()
    if beyond is None:  # those were all the posts due
        return ahead
    return conn.execute(
        # From each verified incident (CROSS JOIN: through incidents_verified) to its waiting post,
        # then those due sorted: not the due posts' index for each incident.
        "SELECT n.* FROM incidents i CROSS JOIN notifications n INDEXED BY notifications_waiting_post"  # noqa: S608
        f" WHERE {_VERIFIED} AND n.incident_id = i.incident_id AND n.kind = 'incident'"
        f" AND n.state IN ('pending', 'sending') AND n.next_attempt_ns <= ?{_DUE_ORDER} LIMIT ?",
        (now_ns, limit),
    ).fetchall()


def _unverified_posts_due(conn: sqlite3.Connection, now_ns: int, limit: int) -> list[sqlite3.Row]:
    """The first ``limit`` posts due of every other incident (its record gone too), in order. The
    verified ones it passes over are fewer than a batch: asked only when they did not fill it."""
    return conn.execute(
        "SELECT n.* FROM notifications n LEFT JOIN incidents i ON i.incident_id = n.incident_id"  # noqa: S608
        f" WHERE {_WAITING_IN_QUEUE} AND NOT COALESCE({_VERIFIED}, 0){_DUE_ORDER} LIMIT ?",
        (_POSTS, now_ns, limit),
    ).fetchall()


def _first(limit: int, *queues: list[sqlite3.Row]) -> list[sqlite3.Row]:
    """The first ``limit`` rows of ``queues`` (each in due order) together, in due order."""
    return list(itertools.islice(heapq.merge(*queues, key=_due_order), limit))


def _due_order(row: sqlite3.Row) -> tuple[int, int]:
    return (row["next_attempt_ns"], row["id"])
