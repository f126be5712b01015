"""Which pod a replayed alert is about, read from the Kubernetes API so that ``container.id`` and
``hostname`` match the live pod exactly as Falco would report them, or forged on purpose (random
container id) to test that the responder refuses what it cannot verify."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from responder.alert import FIELD_CONTAINER_ID, FIELD_IMAGE, FIELD_IMAGE_TAG, FIELD_NAMESPACE, FIELD_POD
from responder.cluster.api import KubeError, KubeGateway
from responder.cluster.enrich import containers_of
from responder.errors import UserError

FORGED_HOSTNAME = "forged-node"


@dataclass(frozen=True)
class PodIdentity:
    namespace: str
    name: str
    hostname: str  # Falco's hostname: the node name (FALCO_HOSTNAME from spec.nodeName)
    container_id: str  # the 12-character id Falco prints
    image_repository: str | None
    forged: bool = False
    image_tag: str | None = None

    FIELD_NAMES: ClassVar[tuple[str, ...]] = (
        FIELD_NAMESPACE,
        FIELD_POD,
        FIELD_CONTAINER_ID,
        FIELD_IMAGE,
        FIELD_IMAGE_TAG,
    )

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    def fields(self) -> dict[str, str | None]:
        return {
            FIELD_NAMESPACE: self.namespace,
            FIELD_POD: self.name,
            FIELD_CONTAINER_ID: self.container_id,
            FIELD_IMAGE: self.image_repository,
            FIELD_IMAGE_TAG: self.image_tag,
        }


def parse_pod_ref(text: str) -> tuple[str, str]:
    namespace, sep, name = text.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise UserError(f"--pod must be NAMESPACE/NAME, got {text!r}")
    return namespace, name


def image_repository(image: str) -> str:
    """``registry:5000/team/app:tag@sha256:...`` -> ``registry:5000/team/app`` (Falco's repository)."""
    bare = image.split("@", 1)[0]
    slash = bare.rfind("/")
    colon = bare.rfind(":")
    return bare[:colon] if colon > slash else bare


def image_tag(image: str) -> str | None:
    """``registry:5000/team/app:tag@sha256:...`` -> ``tag`` (Falco's container.image.tag), or None."""
    bare = image.split("@", 1)[0]
    slash = bare.rfind("/")
    colon = bare.rfind(":")
    return bare[colon + 1 :] or None if colon > slash else None


def identity_from_pod(pod: Mapping[str, Any], container: str | None = None) -> PodIdentity:
    """From a pod object as the API returns it; ``container`` names one (default: the first running)."""
    meta = pod.get("metadata") or {}
    namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
    candidates = [c for c in containers_of(pod) if not c.init and c.short_id]
    if container is not None:
        candidates = [c for c in candidates if c.name == container]
    if not candidates:
        named = f" named {container!r}" if container else ""
        raise UserError(f"pod {namespace}/{name} has no running container{named} with a container id")
    chosen = candidates[0]
    node = (pod.get("spec") or {}).get("nodeName")
    if not node:
        raise UserError(f"pod {namespace}/{name} is not scheduled on a node yet")
    assert chosen.short_id is not None  # filtered above
    repository = image_repository(chosen.image) or None
    return PodIdentity(
        namespace, name, str(node), chosen.short_id, repository, image_tag=image_tag(chosen.image)
    )


def read_identity(
    gateway: KubeGateway, namespace: str, name: str, container: str | None = None
) -> PodIdentity:
    try:
        pod = gateway.get_pod(namespace, name)
    except KubeError as exc:
        if exc.not_found:
            raise UserError(f"pod {namespace}/{name} not found") from None
        raise UserError(f"cannot read pod {namespace}/{name}: {exc}") from None
    return identity_from_pod(pod, container)


def forged_identity(namespace: str, name: str, hostname: str = FORGED_HOSTNAME) -> PodIdentity:
    """An alert naming a real pod with a container id no container of it has: must be refused."""
    return PodIdentity(namespace, name, hostname, secrets.token_hex(6), None, forged=True)
