"""Pipelining bounded by bytes: a connection pipelining large requests holds the one being handled and
at most PIPELINE_BYTES (plus a slice) and one read beside it, what memory_budget counts, not
MAX_PIPELINED bodies; small requests still pipeline, and every request is answered in order.

Run on asyncio and uvloop (tests/conftest.py); the waits are for the server to stop reading, with
no assertion on how long anything takes."""

from __future__ import annotations

import array
import asyncio
import fcntl
import socket
import termios

from responder import memory_budget
from responder.ingest.httpserver import (
    FEED_SLICE,
    KERNEL_BUFFER_BYTES,
    MAX_PIPELINED,
    PIPELINE_BYTES,
    RECEIVE_BUFFER,
    SEND_BUFFER,
    WRITE_BUFFER_HIGH,
    Connection,
    Request,
    Response,
    Route,
)
from tests.ingest.test_httpserver import WAIT, Serve, assert_closed, post, read_reply

LIMIT = 320 * 1024  # inputs.http.max_body_bytes by default
BODY = 300 * 1024
COUNT = 10  # more than one large body pipelined: all ten would be ~3 MiB in one connection


class FirstHeld:
    """A route whose first request is held until released (an alert waiting for room in the
    pipeline); every request's body length is answered."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.handled: list[int] = []

    async def handle(self, request: Request) -> Response:
        self.handled.append(len(request.body))
        if len(self.handled) == 1:
            await self.release.wait()
        return Response(200, b"%d" % len(request.body), "text/plain")

    def route(self) -> Route:
        return Route("POST", "/alerts", self.handle, max_body_bytes=LIMIT)


async def stopped_reading(connection: Connection) -> list[int]:
    """Waits until the connection has paused reading with the first request being handled, and
    for the loop to settle; returns what it held beyond that request at each look."""
    seen: list[int] = []
    settled = 0
    for _ in range(int(WAIT / 0.01)):
        await asyncio.sleep(0.01)
        seen.append(connection.buffered_bytes)
        settled = settled + 1 if connection._paused else 0
        if settled >= 10:
            return seen
    raise AssertionError(f"the connection never stopped reading; it held {seen[-1]} bytes")


def bodies() -> list[bytes]:
    return [bytes([ord("a") + n]) * (BODY - n) for n in range(COUNT)]


async def test_a_connection_pipelining_large_bodies_holds_one_beside_the_one_handled(serve: Serve) -> None:
    route = FirstHeld()
    running = await serve([route.route()])
    reader, writer = await running.connect()
    writer.write(b"".join(post(body, target="/alerts") for body in bodies()))
    (connection,) = running.server.connections

    held = await stopped_reading(connection)

    # The first request is being handled; no second large body was taken in beside it.
    assert route.handled == [BODY]
    assert not connection._queue
    bound = PIPELINE_BYTES + FEED_SLICE + memory_budget.READ_BYTES
    assert max(held) <= bound, f"held {max(held)} bytes beyond the request being handled (bound {bound})"
    # What memory_budget counts per connection covers it: the request handled twice, then this (and
    # the kernel's buffers: the next test).
    assert bound + WRITE_BUFFER_HIGH == memory_budget.BUFFERED_BYTES
    assert memory_budget.connection_bytes("asyncio", False, LIMIT) == (
        2 * LIMIT + bound + WRITE_BUFFER_HIGH + KERNEL_BUFFER_BYTES
    )

    route.release.set()
    answers = [(await read_reply(reader)).body for _ in range(COUNT)]
    assert answers == [b"%d" % (BODY - n) for n in range(COUNT)]
    assert route.handled == [BODY - n for n in range(COUNT)]
    assert connection.buffered_bytes == 0
    # Still a keep-alive connection.
    writer.write(post(b"x" * 10, target="/alerts"))
    assert (await read_reply(reader)).body == b"10"


async def test_large_pipelined_bodies_then_a_half_close_are_all_answered_then_closed(serve: Serve) -> None:
    route = FirstHeld()
    running = await serve([route.route()])
    reader, writer = await running.connect()
    writer.write(b"".join(post(body, target="/alerts") for body in bodies()[:3]))
    writer.write_eof()
    (connection,) = running.server.connections
    await stopped_reading(connection)
    route.release.set()
    answers = [(await read_reply(reader)).body for _ in range(3)]
    assert answers == [b"%d" % (BODY - n) for n in range(3)]
    await assert_closed(reader)


async def test_a_large_body_arriving_while_none_is_handled_is_read_whole(serve: Serve) -> None:
    route = FirstHeld()
    route.release.set()
    running = await serve([route.route()])
    reader, writer = await running.connect()
    for size in (LIMIT, 1, LIMIT - 1):  # PIPELINE_BYTES bounds only what comes beside a handled request
        writer.write(post(b"z" * size, target="/alerts"))
        assert (await read_reply(reader)).body == b"%d" % size


async def test_small_requests_still_pipeline_and_are_answered_in_order(serve: Serve) -> None:
    depths: list[int] = []

    async def handle(request: Request) -> Response:
        (connection,) = running.server.connections
        depths.append(len(connection._queue))
        await asyncio.sleep(0)
        return Response(200, request.body, "text/plain")

    running = await serve([Route("POST", "/alerts", handle, max_body_bytes=LIMIT)])
    reader, writer = await running.connect()
    count = 200
    alert = b'{"rule": "Shell in serving pod", "output": "%s"}'
    writer.write(
        b"".join(post(alert % (b"%d" % n).rjust(1500, b"x"), target="/alerts") for n in range(count))
    )
    answers = [(await read_reply(reader)).body for _ in range(count)]
    assert answers == [alert % (b"%d" % n).rjust(1500, b"x") for n in range(count)]
    # Alerts of ~1.6 KiB are read while earlier ones are handled, up to the count bound (checked before
    # each FEED_SLICE, which may end two of them).
    assert max(depths) > 1
    assert max(depths) <= MAX_PIPELINED + 1


async def test_no_read_hands_a_connection_more_than_memory_budget_counts() -> None:
    """memory_budget.READ_BYTES: the most the loop (asyncio or uvloop) hands data_received at once."""
    sizes: list[int] = []
    done = asyncio.Event()
    total = 4 * 1024 * 1024

    class Counting(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            sizes.append(len(data))
            if sum(sizes) >= total:
                done.set()

    loop = asyncio.get_running_loop()
    server = await loop.create_server(Counting, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"x" * total)
        await asyncio.wait_for(done.wait(), WAIT)
        writer.close()
    finally:
        server.close()
    assert max(sizes) <= memory_budget.READ_BYTES


async def test_the_kernel_holds_no_more_of_a_stopped_connection_than_memory_budget_counts(
    serve: Serve,
) -> None:
    """Once the server stops reading a connection, what its client sends on queues in the kernel,
    charged to the container's memory: bounded by the socket buffers the server fixes
    (httpserver.RECEIVE_BUFFER, doubled by the kernel). Autotuned, one loopback connection held 17 MB."""
    route = FirstHeld()
    running = await serve([route.route()])
    reader, writer = await running.connect()
    count = 40  # ~12 MiB pipelined: far more than the kernel may hold for the connection
    writer.write(b"".join(post(b"q" * BODY, target="/alerts") for _ in range(count)))
    (connection,) = running.server.connections
    await stopped_reading(connection)
    assert connection._transport is not None
    server_side = connection._transport.get_extra_info("socket")
    assert server_side.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 2 * RECEIVE_BUFFER
    assert server_side.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == 2 * SEND_BUFFER
    queued = array.array("i", [0])
    for _ in range(20):  # the client's kernel sends on until the window closes
        await asyncio.sleep(0.01)
        fcntl.ioctl(server_side.fileno(), termios.FIONREAD, queued)
    assert 0 < queued[0] <= KERNEL_BUFFER_BYTES, f"{queued[0]} bytes queued in the kernel"
    route.release.set()
    answers = [(await read_reply(reader)).body for _ in range(count)]
    assert answers == [b"%d" % BODY] * count
