"""A pod's metadata merge-patched as it was read: the patch carries the pod's uid (a pod re-created
under the same name is never touched) and its resourceVersion (a pod changed since it was read is
read again, and the patch worked out afresh from what it carries now), so that a stale read never
undoes what another writer (a replica, a person, a release) did meanwhile."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from responder.actions.pod_records import ReleaseRecord, release_record_in
from responder.cluster.api import KubeError, KubeGateway
from responder.cluster.context import PodContext

CONFLICT_RETRIES = 3


class PodReplaced(Exception):
    """The pod of that name was re-created (another uid) since it was read: not the one alerted on."""


class KeptChanging(Exception):
    """The pod changed between each read and the patch, every time it was tried."""


class ReleasedMeanwhile(Exception):
    """A person released the pod between its read and the patch (``record``, as the pod holds it):
    an incident's follow-up action gives way to it rather than undo it."""

    def __init__(self, record: ReleaseRecord) -> None:
        super().__init__(f"released by {record.by} at {record.at} since the pod was read")
        self.record = record


def patch_as_read(
    gateway: KubeGateway,
    pod: PodContext,
    metadata_for: Callable[[Mapping[str, Any]], dict[str, Any]],
    *,
    label: str,
    yield_to_release: bool = False,
    release_since_ns: int | None = None,
) -> dict[str, Any]:
    """Merge-patch the metadata ``metadata_for`` makes of the pod's metadata as last read (its
    labels and annotations) and return the patched pod. With ``yield_to_release``, a release
    recorded on the pod since ``pod`` was read is not overwritten (the patch clears release records):
    ReleasedMeanwhile; with ``release_since_ns``, such a release made at that time or later (an
    alert's isolation gives way to a release after its event); either, a release of the config
    quarantining under ``label`` (release_record). Raises PodReplaced, KeptChanging
    after CONFLICT_RETRIES attempts, or KubeError (a 404: the pod is gone)."""
    meta: Mapping[str, Any] = {"labels": pod.labels, "annotations": pod.annotations}
    version = pod.resource_version
    as_read = release_record_in(pod.annotations, label)
    for _ in range(CONFLICT_RETRIES):
        metadata = {**metadata_for(meta), "uid": pod.uid}
        if version is not None:
            metadata["resourceVersion"] = version
        try:
            return gateway.patch_pod(pod.namespace, pod.name, {"metadata": metadata})
        except KubeError as exc:
            if not exc.conflict:
                raise
        fresh = gateway.get_pod(pod.namespace, pod.name)  # a 404 here: gone
        meta = fresh.get("metadata") or {}
        if meta.get("uid") != pod.uid:
            raise PodReplaced("pod was replaced (uid changed)")
        # A release changes the pod, so it always meets the patch here as a conflict.
        released = release_record_in(meta.get("annotations") or {}, label)
        gives_way = yield_to_release or (
            release_since_ns is not None and released is not None and released.at_ns >= release_since_ns
        )
        if gives_way and released is not None and released != as_read:
            raise ReleasedMeanwhile(released)
        version = meta.get("resourceVersion")
    raise KeptChanging(f"the pod changed under each of {CONFLICT_RETRIES} attempts to label it")
