"""What the Kubernetes API says about the pod an alert names (read once per incident, cached)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    name: str
    image: str
    # From status: the resolved image (with digest) and the runtime's id ("containerd://<64 hex>").
    image_id: str | None = None
    container_id: str | None = None
    init: bool = False

    @property
    def short_id(self) -> str | None:
        """The 12-character id Falco prints as container.id."""
        if not self.container_id:
            return None
        bare = self.container_id.split("://", 1)[-1]
        return bare[:12] if bare else None

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
    resource_version: str | None = None
    # spec.hostNetwork, which cannot change on a running pod: NetworkPolicies do not cover it.
    host_network: bool = False

    @property
    def workload(self) -> OwnerRef | None:
        """The top of the owner chain (the thing a human scales or edits), if any."""
        return self.owners[-1] if self.owners else None

    def container_by_id(self, container_id: str) -> ContainerInfo | None:
        wanted = container_id.split("://", 1)[-1].lower()
        if len(wanted) < 12:
            return None  # too short to identify a container safely
        for container in self.containers:
            full = (container.container_id or "").split("://", 1)[-1].lower()
            if full and full.startswith(wanted):
                return container
        return None
