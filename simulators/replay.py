"""Delivering a scenario's alerts the ways Falco does: POST to the responder's HTTP input (as
http_output), through a Falco-compatible gRPC outputs server the responder collects from, or as
JSON lines in a file (file_output / stdout) for `serving-guard ingest`."""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from responder.cli import OutputLost
from responder.client import ResponderClient
from responder.errors import UserError
from simulators.alerts import ScenarioAlert
from simulators.falco_grpc_server import FalcoGrpcServer


@dataclass(frozen=True)
class Delivery:
    alert: ScenarioAlert
    ok: bool
    detail: str
    alert_id: str | None = None
    # The responder said it took the alert as a drill (sent with its drill token).
    drill: bool = False


async def post_alerts(
    client: ResponderClient, alerts: Sequence[ScenarioAlert], *, drill: bool = False
) -> list[Delivery]:
    """One POST per alert, in order, as Falco's http_output sends them; ``drill``: as drills (see
    ResponderClient.post_alert)."""
    deliveries = []
    for item in alerts:
        # A responder the client cannot reach is a UserError naming it and why.
        result = await client.post_alert(item.body(), drill=drill)
        ok = 200 <= result.status < 300
        alert_id = result.body.get("alert_id") if ok else None
        reason = result.body.get("reason") or result.body.get("error") or ""
        detail = f"HTTP {result.status}" + (f": {reason}" if reason and not ok else "")
        taken_as_drill = ok and result.body.get("drill") is True
        deliveries.append(Delivery(item, ok, detail, str(alert_id) if alert_id else None, taken_as_drill))
    return deliveries


def publish_alerts(
    server: FalcoGrpcServer, alerts: Sequence[ScenarioAlert], timeout: float
) -> list[Delivery]:
    """Queue the alerts on the Falco gRPC server and wait until a consumer has taken them all."""
    server.publish_many([item.alert for item in alerts])
    # Waits beyond threading's limit (~292 years) are as good as forever, and refused by the lock.
    if server.wait_drained(min(timeout, threading.TIMEOUT_MAX)):
        return [Delivery(item, True, f"collected from {server.address}") for item in alerts]
    left = server.pending()
    return [
        Delivery(item, False, f"{left} alert(s) not collected from {server.address} within {timeout:g}s")
        for item in alerts
    ]


def write_alerts(path: str, alerts: Sequence[ScenarioAlert]) -> list[Delivery]:
    """Falco JSON lines (one alert per line) to a file, or to stdout for '-'."""
    lines = b"".join(item.body() + b"\n" for item in alerts)
    if path == "-":
        _write_stdout(lines)
    else:
        try:
            Path(path).write_bytes(lines)
        except OSError as exc:
            raise UserError(f"--file {path}: {exc.strerror or exc}") from None
    return [Delivery(item, True, f"written to {path}") for item in alerts]


def _write_stdout(data: bytes) -> None:
    """``data`` as is on stdout; OutputLost when it cannot be written (main says so in one line). A
    reader that went away stays a BrokenPipeError: exit 141, as for any command."""
    stdout = sys.stdout
    if stdout is None:  # closed when the command started (`>&-`), outside main
        raise OutputLost("stdout is closed")
    try:
        stdout.buffer.write(data)
        stdout.flush()
    except (BrokenPipeError, OutputLost):  # OutputLost: main's stand-in for a closed stdout
        raise
    except OSError as exc:
        raise OutputLost(f"stdout: {exc.strerror or exc}") from exc
