"""The audit trail's shape, as `GET /v1/audit` answers it: what load_trail produces and what a
client reading the answer accepts (read_answer), with a clear error naming the field that is wrong."""

from __future__ import annotations

import functools
import types
from typing import Any, NotRequired, TypedDict, Union, get_args, get_origin, get_type_hints, is_typeddict

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
