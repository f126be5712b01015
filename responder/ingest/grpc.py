"""The gRPC input: a client of Falco's outputs service (Falco <= 0.43; deprecated in 0.43, removed in 0.44).

Falco keeps one process-wide queue of alerts. ``/falco.outputs.service/sub`` is a bidirectional
stream: after each client message Falco drains the queue into the stream. This client sends an
empty request every poll interval, but only while the sink is not blocking on an alert, so a full
pipeline leaves the remaining alerts in Falco's queue instead of in our memory. An alert is read
only once it has a place to go (one of IN_FLIGHT submits): with every place taken, nothing more
is read.

What Falco's gRPC allows: a subscription is a stream with no acknowledgement and no redelivery. An
alert Falco has written into the stream is gone from its queue, read by us or not; one we read is
ours alone to keep. So when the journal refuses a write the input stops asking and stops reading:
what Falco has not sent stays in its queue, what was sent but not read waits in the stream, and
what was read is held here and retried, oldest first, until the journal takes it; then reading
resumes. How much Falco can write ahead of our reads is bounded by HTTP/2 flow control's window,
kept at STREAM_WINDOW_BYTES (grpc's BDP probe would grow it to megabytes on a fast stream: tens
of thousands of alerts taken from Falco's queue and not read).

When the input stops, every alert it read is journaled or named. Submits under way get
STOP_GRACE_SECONDS to finish, and meanwhile what the stream still holds is read (for at most
UNREAD_SECONDS). Then the journal is asked which of the alerts read and not seen journaled it
holds: a submit cut short may have handed its write over already (``Pipeline.submit`` schedules
the write before it waits), and that write lands; nothing is submitted again while stopping. Each
alert the journal does not hold is logged with its id and counted as lost; if the journal cannot
answer in time, all of them are, said to be unconfirmed. (While the input runs, nothing it read is
lost: what the journal refuses is held and retried. At stop the responder's metrics endpoint has
closed, so it records the count beside the journal, told by ``on_lost``, and its next start counts
it: responder/ingest/lost_record.py.) Reading makes room for Falco to send more, so with a
backlog in Falco's queue the stream is never empty: when the read ends on its deadline with Falco
still sending, what Falco wrote into the window by then is not read. Those alerts were never ours
(no id, no count: only their bytes are bounded, by the window) and Falco does not keep or send
again what its client did not take; the stop says so in an error line, with the bound
(``stops_left_unread`` counts such stops). What Falco had not sent stays in its queue, for the
next run: so the stop's read keeps no more submits under way than a run does (IN_FLIGHT), and
never runs ahead of a journal that is slow or refusing. There is no metric for it: the input
stops only when the responder does, after its metrics endpoint has closed, and there is no
count to carry over.

Order: submits start in stream order and overlap (up to IN_FLIGHT, each waiting for its group
commit), so the journal's order (``seq``) is Falco's except around a refusal: a journal that
refuses one group and takes the next can take a later alert before an earlier one it refused
(held, retried oldest first before anything more is read), and alerts pushed back with
Overloaded are retried each on its own. No alert is lost or journaled twice by it (its content id
makes a second write "already accepted"); keeping strict order would mean one submit at a time.

Text that is not UTF-8 (Falco sends it; Python's protobuf refuses it) is kept, with the bad bytes
replaced (``responder/ingest/grpc_payload.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import sqlite3
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

# gRPC's C core writes its own lines to stderr (a failed handshake at info level), which breaks the
# responder's JSON logs; what fails is logged by the input. Set before grpc first loads; an
# operator's own GRPC_VERBOSITY wins.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import grpc
import grpc.aio

from responder.alert import Alert, AlertError, Priority, build_alert, rejection_code
from responder.config import CERTIFICATE_FILE, MAX_CERTIFICATE_BYTES, GrpcInput
from responder.errors import UserError
from responder.ingest.grpc_journal import JournaledAmong
from responder.ingest.grpc_payload import parse_response
from responder.ingest.proto import outputs_pb2, schema_pb2, version_pb2
from responder.ingest.sink import AlertSubmitter, InputName, Overloaded
from responder.metrics import Metrics
from responder.sender import Proof, Sender
from responder.yamlsource import FileRefused, read_regular_file

T = TypeVar("T")


class JournalRunner(Protocol):
    """What the input asks of the journal (``responder.journal.store.Journal``): to run an op after every
    write handed to it before (see ``grpc_journal``)."""

    def run(self, op: Callable[[sqlite3.Connection], T]) -> Awaitable[T]: ...


# Full method paths (Falco's generated stubs use the same ones; a test checks it).
SUB_METHOD = "/falco.outputs.service/sub"
GET_METHOD = "/falco.outputs.service/get"
VERSION_METHOD = "/falco.version.service/version"

VERSION_TIMEOUT_SECONDS = 10.0
# A stream that delivered an alert or stayed up this long was healthy: the backoff starts over.
STABLE_STREAM_SECONDS = 10.0
# Failed sessions in a row after which the input says, as an error, that it gets no alerts (about
# ten seconds with the default backoff), and how often it says so again while that lasts.
SILENT_FAILURES_SAID = 5
SILENT_SAID_AGAIN_SECONDS = 3600.0
# Falco 0.43 deprecates the gRPC output and 0.44 removes it.
GRPC_DEPRECATED_SINCE = (0, 43)
# HTTP/2 keepalive pings find a silently dead TCP peer. gRPC servers (Falco's included) answer
# pings more frequent than every 5 minutes with GOAWAY "too_many_pings", so stay just above that.
KEEPALIVE_MS = 330_000
# Alerts handed to the pipeline at once (each awaits its durable journal commit).
IN_FLIGHT = 64
# HTTP/2 flow control: how many bytes Falco may write into the stream ahead of what this input
# reads, so how much of Falco's queue a stop can leave in the stream unread. grpc announces the
# lookahead as the stream's window once its BDP probe (which grows the window with the measured
# rate: to megabytes on a fast stream) is off. An alert larger than the window still passes: the
# transport widens the window for the message being read. 32 KiB holds IN_FLIGHT alerts of a
# typical size (~500 bytes), so places freed together by a group commit are filled from what is
# already here, not after a round trip to Falco (with 16 KiB the benchmark's rate fell ~10%);
# over a network, 32 KiB per round trip is far more than the pipeline takes.
STREAM_WINDOW_BYTES = 32 * 1024
FLOW_CONTROL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.http2.bdp_probe", 0),
    ("grpc.http2.lookahead_bytes", STREAM_WINDOW_BYTES),
)
# What the stream can hold unread: grpc lets up to ~1.5 windows through while a read waits
# (measured, grpc 1.85); beyond this only the alert Falco was writing, when it is larger. About
# 110-220 alerts of a typical size (300-600 bytes), ~1,100 of the smallest (~60 bytes).
UNREAD_BYTES_AT_MOST = 2 * STREAM_WINDOW_BYTES
# gRPC's length prefix before each message in the stream (counted by flow control).
_MESSAGE_PREFIX_BYTES = 5
# At stop, how long submits under way may take to finish (the journal is still open then).
STOP_GRACE_SECONDS = 1.0
# At stop, beside that grace: how long to read what Falco already wrote into the stream (to name
# it), and how long one read may wait once the stream holds nothing more (longer than a busy
# node's pause in Falco's sending: 0.2 s was taken for an empty stream on a loaded machine, and
# the alerts it sent after went unsaid).
UNREAD_SECONDS = 2.0
UNREAD_WAIT_SECONDS = 0.5
# Then: how long the journal may take to say which of the alerts not seen journaled it holds. The
# whole stop takes at most max(STOP_GRACE_SECONDS, UNREAD_SECONDS) + JOURNAL_CHECK_SECONDS.
JOURNAL_CHECK_SECONDS = 1.5
# Names of fields whose text was not UTF-8, in the log line that says so.
REPLACED_NAMES_LOGGED = 20
# Alert ids named in one log line about lost alerts; the count is always given in full.
LOST_IDS_LOGGED = 100
_NANOS_PER_SECOND = 1_000_000_000
_MAX_EXPONENT = 60  # 2**60 times any positive initial delay is far past any cap


def backoff_delay(attempt: int, initial_seconds: float, max_seconds: float, rng: random.Random) -> float:
    """Seconds to wait before reconnect number ``attempt`` (0-based): capped exponential, with jitter.

    The delay is drawn from the upper half of ``min(max, initial * 2**attempt)`` so that many
    responders restarted together spread out, yet never retry sooner than half the schedule.
    """
    ceiling = min(max_seconds, initial_seconds * 2 ** min(max(attempt, 0), _MAX_EXPONENT))
    return rng.uniform(ceiling / 2, ceiling)


def grpc_sender(config: GrpcInput) -> Sender:
    """Who sends this input's alerts: the Falco it connects to, vouched for by the server
    certificate it verifies (TCP) or by the socket's path alone (whoever could create it)."""
    if config.address.startswith("unix:") or config.tls is None:
        return Sender(config.address, Proof.SOCKET)
    names = (config.tls.server_name,) if config.tls.server_name else ()
    return Sender(config.address, Proof.SERVER_CERTIFICATE, names)


def alert_from_response(response: outputs_pb2.response, sender: Sender | None = None) -> Alert:
    """Convert one ``falco.outputs.response`` into an Alert; raise AlertError naming the bad field."""
    if not response.HasField("time"):
        raise AlertError("time", "missing")
    seconds, nanos = response.time.seconds, response.time.nanos
    if seconds < 0:
        raise AlertError("time", "before 1970")
    if not 0 <= nanos < _NANOS_PER_SECOND:
        raise AlertError("time", f"nanos out of range: {nanos}")
    try:
        priority = Priority[schema_pb2.priority.Name(response.priority)]
    except (ValueError, KeyError):
        raise AlertError("priority", f"unknown enum value {int(response.priority)}") from None
    source = response.source
    if not source:
        # Falco < 0.30 only set the enum; its name lower-cased is the source name ("k8s_audit").
        try:
            source = schema_pb2.source.Name(response.source_deprecated).lower()
        except ValueError:
            raise AlertError("source", f"unknown enum value {int(response.source_deprecated)}") from None
    return build_alert(
        rule=response.rule,
        priority=priority,
        time_ns=seconds * _NANOS_PER_SECOND + nanos,
        source=source,
        output=response.output,
        fields=dict(response.output_fields),
        tags=list(response.tags),
        hostname=response.hostname,
        sender=sender,
    )


def check_client_tls(config: GrpcInput, where: str = "inputs.grpc.tls") -> None:
    """Refuse, with a UserError naming the key and the file, certificate files the channel could
    not use: unreadable, not PEM, or a key that is not the certificate's. Called once at start;
    the channel itself reads them again on every connect, so a rotated certificate is picked up."""
    tls = config.tls
    if tls is None or config.address.startswith("unix:"):
        return  # a unix socket has no TLS: the files are not used
    for key, path in (("ca_file", tls.ca_file), ("cert_file", tls.cert_file), ("key_file", tls.key_file)):
        try:
            read_regular_file(path, MAX_CERTIFICATE_BYTES, CERTIFICATE_FILE)
        except FileRefused as exc:
            raise UserError(f"{where}.{key}: {path} {exc}") from None
        except OSError as exc:
            raise UserError(f"{where}.{key}: cannot read {path}: {exc.strerror or exc}") from None
    for key, path in (("ca_file", tls.ca_file), ("cert_file", tls.cert_file)):
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
        except (OSError, ssl.SSLError):
            raise UserError(f"{where}.{key}: {path} holds no PEM certificate") from None
    try:
        # An empty password: an encrypted key fails here instead of prompting on the terminal.
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(tls.cert_file, tls.key_file, password="")
    except (OSError, ssl.SSLError) as exc:
        if getattr(exc, "reason", None) == "KEY_VALUES_MISMATCH":
            raise UserError(
                f"{where}.key_file: {tls.key_file} is not the private key of {tls.cert_file} (cert_file)"
            ) from None
        raise UserError(f"{where}.key_file: {tls.key_file} holds no unencrypted PEM private key") from None


def _certificate_bytes(path: str) -> bytes:
    """A certificate file read again at a connect (a rotated one is picked up): bounded as at start
    (check_client_tls); ValueError naming the file, as the channel's other setup problems are."""
    try:
        return read_regular_file(path, MAX_CERTIFICATE_BYTES, CERTIFICATE_FILE)
    except FileRefused as exc:
        raise ValueError(f"{path} {exc}") from None


def parse_version(version: str) -> tuple[int, int] | None:
    """(major, minor) of a Falco version string such as "0.43.0-rc1", or None when it is not semver."""
    parts = version.split("-", 1)[0].split("+", 1)[0].split(".")
    if len(parts) < 2 or not all(part.isdigit() for part in parts[:2]):
        return None
    return int(parts[0]), int(parts[1])


class _NotFalco(Exception):
    """The gRPC server at the address is not Falco's."""


@dataclass
class GrpcInputState:
    """What readiness checks and metrics read; owned and updated by one GrpcAlertInput."""

    connected: bool = False
    falco_version: str | None = None
    sessions: int = 0  # connections that got as far as opening the stream
    failures: int = 0  # sessions that ended in an error (including failed connects)
    received: int = 0
    submitted: int = 0
    rejected: int = 0
    polls: int = 0
    last_error: str | None = None
    # Set while the journal refuses writes: what failed. Reading stops until it clears.
    journal_error: str | None = None
    journal_stalls: int = 0  # outages of the journal this input stopped for
    held: int = 0  # alerts read that the journal refused, kept to retry
    lost: int = 0  # alerts read and never journaled (the input stopped first), each logged
    # Stops whose read of the stream ended on its deadline with Falco still sending: alerts Falco
    # had written into the stream (UNREAD_BYTES_AT_MOST of them) were not read. Each logged.
    stops_left_unread: int = 0
    # Sessions in a row that got no healthy stream (reset by one that did): past
    # SILENT_FAILURES_SAID, the input says in an error line that it gets no alerts, and why.
    failures_in_a_row: int = 0
    # When (monotonic seconds) the input last had a stream, or started: /readyz says since when
    # it has none.
    no_stream_since: float | None = None


class _StreamEnded(Exception):
    """Falco finished the stream with OK (it is shutting down): reconnect."""


def _quiet(future: asyncio.Future[Any]) -> asyncio.Future[Any]:
    """The future, its error taken when it ends (whoever waits for it, or no one)."""
    future.add_done_callback(lambda done: done.cancelled() or done.exception())
    return future


class _Stream:
    """The ``sub`` call, read and written so that cancelling the reader or the poller does not end
    it: grpc.aio cancels the whole call when a read or a write is cancelled, and at stop the input
    goes on reading what Falco already sent. So each read and write runs as a task of its own; a
    read the cancelled reader was waiting for is the next read's."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self._reading: asyncio.Future[Any] | None = None

    async def read(self) -> Any:
        reading = self._reading
        if reading is None:
            reading = self._reading = _quiet(asyncio.ensure_future(self.call.read()))
        try:
            data = await asyncio.shield(reading)
        except asyncio.CancelledError:
            # The reader was cancelled: a read still under way, or done with a message, is kept.
            if reading.done() and (reading.cancelled() or reading.exception() is not None):
                self._reading = None
            raise
        except BaseException:
            self._reading = None
            raise
        self._reading = None
        return data

    async def write(self, request: outputs_pb2.request) -> None:
        await asyncio.shield(_quiet(asyncio.ensure_future(self.call.write(request))))


class GrpcAlertInput:
    """Reads alerts from Falco's gRPC outputs service and submits them to the sink, forever."""

    def __init__(
        self,
        config: GrpcInput,
        sink: AlertSubmitter,
        logger: logging.Logger,
        *,
        rng: random.Random | None = None,
        metrics: Metrics | None = None,
        journal: JournalRunner | None = None,
        on_lost: Callable[[list[str]], None] | None = None,
    ) -> None:
        """``journal``: the one ``sink`` writes to, asked at stop which alerts it holds (without
        it, every alert not seen journaled is named, as unconfirmed). ``on_lost``: told the ids
        of the alerts each stop lost, after they are counted and logged (the responder keeps
        them for its next start: by then its metrics endpoint is closed)."""
        self._config = config
        self._sender = grpc_sender(config)
        self._sink = sink
        self._log = logger
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._metrics = metrics if metrics is not None else Metrics()
        self._journal = journal
        self._on_lost = on_lost
        self.state = GrpcInputState()
        # Alerts read from Falco and not yet journaled, by their number in reading order: those
        # being submitted, and those the journal refused (held, retried before the next read).
        # Kept across sessions: a reconnect does not give them back to Falco.
        self._submitting: dict[int, Alert] = {}
        self._held: dict[int, Alert] = {}
        # While stopping: alerts read and not seen journaled (submits cut short, and what the
        # stream still held), never submitted again; the journal is asked about them.
        self._unconfirmed: dict[int, Alert] = {}
        self._stopping = False
        # Set while nothing is held: the reader reads and the poller asks only then.
        self._journal_takes_writes = asyncio.Event()
        self._journal_takes_writes.set()
        self._retrying: asyncio.Task[None] | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, stream and reconnect with capped backoff until ``stop`` is set; then account
        for every alert read and not journaled (see the module)."""
        self._stopping = False
        cancelled = False
        try:
            await self._sessions_until(stop)
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            self._stopping = True
            if self._retrying is not None:
                self._retrying.cancel()  # a write it handed over lands; the journal is asked
            await self._account_at_stop(ask_journal=not cancelled)

    async def _sessions_until(self, stop: asyncio.Event) -> None:
        backoff = self._config.backoff
        attempt = 0
        self.state.no_stream_since = time.monotonic()
        said_at: float | None = None
        while not stop.is_set():
            healthy = await self._session_until(stop)
            if stop.is_set():
                break
            if healthy:
                attempt = 0
                self.state.failures_in_a_row = 0
                said_at = None
            else:
                self.state.failures_in_a_row += 1
                now = time.monotonic()
                if self.state.failures_in_a_row >= SILENT_FAILURES_SAID and (
                    said_at is None or now - said_at >= SILENT_SAID_AGAIN_SECONDS
                ):
                    said_at = now
                    self._say_no_alerts()
            delay = backoff_delay(attempt, backoff.initial_seconds, backoff.max_seconds, self._rng)
            attempt += 1
            self._log.info("grpc input: reconnecting to %s in %.2fs", self._config.address, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    # -- one connection -------------------------------------------------------------------------

    async def _session_until(self, stop: asyncio.Event) -> bool:
        """Run one session; cancel it as soon as ``stop`` is set (even mid-connect or mid-submit)."""
        session = asyncio.create_task(self._session())
        stopper = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({session, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not session.done():
                self._stopping = True  # from now on nothing read is submitted again
            session.cancel()
            stopper.cancel()
            await asyncio.gather(session, stopper, return_exceptions=True)
        # An alert read and not journaled when stop came is named in the log (run: _account_at_stop).
        return False if session.cancelled() else session.result()

    def _open_channel(self) -> Any:
        address = self._config.address
        tls = self._config.tls
        if address.startswith("unix:"):
            return grpc.aio.insecure_channel(address, options=list(FLOW_CONTROL_OPTIONS))
        if tls is None:
            # config validation rejects this when the input is enabled; never fall back to plaintext
            raise ValueError(f"the TCP address {address} needs tls (Falco requires mutual TLS on TCP)")
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_certificate_bytes(tls.ca_file),
            private_key=_certificate_bytes(tls.key_file),
            certificate_chain=_certificate_bytes(tls.cert_file),
        )
        options: list[tuple[str, str | int]] = [
            *FLOW_CONTROL_OPTIONS,
            ("grpc.keepalive_time_ms", KEEPALIVE_MS),
        ]
        if tls.server_name:
            options.append(("grpc.ssl_target_name_override", tls.server_name))
        return grpc.aio.secure_channel(address, credentials, options=options)

    async def _session(self) -> bool:
        """One connection: version, then the ``sub`` stream. True when it was healthy."""
        address = self._config.address
        try:
            channel = self._open_channel()
        except (OSError, ValueError) as exc:
            # Read each time: a rotated certificate is picked up on the next reconnect.
            self._failed(f"cannot set up the channel to {address}: {exc}")
            return False
        connected_at: float | None = None
        received_before = self.state.received
        try:
            await self._ask_version(channel)
            call = channel.stream_stream(
                SUB_METHOD,
                request_serializer=outputs_pb2.request.SerializeToString,
                # Bytes: parsed by the input (grpc_payload), so that text that is not UTF-8 is kept.
                response_deserializer=None,
            )()
            connected_at = time.monotonic()
            self.state.connected = True
            self.state.no_stream_since = None
            self.state.sessions += 1
            self._log.info("grpc input: subscribed to Falco outputs at %s", address)
            await self._pump(_Stream(call))
        except grpc.aio.AioRpcError as exc:
            self._failed(f"{address}: {exc.code().name}: {exc.details()}")
        except _NotFalco as exc:
            self._failed(str(exc))
        except _StreamEnded:
            self._failed(f"{address}: Falco ended the stream")
        finally:
            if self.state.connected or self.state.no_stream_since is None:
                self.state.no_stream_since = time.monotonic()
            self.state.connected = False
            await channel.close()
        if connected_at is None:
            return False
        lasted = time.monotonic() - connected_at
        return self.state.received > received_before or lasted >= STABLE_STREAM_SECONDS

    def _failed(self, message: str) -> None:
        self.state.failures += 1
        self.state.last_error = message
        self._log.warning("grpc input: %s", message)

    def _say_no_alerts(self) -> None:
        """One error line when the input has had no stream for several tries (and again each
        SILENT_SAID_AGAIN_SECONDS): a responder whose only input is gRPC gets no alerts at all, and
        the likeliest reason is a Falco without its gRPC output (0.44 removed it)."""
        self._log.error(
            "grpc input: no alerts: no Falco gRPC output answered at %s in %d tries (last: %s). Falco 0.44"
            " removed the gRPC output: on Falco 0.44 and later take alerts with inputs.http and Falco's"
            " http_output (deploy/README.md); on Falco 0.43 and earlier check falco.yaml's grpc.enabled"
            " and grpc_output.enabled, and that %s is Falco's gRPC address",
            self._config.address,
            self.state.failures_in_a_row,
            self.state.last_error or "no answer",
            self._config.address,
        )

    async def _ask_version(self, channel: Any) -> None:
        ask = channel.unary_unary(
            VERSION_METHOD,
            request_serializer=version_pb2.request.SerializeToString,
            response_deserializer=version_pb2.response.FromString,
        )
        try:
            reply: version_pb2.response = await ask(version_pb2.request(), timeout=VERSION_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
            # Every Falco with the outputs service this input reads (0.20 on) has the version
            # service: what answers without it is another gRPC server.
            raise _NotFalco(
                f"{self._config.address} answers gRPC but is not Falco (it has no falco.version.service):"
                " another service's address or port?"
            ) from None
        self.state.falco_version = reply.version
        engine = f" (engine {reply.engine_version})" if reply.engine_version else ""
        self._log.info(
            "grpc input: connected to Falco %s%s at %s", reply.version, engine, self._config.address
        )
        major_minor = parse_version(reply.version)
        if major_minor is not None and major_minor >= GRPC_DEPRECATED_SINCE:
            self._log.warning(
                "grpc input: Falco %s: the gRPC output is deprecated since Falco 0.43 and removed in 0.44; "
                "switch to http_output (inputs.http) before upgrading Falco",
                reply.version,
            )

    # -- the stream -----------------------------------------------------------------------------

    async def _pump(self, stream: _Stream) -> None:
        idle = asyncio.Event()  # set while no alert is waiting for the sink
        idle.set()
        delivering: set[asyncio.Task[None]] = set()
        reader = asyncio.create_task(self._read(stream, idle, delivering))
        poller = asyncio.create_task(self._poll(stream, idle))
        try:
            try:
                done, _ = await asyncio.wait({reader, poller}, return_when=asyncio.FIRST_COMPLETED)
                if poller in done:
                    poller.result()  # a failed write returns quietly: the reader reports why the call ended
                    await reader
                else:
                    reader.result()
            finally:
                reader.cancel()
                poller.cancel()
                await asyncio.gather(reader, poller, return_exceptions=True)
        except asyncio.CancelledError:
            await self._end_at_stop(stream, delivering)
            raise
        except BaseException:
            # The stream ended or broke: alerts already read are Falco's no more, so their submits
            # finish (those the journal refuses are held, and retried whatever the stream does).
            try:
                if delivering:
                    await asyncio.wait(set(delivering))
            except asyncio.CancelledError:
                await self._end_at_stop(stream, delivering)
                raise
            raise
        finally:
            stream.call.cancel()

    async def _poll(self, stream: _Stream, idle: asyncio.Event) -> None:
        request = outputs_pb2.request()
        while True:
            await self._free_to_ask(idle)
            try:
                await stream.write(request)
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                return  # the call is over; the reader sees its status
            self.state.polls += 1
            await asyncio.sleep(self._config.poll_interval_seconds)

    async def _free_to_ask(self, idle: asyncio.Event) -> None:
        """Until no alert waits for the sink and none is held for the journal."""
        while not (idle.is_set() and self._journal_takes_writes.is_set()):
            await idle.wait()
            await self._journal_takes_writes.wait()

    async def _read(self, stream: _Stream, idle: asyncio.Event, delivering: set[asyncio.Task[None]]) -> None:
        """Read the stream and hand alerts on with up to IN_FLIGHT submits at once: each waits for
        its journal commit, and commits are grouped, so overlapping them multiplies the rate.
        Submits start in stream order (the journal keeps it but around a refusal: see the
        module). A place is taken before each read, so an alert is never read with nowhere to
        go: with every place taken the reader stops reading and the poller stops asking, and the
        backlog stays in Falco's queue. While alerts are held for a journal that refused them,
        nothing more is read."""
        places = asyncio.Semaphore(IN_FLIGHT)

        def finished(task: asyncio.Task[None]) -> None:
            delivering.discard(task)
            places.release()
            if not task.cancelled() and task.exception() is not None:
                self._log.error("grpc input: an alert's delivery failed", exc_info=task.exception())
            if not delivering:
                idle.set()

        while True:
            await places.acquire()
            try:
                await self._journal_takes_writes.wait()
                data = await stream.read()
            except BaseException:
                places.release()
                raise
            if data is grpc.aio.EOF:
                places.release()
                raise _StreamEnded
            self.state.received += 1
            idle.clear()
            task = asyncio.create_task(self._deliver(self.state.received, data))
            delivering.add(task)
            task.add_done_callback(finished)

    def _parse(self, data: bytes) -> Alert | None:
        """The alert in a message from the stream; None when it is refused (counted and logged)."""
        try:
            response, replaced = parse_response(data)
            alert = alert_from_response(response, self._sender)
        except AlertError as exc:
            self.state.rejected += 1
            self._sink.reject(InputName.GRPC, rejection_code(exc), str(exc))
            return None
        if replaced:
            # Falco sends what the watched process gave it (a command line, a path): an attacker's
            # bytes. The alert goes on; this says which of its text was changed.
            self._log.warning(
                "grpc input: an alert from Falco held text that is not UTF-8; it is kept, those bytes"
                " replaced by U+FFFD",
                extra={"alert_id": alert.alert_id, "replaced": list(replaced[:REPLACED_NAMES_LOGGED])},
            )
        return alert

    async def _deliver(self, number: int, data: bytes) -> None:
        alert = self._parse(data)
        if alert is None:
            return
        self._submitting[number] = alert
        while self.state.journal_error is None:  # else held at once: the journal is refusing
            try:
                await self._sink.submit(alert, InputName.GRPC)
            except Overloaded as exc:
                # Keep the alert and keep not reading: the pressure stays on Falco's queue.
                if not self._stopping:
                    await asyncio.sleep(exc.retry_after_seconds)
                if self._stopping:
                    return  # not taken: accounted for at stop, never submitted again
                continue
            except Exception as exc:  # whatever failed, the alert is not journaled: it is kept
                self._journal_refused(exc, alert)
                break
            del self._submitting[number]
            self.state.submitted += 1
            return
        self._hold(number)

    def _journal_refused(self, error: Exception, alert: Alert) -> None:
        """The first refusal of an outage stops the reading; said once, with what failed."""
        if self.state.journal_error is not None:
            return
        what = f"{type(error).__name__}: {error}"
        self.state.journal_error = self.state.last_error = what
        self.state.journal_stalls += 1
        self._metrics.journal_stalls.labels(InputName.GRPC.value).inc()
        self._journal_takes_writes.clear()
        self._log.error(
            "grpc input: the journal refused an alert; reading from Falco stops until it takes writes"
            " again (alerts Falco has not sent stay in its queue; those read are kept and retried)",
            extra={"error": what, "alert_id": alert.alert_id},
        )

    def _hold(self, number: int) -> None:
        """Keep an alert read and not journaled, to be retried (before anything more is read);
        while stopping, only kept (accounted for at stop)."""
        self._held[number] = self._submitting.pop(number)
        self.state.held = len(self._held)
        self._journal_takes_writes.clear()
        if self._stopping:
            return
        if self._retrying is None or self._retrying.done():
            self._retrying = asyncio.get_running_loop().create_task(self._journal_held())

    async def _journal_held(self) -> None:
        """Submit the held alerts, oldest first, until the journal has taken every one (retried
        on the reconnect backoff's schedule while it refuses them); then reading resumes."""
        attempt = 0
        journaled = 0
        while self._held:
            number = min(self._held)
            try:
                await self._sink.submit(self._held[number], InputName.GRPC)
            except Overloaded as exc:
                await asyncio.sleep(exc.retry_after_seconds)
                continue
            except Exception as exc:  # still refused (said once an outage): tried again later
                self._journal_refused(exc, self._held[number])
                backoff = self._config.backoff
                await asyncio.sleep(
                    backoff_delay(attempt, backoff.initial_seconds, backoff.max_seconds, self._rng)
                )
                attempt += 1
                continue
            del self._held[number]
            self.state.held = len(self._held)
            self.state.submitted += 1
            journaled += 1
        if self.state.journal_error is not None:
            self._log.info(
                "grpc input: the journal takes writes again; the alerts kept meanwhile are journaled"
                " and reading from Falco resumes",
                extra={"count": journaled},
            )
            self.state.journal_error = None
        self._journal_takes_writes.set()

    # -- stopping -------------------------------------------------------------------------------

    async def _end_at_stop(self, stream: _Stream, delivering: set[asyncio.Task[None]]) -> None:
        """The input stops: submits under way may finish, while what the stream holds is read.
        Both run to their end whatever the other does (their errors are theirs: see each)."""
        await asyncio.gather(
            self._let_deliveries_finish(delivering), self._keep_unread(stream), return_exceptions=True
        )

    async def _let_deliveries_finish(self, delivering: set[asyncio.Task[None]]) -> None:
        """Submits under way may finish (most are one commit away), for STOP_GRACE_SECONDS at
        most. An alert not confirmed by then is not held and never submitted again: its write
        may be in the journal's hands already. The journal is asked about it at the end."""
        try:
            if delivering:
                await asyncio.wait(set(delivering), timeout=STOP_GRACE_SECONDS)
        finally:
            for task in delivering:
                task.cancel()
            self._unconfirmed.update(self._submitting)
            self._submitting.clear()

    async def _keep_unread(self, stream: _Stream) -> None:
        """What Falco wrote into the stream and this input did not read is gone from its queue.
        Read it, for UNREAD_SECONDS at most. While the journal takes writes each is submitted as it
        is read, up to IN_FLIGHT submits under way (as when running); what is not confirmed by
        the end is asked about, like any other submit cut short by the stop. The read ends when
        the stream does, when nothing more comes for UNREAD_WAIT_SECONDS, or on the deadline:
        then Falco was still sending, and what it had written into the window is left unread
        (said: ``_left_unread``).

        Reading makes room for Falco to write more (its ``sub`` drains its whole queue into the
        stream): an alert read that the journal cannot take before the deadline is lost, while
        one Falco never wrote stays in its queue for the next run. So the read waits for the
        journal rather than run ahead of it, and with the journal refusing writes reads no more
        than the stream can hold (naming those; the rest stay with Falco)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + UNREAD_SECONDS
        submits: dict[int, asyncio.Task[Any]] = {}
        under_way: set[asyncio.Task[Any]] = set()
        read = read_bytes = 0
        on_deadline = False  # the read ended on its deadline, Falco still sending
        try:
            while (left := deadline - loop.time()) > 0:
                if len(under_way) >= IN_FLIGHT:
                    await asyncio.wait(under_way, timeout=left, return_when=asyncio.FIRST_COMPLETED)
                    continue
                if self.state.journal_error is not None and read_bytes >= UNREAD_BYTES_AT_MOST:
                    on_deadline = True  # Falco may still be sending: what it wrote is left unread
                    break
                wait = min(left, UNREAD_WAIT_SECONDS)
                try:
                    data = await asyncio.wait_for(stream.read(), wait)
                except TimeoutError:
                    # A whole wait with nothing: the stream holds nothing more. A wait the
                    # deadline cut short says nothing: Falco may still have been sending.
                    on_deadline = wait < UNREAD_WAIT_SECONDS
                    break
                except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                    break  # the call is over, and what it held with it: nothing the stop leaves
                if data is grpc.aio.EOF:
                    break
                read += 1
                read_bytes += len(data)
                self.state.received += 1
                number = self.state.received
                alert = self._parse(data)
                if alert is None:
                    continue
                self._unconfirmed[number] = alert
                if self.state.journal_error is None:
                    task = asyncio.create_task(self._sink.submit(alert, InputName.GRPC))
                    submits[number] = task
                    under_way.add(task)
                    task.add_done_callback(under_way.discard)
            else:
                on_deadline = True
            if on_deadline:
                self._left_unread(read, read_bytes)
            left = deadline - loop.time()
            if submits and left > 0:
                await asyncio.wait(set(submits.values()), timeout=left)
        finally:
            self._settle_stop_submits(submits)

    def _settle_stop_submits(self, submits: dict[int, asyncio.Task[Any]]) -> None:
        """The stop's submits: each confirmed is submitted; the others are cancelled, left to the
        journal's answer (``_account_at_stop``)."""
        for number, task in submits.items():
            if task.done() and not task.cancelled() and task.exception() is None:
                del self._unconfirmed[number]
                self.state.submitted += 1
            else:
                task.cancel()
                _quiet(task)

    def _left_unread(self, read: int, read_bytes: int) -> None:
        """The stop's read ended on its deadline with Falco still sending: what Falco had written
        into the stream by then is not read. Falco took those alerts from its queue, and its gRPC
        output does not keep or send again what its client did not take: they are dropped, with
        no id and no count this input could give; flow control bounds their bytes. Said, not
        counted as lost (which names each alert that was read)."""
        self.state.stops_left_unread += 1
        extra: dict[str, Any] = {"unread_bytes_at_most": UNREAD_BYTES_AT_MOST, "read_at_stop": read}
        if read:
            # An estimate: the alerts left are as large, on average, as those read at stop.
            size = read_bytes // read + _MESSAGE_PREFIX_BYTES
            extra["unread_alerts_at_most_about"] = UNREAD_BYTES_AT_MOST // size + 1
        self._log.error(
            "grpc input: stopped while Falco was still sending: alerts Falco had already written into"
            " the stream were not read (their bytes: unread_bytes_at_most, bounded by flow control;"
            " their number: unread_alerts_at_most_about, at the size of those read at stop). Falco's"
            " gRPC output drops what its client did not take: they are not journaled, and Falco will"
            " not send them again",
            extra=extra,
        )

    async def _account_at_stop(self, *, ask_journal: bool) -> None:
        """The input stops: of the alerts it read and did not see journaled, each the journal does
        not hold is lost, logged with its id and counted."""
        unconfirmed = {**self._unconfirmed, **self._submitting, **self._held}
        self._unconfirmed.clear()
        self._submitting.clear()
        self._held.clear()
        self.state.held = 0
        journaled: set[str] = set()
        unanswered: str | None = "the input was cancelled before the journal was asked"
        try:
            if not unconfirmed:
                unanswered = None
            elif self._journal is None:
                unanswered = "no journal to ask"
            elif ask_journal:
                journaled, unanswered = await self._ask_journal(unconfirmed.values())
        finally:
            self._name_lost(unconfirmed, journaled, unanswered)
            # Nothing is held any more: a run started again reads, and says again if the journal refuses.
            self.state.journal_error = None
            self._journal_takes_writes.set()

    async def _ask_journal(self, alerts: Iterable[Alert]) -> tuple[set[str], str | None]:
        """The ids of these alerts the journal holds, and why it did not answer (or None). It
        answers once every write handed to it before has been committed (grpc_journal)."""
        assert self._journal is not None
        question = JournaledAmong(tuple((alert.time_ns, alert.alert_id) for alert in alerts))
        try:
            found = await asyncio.wait_for(self._journal.run(question), JOURNAL_CHECK_SECONDS)
        except TimeoutError:
            return set(), f"the journal did not answer within {JOURNAL_CHECK_SECONDS:g}s"
        except Exception as exc:  # its writer is gone, or it is closed: nothing confirmed
            return set(), f"the journal did not answer: {type(exc).__name__}: {exc}"
        return set(found), None

    def _name_lost(self, unconfirmed: dict[int, Alert], journaled: set[str], unanswered: str | None) -> None:
        lost = {number: alert for number, alert in unconfirmed.items() if alert.alert_id not in journaled}
        landed = len(unconfirmed) - len(lost)
        if landed:
            self.state.submitted += landed
            self._log.info(
                "grpc input: alerts whose submits were cut short by the stop are journaled",
                extra={"count": landed},
            )
        if not lost:
            return
        self.state.lost += len(lost)
        self._metrics.lost.labels(InputName.GRPC.value).inc(len(lost))
        ids = [lost[number].alert_id for number in sorted(lost)]
        extra: dict[str, Any] = {
            "count": len(ids),
            "alert_ids": ids[:LOST_IDS_LOGGED],
            "error": self.state.journal_error,
        }
        if unanswered is None:
            message = (
                "grpc input: stopped with alerts read from Falco that the journal does not hold:"
                " they are lost"
            )
        else:
            message = (
                "grpc input: stopped with alerts read from Falco that the journal did not confirm: counted"
                " as lost (one whose write was handed over before the stop may be journaled all the same)"
            )
            extra["unconfirmed"] = unanswered
        self._log.error(message, extra=extra)
        if self._on_lost is not None:
            self._on_lost(ids)
