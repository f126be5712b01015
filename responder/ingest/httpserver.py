"""A small HTTP/1.1 server for the input listener: llhttp (via httptools) parses, asyncio carries.

Why not aiohttp here: an alert storm is thousands of tiny POSTs a second, and aiohttp's request
machinery cost about as much CPU per alert as everything the responder does with it (see
``bench/README.md``). This server does only what the input needs: exact routes, bodies up to a
bound, keep-alive, pipelining in order, ``Expect: 100-continue``, TLS from an ``SSLContext``, and
deadlines against slow senders. The metrics/health listener, a few requests a minute, stays on
aiohttp.

A route may check a request as soon as its headers are in (authentication). A request refused from
its head (or from a body growing past its route's bound) is answered at once, after the answers to the
requests before it, and its connection is closed: nothing more of it is parsed or buffered, and what
its client still sends is only read and dropped for a moment (LINGER_SECONDS), so that the answer is
not destroyed by a reset.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import email.utils
import functools
import json
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import httptools

from responder.ingest.refusals import REFUSAL_LOG_SECONDS, RefusalLog
from responder.sender import Sender

log = logging.getLogger("serving_guard.http")

MAX_HEADER_BYTES = 16 * 1024
MAX_HEADERS = 100
MAX_URL_BYTES = 8 * 1024
# Complete requests queued behind the one being handled before the connection stops reading.
MAX_PIPELINED = 8
# ... and bytes: while a request is being handled, the connection stops parsing and reading once the
# requests read beyond it (those queued and the one arriving, heads and bodies) hold this many. Room
# for MAX_PIPELINED small alerts (~2 KiB each), not for a second large body: a connection holds the
# request being handled, this, and at most one read (256 KiB) not parsed yet, however many large
# requests its client pipelines (memory_budget counts on that). A request arriving while none is
# being handled is read whole, up to its route's max_body_bytes.
PIPELINE_BYTES = 64 * 1024
# Bytes handed to the parser at a time, so a read full of tiny pipelined requests stops at the
# pipeline bound instead of queueing everything in it.
FEED_SLICE = 2048
# Answers buffered for a client before the server stops reading from it and starting handlers.
WRITE_BUFFER_HIGH = 64 * 1024
# Each connection's kernel socket buffers, fixed (SO_RCVBUF / SO_SNDBUF; the kernel doubles them for
# its bookkeeping). Autotuned, a connection the server stopped reading (the pipeline full) lets its
# sender queue up to net.ipv4.tcp_rmem's maximum in the kernel (measured 17 MB on one loopback
# connection), charged to the container's memory cgroup and beyond any bound of ours. 64 KiB in
# flight per connection is ~40,000 small alerts/s at a 1 ms round trip, more than one sender sends.
RECEIVE_BUFFER = 64 * 1024
SEND_BUFFER = 32 * 1024
KERNEL_BUFFER_BYTES = 2 * (RECEIVE_BUFFER + SEND_BUFFER)
# How long a closed connection may take to flush its last answer before it is cut.
CLOSE_GRACE_SECONDS = 5.0
# Open connections the input holds by default: each one can hold a head of up to 16 KiB.
MAX_CONNECTIONS = 4096
# Open connections from one address by default: Falco keeps one per node, Falcosidekick one per
# alert in flight, and behind a mesh's sidecar or a NAT every sender shares an address. An eighth
# of MAX_CONNECTIONS: one address alone cannot take every slot (inputs.http.max_connections_per_peer,
# when not set, is an eighth of inputs.http.max_connections likewise).
MAX_CONNECTIONS_PER_PEER = MAX_CONNECTIONS // 8
# A TLS handshake past this is cut (or past request_seconds, when shorter).
TLS_HANDSHAKE_SECONDS = 10.0
# A new connection (its TLS handshake done) that has not sent a whole request head by then is
# closed: a sender sends its request as soon as it connects, and a connection that sends nothing
# would otherwise hold its slot for the keep-alive time.
FIRST_REQUEST_SECONDS = 10.0
# After refusing a request whose bytes may still be arriving: how long to read and drop them (raw, not
# parsed), so the close does not turn into a reset that could destroy the answer on its way.
LINGER_SECONDS = 2.0
# A body comes in pieces, one per llhttp on_body call: one per chunk of a chunked body, one per
# FEED_SLICE or read otherwise. Pieces are kept as they come while they are few (a body in one piece,
# the usual, is used as it is; a few are joined once, the one copy) or at least this large; smaller ones
# past those are gathered into pieces this large, so that a body in tiny chunks holds about its size
# (a bytes object per 2-byte chunk held 22 times it), as max_body_bytes and memory_budget count it.
BODY_PIECE_BYTES = 1024
LOOSE_BODY_PIECES = 4
REASONS = {
    100: "Continue",
    200: "OK",
    202: "Accepted",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    417: "Expectation Failed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}


@dataclass(slots=True)
class Request:
    # Not frozen: built once from the head (for the checks), given its body when it is read.
    method: str
    path: str
    query_string: str
    # Lower-case names; a repeated header's values joined with ", " (RFC 9110, 5.3).
    headers: Mapping[str, str]
    body: bytes
    remote: str
    # TLS with a client certificate that verified against the context's CAs.
    peer_verified: bool
    # That certificate's subject common name and DNS names (certificate_names).
    peer_names: tuple[str, ...] = ()
    # Who the route's head check admitted (an alert sender), for its handler.
    sender: Sender | None = None

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").partition(";")[0].strip().lower()


def certificate_names(certificate: Mapping[str, Any]) -> tuple[str, ...]:
    """A verified peer certificate's names (ssl.SSLSocket.getpeercert()'s dict): its subject's
    common names, then its subjectAltName DNS names, each once."""
    names: list[str] = []
    for rdn in certificate.get("subject") or ():
        names.extend(str(value) for key, value in rdn if key == "commonName")
    names.extend(str(value) for kind, value in certificate.get("subjectAltName") or () if kind == "DNS")
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def json(cls, status: int, payload: Any, headers: tuple[tuple[str, str], ...] = ()) -> Response:
        return cls(status, json.dumps(payload).encode(), "application/json", headers)

    def with_headers(self, *headers: tuple[str, str]) -> Response:
        return Response(self.status, self.body, self.content_type, (*self.headers, *headers))


# A handler answers at once (a Response), later (a Future settled on the loop: no task per
# request), or as a coroutine (run as a task).
Handler = Callable[[Request], Response | Awaitable[Response]]
# Runs when the headers are in; a Response refuses the request before its body is read.
HeadCheck = Callable[[Request], Response | None]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    check: HeadCheck | None = None
    # Largest body this route takes; a longer one gets 413 without being kept.
    max_body_bytes: int = 0
    # The 413 for a body over max_body_bytes: called with the limit and the size known (the
    # declared length, or the bytes received when it passed the limit).
    too_large: Callable[[int, int], Response] | None = None


@dataclass(frozen=True, slots=True)
class Limits:
    request_seconds: float = 30.0  # from the first byte of a request to its last
    keepalive_seconds: float = 75.0  # idle between requests
    max_header_bytes: int = MAX_HEADER_BYTES
    # Open connections at a time, those still in their TLS handshake included; one more is closed as
    # soon as it is accepted, unread (no TLS work), so connections full of unfinished heads or
    # handshakes cannot exhaust memory.
    max_connections: int = MAX_CONNECTIONS
    # Of those, from one address at a time: more from it are closed as soon as they are accepted.
    max_connections_per_peer: int = MAX_CONNECTIONS_PER_PEER
    first_request_seconds: float = FIRST_REQUEST_SECONDS  # from connecting to a whole first head

    @property
    def handshake_seconds(self) -> float:
        """How long a TLS handshake may take: a sender's takes milliseconds, and a slot held by one
        that stalls is a slot a flood needs fewer new connections a second to keep taken."""
        return min(TLS_HANDSHAKE_SECONDS, self.request_seconds)

    @property
    def first_head_seconds(self) -> float:
        """How long a new connection may take to send its first request head: never longer than a
        request, nor than an idle connection is kept."""
        return min(self.first_request_seconds, self.request_seconds, self.keepalive_seconds)

    @property
    def max_framing_bytes(self) -> int:
        """Bytes of a request that are not body: its head plus some room for chunk framing."""
        return self.max_header_bytes + MAX_URL_BYTES + 8 * 1024


def _error(status: int, reason: str) -> Response:
    return Response.json(status, {"error": REASONS.get(status, "error").lower(), "reason": reason})


# A refusal's reason, as counted (a metric label: a fixed set), by the status it is answered with.
REFUSAL_REASONS = {
    400: "bad_request",
    401: "unauthenticated",
    403: "unauthenticated",
    404: "not_found",
    405: "method_not_allowed",
    408: "timeout",
    411: "length_required",
    413: "too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    417: "expectation_failed",
    431: "headers_too_large",
    500: "internal_error",
    501: "not_implemented",
}


def refusal_detail(response: Response) -> str:
    """What a refusal says, for the log: its status and the reason (or error) of its JSON body."""
    try:
        said = json.loads(response.body)
    except ValueError:
        said = None
    if isinstance(said, dict):
        text = said.get("reason") or said.get("error")
        if isinstance(text, str):
            return f"{response.status} {text}"
    return f"{response.status} {REASONS.get(response.status, '')}".rstrip()


# OpenSSL's reasons for a failed handshake, in words (the others are shown as OpenSSL's, lower case).
_TLS_FAILURES = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "no client certificate",
    "HTTP_REQUEST": "plain HTTP sent to the TLS port (http:// where https:// is meant?)",
    "WRONG_VERSION_NUMBER": "not TLS, or a TLS version this server does not speak",
    "UNSUPPORTED_PROTOCOL": "a TLS version below 1.2",
    "NO_SHARED_CIPHER": "no cipher in common",
    "TLSV1_ALERT_UNKNOWN_CA": "the client does not trust the server's certificate (unknown CA)",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the client refused the server's certificate",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "the client refused the server's certificate",
}
# X509 verification codes of a client certificate whose issuer is not a configured client CA.
_UNKNOWN_ISSUER = {2, 18, 19, 20}


def _client_certificate_failure(exc: ssl.SSLCertVerificationError) -> str:
    if exc.verify_code in _UNKNOWN_ISSUER:
        return f"client certificate from an unknown CA ({exc.verify_message})"
    return f"client certificate refused ({exc.verify_message})"


def describe_handshake_failure(exc: BaseException, seconds: float) -> str:
    """Why a TLS handshake failed, in a few words ("no client certificate")."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _client_certificate_failure(exc)
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return _TLS_FAILURES.get(exc.reason, exc.reason.lower().replace("_", " "))
    if isinstance(exc, (TimeoutError, ConnectionAbortedError, asyncio.CancelledError)):
        return f"not done within {seconds:g} s"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError)):
        return "the client closed the connection (does it trust the server's certificate?)"
    return f"{type(exc).__name__}: {exc}"


def _origin_form(target: str) -> str:
    """``/path?query`` from a request target, also from the absolute form ``http://host/path``
    (RFC 9112, 3.2.2)."""
    scheme, separator, rest = target.partition("://")
    if separator and scheme.lower() in ("http", "https"):
        slash = rest.find("/")
        return rest[slash:] if slash >= 0 else "/"
    return target


class _DateHeader:
    """``Date`` formatted once a second, not per response."""

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def current(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = email.utils.formatdate(now, usegmt=True).encode()
        return self._value


def encode_response(response: Response, date: bytes, *, close: bool) -> bytes:
    head = [
        b"HTTP/1.1 %d %s\r\n" % (response.status, REASONS.get(response.status, "Status").encode()),
        b"Date: %s\r\n" % date,
    ]
    body = response.body
    if response.status == 204:
        body = b""  # a 204 has neither body nor Content-Length (RFC 9110, 8.6 and 15.3.5)
    else:
        head.append(b"Content-Length: %d\r\n" % len(body))
        head.append(b"Content-Type: %s\r\n" % response.content_type.encode())
    for name, value in response.headers:
        head.append(b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1")))
    if close:
        head.append(b"Connection: close\r\n")
    head.append(b"\r\n")
    head.append(body)
    return b"".join(head)


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing a request refused or that cannot be read
    further: its answer is ``response``."""

    def __init__(self, response: Response) -> None:
        self.response = response


@dataclass(slots=True)
class _Incoming:
    """The request being parsed."""

    url: bytearray = field(default_factory=bytearray)
    header_bytes: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    # The body's pieces (see BODY_PIECE_BYTES), and small pieces being gathered into the next one.
    body: list[bytes] = field(default_factory=list)
    small: bytearray | None = None
    body_bytes: int = 0
    route: Route | None = None
    # Set when the request is refused from its head: the answer, given as soon as llhttp has framed the
    # request (one it cannot frame is a 400 first), before any of its body is kept.
    refusal: Response | None = None
    request: Request | None = None
    expect_continue: bool = False


class Connection(asyncio.Protocol):
    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._incoming: _Incoming | None = None
        # Parsed requests waiting to be handled, in order; each item: (request or refusal, keep-alive,
        # its bytes: head and body).
        self._queue: collections.deque[tuple[Request | Response, bool, int]] = collections.deque()
        self._queued_bytes = 0  # the sum of the queue's bytes
        self._busy = False
        self._paused = False  # reading paused (pipeline full, client not reading, or broken)
        self._write_paused = False  # the client is not reading its answers
        # Received, not yet parsed: the pipeline was full. A view of the bytes read, not a copy.
        self._backlog: bytes | memoryview = b""
        self._closing = False
        self._closing_after_queue = False
        self._broken = False  # a request could not be parsed: nothing more is read
        self._lingering = False  # answered (half-closed, but over TLS): only dropping what still comes
        self._tls = False
        # The TLS context its handshake used: once the server's is replaced (renewed certificates, a
        # client CA dropped), the connection closes after its answers (see HttpServer.use_ssl_context).
        self._context: ssl.SSLContext | None = None
        self._remote = ""
        self._peer_verified = False
        self._peer_names: tuple[str, ...] = ()
        # A whole request head has come: from then on, idle time between requests is keep-alive.
        self._sent_a_head = False
        self.deadline = 0.0  # loop time after which the server closes this connection
        # Bytes of the current request that were not body: head, chunk framing, trailers.
        self._framing_bytes = 0
        # With TLS: the handshake in progress (see accept_tls); connection_made comes after it.
        self._handshake: asyncio.Task[None] | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (not always an asyncio.Transport subclass: uvloop's are not).
        stream = cast(asyncio.Transport, transport)
        # Plain: just accepted. TLS: the handshake is done, and its slot was taken at accept.
        if self._handshake is None and not self._admit(stream):
            return
        self._transport = stream
        ssl_object = transport.get_extra_info("ssl_object")
        self._tls = ssl_object is not None
        # getpeercert() is empty unless the client's chain verified against the configured CAs;
        # the loop calls connection_made only after the TLS handshake.
        certificate = ssl_object.getpeercert() if ssl_object is not None else None
        self._peer_verified = bool(certificate)
        self._peer_names = certificate_names(certificate) if certificate else ()
        self._transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        # Accepted (or its TLS handshake done) while the server stops, or closed during the handshake.
        if self._server.stopping or self._closing:
            self.close()
            return
        self.deadline = self._server.loop.time() + self._server.limits.first_head_seconds

    @property
    def remote(self) -> str:
        """The client's address."""
        return self._remote

    def _admit(self, transport: asyncio.Transport) -> bool:
        """A connection just accepted takes a slot, or is cut unread when all are taken (or all
        that its address may hold)."""
        peer = transport.get_extra_info("peername")
        self._remote = str(peer[0]) if isinstance(peer, tuple) else str(peer or "")
        if self._server.full:
            # Full: this new connection is cut unread; the established ones keep being served.
            self._closing = True
            transport.abort()
            self._server.refused_connection()
            return False
        if not self._server.take_slot(self):
            self._closing = True
            transport.abort()
            self._server.refusals.record(
                "peer_connection_limit",
                self._remote,
                f"{self._server.limits.max_connections_per_peer} connections from this address are open "
                "already (inputs.http.max_connections_per_peer); closed unread",
            )
            return False
        return True

    def accept_tls(self, transport: asyncio.Transport, context: ssl.SSLContext) -> None:
        """A TLS connection just accepted (see _TlsAccepted): take a slot before the handshake, then
        have the loop do the handshake on the socket."""
        if not self._admit(transport):
            return
        self._context = context
        try:
            # The loop gets a dup of the socket, so aborting the plain transport leaves the connection
            # open. Nothing has been read from it: asyncio and uvloop start reading only once
            # connection_made has returned, and not at all from a transport aborted in it.
            accepted = transport.get_extra_info("socket")
            if accepted is None:  # a transport without its socket: nothing to hand over
                raise OSError("the accepted connection has no socket")
            sock = accepted.dup()
        except OSError:  # out of file descriptors, or no socket: dropped, like an accept that failed
            transport.abort()
            self.connection_lost(None)
            return
        transport.abort()
        loop = self._server.loop
        # The handshake's timeout, kept by the loop; the sweeper's deadline is only a backstop.
        self.deadline = loop.time() + self._server.limits.handshake_seconds
        self._handshake = loop.create_task(self._tls_handshake(sock, context))

    async def _tls_handshake(self, sock: socket.socket, context: ssl.SSLContext) -> None:
        try:
            # As with create_server(ssl=...): connection_made comes once the handshake is done.
            await self._server.loop.connect_accepted_socket(
                lambda: self, sock, ssl=context, ssl_handshake_timeout=self._server.limits.handshake_seconds
            )
        except (Exception, asyncio.CancelledError) as exc:
            # Failed, timed out or cut by close(), and the loop has closed the socket. The protocol
            # hears nothing of a handshake that never finished (no connection_lost): free its slot.
            # Cancelled once done (connection_made came first; not by close(), see _cancel_handshake):
            # the loop closes the TLS connection, and connection_lost comes once its socket is closed.
            if self._transport is None:
                self._handshake_failed(exc)
                self.connection_lost(None)
        finally:
            self._handshake = None

    def _handshake_failed(self, exc: BaseException) -> None:
        # Cancelled by close(): the server stopping (not a refusal), or the sweeper (a timeout).
        if self._server.stopping:
            return
        why = describe_handshake_failure(exc, self._server.limits.handshake_seconds)
        self._server.refusals.record("tls_handshake", self._remote, f"TLS handshake failed: {why}")

    def pause_writing(self) -> None:
        # The client does not read its answers: start nothing more for it, read nothing more
        # from it, and cut it if it still does not read by the deadline.
        self._write_paused = True
        self.deadline = self._server.loop.time() + self._server.limits.request_seconds
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()
        if self._busy or self._queue:
            self.deadline = float("inf")
        elif self._incoming is None:
            self._idle()
        self._next()

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.free_slot(self)
        self._closing = True
        self._queue.clear()
        self._queued_bytes = 0
        self._backlog = b""
        self._incoming = None

    @property
    def buffered_bytes(self) -> int:
        """Bytes of requests held beyond the one being handled: those queued (head and body), the
        one arriving, and what was received but not parsed yet."""
        incoming = self._incoming
        arriving = incoming.header_bytes + incoming.body_bytes if incoming is not None else 0
        return self._queued_bytes + arriving + len(self._backlog)

    def data_received(self, data: bytes) -> None:
        if self._closing or self._broken:
            return
        if self._backlog:  # reading was paused, but a TLS layer may still hand over what it had
            self._backlog = b"".join((self._backlog, data))
            return
        self._feed(data)

    def _feed(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        for offset in range(0, len(view), FEED_SLICE):
            if (self._busy or self._queue) and self._pipeline_full():
                self._backlog = view[offset:]  # parsed once the pipeline drains
                self._update_reading()
                return
            if not self._feed_slice(view[offset : offset + FEED_SLICE]) or self._closing:
                return
        incoming = self._incoming
        if incoming is not None and incoming.refusal is not None:
            # Refused from a head that ended what was received (had more come, on_body or
            # on_message_complete would have stopped there): answered without waiting for more.
            self._fail(incoming.refusal)

    def _pipeline_full(self) -> bool:
        """Whether the requests read beyond the one being handled (queued, and the one arriving) are
        as many (MAX_PIPELINED) or as large (PIPELINE_BYTES) as a connection may hold."""
        if len(self._queue) >= MAX_PIPELINED:
            return True
        incoming = self._incoming
        held = self._queued_bytes
        if incoming is not None:
            held += incoming.header_bytes + incoming.body_bytes
        return held >= self._server.pipeline_bytes

    def _feed_slice(self, data: memoryview) -> bool:
        """Parse some bytes; False when the connection cannot be read any further."""
        # httptools gathers a header (or trailer) line whole before handing it over, so a line
        # that never ends is bounded here: every byte counts until on_body or the end of a
        # request takes it back off.
        self._framing_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            refused = exc.__context__
            if isinstance(refused, _Refused):
                self._fail(refused.response)
            else:
                log.error("HTTP input: parser callback failed", exc_info=refused or exc)
                self._fail(_error(500, "internal error"))
            return False
        except httptools.HttpParserUpgrade:
            self._fail(_error(400, "protocol upgrades are not supported"))
            return False
        except httptools.HttpParserError as exc:
            self._fail(_error(400, f"malformed HTTP request: {exc}"))
            return False
        if self._incoming is not None and self._framing_bytes > self._server.limits.max_framing_bytes:
            in_body = self._incoming.request is not None
            self._fail(
                _error(431, "chunk framing or trailer too large" if in_body else "request head too large")
            )
            return False
        return True

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        stop = (
            self._broken
            or self._write_paused
            or bool(self._backlog)
            or ((self._busy or bool(self._queue)) and self._pipeline_full())
        )
        if stop and not self._paused:
            transport.pause_reading()
            self._paused = True
        elif not stop and self._paused:
            transport.resume_reading()
            self._paused = False

    def eof_received(self) -> bool | None:
        # The client is done sending: answer what is queued, then close. TLS has no half-close.
        if not self._busy and not self._queue:
            self.close()  # an unfinished request will never be finished now
            return None
        self._closing_after_queue = True
        return not self._tls

    # -- llhttp callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._incoming = _Incoming()
        if self._sent_a_head:  # a first request's head stays within the new connection's deadline
            self.deadline = self._server.loop.time() + self._server.limits.request_seconds

    def on_url(self, url: bytes) -> None:
        assert self._incoming is not None
        self._incoming.url += url
        if len(self._incoming.url) > MAX_URL_BYTES:
            raise _Refused(_error(414, f"request target longer than {MAX_URL_BYTES} bytes"))

    def on_header(self, name: bytes, value: bytes) -> None:
        incoming = self._incoming
        assert incoming is not None
        if incoming.request is not None:
            return  # a chunked body's trailer: never seen by the head check, so never used
        incoming.header_bytes += len(name) + len(value) + 4
        limit = self._server.limits.max_header_bytes
        if incoming.header_bytes > limit or len(incoming.headers) >= MAX_HEADERS:
            raise _Refused(_error(431, "request headers too large"))
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = incoming.headers.get(key)
        if previous is not None and key == "host":
            raise _Refused(_error(400, "more than one Host header"))
        incoming.headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        incoming = self._incoming
        assert incoming is not None
        parser = self._parser
        if parser.should_upgrade():
            raise _Refused(_error(400, "protocol upgrades are not supported"))
        http_11 = parser.get_http_version() != "1.0"
        if http_11 and "host" not in incoming.headers:
            raise _Refused(_error(400, "an HTTP/1.1 request needs a Host header"))
        if not self._sent_a_head:
            self._sent_a_head = True
            self.deadline = self._server.loop.time() + self._server.limits.request_seconds
        method = parser.get_method().decode("latin-1")
        path, _, query = _origin_form(incoming.url.decode("latin-1")).partition("?")
        head = Request(
            method, path, query, incoming.headers, b"", self._remote, self._peer_verified, self._peer_names
        )
        incoming.request = head
        route, refusal = self._server.route(head)
        incoming.route = route
        if refusal is None and route is not None and route.check is not None:
            refusal = route.check(head)
        coding = incoming.headers.get("content-encoding", "identity").strip().lower()
        if refusal is None and coding not in ("", "identity"):
            refusal = _error(415, "compressed bodies are not accepted (Content-Encoding)")
        transfer = incoming.headers.get("transfer-encoding")
        if refusal is None and transfer is not None and transfer.strip().lower() != "chunked":
            refusal = _error(501, f"unsupported Transfer-Encoding: {transfer[:64]}")
        length_given = transfer is not None or "content-length" in incoming.headers
        if refusal is None and method == "POST" and not length_given:
            # HTTP/1.1 reads such a body as empty, and what the sender sends next as another request:
            # "invalid JSON" then "invalid method" would hide the one thing wrong.
            refusal = _error(411, "a POST needs a Content-Length or Transfer-Encoding: chunked")
        declared = incoming.headers.get("content-length", "")
        if refusal is None and route is not None and declared.isdigit():
            size = int(declared)
            refusal = self._too_large(route, size) if size > route.max_body_bytes else None
        expect = incoming.headers.get("expect") if http_11 else None  # HTTP/1.0 ignores Expect
        if expect is not None and expect.strip().lower() != "100-continue":
            refusal = refusal or _error(417, f"unsupported Expect: {expect[:64]}")
        if refusal is not None:
            # Answered now (once the earlier requests are), whether or not the sender waits for a
            # go-ahead before its body: parsing stops at the first body byte or the end of what was
            # received (_feed), and the body, if it still comes, is read and dropped for a moment
            # only (see _answer). Not raised here: llhttp checks the framing after this callback.
            incoming.refusal = refusal
            return
        if expect is not None:
            incoming.expect_continue = True
            self._maybe_continue()

    def on_body(self, body: bytes) -> None:
        incoming = self._incoming
        assert incoming is not None
        # Only what comes between body bytes is bounded (a trailer line is buffered whole; those parsed
        # after it in the same FEED_SLICE go uncounted): a body in tiny chunks, far more framing than
        # body, is fine.
        self._framing_bytes = 0
        if incoming.refusal is not None:
            raise _Refused(incoming.refusal)  # refused from its head: not a byte of its body is kept
        size = len(body)
        incoming.body_bytes += size
        route = incoming.route
        if route is not None and incoming.body_bytes > route.max_body_bytes:
            # Answered now, like a refusal from the head: the rest is not parsed.
            raise _Refused(self._too_large(route, incoming.body_bytes))
        if incoming.small is None and (size >= BODY_PIECE_BYTES or len(incoming.body) < LOOSE_BODY_PIECES):
            incoming.body.append(body)  # kept as it is (see BODY_PIECE_BYTES)
        else:
            self._gather(incoming, body)

    @staticmethod
    def _gather(incoming: _Incoming, body: bytes) -> None:
        """A small piece of a body that has a few already: into the piece being gathered, which joins
        the others once it is BODY_PIECE_BYTES long."""
        small = incoming.small
        if small is None:
            small = incoming.small = bytearray()
        small += body
        if len(small) >= BODY_PIECE_BYTES:
            incoming.body.append(bytes(small))
            incoming.small = None  # a large piece next is kept as it is again

    def on_message_complete(self) -> None:
        incoming, self._incoming = self._incoming, None
        assert incoming is not None and incoming.request is not None
        self._framing_bytes = 0
        keep_alive = self._parser.should_keep_alive()
        if incoming.refusal is not None:
            # A refused request's connection closes after the answer (the sender may be hostile):
            # nothing behind it is parsed, checked or counted.
            raise _Refused(incoming.refusal)
        request = incoming.request  # the head the checks saw, now with its body
        chunks = incoming.body
        if incoming.small is not None:
            chunks.append(bytes(incoming.small))
            incoming.small = None
        if len(chunks) == 1:
            request.body = chunks[0]
        else:
            request.body = b"".join(chunks)
            chunks.clear()  # the pieces go before the handler parses the body (not a third copy)
        size = incoming.header_bytes + len(request.body)
        self._queue.append((request, keep_alive, size))
        self._queued_bytes += size
        self.deadline = float("inf")
        self._next()
        if len(self._queue) >= MAX_PIPELINED or self._queued_bytes >= self._server.pipeline_bytes:
            self._update_reading()  # full: read no more for now

    # -- handling -----------------------------------------------------------------------------

    def _too_large(self, route: Route, size: int) -> Response:
        if route.too_large is not None:
            return route.too_large(route.max_body_bytes, size)
        return _error(413, f"body larger than {route.max_body_bytes} bytes")

    def _record_refusal(self, response: Response) -> None:
        """Count and log (rate-limited) a request this server refuses, before any handler saw it."""
        reason = REFUSAL_REASONS.get(response.status, "other")
        self._server.refusals.record(reason, self._remote, refusal_detail(response))

    def _maybe_continue(self) -> None:
        # The interim answer may only go out when every earlier request has been answered.
        incoming = self._incoming
        if (
            incoming is not None
            and incoming.expect_continue
            and not self._busy
            and not self._queue
            and self._transport is not None
        ):
            incoming.expect_continue = False
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _next(self) -> None:
        if self._busy or not self._queue or self._closing or self._write_paused:
            return
        item, keep_alive, size = self._queue.popleft()
        self._queued_bytes -= size
        if isinstance(item, Response):
            self._answer(item, keep_alive=False)
            return
        self._busy = True
        route = self._server.exact.get((item.method, item.path))
        try:
            if route is None:  # cannot happen: unrouted requests are refused from their head
                result: Response | Awaitable[Response] = _error(404, "no such path")
            else:
                result = route.handler(item)
        except Exception:
            log.exception("HTTP input: handler failed", extra={"path": item.path})
            result, keep_alive = _error(500, "internal error"), False
        if isinstance(result, Response):
            # Answered on the next turn, never from inside the parser's callback that got here.
            self._server.loop.call_soon(self._finish, result, keep_alive)
        elif isinstance(result, asyncio.Future):
            self._server.track(result)
            result.add_done_callback(functools.partial(self._settled, keep_alive=keep_alive))
        else:
            self._server.track(self._server.loop.create_task(self._handle(result, item, keep_alive)))

    def _settled(self, answer: asyncio.Future[Response], *, keep_alive: bool) -> None:
        self._server.untrack(answer)
        if answer.cancelled():  # the server stopped past its grace: nobody reads the answer
            return
        error = answer.exception()
        if error is not None:
            log.error("HTTP input: handler failed", exc_info=error)
            self._finish(_error(500, "internal error"), False)
        else:
            self._finish(answer.result(), keep_alive)

    async def _handle(self, pending: Awaitable[Response], request: Request, keep_alive: bool) -> None:
        try:
            response = await pending
        except Exception:
            log.exception("HTTP input: handler failed", extra={"path": request.path})
            response, keep_alive = _error(500, "internal error"), False
        self._finish(response, keep_alive)

    def _finish(self, response: Response, keep_alive: bool) -> None:
        self._busy = False
        self._answer(response, keep_alive=keep_alive)

    def _answer(self, response: Response, *, keep_alive: bool) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        close = not keep_alive or self._server.stopping or self.outdated
        transport.write(encode_response(response, self._server.date.current(), close=close))
        if close and self._broken:
            # Unread bytes at close make the kernel send a reset, which can destroy the answer:
            # half-close after it, then read and drop whatever still comes, for a while (until the
            # client closes, or LINGER_SECONDS). TLS has no half-close, and its close_notify, once
            # sent, makes the client's body still on its way an error that resets the connection:
            # it lingers without, and closes after.
            if transport.can_write_eof():
                transport.write_eof()
            self._lingering = self._closing = True
            self._backlog = b""
            self.deadline = self._server.loop.time() + LINGER_SECONDS
            transport.resume_reading()
            self._paused = False
            return
        if close:
            self.close()
            return
        if self._queue:
            # The next request is handled first: it leaves the queue, making room to parse what was
            # held back.
            self._next()
            if self._closing:
                return
        if self._backlog and len(self._queue) < MAX_PIPELINED // 2:
            backlog, self._backlog = self._backlog, b""
            self._feed(backlog)
            if self._closing:
                return
        if self._paused:
            # Fewer are queued now (what pauses reading pauses it where it happens: the pipeline
            # filling, a backlog kept, the client not reading its answers).
            self._update_reading()
        if self._busy or self._queue:
            return  # the next one is being handled (or waits for the client to read its answers)
        if self._closing_after_queue:
            self.close()
        elif self._incoming is None:
            self._idle()
        else:
            # A request that began while this one was handled: its clock starts now.
            self.deadline = self._server.loop.time() + self._server.limits.request_seconds
            self._maybe_continue()

    def _fail(self, response: Response) -> None:
        """A request refused, or that cannot be parsed further: counted, answered once the earlier ones
        are, then the connection is closed (see _answer). Nothing more is parsed from it."""
        self._record_refusal(response)
        self._incoming = None
        self._broken = True
        self._backlog = b""
        self._queue.append((response, False, 0))
        self._update_reading()
        self._next()

    def _idle(self) -> None:
        self.deadline = self._server.loop.time() + self._server.limits.keepalive_seconds

    @property
    def idle(self) -> bool:
        return not self._busy and not self._queue and self._incoming is None

    @property
    def outdated(self) -> bool:
        """Its handshake used a TLS context the server no longer serves: the client it verified may
        no longer be trusted (a client CA dropped), so it is heard no more than its requests under way."""
        return self._context is not None and self._context is not self._server.ssl_context

    def expire(self) -> None:
        """The deadline passed: a request that was too slow gets 408; an idle connection just closes.
        A connection with an answer still to send is left alone: that answer is never dropped,
        unless its client stopped reading answers, or the connection is closed and not flushing."""
        if self._lingering:
            self.close()
            self._lingering = False
            return
        if self._closing or self._write_paused:
            if self._transport is not None:
                self._transport.abort()
            return
        if self._busy or self._queue:
            self.deadline = self._server.loop.time() + self._server.limits.request_seconds
            return
        if self._incoming is not None and self._transport is not None:
            answer = _error(408, "request not received in time")
            self._record_refusal(answer)
            self._transport.write(encode_response(answer, self._server.date.current(), close=True))
        elif not self._sent_a_head and self._transport is not None:
            seconds = self._server.limits.first_head_seconds
            self._server.refusals.record(
                "no_request", self._remote, f"no request within {seconds:g} s of connecting"
            )
        self.close()

    def close(self) -> None:
        if not self._closing or self._lingering:
            # Cut by the sweeper if the last answer cannot be flushed by then (a client not reading).
            self.deadline = self._server.loop.time() + CLOSE_GRACE_SECONDS
        self._closing = True
        if self._transport is not None:
            if not self._transport.is_closing():
                self._transport.close()
        elif self._handshake is not None:
            # Still in its TLS handshake: cancelling it closes the socket. On the next turn, after the
            # task's first step: a task cancelled before that would skip the cleanup freeing the slot.
            self._server.loop.call_soon(self._cancel_handshake)

    def _cancel_handshake(self) -> None:
        # Not once the handshake is done (connection_made, seeing the connection closed, closed its
        # transport): cancelled then, the loop would close that transport a second time, which makes
        # asyncio's TLS transport let go of its connection, so that the sweeper could no longer cut a
        # close that does not finish (a client that never answers the TLS shutdown).
        if self._handshake is not None and self._transport is None:
            self._handshake.cancel()


class _TlsAccepted(asyncio.Protocol):
    """With TLS, the plain transport of a connection just accepted: its Connection takes a slot and
    the socket (Connection.accept_tls). create_server(ssl=...) would call the protocol only after the
    handshake, and never for one that fails or times out: connections in their handshake would hold
    memory beyond ``max_connections``, uncounted. Nor loop.start_tls on this transport: uvloop
    starts reading once connection_made returns, even if paused in it, so the ClientHello could be
    read here before start_tls took over."""

    def __init__(self, server: HttpServer) -> None:
        self._server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The server's context of the moment: a certificate reload swaps it for new handshakes.
        context = self._server.ssl_context
        assert context is not None
        Connection(self._server).accept_tls(cast(asyncio.Transport, transport), context)


class _CutAtCap(asyncio.Protocol):
    """A connection accepted while every slot under ``max_connections`` is taken: cut unread and
    counted, with no parser, buffers or TLS work for it. (A slot can also fill between the accept
    and connection_made; Connection._admit cuts those.)"""

    def __init__(self, server: HttpServer) -> None:
        self._server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).abort()
        self._server.refused_connection()


class HttpServer:
    """Serves exact (method, path) routes on one listening socket."""

    def __init__(
        self,
        routes: list[Route],
        limits: Limits | None = None,
        *,
        on_refused_connection: Callable[[], None] | None = None,
        refusals: RefusalLog | None = None,
    ) -> None:
        """``refusals``: where refused requests and connections are counted and logged (by
        default, logged only)."""
        self.exact = {(route.method, route.path): route for route in routes}
        # Bytes of requests a connection reads beyond the one being handled (see PIPELINE_BYTES).
        self.pipeline_bytes = PIPELINE_BYTES
        self._allowed: dict[str, list[str]] = {}
        for route in routes:
            self._allowed.setdefault(route.path, []).append(route.method)
        self.limits = limits or Limits()
        self.date = _DateHeader()
        self.connections: set[Connection] = set()
        self._held_by_peer: dict[str, int] = {}  # open connections by client address
        self.refusals = refusals or RefusalLog("HTTP input", log)
        # The TLS context new handshakes use (None: plain HTTP); see use_ssl_context.
        self.ssl_context: ssl.SSLContext | None = None
        # Connections closed because ``limits.max_connections`` were open; the hook counts them too.
        self.refused_connections = 0
        self._on_refused_connection = on_refused_connection
        self._refusals_logged = 0
        self._refusal_logged_at = -float("inf")
        self._handlers: set[asyncio.Future[Any]] = set()
        self.stopping = False
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None
        return self._loop

    @property
    def full(self) -> bool:
        """Every slot under ``limits.max_connections`` is taken: a new connection is cut unread."""
        return len(self.connections) >= self.limits.max_connections

    def take_slot(self, connection: Connection) -> bool:
        """A slot for a connection just accepted; False when its address holds as many as
        ``limits.max_connections_per_peer`` already."""
        held = self._held_by_peer.get(connection.remote, 0)
        if held >= self.limits.max_connections_per_peer:
            return False
        self._held_by_peer[connection.remote] = held + 1
        self.connections.add(connection)
        return True

    def free_slot(self, connection: Connection) -> None:
        if connection not in self.connections:
            return  # freed already, or never given one
        self.connections.remove(connection)
        held = self._held_by_peer.pop(connection.remote) - 1
        if held:
            self._held_by_peer[connection.remote] = held

    def use_ssl_context(self, context: ssl.SSLContext) -> None:
        """New handshakes use ``context`` (renewed certificates, a client CA file changed). Connections
        made under the one before close: the idle ones now, the others after the answers to what they
        sent (Connection: close), so that a client whose CA was dropped keeps no keep-alive connection
        it was verified on. Falco's http_output (libcurl) reconnects on its next alert."""
        self.ssl_context = context
        for connection in list(self.connections):
            if connection.idle and connection.outdated:
                connection.close()

    def track(self, pending: asyncio.Future[Any]) -> None:
        self._handlers.add(pending)
        if isinstance(pending, asyncio.Task):
            pending.add_done_callback(self._handlers.discard)

    def untrack(self, pending: asyncio.Future[Any]) -> None:
        self._handlers.discard(pending)

    def refused_connection(self) -> None:
        """A new connection was closed because the server holds ``limits.max_connections``: count
        it, and warn at most once per REFUSAL_LOG_SECONDS (a flood of them must not flood the log)."""
        self.refused_connections += 1
        if self._on_refused_connection is not None:
            self._on_refused_connection()
        now = time.monotonic()
        if now - self._refusal_logged_at >= REFUSAL_LOG_SECONDS:
            log.warning(
                "HTTP input: connection limit reached (inputs.http.max_connections); "
                "new connections are closed unread",
                extra={
                    "open_connections": len(self.connections),
                    "refused_since_last_warning": self.refused_connections - self._refusals_logged,
                    "refused_total": self.refused_connections,
                },
            )
            self._refusal_logged_at = now
            self._refusals_logged = self.refused_connections

    def route(self, head: Request) -> tuple[Route | None, Response | None]:
        route = self.exact.get((head.method, head.path))
        if route is not None:
            return route, None
        allowed = self._allowed.get(head.path)
        if allowed is None:
            return None, _error(404, f"no such path: {head.path[:200]}")
        return None, Response.json(
            405,
            {"error": "method not allowed", "reason": f"{head.method[:16]} is not served here"},
            (("Allow", ", ".join(sorted(allowed))),),
        )

    async def start(
        self, host: str, port: int, ssl_context: ssl.SSLContext | None = None, backlog: int = 1024
    ) -> tuple[str, int]:
        self._loop = asyncio.get_running_loop()
        self.ssl_context = ssl_context
        admitted: Callable[[], asyncio.Protocol] = functools.partial(Connection, self)
        if ssl_context is not None:
            admitted = functools.partial(_TlsAccepted, self)  # TLS done per connection

        def accepted() -> asyncio.Protocol:
            if self.full:
                return _CutAtCap(self)
            return admitted()

        self._server = await self._loop.create_server(
            accepted, host, port, backlog=backlog, start_serving=False
        )
        for listening in self._server.sockets:  # accepted connections inherit them
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        await self._server.start_serving()
        self._sweeper = self._loop.create_task(self._sweep(), name="http-input-deadlines")
        bound = self._server.sockets[0].getsockname()
        return str(bound[0]), int(bound[1])

    async def _sweep(self) -> None:
        # One timer for every connection instead of a timer handle re-armed per request.
        while True:
            await asyncio.sleep(min(1.0, self.limits.request_seconds / 4))
            now = self.loop.time()
            for connection in [c for c in self.connections if c.deadline <= now]:
                connection.expire()

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop accepting, close idle connections, let requests in progress finish (up to the grace)."""
        self.stopping = True
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            if connection.idle:
                connection.close()
        deadline = time.monotonic() + grace_seconds
        while any(not c.idle for c in self.connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for connection in list(self.connections):
            connection.close()
        flush_until = time.monotonic() + 1.0
        while self.connections and time.monotonic() < flush_until:
            await asyncio.sleep(0.02)
        for connection in list(self.connections):
            connection.expire()  # closing and still not flushed: cut
        for task in list(self._handlers):  # past the grace: nobody will read their answers
            task.cancel()
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=1.0)
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        self.refusals.end_window()  # the last refusals' summary, now
