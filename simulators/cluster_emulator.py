"""An in-process Kubernetes API for the demo, the tests and the benchmark.

kmock's KubernetesEmulator serves real HTTP on loopback and stores objects; this subclass
closes the gaps that matter to the responder, so the code under test talks to it exactly
as it would to a kube-apiserver:

- metadata.namespace, uid, resourceVersion, creationTimestamp and generateName are filled;
- list honours labelSelector and fieldSelector (metadata.name, spec.nodeName);
- PUT replaces the object and answers 409 on a stale resourceVersion; PATCH honours a
  metadata.uid / metadata.resourceVersion precondition and merge-patch null deletion;
- Namespace objects (cluster-scoped) can be read and listed;
- injected faults (403, 404, 500, ...) are served WITHOUT touching stored state;
- an optional per-request latency, for the benchmark.

It runs its own event loop in a background thread (:class:`RunningCluster`), because the
official ``kubernetes`` client is synchronous.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import datetime
import functools
import itertools
import json
import re
import ssl
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp.test_utils
import aiohttp.web
import attrs
import kmock

from responder.cluster.selectors import SelectorError, parse_label_selector, selector_matches
from simulators.background import BackgroundLoop

_NAMESPACE_PATH = re.compile(r"^/api/v1/namespaces(?:/(?P<name>[^/]+))?/?$")


@dataclass
class Fault:
    """Serve ``status`` to the next ``times`` requests matching method/plural/name (None = any)."""

    status: int
    method: str | None = None
    plural: str | None = None
    name: str | None = None
    times: int = 1
    message: str = "injected fault"
    # kmock's action: "list", "fetch", "create", "update", "delete", "watch" (None: any).
    action: str | None = None
    # The request's exact URL path, for a request that names no resource (discovery: "/apis").
    path: str | None = None
    # Answer only after this long: an API server that hangs (the client's timeout comes first).
    delay_seconds: float = 0.0

    def matches(
        self,
        method: str,
        plural: str | None,
        name: str | None,
        action: str | None = None,
        path: str | None = None,
    ) -> bool:
        return (
            (self.method is None or self.method.upper() == method.upper())
            and (self.plural is None or self.plural == plural)
            and (self.name is None or self.name == name)
            and (self.action is None or self.action == action)
            and (self.path is None or self.path == path)
        )


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: null deletes, objects merge, everything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


def _field_value(obj: Mapping[str, Any], dotted: str) -> Any:
    value: Any = obj
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


@attrs.define(kw_only=True)
class ClusterEmulator(kmock.KubernetesEmulator):
    latency_seconds: float = 0.0
    faults: list[Fault] = attrs.field(factory=list)
    namespaces: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    # Reads of one object, by (plural, name), answered or not: what a test counts API calls by.
    fetches: collections.Counter[tuple[str | None, str | None]] = attrs.field(factory=collections.Counter)
    # The bearer tokens the API server accepts, as a real one does (None: any request, as kmock
    # alone); a request without one of them is answered 401. What each request carried is counted.
    bearer_tokens: set[str] | None = None
    tokens_seen: collections.Counter[str] = attrs.field(factory=collections.Counter)
    _versions: Iterator[int] = attrs.field(factory=lambda: itertools.count(1000), init=False)

    # -- seeding and inspection (used by tests and the demo) ---------------------------------

    def add_namespace(self, name: str, labels: Mapping[str, str] | None = None) -> None:
        self.namespaces[name] = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "uid": str(uuid.uuid4()),
                "resourceVersion": str(next(self._versions)),
                "creationTimestamp": _now(),
                "labels": {"kubernetes.io/metadata.name": name, **(labels or {})},
            },
        }

    def put_object(self, resource: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Store an object directly (seeding), with the metadata the API server would add."""
        data = copy.deepcopy(dict(obj))
        meta = data.setdefault("metadata", {})
        self._fill_metadata(meta, meta.get("namespace"))
        self.objects[resource, meta.get("namespace"), meta["name"]] = data
        return data

    def get_object(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        key = (kmock.resource(resource), namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return copy.deepcopy(self.objects[key].raw)

    def list_objects(self, resource: str, namespace: str | None = None) -> list[dict[str, Any]]:
        wanted = kmock.resource(resource)
        return [
            copy.deepcopy(obj.raw)
            for (res, ns, _), obj in self.objects.items()
            if res == wanted and not obj.deleted and (namespace is None or ns == namespace)
        ]

    def inject(self, fault: Fault) -> None:
        self.faults.append(fault)

    # -- request handling ---------------------------------------------------------------------

    def _fill_metadata(self, meta: dict[str, Any], namespace: str | None) -> None:
        if namespace is not None:
            meta["namespace"] = namespace
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", _now())
        meta["resourceVersion"] = str(next(self._versions))

    def _take_fault(
        self,
        method: str,
        plural: str | None,
        name: str | None,
        action: str | None = None,
        path: str | None = None,
    ) -> Fault | None:
        for fault in self.faults:
            if fault.times > 0 and fault.matches(method, plural, name, action, path):
                fault.times -= 1
                return fault
        return None

    async def _error(self, status: int, reason: str, message: str) -> aiohttp.web.StreamResponse:
        return await self._render_error(kmock.KubernetesError(status=status, reason=reason, message=message))

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if self.latency_seconds:
            await asyncio.sleep(self.latency_seconds)
        scheme, _, token = str(request.headers.get("Authorization", "")).partition(" ")
        self.tokens_seen[token if scheme.lower() == "bearer" else ""] += 1
        if self.bearer_tokens is not None and (scheme.lower() != "bearer" or token not in self.bearer_tokens):
            return await self._error(401, "Unauthorized", "Unauthorized")
        method = str(request.method.value if request.method else "GET")
        plural = request.resource.plural if request.resource is not None else None
        ns_match = _NAMESPACE_PATH.match(request.url.path)
        if ns_match:
            plural = "namespaces"
            name = ns_match.group("name")
        else:
            name = request.name
        action = str(request.action.value).lower() if request.action is not None else None
        if action == "fetch":
            self.fetches[(plural if isinstance(plural, str) else None, name)] += 1
        fault = self._take_fault(
            method, plural if isinstance(plural, str) else None, name, action, request.url.path
        )
        if fault is not None:
            if fault.delay_seconds:
                await asyncio.sleep(fault.delay_seconds)
            return await self._error(fault.status, "Injected", fault.message)
        if ns_match:
            return await self._serve_namespace(method, name)
        if request.resource is None:
            return await super()._handle(request)
        if request.action == kmock.action.CREATE:
            if not isinstance(request.data, dict):
                return await self._error(400, "BadRequest", "POST needs a JSON object")
            # kmock matches requests by identity, so the body is completed in place.
            meta = request.data.setdefault("metadata", {})
            if not meta.get("name") and not meta.get("generateName"):
                return await self._error(422, "Invalid", "metadata.name or generateName is required")
            self._fill_metadata(meta, request.namespace or meta.get("namespace"))
            return await self._serve_create(request)
        if request.action == kmock.action.FETCH and name is not None and request.subresource is None:
            return await self._serve_read(request)
        if request.action == kmock.action.LIST:
            return await self._serve_filtered_list(request)
        if method == "PUT" and name is not None and request.subresource is None:
            return await self._serve_replace(request)
        if method == "PATCH" and name is not None:
            return await self._serve_patch(request)
        return await super()._handle(request)

    # kmock's generic paths look at every stored object and every registered reaction per request
    # (~10 ms of CPU per read with a few hundred objects, a few creates per second): these serve the
    # same answers straight from the store, so latency measured against the emulator is the caller's.

    async def _serve_create(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        assert isinstance(request.data, dict) and request.resource is not None
        data = request.data
        meta = data["metadata"]
        key = (request.resource, meta.get("namespace"), meta["name"])
        async with self._lock:
            if key in self.objects and not self.objects[key].deleted:
                return await self._error(409, "AlreadyExists", f'"{meta["name"]}" already exists')
            if key in self.objects:
                self.objects[key].create(data)
            else:
                self.objects[key] = data
            await self._buses[request.resource].put({"type": "ADDED", "object": copy.deepcopy(data)})
        return aiohttp.web.json_response(data, status=201)

    async def _serve_read(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        async with self._lock:
            stored = self._stored(request)
            raw = None if stored is None else stored.raw
        if raw is None:
            return await self._error(404, "NotFound", f'"{request.name}" not found')
        return aiohttp.web.json_response(raw)

    async def _serve_namespace(self, method: str, name: str | None) -> aiohttp.web.StreamResponse:
        if method != "GET":
            return await self._error(405, "MethodNotAllowed", "namespaces are read-only here")
        if name is None:
            items = [copy.deepcopy(ns) for ns in self.namespaces.values()]
            return aiohttp.web.json_response({"kind": "NamespaceList", "apiVersion": "v1", "items": items})
        if name not in self.namespaces:
            return await self._error(404, "NotFound", f'namespaces "{name}" not found')
        return aiohttp.web.json_response(self.namespaces[name])

    async def _serve_filtered_list(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        params = request.params or {}
        try:
            label_selector = parse_label_selector(params.get("labelSelector", ""))
        except SelectorError as exc:
            return await self._error(400, "BadRequest", str(exc))
        field_terms = [t for t in params.get("fieldSelector", "").split(",") if t]
        items = []
        async with self._lock:
            for (resource, namespace, _), obj in self.objects.items():
                if resource != request.resource or obj.deleted:
                    continue
                if request.namespace is not None and namespace != request.namespace:
                    continue
                raw = obj.raw
                labels = (raw.get("metadata") or {}).get("labels") or {}
                if not selector_matches(label_selector, labels):
                    continue
                if not all(self._field_term_holds(raw, term) for term in field_terms):
                    continue
                item = copy.deepcopy(raw)
                # As the API server lists: items carry no apiVersion or kind (only the list does).
                item.pop("apiVersion", None)
                item.pop("kind", None)
                items.append(item)
        version = str(next(self._versions))
        return aiohttp.web.json_response(
            {"kind": "List", "metadata": {"resourceVersion": version}, "items": items}
        )

    @staticmethod
    def _field_term_holds(obj: Mapping[str, Any], term: str) -> bool:
        negate = "!=" in term
        key, _, value = term.partition("!=" if negate else "=")
        value = value.lstrip("=")
        actual = _field_value(obj, key.strip())
        return (str(actual) != value) if negate else (str(actual) == value)

    def _stored(self, request: kmock.Request) -> Any:
        assert request.resource is not None and request.name is not None  # checked by the caller
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return self.objects[key]

    async def _announce(self, request: kmock.Request, data: dict[str, Any]) -> None:
        """Tell open watches about a change, as the API server would."""
        assert request.resource is not None
        await self._buses[request.resource].put({"type": "MODIFIED", "object": copy.deepcopy(data)})

    async def _serve_replace(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        body = request.data if isinstance(request.data, dict) else None
        if body is None:
            return await self._error(400, "BadRequest", "PUT needs a JSON object")
        if not body.get("apiVersion") or not body.get("kind"):
            # Stricter than may be needed: a client that puts back a listed item as it came (without
            # apiVersion and kind) is caught here rather than on a real cluster.
            return await self._error(400, "BadRequest", "PUT needs the object's apiVersion and kind")
        async with self._lock:
            stored = self._stored(request)
            if stored is None:
                return await self._error(404, "NotFound", f'"{request.name}" not found')
            current = stored.raw
            sent_version = (body.get("metadata") or {}).get("resourceVersion")
            current_meta = current.get("metadata") or {}
            if sent_version and sent_version != current_meta.get("resourceVersion"):
                return await self._error(
                    409,
                    "Conflict",
                    "the object has been modified; please apply your changes to the latest version",
                )
            data = copy.deepcopy(body)
            meta = data.setdefault("metadata", {})
            for kept in ("uid", "creationTimestamp", "namespace", "name"):
                if kept in current_meta:
                    meta[kept] = current_meta[kept]
            meta["resourceVersion"] = str(next(self._versions))
            stored.create(data)
            await self._announce(request, data)
        return aiohttp.web.json_response(data)

    async def _serve_patch(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip()
        if content_type not in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            return await self._error(
                415, "UnsupportedMediaType", f"patch type {content_type!r} not supported"
            )
        patch = request.data
        if not isinstance(patch, dict):
            return await self._error(400, "BadRequest", "PATCH needs a JSON object")
        async with self._lock:
            stored = self._stored(request)
            if stored is None:
                return await self._error(404, "NotFound", f'"{request.name}" not found')
            current = stored.raw
            current_meta = current.get("metadata") or {}
            patch_meta = patch.get("metadata") or {}
            if "uid" in patch_meta and patch_meta["uid"] != current_meta.get("uid"):
                return await self._error(
                    409,
                    "Conflict",
                    f"Precondition failed: UID in precondition: {patch_meta['uid']}, "
                    f"UID in object meta: {current_meta.get('uid')}",
                )
            if "resourceVersion" in patch_meta and patch_meta["resourceVersion"] != current_meta.get(
                "resourceVersion"
            ):
                return await self._error(409, "Conflict", "the object has been modified")
            data = _merge_patch(current, patch)
            data["metadata"]["resourceVersion"] = str(next(self._versions))
            stored.create(data)
            await self._announce(request, data)
        return aiohttp.web.json_response(data)


class _TLSRawServer(aiohttp.test_utils.RawTestServer):
    """kmock's server over TLS (aiohttp's test server takes its context only when started)."""

    def __init__(self, handler: Any, *, tls: ssl.SSLContext, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._tls = tls

    async def start_server(self, loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any) -> None:
        await super().start_server(loop, ssl=self._tls, **kwargs)


class RunningCluster:
    """A ClusterEmulator served on 127.0.0.1 from a background thread; use as a context manager."""

    def __init__(self, emulator: ClusterEmulator | None = None, *, tls: ssl.SSLContext | None = None) -> None:
        self.emulator = emulator if emulator is not None else ClusterEmulator()
        self.url = ""
        self.port = 0
        # Served over TLS with this server context (a real API server's https), else plain HTTP.
        self._tls = tls
        self._background = BackgroundLoop("cluster-emulator", self._serving)

    @contextlib.asynccontextmanager
    async def _serving(self) -> AsyncIterator[None]:
        server_cls: Any = aiohttp.test_utils.RawTestServer
        if self._tls is not None:
            server_cls = functools.partial(_TLSRawServer, tls=self._tls)
        async with self.emulator, kmock.Server(self.emulator, server_cls=server_cls) as server:
            self.url = str(server.url).rstrip("/")
            self.port = server.port
            yield

    def start(self) -> RunningCluster:
        self._background.start()
        return self

    def stop(self) -> None:
        self._background.stop()

    def __enter__(self) -> RunningCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call(self, function: Any, *args: Any) -> Any:
        """Run a callable on the emulator's loop (its state is not thread-safe)."""
        return self._background.call(function, *args)

    def kubeconfig(self) -> dict[str, Any]:
        """A kubeconfig (as data) pointing at the emulator, for the responder's normal loading path."""
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "emulator", "user": {"token": "emulator-token"}}],
            "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "emulator"}}],
            "current-context": "emulator",
        }

    def write_kubeconfig(self, path: str) -> str:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(self.kubeconfig(), handle)
        return path
