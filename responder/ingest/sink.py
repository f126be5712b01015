"""The one door every input uses to hand alerts to the pipeline."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from responder.alert import Alert


class InputName(StrEnum):
    HTTP = "http"
    GRPC = "grpc"
    JSONL = "jsonl"


class Overloaded(Exception):
    """The pipeline has no room now; the input pushes back (HTTP 503 + Retry-After, gRPC stops reading)."""

    def __init__(self, retry_after_seconds: float, reason: str) -> None:
        self.retry_after_seconds = retry_after_seconds
        self.reason = reason
        super().__init__(reason)


class OverShare(Overloaded):
    """The sender's deferred alerts take its whole share of the journal (journal.max_deferred_share):
    refused for that sender alone, and logged with it (responder/deferred_shares.py)."""


@dataclass(frozen=True, slots=True)
class Accepted:
    alert_id: str
    # False when this exact alert (same content id) was already accepted: a retry, not new work.
    new: bool
    # Journaled while the pipeline had no room: processed once it has (Pipeline.run_deferred).
    deferred: bool = False


class AlertSubmitter(Protocol):
    """What an input that waits for the journal needs (gRPC, JSON lines)."""

    async def submit(
        self, alert: Alert, source: InputName, *, wait_seconds: float | None = None, raw: bytes | None = None
    ) -> Accepted:
        """Return once the alert is durably journaled. Wait up to ``wait_seconds`` for room
        (None: as long as it takes), then journal it deferred, processed once there is room.
        Overloaded: the journal is at its size bound. ``raw``: the JSON body the alert was parsed
        from, journaled as received."""
        ...

    def reject(self, source: InputName, reason: str, detail: str) -> None:
        """Count and log a payload that is not a valid alert (``reason`` is a short, bounded code)."""
        ...


class AlertSink(AlertSubmitter, Protocol):
    """An AlertSubmitter that can also take an alert without a task (the HTTP input's fast path)."""

    def offer(
        self,
        alert: Alert,
        source: InputName,
        raw: bytes | None,
        on_done: Callable[[Accepted | BaseException], None],
    ) -> bool:
        """Take the alert only if there is room now: ``on_done`` is called on the loop once it is
        durably journaled (with the Accepted) or failed (with the error). False: nothing taken,
        no room now. Raises Overloaded when no amount of waiting would help."""
        ...
