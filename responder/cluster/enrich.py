"""Pod context from the Kubernetes API: the pod, its owner chain and its namespace labels,
cached with a short TTL so a burst of alerts for one pod costs one API read."""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from responder.alert import parse_time_ns
from responder.cluster.api import MIN_ATTEMPT_SECONDS, KubeError, KubeGateway
from responder.cluster.context import ContainerInfo, OwnerRef, PodContext
from responder.cluster.network_escape import network_escape

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
MAX_OWNER_DEPTH = 5
# A pod's lookup (the pod, its namespace, up to MAX_OWNER_DEPTH owners) takes at most this many calls'
# budgets (KubeGateway.call_budget_seconds: 21.7 s by default), whatever number of calls it makes.
LOOKUP_BUDGET_CALLS = 1.5
KSERVE_ISVC_LABEL = "serving.kserve.io/inferenceservice"


class LookupStatus(StrEnum):
    FOUND = "found"
    NOT_FOUND = "not_found"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class PodLookup:
    status: LookupStatus
    pod: PodContext | None = None
    error: str = ""


def valid_name(value: str) -> bool:
    return bool(DNS_SUBDOMAIN.fullmatch(value))  # `$` alone would let a trailing newline through


def _str_map(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def containers_of(pod: Mapping[str, Any]) -> tuple[ContainerInfo, ...]:
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    # A pod that has finished, or is being deleted, runs nothing again; otherwise its restart policy
    # says what stops for good.
    metadata = pod.get("metadata") or {}
    finished = status.get("phase") in ("Succeeded", "Failed") or bool(metadata.get("deletionTimestamp"))
    restart_policy = spec.get("restartPolicy") or "Always"
    statuses: dict[str, Mapping[str, Any]] = {}
    for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
        for item in status.get(key) or []:
            if isinstance(item, Mapping) and isinstance(item.get("name"), str):
                statuses[item["name"]] = item
    result = []
    for key, init in (("containers", False), ("initContainers", True), ("ephemeralContainers", False)):
        for item in spec.get(key) or []:
            if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
                continue
            state = statuses.get(item["name"], {})
            policy = _restart_policy(key, item, restart_policy)
            result.append(
                ContainerInfo(
                    name=item["name"],
                    image=str(item.get("image") or state.get("image") or ""),
                    image_id=state.get("imageID") or None,
                    container_id=state.get("containerID") or None,
                    init=init,
                    previous_container_id=_previous_container_id(state),
                    awaiting_run=not finished and _awaiting_run(state, policy),
                )
            )
    return tuple(result)


# Waiting reasons of a container the kubelet cannot start.
_CANNOT_START = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "ErrImageNeverPull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)


def _restart_policy(key: str, container: Mapping[str, Any], pod_policy: str) -> str:
    """When the kubelet starts this container again once it stops: an ephemeral container never; a
    sidecar (an init container with restartPolicy Always) always; an init step until it succeeds
    (unless the pod never restarts anything); a container as its pod says."""
    if key == "ephemeralContainers":
        return "Never"
    if key == "initContainers":
        if container.get("restartPolicy") == "Always":
            return "Always"
        return "Never" if pod_policy == "Never" else "OnFailure"
    # A container's own restartPolicy (Kubernetes 1.34's container restart rules) over the pod's.
    own = container.get("restartPolicy")
    return own if own in ("Always", "OnFailure", "Never") else pod_policy


def _awaiting_run(status: Mapping[str, Any], restart_policy: str) -> bool:
    """Whether the container's status may not show its current run yet (ContainerInfo.awaiting_run):
    no id yet, waiting (unless it cannot be started), or stopped where ``restart_policy`` starts it
    again. A status with an id and no state (the kubelet always writes one) is taken as current."""
    state = status.get("state")
    state = state if isinstance(state, Mapping) else {}
    waiting = state.get("waiting")
    if isinstance(waiting, Mapping) and waiting.get("reason") in _CANNOT_START:
        # Its image or its config is wrong: it runs nothing until someone mends it, so no alert
        # comes from it (a made-up id naming its pod stays a possible forgery).
        return False
    if not status.get("containerID") or "waiting" in state:
        return True
    terminated = state.get("terminated")
    if isinstance(terminated, Mapping):
        succeeded = terminated.get("exitCode") == 0
        return restart_policy == "Always" or (restart_policy == "OnFailure" and not succeeded)
    return False


def _previous_container_id(status: Mapping[str, Any]) -> str | None:
    """The id of the container's run before its last restart (lastState.terminated.containerID)."""
    last = status.get("lastState")
    terminated = last.get("terminated") if isinstance(last, Mapping) else None
    if not isinstance(terminated, Mapping):
        return None
    container_id = terminated.get("containerID")
    return container_id if isinstance(container_id, str) and container_id else None


def controller_ref(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    for ref in refs:
        if isinstance(ref, Mapping) and ref.get("controller"):
            return ref
    return refs[0] if refs and isinstance(refs[0], Mapping) else None


class _TTLCache:
    """A small LRU with expiry; thread-safe (lookups run on the pool)."""

    def __init__(self, ttl: float, max_entries: int, clock: Callable[[], float]) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._data: OrderedDict[tuple[str, ...], tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()
        # Moved by every drop: a read that began before a drop is not stored (see put).
        self.epoch = 0

    def get(self, key: tuple[str, ...]) -> Any | None:
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return None
            if entry[0] < self._clock():
                del self._data[key]
                return None
            self._data.move_to_end(key)
            return entry[1]

    def put(self, key: tuple[str, ...], value: Any, *, read_in_epoch: int | None = None) -> None:
        """Keep ``value``; with ``read_in_epoch``, only if nothing was dropped since then: an
        action forgets the pod it changed, and a read in flight meanwhile may predate the change
        (it is returned to its caller, not kept for the next), and the entry it would have
        replaced, older still, is dropped too: the next lookup reads the pod anew."""
        if self._ttl <= 0:
            return
        with self._lock:
            if read_in_epoch is not None and read_in_epoch != self.epoch:
                self._data.pop(key, None)
                return
            self._data[key] = (self._clock() + self._ttl, value)
            self._data.move_to_end(key)
            while len(self._data) > self._max:
                self._data.popitem(last=False)

    def drop(self, key: tuple[str, ...]) -> None:
        with self._lock:
            self._data.pop(key, None)
            self.epoch += 1


class PodDirectory:
    def __init__(
        self,
        gateway: KubeGateway,
        *,
        ttl_seconds: float = 10.0,
        max_entries: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._gateway = gateway
        self._cache = _TTLCache(ttl_seconds, max_entries, clock)
        self._clock = clock
        self._lookup_budget = gateway.call_budget_seconds * LOOKUP_BUDGET_CALLS
        # One API read per key at a time: a burst for one pod waits for the first read.
        self._key_locks: dict[tuple[str, ...], threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def _lock_for(self, key: tuple[str, ...]) -> threading.Lock:
        with self._locks_guard:
            if len(self._key_locks) > 8192:
                self._key_locks = {k: v for k, v in self._key_locks.items() if v.locked()}
            return self._key_locks.setdefault(key, threading.Lock())

    def lookup(self, namespace: str, name: str, *, fresh: bool = False) -> PodLookup:
        key = ("pod", namespace, name)
        if not fresh:
            cached = self._cache.get(key)
            if cached is not None:
                return cached  # type: ignore[no-any-return]
        with self._lock_for(key):
            if not fresh:
                cached = self._cache.get(key)
                if cached is not None:
                    return cached  # type: ignore[no-any-return]
            epoch = self._cache.epoch
            result = self._read(namespace, name)
            # Only a pod read whole is kept: a 404 may be a pod about to start (and a forged alert
            # must not make the genuine one wait out the TTL), a namespace left unread is retried.
            if result.pod is not None and result.pod.namespace_labels_error is None:
                self._cache.put(key, result, read_in_epoch=epoch)
            return result

    def forget(self, namespace: str, name: str) -> None:
        self._cache.drop(("pod", namespace, name))

    def _read(self, namespace: str, name: str) -> PodLookup:
        # The pod, its namespace and its owners are several calls: the lookup as a whole gets
        # LOOKUP_BUDGET_CALLS calls' budgets, so a hung API holds the pod's lock (and a decision)
        # that long, not each call's budget over.
        deadline = self._clock() + self._lookup_budget
        try:
            raw = self._gateway.get_pod(namespace, name)
        except KubeError as exc:
            if exc.not_found:
                return PodLookup(LookupStatus.NOT_FOUND, error=str(exc))
            return PodLookup(LookupStatus.FAILED, error=str(exc))
        return PodLookup(LookupStatus.FOUND, pod=self.context_of(raw, namespace, deadline=deadline))

    def _time_left(self, deadline: float | None) -> float | None:
        """What is left of the lookup's budget (None: unbounded); 0 when too little for a call."""
        if deadline is None:
            return None
        left = deadline - self._clock()
        return left if left >= MIN_ATTEMPT_SECONDS else 0.0

    def context_of(
        self, raw: Mapping[str, Any], namespace: str, *, deadline: float | None = None
    ) -> PodContext:
        meta = raw.get("metadata") or {}
        spec = raw.get("spec") or {}
        labels = _str_map(meta.get("labels"))
        namespace_labels, namespace_labels_error = self._namespace_labels(namespace, deadline)
        return PodContext(
            namespace=namespace,
            name=str(meta.get("name", "")),
            uid=str(meta.get("uid", "")),
            node=spec.get("nodeName") or None,
            phase=(raw.get("status") or {}).get("phase"),
            labels=labels,
            annotations=_str_map(meta.get("annotations")),
            service_account=spec.get("serviceAccountName") or None,
            containers=containers_of(raw),
            owners=self._owner_chain(raw, namespace, labels, deadline),
            namespace_labels=namespace_labels,
            namespace_labels_error=namespace_labels_error,
            resource_version=meta.get("resourceVersion"),
            host_network=spec.get("hostNetwork") is True,
            network_escape=network_escape(spec),
            created_ns=_time_ns_or_none(meta.get("creationTimestamp")),
        )

    def _namespace_labels(self, namespace: str, deadline: float | None) -> tuple[dict[str, str], str | None]:
        """The namespace's labels, and why they are unknown (None: read). A namespace not found
        has no labels; a read that failed (403, an outage, no time left of the lookup's budget) is
        not "no labels": the opt-in check withholds on it as unknown and the incident is decided
        again, never "not opted in"."""
        key = ("ns", namespace)
        cached = self._cache.get(key)
        if cached is not None:
            return dict(cached), None
        left = self._time_left(deadline)
        if left == 0.0:
            return {}, f"namespace {namespace} could not be read: the pod's lookup ran out of time"
        try:
            read = self._gateway.get_namespace(namespace, budget_seconds=left)
            labels = _str_map((read.get("metadata") or {}).get("labels"))
        except KubeError as exc:
            if exc.not_found:
                return {}, None
            return {}, f"namespace {namespace} could not be read: {exc}"
        self._cache.put(key, labels)
        return labels, None

    def _owner_chain(
        self, raw: Mapping[str, Any], namespace: str, labels: Mapping[str, str], deadline: float | None
    ) -> tuple[OwnerRef, ...]:
        chain: list[OwnerRef] = []
        current: Mapping[str, Any] | None = raw
        while current is not None and len(chain) < MAX_OWNER_DEPTH:
            ref = controller_ref(current)
            if ref is None or not isinstance(ref.get("kind"), str) or not isinstance(ref.get("name"), str):
                break
            owner = OwnerRef(kind=ref["kind"], name=ref["name"], api_version=str(ref.get("apiVersion", "")))
            chain.append(owner)
            current = self._read_owner(namespace, owner, deadline)
        isvc = labels.get(KSERVE_ISVC_LABEL)
        if isvc and not any(o.kind == "InferenceService" for o in chain):
            # KServe serverless pods sit under Knative objects we do not read; the label names the service.
            chain.append(
                OwnerRef(kind="InferenceService", name=isvc, api_version="serving.kserve.io/v1beta1")
            )
        return tuple(chain)

    def _read_owner(
        self, namespace: str, owner: OwnerRef, deadline: float | None
    ) -> Mapping[str, Any] | None:
        key = ("owner", namespace, owner.kind, owner.name)
        cached = self._cache.get(key)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        left = self._time_left(deadline)
        if left == 0.0:
            return None  # the chain stops where the lookup's time ran out, as where it cannot read
        try:
            obj = self._gateway.get_owner(namespace, owner.kind, owner.name, budget_seconds=left)
        except KubeError:
            return None  # the chain stops at what we may not or cannot read
        if obj is not None:
            self._cache.put(key, obj)
        return obj


def _time_ns_or_none(value: object) -> int | None:
    """An RFC 3339 time of the API's as nanoseconds, or None when it is not one."""
    if not isinstance(value, str):
        return None
    try:
        return parse_time_ns(value)
    except ValueError:
        return None
