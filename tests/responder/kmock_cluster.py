"""Shared changes to the emulated (kmock) API server's cluster, made through a test's gateway."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from responder.cluster.api import KubeGateway


def delete_policy_before_each_put(gateway: KubeGateway) -> None:
    """From now on, the NetworkPolicy each PUT (``replace_network_policy``) names is deleted just
    before it (GitOps prune, kubectl delete): the PUT meets it gone."""
    put = gateway.replace_network_policy

    def deleting_first(namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        gateway.request("DELETE", f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies/{name}")
        return put(namespace, name, body)

    gateway.replace_network_policy = deleting_first  # type: ignore[method-assign]
