"""What `serving-guard audit`, `GET /v1/audit` and `serving-guard verify` ask the audit trail for:
the query, read from the HTTP parameters or the command line, and the times a since may be."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl

from responder.alert import format_time_ns, parse_time_ns
from responder.dedupe import INCIDENT_ID

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
    # (simulator runs tag their processes): see responder.audit.trail._mentions.
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
