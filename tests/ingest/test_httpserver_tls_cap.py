"""The cap on open connections with TLS: connections still in their handshake hold a slot.

The loop calls a protocol only once its TLS handshake is done, and never for one that fails or
times out, so the server takes the slot at accept, before any TLS work. Real sockets on 127.0.0.1,
on both loops (see tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast
from unittest import mock

import pytest

from responder.config import HttpInput, ServerTLS
from responder.ingest import httpserver
from responder.ingest.http import server_ssl_context
from responder.ingest.httpserver import Connection, Limits
from simulators.pki import TestPKI, make_test_pki
from tests.helpers import Records
from tests.ingest.test_grpc import eventually
from tests.ingest.test_httpserver import (
    WAIT,
    Recorder,
    Running,
    Serve,
    post,
    read_reply,
    read_until_cut,
    until_open_connections,
)
from tests.responder.test_http_input import client_context

# Long enough that no handshake times out unless a test means it to.
PATIENT = Limits(max_connections=4, request_seconds=30.0)

StartTls = Callable[..., Awaitable[Running]]


@pytest.fixture
def pki(tmp_path: Path) -> TestPKI:
    return make_test_pki(tmp_path / "pki")


@pytest.fixture
def serve_tls(serve: Serve, pki: TestPKI) -> StartTls:
    """Starts servers (see ``serve``) with the input's own mutual-TLS context (client certificate
    required)."""
    tls = ServerTLS(cert_file=pki.server.cert_file, key_file=pki.server.key_file, client_ca_file=pki.ca_file)
    context = server_ssl_context(HttpInput(listen="127.0.0.1:0", tls=tls))
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED

    async def start(
        recorder: Recorder,
        limits: Limits,
        *,
        on_refused_connection: Callable[[], None] | None = None,
        verify_mode: ssl.VerifyMode = ssl.CERT_REQUIRED,
    ) -> Running:
        assert context is not None
        context.verify_mode = verify_mode
        return await serve(
            [recorder.route()], limits, on_refused_connection=on_refused_connection, ssl_context=context
        )

    return start


def client_hello(pki: TestPKI) -> bytes:
    """The first flight of a real TLS client: its ClientHello."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_context(pki).wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    assert hello[:1] == b"\x16" and len(hello) > 100  # a handshake record
    return hello


async def handshaking(
    running: Running, pki: TestPKI, count: int
) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """Connections that begin a handshake and never finish it: half of them send nothing, the other
    half send half a ClientHello."""
    half = client_hello(pki)[:60]
    opened = []
    for number in range(count):
        reader, writer = await running.connect()
        if number % 2:
            writer.write(half)
        opened.append((reader, writer))
    return opened


async def exchange_tls(
    running: Running, context: ssl.SSLContext, body: bytes
) -> tuple[int, asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(running.host, running.port, ssl=context, server_hostname="localhost"), WAIT
    )
    running.writers.append(writer)
    writer.write(post(body))
    reply = await read_reply(reader)
    assert reply.body == body
    return reply.status, reader, writer


def open_sockets() -> set[tuple[str, str]]:
    """This process's open sockets, as (descriptor, inode) pairs. A leak check compares them with
    a snapshot: a socket not in it was opened since. (Comparing the count of every descriptor failed
    once: one of an earlier test, closed late, lowers the count as a leak raises it.)"""
    sockets: set[tuple[str, str]] = set()
    for descriptor in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # closed since the listing
            target = os.readlink(f"/proc/self/fd/{descriptor}")
            if target.startswith("socket:"):
                sockets.add((descriptor, target))
    return sockets


# -- the cap counts connections in their handshake ------------------------------------------------


async def test_connections_in_their_handshake_fill_the_cap_and_the_next_is_cut_before_any_tls(
    serve_tls: StartTls, pki: TestPKI
) -> None:
    recorder = Recorder()
    refused: list[None] = []
    running = await serve_tls(recorder, PATIENT, on_refused_connection=lambda: refused.append(None))
    await handshaking(running, pki, 4)
    await until_open_connections(running, 4)  # what serving_guard_http_connections_open shows

    with Records("serving_guard.http", logging.WARNING) as records:
        for _ in range(2):
            # A whole ClientHello: it is never answered, not even with a ServerHello.
            reader, writer = await running.connect()
            writer.write(client_hello(pki))
            assert await read_until_cut(reader) == b""
    assert running.server.refused_connections == 2 and refused == [None, None]
    assert [m for m in records.messages if "max_connections" in m] != [], "the refusal is warned about"
    assert len(running.server.connections) == 4
    assert recorder.requests == []


async def test_a_mutual_tls_client_is_served_once_handshaking_connections_leave(
    serve_tls: StartTls, pki: TestPKI
) -> None:
    recorder = Recorder()
    running = await serve_tls(recorder, PATIENT)
    opened = await handshaking(running, pki, 4)
    await until_open_connections(running, 4)
    reader, writer = await running.connect()
    writer.write(client_hello(pki))
    assert await read_until_cut(reader) == b""
    assert running.server.refused_connections == 1

    for _, writer in opened[:2]:
        writer.close()
    await until_open_connections(running, 2)
    status, _, _ = await exchange_tls(running, client_context(pki), b"in")
    assert status == 200
    assert [(r.body, r.peer_verified) for r in recorder.requests] == [(b"in", True)]
    assert len(running.server.connections) == 3  # kept alive, and still counted
    assert running.server.refused_connections == 1


@pytest.mark.parametrize("verify_mode", [ssl.CERT_REQUIRED, ssl.CERT_OPTIONAL], ids=["required", "optional"])
async def test_peer_certificates_are_checked_as_before(
    serve_tls: StartTls, pki: TestPKI, verify_mode: ssl.VerifyMode
) -> None:
    recorder = Recorder()
    running = await serve_tls(recorder, PATIENT, verify_mode=verify_mode)
    await exchange_tls(running, client_context(pki), b"with")
    if verify_mode == ssl.CERT_OPTIONAL:
        await exchange_tls(running, client_context(pki, cert=False), b"without")
    assert [(r.body, r.peer_verified) for r in recorder.requests] == [(b"with", True)] + (
        [(b"without", False)] if verify_mode == ssl.CERT_OPTIONAL else []
    )
    assert {r.remote for r in recorder.requests} == {"127.0.0.1"}


async def test_clients_whose_hello_is_in_before_the_accept_are_served(
    serve_tls: StartTls, pki: TestPKI
) -> None:
    """The ClientHello already waits in the socket when the server accepts it: handing the socket
    over to the handshake loses none of it."""
    recorder = Recorder()
    running = await serve_tls(recorder, Limits(max_connections=8, request_seconds=30.0))
    clients = []
    for _ in range(6):  # all without yielding to the loop: nothing is accepted before the last hello
        raw = socket.create_connection((running.host, running.port), timeout=WAIT)
        tls = client_context(pki).wrap_socket(raw, server_hostname="localhost", do_handshake_on_connect=False)
        tls.setblocking(False)
        with contextlib.suppress(ssl.SSLWantReadError):
            tls.do_handshake()  # sends the ClientHello, then would wait for the answer
        clients.append(tls)

    def finish(tls: ssl.SSLSocket, number: int) -> bytes:
        with tls:
            tls.settimeout(WAIT)
            tls.do_handshake()
            tls.sendall(post(b"early %d" % number, "Connection: close"))
            answer = b""
            with contextlib.suppress(ssl.SSLEOFError):
                while chunk := tls.recv(65536):
                    answer += chunk
            return answer

    answers = await asyncio.gather(*(asyncio.to_thread(finish, tls, n) for n, tls in enumerate(clients)))
    for number, answer in enumerate(answers):
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"early %d" % number)
    assert sorted(r.body for r in recorder.requests) == [b"early %d" % n for n in range(6)]
    assert all(r.peer_verified for r in recorder.requests)
    assert running.server.refused_connections == 0


# -- a handshake that fails or times out frees its slot -------------------------------------------


@pytest.mark.parametrize(
    "client", ["garbage", "half-hello-then-close", "no-certificate", "foreign-certificate"]
)
async def test_a_failed_handshake_frees_its_slot(serve_tls: StartTls, pki: TestPKI, client: str) -> None:
    recorder = Recorder()
    running = await serve_tls(recorder, Limits(max_connections=1, request_seconds=30.0))
    sockets = open_sockets()
    for _ in range(3):  # with one slot, a leak would show as a refusal of the next one
        if client in ("garbage", "half-hello-then-close"):
            reader, writer = await running.connect()
            writer.write(b"GET / HTTP/1.1\r\n\r\n" if client == "garbage" else client_hello(pki)[:60])
            if client == "half-hello-then-close":
                await until_open_connections(running, 1)
                writer.close()
            else:
                assert await read_until_cut(reader) == b"", "garbage gets no answer"
        else:
            context = client_context(pki, cert=client == "foreign-certificate", rogue=True)
            # TLS 1.3: the client may think itself done before the server refuses its certificate.
            with contextlib.suppress(ssl.SSLError, ConnectionError, asyncio.IncompleteReadError):
                await exchange_tls(running, context, b"refused")
        await until_open_connections(running, 0)
        for writer in running.writers:
            writer.close()
        running.writers.clear()
    await eventually(lambda: open_sockets() <= sockets, "no socket left open by the handshakes")

    status, _, _ = await exchange_tls(running, client_context(pki), b"next")
    assert status == 200
    assert running.server.refused_connections == 0
    assert [r.body for r in recorder.requests] == [b"next"]


async def test_a_handshake_that_times_out_frees_its_slot(serve_tls: StartTls, pki: TestPKI) -> None:
    recorder = Recorder()
    running = await serve_tls(recorder, Limits(max_connections=2, request_seconds=0.5))
    opened = await handshaking(running, pki, 2)
    await until_open_connections(running, 2)
    for reader, _ in opened:
        assert await read_until_cut(reader) == b""  # cut unanswered, within WAIT
    await until_open_connections(running, 0)

    status, _, _ = await exchange_tls(running, client_context(pki), b"after")
    assert status == 200
    assert running.server.refused_connections == 0


async def test_a_handshake_is_bounded_by_its_own_timeout_shorter_than_a_requests(
    serve_tls: StartTls, pki: TestPKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A sender's handshake takes milliseconds: a stalled one is cut at TLS_HANDSHAKE_SECONDS (10 s;
    # 0.5 s here), not at request_seconds (30 s), so a flood needs more connections a second to
    # keep the slots taken.
    assert Limits(request_seconds=30.0).handshake_seconds == httpserver.TLS_HANDSHAKE_SECONDS == 10.0
    assert Limits(request_seconds=2.0).handshake_seconds == 2.0
    monkeypatch.setattr(httpserver, "TLS_HANDSHAKE_SECONDS", 0.5)
    running = await serve_tls(Recorder(), PATIENT)
    opened = await handshaking(running, pki, 2)
    await until_open_connections(running, 2)
    for reader, _ in opened:
        assert await read_until_cut(reader) == b""  # cut within WAIT, well before 30 s
    await until_open_connections(running, 0)
    status, _, _ = await exchange_tls(running, client_context(pki), b"after")
    assert status == 200


# -- stop -----------------------------------------------------------------------------------------


async def test_stop_closes_connections_in_their_handshake(serve_tls: StartTls, pki: TestPKI) -> None:
    recorder = Recorder()
    running = await serve_tls(recorder, PATIENT)
    opened = await handshaking(running, pki, 3)
    _, reader, _ = await exchange_tls(running, client_context(pki), b"kept alive")
    await until_open_connections(running, 4)

    # Within WAIT, not the 30 s handshake timeout: every connection is idle, so none is waited for.
    await asyncio.wait_for(running.server.stop(grace_seconds=5.0), WAIT)
    assert running.server.connections == set()
    for handshake_reader, _ in opened:
        assert await read_until_cut(handshake_reader) == b""
    with contextlib.suppress(ssl.SSLError):
        assert await asyncio.wait_for(reader.read(), WAIT) == b""


async def test_a_connection_closed_in_the_turn_it_was_accepted_frees_its_slot_and_socket(
    serve_tls: StartTls, pki: TestPKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stop() or the sweeper may close a connection before its handshake task took a first step."""
    accept_tls = Connection.accept_tls

    def accept_then_close(self: Connection, transport: asyncio.Transport, context: ssl.SSLContext) -> None:
        accept_tls(self, transport, context)
        self.close()

    monkeypatch.setattr(Connection, "accept_tls", accept_then_close)
    running = await serve_tls(Recorder(), PATIENT)
    sockets = open_sockets()
    for reader, _ in await handshaking(running, pki, 3):
        assert await read_until_cut(reader) == b""
    await until_open_connections(running, 0)
    for writer in running.writers:
        writer.close()
    await eventually(lambda: open_sockets() <= sockets, "no socket left open")


async def tls_client_done_then_silent(running: Running, pki: TestPKI) -> asyncio.StreamReader:
    """A mutual-TLS client that completes its handshake, then neither sends nor answers anything (not
    even the server's close_notify, which a closing server waits for)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_context(pki).wrap_bio(incoming, outgoing, server_hostname="localhost")
    reader, writer = await running.connect()
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            writer.write(outgoing.read())
            chunk = await asyncio.wait_for(reader.read(65536), WAIT)
            assert chunk, "cut during the handshake"
            incoming.write(chunk)
    writer.write(outgoing.read())  # the client's certificate and Finished
    return reader


async def test_a_handshake_stopped_as_it_completes_holds_its_slot_until_its_socket_closes(
    serve_tls: StartTls, pki: TestPKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close() (stop, the sweeper) cancels a handshake on the next turn; when the handshake completes in
    between, the connection is closed like any other (connection_made sees it closed): it stays counted
    until its socket is closed, and the sweeper cuts a TLS shutdown its client never answers. (It was
    freed at once while its socket stayed open for the shutdown, up to 30 s, out of the sweeper's reach.)"""
    made = Connection.connection_made

    def closed_just_before(self: Connection, transport: asyncio.BaseTransport) -> None:
        self.close()  # the handshake still runs: its cancel is queued, then the handshake completes
        made(self, transport)

    monkeypatch.setattr(Connection, "connection_made", closed_just_before)
    # The sweeper cuts a close not flushed by then.
    monkeypatch.setattr(httpserver, "CLOSE_GRACE_SECONDS", 0.2)
    running = await serve_tls(Recorder(), PATIENT)
    reader = await tls_client_done_then_silent(running, pki)
    await until_open_connections(running, 0)
    # Not counted any more, so closed: the server's socket is gone, not kept for a TLS shutdown.
    await read_until_cut(reader)


class _AcceptedWithout:
    """A plain transport just accepted whose socket cannot be taken for the handshake."""

    def __init__(self, transport: asyncio.Transport, failure: str) -> None:
        self._transport = transport
        self._failure = failure

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name != "socket":
            return self._transport.get_extra_info(name, default)
        if self._failure == "no-socket":
            return None
        failing = mock.Mock()
        failing.dup.side_effect = OSError(errno.EMFILE, "Too many open files")
        return failing

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


@pytest.mark.parametrize("failure", ["no-socket", "out-of-descriptors"])
async def test_a_connection_whose_socket_cannot_be_taken_is_cut_and_frees_its_slot(
    serve_tls: StartTls, pki: TestPKI, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    accepted = httpserver._TlsAccepted.connection_made
    failing = [True]

    def accept(self: httpserver._TlsAccepted, transport: asyncio.BaseTransport) -> None:
        if failing:
            failing.pop()
            transport = cast(asyncio.Transport, _AcceptedWithout(cast(asyncio.Transport, transport), failure))
        accepted(self, transport)

    monkeypatch.setattr(httpserver._TlsAccepted, "connection_made", accept)
    recorder = Recorder()
    running = await serve_tls(recorder, Limits(max_connections=1, request_seconds=30.0))
    reader, writer = await running.connect()
    writer.write(client_hello(pki))
    assert await read_until_cut(reader) == b""
    await until_open_connections(running, 0)

    status, _, _ = await exchange_tls(running, client_context(pki), b"next")  # one slot: it was freed
    assert status == 200
    assert [r.body for r in recorder.requests] == [b"next"]
    assert running.server.refused_connections == 0
