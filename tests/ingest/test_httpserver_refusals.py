"""What the HTTP input refuses leaves a trace, and silent connections do not hold slots for long.

Every refusal (a status the server answers from a request's head or framing, a TLS handshake that
fails, a connection that sends nothing, one more from an address holding its share) is counted by a
bounded reason; the first of each reason from each address is logged (a few from one address in a
window), the rest summed up once per window. Real sockets on 127.0.0.1 (127.0.0.2 for a second
address), on both loops.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from responder.config import HttpInput, ServerTLS
from responder.ingest import httpserver
from responder.ingest.http import server_ssl_context
from responder.ingest.httpserver import MAX_URL_BYTES, Limits
from responder.ingest.refusals import RefusalLog
from simulators.pki import TestPKI, make_test_pki
from tests.helpers import Records
from tests.ingest.test_grpc import eventually
from tests.ingest.test_httpserver import (
    WAIT,
    Recorder,
    Running,
    Serve,
    chunked,
    post,
    read_reply,
    read_until_cut,
    request,
    until_open_connections,
)
from tests.ingest.test_httpserver_tls_cap import client_hello, exchange_tls, tls_client_done_then_silent
from tests.responder.test_http_input import client_context

# A window no test outlives: its summary comes when the test ends it.
LONG_WINDOW = 3600.0


class Refusals:
    """A RefusalLog as the input uses it, with what it counted and logged."""

    def __init__(self, window_seconds: float = LONG_WINDOW) -> None:
        self.counted: list[str] = []
        self.log = RefusalLog(
            "HTTP input", logging.getLogger("serving_guard.http"), self.counted.append, window_seconds
        )
        self.records = Records("serving_guard.http", logging.WARNING)

    def logged(self) -> list[str]:
        return [m for m in self.records.messages if m.startswith("HTTP input refused")]


@pytest.fixture
def refusals() -> Iterator[Refusals]:
    kept = Refusals()
    with kept.records:
        yield kept


# -- each refusal counted by reason, the first of each logged ------------------------------------

# What a client can get wrong, the status it gets, and the reason it is counted under. Those past the
# route's head check (authentication, which answers first) carry its token.
TOKEN = "Authorization: Bearer good"
MISTAKES = [
    (post(b"x", target="/"), 404, "not_found"),
    (request("GET", "/echo"), 405, "method_not_allowed"),
    (post(b"x"), 401, "unauthenticated"),
    (post(b"x", TOKEN, "Content-Encoding: gzip"), 415, "unsupported_media_type"),
    (f"POST /echo HTTP/1.1\r\nHost: a\r\n{TOKEN}\r\n\r\n".encode(), 411, "length_required"),
    (post(b"x", "X-Big: " + "v" * 20_000), 431, "headers_too_large"),
    (request("GET", "/echo?q=" + "a" * MAX_URL_BYTES), 414, "uri_too_long"),
    (
        f"POST /echo HTTP/1.1\r\nHost: a\r\n{TOKEN}\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".encode()
        + chunked(b"abc"),
        501,
        "not_implemented",
    ),
    (post(b"x", TOKEN, "Expect: something-else"), 417, "expectation_failed"),
    (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, "bad_request"),
    (post(b"x" * 100, TOKEN), 413, "too_large"),
]


async def test_every_refusal_is_counted_by_reason_and_the_first_of_each_logged(
    serve: Serve, refusals: Refusals
) -> None:
    recorder = Recorder()
    route = recorder.route(check=recorder.refuse_without_token)
    running = await serve([route], refusals=refusals.log)
    for data, status, _ in MISTAKES:
        for _ in range(2):
            reply, _ = await running.exchange(data)
            assert reply.status == status, data[:40]
        # A window for each reason: one address has only a few lines in a window (see
        # test_refusal_log_budget), and each reason's line is looked at here.
        refusals.log.end_window()
    assert recorder.requests == []

    assert collections.Counter(refusals.counted) == {reason: 2 for _, _, reason in MISTAKES}
    whole = [r for r in refusals.records.records if "more in the last" not in r.getMessage()]
    logged = [r.getMessage() for r in whole]
    assert len(logged) == len(MISTAKES), logged  # the second of each reason from 127.0.0.1 is not
    assert "HTTP input refused 127.0.0.1: 404 no such path: /" in logged
    assert "HTTP input refused 127.0.0.1: 401 missing bearer token" in logged
    assert (
        "HTTP input refused 127.0.0.1: 411 a POST needs a Content-Length or Transfer-Encoding: chunked"
        in logged
    )
    assert [r.__dict__["reason"] for r in whole] == [reason for _, _, reason in MISTAKES]

    summaries = [r for r in refusals.records.records if "more in the last" in r.getMessage()]
    assert [s.__dict__["by_reason"] for s in summaries] == [{reason: 1} for _, _, reason in MISTAKES]
    assert all(s.getMessage().startswith("HTTP input refused 1 more in the last 3600 s") for s in summaries)
    assert all(s.__dict__["most_from"] == {"127.0.0.1": 1} for s in summaries)


async def test_a_flood_of_refusals_writes_a_line_and_a_summary_per_window(serve: Serve) -> None:
    refusals = Refusals(window_seconds=0.5)
    running = await serve([Recorder().route()], refusals=refusals.log)
    with refusals.records:
        for _ in range(30):
            reply, _ = await running.exchange(post(b"x", target="/"))
            assert reply.status == 404
        # The window's timer ends it: the rest are summed up without another refusal to trigger it.
        await eventually(lambda: any("more in the last" in m for m in refusals.logged()), "the summary")
        # In the next window, the next refusal is logged whole again.
        await running.exchange(post(b"x", target="/"))
    logged = refusals.logged()
    whole = [m for m in logged if m == "HTTP input refused 127.0.0.1: 404 no such path: /"]
    summed = [int(m.split(" more")[0].rsplit(" ", 1)[1]) for m in logged if "more in the last 0.5 s" in m]
    assert len(refusals.counted) == 31
    assert len(whole) + sum(summed) == 31 and len(whole) + len(summed) == len(logged)
    assert 2 <= len(whole) < 31  # one per window, not one per refusal


async def test_a_request_too_slow_is_counted_as_a_timeout(serve: Serve, refusals: Refusals) -> None:
    running = await serve([Recorder().route()], Limits(request_seconds=0.2), refusals=refusals.log)
    reader, writer = await running.connect()
    writer.write(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
    assert (await read_reply(reader)).status == 408
    assert refusals.counted == ["timeout"]
    assert refusals.logged() == ["HTTP input refused 127.0.0.1: 408 request not received in time"]


async def test_a_body_in_one_byte_chunks_is_read_whole(serve: Serve, refusals: Refusals) -> None:
    """Chunk framing counts only between body bytes: 4 KB in 1-byte chunks is 24 KB on the wire, more
    than the head's whole budget (it got 431 "request head too large")."""
    limits = Limits(max_header_bytes=1024)
    recorder = Recorder()
    running = await serve([recorder.route(max_body_bytes=8192)], limits, refusals=refusals.log)
    body = bytes(range(256)) * 16
    framed = b"".join(b"1\r\n%s\r\n" % body[n : n + 1] for n in range(len(body))) + b"0\r\n\r\n"
    assert len(framed) - len(body) > limits.max_framing_bytes
    reply, _ = await running.exchange(
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + framed
    )
    assert reply.status == 200 and reply.body == body
    assert refusals.counted == []


# -- a new connection has a short time to send its first request ----------------------------------

# Keep-alive and request times far beyond WAIT: a connection cut within WAIT was cut by the first
# request's deadline.
FIRST_REQUEST_ONLY = Limits(first_request_seconds=0.2, request_seconds=60.0, keepalive_seconds=60.0)


async def test_a_silent_connection_is_closed_at_the_first_request_deadline_a_kept_alive_one_is_not(
    serve: Serve, refusals: Refusals
) -> None:
    recorder = Recorder()
    running = await serve([recorder.route()], FIRST_REQUEST_ONLY, refusals=refusals.log)
    kept_reader, kept_writer = await running.connect()
    kept_writer.write(post(b"first"))
    assert (await read_reply(kept_reader)).status == 200
    silent_reader, _ = await running.connect()  # connected after the kept-alive one was answered

    assert await read_until_cut(silent_reader) == b""  # closed without an answer
    # Past the silent one's deadline (later than the other's would have been): still served.
    kept_writer.write(post(b"second"))
    assert (await read_reply(kept_reader)).body == b"second"
    assert refusals.counted == ["no_request"]
    assert refusals.logged() == ["HTTP input refused 127.0.0.1: no request within 0.2 s of connecting"]


async def test_a_first_head_sent_slowly_is_cut_at_the_first_request_deadline(
    serve: Serve, refusals: Refusals
) -> None:
    running = await serve([Recorder().route()], FIRST_REQUEST_ONLY, refusals=refusals.log)
    reader, writer = await running.connect()
    writer.write(b"POST /echo HTTP/1.1\r\nHost: a\r\n")  # the head's first lines, then nothing
    assert (await read_reply(reader)).status == 408  # within WAIT, not request_seconds
    assert refusals.counted == ["timeout"]


async def test_the_first_request_deadline_holds_no_longer_than_a_request_or_an_idle_connection() -> None:
    assert Limits().first_head_seconds == httpserver.FIRST_REQUEST_SECONDS == 10.0
    assert Limits(request_seconds=2.0).first_head_seconds == 2.0
    assert Limits(keepalive_seconds=1.0).first_head_seconds == 1.0


# -- a cap per address ------------------------------------------------------------------------------


async def connect_from(running: Running, address: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(running.host, running.port, local_addr=(address, 0))
    running.writers.append(writer)
    return reader, writer


async def test_an_address_holding_its_share_of_connections_gets_no_more_others_do(
    serve: Serve, refusals: Refusals
) -> None:
    recorder = Recorder()
    limits = Limits(max_connections=16, max_connections_per_peer=2)
    running = await serve([recorder.route()], limits, refusals=refusals.log)
    held = [await running.connect() for _ in range(2)]
    await until_open_connections(running, 2)
    third_reader, _ = await running.connect()
    assert await read_until_cut(third_reader) == b""  # cut unread
    assert refusals.counted == ["peer_connection_limit"]
    assert refusals.logged() == [
        "HTTP input refused 127.0.0.1: 2 connections from this address are open already "
        "(inputs.http.max_connections_per_peer); closed unread"
    ]

    other_reader, other_writer = await connect_from(running, "127.0.0.2")
    other_writer.write(post(b"from another address"))
    reply = await read_reply(other_reader)
    assert reply.status == 200
    assert recorder.requests[-1].remote == "127.0.0.2"

    held[0][1].close()  # a slot of 127.0.0.1 is freed: it may connect again
    await until_open_connections(running, 2)
    reader, writer = await running.connect()
    writer.write(post(b"again"))
    assert (await read_reply(reader)).body == b"again"
    assert running.server.refused_connections == 0  # the server-wide cap was never reached


# -- TLS: handshake failures, and silence after the handshake ---------------------------------------


@pytest.fixture
def pki(tmp_path: Path) -> TestPKI:
    return make_test_pki(tmp_path / "pki")


StartTls = Callable[..., Awaitable[Running]]


@pytest.fixture
def serve_mtls(serve: Serve, pki: TestPKI, refusals: Refusals) -> StartTls:
    """Starts servers with the input's own mutual-TLS context (client certificate required)."""
    tls = ServerTLS(cert_file=pki.server.cert_file, key_file=pki.server.key_file, client_ca_file=pki.ca_file)
    context = server_ssl_context(HttpInput(listen="127.0.0.1:0", tls=tls))

    async def start(limits: Limits, recorder: Recorder | None = None) -> Running:
        route = (recorder or Recorder()).route()
        return await serve([route], limits, ssl_context=context, refusals=refusals.log)

    return start


async def plain_http(running: Running) -> None:
    reader, writer = await running.connect()
    writer.write(post(b"x"))
    assert await read_until_cut(reader) == b""


async def client_certificate(running: Running, context: ssl.SSLContext) -> None:
    # TLS 1.3: the client may think itself done before the server refuses its certificate.
    with contextlib.suppress(ssl.SSLError, ConnectionError, asyncio.IncompleteReadError):
        await exchange_tls(running, context, b"refused")


@pytest.mark.parametrize(
    ("client", "why"),
    [
        ("no-certificate", "no client certificate"),
        (
            "foreign-certificate",
            "client certificate from an unknown CA (unable to get local issuer certificate)",
        ),
        ("plain-http", "plain HTTP sent to the TLS port (http:// where https:// is meant?)"),
        ("silent", "not done within 0.2 s"),
    ],
)
async def test_a_failed_handshake_is_counted_and_logged_with_its_reason(
    serve_mtls: StartTls, pki: TestPKI, refusals: Refusals, client: str, why: str
) -> None:
    # A handshake's time is request_seconds at most: short only where it is waited for.
    running = await serve_mtls(Limits(request_seconds=0.2 if client == "silent" else 30.0))
    if client == "plain-http":
        await plain_http(running)
    elif client == "silent":
        reader, _ = await running.connect()
        assert await read_until_cut(reader) == b""
    else:
        context = client_context(pki, cert=client == "foreign-certificate", rogue=True)
        await client_certificate(running, context)
    await eventually(lambda: refusals.counted != [], "the refusal counted")
    assert refusals.counted == ["tls_handshake"]
    assert refusals.logged() == [f"HTTP input refused 127.0.0.1: TLS handshake failed: {why}"]


async def test_a_tls_connection_silent_after_its_handshake_is_cut_at_the_first_request_deadline(
    serve_mtls: StartTls, pki: TestPKI, refusals: Refusals, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its client does not answer the server's TLS shutdown either: cut after this grace.
    monkeypatch.setattr(httpserver, "CLOSE_GRACE_SECONDS", 0.2)
    running = await serve_mtls(FIRST_REQUEST_ONLY)
    reader = await tls_client_done_then_silent(running, pki)
    await read_until_cut(reader)  # within WAIT: by the first request's deadline, not keep-alive's
    await until_open_connections(running, 0)
    assert refusals.counted == ["no_request"]


async def test_connections_in_their_handshake_cut_by_stop_are_no_refusals(
    serve_mtls: StartTls, pki: TestPKI, refusals: Refusals
) -> None:
    running = await serve_mtls(Limits(request_seconds=30.0))
    reader, writer = await running.connect()
    writer.write(client_hello(pki)[:60])
    await until_open_connections(running, 1)
    await asyncio.wait_for(running.server.stop(grace_seconds=1.0), WAIT)
    assert await read_until_cut(reader) == b""
    assert refusals.counted == []
