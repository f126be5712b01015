"""The one door every input uses to hand alerts to the pipeline."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from responder.alert import Alert


class InputName(StrEnum):
    HTTP = "http"
    GRPC = "grpc"
    JSONL = "jsonl"


class Proof(StrEnum):
    """What admitted a sender: its client certificate, its bearer token, or nothing
    (inputs.http.allow_unauthenticated)."""

    CERTIFICATE = "certificate"
    TOKEN = "token"  # noqa: S105 (a kind of proof, not a secret)
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Sender:
    """Who sent an alert, as its input authenticated it: journaled with the alert, shown in the
    audit trail. Never a secret: a token is named by its line in the token file."""

    address: str
    proof: Proof
    # The verified client certificate's common name and DNS names (presented, whatever the proof).
    names: tuple[str, ...] = ()
    # Which token of inputs.http.token matched (1: its file's first), when one did.
    token: int | None = None

    def record(self) -> str:
        """As the journal keeps it (the alerts table's sender column): JSON, read back by the audit."""
        return _record(self)


# The same few senders send every alert: their records are made once (an encoding per alert cost
# ~4 µs of the event loop's time).
@functools.lru_cache(maxsize=4096)
def _record(sender: Sender) -> str:
    fields: dict[str, object] = {"address": sender.address, "proof": sender.proof.value}
    if sender.names:
        fields["certificate"] = list(sender.names)
    if sender.token is not None:
        fields["token"] = sender.token
    return json.dumps(fields, separators=(",", ":"))


class Received(bytes):
    """An alert's body as its input received it, with who sent it (a Sender's record). Handed on as
    the alert's ``raw`` body, which reaches the journal's row untouched: the sender is stored in the
    same insert as its alert, at no cost to the storm path. Pickled (to a journal writer process),
    it is its bytes alone: the row has taken the sender by then."""

    sender: str

    def __new__(cls, body: bytes, sender: str) -> Received:
        received = super().__new__(cls, body)
        received.sender = sender
        return received

    def __reduce__(self) -> tuple[type[bytes], tuple[bytes]]:
        return bytes, (bytes(self),)


def sender_of(raw: bytes | None) -> str | None:
    """The sender's record that came with a body (Received), or None (gRPC, files, older paths)."""
    return raw.sender if isinstance(raw, Received) else None


class Overloaded(Exception):
    """The pipeline has no room now; the input pushes back (HTTP 503 + Retry-After, gRPC stops reading)."""

    def __init__(self, retry_after_seconds: float, reason: str) -> None:
        self.retry_after_seconds = retry_after_seconds
        self.reason = reason
        super().__init__(reason)


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
