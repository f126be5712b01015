"""Whether the HTTP input's connections fit the container's memory limit, said at start-up.

Each open connection may hold a request body as it arrives, up to ``inputs.http.max_body_bytes``
(320 KiB by default: a worst-case alert of the shipped rules, responder/rulespack/alert_size.py),
and each TLS connection the buffers the loop's TLS layer allocates: measured ~60 KiB with uvloop and
~320 KiB with asyncio (bench/README and config.example.yaml). At the cap of connections that is up
to ~1.5 GB with uvloop, far past a typical limit: a flood of large bodies from senders that
authenticated would end in an OOM kill, not in the connections past the cap being cut. The
responder cannot shrink those buffers; it says so, with the cap that would fit, before it is too late.
"""

from __future__ import annotations

from pathlib import Path

# Measured per TLS connection, by event loop (server.event_loop).
TLS_CONNECTION_BYTES = {"uvloop": 60 * 1024, "asyncio": 320 * 1024}
# The responder itself, its journal's writer process included, through a 200,000-alert storm
# (bench/README: peak RSS ~102 MB), with room to spare.
RESPONDER_BYTES = 128 * 1024 * 1024
MIB = 1024 * 1024


def connection_bytes(event_loop: str, tls: bool, max_body_bytes: int) -> int:
    """The most one connection may hold: a body as it arrives, and its TLS buffers."""
    return max_body_bytes + (TLS_CONNECTION_BYTES[event_loop] if tls else 0)


def connections_memory_warning(
    event_loop: str, tls: bool, max_connections: int, max_body_bytes: int, limit_bytes: int
) -> str | None:
    """Why ``max_connections`` connections may not fit ``limit_bytes``, or None if they fit."""
    per_connection = connection_bytes(event_loop, tls, max_body_bytes)
    needed = RESPONDER_BYTES + max_connections * per_connection
    if needed <= limit_bytes:
        return None
    fitting = max(0, (limit_bytes - RESPONDER_BYTES) // per_connection)
    advice = (
        f"lower inputs.http.max_connections to {fitting} or less, or raise the memory limit"
        " (a lower inputs.http.max_body_bytes may refuse real alerts)"
    )
    held = f"a body of up to {max_body_bytes // 1024} KiB"
    if tls:
        tls_kib = TLS_CONNECTION_BYTES[event_loop] // 1024
        held += f" and ~{tls_kib} KiB of TLS buffers with server.event_loop {event_loop}"
    if tls and event_loop == "asyncio":
        advice += " (or set server.event_loop: uvloop, ~60 KiB per TLS connection)"
    kind = "TLS connections" if tls else "connections"
    return (
        f"inputs.http.max_connections: {max_connections} {kind} may take"
        f" ~{max_connections * per_connection // MIB} MiB (~{per_connection // 1024} KiB each: {held})"
        f" on top of ~{RESPONDER_BYTES // MIB} MiB for the responder, more than this container's"
        f" memory limit of {limit_bytes // MIB} MiB: {advice}"
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
