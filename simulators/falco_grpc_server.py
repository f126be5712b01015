"""A Falco-compatible gRPC outputs server for the tests, the demo and ``serving-guard replay --grpc``.

It behaves like Falco <= 0.43 (userspace/falco/grpc_*.cpp):
- one shared queue; ``get`` and ``sub`` both pop from it, so consumers compete and each alert goes
  to exactly one caller (no fan-out, no retransmission);
- ``get`` writes everything queued now, then ends the stream with OK;
- ``sub`` drains the queue into the stream after each client message, then waits for the next;
- ``version`` answers Falco's version and its rules engine version;
- a ``unix://`` address is served without TLS; any other address only with mandatory mutual TLS.

It runs on grpcio's thread pool, so any thread or event loop can feed it, and it can be stopped and
started again on the same address (the queue survives, as if only the socket went away).
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from responder.alert import MISSING_TEXT, Alert, Priority, field_text, parse_time_ns
from responder.ingest.grpc import GET_METHOD, SUB_METHOD, VERSION_METHOD
from responder.ingest.proto import outputs_pb2, version_pb2

# Engine version each Falco release reports (userspace/engine/falco_engine_version.h).
ENGINE_VERSIONS = {
    "0.40": "0.46.0",
    "0.41": "0.50.0",
    "0.42": "0.57.0",
    "0.43": "0.58.0",
}
# Names of falco.schema.source values by source name.
_SOURCE_ENUMS = {"syscall": "SYSCALL", "k8s_audit": "K8S_AUDIT", "internal": "INTERNAL"}
# Falco's JSON adds the event time as an output field; its gRPC output_fields hold only the fields
# of the rule's output format, with the time in the `time` field instead.
_JSON_ONLY_FIELDS = ("evt.time", "evt.time.iso8601")

Feedable = Alert | Mapping[str, Any] | outputs_pb2.response


@dataclass(frozen=True)
class ServerTLS:
    """Falco's grpc.cert_chain, grpc.private_key and grpc.root_certs (the CA client certs must chain to)."""

    cert_file: str
    key_file: str
    ca_file: str


def _source_enum(source: str) -> str:
    # Falco parses the source name into the deprecated enum; anything it does not know is a plugin.
    return _SOURCE_ENUMS.get(source, "PLUGIN")


def _grpc_text(value: object) -> str:
    """A field value as Falco's gRPC output renders it: text as is, missing as <NA>, other JSON dumped."""
    if value is None:
        return MISSING_TEXT
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def response_from_alert(alert: Alert) -> outputs_pb2.response:
    """The response Falco would send for this alert."""
    response = outputs_pb2.response(
        priority=alert.priority.name,
        source_deprecated=_source_enum(alert.source),
        rule=alert.rule,
        output=alert.output,
        output_fields={name: field_text(value) for name, value in alert.fields.items()},
        hostname=alert.hostname or "",
        tags=list(alert.tags),
        source=alert.source,
    )
    response.time.seconds, response.time.nanos = divmod(alert.time_ns, 1_000_000_000)
    return response


def response_from_falco_json(payload: Mapping[str, Any]) -> outputs_pb2.response:
    """The response Falco would send for an alert it printed as this JSON (http_output/stdout form).

    Deliberately lenient about content (an empty rule passes through, as a buggy sender's would),
    strict only about what cannot be encoded: raises ValueError for a bad time or priority.
    """
    time_ns = parse_time_ns(str(payload.get("time", "")))
    priority = Priority.parse(str(payload.get("priority", "")))
    source = str(payload.get("source") or "syscall")
    raw_fields = payload.get("output_fields") or {}
    if not isinstance(raw_fields, Mapping):
        raise ValueError(f"output_fields must be an object, got {type(raw_fields).__name__}")
    response = outputs_pb2.response(
        priority=priority.name,
        source_deprecated=_source_enum(source),
        rule=str(payload.get("rule") or ""),
        output=str(payload.get("output") or ""),
        output_fields={
            str(name): _grpc_text(value)
            for name, value in raw_fields.items()
            if name not in _JSON_ONLY_FIELDS
        },
        hostname=str(payload.get("hostname") or ""),
        tags=[str(tag) for tag in payload.get("tags") or ()],
        source=source,
    )
    response.time.seconds, response.time.nanos = divmod(time_ns, 1_000_000_000)
    return response


def version_response(falco_version: str, engine_version: str | None = None) -> version_pb2.response:
    """Falco's version service answer for a semver string such as "0.43.0" or "0.42.1-rc1+abc"."""
    core, _, build = falco_version.partition("+")
    numbers, _, prerelease = core.partition("-")
    parts = numbers.split(".")
    if len(parts) != 3 or not all(part.isdigit() for part in parts):
        raise ValueError(f"not a semver version: {falco_version!r}")
    major, minor, patch = (int(part) for part in parts)
    engine = engine_version or ENGINE_VERSIONS.get(f"{major}.{minor}", "0.58.0")
    engine_parts = [int(part) for part in engine.split(".")]
    return version_pb2.response(
        version=falco_version,
        major=major,
        minor=minor,
        patch=patch,
        prerelease=prerelease,
        build=build,
        engine_version=engine,
        engine_major=engine_parts[0],
        engine_minor=engine_parts[1],
        engine_patch=engine_parts[2],
        # Falco hashes its field definitions here; a simulator has none, so a fixed marker.
        engine_fields_checksum="serving-guard-simulator",
    )


def _to_response(item: Feedable) -> outputs_pb2.response:
    if isinstance(item, outputs_pb2.response):
        return item
    if isinstance(item, Alert):
        return response_from_alert(item)
    return response_from_falco_json(item)


class FalcoGrpcServer:
    """Falco's gRPC outputs and version services over a unix socket or mutual-TLS TCP."""

    def __init__(
        self,
        address: str,
        *,
        tls: ServerTLS | None = None,
        falco_version: str | None = "0.43.0",
        engine_version: str | None = None,
        max_workers: int = 8,
    ) -> None:
        if not address.startswith("unix:") and tls is None:
            raise ValueError(f"{address}: Falco serves TCP only with mutual TLS; pass tls=ServerTLS(...)")
        self._requested_address = address
        self._bound_address: str | None = None
        self._tls = tls
        # None: no version service, like Falco before 0.20 (calls get UNIMPLEMENTED).
        self._version = None if falco_version is None else version_response(falco_version, engine_version)
        self._max_workers = max_workers
        self._server: grpc.Server | None = None
        self._executor: futures.ThreadPoolExecutor | None = None
        self._queue: deque[outputs_pb2.response] = deque()
        self._lock = threading.Condition()
        # Counters the tests and the replay read (under the lock).
        self.sub_requests = 0
        self.delivered = 0
        self.get_calls = 0
        self.version_calls = 0
        self.open_streams = 0

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """The address clients dial: the requested one, with port 0 replaced by the bound port."""
        return self._bound_address or self._requested_address

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("the server is already running")
        executor = futures.ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="falco-grpc")
        server = grpc.server(executor)
        server.add_generic_rpc_handlers((self._handlers(),))
        address = self.address
        if self._tls is None:
            server.add_insecure_port(address)
            self._bound_address = address
        else:
            credentials = grpc.ssl_server_credentials(
                [(Path(self._tls.key_file).read_bytes(), Path(self._tls.cert_file).read_bytes())],
                root_certificates=Path(self._tls.ca_file).read_bytes(),
                require_client_auth=True,  # GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
            )
            port = server.add_secure_port(address, credentials)
            if port == 0:
                raise OSError(f"cannot listen on {address}")
            host = address.rsplit(":", 1)[0]
            self._bound_address = f"{host}:{port}"
        server.start()
        self._server, self._executor = server, executor

    def stop(self, grace: float | None = None) -> None:
        """Stop serving (open streams are cancelled, like a Falco restart); queued alerts stay."""
        server, self._server = self._server, None
        executor, self._executor = self._executor, None
        if server is not None:
            server.stop(grace).wait()
        if executor is not None:
            executor.shutdown(wait=False)

    def __enter__(self) -> FalcoGrpcServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the queue ------------------------------------------------------------------------------

    def publish(self, item: Feedable) -> None:
        """Queue one alert (an Alert, Falco's JSON as a dict, or a raw response) for the next consumer."""
        response = _to_response(item)
        with self._lock:
            self._queue.append(response)

    def publish_many(self, items: Iterable[Feedable]) -> None:
        responses = [_to_response(item) for item in items]
        with self._lock:
            self._queue.extend(responses)

    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def wait_drained(self, timeout: float | None = None) -> bool:
        """Block until every queued alert was popped by a consumer; False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: not self._queue, timeout)

    def _pop(self) -> outputs_pb2.response | None:
        with self._lock:
            if not self._queue:
                return None
            self.delivered += 1
            response = self._queue.popleft()
            if not self._queue:
                self._lock.notify_all()
            return response

    def _drain(self) -> Iterator[outputs_pb2.response]:
        # One pop per write, so a consumer blocked by flow control leaves the rest queued.
        while (response := self._pop()) is not None:
            yield response

    # -- the services ---------------------------------------------------------------------------

    def _handlers(self) -> _MethodRouter:
        methods = {
            GET_METHOD: grpc.unary_stream_rpc_method_handler(
                self._get,
                request_deserializer=outputs_pb2.request.FromString,
                response_serializer=outputs_pb2.response.SerializeToString,
            ),
            SUB_METHOD: grpc.stream_stream_rpc_method_handler(
                self._sub,
                request_deserializer=outputs_pb2.request.FromString,
                response_serializer=outputs_pb2.response.SerializeToString,
            ),
        }
        if self._version is not None:
            methods[VERSION_METHOD] = grpc.unary_unary_rpc_method_handler(
                self._version_call,
                request_deserializer=version_pb2.request.FromString,
                response_serializer=version_pb2.response.SerializeToString,
            )
        return _MethodRouter(methods)

    def _get(self, request: outputs_pb2.request, context: Any) -> Iterator[outputs_pb2.response]:
        with self._lock:
            self.get_calls += 1
        yield from self._drain()

    def _sub(self, requests: Iterator[outputs_pb2.request], context: Any) -> Iterator[outputs_pb2.response]:
        with self._lock:
            self.open_streams += 1
        try:
            for _request in requests:
                with self._lock:
                    self.sub_requests += 1
                yield from self._drain()
        finally:
            with self._lock:
                self.open_streams -= 1

    def _version_call(self, request: version_pb2.request, context: Any) -> version_pb2.response:
        with self._lock:
            self.version_calls += 1
        assert self._version is not None  # only routed when there is a version
        return self._version


class _MethodRouter:
    """A grpc generic handler: routes full method paths to their handlers."""

    def __init__(self, methods: Mapping[str, Any]) -> None:
        self._methods = dict(methods)

    def service(self, handler_call_details: Any) -> Any:
        return self._methods.get(handler_call_details.method)
