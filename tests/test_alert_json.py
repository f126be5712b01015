"""The common path of the JSON decoder against the strict one: it either declines a body or gives
exactly the Alert the strict path gives; it never accepts what the strict path refuses."""

from __future__ import annotations

import datetime
import json
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from responder.alert import (
    MAX_FIELD_VALUE_CHARS,
    MAX_RULE_CHARS,
    MAX_TAGS,
    MAX_TIME_NS,
    Alert,
    AlertError,
    format_time_ns,
)
from responder.alert_json import (
    MAX_INTEGER_DIGITS,
    decode_common_alert,
    parse_falco_json,
    parse_falco_json_strict,
)
from simulators.falco_json import falco_alert, falco_bytes
from simulators.seed import make_pod
from tests.test_alert import FALCO_ALERT as BASE_ALERT

# Falco's own example, with a command line that carries quotes (escaped in the JSON).
BASE_FIELDS = cast(dict[str, Any], BASE_ALERT["output_fields"])
FALCO_ALERT: dict[str, Any] = dict(BASE_ALERT, output_fields={**BASE_FIELDS, "proc.cmdline": 'sh -c "id"'})


def strict_outcome(body: bytes) -> Alert | AlertError:
    try:
        return parse_falco_json_strict(body)
    except AlertError as exc:
        return exc


def assert_agrees(body: bytes) -> Alert | None:
    common = decode_common_alert(body)
    if common is not None:
        strict = strict_outcome(body)
        assert not isinstance(strict, AlertError), (
            f"common path accepted what the strict path refuses: {strict}"
        )
        assert common == strict
        assert common.alert_id == strict.alert_id
    return common


def test_falco_and_sidekick_bodies_take_the_common_path() -> None:
    pod = make_pod("ml", "triton-0", "node-1", "triton", "nvcr.io/nvidia/tritonserver:24.05-py3", {})
    fields = {"proc.cmdline": 'sh -c "id"', "proc.name": "sh", "user.loginuid": None, "fd.num": 3}
    falco = falco_bytes(falco_alert(pod, "Shell in serving pod", "Critical", "Shell spawned", fields))
    assert assert_agrees(falco) is not None
    assert assert_agrees(json.dumps(FALCO_ALERT).encode()) is not None  # spaces after ':' and ','
    sidekick = dict(FALCO_ALERT, uuid="5d1c1b9e-4e4b-4a7b-9f8e-2c1e0c8f4f11", source="syscalls")
    alert = assert_agrees(json.dumps(sidekick).encode())
    assert alert is not None and alert.source == "syscall" and alert.sidekick_uuid is not None
    assert alert.fields.get("user.loginuid") is None  # null: not available


@pytest.mark.parametrize(
    "body",
    [
        b'{"rule":"r","rule":"s","priority":"Notice","time":"2025-01-28T10:00:00Z","output":""}',
        b'{"rule":"r","priority":"Notice","time":"2025-01-28T10:00:00Z","output":"",'
        b'"output_fields":{"a":"1","a":"2"}}',
        # Whitespace before the colon, and an escaped quote and colon inside a value.
        b'{"rule" :"r","rule":"s","priority":"Notice","time":"2025-01-28T10:00:00Z","output":"x\\":y"}',
        b'{"rule":"r","priority":"Notice","time":"2025-01-28T10:00:00Z","output":"a\\":","output":"b"}',
    ],
)
def test_repeated_keys_are_never_taken_by_the_common_path(body: bytes) -> None:
    assert decode_common_alert(body) is None
    with pytest.raises(AlertError, match="duplicate key"):
        parse_falco_json(body)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ('"k8s.ns.name":"a","k8s.ns.name":"b"', "output_fields.k8s.ns.name"),
        (
            '"a":"1","b":{"c":1,"c":2}',
            "output_fields.b.c",
        ),  # an object value, refused anyway: the repeat first
    ],
)
def test_a_repeated_key_is_named_by_its_whole_path(fields: str, field: str) -> None:
    body = b'{"rule":"r","priority":"Notice","time":"2025-01-28T10:00:00Z","output":"x","output_fields":{'
    body += fields.encode() + b"}}"
    assert decode_common_alert(body) is None
    with pytest.raises(AlertError) as caught:
        parse_falco_json(body)
    assert (caught.value.field, caught.value.reason) == (field, "duplicate key")
    with pytest.raises(AlertError) as caught:
        parse_falco_json(
            b'{"rule":"r","priority":"Notice","time":"2025-01-28T10:00:00Z","tags":[{"a":1,"a":2}]}'
        )
    assert str(caught.value) == "field 'tags[0]': must be a string, got object"  # no internal type named


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"rule": " "}, "rule"),
        ({"rule": "r" * (MAX_RULE_CHARS + 1)}, "rule"),
        ({"rule": "nul\x00"}, "rule"),
        ({"priority": "Loud"}, "priority"),
        ({"time": "2025-13-28T10:00:00Z"}, "time"),
        ({"time": "2262-04-12T00:00:00Z"}, "time"),
        ({"time": "2262-04-11T23:47:16.854775808Z"}, "time"),  # Falco's own form: the fast parse
        ({"time": "2025-01-28T10:00:00.12345678\u00b2Z"}, "time"),
        ({"hostname": "\t"}, "hostname"),
        ({"source": " "}, "source"),
        ({"tags": ["ok", " "]}, "tags[1]"),
        ({"tags": ["t"] * (MAX_TAGS + 1)}, "tags"),
        ({"output_fields": {"a": "x" * (MAX_FIELD_VALUE_CHARS + 1)}}, "output_fields.a"),
        ({"output_fields": {"": "x"}}, "output_fields"),
        ({"output_fields": {"a": {"b": 1}}}, "output_fields.a"),
    ],
)
def test_bad_alerts_get_the_strict_paths_error(change: dict[str, object], field: str) -> None:
    body = json.dumps(dict(FALCO_ALERT, **change)).encode()
    assert decode_common_alert(body) is None
    with pytest.raises(AlertError) as caught:
        parse_falco_json(body)
    assert caught.value.field == field


@pytest.mark.parametrize(
    "change",
    [
        {"priority": "info"},
        {"priority": " Warning "},
        {"hostname": ""},
        {"source": ""},
        {"tags": []},
        {"output_fields": {"proc.name": "<NA>", "fd.num": 3}},
        {"output_fields": {"fd.types": ["ipv4", "file"], "evt.arg.res": 1.5}},
        {"extra": "kept by neither"},
        {"output": None, "message": "only the message"},
        {"hostname": None},
    ],
)
def test_every_accepted_variant_gives_the_strict_paths_alert(change: dict[str, object]) -> None:
    body = json.dumps(dict(FALCO_ALERT, **change)).encode()
    assert_agrees(body)
    assert parse_falco_json(body) == parse_falco_json_strict(body)


texts = st.one_of(
    st.sampled_from(["", " ", "\t", "<NA>", "syscalls", "syscall", "Notice", "info", 'a":b', "x\x00"]),
    # Lone surrogates (JSON "\ud800" escapes), a pair of them (an escaped emoji) and an emoji.
    st.sampled_from(["\ud800", "a\udfff", "\udc80x", "\ud83d\ude00", "\U0001f600", "\\ud800"]),
    st.text(max_size=12),
    st.text(st.characters(min_codepoint=0xD7FE, max_codepoint=0xE001, exclude_categories=()), max_size=3),
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), texts)


@st.composite
def falco_like_bodies(draw: st.DrawFn) -> bytes:
    payload: dict[str, object] = dict(FALCO_ALERT)
    for key in draw(st.lists(st.sampled_from(sorted(FALCO_ALERT)), max_size=3)):
        payload.pop(key, None)
    changes = draw(
        st.dictionaries(
            st.sampled_from(
                ["rule", "priority", "time", "output", "hostname", "source", "uuid", "message", "x"]
            ),
            scalars,
            max_size=3,
        )
    )
    payload.update(changes)
    if draw(st.booleans()):
        payload["output_fields"] = draw(
            st.dictionaries(texts, scalars | st.lists(scalars, max_size=2), max_size=4)
        )
    if draw(st.booleans()):
        payload["tags"] = draw(st.lists(texts, max_size=4))
    body = json.dumps(
        payload,
        ensure_ascii=draw(st.booleans()),
        separators=draw(st.sampled_from([(",", ":"), (", ", ": ")])),
    )
    if draw(st.booleans()) and len(body) > 2:
        # Repeat a key/value pair of the object at its end (a duplicate key, maybe nested).
        key = draw(st.sampled_from(sorted(payload)))
        body = body[:-1] + f",{json.dumps(key)}:{json.dumps(payload[key])}}}"
    return body.encode("utf-8", "surrogatepass")


@settings(max_examples=600, deadline=None)
@given(falco_like_bodies())
def test_fuzzed_falco_bodies_agree_with_the_strict_path(body: bytes) -> None:
    assert_agrees(body)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzzed_bytes_never_escape_the_common_path(body: bytes) -> None:
    assert_agrees(body)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=MAX_TIME_NS - 10**12, max_value=MAX_TIME_NS + 10**12),
    st.sampled_from(["falco", "trimmed", "offset"]),
)
def test_times_around_the_last_int64_nanosecond_agree_and_are_taken_only_up_to_it(
    time_ns: int, form: str
) -> None:
    text = format_time_ns(time_ns)  # Falco's form: 9 digits and Z (the common path's fast parse)
    if form == "trimmed":
        text = text.rstrip("Z").rstrip("0").rstrip(".") + "Z"  # Falcosidekick's RFC3339Nano
    elif form == "offset":
        seconds, nanos = divmod(time_ns + 3600 * 10**9, 10**9)
        text = f"{format_time_ns(seconds * 10**9)[:19]}.{nanos:09d}+01:00"
    body = json.dumps(dict(FALCO_ALERT, time=text)).encode()
    assert_agrees(body)
    if time_ns <= MAX_TIME_NS:
        assert parse_falco_json(body).time_ns == time_ns
    else:
        with pytest.raises(AlertError, match=r"field 'time': timestamp out of range \(after 2262"):
            parse_falco_json(body)


# -- lone surrogates: declined by the common path, refused by name by the strict one --------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"hostname": "\ud800"}, "hostname"),
        ({"rule": "Shell \ud800"}, "rule"),
        ({"output": "\udfff"}, "output"),
        ({"source": "s\udc00"}, "source"),
        ({"uuid": "\ud800"}, "uuid"),
        ({"tags": ["t", "\udbff"]}, "tags[1]"),
        ({"output_fields": {**BASE_FIELDS, "container.id": "\ud800"}}, "output_fields.container.id"),
        ({"output_fields": {**BASE_FIELDS, "proc.cmdline": "sh \udcff"}}, "output_fields.proc.cmdline"),
        ({"output_fields": {"x\ud800": "1"}}, "output_fields"),
    ],
)
def test_a_lone_surrogate_is_declined_by_the_common_path_and_refused_by_the_strict_one(
    change: dict[str, object], field: str
) -> None:
    body = json.dumps(dict(FALCO_ALERT, **change)).encode()
    assert decode_common_alert(body) is None
    with pytest.raises(AlertError) as caught:
        parse_falco_json(body)
    assert caught.value.field == field
    assert caught.value.reason.startswith("not valid Unicode (a lone surrogate \\ud") or (
        field == "output_fields"
        and "not valid Unicode (a lone surrogate \\ud800 at character 2)" in str(caught.value)
    )
    strict = strict_outcome(body)
    assert isinstance(strict, AlertError) and str(strict) == str(caught.value)


def test_the_reviewers_bodies_are_refused_with_the_field_named() -> None:
    # As found in review: "1 accepted" for the first two, and the incident row silently not
    # written; a UnicodeEncodeError out of ingest (500 from serve) for the rule.
    expected = {
        "hostname": "field 'hostname': not valid Unicode (a lone surrogate \\ud800 at character 1)",
        "container.id": (
            "field 'output_fields.container.id': not valid Unicode (a lone surrogate \\ud800 at character 1)"
        ),
        "rule": "field 'rule': not valid Unicode (a lone surrogate \\ud800 at character 7)",
    }
    fields = dict(BASE_FIELDS)
    bodies = {
        "hostname": dict(FALCO_ALERT, hostname="\ud800"),
        "container.id": dict(FALCO_ALERT, output_fields={**fields, "container.id": "\ud800"}),
        "rule": dict(FALCO_ALERT, rule="Shell \ud800"),
    }
    for name, payload in bodies.items():
        for separators in ((",", ":"), (", ", ": ")):
            body = json.dumps(payload, separators=separators).encode()
            with pytest.raises(AlertError) as caught:
                parse_falco_json(body)
            assert str(caught.value) == expected[name]


def test_a_surrogate_pair_gives_the_same_alert_escaped_or_as_utf8() -> None:
    emoji = "\U0001f600"
    payload = dict(
        FALCO_ALERT,
        hostname=f"node-{emoji}",
        rule=f"Shell {emoji}",
        tags=["t", emoji],
        output_fields={**BASE_FIELDS, "proc.cmdline": f"echo {emoji}"},
    )
    escaped = json.dumps(payload).encode()  # "\ud83d\ude00": the strict path takes it
    utf8 = json.dumps(payload, ensure_ascii=False).encode()  # as Falco writes it: the common path
    assert b"\\ud83d\\ude00" in escaped and b"\\ud" not in utf8
    assert decode_common_alert(escaped) is None
    common = assert_agrees(utf8)
    assert common is not None
    alert = parse_falco_json(escaped)
    assert alert == common == parse_falco_json_strict(utf8) and alert.alert_id == common.alert_id
    assert alert.hostname == f"node-{emoji}" and alert.fields["proc.cmdline"] == f"echo {emoji}"


# -- integers: int64 on the common path, at most MAX_INTEGER_DIGITS digits on the strict one -------


def _with_number(text: str) -> bytes:
    fields = {**BASE_FIELDS, "evt.num": 0}
    return (
        json.dumps(dict(FALCO_ALERT, output_fields=fields))
        .replace('"evt.num": 0', f'"evt.num": {text}')
        .encode()
    )


@pytest.mark.parametrize(
    ("text", "common"),
    [
        (str(2**63 - 1), True),
        (str(-(2**63)), True),
        (str(2**64 - 1), False),  # a uint64 past int64: the strict path takes it
        (str(-(2**63) - 1), False),
        ("9" * MAX_INTEGER_DIGITS, False),
        ("-" + "9" * MAX_INTEGER_DIGITS, False),
    ],
)
def test_integers_are_taken_exactly_up_to_the_digit_bound(text: str, common: bool) -> None:
    body = _with_number(text)
    assert (decode_common_alert(body) is not None) is common
    alert = parse_falco_json(body)
    assert str(alert.fields["evt.num"]) == text
    assert alert == parse_falco_json_strict(body)


@pytest.mark.parametrize("digits", [MAX_INTEGER_DIGITS + 1, 4301, 100_000])
def test_an_integer_past_the_digit_bound_is_refused_not_a_crash(digits: int) -> None:
    # Past 4,300 digits Python's int() raises a ValueError of its own: it was a 500 and a stopped ingest.
    for sign in ("", "-"):
        with pytest.raises(AlertError) as caught:
            parse_falco_json(_with_number(sign + "1" * digits))
        assert caught.value.field == "output_fields.evt.num"  # the field named, not the body
        assert str(caught.value) == (
            f"field 'output_fields.evt.num': a whole number of {digits} digits (at most {MAX_INTEGER_DIGITS})"
        )


def test_a_too_long_integer_in_a_list_or_at_the_top_is_named_too() -> None:
    in_list = json.dumps(dict(FALCO_ALERT, output_fields={"fd.ports": [1, 2]})).replace(
        "[1, 2]", "[1, " + "2" * 1001 + "]"
    )
    with pytest.raises(AlertError) as caught:
        parse_falco_json(in_list.encode())
    assert caught.value.field == "output_fields.fd.ports[1]"
    with pytest.raises(AlertError) as caught:
        parse_falco_json(b"1" * 1001)
    assert str(caught.value) == f"a whole number of 1001 digits (at most {MAX_INTEGER_DIGITS})"


def test_an_escaped_backslash_before_ud_is_only_declined_not_refused() -> None:
    # "\\ud800" in JSON is a backslash and the letters "ud800": valid text the strict path takes.
    body = json.dumps(dict(FALCO_ALERT, hostname="\\ud800")).encode()
    assert decode_common_alert(body) is None
    assert parse_falco_json(body).hostname == "\\ud800"


# -- impossible times: refused alike on both paths ------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("2026-02-30T00:00:00Z", "no such date: 2026-02-30"),
        ("2026-02-30T00:00:00.000000000Z", "no such date: 2026-02-30"),
        ("2025-02-29T00:00:00.123456789Z", "no such date: 2025-02-29"),
        ("2026-06-31T00:00:00.1Z", "no such date: 2026-06-31"),
        ("2026-12-01T00:00:00+99:00", "offset out of range: +99:00"),
        ("2026-12-01T00:00:00.000000000+00:60", "offset out of range: +00:60"),
    ],
)
def test_impossible_times_are_refused_on_both_paths(text: str, reason: str) -> None:
    body = json.dumps(dict(FALCO_ALERT, time=text)).encode()
    assert decode_common_alert(body) is None
    with pytest.raises(AlertError) as caught:
        parse_falco_json(body)
    assert str(caught.value) == f"field 'time': {reason}"
    strict = strict_outcome(body)
    assert isinstance(strict, AlertError) and str(strict) == str(caught.value)


@pytest.mark.parametrize(
    "text",
    [
        "2024-02-29T00:00:00.000000000Z",
        "2024-02-29T00:00:00Z",
        "2024-02-29T01:00:00+01:00",
        "2016-12-31T23:59:60.000000000Z",
        "2016-12-31T23:59:60Z",
    ],
)
def test_leap_days_and_seconds_parse_identically_on_both_paths(text: str) -> None:
    body = json.dumps(dict(FALCO_ALERT, time=text)).encode()
    common = assert_agrees(body)
    assert common is not None  # the common path takes them, with the strict path's result
    assert common.time_ns == parse_falco_json_strict(body).time_ns


def expected_time(
    year: int,
    month: int,
    day: int,
    hour: int,
    minute: int,
    second: int,
    nanos: int,
    offset: tuple[int, int, int],
) -> int | str:
    """The epoch ns of an RFC 3339 time by the standard library's calendar, or how it is refused."""
    sign, offset_hours, offset_minutes = offset
    if not (hour <= 23 and minute <= 59 and second <= 60):
        return "no such time"
    try:
        datetime.date(year, month, day)
    except ValueError:
        return "no such date"
    if offset_hours > 23 or offset_minutes > 59:
        return "offset out of range"
    zone = datetime.timezone(sign * datetime.timedelta(hours=offset_hours, minutes=offset_minutes))
    stamp = datetime.datetime(year, month, day, hour, minute, min(second, 59), tzinfo=zone)
    seconds = int(stamp.timestamp()) + (second == 60)
    if seconds < 0:
        return "timestamp before 1970"
    if seconds * 10**9 + nanos > MAX_TIME_NS:
        return "timestamp out of range (after"
    if second == 60:
        utc = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
        if (utc.day, utc.hour, utc.minute, utc.second) != (1, 0, 0, 0):
            return "no such time"
    return seconds * 10**9 + nanos


@settings(max_examples=600, deadline=None)
@given(
    st.one_of(
        st.integers(1969, 1971), st.integers(2023, 2029), st.integers(2261, 2263), st.integers(1, 9999)
    ),
    st.integers(0, 13),
    st.integers(0, 32),
    st.sampled_from([0, 1, 22, 23, 24]),
    st.sampled_from([0, 1, 58, 59, 60]),
    st.sampled_from([0, 1, 59, 60, 61]),
    st.integers(0, 10**9 - 1),
    st.one_of(
        st.just((1, 0, 0)),
        st.tuples(st.sampled_from([1, -1]), st.integers(0, 99), st.sampled_from([0, 30, 59, 60, 99])),
    ),
    st.sampled_from(["falco", "trimmed", "whole"]),
)
def test_fuzzed_times_agree_with_the_calendar_on_both_paths(
    year: int,
    month: int,
    day: int,
    hour: int,
    minute: int,
    second: int,
    nanos: int,
    offset: tuple[int, int, int],
    form: str,
) -> None:
    if form == "whole":
        nanos = 0
    fraction = {"falco": f".{nanos:09d}", "trimmed": f".{nanos:09d}".rstrip("0").rstrip("."), "whole": ""}[
        form
    ]
    sign, offset_hours, offset_minutes = offset
    zone = (
        "Z" if offset == (1, 0, 0) else f"{'+' if sign > 0 else '-'}{offset_hours:02d}:{offset_minutes:02d}"
    )
    text = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}{fraction}{zone}"
    body = json.dumps(dict(FALCO_ALERT, time=text)).encode()
    assert_agrees(body)
    expected = expected_time(year, month, day, hour, minute, second, nanos, offset)
    if isinstance(expected, int):
        assert parse_falco_json(body).time_ns == expected
    else:
        with pytest.raises(AlertError) as caught:
            parse_falco_json(body)
        assert caught.value.field == "time" and caught.value.reason.startswith(expected), text
