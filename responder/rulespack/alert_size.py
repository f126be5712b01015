"""The largest Falco JSON alert a rule's output can make: what ``inputs.http.max_body_bytes`` (the HTTP
input's largest body, and `ingest`'s longest line) must hold, or the rule's alerts can be made too
large to be taken (Falco's http_output drops an alert answered 413 without a word).

The arithmetic, per rule:

- each ``%field`` of the output appears twice in the alert: rendered into ``output``, and as the
  value of ``output_fields``, where its name is a key;
- a field's value is at most its cap (FIELD_BOUNDS: the driver's and libsinsp's limits, or what
  Kubernetes validates);
- a value whose bytes the attacker in the pod chooses (a command line, a path, a process or user
  name) is at worst all control bytes, which JSON writes as ``\\u00XX``: 6 bytes for each (Falco's
  JSON writer, nlohmann::json, escapes them so; other bytes take 1 to 3);
- plus the output's own text, the rule's name and tags, the time prefix Falco puts before the
  output, the ``evt.time`` output field Falco adds, the hostname and the JSON around it all.

Every field is taken at its cap at once, whatever the event: a bound, not a prediction. Falco's
``append_output`` extra fields, if configured, come on top.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

# JSON writes a control byte as \u00XX.
ESCAPED_BYTE = 6
# A path (MAX_PATH) and a process's arguments (MAX_PROC_ARG_ENV), as the drivers cap them; a
# process name (the kernel's comm, TASK_COMM_LEN); a user name (libscap's MAX_CREDENTIALS_STR_LEN).
PATH_BYTES = 4096
ARGS_BYTES = 4096
COMM_BYTES = 16
CREDENTIAL_BYTES = 256
# proc.cmdline: the process name, a space, then the arguments joined by spaces.
CMDLINE_BYTES = COMM_BYTES + 1 + ARGS_BYTES


@dataclass(frozen=True)
class FieldBound:
    max_bytes: int
    # The attacker chooses its bytes (so each may be escaped to ESCAPED_BYTE); else they are
    # validated printable text (Kubernetes names) or a number.
    chosen_by_attacker: bool


FIELD_BOUNDS: dict[str, FieldBound] = {
    "proc.cmdline": FieldBound(CMDLINE_BYTES, True),
    "proc.pcmdline": FieldBound(CMDLINE_BYTES, True),
    "proc.exepath": FieldBound(PATH_BYTES, True),
    "proc.name": FieldBound(COMM_BYTES, True),
    "proc.pname": FieldBound(COMM_BYTES, True),
    "proc.tty": FieldBound(10, False),  # a uint32
    "proc.pid": FieldBound(20, False),  # an int64
    "user.uid": FieldBound(10, False),  # a uint32
    "proc.is_exe_upper_layer": FieldBound(5, False),  # true or false
    "proc.is_exe_from_memfd": FieldBound(5, False),
    "user.name": FieldBound(CREDENTIAL_BYTES, True),  # read from the container's /etc/passwd
    "fd.name": FieldBound(PATH_BYTES, True),  # a path, or a socket's addresses (shorter)
    "fd.sip": FieldBound(45, False),  # an IPv6 address as text
    "fd.sport": FieldBound(5, False),
    "fd.l4proto": FieldBound(8, False),
    "evt.type": FieldBound(32, False),  # an event name
    "evt.abspath": FieldBound(PATH_BYTES, True),
    "evt.abspath.src": FieldBound(PATH_BYTES, True),
    "evt.abspath.dst": FieldBound(PATH_BYTES, True),
    "evt.arg.target": FieldBound(PATH_BYTES, True),
    "k8s.ns.name": FieldBound(63, False),  # a DNS label
    "k8s.pod.name": FieldBound(253, False),  # a DNS subdomain
    "container.id": FieldBound(64, False),  # hex
    "container.name": FieldBound(253, False),  # the pod spec's container name (a DNS label), or the runtime's
    "container.image.repository": FieldBound(255, False),  # the image reference grammar's bound
    "container.image.tag": FieldBound(128, False),  # the tag grammar's bound ([\w][\w.-]{0,127})
    "proc.cwd": FieldBound(PATH_BYTES, True),
}
# The output's prefix ("2025-01-28T10:00:00.123456789+0000: Informational ", ISO 8601 the longest).
OUTPUT_PREFIX_BYTES = 64
# "evt.time": an int64 in nanoseconds (or evt.time.iso8601: 35 bytes), with its key.
EVENT_TIME_FIELD_BYTES = 48
HOSTNAME_BYTES = 253
# Keys, quotes, separators, the time, priority and source values, Falcosidekick's uuid.
JSON_FRAME_BYTES = 512
# A field's key in output_fields: quotes, colon, comma.
FIELD_KEY_FRAME_BYTES = 6
# A tag in the tags array: quotes and comma.
TAG_FRAME_BYTES = 3

_OUTPUT_FIELD = re.compile(r"%([A-Za-z0-9_.]+(?:\[[^\]]*\])?)")


def output_fields(output: str) -> list[str]:
    """The ``%field`` names of a rule's output, in order."""
    return _OUTPUT_FIELD.findall(output)


def worst_value_bytes(field: str) -> int:
    """The most JSON bytes one value of ``field`` can take; KeyError for a field with no bound
    (a new field in the pack needs one: the bound cannot be guessed)."""
    bound = FIELD_BOUNDS[field]
    return bound.max_bytes * (ESCAPED_BYTE if bound.chosen_by_attacker else 1)


def worst_case_alert_bytes(rule: str, output: str, tags: Iterable[str]) -> int:
    """The largest Falco JSON alert of a rule with this name, output and tags (see the module)."""
    fields = output_fields(output)
    literal = len(_OUTPUT_FIELD.sub("", output).encode())
    values = sum(worst_value_bytes(field) for field in fields)
    keys = sum(len(field) + FIELD_KEY_FRAME_BYTES for field in fields)
    in_output = OUTPUT_PREFIX_BYTES + literal + values
    in_fields = keys + values + EVENT_TIME_FIELD_BYTES
    named = len(rule.encode()) + sum(len(tag.encode()) + TAG_FRAME_BYTES for tag in tags)
    return in_output + in_fields + named + HOSTNAME_BYTES + JSON_FRAME_BYTES


@dataclass(frozen=True)
class OversizedRule:
    rule: str
    worst_case_bytes: int


def rules_past_limit(
    rules: Iterable[tuple[str, str, Iterable[str]]], max_body_bytes: int
) -> list[OversizedRule]:
    """Of (name, output, tags) rules, those whose worst-case alert is larger than ``max_body_bytes``,
    largest first. A rule whose output uses a field with no bound here (one of Falco's own rules,
    say) is passed over: its worst case is not known, and guessing it would be a false alarm."""
    oversized = []
    for name, output, tags in rules:
        if any(field not in FIELD_BOUNDS for field in output_fields(output)):
            continue
        worst = worst_case_alert_bytes(name, output, tags)
        if worst > max_body_bytes:
            oversized.append(OversizedRule(name, worst))
    return sorted(oversized, key=lambda rule: (-rule.worst_case_bytes, rule.rule))
