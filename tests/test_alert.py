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
        (b'{"rule":"r","priority":"Notice","time":"2025-13-28T10:00:00Z"}', "time", "no such date"),
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


# -- text that is not valid Unicode ---------------------------------------------------------------

LONE = "\ud800"


def with_(**change: object) -> bytes:
    """FALCO_ALERT with some keys changed, as Python's json writes it (non-ASCII as escapes)."""
    return json.dumps(dict(FALCO_ALERT, **change)).encode()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hostname": LONE}, "field 'hostname': not valid Unicode (a lone surrogate \\ud800 at character 1)"),
        (
            {"rule": "Shell \ud800"},
            "field 'rule': not valid Unicode (a lone surrogate \\ud800 at character 7)",
        ),
        (
            {"output": "x\udfff"},
            "field 'output': not valid Unicode (a lone surrogate \\udfff at character 2)",
        ),
        (
            {"source": "sys\udc80"},
            "field 'source': not valid Unicode (a lone surrogate \\udc80 at character 4)",
        ),
        ({"uuid": "\udbff-1"}, "field 'uuid': not valid Unicode (a lone surrogate \\udbff at character 1)"),
        ({"priority": LONE}, "field 'priority': not valid Unicode (a lone surrogate \\ud800 at character 1)"),
        (
            {"tags": ["ok", "t\ud800"]},
            "field 'tags[1]': not valid Unicode (a lone surrogate \\ud800 at character 2)",
        ),
        (
            {"output_fields": {"container.id": LONE}},
            "field 'output_fields.container.id': not valid Unicode (a lone surrogate \\ud800 at character 1)",
        ),
        (
            {"output_fields": {"k8s.pod.name\ud800": "p"}},
            "field 'output_fields': bad field name 'k8s.pod.name\\ud800':"
            " not valid Unicode (a lone surrogate \\ud800 at character 13)",
        ),
        (
            {"output_fields": {"fd.types": ["ipv4", "f\ude00"]}},
            "field 'output_fields.fd.types': not valid Unicode (a lone surrogate \\ude00 at character 8)",
        ),
        # The second half of a pair alone, and a pair written the wrong way round.
        (
            {"hostname": "\ude00"},
            "field 'hostname': not valid Unicode (a lone surrogate \\ude00 at character 1)",
        ),
        (
            {"hostname": "\ude00\ud83d"},
            "field 'hostname': not valid Unicode (a lone surrogate \\ude00 at character 1)",
        ),
    ],
)
def test_a_lone_surrogate_anywhere_in_the_text_is_refused_naming_the_field(
    change: dict[str, object], message: str
) -> None:
    body = with_(**change)
    assert b"\\ud" in body  # the escape as Python (and a hostile sender) writes it
    with pytest.raises(AlertError) as caught:
        parse_falco_json(body)
    assert str(caught.value) == message
    # The message is plain ASCII: it can be logged, printed and answered whatever the encoding.
    assert str(caught.value).isascii()


def test_the_grpc_inputs_build_alert_refuses_a_lone_surrogate_too() -> None:
    parts: dict[str, object] = {
        "rule": "r",
        "priority": Priority.NOTICE,
        "time_ns": 1,
        "source": "syscall",
        "output": "",
        "fields": {"a": "1"},
        "tags": [],
        "hostname": "h",
    }
    build_alert(**parts)  # type: ignore[arg-type]
    for key, value, name in (
        ("hostname", LONE, "hostname"),
        ("fields", {"a": LONE}, "output_fields.a"),
        ("fields", {"a": 1.5, "b": LONE}, "output_fields.b"),
        ("tags", [LONE], "tags[0]"),
    ):
        with pytest.raises(AlertError) as caught:
            build_alert(**dict(parts, **{key: value}))  # type: ignore[arg-type]
        assert caught.value.field == name and "lone surrogate" in caught.value.reason


def test_a_valid_surrogate_pair_is_one_character_and_is_taken() -> None:
    emoji = "\U0001f600"
    change = {
        "rule": f"Shell {emoji}",
        "hostname": f"node-{emoji}",
        "tags": [emoji],
        "output": f"out {emoji}",
        "output_fields": {**FALCO_ALERT["output_fields"], f"x.{emoji}": emoji},  # type: ignore[dict-item]
    }
    escaped = with_(**change)
    assert b"\\ud83d\\ude00" in escaped
    alert = parse_falco_json(escaped)
    assert alert.rule == f"Shell {emoji}" and alert.hostname == f"node-{emoji}"
    assert alert.tags == (emoji,) and alert.fields[f"x.{emoji}"] == emoji
    # The same alert written as UTF-8 (as Falco writes it) is the same alert.
    raw = json.dumps(dict(FALCO_ALERT, **change), ensure_ascii=False).encode()
    assert parse_falco_json(raw) == alert


# -- impossible times -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2026-02-30T00:00:00Z", "no such date: 2026-02-30"),
        ("2026-02-30T00:00:00.123456789Z", "no such date: 2026-02-30"),  # Falco's form: the fast parse
        ("2026-04-31T10:00:00.5+02:00", "no such date: 2026-04-31"),
        ("2025-02-29T00:00:00Z", "no such date: 2025-02-29"),
        ("2025-02-29T00:00:00.000000000Z", "no such date: 2025-02-29"),
        ("2100-02-29T00:00:00Z", "no such date: 2100-02-29"),  # divisible by 100, not by 400
        ("2026-01-00T00:00:00Z", "no such date: 2026-01-00"),
        ("2026-01-32T00:00:00Z", "no such date: 2026-01-32"),
        ("2026-12-01T00:00:00+99:00", "offset out of range: +99:00"),
        ("2026-12-01T00:00:00.000000000-24:00", "offset out of range: -24:00"),
        ("2026-12-01T00:00:00+01:60", "offset out of range: +01:60"),
        # Month 13, hour 25, minute 61: no such date or time (not "out of range", which is 1970..2262).
        ("2026-13-01T00:00:00Z", "no such date: 2026-13-01"),
        ("2026-00-01T00:00:00Z", "no such date: 2026-00-01"),
        ("2026-12-01T25:00:00Z", "no such time: 25:00:00"),
        ("2026-12-01T23:61:00Z", "no such time: 23:61:00"),
        ("2026-12-01T23:59:61Z", "no such time: 23:59:61"),
        # A leap second is 23:59:60 UTC on a month's last day; nowhere else.
        (
            "2016-12-31T10:59:60Z",
            "no such time (a leap second is 23:59:60 UTC on a month's last day): '2016-12-31T10:59:60Z'",
        ),
        (
            "2016-12-30T23:59:60.000000000Z",
            "no such time (a leap second is 23:59:60 UTC on a month's last day):"
            " '2016-12-30T23:59:60.000000000Z'",
        ),
        (
            "2016-12-31T23:59:60+01:00",  # 22:59:60 UTC
            "no such time (a leap second is 23:59:60 UTC on a month's last day): '2016-12-31T23:59:60+01:00'",
        ),
    ],
)
def test_impossible_times_are_refused_not_moved(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_time_ns(text)
    assert str(caught.value) == message
    with pytest.raises(AlertError) as refused:
        parse_falco_json(with_(time=text))
    assert str(refused.value) == f"field 'time': {message}"


@pytest.mark.parametrize(
    ("text", "same_as"),
    [
        ("2024-02-29T00:00:00Z", "2024-02-28T23:00:00-01:00"),  # a leap year
        ("2024-02-29T12:00:00.123456789Z", "2024-02-29T13:00:00.123456789+01:00"),
        ("2000-02-29T23:30:00Z", "2000-03-01T00:30:00+01:00"),  # divisible by 400
        ("2026-01-31T23:59:59Z", "2026-02-01T00:59:59+01:00"),
        ("2026-12-01T00:00:00+23:59", "2026-11-30T00:01:00Z"),
        ("2026-12-01T00:00:00-00:00", "2026-12-01T00:00:00Z"),
        # Leap seconds: POSIX time has none, so 23:59:60 is the next day's first second.
        ("2016-12-31T23:59:60Z", "2017-01-01T00:00:00Z"),
        ("2016-12-31T23:59:60.500000000Z", "2017-01-01T00:00:00.5Z"),  # Falco's form: the fast parse
        ("2017-01-01T00:59:60+01:00", "2017-01-01T00:00:00Z"),  # 23:59:60 UTC in local time
        ("2015-06-30T23:59:60Z", "2015-07-01T00:00:00Z"),
    ],
)
def test_possible_times_including_leap_days_and_seconds_are_taken(text: str, same_as: str) -> None:
    expected = parse_time_ns(same_as)
    assert parse_time_ns(text) == expected
    assert parse_falco_json(with_(time=text)).time_ns == expected
    if text.endswith("Z") and len(text) < 30:  # the same instant in Falco's form (the fast parse)
        falco_form = text[:19] + ".000000000Z"
        assert parse_time_ns(falco_form) == expected


def test_a_leap_day_is_a_day_long() -> None:
    day = 86_400 * 10**9
    for year, leap in ((2024, True), (2000, True), (2025, False), (2100, False)):
        march = parse_time_ns(f"{year}-03-01T00:00:00.000000000Z")
        february_28 = parse_time_ns(f"{year}-02-28T00:00:00Z")
        assert march - february_28 == (2 if leap else 1) * day
        if leap:
            assert parse_time_ns(f"{year}-02-29T00:00:00Z") == february_28 + day


def test_invalid_json_names_the_place_once() -> None:
    with pytest.raises(AlertError) as refused:
        parse_falco_json(b'{"rule": "x')
    said = "invalid JSON: Unterminated string starting at (line 1, column 10)"
    assert str(refused.value) == said
    # The message speaks of no field (a line or a file has none called body); the HTTP input's
    # answer still names the request body as the field at fault.
    assert refused.value.field == "body"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["x" * 100] * 200, "field 'output_fields.fd.types': longer than 16384 characters as text"),
        ([1.5, float("nan")], "field 'output_fields.fd.types': must hold finite numbers only"),
        ([float("inf")], "field 'output_fields.fd.types': must hold finite numbers only"),
    ],
)
def test_a_list_field_is_held_to_the_bounds_of_a_text_field(values: list[object], message: str) -> None:
    """A list is shown as text: its text is bounded as a text field's, and its numbers finite."""
    with pytest.raises(AlertError) as caught:
        alert_from_mapping({**json.loads(with_()), "output_fields": {"fd.types": values}})
    assert str(caught.value) == message
