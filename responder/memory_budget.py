"""Whether the HTTP input's connections fit the container's memory limit, said at start-up.

Each open connection may hold, at once (httpserver bounds pipelining by count and by bytes):
- the request being handled, twice: its body of up to ``inputs.http.max_body_bytes`` (320 KiB by
  default: a worst-case alert of the shipped rules, responder/rulespack/alert_size.py), kept to be
  journaled, and the alert parsed from it, about as large;
- the requests read beyond it, up to httpserver.PIPELINE_BYTES (64 KiB), and one read from the socket
  not parsed yet (up to 256 KiB: asyncio's and uvloop's read size);
- answers buffered for a client that does not read them (httpserver.WRITE_BUFFER_HIGH, 64 KiB);
- with TLS, the buffers the loop's TLS layer allocates: measured ~60 KiB with uvloop and ~320 KiB with
  asyncio (bench/README and config.example.yaml);
- in the kernel, its socket buffers, fixed by the server (httpserver.KERNEL_BUFFER_BYTES, 192 KiB):
  not in the process's RSS, but charged to the container's memory cgroup all the same.
That is ~1.2 MiB per connection by default: at the cap of connections far past a typical limit, so a
flood of large bodies from senders that authenticated would end in an OOM kill, not in the connections
past the cap being cut. The responder cannot shrink those buffers; it says so, with the cap that
would fit, before it is too late.
"""

from __future__ import annotations

from pathlib import Path

from responder.ingest.httpserver import FEED_SLICE, KERNEL_BUFFER_BYTES, PIPELINE_BYTES, WRITE_BUFFER_HIGH

# Measured per TLS connection, by event loop (server.event_loop).
TLS_CONNECTION_BYTES = {"uvloop": 60 * 1024, "asyncio": 320 * 1024}
# The responder itself, its journal's writer process included, through a 200,000-alert storm
# (bench/README: peak RSS ~102 MB), with room to spare; the alerts in flight included, up to the
# default journal.max_pending_bytes, and the open incidents, up to the default
# dedupe.max_open_bytes (a larger one of either adds what it is larger by).
RESPONDER_BYTES = 192 * 1024 * 1024
MIB = 1024 * 1024
DEFAULT_PENDING_BYTES = 64 * MIB
DEFAULT_OPEN_INCIDENT_BYTES = 64 * MIB


# The most the event loop hands a connection at once (asyncio reads 256 KiB, uvloop 250 KB): read while
# the pipeline had room, parsed once it has room again.
READ_BYTES = 256 * 1024
# Beside the request being handled: the requests read beyond it (parsed a FEED_SLICE at a time, so up
# to one slice past PIPELINE_BYTES), one read not parsed yet, and answers its client has not read.
BUFFERED_BYTES = PIPELINE_BYTES + FEED_SLICE + READ_BYTES + WRITE_BUFFER_HIGH


def connection_bytes(event_loop: str, tls: bool, max_body_bytes: int) -> int:
    """The most one connection may hold: the request being handled (its body, and the alert parsed
    from it), what is buffered beside it, its TLS buffers, and its kernel socket buffers.

    With the default 320 KiB that is 1218 KiB for a plain connection (1026 KiB in the process).
    Measured: 40 plain connections, each pipelining ten alerts of 320 KiB (ASCII text) to a pipeline
    that is full (each answered 503 after admission_timeout_seconds), grew the server's RSS by 985 KiB
    per connection with asyncio and uvloop alike (633 KiB without pipelining; 3151 KiB before
    pipelining was bounded by bytes); the kernel's buffers are not in RSS.
    Not counted: a forged alert of ASCII text with one character past U+FFFF in each string parses
    to up to four times its bytes (Python's str; measured ~2 MiB per connection). Falco's own alerts
    stay within the count: the text an attacker chooses is capped by the drivers (4 KiB a field),
    and max_body_bytes is sized for each of its bytes taking 6 in the body (rulespack/alert_size.py),
    more than the 4 a character takes once parsed. A forger needs a sender's credential, and one
    address holds at most ``max_connections_per_peer`` connections.
    """
    tls_bytes = TLS_CONNECTION_BYTES[event_loop] if tls else 0
    return 2 * max_body_bytes + BUFFERED_BYTES + tls_bytes + KERNEL_BUFFER_BYTES


def connections_memory_warning(
    event_loop: str,
    tls: bool,
    max_connections: int,
    max_body_bytes: int,
    limit_bytes: int,
    max_pending_bytes: int = DEFAULT_PENDING_BYTES,
    max_open_incident_bytes: int = DEFAULT_OPEN_INCIDENT_BYTES,
) -> str | None:
    """Why ``max_connections`` connections may not fit ``limit_bytes``, or None if they fit."""
    per_connection = connection_bytes(event_loop, tls, max_body_bytes)
    responder = (
        RESPONDER_BYTES
        + max(0, max_pending_bytes - DEFAULT_PENDING_BYTES)
        + max(0, max_open_incident_bytes - DEFAULT_OPEN_INCIDENT_BYTES)
    )
    needed = responder + max_connections * per_connection
    if needed <= limit_bytes:
        return None
    fitting = max(0, (limit_bytes - responder) // per_connection)
    advice = (
        f"lower inputs.http.max_connections to {fitting} or less, or raise the memory limit"
        " (a lower inputs.http.max_body_bytes may refuse real alerts)"
    )
    held = (
        f"an alert of up to {max_body_bytes // 1024} KiB as its body and parsed,"
        f" ~{BUFFERED_BYTES // 1024} KiB of requests and answers buffered beside it"
    )
    if tls:
        tls_kib = TLS_CONNECTION_BYTES[event_loop] // 1024
        held += f", ~{tls_kib} KiB of TLS buffers with server.event_loop {event_loop}"
    held += f" and {KERNEL_BUFFER_BYTES // 1024} KiB of kernel socket buffers"
    if tls and event_loop == "asyncio":
        advice += " (or set server.event_loop: uvloop, ~60 KiB per TLS connection)"
    kind = "TLS connections" if tls else "connections"
    return (
        f"inputs.http.max_connections: {max_connections} {kind} may take"
        f" ~{max_connections * per_connection // MIB} MiB (~{per_connection // 1024} KiB each: {held})"
        f" on top of ~{responder // MIB} MiB for the responder, its alerts in flight"
        f" (journal.max_pending_bytes) and its open incidents (dedupe.max_open_bytes), more than this"
        f" container's memory limit of {limit_bytes // MIB} MiB: {advice}"
    )


def container_memory_limit(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """This process's memory limit from its cgroup (v2, then v1), or None when there is none."""
    for path in (cgroup_root / "memory.max", cgroup_root / "memory" / "memory.limit_in_bytes"):
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if not text.isdigit():  # "max": no limit
            return None
        limit = int(text)
        # cgroup v1 says "no limit" with a huge number (the page-rounded maximum of an int64).
        return limit if limit < 1 << 60 else None
    return None
