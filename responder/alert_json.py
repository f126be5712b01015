"""Falco's JSON alerts (http_output, stdout, file_output, the Falcosidekick webhook) to Alerts.

Two paths give the same Alert:
- the common path decodes and type-checks the alerts Falco and Falcosidekick actually send in one
  C pass (msgspec, with the bounds of responder.alert as constraints); it answers "not mine" for
  anything else, never an error;
- the strict path (stdlib json and build_alert) takes every body and is the authority: each
  rejection names its field. Whatever the common path declines goes there.

Decoding and validating were a third of the event loop's work per alert under load (bench/README.md,
round 5); the common path costs a fraction of the strict one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Annotated, Any

import msgspec

from responder.alert import (
    MAX_FIELD_NAME_CHARS,
    MAX_FIELD_VALUE_CHARS,
    MAX_FIELDS,
    MAX_OUTPUT_CHARS,
    MAX_RULE_CHARS,
    MAX_TAG_CHARS,
    MAX_TAGS,
    MISSING_TEXT,
    WHOLE_PAYLOAD,
    Alert,
    AlertError,
    FieldValue,
    Priority,
    assemble_alert,
    build_alert,
    canonical_source,
    json_type,
    parse_time_ns,
)
from responder.sender import Sender


def parse_falco_json(body: bytes | str, sender: Sender | None = None) -> Alert:
    """Parse one Falco or Falcosidekick JSON alert, delivered by ``sender`` (as its input
    authenticated it); AlertError names what is wrong."""
    if isinstance(body, bytes):
        alert = decode_common_alert(body, sender)
        if alert is not None:
            return alert
    return parse_falco_json_strict(body, sender)


# -- the common path -----------------------------------------------------------------------------

_Text = Annotated[str, msgspec.Meta(max_length=MAX_FIELD_VALUE_CHARS)]
_FieldName = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_FIELD_NAME_CHARS)]
_Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TAG_CHARS)]
# Integers that fit an int64 (msgspec bounds no wider), as nearly all of Falco's do; any other goes to
# the strict path, which bounds its digits.
_Integer = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


class _CommonPayload(msgspec.Struct, forbid_unknown_fields=True):
    """The keys Falco and Falcosidekick send, with the types and bounds build_alert accepts.
    Floats and lists in output_fields, unknown keys and the like are left to the strict path."""

    rule: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_RULE_CHARS)]
    priority: str
    time: str
    output: Annotated[str, msgspec.Meta(max_length=MAX_OUTPUT_CHARS)] | None = None
    output_fields: (
        Annotated[dict[_FieldName, _Text | _Integer | bool | None], msgspec.Meta(max_length=MAX_FIELDS)]
        | None
    ) = None
    tags: Annotated[list[_Tag], msgspec.Meta(max_length=MAX_TAGS)] | None = None
    hostname: Annotated[str, msgspec.Meta(max_length=253)] | None = None
    source: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    uuid: Annotated[str, msgspec.Meta(max_length=64)] | None = None


_COMMON_DECODER = msgspec.json.Decoder(_CommonPayload)
# The end of an object key: a closing quote, JSON whitespace, a colon. Every key ends so, and only
# an escaped quote inside a string can also match: the count is never below the keys in the body.
_KEY_END = re.compile(rb'"[ \t\n\r]*:')
# Escapes the strict path judges: a NUL ("\u0000", refused by name) and a UTF-16 surrogate
# ("\ud800"-"\udfff": a lone one is refused by name, a pair is one character). msgspec refuses a
# lone surrogate itself today; declining every surrogate escape keeps the paths equal whatever it
# does. One regex pass over the body (its "\u" prefix found by a fast search) costs less than one
# ``bytes in`` check did for the NUL alone. An escaped backslash before "u" ("\\u0000") matches
# too: such a body is declined for nothing, and the strict path takes it.
_DECLINED_ESCAPE = re.compile(rb"\\u(?:0000|[dD])")
# The spellings Falco and Falcosidekick use, each mapped to what Priority.parse makes of it; any
# other spelling goes to the strict path.
_PRIORITY_SPELLINGS = [
    *(text for priority in Priority for text in (priority.label, priority.name, priority.name.lower())),
    *("Info", "INFO", "info"),
]
_PRIORITIES = {spelling: Priority.parse(spelling) for spelling in _PRIORITY_SPELLINGS}


def decode_common_alert(body: bytes, sender: Sender | None = None) -> Alert | None:
    """The Alert of a body the common path can vouch for, or None (then the strict path decides).
    Never raises for any input; when it returns an Alert, the strict path returns an equal one."""
    try:
        payload = _COMMON_DECODER.decode(body)
    except msgspec.MsgspecError:
        return None
    fields = payload.output_fields
    output = payload.output
    if output is None:
        return None  # maybe only a "message": the strict path knows where to look
    # A repeated key is decoded silently (the last one wins); the strict path refuses it. A body
    # holds no repeat when it has no more keys than the decoded result (a null key counts as a
    # repeat here: rare, and the strict path then decides).
    optional = (fields, payload.tags, payload.hostname, payload.source, payload.uuid)
    present = 4 + sum(value is not None for value in optional)  # rule, priority, time, output
    if fields is not None:
        present += len(fields)
    if len(_KEY_END.findall(body)) != present or _DECLINED_ESCAPE.search(body) is not None:
        return None
    priority = _PRIORITIES.get(payload.priority)
    if priority is None:
        return None
    try:
        time_ns = parse_time_ns(payload.time)
    except ValueError:
        return None
    rule = payload.rule
    hostname = payload.hostname or None
    uuid = payload.uuid or None
    source = canonical_source(payload.source or "syscall")
    if rule.isspace() or (hostname and hostname.isspace()) or (uuid and uuid.isspace()) or source.isspace():
        return None
    alert_fields: dict[str, FieldValue]
    if fields is None:
        alert_fields = {}
    else:
        values = fields.values()
        if None in values or MISSING_TEXT in values:  # not available: dropped, as build_alert does
            alert_fields = {k: v for k, v in fields.items() if v is not None and v != MISSING_TEXT}
        else:
            alert_fields = fields  # type: ignore[assignment]  # None is not among the values
    tags: tuple[str, ...] = ()
    if payload.tags:
        if any(tag.isspace() for tag in payload.tags):
            return None
        tags = tuple(sorted(set(payload.tags)))
    return assemble_alert(rule, priority, time_ns, source, output, alert_fields, tags, hostname, uuid, sender)


# -- the strict path -----------------------------------------------------------------------------


class _Refused(dict[str, Any]):
    """Stands, while decoding, for an object that holds what the alert is refused for (a repeated
    key, a number of too many digits): the objects around it add their keys to ``path``, so the
    refusal names the field in full (``output_fields.k8s.ns.name``). An (empty) object to every
    other check, e.g. inside a list, where objects are refused anyway."""

    __slots__ = ("path", "reason")

    def __init__(self, path: tuple[str, ...], reason: str) -> None:
        super().__init__()
        self.path = path
        self.reason = reason


class _TooManyDigits:
    """Stands, while decoding, for an integer past MAX_INTEGER_DIGITS: its object names its key."""

    __slots__ = ("reason",)

    def __init__(self, digits: int) -> None:
        self.reason = f"a whole number of {digits} digits (at most {MAX_INTEGER_DIGITS})"


def _reject_duplicate_keys(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any] | _Refused:
    result: dict[str, Any] = {}
    for key, value in pairs:
        kind = type(value)
        if kind is _Refused:
            return _Refused((key, *value.path), value.reason)
        if kind is _TooManyDigits:
            return _Refused((key,), value.reason)
        if kind is list:
            for index, item in enumerate(value):
                if type(item) is _TooManyDigits:
                    return _Refused((f"{key}[{index}]",), item.reason)
        if key in result:
            return _Refused((key,), "duplicate key")
        result[key] = value
    return result


# Digits a JSON integer may have. Falco's largest is a uint64 (20 digits); Python refuses to convert
# more than 4,300 with a ValueError of its own, which is a refusal to name, not a 500.
MAX_INTEGER_DIGITS = 1000


def _bounded_int(text: str) -> int | _TooManyDigits:
    digits = len(text) - text.startswith("-")
    if digits > MAX_INTEGER_DIGITS:
        return _TooManyDigits(digits)  # refused by the object that holds it, naming its key
    return int(text)


# One decoder for every alert: json.loads with a hook builds a new decoder (and scanner) per call,
# which cost as much as decoding a typical alert.
_STRICT_JSON = json.JSONDecoder(object_pairs_hook=_reject_duplicate_keys, parse_int=_bounded_int)


def parse_falco_json_strict(body: bytes | str, sender: Sender | None = None) -> Alert:
    """The strict path alone: every check of build_alert, duplicate keys refused."""
    if isinstance(body, bytes):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            # The bytes before the first bad one are UTF-8: the field it falls in can be found.
            field = _field_at(body[: exc.start].decode("utf-8"))
            if field is None:
                raise AlertError(WHOLE_PAYLOAD, f"not UTF-8 at byte {exc.start}") from None
            raise AlertError(
                field, f"not UTF-8 (byte {exc.start} of the alert is 0x{body[exc.start]:02x})"
            ) from None
    else:
        text = body
    try:
        payload = _STRICT_JSON.decode(text)
    except json.JSONDecodeError as exc:
        field = _field_at(text[: exc.pos]) if exc.msg.startswith("Invalid control character") else None
        if field is not None:
            raise AlertError(
                field,
                f"holds a raw control character (U+{ord(text[exc.pos]):04X}, line {exc.lineno}, column"
                f" {exc.colno}): JSON text must escape it",
            ) from None
        raise AlertError(
            WHOLE_PAYLOAD, f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise AlertError(WHOLE_PAYLOAD, "JSON nested too deeply") from None
    if type(payload) is _Refused:
        raise AlertError(".".join(payload.path), payload.reason)
    if type(payload) is _TooManyDigits:
        raise AlertError(WHOLE_PAYLOAD, payload.reason)
    return alert_from_mapping(payload, sender)


# What _field_at follows: a string (to its end, or the text's), or a character of JSON's structure.
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"?|[{}\[\]:,]', re.DOTALL)
# A field named in an error is clipped to this: an attacker's key may be as long as the alert.
_FIELD_NAME_CHARS = 200


def _field_at(prefix: str) -> str | None:
    """The field (``output_fields.proc.cmdline``, ``tags[2]``) whose key or value is being read at
    the end of ``prefix``, the JSON text before a bad byte or character; None outside any field."""
    # Each open container: an object's current key (None: none read yet) or an array's index.
    path: list[str | int | None] = []
    reading_key = False  # the string being read is an object's key
    for token in _JSON_TOKEN.finditer(prefix):
        char = token.group()[0]
        if char == '"':
            if reading_key:
                path[-1] = _unescaped(token.group()[1:].removesuffix('"'))
        elif char == "{":
            path.append(None)
            reading_key = True
        elif char == "[":
            path.append(0)
            reading_key = False
        elif char in "}]" and path:
            path.pop()
            reading_key = False  # a value ended: a comma or the end of its container is next
        elif char == ":":
            reading_key = False
        elif char == "," and path:
            top = path[-1]
            if isinstance(top, int):
                path[-1] = top + 1
            else:
                reading_key = True
    if not path or path[-1] is None:
        return None
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text if len(text) <= _FIELD_NAME_CHARS else text[: _FIELD_NAME_CHARS - 3] + "..."


def _unescaped(key: str) -> str:
    """A key as JSON text writes it, read (an escape in it undone); as written when it is cut off."""
    try:
        return str(json.loads(f'"{key}"'))
    except ValueError:
        return key


def alert_from_mapping(payload: object, sender: Sender | None = None) -> Alert:
    """Build an Alert from decoded Falco JSON."""
    if not isinstance(payload, dict):
        raise AlertError(WHOLE_PAYLOAD, f"must be a JSON object, got {json_type(payload)}")
    for required in ("rule", "priority", "time"):
        if required not in payload:
            raise AlertError(required, "missing")
    raw_time = payload["time"]
    if not isinstance(raw_time, str):
        raise AlertError("time", f"must be an RFC 3339 string, got {json_type(raw_time)}")
    try:
        time_ns = parse_time_ns(raw_time)
    except ValueError as exc:
        raise AlertError("time", str(exc)) from None
    output = payload.get("output")
    if output is None and isinstance(payload.get("message"), str):
        output = payload["message"]  # json_include_output_property: false leaves only the message
    return build_alert(
        rule=payload["rule"],
        priority=payload["priority"],
        time_ns=time_ns,
        source=payload.get("source"),
        output=output,
        fields=payload.get("output_fields"),
        tags=payload.get("tags"),
        hostname=payload.get("hostname"),
        sidekick_uuid=payload.get("uuid"),
        sender=sender,
    )
