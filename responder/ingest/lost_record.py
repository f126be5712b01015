"""The record of alerts an input lost as the responder stopped, beside the journal, for the next
start to count (serving_guard_alerts_lost_total) and say."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from responder.ingest.sink import InputName

# Beside the journal (as its lock is): alerts lost as the responder stopped, for its next start.
LOST_SUFFIX = ".lost"
# Alert ids the record keeps (the stop's log names them all); the counts are always whole.
LOST_IDS_KEPT = 100
# A record is a few KiB at most: anything larger is not one.
_LOST_RECORD_MAX_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class LostAtStop:
    """Alerts inputs lost as the responder stopped, over the stops since a start last read them."""

    counts: dict[str, int]  # by input name (InputName values only: they are metric labels)
    alert_ids: tuple[str, ...]  # the first LOST_IDS_KEPT
    stops: int
    last_stop: str  # UTC, ISO 8601


class LostRecord:
    """``<journal>.lost``. An input learns that alerts are lost only as it stops (the gRPC input:
    read from Falco, never journaled), after the metrics endpoint has closed: no scrape would ever
    see that count. So the stop writes it here and the next start counts it
    (serving_guard_alerts_lost_total) and says it. Written and read only by the holder of the
    journal's lock; small (counts and the first ids), replaced whole so a crash mid-write leaves
    the previous record."""

    def __init__(self, journal_path: str) -> None:
        self.path = os.path.realpath(journal_path) + LOST_SUFFIX

    def add(self, input_name: InputName, alert_ids: Sequence[str], now: float | None = None) -> None:
        """Add one stop's lost alerts to the record (to those of stops no start has read yet: a
        crash loop adds up). Raises OSError when it cannot be written."""
        try:
            before = self.read()
        except ValueError:
            before = None  # not a record: replaced by this one
        counts = dict(before.counts) if before is not None else {}
        counts[input_name.value] = counts.get(input_name.value, 0) + len(alert_ids)
        kept = (*(before.alert_ids if before is not None else ()), *alert_ids)[:LOST_IDS_KEPT]
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if now is None else now))
        record = {
            "counts": counts,
            "alert_ids": list(kept),
            "stops": (before.stops if before is not None else 0) + 1,
            "last_stop": stamp,
        }
        temporary = self.path + ".tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps(record).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self.path)

    def read(self) -> LostAtStop | None:
        """The record (None: no stop lost alerts since a start last cleared it). Raises OSError
        when it cannot be read, ValueError when what is there is not a record."""
        try:
            with open(self.path, "rb") as file:
                data = file.read(_LOST_RECORD_MAX_BYTES + 1)
        except FileNotFoundError:
            return None
        if len(data) > _LOST_RECORD_MAX_BYTES:
            raise ValueError(f"larger than {_LOST_RECORD_MAX_BYTES} bytes")
        return _lost_at_stop(json.loads(data))

    def clear(self) -> None:
        """Forget the record (read and counted by this start). Raises OSError."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def _lost_at_stop(record: Any) -> LostAtStop:
    """A parsed record, checked: its input names become metric labels, so only known ones pass."""
    inputs = {name.value for name in InputName}
    counts = record.get("counts") if isinstance(record, dict) else None
    if not isinstance(counts, dict) or not all(
        name in inputs and isinstance(count, int) and count > 0 for name, count in counts.items()
    ):
        raise ValueError(f"not a record of lost alerts: {str(record)[:200]}")
    ids = record.get("alert_ids", [])
    stops, last_stop = record.get("stops", 1), record.get("last_stop", "")
    if not isinstance(ids, list) or not isinstance(stops, int) or not isinstance(last_stop, str):
        raise ValueError(f"not a record of lost alerts: {str(record)[:200]}")
    return LostAtStop(dict(counts), tuple(str(i) for i in ids[:LOST_IDS_KEPT]), stops, last_stop)
