"""A realistic model-serving namespace for the cluster emulator: Triton, TorchServe, vLLM, a
KServe InferenceService and a text-embeddings server, with their owners, running containers with
runtime ids and image digests, and one pre-existing NetworkPolicy that makes a Triton quarantine
leaky.

Used by `make demo`, the tests and the benchmark, so that all of them exercise the same
cluster shapes a real serving namespace has.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from simulators.cluster_emulator import ClusterEmulator

SERVING_NAMESPACE = "ml-serving"
ENFORCE_LABEL = "serving-guard.io/enforce"
LEAKY_POLICY = "allow-gateway-to-triton"


def _hex(seed: str, size: int) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()[:size]


@dataclass(frozen=True)
class SeededPod:
    namespace: str
    name: str
    node: str
    container: str
    image: str
    container_id: str  # the full 64-hex runtime id (Falco prints the first 12)
    labels: dict[str, str]

    @property
    def short_id(self) -> str:
        return self.container_id[:12]

    @property
    def image_repository(self) -> str:
        return self.image.rsplit(":", 1)[0]


def _owner(kind: str, name: str, api_version: str) -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": name,
        "uid": _uuid(kind + name),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _uuid(seed: str) -> str:
    digest = _hex(seed, 32)
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


def pod_manifest(
    pod: SeededPod, owner: dict[str, Any] | None, service_account: str = "model-server"
) -> dict[str, Any]:
    digest = "sha256:" + _hex("image" + pod.image, 64)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod.name,
            "namespace": pod.namespace,
            "labels": dict(pod.labels),
            **({"ownerReferences": [owner]} if owner else {}),
        },
        "spec": {
            "nodeName": pod.node,
            "serviceAccountName": service_account,
            "containers": [{"name": pod.container, "image": pod.image}],
        },
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": pod.container,
                    "image": pod.image,
                    "imageID": f"{pod.image_repository}@{digest}",
                    "containerID": f"containerd://{pod.container_id}",
                    "ready": True,
                    "restartCount": 0,
                }
            ],
        },
    }


def _workload(
    kind: str,
    name: str,
    namespace: str,
    api_version: str,
    owner: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels or {},
            **({"ownerReferences": [owner]} if owner else {}),
        },
        "spec": {},
    }


def make_pod(
    namespace: str, name: str, node: str, container: str, image: str, labels: dict[str, str]
) -> SeededPod:
    return SeededPod(
        namespace, name, node, container, image, _hex(f"{namespace}/{name}/{container}", 64), labels
    )


def seed_serving_cluster(
    emulator: ClusterEmulator, *, namespace: str = SERVING_NAMESPACE
) -> dict[str, SeededPod]:
    """Fill the emulator; returns the pods by short name (triton, torchserve, vllm, kserve,
    embeddings; sandbox in a namespace not opted in)."""
    for name in ("kube-system", "falco", "serving-guard"):
        emulator.add_namespace(name)
    emulator.add_namespace(namespace, {ENFORCE_LABEL: "true", "team": "ml-platform"})
    emulator.add_namespace("ml-sandbox", {"team": "research"})  # not opted in to enforcement

    serving = {"serving-guard.io/serving": "true"}
    pods = {
        "triton": make_pod(
            namespace,
            "triton-7c9d8f6b5-x2k4q",
            "worker-1",
            "triton",
            "nvcr.io/nvidia/tritonserver:24.05-py3",
            {"app": "triton", **serving},
        ),
        "torchserve": make_pod(
            namespace,
            "torchserve-5f7b9c8d4-p8m2n",
            "worker-2",
            "torchserve",
            "pytorch/torchserve:0.11.0-cpu",
            {"app": "torchserve", **serving},
        ),
        "vllm": make_pod(
            namespace, "vllm-0", "worker-3", "vllm", "vllm/vllm-openai:v0.5.0", {"app": "vllm", **serving}
        ),
        "kserve": make_pod(
            namespace,
            "sklearn-iris-predictor-6d4b7c9f8-q7w3e",
            "worker-2",
            "kserve-container",
            "kserve/sklearnserver:v0.13.0",
            {"app": "sklearn-iris", "serving.kserve.io/inferenceservice": "sklearn-iris", **serving},
        ),
        # No scenario of the demo quarantines it: its destination block is one a pod's own policy makes.
        "embeddings": make_pod(
            namespace,
            "text-embeddings-7d5c9b8f6-m3k8v",
            "worker-3",
            "text-embeddings",
            "ghcr.io/huggingface/text-embeddings-inference:cpu-1.5",
            {"app": "text-embeddings", **serving},
        ),
        "sandbox": make_pod(
            "ml-sandbox",
            "notebook-0",
            "worker-1",
            "notebook",
            "vllm/vllm-openai:v0.5.0",
            {"app": "notebook", **serving},
        ),
    }

    def deployment_chain(
        pod: SeededPod, deployment: str, top_owner: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        replica_set = pod.name.rsplit("-", 1)[0]
        emulator.put_object(
            "apps/v1/deployments", _workload("Deployment", deployment, pod.namespace, "apps/v1", top_owner)
        )
        emulator.put_object(
            "apps/v1/replicasets",
            _workload(
                "ReplicaSet",
                replica_set,
                pod.namespace,
                "apps/v1",
                _owner("Deployment", deployment, "apps/v1"),
            ),
        )
        return _owner("ReplicaSet", replica_set, "apps/v1")

    emulator.put_object("v1/pods", pod_manifest(pods["triton"], deployment_chain(pods["triton"], "triton")))
    emulator.put_object(
        "v1/pods", pod_manifest(pods["torchserve"], deployment_chain(pods["torchserve"], "torchserve"))
    )
    emulator.put_object("apps/v1/statefulsets", _workload("StatefulSet", "vllm", namespace, "apps/v1"))
    emulator.put_object("v1/pods", pod_manifest(pods["vllm"], _owner("StatefulSet", "vllm", "apps/v1")))
    emulator.put_object(
        "serving.kserve.io/v1beta1/inferenceservices",
        _workload("InferenceService", "sklearn-iris", namespace, "serving.kserve.io/v1beta1"),
    )
    isvc_owner = _owner("InferenceService", "sklearn-iris", "serving.kserve.io/v1beta1")
    emulator.put_object(
        "v1/pods",
        pod_manifest(pods["kserve"], deployment_chain(pods["kserve"], "sklearn-iris-predictor", isvc_owner)),
    )
    emulator.put_object(
        "v1/pods", pod_manifest(pods["embeddings"], deployment_chain(pods["embeddings"], "text-embeddings"))
    )
    emulator.put_object("v1/pods", pod_manifest(pods["sandbox"], None))

    # A real-world policy: the gateway may reach Triton. It selects Triton pods, so a deny-all
    # quarantine alone would leave that door open (NetworkPolicies are a union of allows).
    emulator.put_object(
        "networking.k8s.io/v1/networkpolicies",
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": LEAKY_POLICY, "namespace": namespace},
            "spec": {
                "podSelector": {"matchLabels": {"app": "triton"}},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [
                            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gateway"}}}
                        ],
                        "ports": [{"protocol": "TCP", "port": 8000}],
                    }
                ],
            },
        },
    )
    # Harmless for quarantine: it selects only the gateway-facing proxy.
    emulator.put_object(
        "networking.k8s.io/v1/networkpolicies",
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "allow-metrics-scrape", "namespace": namespace},
            "spec": {
                "podSelector": {
                    "matchExpressions": [{"key": "app", "operator": "In", "values": ["metrics-proxy"]}]
                },
                "policyTypes": ["Ingress"],
                "ingress": [{"ports": [{"protocol": "TCP", "port": 9090}]}],
            },
        },
    )
    return pods
