"""The gRPC input against the Falco-compatible server: real grpcio on both ends, unix socket and mTLS."""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import queue
import random
import re
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf import descriptor_pb2

from responder.alert import MAX_FIELD_VALUE_CHARS, MAX_OUTPUT_CHARS, Alert, Priority, build_alert
from responder.alert_json import alert_from_mapping
from responder.config import Backoff, ClientTLS, GrpcInput
from responder.ingest.grpc import (
    IN_FLIGHT,
    SILENT_FAILURES_SAID,
    STREAM_WINDOW_BYTES,
    UNREAD_BYTES_AT_MOST,
    GrpcAlertInput,
    alert_from_response,
    backoff_delay,
    parse_version,
)
from responder.ingest.proto import (
    generate,
    outputs_pb2,
    outputs_pb2_grpc,
    schema_pb2,
    version_pb2,
    version_pb2_grpc,
)
from responder.ingest.sink import Accepted, InputName, Overloaded
from responder.journal.process import JournalUnavailable
from responder.metrics import Metrics
from responder.sender import Proof, Sender
from simulators.falco_grpc_server import (
    FalcoGrpcServer,
    ServerTLS,
    response_from_alert,
    response_from_falco_json,
)
from simulators.pki import TestPKI as PKI
from simulators.pki import make_test_pki

POLL = 0.02
FAST_BACKOFF = Backoff(initial_seconds=0.01, max_seconds=0.05)
T0_NS = 1_738_058_400_123_456_789  # 2025-01-28T10:00:00.123456789Z

FALCO_JSON: dict[str, Any] = {
    "hostname": "node-1",
    "output": "2025-01-28T10:00:00.123456789+0000: Warning Shell in serving pod (ns=ml pod=triton-0)",
    "output_fields": {
        "container.id": "0123456789ab",
        "evt.time": T0_NS,
        "k8s.ns.name": "ml",
        "k8s.pod.name": "triton-0",
        "proc.tty": 34816,
        "user.loginuid": None,
        "proc.is_exe_upper_layer": True,
    },
    "priority": "Warning",
    "rule": "Shell in serving pod",
    "source": "syscall",
    "tags": ["serving_guard", "T1059", "container"],
    "time": "2025-01-28T10:00:00.123456789Z",
}


def make_response(rule: str = "Some rule", time_ns: int = T0_NS, **fields: Any) -> outputs_pb2.response:
    fields.setdefault("priority", "NOTICE")
    response = outputs_pb2.response(rule=rule, output=f"{rule} happened", **fields)
    response.time.seconds, response.time.nanos = divmod(time_ns, 1_000_000_000)
    return response


class RecordingSink:
    """An AlertSink that records; with ``gate`` cleared, submit blocks like a full pipeline; with
    ``refusing`` set, submit raises it, as the pipeline does when the journal refuses a write."""

    def __init__(self) -> None:
        self.alerts: list[tuple[Alert, InputName]] = []
        self.rejects: list[tuple[InputName, str, str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.waiting: Alert | None = None
        self.overload_first = 0
        self.refusing: Exception | None = None
        self.refused = 0

    async def submit(
        self, alert: Alert, source: InputName, *, wait_seconds: float | None = None, raw: bytes | None = None
    ) -> Accepted:
        if self.overload_first > 0:
            self.overload_first -= 1
            raise Overloaded(0.01, "pipeline full")
        if self.refusing is not None:
            self.refused += 1
            raise self.refusing
        self.waiting = alert
        await self.gate.wait()
        self.waiting = None
        self.alerts.append((alert, source))
        return Accepted(alert.alert_id, True)

    def reject(self, source: InputName, reason: str, detail: str) -> None:
        self.rejects.append((source, reason, detail))

    @property
    def rules(self) -> list[str]:
        return [alert.rule for alert, _ in self.alerts]


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait for a condition the code under test brings about (the timeout is only a safety net)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.005)


@asynccontextmanager
async def running(grpc_input: GrpcAlertInput) -> AsyncIterator[GrpcAlertInput]:
    stop = asyncio.Event()
    task = asyncio.create_task(grpc_input.run(stop))
    try:
        yield grpc_input
    finally:
        stop.set()
        # run() must return promptly once stop is set; the bound only keeps a bug from hanging CI.
        await asyncio.wait_for(task, 5)


@dataclass
class Falco:
    server: FalcoGrpcServer
    config: GrpcInput


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # unix socket paths are limited to ~107 bytes; pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="sg-grpc-") as directory:
        yield Path(directory)


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    return make_test_pki(tmp_path / "pki")


def client_tls(pki: PKI, *, rogue: bool = False, server_name: str | None = None) -> ClientTLS:
    pair = pki.rogue_client if rogue else pki.client
    return ClientTLS(
        ca_file=pki.ca_file, cert_file=pair.cert_file, key_file=pair.key_file, server_name=server_name
    )


def unix_falco(socket_dir: Path, version: str = "0.43.0") -> Falco:
    server = FalcoGrpcServer(f"unix://{socket_dir}/falco.sock", falco_version=version)
    server.start()
    config = GrpcInput(enabled=True, address=server.address, poll_interval_seconds=POLL, backoff=FAST_BACKOFF)
    return Falco(server, config)


def tls_falco(pki: PKI) -> Falco:
    server = FalcoGrpcServer(
        "127.0.0.1:0", tls=ServerTLS(pki.server.cert_file, pki.server.key_file, pki.ca_file)
    )
    server.start()
    config = GrpcInput(
        enabled=True,
        address=server.address,
        tls=client_tls(pki),
        poll_interval_seconds=POLL,
        backoff=FAST_BACKOFF,
    )
    return Falco(server, config)


@pytest.fixture(params=["unix", "mtls"])
def falco(request: pytest.FixtureRequest, socket_dir: Path, pki: PKI) -> Iterator[Falco]:
    made = unix_falco(socket_dir) if request.param == "unix" else tls_falco(pki)
    try:
        yield made
    finally:
        made.server.stop()


@pytest.fixture
def unix(socket_dir: Path) -> Iterator[Falco]:
    made = unix_falco(socket_dir)
    try:
        yield made
    finally:
        made.server.stop()


@pytest.fixture
def logger() -> logging.Logger:
    return logging.getLogger("test.grpc_input")


# -- alerts in ------------------------------------------------------------------------------------


async def test_alerts_flow_with_falco_fields(falco: Falco, logger: logging.Logger) -> None:
    sink = RecordingSink()
    grpc_input = GrpcAlertInput(falco.config, sink, logger)
    legacy = make_response("Legacy audit rule", source_deprecated="K8S_AUDIT", hostname="node-2")
    legacy.output_fields["ka.user.name"] = "<NA>"
    legacy.output_fields["ka.verb"] = "create"
    direct = alert_from_mapping({**FALCO_JSON, "rule": "From an Alert", "source": "k8saudit"})
    falco.server.publish_many([FALCO_JSON, legacy, direct])

    async with running(grpc_input):
        await eventually(lambda: len(sink.alerts) == 3, "three alerts")
        assert grpc_input.state.connected

    first, legacy_alert, direct_alert = (alert for alert, _ in sink.alerts)
    assert {source for _, source in sink.alerts} == {InputName.GRPC}
    assert first.rule == "Shell in serving pod"
    assert first.time_ns == T0_NS
    assert first.priority is Priority.WARNING
    assert first.source == "syscall"
    assert first.hostname == "node-1"
    assert first.tags == ("T1059", "container", "serving_guard")
    # gRPC carries text: the JSON null became <NA> on the wire and is dropped again here.
    assert first.fields == {
        "container.id": "0123456789ab",
        "k8s.ns.name": "ml",
        "k8s.pod.name": "triton-0",
        "proc.tty": "34816",
        "proc.is_exe_upper_layer": "true",
    }
    # The same Falco alert gets the same id whichever input it came through.
    assert first.alert_id == alert_from_mapping(FALCO_JSON).alert_id

    assert legacy_alert.source == "k8s_audit"  # string source empty: the deprecated enum's name
    assert legacy_alert.fields == {"ka.verb": "create"}
    assert legacy_alert.priority is Priority.NOTICE
    assert legacy_alert.hostname == "node-2"
    assert direct_alert.source == "k8saudit"  # a plugin source name passes through
    assert direct_alert.alert_id == direct.alert_id
    # Each names the Falco it came from (what Slack's warning about a possible forgery points at).
    if falco.config.tls is None:
        sender = Sender(falco.config.address, Proof.SOCKET)
    else:
        sender = Sender(falco.config.address, Proof.SERVER_CERTIFICATE)
    assert [alert.sender for alert, _ in sink.alerts] == [sender] * 3
    assert sink.rejects == []
    assert falco.server.pending() == 0


@pytest.mark.parametrize(("version", "deprecated"), [("0.43.0", True), ("0.42.1", False)])
async def test_logs_falco_version_and_warns_on_deprecated_grpc(
    socket_dir: Path, logger: logging.Logger, caplog: pytest.LogCaptureFixture, version: str, deprecated: bool
) -> None:
    falco = unix_falco(socket_dir, version)
    grpc_input = GrpcAlertInput(falco.config, RecordingSink(), logger)
    try:
        with caplog.at_level(logging.INFO, logger=logger.name):
            async with running(grpc_input):
                await eventually(lambda: grpc_input.state.connected, "connected")
    finally:
        falco.server.stop()
    engine = "0.58.0" if version.startswith("0.43") else "0.57.0"
    assert grpc_input.state.falco_version == version
    assert f"connected to Falco {version} (engine {engine})" in caplog.text
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("removed in 0.44" in message for message in warnings) is deprecated


async def test_a_grpc_server_that_is_not_falco_is_not_taken_for_an_old_falco(
    socket_dir: Path, logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    """Every Falco with the outputs service has the version service: without it, another service
    answers at the address (a wrong port), and the input says so instead of "subscribed"."""
    server = FalcoGrpcServer(f"unix://{socket_dir}/falco.sock", falco_version=None)
    quick = Backoff(initial_seconds=0.01)
    config = GrpcInput(enabled=True, address=server.address, poll_interval_seconds=POLL, backoff=quick)
    sink = RecordingSink()
    server.publish(make_response("Stays queued"))
    grpc_input = GrpcAlertInput(config, sink, logger)
    with server, caplog.at_level(logging.INFO, logger=logger.name):
        async with running(grpc_input):
            await eventually(lambda: grpc_input.state.failures >= 2, "sessions refused")
    assert grpc_input.state.sessions == 0 and sink.alerts == [] and server.pending() == 1
    assert f"{server.address} answers gRPC but is not Falco (it has no falco.version.service)" in (
        grpc_input.state.last_error or ""
    )
    assert "subscribed" not in caplog.text


def reconnecting_at_once(address: str) -> GrpcInput:
    """An input whose reconnects come milliseconds apart (the backoff capped at 4 ms)."""
    return GrpcInput(
        enabled=True,
        address=address,
        poll_interval_seconds=POLL,
        backoff=Backoff(initial_seconds=0.001, max_seconds=0.004),
    )


async def test_no_falco_at_the_address_is_said_as_an_error_once_with_what_to_check(
    socket_dir: Path, logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    """Falco 0.44 has no gRPC output: a responder reading only gRPC would get no alert, logging a
    warning per try. After a few tries in a row it says, once, that it gets no alerts and why."""
    address = f"unix://{socket_dir}/falco.sock"
    config = reconnecting_at_once(address)
    grpc_input = GrpcAlertInput(config, RecordingSink(), logger)
    with caplog.at_level(logging.WARNING, logger=logger.name):
        async with running(grpc_input):
            await eventually(lambda: grpc_input.state.failures >= 3 * SILENT_FAILURES_SAID, "failed tries")
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, errors  # said again only after SILENT_SAID_AGAIN_SECONDS
    tries = SILENT_FAILURES_SAID
    said = f"grpc input: no alerts: no Falco gRPC output answered at {address} in {tries} tries"
    assert errors[0].startswith(said), errors[0]
    assert "Falco 0.44 removed the gRPC output" in errors[0] and "grpc_output.enabled" in errors[0]
    assert grpc_input.state.no_stream_since is not None


async def test_malformed_response_is_rejected_and_stream_continues(
    unix: Falco, logger: logging.Logger
) -> None:
    sink = RecordingSink()
    grpc_input = GrpcAlertInput(unix.config, sink, logger)
    bad_nanos = make_response("Bad nanos")
    bad_nanos.time.nanos = 1_000_000_000
    unix.server.publish_many(
        [
            make_response(rule=""),
            make_response("Epoch is a valid time", time_ns=0),
            outputs_pb2.response(rule="No time", priority="NOTICE"),
            make_response("Bad priority", priority=99),
            bad_nanos,
            make_response("Bad source enum", source_deprecated=42),
            make_response("Bad field", output_fields={"x" * 300: "too long a name"}),
            make_response("Good one"),
        ]
    )
    async with running(grpc_input):
        await eventually(lambda: len(sink.rejects) == 6 and len(sink.alerts) == 2, "rejects and alerts")
        assert grpc_input.state.sessions == 1  # one stream carried both the bad and the good alerts
    assert sink.rules == ["Epoch is a valid time", "Good one"]
    assert [(source, reason) for source, reason, _ in sink.rejects] == [
        (InputName.GRPC, "bad_rule"),
        (InputName.GRPC, "bad_time"),
        (InputName.GRPC, "bad_priority"),
        (InputName.GRPC, "bad_time"),
        (InputName.GRPC, "bad_source"),
        (InputName.GRPC, "bad_output_fields"),
    ]
    assert "'rule'" in sink.rejects[0][2]
    assert "nanos" in sink.rejects[3][2]
    assert grpc_input.state.rejected == 6
    assert grpc_input.state.submitted == 2


# -- reconnects and backoff ---------------------------------------------------------------------------


async def test_reconnects_after_falco_restart_without_losing_queued_alerts(
    falco: Falco, logger: logging.Logger
) -> None:
    sink = RecordingSink()
    grpc_input = GrpcAlertInput(falco.config, sink, logger)
    falco.server.publish(make_response("Before restart"))
    async with running(grpc_input):
        await eventually(lambda: sink.rules == ["Before restart"], "first alert")
        falco.server.stop()
        assert not falco.server.running
        await eventually(lambda: not grpc_input.state.connected, "disconnect noticed")
        falco.server.publish_many([make_response("While down 1"), make_response("While down 2")])
        await eventually(lambda: grpc_input.state.failures >= 2, "reconnect attempts against a dead socket")
        falco.server.start()
        await eventually(lambda: len(sink.alerts) == 3, "alerts queued while down")
        assert grpc_input.state.connected
    assert sink.rules == ["Before restart", "While down 1", "While down 2"]
    assert grpc_input.state.sessions == 2
    assert falco.server.version_calls == 2


class RecordingRandom(random.Random):
    """Returns the top of each jitter range, so the backoff ceilings can be read back."""

    def __init__(self) -> None:
        super().__init__(0)
        self.ceilings: list[float] = []

    def uniform(self, a: float, b: float) -> float:
        self.ceilings.append(b)
        return b


def test_backoff_schedule_is_exponential_capped_and_jittered() -> None:
    top = RecordingRandom()
    schedule = [backoff_delay(attempt, 0.5, 30.0, top) for attempt in range(9)]
    assert schedule == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert backoff_delay(10**9, 0.5, 30.0, top) == 30.0  # no overflow for a long outage

    rng = random.Random(7)
    for attempt in range(40):
        ceiling = min(30.0, 0.5 * 2**attempt)
        delays = {backoff_delay(attempt, 0.5, 30.0, rng) for _ in range(20)}
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
        assert len(delays) > 1  # jittered


async def test_backoff_grows_while_down_and_resets_after_a_healthy_stream(
    socket_dir: Path, logger: logging.Logger
) -> None:
    address = f"unix://{socket_dir}/falco.sock"
    config = reconnecting_at_once(address)
    top = RecordingRandom()
    sink = RecordingSink()
    grpc_input = GrpcAlertInput(config, sink, logger, rng=top)
    server = FalcoGrpcServer(address)
    async with running(grpc_input):
        await eventually(lambda: len(top.ceilings) >= 5, "reconnect attempts while Falco is down")
        assert top.ceilings[:5] == [0.001, 0.002, 0.004, 0.004, 0.004]
        server.publish(make_response("Healthy"))
        server.start()
        try:
            await eventually(lambda: sink.rules == ["Healthy"], "alert after Falco came up")
            attempts_before = len(top.ceilings)
            server.stop()
            await eventually(lambda: len(top.ceilings) > attempts_before, "reconnect after the stream broke")
        finally:
            server.stop()
    assert top.ceilings[attempts_before] == 0.001


# -- mutual TLS -----------------------------------------------------------------------------------------


def test_tcp_without_tls_is_refused_like_falco() -> None:
    with pytest.raises(ValueError, match="mutual TLS"):
        FalcoGrpcServer("127.0.0.1:0")


@pytest.mark.parametrize("client", ["plaintext", "no-cert", "rogue-cert", "wrong-server-ca"])
async def test_mtls_server_refuses_clients_without_a_trusted_certificate(pki: PKI, client: str) -> None:
    falco = tls_falco(pki)
    try:
        if client == "plaintext":
            channel = grpc.aio.insecure_channel(falco.server.address)
        else:
            ca = Path(pki.rogue_ca_file if client == "wrong-server-ca" else pki.ca_file).read_bytes()
            pair = pki.rogue_client if client == "rogue-cert" else pki.client
            credentials = grpc.ssl_channel_credentials(
                root_certificates=ca,
                private_key=None if client == "no-cert" else Path(pair.key_file).read_bytes(),
                certificate_chain=None if client == "no-cert" else Path(pair.cert_file).read_bytes(),
            )
            channel = grpc.aio.secure_channel(falco.server.address, credentials)
        async with channel:
            ask = channel.unary_unary(
                "/falco.version.service/version",
                request_serializer=version_pb2.request.SerializeToString,
                response_deserializer=version_pb2.response.FromString,
            )
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await ask(version_pb2.request(), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert falco.server.version_calls == 0
    finally:
        falco.server.stop()


async def test_input_with_rogue_certificate_never_connects_and_keeps_retrying(
    pki: PKI, logger: logging.Logger
) -> None:
    falco = tls_falco(pki)
    falco.server.publish(make_response("Must stay queued"))
    config = falco.config.model_copy(update={"tls": client_tls(pki, rogue=True)})
    sink = RecordingSink()
    grpc_input = GrpcAlertInput(config, sink, logger)
    try:
        async with running(grpc_input):
            await eventually(lambda: grpc_input.state.failures >= 3, "repeated refused connects")
            assert not grpc_input.state.connected
    finally:
        falco.server.stop()
    assert grpc_input.state.sessions == 0
    assert grpc_input.state.last_error is not None
    assert "UNAVAILABLE" in grpc_input.state.last_error
    assert sink.alerts == []
    assert falco.server.pending() == 1


async def test_mtls_with_server_name_override(pki: PKI, logger: logging.Logger) -> None:
    falco = tls_falco(pki)
    config = falco.config.model_copy(update={"tls": client_tls(pki, server_name="localhost")})
    sink = RecordingSink()
    falco.server.publish(make_response("Over mTLS"))
    try:
        async with running(GrpcAlertInput(config, sink, logger)):
            await eventually(lambda: sink.rules == ["Over mTLS"], "alert over mTLS")
    finally:
        falco.server.stop()
    # The name the server's certificate was verified against is the sender's.
    (alert, _), *_ = sink.alerts
    assert alert.sender == Sender(config.address, Proof.SERVER_CERTIFICATE, ("localhost",))
    assert alert.sender.text() == f"Falco gRPC at {config.address} (server certificate localhost)"


async def test_unreadable_tls_file_is_a_logged_failure_not_a_crash(
    pki: PKI, tmp_path: Path, logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    missing = str(tmp_path / "missing.key")
    config = GrpcInput(
        enabled=True,
        address="127.0.0.1:9",
        tls=ClientTLS(ca_file=pki.ca_file, cert_file=pki.client.cert_file, key_file=missing),
        poll_interval_seconds=POLL,
        backoff=FAST_BACKOFF,
    )
    grpc_input = GrpcAlertInput(config, RecordingSink(), logger)
    with caplog.at_level(logging.WARNING, logger=logger.name):
        async with running(grpc_input):
            await eventually(lambda: grpc_input.state.failures >= 2, "retries")
    assert missing in caplog.text


# -- backpressure and stop ----------------------------------------------------------------------------


async def test_blocked_sink_stops_consumption_and_falco_keeps_the_rest(
    unix: Falco, logger: logging.Logger
) -> None:
    sink = RecordingSink()
    sink.gate.clear()
    grpc_input = GrpcAlertInput(unix.config, sink, logger)
    unix.server.publish(make_response("Alert 0"))
    async with running(grpc_input):
        await eventually(lambda: sink.waiting is not None, "sink blocked on the first alert")
        # A request the poller wrote just before the sink blocked may still be on its way to Falco
        # (which answers each with its whole queue): let it land before publishing more.
        while True:
            landed = unix.server.sub_requests
            await asyncio.sleep(POLL * 5)
            if unix.server.sub_requests == landed:
                break
        unix.server.publish_many([make_response(f"Alert {n}") for n in range(1, 21)])
        requests_while_blocked = unix.server.sub_requests
        # Many poll intervals pass; a blocked sink means no new request, so Falco keeps its queue.
        await asyncio.sleep(POLL * 10)
        assert unix.server.sub_requests == requests_while_blocked
        assert unix.server.pending() == 20
        assert sink.alerts == []
        sink.gate.set()
        await eventually(lambda: len(sink.alerts) == 21, "all alerts once the sink has room")
    assert sink.rules == [f"Alert {n}" for n in range(21)]
    assert unix.server.pending() == 0


async def test_falco_writes_no_more_than_the_flow_control_window_ahead_of_a_blocked_reader(
    falco: Falco, logger: logging.Logger
) -> None:
    """What Falco takes from its queue and this input has not read is what a stop can leave in the
    stream: flow control bounds it (grpc's BDP probe, on by default, would grow the window to
    megabytes: thousands of alerts). Over a unix socket and over mutual TLS alike."""
    sent = 5_000
    published = [make_response(f"Ahead {n:05d}") for n in range(sent)]
    wire_size = 5 + len(published[0].SerializeToString())  # gRPC's length prefix + the message
    sink = RecordingSink()
    sink.gate.clear()  # every submit waits: the reader stops once IN_FLIGHT places are taken
    grpc_input = GrpcAlertInput(falco.config, sink, logger)
    falco.server.publish_many(published)
    async with running(grpc_input):
        await eventually(lambda: grpc_input.state.received == IN_FLIGHT, "every place taken")
        await asyncio.sleep(0.5)  # Falco writes until the window is full
        ahead = falco.server.delivered - grpc_input.state.received
        assert falco.server.pending() > 0
        sink.gate.set()
    assert 0 < ahead <= UNREAD_BYTES_AT_MOST // wire_size + 1
    assert ahead * wire_size >= STREAM_WINDOW_BYTES // 2  # the window is not so small it starves


async def test_an_alert_larger_than_the_flow_control_window_is_read_whole(
    falco: Falco, logger: logging.Logger
) -> None:
    # As large as the alert limits allow, a few times over the window.
    fields = {f"field.{n}": f"{n % 10}" * MAX_FIELD_VALUE_CHARS for n in range(12)}
    big = make_response("Big alert", output_fields=fields)
    big.output = "x" * MAX_OUTPUT_CHARS
    published = [make_response("Before"), big, make_response("After")]
    assert len(big.SerializeToString()) > 3 * UNREAD_BYTES_AT_MOST
    sink = RecordingSink()
    falco.server.publish_many(published)
    async with running(GrpcAlertInput(falco.config, sink, logger)):
        await eventually(lambda: len(sink.alerts) == 3, "three alerts")
    assert sink.rules == ["Before", "Big alert", "After"]
    assert sink.alerts[1][0].fields == fields and sink.alerts[1][0].output == big.output
    assert sink.rejects == []


async def test_overloaded_sink_keeps_the_alert_and_retries(unix: Falco, logger: logging.Logger) -> None:
    sink = RecordingSink()
    sink.overload_first = 2
    unix.server.publish(make_response("Retried"))
    async with running(GrpcAlertInput(unix.config, sink, logger)):
        await eventually(lambda: sink.rules == ["Retried"], "alert accepted after Overloaded")
    assert sink.overload_first == 0
    assert sink.rejects == []


async def test_stop_returns_promptly_while_the_sink_is_blocked(
    unix: Falco, logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    sink = RecordingSink()
    sink.gate.clear()
    metrics = Metrics()
    grpc_input = GrpcAlertInput(unix.config, sink, logger, metrics=metrics)
    unix.server.publish(make_response("Never accepted"))
    with caplog.at_level(logging.INFO, logger=logger.name):
        async with running(grpc_input):
            await eventually(lambda: sink.waiting is not None, "sink blocked")
            waiting = sink.waiting
    assert not grpc_input.state.connected
    assert sink.alerts == []
    # Read from Falco, never journaled: named as lost, not dropped without a word.
    assert waiting is not None and lost_ids(caplog) == [waiting.alert_id]
    assert grpc_input.state.lost == 1
    assert metric(metrics, "serving_guard_alerts_lost_total") == 1


def lost_ids(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The alert ids the error lines about lost alerts name."""
    return [
        alert_id
        for record in caplog.records
        if record.levelno == logging.ERROR and "lost" in record.getMessage()
        for alert_id in record.__dict__["alert_ids"]
    ]


def metric(metrics: Metrics, name: str) -> float:
    """The gRPC input's sample of a counter."""
    value = metrics.registry.get_sample_value(name, {"input": "grpc"})
    return 0.0 if value is None else value


async def let_requests_land(server: FalcoGrpcServer) -> None:
    """A request the poller wrote just before reading stopped may still be on its way to Falco
    (which answers each with its whole queue): wait until none has come for a while."""
    while True:
        landed = server.sub_requests
        await asyncio.sleep(POLL * 5)
        if server.sub_requests == landed:
            return


async def test_a_journal_failure_stops_the_reading_keeps_what_was_read_and_resumes(
    unix: Falco, logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    sink = RecordingSink()
    metrics = Metrics()
    grpc_input = GrpcAlertInput(unix.config, sink, logger, metrics=metrics)
    unix.server.publish_many([make_response(f"Before {n}") for n in range(3)])
    with caplog.at_level(logging.INFO, logger=logger.name):
        async with running(grpc_input):
            await eventually(lambda: len(sink.alerts) == 3, "alerts journaled before the failure")
            sink.refusing = JournalUnavailable("journal writer process exited with code -9")
            unix.server.publish(make_response("Refused"))
            await eventually(lambda: grpc_input.state.held == 1, "the refused alert held")
            await let_requests_land(unix.server)
            unix.server.publish_many([make_response(f"While refused {n}") for n in range(10)])
            asked = unix.server.sub_requests
            await eventually(lambda: sink.refused >= 5, "the held alert retried")
            # Nothing more asked for or read: Falco keeps its queue while the journal refuses.
            assert (unix.server.sub_requests, unix.server.pending()) == (asked, 10)
            assert grpc_input.state.received == 4
            assert grpc_input.state.journal_error == (
                "JournalUnavailable: journal writer process exited with code -9"
            )
            sink.refusing = None
            await eventually(lambda: len(sink.alerts) == 14, "every alert once the journal takes writes")
            assert grpc_input.state.journal_error is None and grpc_input.state.held == 0
    assert sink.rules == [
        *(f"Before {n}" for n in range(3)),
        "Refused",
        *(f"While refused {n}" for n in range(10)),
    ]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1  # once for the outage, not once per alert or retry
    assert "reading from Falco stops" in errors[0].getMessage()
    assert errors[0].__dict__["error"] == "JournalUnavailable: journal writer process exited with code -9"
    assert any("takes writes again" in r.getMessage() for r in caplog.records)
    assert metric(metrics, "serving_guard_input_journal_stalls_total") == 1
    assert (grpc_input.state.journal_stalls, grpc_input.state.lost) == (1, 0)
    assert unix.server.pending() == 0


async def test_alerts_read_and_never_journaled_are_named_when_the_input_stops(
    unix: Falco, logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    sink = RecordingSink()
    sink.refusing = sqlite3.OperationalError("database or disk is full")
    metrics = Metrics()
    grpc_input = GrpcAlertInput(unix.config, sink, logger, metrics=metrics)
    published = [make_response(f"Refused {n}") for n in range(5)]
    unix.server.publish_many(published)
    with caplog.at_level(logging.WARNING, logger=logger.name):
        async with running(grpc_input):
            await eventually(lambda: grpc_input.state.journal_error is not None, "the journal refusing")
            await eventually(lambda: sink.refused >= 3, "held alerts retried")
    # Falco sent all five (one answer to one request); whether read or still in the stream when
    # the input stopped, each is named.
    assert unix.server.pending() == 0 and sink.alerts == []
    assert sorted(lost_ids(caplog)) == sorted(alert_from_response(r).alert_id for r in published)
    assert grpc_input.state.lost == 5
    assert metric(metrics, "serving_guard_alerts_lost_total") == 5


async def test_stop_interrupts_a_connect_that_hangs(socket_dir: Path, logger: logging.Logger) -> None:
    # A peer that accepts and never speaks: the version call would wait for its 10 s deadline.
    accepted = asyncio.Event()
    silent: list[asyncio.StreamWriter] = []

    async def accept_and_stay_silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent.append(writer)
        accepted.set()

    path = socket_dir / "silent.sock"
    listener = await asyncio.start_unix_server(accept_and_stay_silent, path=str(path))
    config = GrpcInput(enabled=True, address=f"unix://{path}", poll_interval_seconds=POLL)
    grpc_input = GrpcAlertInput(config, RecordingSink(), logger)
    try:
        async with running(grpc_input):  # exits only once run() has returned
            await asyncio.wait_for(accepted.wait(), 5)
        assert grpc_input.state.sessions == 0
    finally:
        for writer in silent:
            writer.close()
        listener.close()
        await listener.wait_closed()


# -- the simulator behaves like Falco (checked with the generated stubs) ----------------------------------


def test_get_drains_the_shared_queue_then_ends_ok(unix: Falco) -> None:
    unix.server.publish_many([make_response(f"Get {n}") for n in range(3)])
    assert not unix.server.wait_drained(timeout=0)
    with grpc.insecure_channel(unix.server.address) as channel:
        stub = outputs_pb2_grpc.serviceStub(channel)
        call = stub.get(outputs_pb2.request(), timeout=5)
        assert [response.rule for response in call] == ["Get 0", "Get 1", "Get 2"]
        assert call.code() == grpc.StatusCode.OK
        # One shared queue: a second consumer finds nothing left (no fan-out, no retransmission).
        assert list(stub.get(outputs_pb2.request(), timeout=5)) == []
    assert unix.server.wait_drained(timeout=0)
    assert (unix.server.get_calls, unix.server.delivered) == (2, 3)


def test_sub_drains_after_each_client_message(unix: Falco) -> None:
    requests: queue.Queue[outputs_pb2.request | None] = queue.Queue()

    def request_stream() -> Iterator[outputs_pb2.request]:
        while (request := requests.get()) is not None:
            yield request

    unix.server.publish_many([make_response("Sub 0"), make_response("Sub 1")])
    with grpc.insecure_channel(unix.server.address) as channel:
        responses = outputs_pb2_grpc.serviceStub(channel).sub(request_stream(), timeout=10)
        assert unix.server.pending() == 2  # nothing moves before the client asks
        requests.put(outputs_pb2.request())
        assert [next(responses).rule, next(responses).rule] == ["Sub 0", "Sub 1"]
        unix.server.publish(make_response("Sub 2"))
        requests.put(outputs_pb2.request())
        assert next(responses).rule == "Sub 2"
        requests.put(None)
        assert list(responses) == []
        assert responses.code() == grpc.StatusCode.OK
    assert (unix.server.sub_requests, unix.server.open_streams) == (2, 0)


def test_version_service_answers_like_falco(socket_dir: Path) -> None:
    server = FalcoGrpcServer(f"unix://{socket_dir}/falco.sock", falco_version="0.42.1-rc1+abc123")
    with server, grpc.insecure_channel(server.address) as channel:
        reply = version_pb2_grpc.serviceStub(channel).version(version_pb2.request(), timeout=5)
    assert not server.running
    assert (reply.version, reply.major, reply.minor, reply.patch) == ("0.42.1-rc1+abc123", 0, 42, 1)
    assert (reply.prerelease, reply.build) == ("rc1", "abc123")
    assert (reply.engine_version, reply.engine_major, reply.engine_minor, reply.engine_patch) == (
        "0.57.0",
        0,
        57,
        0,
    )


# -- conversion -----------------------------------------------------------------------------------------


def test_response_conversion_keeps_nanoseconds_and_fields() -> None:
    response = response_from_falco_json(FALCO_JSON)
    assert (response.time.seconds, response.time.nanos) == (1_738_058_400, 123_456_789)
    assert "evt.time" not in response.output_fields  # Falco's gRPC fields hold only the rule's output
    assert response.output_fields["user.loginuid"] == "<NA>"
    assert response.source_deprecated == 0  # SYSCALL
    alert = alert_from_response(response)
    assert alert.time_ns == T0_NS
    assert "user.loginuid" not in alert.fields
    plugin = response_from_falco_json({**FALCO_JSON, "source": "k8saudit"})
    assert plugin.source_deprecated == 3  # PLUGIN, as Falco fills it for unknown source names


def test_alert_round_trips_through_a_response() -> None:
    alert = build_alert(
        rule="Round trip",
        priority="critical",
        time_ns=T0_NS,
        source="internal",
        output="out",
        fields={"n": 3, "flag": False, "name": "x"},
        tags=["b", "a"],
        hostname="node-9",
    )
    back = alert_from_response(response_from_alert(alert))
    assert back.alert_id == alert.alert_id
    assert back.fields == {"n": "3", "flag": "false", "name": "x"}
    assert (back.priority, back.source, back.tags, back.hostname) == (
        Priority.CRITICAL,
        "internal",
        ("a", "b"),
        "node-9",
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0.43.0", (0, 43)), ("0.43.0-rc1", (0, 43)), ("1.2.3+build", (1, 2)), ("dev", None), ("", None)],
)
def test_parse_version(text: str, expected: tuple[int, int] | None) -> None:
    assert parse_version(text) == expected


# -- the committed generated code matches the .proto files ---------------------------------------------


def _without_json_names(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
    # protoc's descriptor sets carry json_name; the descriptors embedded in *_pb2.py do not.
    for message in messages:
        for field in message.field:
            field.ClearField("json_name")
        _without_json_names(message.nested_type)


def test_committed_descriptors_match_the_proto_files(tmp_path: Path) -> None:
    descriptor_set = tmp_path / "falco.pb"
    generate.compile_descriptor_set(descriptor_set)
    compiled = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
    modules = {"outputs.proto": outputs_pb2, "schema.proto": schema_pb2, "version.proto": version_pb2}
    assert sorted(file.name for file in compiled.file) == sorted(modules)
    for file in compiled.file:
        _without_json_names(file.message_type)
        committed = descriptor_pb2.FileDescriptorProto.FromString(modules[file.name].DESCRIPTOR.serialized_pb)
        assert committed == file, f"{file.name} changed: run python -m responder.ingest.proto.generate"


def test_committed_generated_files_are_what_the_generator_writes(tmp_path: Path) -> None:
    committed_tools = re.search(
        r"GRPC_GENERATED_VERSION = '([^']+)'", (generate.PROTO_DIR / "outputs_pb2_grpc.py").read_text()
    )
    assert committed_tools is not None
    installed_tools = importlib.metadata.version("grpcio-tools")
    if installed_tools != committed_tools.group(1):
        pytest.skip(
            f"generated with grpcio-tools {committed_tools.group(1)}, {installed_tools} is installed: "
            "the byte comparison needs the same protoc (the descriptor test above still applies)"
        )
    fresh = generate.generate(tmp_path)
    assert [path.name for path in fresh] == generate.generated_names()
    committed_names = sorted(
        path.name for path in generate.PROTO_DIR.iterdir() if re.search(r"_pb2(_grpc)?\.pyi?$", path.name)
    )
    assert committed_names == sorted(generate.generated_names())
    for path in fresh:
        committed = (generate.PROTO_DIR / path.name).read_text()
        assert committed == path.read_text(), (
            f"{path.name} is stale: run python -m responder.ingest.proto.generate"
        )
