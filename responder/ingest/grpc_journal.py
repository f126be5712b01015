"""The gRPC input's question to the journal at stop: which of these alerts does it hold?

``Pipeline.submit`` hands an alert's write to the journal before it waits for the commit, and a
cancelled wait does not take the write back. So when the input stops with submits under way, the
alerts whose writes were handed over are journaled (or soon will be) and must not be named as lost.
The input cannot see how far a submit got; it asks the journal instead, with this op: the writer
runs ops in the order they were handed to it, so by the time it answers, every write handed over
before it has been committed (or failed), and the answer is what the journal holds.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

# Keys per statement: two parameters each, within the 999 bound variables of old SQLite builds.
_KEYS_PER_STATEMENT = 400


@dataclass(frozen=True, slots=True)
class JournaledAmong:
    """Of these (event time, alert id) keys, the alert ids the journal holds. A module-level
    dataclass of plain values, so that it can be sent to a writer process."""

    keys: tuple[tuple[int, str], ...]

    def __call__(self, conn: sqlite3.Connection) -> list[str]:
        found: list[str] = []
        for start in range(0, len(self.keys), _KEYS_PER_STATEMENT):
            chunk = self.keys[start : start + _KEYS_PER_STATEMENT]
            marks = ",".join(["(?,?)"] * len(chunk))
            # Only placeholders are formatted in; the keys are bound parameters. The join seeks
            # the (event_ns, alert_id) index once per key.
            sql = (
                f"SELECT a.alert_id FROM (VALUES {marks}) AS v"  # noqa: S608
                " CROSS JOIN alerts AS a ON a.event_ns = v.column1 AND a.alert_id = v.column2"
            )
            found.extend(row[0] for row in conn.execute(sql, [value for key in chunk for value in key]))
        return found
