"""A batch of due notifications reads about a batch of rows, however long the backlog (Slack down for
a while during a storm of incidents): the notifier asks for one on the event loop for every batch,
and sorting the backlog each time made draining it quadratic. SQLite's work is counted in virtual
machine steps (its progress handler): the same on every machine, unlike a time. The order stays as
test_slack_order_whitelist.py pins it: a verified incident's post due last still goes first."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from responder.journal.schema import connect
from responder.journal.store import Journal, NotificationRow
from tests.responder.test_journal import open_journal

BATCH = 50
# SQLite virtual machine steps per progress call.
STEPS = 1000


def add_backlog(journal: Journal, first: int, last: int, now_ns: int, verified: set[int]) -> None:
    """Incidents ``first`` to ``last - 1``, each with its post waiting (``i`` due ``now - i`` ns:
    the later ones are due first), verified those in ``verified``; one transaction, as a storm's."""
    with closing(connect(journal.path)) as conn:
        conn.execute("BEGIN")
        for i in range(first, last):
            incident_id = f"inc-{i:08d}"
            status = "verified" if i in verified else "unverified"
            conn.execute(
                "INSERT INTO incidents (incident_id, key_digest, rule, namespace, pod, container_id,"
                " hostname, first_alert_id, opened_ns, last_seen_ns, count, decided_ns, verification,"
                " decision)"
                " VALUES (?, 'k', 'r', 'ml', ?, 'c', 'h', ?, ?, ?, 1, ?, ?, ?)",
                (
                    incident_id,
                    f"p{i}",
                    f"a{i}",
                    now_ns,
                    now_ns,
                    now_ns,
                    json.dumps({"status": status, "reason": ""}),
                    json.dumps({"policy": "p", "unverified": status != "verified"}),
                ),
            )
            conn.execute(
                "INSERT INTO notifications (incident_id, kind, channel, state, next_attempt_ns, created_ns)"
                " VALUES (?, 'incident', NULL, 'pending', ?, ?)",
                (incident_id, now_ns - 10 * i, now_ns),
            )
        conn.execute("COMMIT")


@contextmanager
def counted(journal: Journal) -> Iterator[list[int]]:
    """SQLite's work on the journal's reader connection (of this thread), in thousands of steps."""
    steps = [0]

    def step() -> int:
        steps[0] += 1
        return 0

    with journal.reader() as conn:
        conn.set_progress_handler(step, STEPS)
        try:
            yield steps
        finally:
            conn.set_progress_handler(None, STEPS)


def batch(journal: Journal, now_ns: int) -> tuple[list[NotificationRow], int]:
    """One batch of due notifications, and SQLite's work for it."""
    with counted(journal) as steps:
        rows = journal.due_notifications(now_ns, limit=BATCH)
    return rows, steps[0]


@pytest.mark.parametrize(
    "verified_every",
    [0, 100, 1],
    ids=["forgeries", "one-in-a-hundred-verified", "all-verified"],
)
def test_a_batch_reads_about_a_batch_of_rows_however_long_the_backlog(
    tmp_path: Path, verified_every: int
) -> None:
    now = time.time_ns()
    journal = open_journal(tmp_path)
    try:
        small, large = 1_000, 20_000
        verified = {i for i in range(large) if verified_every and i % verified_every == 0}
        add_backlog(journal, 0, small, now, verified)
        rows, with_small = batch(journal, now)
        assert len(rows) == BATCH
        add_backlog(journal, small, large, now, verified)
        rows, with_large = batch(journal, now)
        assert len(rows) == BATCH
        # Sorting the backlog read every row of it: 20 times the work for 20 times the rows.
        assert with_large <= 2 * with_small + 5, (with_small, with_large)
        # The verified ones first, then the longest due.
        ranked = sorted(range(large), key=lambda i: (i not in verified, -i))
        assert [row.incident_id for row in rows] == [f"inc-{i:08d}" for i in ranked[:BATCH]]
    finally:
        journal.close()


def test_a_verified_post_behind_a_backlog_of_forgeries_still_goes_first(tmp_path: Path) -> None:
    now = time.time_ns()
    journal = open_journal(tmp_path)
    try:
        # Due last of 5,000 (the verified incidents are found beyond the posts looked through).
        add_backlog(journal, 0, 5_000, now, verified={0})
        rows, _ = batch(journal, now)
        assert [row.incident_id for row in rows[:2]] == ["inc-00000000", "inc-00004999"]
        assert len(rows) == BATCH
    finally:
        journal.close()
