"""The audit trail from the journal: alert -> decision -> actions -> notifications, with timings.
Shared by `serving-guard audit`, the HTTP `GET /v1/audit` endpoint and `serving-guard verify`."""

from __future__ import annotations

import functools
import json
import re
import sqlite3
import time
import types
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NotRequired, TypedDict, Union, get_args, get_origin, get_type_hints, is_typeddict
from urllib.parse import parse_qsl

from responder.actions.outcome import (
    BLOCK_POLICY,
    BLOCKED_ADDRESS,
    EXCLUDED_BEYOND,
    ISOLATED,
    KEPT_OUT,
    KEPT_OUT_BY,
    LABELLED,
    LAPSED_ACTION,
    LAPSED_LABEL_GONE,
    LAPSED_WORDS,
    NOT_PATCHED,
    REASON,
    RECHECK,
    RESPONDER_ACTOR,
    UNBLOCKED,
    WIDENED,
    OutcomeStatus,
)
from responder.alert import AlertError, format_time_ns, parse_time_ns
from responder.dedupe import INCIDENT_ID
from responder.journal import INCIDENTS_WITH_SEEN_SQL
from responder.journal_rows import decode_payload
from responder.records import DECIDED_AGAIN
from responder.sender import sender_text
from responder.terminal import printable

MAX_LIMIT = 5000
PAGE = 1000
# The journal's times are SQLite INTEGERs (signed 64-bit nanoseconds): 1970 to 2262-04-11.
MAX_SINCE_NS = 2**63 - 1
# What a since may be, as the HTTP API and the commands' --since read it (parse_since, below).
SINCE_FORMS = "15m, 2h, 3d, epoch nanoseconds or an RFC 3339 time"
# Kubernetes names: a namespace is a DNS label, a pod's name a DNS subdomain.
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_POD_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
# A response policy's name, as the config takes it ("default": alerts no policy matched).
_POLICY_NAME = re.compile(r"[A-Za-z0-9][-A-Za-z0-9_. ]{0,127}")


def since_out_of_range(name: str, text: str) -> str:
    """The one wording of a since the journal's times cannot reach, for the HTTP API's ``since``
    and the commands' ``--since`` alike (``name`` is the one the user gave)."""
    return f"{name} {text[:64]!r}: out of range (1970-01-01T00:00:00Z to {format_time_ns(MAX_SINCE_NS)})"


@dataclass(frozen=True)
class AuditQuery:
    since_ns: int = 0
    namespace: str | None = None
    pod: str | None = None
    # Only alerts whose output or fields carry this run's marker, sg-run=<run_id> as a whole
    # (simulator runs tag their processes): see _mentions.
    run_id: str | None = None
    # Only alerts of incidents this response policy decided (e.g. one on trial, to see what it did).
    policy: str | None = None
    # Only this incident's alerts (its id as Slack shows it): the whole story of one incident.
    incident: str | None = None
    limit: int = 500

    def __post_init__(self) -> None:
        if not 0 <= self.since_ns <= MAX_SINCE_NS:
            raise ValueError(since_out_of_range("since", str(self.since_ns)))
        if self.policy is not None:
            self.check_policy(self.policy)
        if self.incident is not None:
            self.check_incident(self.incident)
        if not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")

    @classmethod
    def check_policy(cls, text: str, what: str = "policy") -> str:
        """A response policy's name as the config writes it; a ValueError naming ``what`` if not."""
        if not _POLICY_NAME.fullmatch(text):
            raise ValueError(f"{what} {text[:140]!r} is not a policy name (as the config's policies[].name)")
        return text

    @classmethod
    def check_incident(cls, text: str, what: str = "incident") -> str:
        """An incident's id (inc- and 20 hex digits); a ValueError naming ``what`` if not."""
        if not INCIDENT_ID.fullmatch(text):
            raise ValueError(f"{what}: {text[:80]!r} is not an incident id (inc- and 20 hex digits)")
        return text

    @classmethod
    def parse_pod(cls, text: str, what: str = "pod") -> tuple[str, str]:
        """``NAMESPACE/NAME`` (Kubernetes names) to its two parts; a ValueError naming the problem
        and ``what`` was given (``--pod`` on the command line)."""
        namespace, sep, name = text.partition("/")
        # Echoed at most this long: a longer value is no name (253 + 1 + 63 at most) anyway.
        shown = text if len(text) <= 320 else text[:320] + "..."
        if not sep or not namespace or not name or "/" in name:
            raise ValueError(f"{what} must be NAMESPACE/NAME, got {shown!r}")
        if not _NAMESPACE.fullmatch(namespace):
            raise ValueError(
                f"{what} {shown}: {namespace[:64]!r} is not a namespace name "
                "(lower-case letters, digits, '-')"
            )
        if not _POD_NAME.fullmatch(name):
            raise ValueError(
                f"{what} {shown}: {name[:253]!r} is not a pod name (lower-case letters, digits, '-', '.')"
            )
        return namespace, name


# -- the query, as `GET /v1/audit` and the commands' --since read it ------------------------------


AUDIT_PARAMETERS = ("since", "pod", "run_id", "policy", "incident", "limit", "format")
AUDIT_FORMATS = ("json", "table")


def audit_params(query_string: str) -> dict[str, str]:
    """The parameters of ``GET /v1/audit``, each at most once; ValueError for an unknown or repeated
    one (a typo like ``limt`` would otherwise answer the whole trail) or an unknown format."""
    params: dict[str, str] = {}
    for key, value in parse_qsl(query_string, keep_blank_values=True):
        if key not in AUDIT_PARAMETERS:
            raise ValueError(f"unknown parameter {key[:64]!r} (known: {', '.join(AUDIT_PARAMETERS)})")
        if key in params:
            raise ValueError(f"parameter {key!r} given more than once")
        params[key] = value
    if params.get("format", "json") not in AUDIT_FORMATS:
        raise ValueError(f"format must be json or table, got {params['format'][:64]!r}")
    return params


def audit_query_from(params: Mapping[str, str]) -> AuditQuery:
    """The query ``GET /v1/audit`` asks for (its parameters, as audit_params gives them)."""
    since_ns = 0
    if params.get("since"):
        since_ns = parse_since(params["since"])
    namespace = pod = None
    if params.get("pod"):
        namespace, pod = AuditQuery.parse_pod(params["pod"])
    limit_text = str(params.get("limit", "500")).strip()
    digits = limit_text.lstrip("0") or "0"
    limit = int(digits) if limit_text.isascii() and limit_text.isdigit() and len(digits) <= 4 else 0
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be a whole number between 1 and {MAX_LIMIT}, got {limit_text[:40]!r}")
    return AuditQuery(
        since_ns=since_ns,
        namespace=namespace,
        pod=pod,
        run_id=params.get("run_id") or None,
        policy=params.get("policy") or None,
        incident=params.get("incident") or None,
        limit=limit,
    )


def parse_since(text: str, now_ns: int | None = None, *, name: str = "since") -> int:
    """'15m', '2h', '3d', '30s', epoch nanoseconds, or an RFC 3339 time; ValueError (a message
    for the user naming ``name``: the query parameter, or a command's flag) for anything else or
    for a time the journal cannot hold (before 1970, or past 2262-04-11, the end of signed 64-bit
    nanoseconds)."""
    text = text.strip()
    now = time.time_ns() if now_ns is None else now_ns
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    amount = text[:-1]
    if text[-1:] in units and amount.isascii() and amount.replace(".", "", 1).isdigit():
        ago_ns = float(amount) * units[text[-1]] * 1e9  # inf for a number too long for a float
        if ago_ns > now:  # it reaches back before 1970
            raise ValueError(since_out_of_range(name, text))
        return now - int(ago_ns)
    if text.isascii() and text.isdigit():
        # Compared as text first: int() refuses very long digit strings with its own message.
        digits = text.lstrip("0") or "0"
        if len(digits) > len(str(MAX_SINCE_NS)) or int(digits) > MAX_SINCE_NS:
            raise ValueError(since_out_of_range(name, text))
        value = int(digits)
        if 0 < value < _EPOCH_NS_FROM:
            # `date +%s` (or milliseconds) read as nanoseconds is 1970: the whole trail, unsaid.
            if len(digits) not in _EPOCH_UNIT_BY_DIGITS:  # 17 digits: no other unit makes it a time
                raise ValueError(
                    f"{name} {text[:64]!r}: epoch nanoseconds before 1973, taken for a mistake: give"
                    " an RFC 3339 time, or like 15m, 2h, 3d"
                )
            unit, scale = _EPOCH_UNIT_BY_DIGITS[len(digits)]
            raise ValueError(
                f"{name} {text[:64]!r}: epoch {unit}, not nanoseconds (that would be 1970): give"
                f" {value * scale} for that time, or like 15m, 2h, 3d or an RFC 3339 time"
            )
        return value
    try:
        return parse_time_ns(text)
    except ValueError as exc:
        if _time_out_of_range(text):
            raise ValueError(since_out_of_range(name, text)) from None
        if _LOOKS_LIKE_A_DATE.match(text):
            raise ValueError(f"{name}: {exc}") from None  # a date, but not a possible one: say why
        raise ValueError(f"{name} must be like {SINCE_FORMS}, got {text[:64]!r}") from None


def _time_out_of_range(text: str) -> bool:
    """Whether ``text``, a time the parser refused, is a well-formed time with a zone outside what
    the journal holds (the parser words that for alerts' timestamps, not for a since)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return False
    if moment.tzinfo is None:
        return False
    seconds = (moment.replace(microsecond=0) - _EPOCH) // timedelta(seconds=1)
    # In the journal's last second the parser refuses only a fraction past its last nanosecond.
    return not 0 <= seconds < MAX_SINCE_NS // 1_000_000_000


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Epoch nanoseconds below this (1973-03-03) are taken for seconds or milliseconds someone meant
# (epoch seconds stay below it until the year 5138); 0 still means everything.
_EPOCH_NS_FROM = 10**17
# What a shorter number most likely is, by its digits (seconds reach 11 digits in 2286), and its
# nanoseconds' factor.
_EPOCH_UNIT_BY_DIGITS = {
    **dict.fromkeys(range(1, 12), ("seconds", 10**9)),
    **dict.fromkeys(range(12, 15), ("milliseconds", 10**6)),
    **dict.fromkeys(range(15, 17), ("microseconds", 10**3)),
}
_LOOKS_LIKE_A_DATE = re.compile(r"\d{4}-\d\d-\d\d")


# -- the trail's shape, as `GET /v1/audit` answers it ------------------------------------------------
# What load_trail produces and what a client reading the HTTP answer accepts (read_answer): keys a
# reader relies on, with their JSON types. Keys not listed here are allowed (and kept).


class Verification(TypedDict):
    status: str
    reason: NotRequired[str]
    container_name: NotRequired[str | None]


class Reopens(TypedDict):
    """The earlier incident an incident reopens: what it put on the pod no longer held."""

    incident_id: str
    # What no longer held: "quarantine" or "block_destination"; and what undid it, in words.
    lapsed: str
    detail: str
    checked_ns: int


class Decision(TypedDict):
    policy: str
    actions: NotRequired[list[str]]
    requested: NotRequired[list[str]]
    dry_run: NotRequired[bool]
    # What put it in dry-run: "guardrails" (guardrails.dry_run) or "policy" (the policy's own dry_run).
    dry_run_by: NotRequired[str]
    withheld: NotRequired[list[str]]
    slack_channel: NotRequired[str | None]
    notify: NotRequired[bool]
    unverified: NotRequired[bool]
    breaker_open: NotRequired[bool]
    block_breaker_open: NotRequired[bool]
    # The cut its quarantine makes (both, egress or ingress), when it requests one.
    isolate: NotRequired[str]
    # The incident was opened because what an earlier one put on the pod no longer held.
    reopens: NotRequired[Reopens]
    # When this decision was made again (a withheld isolation tried again): the incident's
    # decided_ns is its first decision's time.
    decided_again_ns: NotRequired[int]


class ActionRecord(TypedDict):
    action: str
    status: str
    detail: str
    started_ns: int
    finished_ns: int
    duration_ms: float | None
    actor: str | None
    leaky_policies: NotRequired[list[str]]
    patched_policies: NotRequired[list[str]]
    # The one direction a quarantine cut (quarantine.isolate egress or ingress); absent: both.
    isolated: NotRequired[str]
    # Leaking policies patch_other_policies left alone (they also restrict the direction left open).
    not_patched: NotRequired[list[str]]
    # Policies still excluding quarantined pods as an earlier version patched them (every cut), or
    # since their types changed: their rules no longer apply in the direction left open.
    excluded_beyond: NotRequired[list[str]]
    # Why a person took the action (an action by hand: actor is not the responder).
    reason: NotRequired[str]
    # block_destination: the address blocked (or that could not be) and the pod's block policy.
    address: NotRequired[str]
    network_policy: NotRequired[str]
    # ...the policies it came to widen (in force, but they no longer restrict), and the addresses it
    # let go because block_destination.never_block holds them now.
    widened: NotRequired[list[str]]
    unblocked: NotRequired[list[str]]
    # ...for a block that made nothing, what kept the address out already ("quarantine" or
    # "policies") and the NetworkPolicies that do.
    kept_out: NotRequired[str]
    kept_out_by: NotRequired[list[str]]
    # The action left the pod labelled: into its block policy (a block made), or into a quarantine.
    labelled: NotRequired[bool]
    # recheck (status lapsed): what the incident put on the pod that no longer holds ("quarantine"
    # or "block_destination"); the detail says what undid it.
    lapsed: NotRequired[str]
    # namespace/pod, when the action was on another pod than the incident's (an earlier version let
    # `--incident` journal one so); the incident's story leaves it out.
    other_pod: NotRequired[str]


class NotificationRecord(TypedDict):
    kind: str
    state: str
    attempts: int
    channel: str | None
    slack_channel: str | None
    slack_ts: str | None
    # The thread the post went into (a workload thread's or the incident's own root); None: top
    # level. Absent in answers from responders before it was recorded.
    slack_thread_ts: NotRequired[str | None]
    last_error: str | None
    sent_ns: int | None
    # A by_hand or lapse notification's action (the journal's actions.id).
    action_id: NotRequired[int]


class IncidentRecord(TypedDict):
    incident_id: str
    count: int
    # Not there for an incident pruned before its alerts.
    opened_ns: NotRequired[int]
    last_seen_ns: NotRequired[int]
    decided_ns: NotRequired[int | None]
    verification: NotRequired[Verification | None]
    decision: NotRequired[Decision | None]
    actions: list[ActionRecord]
    notifications: list[NotificationRecord]


class Timings(TypedDict):
    to_decision: float | None
    to_quarantine: float | None
    to_notification: float | None


class SenderRecord(TypedDict):
    """Who sent an alert, as its input authenticated it (responder.sender.Sender)."""

    address: str
    # certificate, token, drill-token or none (inputs.http.allow_unauthenticated); server-certificate
    # or socket (gRPC); file (ingest).
    proof: str
    # The verified client certificate's common name and DNS names, when one was presented.
    certificate: NotRequired[list[str]]
    # Which token of inputs.http.token (proof token) or drill_token (proof drill-token) matched (1:
    # its file's first line), never the token.
    token: NotRequired[int]
    # A drill (the drill token's, or `ingest --drill`): decided in dry-run unless guardrails.enforce_drills.
    drill: NotRequired[bool]


class AuditEntry(TypedDict):
    # What every reader needs first: a missing key is reported in this order.
    outcome: str
    rule: str
    received: str
    received_ns: int
    namespace: str | None
    pod: str | None
    incident_id: str | None
    state: str
    alert_id: str
    input: str
    priority: str
    alert: dict[str, Any]  # the alert as Falco's JSON
    # None: an alert journaled before its input named its sender (schema 7 for HTTP; gRPC and files later).
    sender: NotRequired[SenderRecord | None]
    incident: NotRequired[IncidentRecord]
    timings_ms: NotRequired[Timings]
    # An action a person took by hand outside any incident (outcome and input "by_hand"; no alert:
    # rule and priority empty, alert {}).
    action: NotRequired[ActionRecord]


class AuditAnswer(TypedDict):
    entries: list[AuditEntry]


def read_answer(payload: object) -> list[AuditEntry]:
    """The entries of a ``GET /v1/audit`` answer (decoded JSON), checked against the shapes above;
    a ValueError saying where it differs first (``entries[0]: missing 'outcome'``)."""
    _check(payload, AuditAnswer, "")
    answer: AuditAnswer = payload  # type: ignore[assignment]  # checked just above
    return answer["entries"]


_JSON_KINDS: dict[Any, str] = {
    str: "a string",
    int: "a whole number",
    float: "a number",
    bool: "true or false",
    list: "an array",
    dict: "an object",
    type(None): "null",
}


def _kind_of(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return "a number"
    return _JSON_KINDS.get(type(value), type(value).__name__)


def _wanted(expected: Any) -> str:
    if is_typeddict(expected):
        return "an object"
    if get_origin(expected) in (Union, types.UnionType):
        return " or ".join(_wanted(option) for option in get_args(expected))
    return _JSON_KINDS.get(get_origin(expected) or expected, str(expected))


@functools.cache
def _fields(shape: Any) -> tuple[tuple[str, Any, bool], ...]:
    """A TypedDict's keys: (name, type, required). Read from the annotations themselves: Python
    3.11 counts a NotRequired key as required under ``from __future__ import annotations``."""
    fields = []
    for name, hint in get_type_hints(shape, include_extras=True).items():
        optional = get_origin(hint) is NotRequired
        fields.append((name, get_args(hint)[0] if optional else hint, not optional))
    return tuple(fields)


def _check(value: object, expected: Any, path: str) -> None:
    """``value`` (decoded JSON) has the type ``expected``, else a ValueError naming ``path``."""
    if expected is Any:
        return
    where = f"{path}: " if path else ""
    origin = get_origin(expected)
    if origin in (Union, types.UnionType):
        options = get_args(expected)
        if value is None and type(None) in options:
            return
        (kind,) = [option for option in options if option is not type(None)]
        if not _matches_outer(value, kind):
            raise ValueError(f"{where}expected {_wanted(expected)}, got {_kind_of(value)}")
        _check(value, kind, path)
        return
    if not _matches_outer(value, expected):
        raise ValueError(f"{where}expected {_wanted(expected)}, got {_kind_of(value)}")
    if is_typeddict(expected):
        assert isinstance(value, dict)
        for name, kind, required in _fields(expected):
            if name in value:
                _check(value[name], kind, f"{path}.{name}" if path else name)
            elif required:
                raise ValueError(f"{where}missing {name!r}")
    elif origin is list:
        assert isinstance(value, list)
        (item,) = get_args(expected)
        for index, element in enumerate(value):
            _check(element, item, f"{path}[{index}]")
    elif origin is dict:
        assert isinstance(value, dict)
        _, item = get_args(expected)
        if item is not Any:
            for key, element in value.items():
                _check(element, item, f"{path}.{key}")


def _matches_outer(value: object, expected: Any) -> bool:
    if is_typeddict(expected):
        return isinstance(value, dict)
    kind = get_origin(expected) or expected
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _ms(start: int | None, end: int | None) -> float | None:
    if not start or not end:
        return None
    return round((end - start) / 1e6, 3)


# What a simulator run's marker is made of (simulators/scenario.py uses these):
# sg-run=<run id>.<scenario>.<step>, where a run id and a scenario name hold letters, digits, '_'
# and '-', and never a '.'.
RUN_MARKER_PREFIX = "sg-run="
RUN_ID_CHARS = "A-Za-z0-9_-"


def run_marker_pattern(needle: str) -> re.Pattern[str]:
    """Where the marker ``sg-run=<needle>`` (``<id>``, ``<id>.<scenario>`` or
    ``<id>.<scenario>.<step>``) stands as a whole: not after a character that could be part of it,
    nor before one that could continue a run id or a scenario name (a '.' may follow: the scenario,
    or the step). So run a-run1 is not team-a-run1, and a scenario shell is not
    shell-in-serving-pod."""
    body = re.escape(RUN_MARKER_PREFIX + needle)
    return re.compile(f"(?<![{RUN_ID_CHARS}]){body}(?![{RUN_ID_CHARS}])")


@functools.lru_cache(maxsize=64)
def _run_filter(needle: str) -> re.Pattern[str]:
    """The audit trail's run_id filter: the whole marker (run_marker_pattern); a value that starts
    with sg-run= itself is looked for as written (a text search: a prefix of many runs)."""
    if needle.startswith(RUN_MARKER_PREFIX):
        return re.compile(re.escape(needle))
    return run_marker_pattern(needle)


def _mentions(alert_json: dict[str, Any], needle: str) -> bool:
    pattern = _run_filter(needle)
    if pattern.search(str(alert_json.get("output", ""))):
        return True
    return any(pattern.search(str(value)) for value in (alert_json.get("output_fields") or {}).values())


def load_trail(conn: sqlite3.Connection, query: AuditQuery) -> list[dict[str, Any]]:
    """The newest ``limit`` matching entries, oldest first: the alerts, and the actions people took
    by hand outside any incident (see _by_hand_entries). Scans newest-first in pages, so a run id
    from a moment ago is found on a busy responder however much older traffic there is."""
    alerts = _alert_entries(conn, query)
    by_hand = _by_hand_entries(conn, query)
    if not by_hand:
        return alerts
    merged = sorted([*alerts, *by_hand], key=lambda entry: entry["received_ns"])
    return merged[-query.limit :]


# An entry's outcome (and input) for an action a person took by hand outside any incident.
BY_HAND = "by_hand"


def _by_hand_entries(conn: sqlite3.Connection, query: AuditQuery) -> list[dict[str, Any]]:
    """The newest ``limit`` actions taken by hand (serving-guard quarantine, block, release) without
    --incident, as entries of the trail beside the alerts: a release from a workstation is in
    the trail a security engineer reads, not only in the journal. Not under a filter that selects
    alerts or incidents (a run, a policy, an incident): such an action has none of them."""
    if query.run_id is not None or query.policy is not None or query.incident is not None:
        return []
    where, params = _pod_filter(query)
    sql = f"SELECT * FROM actions WHERE incident_id IS NULL AND started_ns >= ?{where}"  # noqa: S608
    sql += " ORDER BY id DESC LIMIT ?"
    rows = conn.execute(sql, [query.since_ns, *params, min(query.limit, MAX_LIMIT)]).fetchall()
    return [
        {
            "alert_id": "",
            "received": format_time_ns(row["started_ns"]),
            "received_ns": row["started_ns"],
            "input": BY_HAND,
            "sender": None,
            "rule": "",
            "priority": "",
            "namespace": row["namespace"],
            "pod": row["pod"],
            "state": "done",
            "outcome": BY_HAND,
            "incident_id": None,
            "alert": {},
            "action": _action_record(row, None),
        }
        for row in reversed(rows)
    ]


def _pod_filter(query: AuditQuery) -> tuple[str, list[Any]]:
    """The SQL condition (`` AND ...``, or nothing) and parameters of the query's --pod."""
    where, params = "", []
    if query.namespace is not None:
        where += " AND namespace = ?"
        params.append(query.namespace)
    if query.pod is not None:
        where += " AND pod = ?"
        params.append(query.pod)
    return where, params


def _alert_entries(conn: sqlite3.Connection, query: AuditQuery) -> list[dict[str, Any]]:
    """The newest ``limit`` matching alerts, oldest first."""
    limit = min(query.limit, MAX_LIMIT)
    where, pod_params = _pod_filter(query)
    sql = f"SELECT * FROM alerts WHERE received_ns >= ? AND seq < ?{where}"  # noqa: S608
    params: list[Any] = [query.since_ns, *pod_params]
    if query.incident is not None:
        sql += " AND incident_id = ?"
        params.append(query.incident)
    sql += " ORDER BY seq DESC LIMIT ?"
    incidents: dict[str, dict[str, Any]] = {}
    newest_first: list[dict[str, Any]] = []
    before = 2**63 - 1
    while len(newest_first) < limit:
        rows = conn.execute(sql, [params[0], before, *params[1:], PAGE]).fetchall()
        if not rows:
            break
        before = rows[-1]["seq"]
        for row in rows:
            entry = _entry(conn, row, query, incidents)
            if entry is not None:
                newest_first.append(entry)
                if len(newest_first) >= limit:
                    break
    newest_first.reverse()
    return newest_first


def _entry(
    conn: sqlite3.Connection, row: sqlite3.Row, query: AuditQuery, incidents: dict[str, dict[str, Any]]
) -> dict[str, Any] | None:
    try:
        alert = decode_payload(row["payload"])
    except (AlertError, ValueError, zlib.error):
        return None
    alert_json = alert.to_falco_json()
    if query.run_id and not _mentions(alert_json, query.run_id):
        return None
    incident_id = row["incident_id"]
    entry: dict[str, Any] = {
        "alert_id": row["alert_id"],
        "received": format_time_ns(row["received_ns"]),
        "received_ns": row["received_ns"],
        "input": row["input"],
        "sender": _sender(row),
        "rule": row["rule"],
        "priority": alert.priority.label,
        "namespace": row["namespace"],
        "pod": row["pod"],
        "state": row["state"],
        # Not final yet: "deferred" (taken while the pipeline was full, waiting for room) or "pending".
        "outcome": row["outcome"] or ("deferred" if row["state"] == "deferred" else "pending"),
        "incident_id": incident_id,
        "alert": alert_json,
    }
    if query.policy is not None and not incident_id:
        return None
    if incident_id:
        if incident_id not in incidents:
            incidents[incident_id] = _incident(conn, incident_id)
        incident = incidents[incident_id]
        if query.policy is not None and (incident.get("decision") or {}).get("policy") != query.policy:
            return None
        entry["incident"] = incident
        if row["outcome"] == "opened":
            entry["timings_ms"] = _timings(row["received_ns"], incident)
    return entry


def _timings(received_ns: int, incident: dict[str, Any]) -> dict[str, float | None]:
    quarantine_done = next(
        (
            a["finished_ns"]
            for a in incident["actions"]
            if a["action"] == "quarantine" and a["status"] in ("quarantined", "leaky")
        ),
        None,
    )
    sent = next((n["sent_ns"] for n in incident["notifications"] if n["state"] == "sent"), None)
    return {
        "to_decision": _ms(received_ns, incident.get("decided_ns")),
        "to_quarantine": _ms(received_ns, quarantine_done),
        "to_notification": _ms(received_ns, sent),
    }


def _outcome_fields(outcome: Mapping[str, Any]) -> dict[str, Any]:
    """An action's record's fields from its journaled outcome beyond the actions table's columns."""
    fields = {k: v for k, v in outcome.items() if k in ("leaky_policies", "patched_policies")}
    extra = outcome.get("extra") or {}
    isolated = extra.get(ISOLATED)
    if isinstance(isolated, str):
        fields["isolated"] = isolated
    for key in (NOT_PATCHED, EXCLUDED_BEYOND, WIDENED, UNBLOCKED, KEPT_OUT_BY):
        names = extra.get(key)
        if isinstance(names, list) and names:
            fields[key] = [str(name) for name in names]
    reason = extra.get(REASON)
    if isinstance(reason, str):
        fields["reason"] = reason
    for key in (BLOCKED_ADDRESS, BLOCK_POLICY, KEPT_OUT, LAPSED_ACTION):
        value = extra.get(key)
        if isinstance(value, str):
            fields[key] = value
    if extra.get(LABELLED) is True:
        fields["labelled"] = True
    if extra.get(LAPSED_LABEL_GONE) is True:
        fields[LAPSED_LABEL_GONE] = True
    return fields


def _column(row: sqlite3.Row, name: str) -> Any:
    """A column the journal of an earlier schema has not got yet (a reader reads such a journal as
    it is, the next writer to open it brings it up to date): None there, as its rows then had."""
    return row[name] if name in row.keys() else None  # noqa: SIM118 (`in` a Row looks at its values)


def _sender(row: sqlite3.Row) -> dict[str, Any] | None:
    """The alert's sender as journaled (responder.sender.Sender.record), or None."""
    record = _column(row, "sender")
    try:
        sender = json.loads(record) if record else None
    except ValueError:  # not ours to fail the whole trail on
        return None
    return sender if isinstance(sender, dict) else None


def _other_pod(action: sqlite3.Row, incident: sqlite3.Row | None) -> dict[str, str]:
    """{"other_pod": "namespace/pod"} for an action on another pod than its incident's (as
    Journal.incident_record leaves out), else nothing."""
    if incident is None or action["namespace"] is None:
        return {}
    if (action["namespace"], action["pod"]) == (incident["namespace"], incident["pod"]):
        return {}
    return {"other_pod": f"{action['namespace']}/{action['pod']}"}


def _action_record(action: sqlite3.Row, incident: sqlite3.Row | None) -> dict[str, Any]:
    """An actions row as the trail gives it (ActionRecord); ``incident``: its incident's row."""
    return {
        "action": action["action"],
        "status": action["status"],
        "detail": action["detail"],
        "started_ns": action["started_ns"],
        "finished_ns": action["finished_ns"],
        "duration_ms": _ms(action["started_ns"], action["finished_ns"]),
        "actor": action["actor"],
        **_outcome_fields(json.loads(action["outcome"])),
        **_other_pod(action, incident),
    }


def _incident(conn: sqlite3.Connection, incident_id: str) -> dict[str, Any]:
    row = conn.execute(INCIDENTS_WITH_SEEN_SQL + " WHERE i.incident_id = ?", (incident_id,)).fetchone()
    actions = [
        _action_record(a, row)
        for a in conn.execute("SELECT * FROM actions WHERE incident_id = ? ORDER BY id", (incident_id,))
    ]
    notifications = [
        {
            "kind": n["kind"],
            "state": n["state"],
            "attempts": n["attempts"],
            "channel": n["channel"],
            "slack_channel": n["slack_channel"],
            "slack_ts": n["slack_ts"],
            "slack_thread_ts": _column(n, "slack_thread_ts"),
            "last_error": n["last_error"],
            "sent_ns": n["sent_ns"],
            **({"action_id": n["action_id"]} if _column(n, "action_id") is not None else {}),
        }
        for n in conn.execute("SELECT * FROM notifications WHERE incident_id = ? ORDER BY id", (incident_id,))
    ]
    if row is None:
        # No incident row (pruned before its alerts): its alerts, counted one by one.
        seen = conn.execute("SELECT COUNT(*) FROM alerts WHERE incident_id = ?", (incident_id,)).fetchone()[0]
        return {"incident_id": incident_id, "count": seen, "actions": actions, "notifications": notifications}
    return {
        "incident_id": incident_id,
        "count": row["seen"],
        "opened_ns": row["opened_ns"],
        "last_seen_ns": row["last_seen_ns"],
        "decided_ns": row["decided_ns"],
        "verification": json.loads(row["verification"]) if row["verification"] else None,
        "decision": json.loads(row["decision"]) if row["decision"] else None,
        "actions": actions,
        "notifications": notifications,
    }


# An action's statuses that changed the pod (a quarantine, leaky or not, or an annotation).
DONE_STATUSES = frozenset(
    {OutcomeStatus.QUARANTINED, OutcomeStatus.LEAKY, OutcomeStatus.ANNOTATED, OutcomeStatus.BLOCKED}
)


def incident_outcome_text(incident: Mapping[str, Any]) -> str:
    """What was done to the pod, or predicted, in a few words (an audit entry's incident)."""
    parts = []
    for action in incident.get("actions") or []:
        status = action.get("status", "?")
        leaky = ", ".join(action.get("leaky_policies") or [])
        if status == OutcomeStatus.BLOCKED and action.get("kept_out"):
            address = action.get("address", "?")
            parts.append(f"no block made: {address} already kept out by {action['kept_out']}")
        elif status == OutcomeStatus.BLOCKED:
            parts.append(f"blocked {action.get('address', '?')}")
        elif status == OutcomeStatus.LEAKY:
            parts.append("LEAKY: still allowed by " + (leaky or "?"))
        elif status == OutcomeStatus.LAPSED:
            parts.append(f"{_lapsed_words(action)} no longer held")
        elif status == OutcomeStatus.WITHHELD:
            parts.append(f"{action.get('action')} withheld")
        elif status == OutcomeStatus.DRY_RUN:
            parts.append(
                f"dry-run: would {action.get('action')}" + (f", LEAKY through {leaky}" if leaky else "")
            )
        else:
            parts.append(f"{status}" if status in DONE_STATUSES else f"{action.get('action')} {status}")
        actor = action.get("actor")
        if actor and actor != RESPONDER_ACTOR:
            parts[-1] += f" by {actor}"
    return "; ".join(parts) or _told_only_text(incident)


def _told_only_text(incident: Mapping[str, Any]) -> str:
    """What became of an incident nothing was done about: whether anyone was told, as its Slack
    notifications say (none at all: Slack disabled, or the decision told no one)."""
    states = {n.get("state") for n in incident.get("notifications") or []}
    if "sent" in states:
        return "notified only"
    if not states:
        return "recorded only (no one notified)"
    if states & {"pending", "sending"}:
        return "notification pending (no one notified yet)"
    return "notification failed (no one notified)"  # failed, or dropped


def _incidents_of(
    entries: Sequence[Mapping[str, Any]],
) -> tuple[dict[str, Mapping[str, Any]], dict[str, Mapping[str, Any]]]:
    """The entries' incidents by id, in the order they first appear, and each one's first entry."""
    incidents: dict[str, Mapping[str, Any]] = {}
    first: dict[str, Mapping[str, Any]] = {}
    for entry in entries:
        incident = entry.get("incident")
        if incident and entry["incident_id"] not in incidents:
            incidents[entry["incident_id"]] = incident
            first[entry["incident_id"]] = entry
    return incidents, first


def _marked(entry: Mapping[str, Any], incident: Mapping[str, Any]) -> str:
    """What an incident's outcome is read with: a drill's (a replay decided in dry-run, not a policy
    that did not act on an attack) and a possible forgery's (nothing done to the pod on purpose)
    are told apart, as the table's SENDER and VERIFIED columns do (review-operator L1)."""
    marks = []
    if (entry.get("sender") or {}).get("drill"):
        marks.append("DRILL")
    if (incident.get("verification") or {}).get("status") in ("unverified", "pod_not_found"):
        marks.append("UNVERIFIED")
    return f"{' '.join(marks)}: " if marks else ""


def format_summary(entries: Sequence[Mapping[str, Any]], *, cut_at: int | None = None) -> str:
    """The entries' incidents, one line each (what was done to which pod, or predicted, and how
    many alerts it took), then how many incidents ended each way: what a policy on trial would have
    done, or what an alert storm amounted to. ``cut_at``: the --limit that left older entries out."""
    incidents, first = _incidents_of(entries)
    header = ("OPENED (UTC)", "RULE", "POD", "POLICY", "ALERTS", "OUTCOME")
    rows = [header]
    outcomes: dict[str, int] = {}
    pods = set()
    podless = 0
    for incident_id, incident in incidents.items():
        entry = first[incident_id]
        opened = incident.get("opened_ns")
        outcome = _marked(entry, incident) + (
            incident_outcome_text(incident) if incident.get("decision") else "not decided yet"
        )
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if entry["namespace"] and entry["pod"]:  # a host event or Falco's own names none
            pods.add((entry["namespace"], entry["pod"]))
        else:
            podless += 1
        rows.append(
            (
                _table_time(format_time_ns(opened) if isinstance(opened, int) else entry["received"])[:19],
                entry["rule"][:48],
                f"{entry['namespace'] or '-'}/{entry['pod'] or '-'}",
                (incident.get("decision") or {}).get("policy", "-"),
                str(incident.get("count", "?")),
                outcome,
            )
        )
    shown = [[printable(value) for value in row] for row in rows]
    widths = [max(len(r[i]) for r in shown) for i in range(len(header))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in shown]
    alerts = sum(int(i.get("count") or 0) for i in incidents.values())
    without = f" ({podless} naming no pod)" if podless else ""
    lines += ["", f"{len(incidents)} incident(s) on {len(pods)} pod(s){without}, {alerts} alert(s) in all:"]
    lines += [
        f"  {count:>6}  {printable(text)}" for text, count in sorted(outcomes.items(), key=lambda o: -o[1])
    ]
    by_hand = [entry for entry in entries if entry["outcome"] == BY_HAND]
    if by_hand:
        lines += ["", f"{len(by_hand)} action(s) by hand outside any incident:"]
        lines += [
            printable(f"  {entry['namespace']}/{entry['pod']}: {_action_text(entry.get('action') or {})}")
            for entry in by_hand
        ]
    if cut_at is not None:
        lines.append(truncated_note(cut_at))
    return "\n".join(lines)


def truncated_note(limit: int) -> str:
    """Said when --limit left older entries out (or, at MAX_LIMIT, may have)."""
    return f"(read from the newest {limit} entries only: raise --limit to take in older ones)"


def _utc(time_ns: object) -> str:
    """A journal time as people read it (milliseconds, UTC), or '-'."""
    return format_time_ns(time_ns)[:23].replace("T", " ") + " UTC" if isinstance(time_ns, int) else "-"


def _decision_text(decision: Mapping[str, Any] | None) -> str:
    if not decision:
        return "not decided yet"
    text = f"policy {decision.get('policy', '-')}: {', '.join(decision.get('actions') or []) or 'nothing'}"
    if decision.get("isolate") in ("egress", "ingress"):
        text += f" ({decision['isolate']} cut)"
    if decision.get("dry_run"):
        text += f" (dry-run by {decision.get('dry_run_by') or 'guardrails'})"
    withheld = decision.get("withheld") or []
    if withheld:
        text += "; withheld: " + "; ".join(str(reason) for reason in withheld)
    again = decision.get(DECIDED_AGAIN)
    if isinstance(again, int):
        text += f"; decided again {_utc(again)}, tried again after it was withheld"
    reopens = decision.get("reopens")
    if isinstance(reopens, Mapping):
        text += (
            f"; reopens {reopens.get('incident_id', '?')}: its {_lapsed_words(reopens)} no longer held"
            f" ({reopens.get('detail') or '?'}; checked {_utc(reopens.get('checked_ns'))})"
        )
    return text


def _lapsed_words(record: Mapping[str, Any]) -> str:
    """What a lapse (a recheck's record, or a decision's reopens) says no longer holds."""
    lapsed = str(record.get("lapsed") or "quarantine")
    return LAPSED_WORDS.get(lapsed, lapsed)


def _action_text(action: Mapping[str, Any]) -> str:
    text = f"{_utc(action.get('finished_ns'))}  {action.get('action')} {action.get('status')}"
    if action.get("action") == RECHECK and action.get("status") == OutcomeStatus.LAPSED:
        text += f": the {_lapsed_words(action)} no longer holds"
    # A release's detail starts with who and why, said at the end as for every action by hand.
    said = f"{action.get('status')} by {action.get('actor')}: {action.get('reason')}"
    detail = str(action.get("detail") or "")
    if action.get("reason") and detail.startswith(said):
        detail = detail[len(said) :].lstrip("; ")
    if action.get("leaky_policies"):
        text += " (still allowed by " + ", ".join(action["leaky_policies"]) + ")"
    elif detail:
        text += f" ({detail})"
    text += f" by {action.get('actor') or RESPONDER_ACTOR}"
    if action.get("other_pod"):
        text += f" on {action['other_pod']}, not this incident's pod"
    return text + (f": {action['reason']}" if action.get("reason") else "")


def _notification_text(notification: Mapping[str, Any]) -> str:
    text = f"{notification.get('kind')} {notification.get('state')}"
    where = notification.get("slack_channel") or notification.get("channel")
    if notification.get("slack_ts"):
        text += f" at {where} {notification['slack_ts']}"
        thread = notification.get("slack_thread_ts")
        if thread and thread != notification["slack_ts"]:
            text += f" in thread {thread}"
    if notification.get("attempts", 0) > 1:
        text += f" after {notification['attempts']} attempts"
    if notification.get("state") != "sent" and notification.get("last_error"):
        text += f": {notification['last_error']}"
    return text


def format_incidents(entries: Sequence[Mapping[str, Any]]) -> str:
    """Each incident's story, a block each: what fired on which pod and how often, what was
    decided, each action (when, by the responder or by whom by hand, and why) and each Slack post
    (where it went). With --incident, the whole of one incident."""
    incidents, first = _incidents_of(entries)
    blocks = []
    for entry in entries:
        if entry["outcome"] == BY_HAND:
            blocks.append("\n".join(printable(line) for line in _by_hand_lines(entry)))
            continue
        incident_id = entry.get("incident_id")
        if not incident_id or first.get(incident_id) is not entry:
            continue  # told at its incident's first entry
        incident = incidents[incident_id]
        verification = (incident.get("verification") or {}).get("status", "-")
        lines = [
            f"{incident_id}  {entry['rule']}  {entry['namespace'] or '-'}/{entry['pod'] or '-'}",
            f"  alerts    {incident.get('count', '?')}, first {_utc(incident.get('opened_ns'))},"
            f" last {_utc(incident.get('last_seen_ns'))}",
            f"  verified  {verification}",
            f"  decided   {_decision_text(incident.get('decision'))}",
        ]
        if entry.get("sender"):  # the alert that opened it, when its input names senders
            lines.insert(2, f"  sent by   {sender_text(entry['sender'])}")
        lines += [f"  action    {_action_text(action)}" for action in incident.get("actions") or []]
        lines += [f"  slack     {_notification_text(n)}" for n in incident.get("notifications") or []]
        blocks.append("\n".join(printable(line) for line in lines))
    return "\n\n".join(blocks) if blocks else "no incidents"


def _by_hand_lines(entry: Mapping[str, Any]) -> list[str]:
    """An action by hand outside any incident, as the incidents' stories tell it."""
    return [
        f"by hand  {entry['namespace'] or '-'}/{entry['pod'] or '-'}, outside any incident",
        f"  action    {_action_text(entry.get('action') or {})}",
    ]


def _table_time(text: str) -> str:
    """A journaled time (Falco's form, UTC) as a table shows it: 2026-12-04 06:59:53.790..."""
    return text.replace("T", " ", 1)


def _repeat_numbers(entries: Sequence[Mapping[str, Any]]) -> dict[int, int]:
    """Each repeat row's place among its incident's alerts (the opening alert is #1), by the row's
    index in ``entries`` (oldest first). Counted on from the incident's opening row when it is
    among them; else back from the incident's count, the last of its rows being its newest alert
    (the trail is the newest alerts: older ones may be past --limit or --since). A place that
    cannot be known (no count, or a count short of the rows) is left out."""
    rows: dict[str, list[int]] = {}
    for index, entry in enumerate(entries):
        if entry.get("incident_id") and entry["outcome"] in ("opened", "duplicate"):
            rows.setdefault(entry["incident_id"], []).append(index)
    numbers: dict[int, int] = {}
    for indexes in rows.values():
        opened = next((i for i in indexes if entries[i]["outcome"] == "opened"), None)
        if opened is not None:
            after = [i for i in indexes if i > opened]
            numbers.update({index: place for place, index in enumerate(after, start=2)})
            continue
        count = (entries[indexes[-1]].get("incident") or {}).get("count")
        if isinstance(count, int) and count >= len(indexes) + 1:
            first = count - len(indexes) + 1
            numbers.update({index: place for place, index in enumerate(indexes, start=first)})
    return numbers


def format_table(entries: Iterable[Mapping[str, Any]]) -> str:
    listed = list(entries)
    repeats = _repeat_numbers(listed)
    header = (
        "RECEIVED (UTC)",
        "RULE",
        "POD",
        "OUTCOME",
        "VERIFIED",
        "DECISION",
        "ACTIONS",
        "SLACK",
        "TO ACT",
        "SENDER",
    )
    rows = [header]
    for index, entry in enumerate(listed):
        incident = entry.get("incident") or {}
        decision = incident.get("decision") or {}
        verification = (incident.get("verification") or {}).get("status", "-")
        if entry["outcome"] == "duplicate":
            actions = f"(repeat #{repeats.get(index, '?')} of {entry['incident_id']})"
            decided = slack = verification = "-"
        elif entry["outcome"] == BY_HAND:
            action = entry.get("action") or {}
            actions = f"{action.get('action')}={action.get('status')}(by {action.get('actor')})"
            reason = action.get("reason")
            decided = f"by hand: {reason}" if reason else "by hand"
            slack = verification = "-"
        else:
            actions = (
                ", ".join(
                    f"{a['action']}={a['status']}"
                    + (f"({a['isolated']} cut)" if a.get("isolated") else "")
                    + (f"(by {a['actor']})" if a.get("actor") not in (None, RESPONDER_ACTOR) else "")
                    for a in incident.get("actions", [])
                )
                or "-"
            )
            decided = f"{decision.get('policy', '-')}: {','.join(decision.get('actions', [])) or 'nothing'}"
            slack = ",".join(f"{n['kind']}={n['state']}" for n in incident.get("notifications", [])) or "-"
        timing = (entry.get("timings_ms") or {}).get("to_quarantine")
        rows.append(
            (
                # The date too: the trail reaches back days (journal.retention_days).
                _table_time(entry["received"])[:23],
                entry["rule"][:48] or "-",
                f"{entry['namespace'] or '-'}/{entry['pod'] or '-'}",
                entry["outcome"],
                verification,
                decided,
                actions,
                slack,
                f"{timing:.1f} ms" if timing is not None else "-",
                sender_text(entry.get("sender")),
            )
        )
    shown = [[printable(value) for value in row] for row in rows]
    widths = [max(len(r[i]) for r in shown) for i in range(len(header))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in shown)
