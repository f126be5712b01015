"""The one typed Alert every input normalises into, and the checks that build it.

Falco's http_output/stdout JSON and the Falcosidekick webhook payload carry the same keys
(rule, priority, time, output, output_fields, source, tags, hostname; sidekick adds uuid).
The gRPC input and the JSON inputs' strict path build an Alert through :func:`build_alert`; the
JSON inputs' common path (responder.alert_json) applies the same checks while decoding, and its
tests hold it equal to build_alert. Missing values (JSON ``null``, gRPC ``<NA>``) are dropped from
the fields.
"""

from __future__ import annotations

import calendar
import functools
import hashlib
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from responder.sender import Sender, is_drill

FieldValue = str | int | float | bool

# Bounds that keep one hostile alert from costing much memory or log space.
MAX_RULE_CHARS = 1024
MAX_OUTPUT_CHARS = 64 * 1024
MAX_TAGS = 64
MAX_TAG_CHARS = 256
MAX_FIELDS = 256
MAX_FIELD_NAME_CHARS = 256
MAX_FIELD_VALUE_CHARS = 16 * 1024
MISSING_TEXT = "<NA>"
# Alert times are stored as SQLite INTEGERs (signed 64-bit): the last one is 2262-04-11T23:47:16.854775807Z.
MAX_TIME_NS = 2**63 - 1


# AlertError's field for the payload as a whole (not JSON, not an object): the HTTP input's
# request body, a line of `ingest`, the file of `config explain`.
WHOLE_PAYLOAD = "body"


class AlertError(ValueError):
    """A payload that is not a valid Falco alert; ``field`` names the offending key."""

    def __init__(self, field_name: str, reason: str) -> None:
        self.field = field_name
        self.reason = reason
        # The whole payload is no field of it: its reason alone, which the caller places.
        super().__init__(reason if field_name == WHOLE_PAYLOAD else f"field {field_name!r}: {reason}")


class Priority(IntEnum):
    """Falco priorities; a lower value is more severe (as in falco.schema.priority)."""

    EMERGENCY = 0
    ALERT = 1
    CRITICAL = 2
    ERROR = 3
    WARNING = 4
    NOTICE = 5
    INFORMATIONAL = 6
    DEBUG = 7

    @classmethod
    def parse(cls, text: str) -> Priority:
        key = text.strip().upper()
        if key == "INFO":
            key = "INFORMATIONAL"
        try:
            return cls[key]
        except KeyError:
            names = ", ".join(p.label for p in cls)
            raise ValueError(f"unknown priority {text!r} (expected one of {names})") from None

    @property
    def label(self) -> str:
        """The capitalised name Falco prints ("Warning")."""
        return self.name.capitalize()

    def at_least(self, minimum: Priority) -> bool:
        """True when this priority is as severe as ``minimum`` or more."""
        return self.value <= minimum.value


# Field names the responder reads; rules must put them in their output.
FIELD_NAMESPACE = "k8s.ns.name"
FIELD_POD = "k8s.pod.name"
FIELD_CONTAINER_ID = "container.id"
FIELD_IMAGE = "container.image.repository"
FIELD_IMAGE_TAG = "container.image.tag"
FIELD_PROC_NAME = "proc.name"
FIELD_CMDLINE = "proc.cmdline"
FIELD_PARENT = "proc.pname"
FIELD_USER = "user.name"
FIELD_FD_NAME = "fd.name"


@dataclass(frozen=True, slots=True)
class Alert:
    """One Falco alert, normalised. ``fields`` never holds a missing value."""

    rule: str
    priority: Priority
    time_ns: int
    source: str
    output: str
    fields: Mapping[str, FieldValue] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    hostname: str | None = None
    sidekick_uuid: str | None = None
    alert_id: str = ""
    # Who delivered it, as its input knows it (a peer, a Falco, a file): not part of what Falco
    # said, so not part of alert_id. Journaled with it.
    sender: Sender | None = None
    # How far ahead of when it came its event was dated, once time_ns was moved back to that
    # (pod_records.dated_credibly, to weigh a release against it); 0: as Falco dated it. Never journaled.
    dated_ahead_ns: int = 0

    def text(self, name: str) -> str | None:
        """The field as Falco would print it, or None when missing."""
        value = self.fields.get(name)
        if value is None:
            return None
        return field_text(value)

    @property
    def namespace(self) -> str | None:
        return self.text(FIELD_NAMESPACE)

    @property
    def pod(self) -> str | None:
        return self.text(FIELD_POD)

    @property
    def container_id(self) -> str | None:
        return self.text(FIELD_CONTAINER_ID)

    def to_falco_json(self) -> dict[str, Any]:
        """The alert as Falco's JSON output (keys as Falco emits them), for journals and replays."""
        body: dict[str, Any] = {
            "hostname": self.hostname or "",
            "output": self.output,
            "output_fields": dict(self.fields),
            "priority": self.priority.label,
            "rule": self.rule,
            "source": self.source,
            "tags": list(self.tags),
            "time": format_time_ns(self.time_ns),
        }
        if self.sidekick_uuid:
            body["uuid"] = self.sidekick_uuid
        return body


def field_text(value: FieldValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


_TIME_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|z|[+-]\d{2}:\d{2})$",
    re.ASCII,  # 0-9 only: RFC 3339 has no other digits ("٢٠٢٥", "²")
)


def parse_time_ns(text: str) -> int:
    """RFC 3339 / ISO 8601 (Falco: 9 fractional digits and Z; sidekick: trimmed) to epoch ns."""
    # Falco's own form ("2025-01-28T10:00:00.123456789Z") is nearly every alert: its whole
    # seconds are parsed once (alerts share seconds) and only the nanoseconds per alert.
    if (
        len(text) == 30
        and text[19] == "."
        and text[29] == "Z"
        and text[20:29].isascii()
        and text[20:29].isdigit()
    ):
        seconds = _utc_seconds(text[:19])
        if seconds is not None:
            time_ns = seconds * 1_000_000_000 + int(text[20:29])
            if time_ns > MAX_TIME_NS:
                raise ValueError(_after_max_time(text))
            return time_ns
    return _parse_time_ns(text)


def _after_max_time(text: str) -> str:
    return f"timestamp out of range (after {format_time_ns(MAX_TIME_NS)}): {text[:64]!r}"


@functools.lru_cache(maxsize=1024)
def _utc_seconds(stamp: str) -> int | None:
    """Epoch seconds of "YYYY-MM-DDTHH:MM:SS" (UTC), or None when it is not exactly that."""
    try:
        return _parse_time_ns(stamp + "Z") // 1_000_000_000
    except ValueError:
        return None


def _parse_time_ns(text: str) -> int:
    match = _TIME_RE.match(text.strip())
    if not match:
        raise ValueError(f"not an RFC 3339 timestamp: {text[:64]!r}")
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    fraction = (match.group(7) or "").ljust(9, "0")
    zone = match.group(8)
    if not (hour <= 23 and minute <= 59 and second <= 60):
        raise ValueError(f"no such time: {match.group(4)}:{match.group(5)}:{match.group(6)}")
    if not (1 <= month <= 12 and 1 <= day <= _days_in_month(year, month)):
        # timegm would move 2026-02-30 to 2026-03-02: an impossible date is refused, not moved.
        raise ValueError(f"no such date: {match.group(1)}-{match.group(2)}-{match.group(3)}")
    offset = 0
    if zone not in ("Z", "z"):
        offset_hours, offset_minutes = int(zone[1:3]), int(zone[4:6])
        if offset_hours > 23 or offset_minutes > 59:  # RFC 3339: time-hour ":" time-minute
            raise ValueError(f"offset out of range: {zone}")
        offset = (1 if zone[0] == "+" else -1) * (offset_hours * 3600 + offset_minutes * 60)
    try:
        seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)) - offset
    except (ValueError, OverflowError):
        raise ValueError(f"timestamp out of range: {text[:64]!r}") from None
    if seconds < 0:
        raise ValueError(f"timestamp before 1970: {text[:64]!r}")
    time_ns = seconds * 1_000_000_000 + int(fraction)
    if time_ns > MAX_TIME_NS:
        raise ValueError(_after_max_time(text))
    if second == 60 and not _is_leap_second_slot(seconds):
        raise ValueError(f"no such time (a leap second is 23:59:60 UTC on a month's last day): {text[:64]!r}")
    return time_ns


_DAYS_IN_MONTH = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _days_in_month(year: int, month: int) -> int:
    return 29 if month == 2 and calendar.isleap(year) else _DAYS_IN_MONTH[month]


def _is_leap_second_slot(seconds: int) -> bool:
    """Whether ``seconds`` (the epoch second of a ":60", which POSIX time, having no leap seconds,
    counts as the next minute's first second) is the first second of a month in UTC: RFC 3339
    (5.7, appendix D) puts a leap second at 23:59:60 UTC on the last day of a month, and only there."""
    if seconds % 86400:
        return False
    return time.gmtime(seconds).tm_mday == 1


def format_time_ns(time_ns: int) -> str:
    """Falco's form: UTC, 9 fractional digits, Z."""
    seconds, nanos = divmod(time_ns, 1_000_000_000)
    return f"{_utc_second(seconds)}.{nanos:09d}Z"


@functools.lru_cache(maxsize=256)
def _utc_second(seconds: int) -> str:
    # Every alert is journaled with its time formatted; a storm's alerts share a few seconds.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def _require_text(value: object, name: str, limit: int, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise AlertError(name, f"must be a string, got {json_type(value)}")
    if not allow_empty and (not value or value.isspace()):
        raise AlertError(name, "must not be empty")
    if len(value) > limit:
        raise AlertError(name, f"longer than {limit} characters")
    if "\x00" in value:
        raise AlertError(name, "contains a NUL character")
    if not value.isascii():
        _require_unicode(value, name)
    return value


# A JSON string may hold a UTF-16 surrogate escape with no partner ("\ud800"): Python decodes it to
# a lone surrogate, which is not Unicode text. It cannot be encoded as UTF-8, so it could be neither
# journaled (SQLite) nor logged nor sent to Slack: it is refused with the rest of the alert. (A valid
# pair, "\ud83d\ude00", decodes to one character and is taken.)
_SURROGATE = re.compile("[\ud800-\udfff]")


def unicode_problem(text: str) -> str | None:
    """Why ``text`` is not valid Unicode text (it holds a lone surrogate), or None when it is."""
    found = _SURROGATE.search(text)
    if found is None:
        return None
    return (
        f"not valid Unicode (a lone surrogate \\u{ord(found.group()):04x} at character {found.start() + 1})"
    )


def _require_unicode(value: str, name: str, prefix: str = "") -> None:
    problem = unicode_problem(value)
    if problem is not None:
        raise AlertError(name, prefix + problem)


def json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _normalise_fields(raw: object) -> dict[str, FieldValue]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise AlertError("output_fields", f"must be an object, got {json_type(raw)}")
    if len(raw) > MAX_FIELDS:
        raise AlertError("output_fields", f"more than {MAX_FIELDS} fields")
    fields: dict[str, FieldValue] = {}
    for key, value in raw.items():
        if type(key) is not str or not key or len(key) > MAX_FIELD_NAME_CHARS:
            raise AlertError("output_fields", f"bad field name {str(key)[:64]!r}")
        if not key.isascii():
            _require_unicode(key, "output_fields", f"bad field name {key[:64]!r}: ")
        kind = type(value)
        # Exact type checks first: the common cases cost one comparison each (hot path).
        if kind is str:
            if value == MISSING_TEXT:
                continue  # gRPC's <NA>: not available
            if len(value) > MAX_FIELD_VALUE_CHARS:
                raise AlertError(f"output_fields.{key}", f"longer than {MAX_FIELD_VALUE_CHARS} characters")
            if not value.isascii():
                _require_unicode(value, f"output_fields.{key}")
            fields[key] = value
        elif kind is int or kind is bool:
            fields[key] = value
        elif value is None:
            continue  # Falco's JSON null: not available
        else:
            fields[key] = _unusual_field(key, value)
    return fields


def _unusual_field(key: str, value: object) -> FieldValue:
    where = f"output_fields.{key}"
    if isinstance(value, str):
        if value == MISSING_TEXT:
            raise AlertError(where, "a missing value cannot be a str subclass")  # never from JSON or gRPC
        if len(value) > MAX_FIELD_VALUE_CHARS:
            raise AlertError(where, f"longer than {MAX_FIELD_VALUE_CHARS} characters")
        _require_unicode(value, where)
        return str(value)
    if isinstance(value, bool | int):
        return value  # subclasses of the JSON types
    if isinstance(value, float):
        if not math.isfinite(value):
            raise AlertError(where, "must be a finite number")
        return value
    if isinstance(value, list) and all(isinstance(item, str | int | float | bool) for item in value):
        if any(isinstance(item, float) and not math.isfinite(item) for item in value):
            raise AlertError(where, "must hold finite numbers only")
        # List-valued fields (e.g. fd.types) printed the way Falco's text output does.
        text = "(" + ",".join(field_text(item) for item in value) + ")"
        if len(text) > MAX_FIELD_VALUE_CHARS:
            raise AlertError(where, f"longer than {MAX_FIELD_VALUE_CHARS} characters as text")
        _require_unicode(text, where)
        return text
    raise AlertError(where, f"must be a string, number or boolean, got {json_type(value)}")


def _normalise_tags(raw: object) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise AlertError("tags", f"must be an array of strings, got {json_type(raw)}")
    if len(raw) > MAX_TAGS:
        raise AlertError("tags", f"more than {MAX_TAGS} tags")
    for tag in raw:
        # Every alert has tags: plain good ones are taken without naming each one's field (and
        # the rare tag that is not ASCII is checked, by name, for lone surrogates).
        if (
            type(tag) is not str
            or not tag
            or len(tag) > MAX_TAG_CHARS
            or tag.isspace()
            or "\x00" in tag
            or not tag.isascii()
        ):
            return _checked_tags(raw)
    return tuple(sorted(set(raw)))


def _checked_tags(raw: list[object]) -> tuple[str, ...]:
    """Tags one by one: the first bad one is named by its index."""
    tags = [_require_text(tag, f"tags[{index}]", MAX_TAG_CHARS) for index, tag in enumerate(raw)]
    return tuple(sorted(set(tags)))


def canonical_source(source: str) -> str:
    """Falco's name for an event source: Falcosidekick fills a missing source with "syscalls",
    which is Falco's "syscall" (alerts and the policies matching them say it alike)."""
    return "syscall" if source == "syscalls" else source


def _normalise_source(raw: object) -> str:
    if raw is None or raw == "":
        return "syscall"
    return canonical_source(_require_text(raw, "source", 128))


# Output fields that repeat the alert's time (Falco's JSON adds one; its gRPC output has neither):
# left out of the content id, which has the time already, so that one event has one id whichever
# input it came through.
TIME_FIELDS = frozenset({"evt.time", "evt.time.iso8601"})


def compute_alert_id(
    rule: str,
    time_ns: int,
    hostname: str | None,
    source: str,
    output: str,
    priority: Priority | None = None,
    tags: tuple[str, ...] = (),
    fields: Mapping[str, FieldValue] | None = None,
    *,
    drill: bool = False,
) -> str:
    """A content id: the same alert delivered twice (a Falco retry, a replayed line) gets the same
    id; one that differs in anything the policy reads (priority, tags, fields) does not. A drill's
    (``drill``: its sender's) differs from Falco's of the same content: a drill replaying a captured
    alert must not be taken for Falco's delivery of it (nor Falco's, later, for a drill's repeat).

    The fields count since they alone may tell two alerts apart: Falco without
    ``json_include_output_property`` sends no output, and append_output's extra fields are in
    output_fields only. Alerts with fields got ids without them before: one redelivered across
    that upgrade (a replay of a file half ingested before it) is journaled a second time (within
    the dedupe window, as a repeat of its incident). Alerts without fields (but the time's) keep
    their ids; journaled alerts keep theirs (responder.journal.rows.decode_journaled)."""
    parts: tuple[str, ...] = (rule, str(time_ns), hostname or "", source, output)
    if priority is not None:
        parts += (str(int(priority)), ",".join(tags))
    fields_text = _fields_text(fields) if fields else ""
    if fields_text:
        parts += (fields_text,)
    if drill:  # only a drill's: Falco's alerts keep the ids earlier versions gave them
        parts += ("drill",)
    joined = "\x1f".join(parts) + "\x1f"
    return hashlib.blake2b(joined.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _fields_text(fields: Mapping[str, FieldValue]) -> str:
    """The fields as the id reads them: by name (Falco's and Falcosidekick's JSON come sorted, so
    sorting costs one pass; gRPC's map has no order), each value as Falco prints it (gRPC carries
    ``34816`` and ``true`` as text, JSON as a number and a boolean), the time fields left out."""
    parts: list[str] = []
    for name in sorted(fields):
        if name in TIME_FIELDS:
            continue
        value = fields[name]
        parts.append(name)
        parts.append(value if type(value) is str else field_text(value))
    return "\x1e".join(parts)


TOP_LEVEL_FIELDS = frozenset(
    {"body", "rule", "priority", "time", "output", "output_fields", "tags", "hostname", "source", "uuid"}
)


def rejection_code(error: AlertError) -> str:
    """A short, bounded code for metrics ("bad_time"); never the attacker's own key names."""
    root = error.field.split(".", 1)[0].split("[", 1)[0]
    return f"bad_{root}" if root in TOP_LEVEL_FIELDS else "bad_payload"


def build_alert(
    *,
    rule: object,
    priority: object,
    time_ns: int,
    source: object,
    output: object,
    fields: object,
    tags: object,
    hostname: object,
    sidekick_uuid: object = None,
    sender: Sender | None = None,
) -> Alert:
    """Validate and normalise already-decoded parts (shared by the JSON and gRPC inputs)."""
    if not 0 <= time_ns <= MAX_TIME_NS:  # parse_time_ns holds it for the JSON inputs; gRPC's may not
        raise AlertError(
            "time", f"timestamp out of range (before 1970 or after {format_time_ns(MAX_TIME_NS)})"
        )
    rule_text = _require_text(rule, "rule", MAX_RULE_CHARS)
    if isinstance(priority, Priority):
        prio = priority
    else:
        prio_text = _require_text(priority, "priority", 32)
        try:
            prio = Priority.parse(prio_text)
        except ValueError as exc:
            raise AlertError("priority", str(exc)) from None
    output_text = (
        "" if output is None else _require_text(output, "output", MAX_OUTPUT_CHARS, allow_empty=True)
    )
    host = None if hostname in (None, "") else _require_text(hostname, "hostname", 253)
    uuid = None if sidekick_uuid in (None, "") else _require_text(sidekick_uuid, "uuid", 64)
    source_text = _normalise_source(source)
    alert_fields = _normalise_fields(fields)
    alert_tags = _normalise_tags(tags)
    return assemble_alert(
        rule_text, prio, time_ns, source_text, output_text, alert_fields, alert_tags, host, uuid, sender
    )


def assemble_alert(
    rule: str,
    priority: Priority,
    time_ns: int,
    source: str,
    output: str,
    fields: dict[str, FieldValue],
    tags: tuple[str, ...],
    hostname: str | None,
    sidekick_uuid: str | None,
    sender: Sender | None = None,
) -> Alert:
    """The Alert of parts already validated and normalised (by build_alert or the JSON decoder)."""
    return Alert(
        rule=rule,
        priority=priority,
        time_ns=time_ns,
        source=source,
        output=output,
        fields=fields,
        tags=tags,
        hostname=hostname,
        sidekick_uuid=sidekick_uuid,
        alert_id=compute_alert_id(
            rule, time_ns, hostname, source, output, priority, tags, fields, drill=is_drill(sender)
        ),
        sender=sender,
    )
