"""The gRPC input: a client of Falco's outputs service (Falco <= 0.43; deprecated in 0.43, removed in 0.44).

Falco keeps one process-wide queue of alerts. ``/falco.outputs.service/sub`` is a bidirectional
stream: after each client message Falco drains the queue into the stream. This client sends an
empty request every poll interval, but only while the sink is not blocking on an alert, so a full
pipeline leaves the remaining alerts in Falco's queue instead of in our memory.

What Falco's gRPC allows: a subscription is a stream with no acknowledgement and no redelivery. An
alert Falco has written into the stream is gone from its queue, read by us or not; one we read is
ours alone to keep. So when the journal refuses a write the input stops asking and stops reading:
what Falco has not sent stays in its queue, what was sent but not read waits in the stream (no
more than HTTP/2 flow control lets Falco write ahead), and what was read is held here and retried,
oldest first, until the journal takes it; then reading resumes. If the input stops first, what the
stream still holds is read too, and every alert read and never journaled is logged with its id and
counted as lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from responder.alert import Alert, AlertError, Priority, build_alert, rejection_code
from responder.config import GrpcInput
from responder.errors import UserError
from responder.ingest.proto import outputs_pb2, schema_pb2, version_pb2
from responder.ingest.sink import AlertSubmitter, InputName, Overloaded
from responder.metrics import Metrics

# Full method paths (Falco's generated stubs use the same ones; a test checks it).
SUB_METHOD = "/falco.outputs.service/sub"
GET_METHOD = "/falco.outputs.service/get"
VERSION_METHOD = "/falco.version.service/version"

VERSION_TIMEOUT_SECONDS = 10.0
# A stream that delivered an alert or stayed up this long was healthy: the backoff starts over.
STABLE_STREAM_SECONDS = 10.0
# Falco 0.43 deprecates the gRPC output and 0.44 removes it.
GRPC_DEPRECATED_SINCE = (0, 43)
# HTTP/2 keepalive pings find a silently dead TCP peer. gRPC servers (Falco's included) answer
# pings more frequent than every 5 minutes with GOAWAY "too_many_pings", so stay just above that.
KEEPALIVE_MS = 330_000
# Alerts handed to the pipeline at once (each awaits its durable journal commit).
IN_FLIGHT = 64
# At stop, how long submits under way may take to finish (the journal is still open then).
STOP_GRACE_SECONDS = 1.0
# Ending a session while the journal refuses writes: how long to read what Falco already sent (to
# hold it, and name it if lost), and how long one read may wait once the stream holds nothing more.
UNREAD_SECONDS = 2.0
UNREAD_WAIT_SECONDS = 0.2
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


def alert_from_response(response: outputs_pb2.response) -> Alert:
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
            Path(path).read_bytes()
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


def parse_version(version: str) -> tuple[int, int] | None:
    """(major, minor) of a Falco version string such as "0.43.0-rc1", or None when it is not semver."""
    parts = version.split("-", 1)[0].split("+", 1)[0].split(".")
    if len(parts) < 2 or not all(part.isdigit() for part in parts[:2]):
        return None
    return int(parts[0]), int(parts[1])


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


class _StreamEnded(Exception):
    """Falco finished the stream with OK (it is shutting down): reconnect."""


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
    ) -> None:
        self._config = config
        self._sink = sink
        self._log = logger
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._metrics = metrics if metrics is not None else Metrics()
        self.state = GrpcInputState()
        # Alerts read from Falco and not yet journaled, by their number in reading order: those
        # being submitted, and those the journal refused (held, retried before the next read).
        # Kept across sessions: a reconnect does not give them back to Falco.
        self._submitting: dict[int, Alert] = {}
        self._held: dict[int, Alert] = {}
        # Set while nothing is held: the reader reads and the poller asks only then.
        self._journal_takes_writes = asyncio.Event()
        self._journal_takes_writes.set()
        self._retrying: asyncio.Task[None] | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, stream and reconnect with capped backoff until ``stop`` is set."""
        try:
            await self._sessions_until(stop)
        finally:
            if self._retrying is not None:
                self._retrying.cancel()
            self._report_lost()

    async def _sessions_until(self, stop: asyncio.Event) -> None:
        backoff = self._config.backoff
        attempt = 0
        while not stop.is_set():
            healthy = await self._session_until(stop)
            if stop.is_set():
                break
            if healthy:
                attempt = 0
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
            session.cancel()
            stopper.cancel()
            await asyncio.gather(session, stopper, return_exceptions=True)
        # An alert read and not journaled when stop came is named in the log (run: _report_lost).
        return False if session.cancelled() else session.result()

    def _open_channel(self) -> Any:
        address = self._config.address
        tls = self._config.tls
        if address.startswith("unix:"):
            return grpc.aio.insecure_channel(address)
        if tls is None:
            # config validation rejects this when the input is enabled; never fall back to plaintext
            raise ValueError(f"the TCP address {address} needs tls (Falco requires mutual TLS on TCP)")
        credentials = grpc.ssl_channel_credentials(
            root_certificates=Path(tls.ca_file).read_bytes(),
            private_key=Path(tls.key_file).read_bytes(),
            certificate_chain=Path(tls.cert_file).read_bytes(),
        )
        options: list[tuple[str, str | int]] = [("grpc.keepalive_time_ms", KEEPALIVE_MS)]
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
                response_deserializer=outputs_pb2.response.FromString,
            )()
            connected_at = time.monotonic()
            self.state.connected = True
            self.state.sessions += 1
            self._log.info("grpc input: subscribed to Falco outputs at %s", address)
            await self._pump(call)
        except grpc.aio.AioRpcError as exc:
            self._failed(f"{address}: {exc.code().name}: {exc.details()}")
        except _StreamEnded:
            self._failed(f"{address}: Falco ended the stream")
        finally:
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
            # Falco < 0.20 has no version service; the outputs service may still work.
            self.state.falco_version = None
            self._log.warning("grpc input: Falco at %s does not report its version", self._config.address)
            return
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

    async def _pump(self, call: Any) -> None:
        idle = asyncio.Event()  # set while no alert is waiting for the sink
        idle.set()
        reader = asyncio.create_task(self._read(call, idle))
        poller = asyncio.create_task(self._poll(call, idle))
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
            if self.state.journal_error is not None:
                await self._keep_unread(call)
            call.cancel()

    async def _poll(self, call: Any, idle: asyncio.Event) -> None:
        request = outputs_pb2.request()
        while True:
            await self._free_to_ask(idle)
            try:
                await call.write(request)
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                return  # the call is over; the reader sees its status
            self.state.polls += 1
            await asyncio.sleep(self._config.poll_interval_seconds)

    async def _free_to_ask(self, idle: asyncio.Event) -> None:
        """Until no alert waits for the sink and none is held for the journal."""
        while not (idle.is_set() and self._journal_takes_writes.is_set()):
            await idle.wait()
            await self._journal_takes_writes.wait()

    async def _read(self, call: Any, idle: asyncio.Event) -> None:
        """Read the stream and hand alerts on with up to IN_FLIGHT submits at once: each waits for
        its journal commit, and commits are grouped, so overlapping them multiplies the rate.
        Submits start in stream order and the journal keeps that order. With every slot busy the
        reader stops reading and the poller stops asking: the backlog stays in Falco's queue.
        While alerts are held for a journal that refused them, nothing more is read (a read
        already under way may bring one more, held with them: see the module)."""
        slots = asyncio.Semaphore(IN_FLIGHT)
        delivering: set[asyncio.Task[None]] = set()

        def finished(task: asyncio.Task[None]) -> None:
            delivering.discard(task)
            slots.release()
            if not task.cancelled() and task.exception() is not None:
                self._log.error("grpc input: an alert's delivery failed", exc_info=task.exception())
            if not delivering:
                idle.set()

        try:
            while True:
                await self._journal_takes_writes.wait()
                response = await call.read()
                if response is grpc.aio.EOF:
                    raise _StreamEnded
                self.state.received += 1
                idle.clear()
                await slots.acquire()
                task = asyncio.create_task(self._deliver(self.state.received, response))
                delivering.add(task)
                task.add_done_callback(finished)
        except asyncio.CancelledError:
            await self._let_deliveries_finish(delivering)
            raise
        except BaseException:
            # The stream broke: alerts already read are Falco's no more, so their submits finish
            # (those the journal refuses are held, and retried whatever the stream does).
            await asyncio.gather(*delivering, return_exceptions=True)
            raise

    async def _deliver(self, number: int, response: outputs_pb2.response) -> None:
        try:
            alert = alert_from_response(response)
        except AlertError as exc:
            self.state.rejected += 1
            self._sink.reject(InputName.GRPC, rejection_code(exc), str(exc))
            return
        self._submitting[number] = alert
        while self.state.journal_error is None:  # else held at once: the journal is refusing
            try:
                await self._sink.submit(alert, InputName.GRPC)
            except Overloaded as exc:
                # Keep the alert and keep not reading: the pressure stays on Falco's queue.
                await asyncio.sleep(exc.retry_after_seconds)
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
        """Keep an alert read and not journaled, to be retried (before anything more is read)."""
        self._held[number] = self._submitting.pop(number)
        self.state.held = len(self._held)
        self._journal_takes_writes.clear()
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

    async def _let_deliveries_finish(self, delivering: set[asyncio.Task[None]]) -> None:
        """The session is ending (the input stops): submits under way may finish (most are one
        commit away), for STOP_GRACE_SECONDS at most. An alert not confirmed by then is held:
        journaling it again is harmless (its content id makes it "already accepted"), and if the
        input stops, it is named as lost (:meth:`_report_lost`)."""
        try:
            if delivering:
                await asyncio.wait(set(delivering), timeout=STOP_GRACE_SECONDS)
        finally:
            for task in delivering:
                task.cancel()
            for number in list(self._submitting):
                self._hold(number)

    async def _keep_unread(self, call: Any) -> None:
        """The session ends while the journal refuses writes (at stop; a broken stream has nothing
        more to give): what Falco wrote into the stream and this input did not read is gone from
        its queue. Read it, for UNREAD_SECONDS at most, and hold it with the rest (named as lost
        if the input stops before the journal takes it)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + UNREAD_SECONDS
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError, TimeoutError):
            while (left := deadline - loop.time()) > 0:
                response = await asyncio.wait_for(call.read(), min(left, UNREAD_WAIT_SECONDS))
                if response is grpc.aio.EOF:
                    return
                self.state.received += 1
                self._keep_read(self.state.received, response)

    def _keep_read(self, number: int, response: outputs_pb2.response) -> None:
        try:
            self._submitting[number] = alert_from_response(response)
        except AlertError as exc:
            self.state.rejected += 1
            self._sink.reject(InputName.GRPC, rejection_code(exc), str(exc))
            return
        self._hold(number)

    def _report_lost(self) -> None:
        """The input stops: the alerts it read and never journaled are lost, logged with their ids."""
        lost = {**self._submitting, **self._held}
        self._submitting.clear()
        self._held.clear()
        self.state.held = 0
        if lost:
            self.state.lost += len(lost)
            self._metrics.lost.labels(InputName.GRPC.value).inc(len(lost))
            ids = [lost[number].alert_id for number in sorted(lost)]
            self._log.error(
                "grpc input: stopped with alerts read from Falco never journaled: they are lost",
                extra={
                    "count": len(ids),
                    "alert_ids": ids[:LOST_IDS_LOGGED],
                    "error": self.state.journal_error,
                },
            )
        # Nothing is held any more: a run started again reads, and says again if the journal refuses.
        self.state.journal_error = None
        self._journal_takes_writes.set()
