"""Who sent an alert, as its input knows it: journaled with the alert, shown in the audit trail and
in Slack's warning about an alert that does not match its live pod (where to look first for a
forger). Never a secret: a token is named by its line in the token file."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

# Sent by `serving-guard replay` (unless --live): the alert is meant as a drill, so the HTTP input
# refuses it (403) from a credential other than the drill token rather than act on it as on
# Falco's (a replay pointed at production with a sender's token). It never makes an alert a drill.
DRILL_HEADER = "Serving-Guard-Drill"


class Proof(StrEnum):
    """What vouches for a sender. The HTTP input's: the client's certificate, its bearer token (a
    sender's, or the drill token's: inputs.http.drill_token), or nothing
    (inputs.http.allow_unauthenticated). The gRPC input's: Falco's server certificate (TCP,
    mutual TLS) or the unix socket's path (whoever could create it). The ingest command's: the file
    it read (or standard input)."""

    CERTIFICATE = "certificate"
    TOKEN = "token"  # noqa: S105 (a kind of proof, not a secret)
    DRILL_TOKEN = "drill-token"  # noqa: S105 (a kind of proof, not a secret)
    NONE = "none"
    SERVER_CERTIFICATE = "server-certificate"
    SOCKET = "socket"
    FILE = "file"


@dataclass(frozen=True, slots=True)
class Sender:
    # HTTP: the peer's address. gRPC: Falco's address as configured (inputs.grpc.address).
    # A file: its path, or "-" for standard input.
    address: str
    proof: Proof
    # HTTP: the verified client certificate's common name and DNS names (presented, whatever the
    # proof). gRPC over TLS: the name Falco's server certificate was verified against.
    names: tuple[str, ...] = ()
    # Which token of inputs.http.token (or drill_token) matched (1: its file's first), when one did.
    token: int | None = None
    # A drill: alerts a person replays on purpose (serving-guard replay), vouched for by the drill
    # token (or `serving-guard ingest --drill`). Kept apart from Falco's alerts (their own incidents),
    # decided in dry-run unless guardrails.enforce_drills, and said as a drill wherever shown. Text
    # inside an alert (a command line naming the simulator) never makes one: an intruder writes that.
    drill: bool = False

    def record(self) -> str:
        """As the journal keeps it (the alerts table's sender column): JSON, read back by the audit."""
        return _record(self)

    def text(self) -> str:
        """In a few words, as the audit trail and Slack say it (see sender_text)."""
        return sender_text(_fields(self))

    @classmethod
    def from_record(cls, record: str | None) -> Sender | None:
        """The Sender a journal row's sender column names; None for none, or one this version
        cannot read (the row stays readable without it)."""
        if not record:
            return None
        try:
            fields = json.loads(record)
            names = fields.get("certificate") or []
            token = fields.get("token")
            return cls(
                address=str(fields["address"]),
                proof=Proof(fields["proof"]),
                names=tuple(str(name) for name in names),
                token=token if isinstance(token, int) and not isinstance(token, bool) else None,
                drill=fields.get("drill") is True,
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            return None


# The same few senders send every alert: their records are made once (an encoding per alert cost
# ~4 µs of the event loop's time).
@functools.lru_cache(maxsize=4096)
def _record(sender: Sender) -> str:
    return json.dumps(_fields(sender), separators=(",", ":"))


def _fields(sender: Sender) -> dict[str, Any]:
    """The sender as its record holds it (and as the audit trail reads it back)."""
    fields: dict[str, Any] = {"address": sender.address, "proof": sender.proof.value}
    if sender.names:
        fields["certificate"] = list(sender.names)
    if sender.token is not None:
        fields["token"] = sender.token
    if sender.drill:
        fields["drill"] = True
    return fields


def is_drill(sender: Sender | None) -> bool:
    """Whether ``sender`` sent a drill (an alert journaled before senders were is none)."""
    return sender is not None and sender.drill


def sender_text(sender: Mapping[str, Any] | None) -> str:
    """Who sent an alert (a Sender's record, decoded), in a few words: "certificate falco from
    10.0.0.7", "token 2 from ...", "unauthenticated from ...", "Falco gRPC at unix:///...",
    "file /var/log/falco.jsonl", "drill token 1 from ...", "file drill.jsonl (drill)"; "-" when it
    names none (an alert journaled before senders were)."""
    if not sender:
        return "-"
    names = ",".join(str(name) for name in sender.get("certificate") or [])
    proof = sender.get("proof")
    address = sender.get("address") or "?"
    if proof == "server-certificate":
        return f"Falco gRPC at {address} (server certificate" + (f" {names})" if names else ")")
    if proof == "socket":
        return f"Falco gRPC at {address}"
    if proof == "file":
        read = "standard input" if address == "-" else f"file {address}"
        return read + (" (drill)" if sender.get("drill") is True else "")
    if proof in ("token", "drill-token"):
        kind = "drill token" if proof == "drill-token" else "token"
        said = f"{kind} {sender.get('token', '?')}" + (f" (certificate {names})" if names else "")
    elif proof == "certificate":
        said = f"certificate {names or '?'}"
    elif proof == "none":
        said = "unauthenticated"
    else:  # a proof of a later version's
        said = str(proof)
    return f"{said} from {address}"
