"""The load generator: N keep-alive HTTP/1.1 connections posting Falco JSON as fast as the server
answers, one request in flight per connection (as Falco's http_output and Falcosidekick send).

It runs in its own process (``python -m bench.loadgen SPEC.json``) so that its GIL never caps the
server under test. It speaks raw HTTP/1.1 over asyncio transports: an aiohttp client costs several
times more CPU per request than the servers it measures, which would make it the bottleneck.

Bodies are Falco's exact bytes (``simulators.falco_json``), made unique per request by stamping a
counter into the event time (so every alert has its own content id, as real alerts do): one
template per (pod, rule), the 9 fractional digits of the time replaced per request.

The spec (JSON) says where to send, how many connections, when to stop (``total`` requests,
``seconds``, or both), and which pods/rules to cycle through. The result (JSON on stdout): counts
by status, timings, the rate over the measured window (after ``warmup_seconds``), and, when
``ids_file`` is set, the alert ids the server accepted (for the lost-alert check).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bench.stats import distribution
from simulators.falco_json import falco_alert, falco_bytes
from simulators.seed import SeededPod

SENTINEL = b"987654321"  # the fractional nanoseconds of the template's event time
RETRY_PAUSE_SECONDS = 0.05


@dataclass
class Spec:
    host: str
    port: int
    path: str
    connections: int
    pods: list[SeededPod]
    rules: list[str]
    total: int | None = None
    seconds: float | None = None
    warmup_seconds: float = 0.0
    retry_overloaded: bool = True
    ids_file: str | None = None
    token: str | None = None
    base_seconds: int = 0
    # Alerts per second over all connections; None: as fast as the server answers.
    rate: float | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Spec:
        pods = [SeededPod(**{**pod, "labels": dict(pod["labels"])}) for pod in data.pop("pods")]
        return cls(pods=pods, **data)


class Bodies:
    """Unique Falco JSON bodies: request ``i`` goes to pod ``i % len(pods)`` with rule ``i % len(rules)``."""

    def __init__(self, pods: list[SeededPod], rules: list[str], base_seconds: int) -> None:
        base_ns = base_seconds * 1_000_000_000 + int(SENTINEL)
        self._templates: list[list[bytes]] = []
        for pod in pods:
            for rule in rules:
                body = falco_bytes(
                    falco_alert(
                        pod,
                        rule,
                        "Critical",
                        "Shell spawned in a serving container",
                        {"proc.name": "sh", "proc.cmdline": "sh -c id", "user.name": "root"},
                        time_ns=base_ns,
                    )
                )
                parts = body.split(SENTINEL)
                if len(parts) != 4:  # time, the stamp in output, evt.time
                    raise ValueError(f"template for {pod.name} has {len(parts) - 1} time stamps, expected 3")
                self._templates.append(parts)
        self._pods = len(pods)
        self._rules = len(rules)

    def body(self, index: int) -> bytes:
        # Pod varies fastest, then rule, so a run of n requests spreads over every pod.
        pod, rule = index % self._pods, (index // self._pods) % self._rules
        stamp = b"%09d" % (index % 1_000_000_000)
        return stamp.join(self._templates[pod * self._rules + rule])


@dataclass
class Tally:
    statuses: Counter[int] = field(default_factory=Counter)
    accepted_ids: list[str] = field(default_factory=list)
    sent: int = 0
    done_in_window: int = 0
    errors: int = 0
    retries: int = 0
    first_send: float = 0.0
    last_answer: float = 0.0
    # Seconds from sending a request to its answer, for the 2xx answers in the measured window.
    round_trips: list[float] = field(default_factory=list)


class Connection(asyncio.Protocol):
    """One keep-alive connection; ``request()`` sends and waits for the one answer."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError("connection closed"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._parse()

    def _parse(self) -> None:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0 or self._waiter is None:
            return
        head = bytes(self._buffer[:end])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
                break
        if len(self._buffer) < end + 4 + length:
            return
        status = int(head[9:12])
        body = bytes(self._buffer[end + 4 : end + 4 + length])
        del self._buffer[: end + 4 + length]
        waiter, self._waiter = self._waiter, None
        if not waiter.done():
            waiter.set_result((status, body))

    def request(self, data: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self._transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(data)
        return self._waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _accepted_id(body: bytes) -> str | None:
    marker = body.find(b'"alert_id": "')
    skip = 13
    if marker < 0:
        marker = body.find(b'"alert_id":"')
        skip = 12
    if marker < 0:
        return None
    start = marker + skip
    return body[start : body.index(b'"', start)].decode()


def request_head(path: str, host: str, port: int, token: str | None = None) -> bytes:
    """Every header of a POST of one alert but its Content-Length."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Content-Type: application/json\r\nUser-Agent: serving-guard-bench\r\n"
        + (f"Authorization: Bearer {token}\r\n" if token else "")
    ).encode()


def request(head: bytes, body: bytes) -> bytes:
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


async def run(spec: Spec) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    bodies = Bodies(spec.pods, spec.rules, spec.base_seconds or int(time.time()))
    head = request_head(spec.path, spec.host, spec.port, spec.token)
    tally = Tally()
    counter = iter(range(spec.total if spec.total is not None else 1 << 62))
    start = time.monotonic()
    stop_at = start + spec.seconds if spec.seconds is not None else float("inf")
    window_start = start + spec.warmup_seconds
    keep_ids = spec.ids_file is not None

    async def worker(slot: int) -> None:
        _, conn = await loop.create_connection(Connection, spec.host, spec.port)
        interval = spec.connections / spec.rate if spec.rate else 0.0
        due = start + interval * slot / spec.connections
        try:
            for index in counter:
                if interval:
                    due += interval
                    delay = due - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                body = bodies.body(index)
                data = request(head, body)
                while True:
                    if time.monotonic() >= stop_at:
                        return
                    tally.sent += 1
                    sent_at = time.monotonic()
                    try:
                        status, answer = await conn.request(data)
                    except ConnectionError:
                        tally.errors += 1
                        _, conn = await loop.create_connection(Connection, spec.host, spec.port)
                        continue
                    now = time.monotonic()
                    tally.statuses[status] += 1
                    tally.last_answer = now
                    if status == 503 and spec.retry_overloaded:
                        tally.retries += 1
                        await asyncio.sleep(RETRY_PAUSE_SECONDS)
                        continue
                    if now >= window_start and 200 <= status < 300:
                        tally.done_in_window += 1
                        tally.round_trips.append(now - sent_at)
                    if keep_ids and status == 202:
                        accepted = _accepted_id(answer)
                        if accepted:
                            tally.accepted_ids.append(accepted)
                    break
        finally:
            conn.close()

    await asyncio.gather(*(worker(slot) for slot in range(spec.connections)))
    end = time.monotonic()
    window = max(min(end, stop_at) - window_start, 1e-9)
    if spec.ids_file is not None:
        with open(spec.ids_file, "w", encoding="utf-8") as out:
            out.write("\n".join(tally.accepted_ids))
    ok = sum(count for status, count in tally.statuses.items() if 200 <= status < 300)
    return {
        "connections": spec.connections,
        "sent": tally.sent,
        "ok": ok,
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "retries_after_503": tally.retries,
        "connection_errors": tally.errors,
        "elapsed_seconds": round(end - start, 3),
        "window_seconds": round(window, 3),
        "rate_per_second": round(tally.done_in_window / window, 1),
        # What each sender waits per alert: with one request in flight, rate = senders / round trip.
        "round_trip_ms": distribution([seconds * 1000 for seconds in tally.round_trips]),
        "accepted_ids": len(tally.accepted_ids) if keep_ids else None,
    }


def main(argv: list[str]) -> int:
    with open(argv[0], encoding="utf-8") as handle:
        spec = Spec.from_json(json.load(handle))
    result = asyncio.run(run(spec))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
