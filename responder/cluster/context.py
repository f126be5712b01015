"""What the Kubernetes API says about the pod an alert names (read once per incident, cached)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# Falco prints 12 characters of the id; fewer could match another container of the node.
MIN_ID_LENGTH = 12


def _bare_id(container_id: str) -> str:
    """The id without the runtime's scheme ("containerd://"), lower-case."""
    return container_id.split("://", 1)[-1].lower()


def container_key(container_id: str) -> str:
    """The id as the pod check reads it (lower-case, no scheme): spellings that differ only there
    are one container, one incident. Never cut shorter than the check compares: a forged id of a
    real id's 12 characters plus more would key the genuine alert's incident, fail the check, and
    hold the genuine alert in its unverified incident."""
    return _bare_id(container_id)


def is_runtime_id(container_id: str) -> bool:
    """Whether the id reads as a runtime's container id: 12 (Falco's form) to 64 hex characters,
    after an optional scheme."""
    bare = _bare_id(container_id)
    return MIN_ID_LENGTH <= len(bare) <= 64 and all(c in "0123456789abcdef" for c in bare)


def _has_id(container_id: str | None, wanted: str) -> bool:
    full = _bare_id(container_id or "")
    return bool(full) and full.startswith(wanted)


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    name: str
    image: str
    # From status: the resolved image (with digest) and the runtime's id ("containerd://<64 hex>").
    image_id: str | None = None
    container_id: str | None = None
    init: bool = False
    # lastState.terminated.containerID: the run before the last restart (the kubelet keeps one).
    previous_container_id: str | None = None
    # The pod's status may not show this container's current run yet: it has no id yet, is waiting
    # (being created, backing off) or stopped with a restart to come. The kubelet reports a run a
    # second or so after it starts; Falco's alerts about it can come sooner.
    awaiting_run: bool = False

    @property
    def short_id(self) -> str | None:
        """The 12-character id Falco prints as container.id."""
        if not self.container_id:
            return None
        bare = self.container_id.split("://", 1)[-1]
        return bare[:12] if bare else None

    def restarted_since(self, container_id: str) -> bool:
        """Whether ``container_id`` names this container's run before its last restart, not its
        current one."""
        wanted = _bare_id(container_id)
        return not _has_id(self.container_id, wanted) and _has_id(self.previous_container_id, wanted)

    @property
    def digest(self) -> str | None:
        if self.image_id and "@" in self.image_id:
            return self.image_id.rsplit("@", 1)[1]
        return None


@dataclass(frozen=True, slots=True)
class OwnerRef:
    kind: str
    name: str
    api_version: str = ""


@dataclass(frozen=True, slots=True)
class PodContext:
    namespace: str
    name: str
    uid: str
    node: str | None
    phase: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    service_account: str | None = None
    containers: tuple[ContainerInfo, ...] = ()
    # From the pod up: ReplicaSet, then Deployment (or StatefulSet, Job, ..., InferenceService).
    owners: tuple[OwnerRef, ...] = ()
    namespace_labels: Mapping[str, str] = field(default_factory=dict)
    # Why the namespace's labels could not be read (then namespace_labels is empty, not known to be
    # empty: whether the namespace opted in is unknown). None: they were read.
    namespace_labels_error: str | None = None
    resource_version: str | None = None
    # spec.hostNetwork, which cannot change on a running pod: NetworkPolicies do not cover it.
    host_network: bool = False
    # What lets its processes leave its network namespace for the node's, where no NetworkPolicy
    # applies (cluster.network_escape, in words); None: nothing found.
    network_escape: str | None = None
    # metadata.creationTimestamp (None: not given, or not a time): an alert older than the pod is
    # about an earlier pod of its name, or forged.
    created_ns: int | None = None

    @property
    def awaiting_runs(self) -> tuple[str, ...]:
        """The containers whose current run the status may not show yet (ContainerInfo.awaiting_run)."""
        return tuple(c.name for c in self.containers if c.awaiting_run)

    @property
    def workload(self) -> OwnerRef | None:
        """The top of the owner chain (the thing a human scales or edits), if any."""
        return self.owners[-1] if self.owners else None

    def container_by_id(self, container_id: str) -> ContainerInfo | None:
        """The container whose id starts with ``container_id``; failing that, the one whose run
        before its last restart had it (an alert read after a crash, an OOM or a `kill 1`: the same
        pod, network and volumes). None: neither, or an id too short to tell containers apart."""
        wanted = _bare_id(container_id)
        if len(wanted) < MIN_ID_LENGTH:
            return None
        running = next((c for c in self.containers if _has_id(c.container_id, wanted)), None)
        if running is not None:
            return running
        return next((c for c in self.containers if _has_id(c.previous_container_id, wanted)), None)
