from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from responder.alert import MAX_TIME_NS, AlertError, Priority, build_alert, format_time_ns, parse_time_ns
from responder.alert_json import alert_from_mapping, parse_falco_json

FALCO_ALERT = {
    "hostname": "node-1",
    "output": "2025-01-28T10:00:00.123456789+0000: Notice Shell in serving pod (k8s.ns.name=ml)",
    "output_fields": {
        "container.id": "0123456789ab",
        "evt.time": 1738058400123456789,
        "fd.sport": 443,
        "k8s.ns.name": "ml",
        "k8s.pod.name": "triton-0",
        "proc.tty": 0,
        "user.loginuid": None,
        "proc.is_exe_upper_layer": True,
    },
    "priority": "Notice",
    "rule": "Shell in serving pod",
    "source": "syscall",
    "tags": ["serving_guard", "T1059", "mitre_execution"],
    "time": "2025-01-28T10:00:00.123456789Z",
}


def test_falco_http_output_json_is_parsed_with_ns_precision() -> None:
    alert = parse_falco_json(json.dumps(FALCO_ALERT).encode())
    assert alert.rule == "Shell in serving pod"
    assert alert.priority is Priority.NOTICE
    assert alert.time_ns == 1738058400123456789
    assert alert.namespace == "ml" and alert.pod == "triton-0" and alert.container_id == "0123456789ab"
    assert alert.hostname == "node-1"
    assert alert.tags == ("T1059", "mitre_execution", "serving_guard")
    # JSON null means "not available": the field is absent, not the string "None".
    assert "user.loginuid" not in alert.fields
    assert alert.text("proc.is_exe_upper_layer") == "true"
    assert alert.text("fd.sport") == "443"


def test_sidekick_payload_with_uuid_and_trimmed_time() -> None:
    payload = dict(FALCO_ALERT, uuid="5d1c1b9e-4e4b-4a7b-9f8e-2c1e0c8f4f11", source="syscalls")
    payload["time"] = "2025-01-28T10:00:00.1234Z"
    alert = alert_from_mapping(payload)
    assert alert.sidekick_uuid == "5d1c1b9e-4e4b-4a7b-9f8e-2c1e0c8f4f11"
    assert alert.source == "syscall"
    assert alert.time_ns == 1738058400123400000


def test_grpc_not_available_marker_reads_as_missing() -> None:
    payload = dict(FALCO_ALERT, output_fields={"k8s.pod.name": "<NA>", "k8s.ns.name": "ml"})
    alert = alert_from_mapping(payload)
    assert alert.pod is None and alert.namespace == "ml"


def test_same_alert_twice_has_the_same_id_and_differs_from_others() -> None:
    first = alert_from_mapping(FALCO_ALERT)
    again = alert_from_mapping(json.loads(json.dumps(FALCO_ALERT)))
    other = alert_from_mapping(dict(FALCO_ALERT, time="2025-01-28T10:00:00.123456790Z"))
    quieter = alert_from_mapping(dict(FALCO_ALERT, priority="Debug"))
    untagged = alert_from_mapping(dict(FALCO_ALERT, tags=[]))
    assert first.alert_id == again.alert_id
    assert len({first.alert_id, other.alert_id, quieter.alert_id, untagged.alert_id}) == 4


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        (b"", "body", "invalid JSON"),
        (b"\xff\xfe", "body", "not UTF-8"),
        (b"[1]", "body", "JSON object"),
        (b'{"priority":"Notice","time":"2025-01-28T10:00:00Z"}', "rule", "missing"),
        (b'{"rule":"r","priority":"Loud","time":"2025-01-28T10:00:00Z"}', "priority", "unknown priority"),
        (b'{"rule":"r","priority":"Notice","time":"yesterday"}', "time", "RFC 3339"),
        (b'{"rule":"r","priority":"Notice","time":1}', "time", "RFC 3339 string"),
        (b'{"rule":"","priority":"Notice","time":"2025-01-28T10:00:00Z"}', "rule", "empty"),
        (b'{"rule":"r","priority":"Notice","time":"2025-01-28T10:00:00Z","tags":"a"}', "tags", "array"),
        (
            b'{"rule":"r","priority":"Notice","time":"2025-01-28T10:00:00Z","output_fields":{"a":{"b":1}}}',
            "output_fields.a",
            "string, number or boolean",
        ),
        (b'{"rule":"r","rule":"s","priority":"Notice","time":"2025-01-28T10:00:00Z"}', "rule", "duplicate"),
        (b'{"rule":"r","priority":"Notice","time":"2025-13-28T10:00:00Z"}', "time", "out of range"),
        (b'{"rule":"r","priority":"Notice","time":"1900-01-01T00:00:00Z"}', "time", "before 1970"),
        # Past int64 nanoseconds (the journal's INTEGER): refused, not an OverflowError when stored.
        (b'{"rule":"r","priority":"Notice","time":"2262-04-12T00:00:00Z"}', "time", "out of range"),
        (b'{"rule":"r","priority":"Notice","time":"9999-12-31T23:59:59.999999999Z"}', "time", "out of range"),
        (b'{"rule":"r","priority":"Notice","time":"2262-04-11T23:47:16.854775808Z"}', "time", "out of range"),
        # Digits other than 0-9 are not RFC 3339 (int() would take some and choke on others).
        (
            b'{"rule":"r","priority":"Notice","time":"2025-01-28T10:00:00.12345678\xc2\xb2Z"}',
            "time",
            "RFC 3339",
        ),
        (b'{"rule":"r","priority":"Notice","time":"\xd9\xa2025-01-28T10:00:00Z"}', "time", "RFC 3339"),
    ],
)
def test_bad_payloads_name_the_field(body: bytes, field: str, reason: str) -> None:
    with pytest.raises(AlertError) as caught:
        parse_falco_json(body)
    assert caught.value.field == field
    assert reason in caught.value.reason


def test_time_round_trip_and_offsets() -> None:
    assert format_time_ns(parse_time_ns("2025-01-28T10:00:00.000000001Z")) == "2025-01-28T10:00:00.000000001Z"
    assert parse_time_ns("2025-01-28T11:00:00+01:00") == parse_time_ns("2025-01-28T10:00:00Z")


def test_times_up_to_the_last_int64_nanosecond_are_taken_and_none_after() -> None:
    last = "2262-04-11T23:47:16.854775807Z"
    assert parse_time_ns(last) == MAX_TIME_NS == 2**63 - 1
    assert format_time_ns(MAX_TIME_NS) == last
    # An offset brings a later local time back into range.
    assert parse_time_ns("2262-04-12T00:00:00+01:00") == parse_time_ns("2262-04-11T23:00:00Z")
    for text in ("2262-04-11T23:47:16.854775808Z", "2262-04-11T23:47:17Z", "2262-04-12T00:00:00Z"):
        with pytest.raises(
            ValueError, match=r"timestamp out of range \(after 2262-04-11T23:47:16.854775807Z\)"
        ):
            parse_time_ns(text)


@pytest.mark.parametrize("time_ns", [MAX_TIME_NS + 1, 2**64 * 10**9, -1])
def test_build_alert_refuses_a_time_the_journal_cannot_hold(time_ns: int) -> None:
    # The gRPC input hands build_alert Falco's seconds and nanos, unchecked against int64.
    with pytest.raises(AlertError) as caught:
        build_alert(
            rule="r",
            priority=Priority.NOTICE,
            time_ns=time_ns,
            source="syscall",
            output="",
            fields={},
            tags=[],
            hostname=None,
        )
    assert str(caught.value) == (
        "field 'time': timestamp out of range (before 1970 or after 2262-04-11T23:47:16.854775807Z)"
    )


def test_priority_names_and_order() -> None:
    assert Priority.parse("info") is Priority.INFORMATIONAL
    assert Priority.parse("CRITICAL") is Priority.CRITICAL
    assert Priority.CRITICAL.at_least(Priority.WARNING)
    assert not Priority.NOTICE.at_least(Priority.WARNING)


def test_falco_json_round_trip() -> None:
    alert = alert_from_mapping(FALCO_ALERT)
    again = alert_from_mapping(alert.to_falco_json())
    assert again == alert


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["rule", "priority", "time", "output", "output_fields", "tags", "hostname", "source", "uuid"]
        ),
        json_values,
    )
)
def test_fuzzed_payloads_only_ever_raise_alert_error(payload: dict[str, object]) -> None:
    try:
        alert = alert_from_mapping(payload)
    except AlertError as exc:
        assert exc.field and exc.reason
    else:
        assert alert.rule and alert.alert_id


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzzed_bytes_only_ever_raise_alert_error(body: bytes) -> None:
    # Anything but AlertError escaping fails the test.
    with contextlib.suppress(AlertError):
        parse_falco_json(body)
