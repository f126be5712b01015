"""Can the pod's processes leave its network namespace for the node's, where no NetworkPolicy
applies? Read from the pod's spec (pure). A quarantine or a block of such a pod is never reported
as in force: its isolation is not proven.

Counted, in any container, init container or ephemeral (debug) container:
- ``privileged: true``. It holds every capability and the node's devices: it can mount the node's
  disk, write to the node's cgroups or load a kernel module, and so run a process on the node's
  network; with ``hostPID`` it simply enters it (``nsenter -t 1 -n``).
- ``capabilities.add`` of ALL, SYS_ADMIN (mounts, cgroup release agents, ``setns``) or SYS_MODULE
  (kernel modules): the same, unless seccomp or AppArmor stop it, which the API does not show.
- SYS_PTRACE with ``hostPID``: code injected into a node process runs on the node's network.
- A ``hostPath`` volume of the node's root or of a container runtime's socket (or a directory
  holding one): the runtime starts a container on the host network when asked.

Not counted: extended resources such as ``nvidia.com/gpu`` (the device plugin hands the container
its device files, not the node), NET_ADMIN and NET_RAW (they act within the pod's own namespace,
while the CNI enforces policies outside it), and other hostPath volumes (a writable one under
/etc or /var/lib/kubelet is an escape too, but telling those from read-only driver mounts is not
done here). hostNetwork is said apart (netpol.HOST_NETWORK): the pod is on the node's network.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Mapping
from typing import Any

from responder.actions.netpol import HOST_NETWORK

# What every finding is prefixed with: the quarantine's and the block's detail, and Slack's advice.
NETWORK_ESCAPE = "the pod can leave its network namespace, which NetworkPolicies do not cover"

CONTAINER_KINDS = ("containers", "initContainers", "ephemeralContainers")
# Capabilities that reach the node whatever the pod shares with it, and those that need hostPID.
ESCAPING_CAPABILITIES = ("ALL", "SYS_ADMIN", "SYS_MODULE")
HOST_PID_CAPABILITIES = ("SYS_PTRACE",)
# Each under /run and /var/run (a link to /run on most nodes, mounted by either name).
RUNTIME_SOCKETS = (
    "/run/containerd/containerd.sock",
    "/var/run/containerd/containerd.sock",
    # k3s's and RKE2's embedded containerd.
    "/run/k3s/containerd/containerd.sock",
    "/var/run/k3s/containerd/containerd.sock",
    "/run/crio/crio.sock",
    "/var/run/crio/crio.sock",
    "/run/docker.sock",
    "/var/run/docker.sock",
    "/run/cri-dockerd.sock",
    "/var/run/cri-dockerd.sock",
    "/run/podman/podman.sock",
    "/var/run/podman/podman.sock",
    # MicroK8s's containerd (a snap).
    "/var/snap/microk8s/common/run/containerd.sock",
)
NSENTER = "it can enter the node's network namespace (nsenter -t 1 -n)"


def out_of_reach(spec: Mapping[str, Any]) -> list[str]:
    """What puts a pod with ``spec`` beyond any NetworkPolicy, in words: the host network
    (netpol.HOST_NETWORK), a way out of its own network namespace (:func:`network_escape`), or both.
    Empty: nothing that this module counts. The quarantine and the block alike read it."""
    return out_of_reach_as_read(bool(spec.get("hostNetwork")), network_escape(spec))


def out_of_reach_as_read(host_network: bool, escape: str | None) -> list[str]:
    """:func:`out_of_reach` from what was read of the pod already (PodContext.host_network and
    .network_escape, which enrichment took from its spec)."""
    return [*([HOST_NETWORK] if host_network else []), *([escape] if escape is not None else [])]


def network_escape(spec: Mapping[str, Any]) -> str | None:
    """What in the pod's ``spec`` lets its processes leave its network namespace, in words
    (prefixed with NETWORK_ESCAPE); None: nothing that this module counts."""
    found = [*_container_escapes(spec), *_volume_escapes(spec)]
    return f"{NETWORK_ESCAPE}: {'; '.join(found)}" if found else None


def _container_escapes(spec: Mapping[str, Any]) -> Iterator[str]:
    host_pid = spec.get("hostPID") is True
    for kind in CONTAINER_KINDS:
        for container in _mappings(spec.get(kind)):
            finding = _container_escape(container, host_pid=host_pid)
            if finding is not None:
                yield f"{_kind_name(kind)} {str(container.get('name'))[:63]} {finding}"


def _container_escape(container: Mapping[str, Any], *, host_pid: bool) -> str | None:
    """Why this container can leave the pod's network namespace (the rest of a sentence that
    starts with it), or None."""
    context = container.get("securityContext")
    context = context if isinstance(context, Mapping) else {}
    shared = " and the pod shares the node's PID namespace (hostPID): " + NSENTER
    if context.get("privileged") is True:
        if host_pid:
            return "is privileged" + shared
        return "is privileged: it can reach the node's network through the node's devices, disks or kernel"
    added = _added_capabilities(context)
    escaping = [c for c in ESCAPING_CAPABILITIES if c in added]
    if escaping and host_pid:
        return f"adds capability {escaping[0]}" + shared
    if escaping:
        return (
            f"adds capability {escaping[0]}: it can reach the node's network through mounts, cgroups or"
            " kernel modules unless seccomp or AppArmor stop it"
        )
    ptrace = [c for c in HOST_PID_CAPABILITIES if c in added]
    if ptrace and host_pid:
        return (
            f"adds capability {ptrace[0]} and the pod shares the node's PID namespace (hostPID): code it"
            " injects into a node process runs on the node's network"
        )
    return None


def _added_capabilities(context: Mapping[str, Any]) -> set[str]:
    """securityContext.capabilities.add, upper-case and without the CAP_ prefix runtimes accept."""
    capabilities = context.get("capabilities")
    added = capabilities.get("add") if isinstance(capabilities, Mapping) else None
    if not isinstance(added, list):
        return set()
    names = {str(name).upper() for name in added}
    return {name.removeprefix("CAP_") for name in names}


def _volume_escapes(spec: Mapping[str, Any]) -> Iterator[str]:
    for volume in _mappings(spec.get("volumes")):
        host_path = volume.get("hostPath")
        path = host_path.get("path") if isinstance(host_path, Mapping) else None
        if not isinstance(path, str) or not path.startswith("/"):
            continue
        exposed = _exposed_by(posixpath.normpath(path))
        if exposed is not None:
            yield (
                f"volume {str(volume.get('name'))[:63]} mounts the node's {path[:256]} ({exposed}):"
                " a container started through it can run on the node's network"
            )


def _exposed_by(path: str) -> str | None:
    """What of the node's a hostPath of ``path`` (normalised) hands the pod: its root, or a
    container runtime's socket (the path itself or a directory holding it); None: neither."""
    if path in ("/", "//"):
        return "the node's root, container runtime sockets included"
    socket = next((s for s in RUNTIME_SOCKETS if s == path or s.startswith(path + "/")), None)
    return f"container runtime socket {socket}" if socket is not None else None


def _kind_name(kind: str) -> str:
    return {"containers": "container", "initContainers": "init container"}.get(kind, "ephemeral container")


def _mappings(value: object) -> Iterator[Mapping[str, Any]]:
    """The mappings of a list from the API (anything else in it is skipped)."""
    if isinstance(value, list):
        yield from (item for item in value if isinstance(item, Mapping))
