"""The common path of the JSON decoder against the strict one: it either declines a body or gives
exactly the Alert the strict path gives; it never accepts what the strict path refuses."""

from __future__ import annotations

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
from responder.alert_json import decode_common_alert, parse_falco_json, parse_falco_json_strict
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
    st.text(max_size=12),
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
