"""A request refused from its head is answered at once, and a body in tiny chunks costs about its size.

- Refused from its head (no credentials, no such path, a declared length over the bound...), with or
  without ``Expect: 100-continue``: the answer goes out as soon as the head is in (after the answers
  to the requests before it), with ``Connection: close``; nothing more of the connection is parsed, and
  what its client still sends is dropped unparsed. Before, the answer waited for the body's last byte
  or the request deadline, the connection's slot held and every chunk run through llhttp meanwhile.
- A body is held in pieces of at least ``BODY_PIECE_BYTES`` (bar a few), not one object per llhttp
  call: 2-byte chunks held ~22 times the body's size, beyond what max_body_bytes and memory_budget
  count.

Real sockets on 127.0.0.1, on both loops; the input's own alert route where the finding is about it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from responder.alert import Alert
from responder.config import HttpInput, SecretRef, ServerTLS
from responder.ingest import httpserver
from responder.ingest.http import ALERTS_PATH, Authenticator, TokenSource, alerts_route, server_ssl_context
from responder.ingest.httpserver import Connection, Limits, Request, Response, Route
from responder.ingest.sink import Accepted, InputName
from simulators.pki import make_test_pki
from tests.ingest.test_grpc import eventually
from tests.ingest.test_httpserver import (
    WAIT,
    Recorder,
    Serve,
    chunked,
    post,
    read_reply,
    read_until_cut,
    until_open_connections,
)
from tests.ingest.test_httpserver_refusals import Refusals
from tests.responder.test_http_input import client_context

TOKEN = "s3cret-token"
GOOD = "Authorization: Bearer good"  # what Recorder.refuse_without_token lets through
# Declared, never sent: the old server waited for it until the request deadline (30 s, beyond WAIT).
LARGE = 1_000_000


@pytest.fixture
def refusals() -> Iterator[Refusals]:
    kept = Refusals()
    with kept.records:
        yield kept


class Journal:
    """An AlertSink that takes every alert at once and keeps the body each came in."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []
        self.bodies: list[bytes | None] = []

    def offer(
        self,
        alert: Alert,
        source: InputName,
        raw: bytes | None,
        on_done: Callable[[Accepted | BaseException], None],
    ) -> bool:
        self.alerts.append(alert)
        self.bodies.append(raw)
        asyncio.get_running_loop().call_soon(on_done, Accepted(alert.alert_id, True))
        return True

    async def submit(
        self, alert: Alert, source: InputName, *, wait_seconds: float | None = None, raw: bytes | None = None
    ) -> Accepted:
        self.alerts.append(alert)
        self.bodies.append(raw)
        return Accepted(alert.alert_id, True)

    def reject(self, source: InputName, reason: str, detail: str) -> None:
        raise AssertionError(f"alert rejected: {reason} {detail}")


def alerts(tmp_path: Path, journal: Journal, refusals: Refusals, *, token: bool = True) -> Route:
    """The input's POST /v1/alerts: with a bearer token, or open to all."""
    if not token:
        config = HttpInput(enabled=True, allow_unauthenticated=True)
        return alerts_route(config, journal, Authenticator(config, None), refusals.log)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    config = HttpInput(enabled=True, token=SecretRef(file=str(token_file)))
    assert config.token is not None
    return alerts_route(config, journal, Authenticator(config, TokenSource(config.token)), refusals.log)


def falco_body(output_bytes: int) -> bytes:
    """A Falco alert, as its http_output posts it, with an output field of about that many bytes."""
    fields = {"k8s.pod.name": "vllm-0", "k8s.ns.name": "models", "container.id": "abcdef123456"}
    return json.dumps(
        {
            "hostname": "node-a",
            "output": "Shell spawned in a model server | " + "proc.cmdline=sh -c x " * (output_bytes // 21),
            "output_fields": fields,
            "priority": "Critical",
            "rule": "Terminal shell in container",
            "source": "syscall",
            "tags": ["container", "shell"],
            "time": "2025-01-28T10:00:00.123456789Z",
        },
        separators=(",", ":"),
    ).encode()


def head(target: str, *headers: str) -> bytes:
    return ("\r\n".join([f"POST {target} HTTP/1.1", "Host: guard.test", *headers]) + "\r\n\r\n").encode()


def in_pieces(body: bytes, sizes: list[int]) -> list[bytes]:
    """``body`` cut into pieces of these sizes, in turn and over again (the last piece what is left)."""
    pieces: list[bytes] = []
    offset = 0
    while offset < len(body):
        size = sizes[len(pieces) % len(sizes)]
        pieces.append(body[offset : offset + size])
        offset += size
    return pieces


async def assert_ends(reader: asyncio.StreamReader) -> None:
    """Nothing more comes: the server ended its side after the answer (a clean FIN, or a reset)."""
    assert await read_until_cut(reader) == b""


# -- refused from the head: answered at once ----------------------------------------------------


async def test_an_alert_without_credentials_is_answered_401_before_its_body_is_sent(
    serve: Serve, tmp_path: Path, refusals: Refusals
) -> None:
    """The reviewer's reproduction: 1 MB declared, no token, the body trickling (here: not sent at all
    before the answer). The 401 comes right after the head, with Connection: close; it is counted and
    logged once, as before."""
    journal = Journal()
    running = await serve([alerts(tmp_path, journal, refusals)], refusals=refusals.log)
    reader, writer = await running.connect()
    writer.write(head(ALERTS_PATH, "Content-Type: application/json", f"Content-Length: {LARGE}"))

    reply = await read_reply(reader)  # before any byte of the body is sent
    assert reply.status == 401
    assert reply.header("Connection") == "close"
    assert reply.json() == {"error": "missing bearer token"}
    # The body, arriving after the answer, is dropped: the server's side has ended.
    with contextlib.suppress(ConnectionError):
        writer.write(b"X" * 4096)
        await writer.drain()
    await assert_ends(reader)
    writer.close()
    await until_open_connections(running, 0)
    assert journal.alerts == []
    assert refusals.counted == ["unauthenticated"]
    assert refusals.logged() == ["HTTP input refused 127.0.0.1: 401 missing bearer token"]


async def test_a_refused_connection_is_closed_after_the_linger_even_if_its_client_keeps_it(
    serve: Serve, tmp_path: Path, refusals: Refusals, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that keeps its side open (and keeps sending) after the refusal holds its slot for the
    linger, not for the request deadline (here far beyond WAIT)."""
    monkeypatch.setattr(httpserver, "LINGER_SECONDS", 0.2)
    # The request deadline (30 s) far beyond WAIT; the sweeper looks every second.
    running = await serve([alerts(tmp_path, Journal(), refusals)], Limits(), refusals=refusals.log)
    reader, writer = await running.connect()
    writer.write(head(ALERTS_PATH, f"Content-Length: {LARGE}") + b"X")
    assert (await read_reply(reader)).status == 401
    for _ in range(3):
        with contextlib.suppress(ConnectionError):
            writer.write(b"X" * 1024)  # still sending, never closing
            await writer.drain()
        await asyncio.sleep(0.05)
    await until_open_connections(running, 0)
    assert refusals.counted == ["unauthenticated"]


@pytest.mark.parametrize(
    ("headers", "target", "status"),
    [
        pytest.param(("Authorization: Bearer bad",), "/echo", 401, id="bad-token"),
        pytest.param((GOOD,), "/nowhere", 404, id="no-such-path"),
        pytest.param((GOOD, "Content-Encoding: gzip"), "/echo", 415, id="compressed"),
        pytest.param((GOOD,), "/echo", 413, id="declared-length-over-the-bound"),
    ],
)
async def test_every_refusal_from_the_head_is_answered_before_the_body(
    serve: Serve, refusals: Refusals, headers: tuple[str, ...], target: str, status: int
) -> None:
    recorder = Recorder()
    running = await serve([recorder.route(check=recorder.refuse_without_token)], refusals=refusals.log)
    reader, writer = await running.connect()
    writer.write(head(target, *headers, f"Content-Length: {LARGE}"))
    reply = await read_reply(reader)
    assert reply.status == status
    assert reply.header("Connection") == "close"
    await assert_ends(reader)
    assert recorder.requests == []
    assert len(refusals.counted) == 1


async def test_a_body_sent_after_the_refusal_is_never_parsed_nor_reaches_the_route(
    serve: Serve, refusals: Refusals, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What follows a refused head (its chunked body, then a request with good credentials) is read and
    dropped raw: llhttp sees none of it (no on_body call), no head check, no handler."""
    body_calls: list[int] = []
    on_body = Connection.on_body

    def counting(self: Connection, body: bytes) -> None:
        body_calls.append(len(body))
        on_body(self, body)

    monkeypatch.setattr(Connection, "on_body", counting)  # before the connection (and its parser) is made
    recorder = Recorder()
    running = await serve([recorder.route(check=recorder.refuse_without_token)], refusals=refusals.log)
    reader, writer = await running.connect()
    writer.write(head("/echo", "Authorization: Bearer bad", "Transfer-Encoding: chunked"))
    reply = await read_reply(reader)
    assert reply.status == 401 and reply.header("Connection") == "close"

    with contextlib.suppress(ConnectionError):
        writer.write(b"2\r\nXY\r\n" * 2000 + chunked() + post(b"after", GOOD))
        await writer.drain()
        writer.write_eof()  # the server reads what came before this, then closes
    await assert_ends(reader)
    await until_open_connections(running, 0)
    assert body_calls == []
    assert recorder.requests == []
    assert len(recorder.checked) == 1
    assert refusals.counted == ["unauthenticated"]


async def test_a_pipelined_request_before_a_refused_one_is_answered_first_and_none_after(
    serve: Serve, refusals: Refusals
) -> None:
    release = asyncio.Event()
    started = asyncio.Event()
    handled: list[bytes] = []

    async def slow(request: Request) -> Response:
        handled.append(request.body)
        started.set()
        await release.wait()
        return Response(200, b"answer to " + request.body)

    recorder = Recorder()
    route = Route("POST", "/echo", slow, check=recorder.refuse_without_token, max_body_bytes=64)
    running = await serve([route], refusals=refusals.log)
    reader, writer = await running.connect()
    writer.write(
        post(b"first", GOOD)
        + head("/echo", "Authorization: Bearer bad", f"Content-Length: {LARGE}")  # its body never sent
    )
    await asyncio.wait_for(started.wait(), WAIT)
    await eventually(lambda: refusals.counted == ["unauthenticated"], "the refusal, from its head")
    with contextlib.suppress(ConnectionError):
        writer.write(post(b"third", GOOD))  # after the refused one: never served
    release.set()

    first = await read_reply(reader)
    assert (first.status, first.body) == (200, b"answer to first")
    assert first.header("Connection") is None
    refused = await read_reply(reader)
    assert refused.status == 401 and refused.header("Connection") == "close"
    await assert_ends(reader)
    assert handled == [b"first"]
    assert len(recorder.checked) == 2
    assert refusals.counted == ["unauthenticated"]


@pytest.mark.parametrize("size", [1024, 256 * 1024, 2 * 1024 * 1024])
async def test_a_tls_client_refused_with_its_body_in_flight_still_gets_the_answer(
    serve: Serve, tmp_path: Path, size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TLS has no half-close: the answer goes out, what still arrives of the body is read and dropped
    for the linger (a close_notify sent before it would make that body an error that resets the
    connection, the answer with it), then the TLS close. This client keeps its side open after the
    answer, so the linger's end is what closes it (the sweeper looks every second)."""
    monkeypatch.setattr(httpserver, "LINGER_SECONDS", 0.2)
    pki = make_test_pki(tmp_path / "pki")
    tls = ServerTLS(cert_file=pki.server.cert_file, key_file=pki.server.key_file, client_ca_file=pki.ca_file)
    context = server_ssl_context(HttpInput(listen="127.0.0.1:0", tls=tls))
    recorder = Recorder()
    route = recorder.route(check=recorder.refuse_without_token, max_body_bytes=4 * 1024 * 1024)
    running = await serve([route], ssl_context=context)
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(
            running.host, running.port, ssl=client_context(pki), server_hostname="localhost"
        ),
        WAIT,
    )
    running.writers.append(writer)
    writer.write(post(b"x" * size, "Authorization: Bearer bad"))
    reply = await read_reply(reader)
    assert reply.status == 401 and reply.header("Connection") == "close"
    await assert_ends(reader)
    assert recorder.requests == []


async def test_a_chunked_body_growing_past_the_bound_is_answered_without_its_end(
    serve: Serve, refusals: Refusals
) -> None:
    recorder = Recorder()
    running = await serve([recorder.route(max_body_bytes=1024)], refusals=refusals.log)
    reader, writer = await running.connect()
    # 1280 bytes in 256-byte chunks, and no last chunk.
    writer.write(head("/echo", "Transfer-Encoding: chunked") + b"100\r\n%s\r\n" % (b"z" * 256) * 5)
    reply = await read_reply(reader)
    assert reply.status == 413 and reply.header("Connection") == "close"
    await assert_ends(reader)
    assert recorder.requests == []
    assert refusals.counted == ["too_large"]


async def test_a_request_that_passes_its_head_check_still_waits_for_its_body(
    serve: Serve, refusals: Refusals
) -> None:
    """Accepted requests are unchanged: a body sent slowly, in pieces, is waited for and handled whole,
    and the connection stays open."""
    recorder = Recorder()
    running = await serve([recorder.route(check=recorder.refuse_without_token)], refusals=refusals.log)
    reader, writer = await running.connect()
    writer.write(head("/echo", GOOD, "Content-Length: 12"))
    for piece in (b"hel", b"lo ", b"wor", b"ld!"):
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(piece)
    reply = await read_reply(reader)
    assert (reply.status, reply.body, reply.header("Connection")) == (200, b"hello world!", None)
    writer.write(post(b"again", GOOD))
    assert (await read_reply(reader)).body == b"again"
    assert refusals.counted == []


# -- a body in tiny chunks ----------------------------------------------------------------------


def held_by_the_server() -> int:
    """Bytes the server's module allocated and still holds (tracemalloc, since it started)."""
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, httpserver.__file__)])
    return sum(stat.size for stat in snapshot.statistics("filename"))


async def test_a_body_in_two_byte_chunks_holds_about_its_size(serve: Serve) -> None:
    """The reviewer's reproduction, smaller: 64 KiB in 2-byte chunks, the last chunk never sent. Held
    while it arrives: about the body's bytes (it was 22 times them, an object per chunk)."""
    size = 64 * 1024
    recorder = Recorder()
    running = await serve([recorder.route(max_body_bytes=2 * size)])
    _, writer = await running.connect()
    writer.write(head("/echo", "Transfer-Encoding: chunked"))
    await eventually(lambda: len(running.server.connections) == 1, "the connection")
    (connection,) = running.server.connections
    tracemalloc.start()
    try:
        before = held_by_the_server()
        writer.write(b"2\r\nXY\r\n" * (size // 2))
        await writer.drain()
        await eventually(lambda: connection.buffered_bytes >= size, "the body, read")
        held = held_by_the_server() - before
    finally:
        tracemalloc.stop()
    assert connection.buffered_bytes < size + 1024  # read, and counted at its size
    assert held < 1.25 * size, f"{held} bytes held for a body of {size}"
    assert recorder.requests == []


@pytest.mark.parametrize(
    "sizes",
    [
        pytest.param([1], id="1-byte-chunks"),
        pytest.param([2], id="2-byte-chunks"),
        pytest.param([1, 1500, 3, 2048, 1, 1, 5000, 7, 1023, 1024], id="small-and-large-mixed"),
        pytest.param([random.Random(7).randint(1, 3000) for _ in range(64)], id="random"),
    ],
)
async def test_a_chunked_alert_in_tiny_chunks_is_accepted_intact(
    serve: Serve, tmp_path: Path, refusals: Refusals, sizes: list[int]
) -> None:
    body = falco_body(12_000)
    journal = Journal()
    running = await serve([alerts(tmp_path, journal, refusals)], refusals=refusals.log)
    reader, writer = await running.connect()
    writer.write(head(ALERTS_PATH, f"Authorization: Bearer {TOKEN}", "Transfer-Encoding: chunked"))
    for piece in in_pieces(body, sizes):
        writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
    writer.write(chunked())
    reply = await read_reply(reader)
    assert reply.status == 202, reply.body
    assert journal.bodies == [body]
    (alert,) = journal.alerts
    assert alert.rule == "Terminal shell in container"
    assert refusals.counted == []


@pytest.mark.parametrize(
    "sizes",
    [
        pytest.param([1], id="1-byte-writes"),
        pytest.param([700, 1, 1, 2048, 3], id="mixed-writes"),
    ],
)
async def test_a_body_with_a_length_sent_in_small_writes_is_handled_intact(
    serve: Serve, sizes: list[int]
) -> None:
    recorder = Recorder()
    body = bytes(range(256)) * 24
    running = await serve([recorder.route(max_body_bytes=len(body))])
    reader, writer = await running.connect()
    writer.write(head("/echo", f"Content-Length: {len(body)}"))
    for piece in in_pieces(body, sizes):
        writer.write(piece)
        await writer.drain()
    reply = await read_reply(reader)
    assert reply.status == 200 and reply.body == body
    assert [r.body for r in recorder.requests] == [body]
    # The connection is kept, and the next request's body is its own.
    writer.write(post(b"next"))
    assert (await read_reply(reader)).body == b"next"


async def test_a_chunked_alert_at_the_bound_in_tiny_chunks_is_accepted(
    serve: Serve, tmp_path: Path, refusals: Refusals
) -> None:
    """A body as large as the input takes (max_body_bytes, 320 KiB by default), in 64-byte chunks."""
    journal = Journal()
    route = alerts(tmp_path, journal, refusals, token=False)
    body = falco_body(60_000)  # Falco's output is shorter than 64 KiB; the rest, JSON's whitespace
    body += b" " * (route.max_body_bytes - len(body))
    assert len(body) == route.max_body_bytes
    running = await serve([route], refusals=refusals.log)
    reply, _ = await running.exchange(
        head(ALERTS_PATH, "Transfer-Encoding: chunked") + chunked(*in_pieces(body, [64]))
    )
    assert reply.status == 202, reply.body
    assert journal.bodies == [body]
