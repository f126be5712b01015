"""Falco's gRPC messages with text that is not UTF-8: Falco's C++ side sends them (an attacker in a
pod chooses the bytes of a command line or a path), Python's protobuf refuses them. The alert must
arrive all the same, its bad bytes replaced and said, never dropped with a traceback."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import grpc
import pytest

from responder.alert import AlertError, rejection_code, unicode_problem
from responder.config import GrpcInput
from responder.ingest.grpc import SUB_METHOD, GrpcAlertInput, alert_from_response
from responder.ingest.grpc_payload import parse_response
from responder.ingest.proto import outputs_pb2
from responder.ingest.sink import InputName
from responder.metrics import Metrics
from simulators.falco_grpc_server import FalcoGrpcServer
from tests.ingest.test_grpc import FAST_BACKOFF, POLL, RecordingSink, eventually, make_response, running


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        low, number = number & 0x7F, number >> 7
        out.append(low | (0x80 if number else 0))
        if not number:
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """One length-delimited field (a string, bytes or message) in protobuf's wire format."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def output_field(name: bytes, value: bytes) -> bytes:
    """One entry of ``response.output_fields`` (field 6, a map: key 1, value 2)."""
    return field(6, field(1, name) + field(2, value))


# A later occurrence of a text field replaces the earlier one; map entries add up.
RULE, OUTPUT, HOSTNAME, TAGS = 4, 5, 7, 8


def with_bytes(response: outputs_pb2.response, *extra: bytes) -> bytes:
    return response.SerializeToString() + b"".join(extra)


class ByteFalco(FalcoGrpcServer):
    """The simulator, also sending messages given as bytes (as Falco's C++ side may write them)."""

    def publish_bytes(self, data: bytes) -> None:
        with self._lock:
            cast(Any, self._queue).append(data)

    def _handlers(self) -> Any:
        def serialize(item: outputs_pb2.response | bytes) -> bytes:
            return item if isinstance(item, bytes) else item.SerializeToString()

        sub = grpc.stream_stream_rpc_method_handler(
            self._sub, request_deserializer=outputs_pb2.request.FromString, response_serializer=serialize
        )
        return _SubAsBytes(super()._handlers(), sub)


class _SubAsBytes:
    def __init__(self, inner: Any, sub: Any) -> None:
        self._inner, self._sub = inner, sub

    def service(self, handler_call_details: Any) -> Any:
        return (
            self._sub
            if handler_call_details.method == SUB_METHOD
            else self._inner.service(handler_call_details)
        )


@pytest.fixture
def falco() -> Iterator[ByteFalco]:
    with tempfile.TemporaryDirectory(prefix="sg-grpc-") as directory:
        server = ByteFalco(f"unix://{Path(directory)}/falco.sock")
        server.start()
        try:
            yield server
        finally:
            server.stop()


async def test_an_alert_with_text_that_is_not_utf8_is_journaled_with_it_replaced(
    falco: ByteFalco, caplog: pytest.LogCaptureFixture
) -> None:
    logger = logging.getLogger("test.grpc_payload")
    config = GrpcInput(enabled=True, address=falco.address, poll_interval_seconds=POLL, backoff=FAST_BACKOFF)
    sink = RecordingSink()
    metrics = Metrics()
    grpc_input = GrpcAlertInput(config, sink, logger, metrics=metrics)
    attacker = make_response("Shell in serving pod", hostname="node-1")
    attacker.output_fields["k8s.pod.name"] = "triton-0"
    falco.publish(make_response("Alert 0"))
    falco.publish_bytes(
        with_bytes(
            attacker,
            output_field(b"proc.cmdline", b"sh -c \xff\xfe"),
            field(OUTPUT, b"Shell in serving pod (cmdline=sh -c \xff\xfe)"),
            field(TAGS, b"T1059\xc3"),
        )
    )
    falco.publish_bytes(b"\x0a\xff\xff\xff\x0f")  # no falco.outputs.response at all
    falco.publish(make_response("Alert 3"))
    with caplog.at_level(logging.INFO, logger=logger.name):
        async with running(grpc_input):
            await eventually(
                lambda: len(sink.alerts) == 3 and len(sink.rejects) == 1, "alerts and the refusal"
            )

    assert sink.rules == ["Alert 0", "Shell in serving pod", "Alert 3"]
    kept = sink.alerts[1][0]
    assert kept.fields["proc.cmdline"] == "sh -c \ufffd\ufffd"
    assert kept.fields["k8s.pod.name"] == "triton-0"
    assert kept.output == "Shell in serving pod (cmdline=sh -c \ufffd\ufffd)"
    assert "T1059\ufffd" in kept.tags and kept.hostname == "node-1"
    # The alert Falco's JSON output gives (libsinsp replaces such bytes there): the same content id.
    same = make_response("Shell in serving pod", hostname="node-1", tags=["T1059\ufffd"])
    same.output = "Shell in serving pod (cmdline=sh -c \ufffd\ufffd)"
    same.output_fields["k8s.pod.name"] = "triton-0"
    same.output_fields["proc.cmdline"] = "sh -c \ufffd\ufffd"
    assert kept.alert_id == alert_from_response(same).alert_id
    # Said, with the alert's id and what was replaced; nothing crashed.
    (said,) = [r for r in caplog.records if "not UTF-8" in r.getMessage()]
    assert said.levelno == logging.WARNING
    assert said.__dict__["alert_id"] == kept.alert_id
    assert said.__dict__["replaced"] == ["output", "output_fields.proc.cmdline", "tags"]
    assert [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []
    # The bytes that are no message are refused, counted and said, and the stream goes on.
    ((source, reason, detail),) = sink.rejects
    assert (source, reason) == (InputName.GRPC, "bad_body")
    assert "not a falco.outputs.response message" in detail
    assert (grpc_input.state.received, grpc_input.state.rejected, grpc_input.state.submitted) == (4, 1, 3)
    assert grpc_input.state.sessions == 1
    assert falco.pending() == 0


# -- parse_response ---------------------------------------------------------------------------------


def test_a_valid_message_parses_as_protobuf_does() -> None:
    response = make_response("Valid", hostname="node-1", tags=["a", "b"], source="syscall")
    response.output_fields["proc.cmdline"] = "sh -c 'ünïcode'"
    parsed, replaced = parse_response(response.SerializeToString())
    assert (parsed, replaced) == (response, ())


def test_every_text_field_is_kept_replaced_and_the_rest_carried() -> None:
    response = make_response(
        "Rule", priority="CRITICAL", source_deprecated="K8S_AUDIT", time_ns=1_234_567_890_123
    )
    data = with_bytes(
        response,
        field(RULE, b"Rule \xff"),
        field(HOSTNAME, b"node\xc0"),
        output_field(b"name\xfe", b"value"),
        field(9, b"k8s\xffaudit"),
    )
    parsed, replaced = parse_response(data)
    assert replaced == ("rule", "output_fields", "hostname", "source")
    assert (parsed.rule, parsed.hostname, parsed.source) == ("Rule \ufffd", "node\ufffd", "k8s\ufffdaudit")
    assert dict(parsed.output_fields) == {"name\ufffd": "value"}
    assert (parsed.priority, parsed.source_deprecated) == (response.priority, response.source_deprecated)
    assert (parsed.time.seconds, parsed.time.nanos) == (1234, 567_890_123)
    assert alert_from_response(parsed).rule == "Rule \ufffd"


def test_a_repeated_field_name_keeps_its_last_value_as_a_map_does() -> None:
    first_valid = with_bytes(
        make_response("Map"), output_field(b"k", b"first"), output_field(b"k", b"second")
    )
    assert dict(outputs_pb2.response.FromString(first_valid).output_fields) == {"k": "second"}
    data = with_bytes(make_response("Map"), output_field(b"k", b"first"), output_field(b"k", b"second \xff"))
    parsed, replaced = parse_response(data)
    assert dict(parsed.output_fields) == {"k": "second \ufffd"}
    assert replaced == ("output_fields.k",)


def test_an_encoded_surrogate_is_replaced_never_passed_on() -> None:
    # UTF-8 has no surrogates; their 3-byte encoding (CESU-8) is invalid and is replaced.
    data = with_bytes(make_response("Surrogate"), output_field(b"fd.name", b"/tmp/\xed\xa0\x80"))
    parsed, _ = parse_response(data)
    value = parsed.output_fields["fd.name"]
    assert value.startswith("/tmp/\ufffd") and unicode_problem(value) is None
    assert alert_from_response(parsed).fields["fd.name"] == value


@pytest.mark.parametrize("data", [b"\x0a\xff\xff\xff\x0f", b"\x22\x05ab", b"\xff"])
def test_bytes_that_are_no_response_are_refused_as_a_bad_body(data: bytes) -> None:
    with pytest.raises(AlertError) as refused:
        parse_response(data)
    assert rejection_code(refused.value) == "bad_body"  # as an HTTP body that is no JSON
    assert "not a falco.outputs.response message" in str(refused.value)
