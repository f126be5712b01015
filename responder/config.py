"""The responder's YAML config: strict models (unknown keys are errors) and a loader whose
errors name file, line and key.

Secrets never live in this file: tokens and webhook URLs are read from a file (a mounted
Kubernetes Secret) or an environment variable named here.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
import re
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal, Self, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from responder.actions.netpol import BOTH_DIRECTIONS
from responder.alert import Priority, canonical_source
from responder.errors import SourceError, UserError
from responder.name_patterns import (
    BLOCK_PREFIX_PATTERN,
    DNS_LABEL_PATTERN,
    LABEL_KEY_PATTERN,
    LABEL_VALUE_PATTERN,
    POLICY_NAME_PATTERN,
)
from responder.validation_problems import clipped, located, validation_problems
from responder.yamlsource import (
    FileTooLarge,
    YamlDocument,
    load_yaml,
    load_yaml_file,
    read_bounded,
    size_text,
)


class Strict(BaseModel):
    # Numbers and booleans are strict too (Field(strict=True), StrictBool): lax pydantic takes
    # `true` as 1, "8" as 8 and "yes" or "off" as a boolean.
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def _parse_priority(value: object) -> Priority:
    if isinstance(value, Priority):
        return value
    if not isinstance(value, str):
        raise ValueError("must be a priority name such as warning or critical")
    return Priority.parse(value)


PriorityName = Annotated[Priority, Field(json_schema_extra={"type": "string"})]


def _listen_address(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep:
        raise ValueError(f"listen address must be HOST:PORT, got {value!r}")
    if not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise ValueError(f"listen address must be HOST:PORT with a port of digits 0-65535, got {value!r}")
    host = host.strip("[]")
    if host not in ("", "localhost"):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"listen host must be an IP address, got {host!r}") from None
    return value


# A DNS name as gRPC resolves it: labels of letters, digits and hyphens, dot-separated.
_HOSTNAME = re.compile(r"(?=.{1,253}$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")
GRPC_ADDRESS_FORMS = "unix:///PATH or HOST:PORT (a port of 1-65535)"


def _grpc_address(value: str) -> str:
    """Falco's gRPC outputs address: a unix socket's path, or HOST:PORT (an IP address, [IPv6] or a
    DNS name). Checked here because gRPC takes a port past 65535 modulo 65536 (99999 connects to
    34463) and retries an empty target for ever."""
    if value.startswith("unix:"):
        if not value.removeprefix("unix:").lstrip("/"):
            raise ValueError(f"names no socket: must be {GRPC_ADDRESS_FORMS}, got {value!r}")
        return value
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"must be {GRPC_ADDRESS_FORMS}, got {value!r}")
    if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        raise ValueError(f"must be {GRPC_ADDRESS_FORMS}, got a port of {port!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        valid = _is_ip(host) and ":" in host
    elif ":" in host:
        raise ValueError(f"must be {GRPC_ADDRESS_FORMS}: an IPv6 address goes in brackets, [{host}]:{port}")
    else:
        valid = _is_ip(host) or _HOSTNAME.fullmatch(host) is not None
    if not valid:
        raise ValueError(f"must be {GRPC_ADDRESS_FORMS}: {host!r} is no IP address or host name")
    return value


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _same_socket(one: str, other: str) -> bool:
    """Whether two listen addresses (HOST:PORT, checked) would bind the same port: the same port
    (0, any free one, never clashes) on the same host, or with either on every address."""
    one_host, _, one_port = one.rpartition(":")
    other_host, _, other_port = other.rpartition(":")
    if one_port != other_port or int(one_port) == 0:
        return False
    hosts = {one_host.strip("[]"), other_host.strip("[]")}
    return len(hosts) == 1 or bool(hosts & {"", "0.0.0.0", "::"})  # noqa: S104 (names the wildcard)


# A token or webhook URL is well under 1 KiB; a secret file past this is the wrong file.
MAX_SECRET_BYTES = 64 * 1024
# A certificate, key or CA bundle (the system's, ~200 KiB, fits many times over); past this it is
# the wrong file (/dev/zero), refused before ssl or gRPC read it whole.
MAX_CERTIFICATE_BYTES = 4 * 1024 * 1024
CERTIFICATE_FILE = "a certificate, key or CA bundle holds"


class SecretRef(Strict):
    """Where a secret comes from: exactly one of a file or an environment variable."""

    file: str | None = None
    env: str | None = None

    @field_validator("file")
    @classmethod
    def _a_file(cls, value: str | None) -> str | None:
        if value is not None and not value:
            raise ValueError("must name a file")
        if value is not None and "\x00" in value:
            raise ValueError("must not contain a NUL character")
        return value

    @field_validator("env")
    @classmethod
    def _a_variable(cls, value: str | None) -> str | None:
        # No variable has an empty name, or one with '=' or NUL in it: the secret would always be empty.
        if value is not None and (not value or "=" in value or "\x00" in value):
            raise ValueError("must name an environment variable")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.file is None) == (self.env is None):
            raise ValueError("set exactly one of 'file' or 'env'")
        return self

    def read(self, what: str) -> str:
        """The secret, stripped; UserError names ``what`` (the config key) and the file or variable.
        At most :data:`MAX_SECRET_BYTES` are read, so /dev/zero or a FIFO cannot exhaust memory."""
        limit = f"larger than {size_text(MAX_SECRET_BYTES)}, far more than a token or URL"
        if self.file is not None:
            try:
                raw = read_bounded(self.file, MAX_SECRET_BYTES)
            except FileTooLarge:
                raise UserError(f"{what}: {self.file} is {limit}") from None
            except IsADirectoryError:
                raise UserError(f"{what}: {self.file} is a directory, not a file") from None
            except OSError as exc:
                raise UserError(f"{what}: cannot read {self.file}: {exc.strerror or exc}") from None
            source = self.file
        else:
            assert self.env is not None
            # A variable's bytes that are not UTF-8 arrive as lone surrogates: back to the bytes.
            raw = os.fsencode(os.environ.get(self.env, ""))
            source = f"${self.env}"
            if len(raw) > MAX_SECRET_BYTES:
                raise UserError(f"{what}: {source} is {limit}")
        try:
            value = raw.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise UserError(
                f"{what}: {source} is not UTF-8 text (byte {exc.start} is 0x{raw[exc.start]:02x})"
            ) from None
        if not value:
            raise UserError(f"{what}: {source} is empty")
        return value


class OneLineSecretRef(SecretRef):
    """A secret sent whole as one header or URL (Slack's bot token, its webhook URL): one line
    without control characters. A second line (a file of two, a variable with an embedded newline)
    would be sent as part of it, and fail only at Slack, whose answer would take the blame."""

    def read(self, what: str) -> str:
        value = super().read(what)
        if any(not char.isprintable() for char in value):
            source = self.file if self.file is not None else f"${self.env}"
            raise UserError(
                f"{what}: {source} must hold one line without control characters (the token or URL alone)"
            )
        return value


class ServerTLS(Strict):
    cert_file: str
    key_file: str
    # When set, clients must present a certificate signed by this CA (mutual TLS).
    client_ca_file: str | None = None
    # ...and, when set, one whose subject common name or a DNS name is one of these: a CA that also
    # signs others' certificates (a cluster-wide issuer) then admits only the senders'. Unset: any.
    allowed_client_names: tuple[Annotated[str, Field(min_length=1, max_length=253)], ...] | None = Field(
        default=None, min_length=1, max_length=256
    )

    @field_validator("cert_file", "key_file", "client_ca_file")
    @classmethod
    def _a_path(cls, value: str | None, info: ValidationInfo) -> str | None:
        # "" would only fail at start, as a directory that cannot be read as a certificate.
        if value is not None and not value.strip():
            instead = " (or leave the key out: no mutual TLS)" if info.field_name == "client_ca_file" else ""
            raise ValueError(f"is empty: give the path of a PEM file{instead}")
        return value

    @model_validator(mode="after")
    def _names_need_client_certificates(self) -> Self:
        if self.allowed_client_names is not None and self.client_ca_file is None:
            raise ValueError(
                "allowed_client_names is set without client_ca_file: there are no client certificates"
                " to name (set client_ca_file, or leave allowed_client_names out)"
            )
        return self


# inputs.http.max_connections_per_peer, when not set: this share of max_connections.
PEER_SHARE = 8


class HttpInput(Strict):
    enabled: StrictBool = True
    listen: str = "0.0.0.0:8443"
    tls: ServerTLS | None = None
    token: SecretRef | None = None
    # Who may read GET /v1/audit: this token's holders alone (senders' credentials are refused
    # there, and this token cannot send alerts). Unset: nobody (403): every Falco node holds a
    # sender's credential, and the trail is not theirs to read.
    audit_token: SecretRef | None = None
    # The drill token: alerts sent with it are drills (serving-guard replay by the security team),
    # journaled and shown as such, in incidents of their own, and decided in dry-run unless
    # guardrails.enforce_drills. Neither a sender's nor the audit readers' token.
    drill_token: SecretRef | None = None
    allow_unauthenticated: StrictBool = False
    # Bind each alert to its node: only a client certificate naming (common name or DNS name) the
    # node the alert claims (its hostname, which verification checks the pod against) sends it, else
    # 403. Needs a certificate per node: with one shared by every Falco (the chart's `falco`), any
    # node could still claim any other. Token senders are refused (Falcosidekick relays every node's).
    require_sender_matches_hostname: StrictBool = False
    # The largest alert taken (413 past it; also `ingest`'s longest line). 320 KiB: the shipped rules'
    # worst case is 302,237 bytes (Model artifact tampering: six attacker-chosen paths and command
    # lines at the drivers' 4 KiB caps, each byte a 6-byte \u00XX escape, each field twice), with
    # room for append_output's extra fields (responder/rulespack/alert_size.py has the arithmetic).
    max_body_bytes: int = Field(default=320 * 1024, strict=True, ge=1024, le=16 * 1024 * 1024)
    # Open connections at a time; one more is closed unread as soon as it is accepted (each can
    # hold the request it is handling and a little more, memory_budget.connection_bytes, so this
    # bounds the input's memory). Every Falco (one per node) keeps one keep-alive connection: raise
    # it well above the number of nodes sending.
    max_connections: int = Field(default=4096, strict=True, ge=16, le=100_000)
    # Of those, from one client address at a time. Unset (or null): max_connections // 8, at least 1,
    # so one address alone cannot take every slot (512 by default). Behind a mesh's sidecar (Istio's
    # inbound comes from 127.0.0.6) or a NAT every sender shares one address: set it to
    # max_connections there, or only that many senders are served.
    max_connections_per_peer: int = Field(default=4096 // PEER_SHARE, strict=True, ge=1, le=100_000)
    # How long a request may wait for room in the pipeline before its alert is journaled deferred.
    admission_timeout_seconds: float = Field(default=0.5, strict=True, ge=0, le=30)

    _check_listen = field_validator("listen")(classmethod(lambda cls, v: _listen_address(v)))

    @model_validator(mode="before")
    @classmethod
    def _per_peer_from_the_cap(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("max_connections_per_peer") is not None:
            return data
        cap = data.get("max_connections", cls.model_fields["max_connections"].default)
        if type(cap) is not int:  # refused by the field's own check (a bool or text is no count)
            return data
        return {**data, "max_connections_per_peer": max(1, cap // PEER_SHARE)}

    @model_validator(mode="after")
    def _authenticated(self) -> Self:
        mtls = self.tls is not None and self.tls.client_ca_file is not None
        if self.enabled and not (mtls or self.token is not None or self.allow_unauthenticated):
            raise ValueError(
                "the HTTP input has no authentication: set tls.client_ca_file (mutual TLS) or token, "
                "or set allow_unauthenticated: true to accept forged alerts knowingly"
            )
        if self.enabled and self.require_sender_matches_hostname and not mtls:
            raise ValueError(
                "require_sender_matches_hostname needs tls.client_ca_file: only a client certificate"
                " can name the node an alert comes from"
            )
        if self.enabled and self.audit_token is not None and self.audit_token == self.token:
            raise ValueError(
                "audit_token names the same secret as token: every alert sender could read the audit"
                " trail; give its readers a token of their own"
            )
        drill = self.drill_token
        if self.enabled and drill is not None and drill in (self.token, self.audit_token):
            other = "token" if drill == self.token else "audit_token"
            raise ValueError(
                f"drill_token names the same secret as {other}: a drill must be told from Falco's alerts"
                " by a token no one else holds; give the drill token a secret of its own"
            )
        if self.enabled and mtls and self.allow_unauthenticated:
            # Refused rather than warned of: the certificate would look required and prove nothing.
            raise ValueError(
                "allow_unauthenticated: true with tls.client_ca_file: a request without a client "
                "certificate would be accepted, so the certificate would prove nothing (only a "
                "certificate of another CA would be refused); remove one of the two"
            )
        return self


class ClientTLS(Strict):
    ca_file: str
    cert_file: str
    key_file: str
    server_name: str | None = None


class Backoff(Strict):
    initial_seconds: float = Field(default=0.5, strict=True, gt=0, le=60)
    max_seconds: float = Field(default=30.0, strict=True, gt=0, le=3600)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.max_seconds < self.initial_seconds:
            raise ValueError("max_seconds must be >= initial_seconds")
        return self


class GrpcInput(Strict):
    """Falco's gRPC outputs service (Falco <= 0.43 only; removed in 0.44)."""

    enabled: StrictBool = False
    address: str = "unix:///run/falco/falco.sock"
    tls: ClientTLS | None = None
    poll_interval_seconds: float = Field(default=1.0, strict=True, gt=0, le=60)
    backoff: Backoff = Backoff()

    _check_address = field_validator("address")(classmethod(lambda cls, v: _grpc_address(v)))

    @model_validator(mode="after")
    def _tls_for_tcp(self) -> Self:
        # Falco serves TCP only with mandatory mutual TLS; a unix socket has no TLS.
        if self.enabled and not self.address.startswith("unix:") and self.tls is None:
            raise ValueError("a TCP gRPC address needs tls (Falco requires mutual TLS on TCP)")
        return self


class Inputs(Strict):
    http: HttpInput = HttpInput(allow_unauthenticated=False, enabled=False)
    grpc: GrpcInput = GrpcInput()


class Server(Strict):
    """The plain-HTTP listener for /metrics, /healthz and /readyz."""

    metrics_listen: str | None = "0.0.0.0:9090"
    # uvloop carries an alert storm's many small requests for less CPU (see bench/README.md);
    # asyncio: the standard library's loop, for a platform without uvloop.
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"

    _check_listen = field_validator("metrics_listen")(
        classmethod(lambda cls, v: None if v is None else _listen_address(v))
    )


class Retry(Strict):
    attempts: int = Field(default=4, strict=True, ge=1, le=20)
    initial_backoff_seconds: float = Field(default=0.2, strict=True, gt=0, le=10)
    max_backoff_seconds: float = Field(default=2.0, strict=True, gt=0, le=60)


class Cluster(Strict):
    # None: in-cluster service account, else the default kubeconfig.
    kubeconfig: str | None = None
    context: str | None = None
    # Falco's hostname is the node name (FALCO_HOSTNAME from spec.nodeName in the chart).
    verify_node: StrictBool = True
    cache_ttl_seconds: float = Field(default=10.0, strict=True, ge=0, le=3600)
    request_timeout_seconds: float = Field(default=5.0, strict=True, gt=0, le=120)
    retry: Retry = Retry()
    workers: int = Field(default=8, strict=True, ge=1, le=64)


class Isolation(StrEnum):
    """Which of a quarantined pod's traffic the quarantine NetworkPolicy cuts."""

    BOTH = "both"
    # What the pod sends (exfiltration, a reverse shell, downloads); it goes on serving requests.
    EGRESS = "egress"
    INGRESS = "ingress"

    @property
    def directions(self) -> tuple[str, ...]:
        return BOTH_DIRECTIONS if self is Isolation.BOTH else (self.value,)


@dataclass(frozen=True, slots=True)
class QuarantineCut:
    """What one cut is in the cluster: the quarantine label's value that selects a pod into it, and
    the deny-all NetworkPolicy that this value selects (its policy types: ``isolation``)."""

    isolation: Isolation
    label_value: str
    network_policy: str

    @property
    def directions(self) -> tuple[str, ...]:
        return self.isolation.directions


def widest(first: Isolation | None, second: Isolation) -> Isolation:
    """The cut that covers both: a quarantine is widened, never narrowed (egress and ingress: both)."""
    if first is None or first is second:
        return second
    return Isolation.BOTH


# What each one-way cut (and the legacy both cut) adds to quarantine.label_value.
CUT_SUFFIXES = ("-egress", "-ingress", "-both")


class Quarantine(Strict):
    label: str = Field(default="serving-guard.io/quarantine", pattern=LABEL_KEY_PATTERN)
    label_value: str = Field(default="true", pattern=LABEL_VALUE_PATTERN)
    network_policy: str = Field(default="serving-guard-quarantine", pattern=DNS_LABEL_PATTERN)

    @field_validator("label_value")
    @classmethod
    def _not_a_cut_value(cls, value: str) -> str:
        # <label_value>-egress is the egress cut's value: a value ending so would be another
        # config's one-way cut (label_value `no` gives `no-egress`), and the two would take over
        # each other's deny-all.
        suffix = next((s for s in CUT_SUFFIXES if value.endswith(s)), None)
        if suffix is not None:
            raise ValueError(
                f"must not end in {suffix}: the other cuts' values are <label_value>-egress and"
                " <label_value>-ingress (and -both from earlier versions), so another config's cut"
                " could have this one"
            )
        return value

    # The cut a quarantine makes (a policy's own `isolate` may name another). Each cut's label value
    # and policy are fixed, whatever this says (Quarantine.cut), so changing it never changes what
    # a quarantine made earlier cuts.
    isolate: Isolation = Isolation.BOTH
    # Exclude quarantined pods from other policies that would still allow traffic: `label NotIn`
    # the values of the cuts that stop every direction the policy governs (undone on release).
    patch_other_policies: StrictBool = False
    # Where the cluster serves other network-policy APIs (Cilium, Calico, Antrea,
    # AdminNetworkPolicy), their policies may let a quarantined pod's traffic through unseen: a
    # quarantine there is LEAKY ("not proven"), unless this is true (once none of them does).
    ignore_other_policy_apis: StrictBool = False

    def cut(self, isolation: Isolation | None = None) -> QuarantineCut:
        """The label value and deny-all policy of ``isolation`` (None: quarantine.isolate): both is
        label_value into network_policy, a one-way cut label_value-<cut> into network_policy-<cut>.
        Fixed, so that a label value means the same cut under any config."""
        wanted = isolation if isolation is not None else self.isolate
        suffix = "" if wanted is Isolation.BOTH else f"-{wanted.value}"
        return QuarantineCut(wanted, self.label_value + suffix, self.network_policy + suffix)

    @property
    def legacy_both_value(self) -> str:
        """The both cut's label value that versions before fixed cuts gave while quarantine.isolate
        named a one-way cut (its policy, network_policy-both, is kept by the chart): still read as
        both, never written."""
        return f"{self.label_value}-both"

    def cut_of(self, label_value: str | None) -> Isolation | None:
        """The cut a pod whose quarantine label has ``label_value`` is in; None: not quarantined
        (no label, or a value that none of our cuts gives)."""
        if label_value is not None and label_value == self.legacy_both_value:
            return Isolation.BOTH
        return next(
            (i for i in Isolation if label_value is not None and self.cut(i).label_value == label_value), None
        )

    def cut_values(self) -> list[str]:
        """Every cut's label value (the legacy both value aside), sorted."""
        return sorted(self.cut(isolation).label_value for isolation in Isolation)

    def covering_values(self, directions: Iterable[str]) -> list[str]:
        """The label values of the cuts that stop every one of ``directions``, sorted: the pods an
        exclusion may take out of a policy governing them (no direction of theirs is opened)."""
        wanted = set(directions)
        return sorted(
            self.cut(isolation).label_value for isolation in Isolation if wanted <= set(isolation.directions)
        )


def _cidr(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("must be an address or network such as 203.0.113.0/24")
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address or network (203.0.113.0/24)") from None


class BlockDestination(Strict):
    """The block_destination action: the pod may no longer reach the alert's remote address, and
    the rest of its traffic is left as it was. A NetworkPolicy of the pod's own (it selects the
    pod by ``label``) allows all egress but the blocked addresses."""

    label: str = Field(default="serving-guard.io/block", pattern=LABEL_KEY_PATTERN)
    # The pod's policy is <network_policy_prefix>-<12 hex digits of its uid's hash>.
    network_policy_prefix: str = Field(default="serving-guard-block", pattern=BLOCK_PREFIX_PATTERN)
    # The alert fields read for the remote address, the first present wins (Falco: fd.rip is the
    # remote end of the connection, fd.sip its server).
    address_fields: tuple[str, ...] = Field(default=("fd.rip", "fd.sip"), min_length=1)
    # Addresses never blocked (a model registry, an API the model calls): an alert naming one is
    # told, not acted on.
    never_block: tuple[Annotated[str, BeforeValidator(_cidr)], ...] = ()
    # At most this many addresses blocked per pod: a pod that reaches out to more (each connection
    # an alert) is for a quarantine of its egress, and a policy stays a reasonable size.
    max_per_pod: int = Field(default=32, strict=True, ge=1, le=1000)
    # A pod past its share of the block breaker (guardrails.max_blocks.per_pod in its window), or
    # whose block holds max_per_pod addresses, reaches out to too many places to block one by one
    # (or spends the cluster's blocks on decoys): its egress is quarantined instead, taking a
    # quarantine slot (guardrails.max_quarantines). False: such a block is withheld, and said.
    escalate_to_quarantine: StrictBool = True
    # Where the cluster serves other network-policy APIs (Cilium, Calico, Antrea,
    # AdminNetworkPolicy), their policies may restrict a pod's egress, and a block policy would add
    # to what they allow: no block is made there, unless this is true (once none of them restricts
    # serving pods' egress).
    ignore_other_policy_apis: StrictBool = False


class MaxQuarantines(Strict):
    count: int = Field(default=5, strict=True, ge=1, le=10000)
    window_seconds: float = Field(default=300.0, strict=True, gt=0, le=86400)


class MaxBlocks(Strict):
    # Cheaper than a quarantine (the pod keeps serving), so more are allowed; still bounded: one
    # address cut from every replica of a workload is an outage of what that address serves.
    count: int = Field(default=20, strict=True, ge=1, le=10000)
    window_seconds: float = Field(default=300.0, strict=True, gt=0, le=86400)
    # Of those, at most this many on one pod: one pod cannot spend the window's blocks for every
    # other pod (an attacker's decoy destinations); past it, block_destination.escalate_to_quarantine.
    per_pod: int = Field(default=5, strict=True, ge=1, le=10000)


DEFAULT_PROTECTED = ("kube-system", "kube-public", "kube-node-lease", "falco", "serving-guard")

# A namespace's name is a DNS label (RFC 1123), as Kubernetes takes it: a name of another form
# (Kube-System) is never an alert's namespace, so a key holding one would silently match nothing.
_NAMESPACE_NAME = re.compile(DNS_LABEL_PATTERN)
# policies[].match.namespaces takes shell-style globs too (ml-*, team-?, [ab]-models): what
# values.schema.json lets through for them (the characters of a name, and * ? [ ] !).
_NAMESPACE_GLOB = re.compile(r"[-a-z0-9*?\[\]!]{1,253}")
_GLOB_CHARACTERS = frozenset("*?[")
NAMESPACE_WORDS = (
    "must be a Kubernetes namespace name: up to 63 lower-case letters, digits or '-', starting and"
    " ending with a letter or digit"
)


def _lower_case_hint(value: str, fits: re.Pattern[str]) -> str:
    """What to say when lower case is all that is wrong with ``value`` (Kube-System), else nothing."""
    lower = value.lower()
    return f" (namespace names are lower-case: {lower!r})" if lower != value and fits.fullmatch(lower) else ""


def _namespace_name(value: str) -> str:
    if not _NAMESPACE_NAME.fullmatch(value):
        raise ValueError(f"{clipped(value)}: {NAMESPACE_WORDS}{_lower_case_hint(value, _NAMESPACE_NAME)}")
    return value


def _namespace_pattern(value: str) -> str:
    """A namespace name, or a shell-style glob of them (one with * ? or [)."""
    if not _GLOB_CHARACTERS.intersection(value):
        return _namespace_name(value)
    if not _NAMESPACE_GLOB.fullmatch(value):
        raise ValueError(
            f"{clipped(value)}: must be a Kubernetes namespace name or a shell-style glob of them"
            " (ml-*, team-?, [ab]-models): lower-case letters, digits, '-' and the glob's * ? [ ] !"
            + _lower_case_hint(value, _NAMESPACE_GLOB)
        )
    return value


NamespaceName = Annotated[str, AfterValidator(_namespace_name)]
NamespacePattern = Annotated[str, AfterValidator(_namespace_pattern)]


class Guardrails(Strict):
    protected_namespaces: tuple[NamespaceName, ...] = DEFAULT_PROTECTED
    # Namespaces must carry this label (value "true") before anything in them is quarantined; None disables.
    enforce_namespace_label: str | None = Field(default="serving-guard.io/enforce", pattern=LABEL_KEY_PATTERN)
    max_quarantines: MaxQuarantines = MaxQuarantines()
    # Destinations newly blocked (an address added to a pod's block) per window.
    max_blocks: MaxBlocks = MaxBlocks()
    dry_run: StrictBool = False
    # Drills (alerts sent with inputs.http.drill_token, or `ingest --drill`) are decided in dry-run
    # unless this is on: a replay then quarantines the pod it names, as a drill of the response.
    enforce_drills: StrictBool = False


RetryWait = Annotated[float, Field(strict=True, gt=0, le=86400)]


class Dedupe(Strict):
    window_seconds: float = Field(default=300.0, strict=True, gt=0, le=86400)
    # The open incidents' memory (each holds its opening alert and report for its window, ~10 KiB
    # beside the alert's bytes): past it the one longest without a repeat is forgotten, and a repeat
    # of it opens a new one. A flood of large forged alerts, each its own incident, cannot grow the
    # process past it.
    max_open_bytes: int = Field(default=64 * 1024**2, strict=True, ge=1024**2, le=64 * 1024**3)
    # An isolation withheld for a passing reason (the API could not be read, the container was not
    # listed yet, the breaker was open, the action failed) is tried again after each of these waits
    # in turn, within the window, whether or not the alert repeats: a one-off attack during an API
    # outage is still isolated once the API answers. Empty: only a repeat tries again.
    retry_withheld_seconds: tuple[RetryWait, ...] = Field(
        default=(10.0, 20.0, 40.0, 80.0, 120.0), max_length=10
    )


class ActionName(StrEnum):
    NOTIFY = "notify"
    QUARANTINE = "quarantine"
    ANNOTATE = "annotate"
    # Cut the pod off from the alert's remote address only (anomalous egress): it keeps serving.
    BLOCK_DESTINATION = "block_destination"


class PolicyMatch(Strict):
    # Exact names or shell-style globs ("Interpreter *").
    rules: tuple[str, ...] = ()
    # Any of these tags.
    tags: tuple[str, ...] = ()
    min_priority: PriorityName | None = None
    # Names or shell-style globs ("ml-*").
    namespaces: tuple[NamespacePattern, ...] = ()
    pod_labels: dict[str, str] = Field(default_factory=dict)
    sources: tuple[str, ...] = ()

    _priority = field_validator("min_priority", mode="before")(
        classmethod(lambda cls, v: None if v is None else _parse_priority(v))
    )
    # As alerts' sources are read: "syscalls" (Falcosidekick's word) would otherwise never match.
    _sources = field_validator("sources")(
        classmethod(lambda cls, v: tuple(canonical_source(source) for source in v))
    )

    def matches_rule(self, rule: str) -> bool:
        return not self.rules or any(fnmatch.fnmatchcase(rule, pattern) for pattern in self.rules)


class PolicySlack(Strict):
    channel: str | None = None
    min_priority: PriorityName | None = None

    _priority = field_validator("min_priority", mode="before")(
        classmethod(lambda cls, v: None if v is None else _parse_priority(v))
    )


class Policy(Strict):
    name: str = Field(min_length=1, max_length=128, pattern=POLICY_NAME_PATTERN)
    match: PolicyMatch = PolicyMatch()
    actions: tuple[ActionName, ...] = (ActionName.NOTIFY,)
    slack: PolicySlack = PolicySlack()
    # A policy on trial: its quarantine and annotate are decided, predicted and reported
    # ("dry-run: would quarantine") but change nothing, while the other policies act.
    dry_run: StrictBool = False
    # The cut this policy's quarantines make (None: quarantine.isolate), e.g. egress for anomalous
    # egress (the model keeps serving) and both for a shell. A pod quarantined by two policies has
    # the wider cut: a quarantine is widened, never narrowed.
    isolate: Isolation | None = None

    @field_validator("actions")
    @classmethod
    def _unique(cls, value: tuple[ActionName, ...]) -> tuple[ActionName, ...]:
        if not value:
            # It would journal every alert it matches and tell no one, silently.
            raise ValueError(
                "actions is empty: a policy that does nothing hides the alerts it matches; give it"
                " at least notify, or silence a noisy rule in the rules pack (its exceptions and"
                " lists, rules/README.md)"
            )
        if len(set(value)) != len(value):
            raise ValueError("actions must not repeat")
        if ActionName.QUARANTINE in value and ActionName.ANNOTATE in value:
            raise ValueError("quarantine already annotates the pod; use one of quarantine or annotate")
        return value


class SlackMode(StrEnum):
    DISABLED = "disabled"
    BOT = "bot"
    WEBHOOK = "webhook"


class Slack(Strict):
    mode: SlackMode = SlackMode.DISABLED
    # Bot token (xoxb-...) for mode bot; incoming-webhook URL for mode webhook.
    token: OneLineSecretRef | None = None
    webhook_url: OneLineSecretRef | None = None
    default_channel: str | None = None
    min_priority: PriorityName = Priority.WARNING
    # Slack API root; only for an Enterprise Grid proxy or a local test sink. https (http only to a
    # loopback host: the bot token goes with every request), ending with '/'.
    base_url: str = "https://slack.com/api/"
    timeout_seconds: float = Field(default=10.0, strict=True, gt=0, le=120)
    # Repeats of an incident update its thread counter at most this often (0: at once). An incoming
    # webhook cannot update a post, so each repeat count is a new one: the wait doubles with each,
    # from at least 1 s, up to an hour.
    update_interval_seconds: float = Field(default=30.0, strict=True, ge=0, le=3600)
    max_attempts: int = Field(default=8, strict=True, ge=1, le=100)
    # Bot mode: incidents of one rule on pods of one workload (Deployment, StatefulSet, ...) within
    # the dedupe window share a thread: the first is posted in the channel, the others as replies
    # (also sent to the channel when LEAKY, failed or withheld; the first counts them).
    thread_by_workload: StrictBool = True
    # Put before every by-hand command Slack gives, so that it runs in the responder's pod from a
    # workstation: `kubectl -n falco exec deploy/serving-guard --` (the chart sets it). One line,
    # no backquote (the command is shown in a code block).
    command_prefix: str = Field(default="", max_length=200)

    _priority = field_validator("min_priority", mode="before")(classmethod(lambda cls, v: _parse_priority(v)))
    _api_root = field_validator("base_url")(classmethod(lambda cls, v: _slack_base_url(v)))

    @field_validator("command_prefix")
    @classmethod
    def _one_shown_line(cls, value: str) -> str:
        if not value.isprintable():  # also line and paragraph separators, bidi and C1 controls
            raise ValueError("must be one line of printable text (it is shown before each command)")
        if "`" in value:
            raise ValueError("must hold no backquote (the command is shown in a code block: it would end it)")
        return value

    @model_validator(mode="after")
    def _credentials(self) -> Self:
        if self.mode is SlackMode.BOT:
            if self.token is None:
                raise ValueError("mode bot needs token (file or env)")
            if not self.default_channel:
                raise ValueError("mode bot needs default_channel")
        if self.mode is SlackMode.WEBHOOK and self.webhook_url is None:
            raise ValueError("mode webhook needs webhook_url (file or env)")
        return self


def _slack_base_url(value: str) -> str:
    """Slack's API root: https, as the bot token goes with every request; plain http only to this
    machine (a local test sink), where the token never crosses a network."""
    try:
        url = urllib.parse.urlsplit(value)
        host = url.hostname if url.port != 0 else None  # .port raises for one past 65535
    except ValueError:  # an unbalanced [, or a port that is no number or past 65535
        url, host = None, None
    if url is None or not host or url.scheme not in ("https", "http"):
        raise ValueError(f"must be an https:// URL such as https://slack.com/api/, got {value!r}")
    if url.scheme == "http" and not _loopback(host):
        raise ValueError(
            f"must be https:// (the bot token would cross the network unencrypted), got {value!r};"
            " plain http:// only to this machine (127.0.0.1, ::1, localhost)"
        )
    if not value.endswith("/"):
        raise ValueError(f"must end with '/', got {value!r}")
    return value


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Journal(Strict):
    path: str = "/var/lib/serving-guard/journal.db"
    retention_days: float = Field(default=30.0, strict=True, gt=0, le=3650)
    # At most 1 TiB: far past any journal's need, and a 1e32 typed for it is said, not taken as "no limit".
    max_bytes: int = Field(default=1024**3, strict=True, ge=1024 * 1024, le=1024**4)
    # Accepted alerts not yet at a final outcome, in memory; past it an HTTP alert is journaled deferred
    # (processed once there is room), and the gRPC input stops reading.
    max_pending: int = Field(default=20000, strict=True, ge=10, le=10_000_000)
    # ... and at most this many bytes of them (each its body plus ~2 KiB of objects): a storm of
    # large alerts holds no more memory than one of small ones. One larger alert goes through alone.
    max_pending_bytes: int = Field(default=64 * 1024**2, strict=True, ge=1024**2, le=64 * 1024**3)
    # One sender's deferred alerts take at most this share of max_bytes; past it, its alerts that
    # find no room are refused (503) rather than deferred, so that no one sender fills the journal
    # and buries the others' alerts behind its backlog (responder/deferred_shares.py).
    max_deferred_share: float = Field(default=0.25, strict=True, gt=0, le=1)
    # Group commit: the next commit starts once the previous group is synced, or at the latest this
    # long after the previous commit began; with synchronous normal, writes that queued up during a
    # commit wait out the interval, and a write that finds the writer idle commits at once (see
    # ThreadWriter._run).
    commit_interval_ms: float = Field(default=2.0, strict=True, ge=0, le=1000)
    # full: an acknowledged alert survives a power loss or kernel crash (fsync per group commit).
    # normal: it survives the responder's own crash (SIGKILL, OOM) but a power loss may drop the
    # last acknowledged groups; cheaper per alert (see bench/README.md).
    synchronous: Literal["full", "normal"] = "full"
    # process: the journal's writer runs in a child process, so its SQLite work does not wait for
    # the event loop's GIL (bench/README.md, round 7). thread: in the responder's own process.
    writer: Literal["process", "thread"] = "process"

    @field_validator("path")
    @classmethod
    def _a_file(cls, value: str) -> str:
        # SQLite opens "" and ":memory:" as a private database per connection: the writer's
        # tables would be invisible to every reader, and nothing would be kept.
        if value in ("", ":memory:"):
            raise ValueError(f"must be the path of a file, got {value!r} (SQLite would keep nothing)")
        if "\x00" in value:
            raise ValueError("must not contain a NUL character")
        # The journal's writer opens the path as given, and this SQLite build (like most) reads a
        # name starting with "file:" as a URI: "file::memory:" would keep nothing, and
        # "file:/x/j.db" makes a directory named "file:" where the responder creates the journal's.
        if value.startswith("file:"):
            raise ValueError("must be a file path, not an SQLite URI ('file:...')")
        # Read-only opens (serving-guard audit --config) make the path a "file:PATH?mode=ro" URI,
        # which would take '?' and '#' as the URI's query and fragment and '%' as an escape: another
        # file, opened read-write.
        misread = sorted({char for char in value if char in "?#%"})
        if misread:
            raise ValueError(
                f"must not contain {' or '.join(repr(c) for c in misread)}: SQLite would read the path "
                "as a URI when the journal is opened read-only (serving-guard audit)"
            )
        return value


class Logging(Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"


class Config(Strict):
    inputs: Inputs = Inputs()
    server: Server = Server()
    cluster: Cluster = Cluster()
    quarantine: Quarantine = Quarantine()
    block_destination: BlockDestination = BlockDestination()
    guardrails: Guardrails = Guardrails()
    dedupe: Dedupe = Dedupe()
    policies: tuple[Policy, ...] = ()
    # What happens to an alert that no policy matches.
    default_actions: tuple[ActionName, ...] = (ActionName.NOTIFY,)
    slack: Slack = Slack()
    journal: Journal = Journal()
    logging: Logging = Logging()

    def cross_key_problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """What no single key can be refused for, each at the key a person must change: all of
        them at once (config_from_document reports them with their lines)."""
        problems: list[tuple[tuple[str | int, ...], str]] = []
        first: dict[str, int] = {}
        for index, policy in enumerate(self.policies):
            if policy.name in first:
                problems.append(
                    (
                        ("policies", index, "name"),
                        f"policy name {policy.name!r} is used twice"
                        f" (first at policies[{first[policy.name]}])",
                    )
                )
            first.setdefault(policy.name, index)
        for position, action in enumerate(self.default_actions):
            if action in (ActionName.QUARANTINE, ActionName.BLOCK_DESTINATION):
                problems.append(
                    (
                        ("default_actions", position),
                        f"default_actions may not {action.value}: name the rules in a policy",
                    )
                )
        metrics, http = self.server.metrics_listen, self.inputs.http
        if metrics is not None and http.enabled and _same_socket(metrics, http.listen):
            problems.append(
                (
                    ("server", "metrics_listen"),
                    f"{metrics!r} takes the port of inputs.http.listen {http.listen!r}: the second to bind"
                    " would fail at start; give each its own port",
                )
            )
        if self.block_destination.label == self.quarantine.label:
            # Labelling a pod into its block would overwrite its quarantine's value, and lift it.
            problems.append(
                (
                    ("block_destination", "label"),
                    f"block_destination.label and quarantine.label are both {self.quarantine.label!r}:"
                    " they must differ",
                )
            )
        return problems + self.cut_name_problems()

    def policy_isolation(self, policy: Policy | None) -> Isolation:
        """The cut a policy's quarantines make: its own isolate, else quarantine.isolate (also for
        alerts no policy matched)."""
        return (
            policy.isolate if policy is not None and policy.isolate is not None else self.quarantine.isolate
        )

    def cut_name_problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """The names of the cuts in use must be Kubernetes names (at most 63 characters):
        quarantine.isolate's cut, and where a policy cuts otherwise, every cut; each problem with
        the ``isolate`` path that needs them."""
        problems: list[tuple[tuple[str | int, ...], str]] = []
        own = self.quarantine.cut()
        too_long_own = [name for name in (own.label_value, own.network_policy) if len(name) > 63]
        if too_long_own:
            problems.append(
                (
                    ("quarantine", "isolate"),
                    f"cuts {own.isolation.value}, whose label value and NetworkPolicy are"
                    f" <name>-{own.isolation.value}, and {too_long_own[0]!r} is longer than 63"
                    " characters: shorten quarantine.label_value or quarantine.network_policy",
                )
            )
        for index, policy in enumerate(self.policies):
            if self.policy_isolation(policy) is self.quarantine.isolate:
                continue
            # Any cut may be reached, not only the policy's: two policies on one pod widen to both.
            too_long = [
                name
                for cut in (self.quarantine.cut(isolation) for isolation in Isolation)
                for name in (cut.label_value, cut.network_policy)
                if len(name) > 63
            ]
            if too_long:
                problems.append(
                    (
                        ("policies", index, "isolate"),
                        f"cuts {self.policy_isolation(policy).value}, not quarantine.isolate"
                        f" ({self.quarantine.isolate.value}), so the label value and NetworkPolicy"
                        f" <name>-<cut> are needed, and {too_long[0]!r}"
                        " is longer than 63 characters: shorten quarantine.label_value or"
                        " quarantine.network_policy",
                    )
                )
        # Blocks and patched policies leave quarantined pods out by every cut's label value (a
        # block's NotIn names the cuts that stop egress; an exclusion, the cuts of its directions),
        # whatever cut is in use: the API server refuses a selector value past 63 characters.
        blocks = any(ActionName.BLOCK_DESTINATION in policy.actions for policy in self.policies)
        if (blocks or self.quarantine.patch_other_policies) and not problems:
            needed = "quarantine.patch_other_policies" if self.quarantine.patch_other_policies else None
            said = self.cut_values_problem(needed or "block_destination")
            if said is not None:
                problems.append((("quarantine", "label_value"), said))
        return problems

    def cut_values_problem(self, needed: str) -> str | None:
        """Why ``needed`` (what leaves quarantined pods out by every cut's label value: blocks,
        patched policies) cannot work with quarantine.label_value, or None: a cut's value past the
        63 characters of a selector value. (Said by cut_name_problems, and by `serving-guard block`.)"""
        values = [self.quarantine.cut(isolation).label_value for isolation in Isolation]
        too_long = next((value for value in values if len(value) > 63), None)
        if too_long is None:
            return None
        return (
            f"{needed} leaves quarantined pods out by every cut's label value (<label_value>-<cut>), and"
            f" {too_long!r} is longer than 63 characters: shorten quarantine.label_value"
        )

    def rule_patterns(self) -> Sequence[str]:
        return [pattern for policy in self.policies for pattern in policy.match.rules]


_COMMENTED_CHANNEL = (
    "is empty: in YAML a value starting with # is a comment, so an unquoted `#channel` is nothing;"
    " quote it, e.g. '#sec-alerts'"
)
# An explicit null reads the same: say first what is missing (review-operator L4: the example's own
# `default_channel: null`, with mode switched to bot, was blamed on a comment).
_NO_DEFAULT_CHANNEL = (
    "is empty: slack.mode bot needs a channel to post to; " + _COMMENTED_CHANNEL.removeprefix("is empty: ")
)


def _empty_channels(data: dict[str, Any]) -> list[tuple[str | int, ...]]:
    """Slack channel keys given with no value: almost always an unquoted `#channel`, which YAML
    reads as a comment (a policy's would silently fall back to the default channel)."""
    found: list[tuple[str | int, ...]] = []
    slack = data.get("slack")
    # `default_channel: null` is the documented "none" outside bot mode, where it is required.
    if isinstance(slack, dict) and slack.get("mode") == "bot" and slack.get("default_channel", "") is None:
        found.append(("slack", "default_channel"))
    policies = data.get("policies")
    for index, policy in enumerate(policies if isinstance(policies, list) else []):
        own = policy.get("slack") if isinstance(policy, dict) else None
        if isinstance(own, dict) and "channel" in own and own["channel"] is None:
            found.append(("policies", index, "slack", "channel"))
    return found


def config_from_document(document: YamlDocument) -> Config:
    data: Any = document.data if document.data is not None else {}
    if not isinstance(data, dict):
        raise document.error((), "the config must be a mapping of sections (inputs, cluster, policies, ...)")
    empty = [
        located(
            document,
            path,
            _NO_DEFAULT_CHANNEL if path == ("slack", "default_channel") else _COMMENTED_CHANNEL,
        )
        for path in _empty_channels(data)
    ]
    if empty:
        raise UserError("invalid config:\n  " + "\n  ".join(empty))
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        messages = [located(document, *problem) for problem in validation_problems(exc, data, Config)]
        raise UserError("invalid config:\n  " + "\n  ".join(messages)) from None
    problems = [located(document, path, message) for path, message in config.cross_key_problems()]
    if problems:
        raise UserError("invalid config:\n  " + "\n  ".join(problems))
    return config


def load_config(path: str) -> Config:
    return files_beside_config(config_from_document(load_yaml_file(path, "a config file")), path)


_M = TypeVar("_M", bound=BaseModel)
_S = TypeVar("_S", bound=SecretRef)


def files_beside_config(config: Config, path: str) -> Config:
    """``config`` from the file ``path``, its relative file paths (the journal, the kubeconfig,
    certificates, secrets' files) read from that file's directory, as a config file's own
    references are: from the directory a command runs in, `audit --config` run elsewhere would
    find no journal, `ingest` would start a second one, and the kubeconfig beside it would be
    missing. (`~` is the user's home, as kubectl reads it.)"""
    base = os.path.dirname(os.path.abspath(path))

    def beside(name: str) -> str:
        return name if os.path.isabs(name) or name.startswith("~") else os.path.join(base, name)

    def secret(ref: _S | None) -> _S | None:
        if ref is None or ref.file is None:
            return ref
        return ref.model_copy(update={"file": beside(ref.file)})

    def files(model: _M, *names: str) -> _M:
        update = {name: beside(value) for name in names if isinstance(value := getattr(model, name), str)}
        return model.model_copy(update=update)

    http, grpc, slack, cluster = config.inputs.http, config.inputs.grpc, config.slack, config.cluster
    kubeconfig = cluster.kubeconfig
    if kubeconfig is not None:  # a path, or a list of them as $KUBECONFIG takes
        kubeconfig = os.pathsep.join(beside(part) if part else part for part in kubeconfig.split(os.pathsep))
    http = http.model_copy(
        update={
            "tls": files(http.tls, "cert_file", "key_file", "client_ca_file") if http.tls else None,
            "token": secret(http.token),
            "audit_token": secret(http.audit_token),
        }
    )
    grpc = grpc.model_copy(
        update={"tls": files(grpc.tls, "ca_file", "cert_file", "key_file") if grpc.tls else None}
    )
    return config.model_copy(
        update={
            "journal": files(config.journal, "path"),
            "cluster": cluster.model_copy(update={"kubeconfig": kubeconfig}),
            "inputs": config.inputs.model_copy(update={"http": http, "grpc": grpc}),
            "slack": slack.model_copy(
                update={"token": secret(slack.token), "webhook_url": secret(slack.webhook_url)}
            ),
        }
    )


def load_config_text(text: str, name: str = "<config>") -> Config:
    return config_from_document(load_yaml(text, name))


__all__ = [
    "ActionName",
    "Config",
    "Policy",
    "PolicyMatch",
    "SecretRef",
    "SlackMode",
    "SourceError",
    "load_config",
    "load_config_text",
]
