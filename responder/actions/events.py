"""Kubernetes Events on the pod for every action, so `kubectl describe pod` tells the story."""

from __future__ import annotations

import datetime
import logging
import socket

from responder.cluster.api import KubeError, KubeGateway
from responder.cluster.context import PodContext

log = logging.getLogger("serving_guard.actions")

MAX_MESSAGE = 1024


class EventRecorder:
    def __init__(self, gateway: KubeGateway, instance: str | None = None) -> None:
        self._gateway = gateway
        self._instance = instance or socket.gethostname()

    def record(
        self, namespace: str, pod_name: str, pod_uid: str | None, reason: str, message: str, *, warning: bool
    ) -> bool:
        """Best effort: an Event that cannot be written is logged, never fails the action."""
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        involved = {"apiVersion": "v1", "kind": "Pod", "name": pod_name, "namespace": namespace}
        if pod_uid:
            involved["uid"] = pod_uid
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{pod_name}.", "namespace": namespace},
            "involvedObject": involved,
            "reason": reason,
            "message": message[:MAX_MESSAGE],
            "type": "Warning" if warning else "Normal",
            "source": {"component": "serving-guard"},
            "reportingComponent": "serving-guard",
            "reportingInstance": self._instance[:128],
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self._gateway.create_event(namespace, body)
        except KubeError as exc:
            log.warning("could not record event", extra={"error": str(exc), "reason": reason})
            return False
        return True

    def record_for(self, pod: PodContext, reason: str, message: str, *, warning: bool = True) -> bool:
        return self.record(pod.namespace, pod.name, pod.uid, reason, message, warning=warning)
