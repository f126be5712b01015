"""A pod's lookup is several calls (the pod, its namespace, its owners up the chain), and the lookup
as a whole gets LOOKUP_BUDGET_CALLS calls' budgets: an API server that hangs on the namespace and
owner reads holds the decision (and the pod's lock) that long, not each call's budget over. What
it could not read in time is unknown, as a read that failed: the namespace's opt-in withholds (and
the incident is tried again), the owner chain stops. Against the Kubernetes emulator over loopback
HTTP, and with a clock the test moves."""

from __future__ import annotations

import time
from typing import Any

from responder.cluster.api import KubeError, KubeGateway
from responder.cluster.enrich import LOOKUP_BUDGET_CALLS, LookupStatus, PodDirectory
from responder.config import Cluster, Retry
from simulators.cluster_emulator import Fault, RunningCluster
from simulators.seed import SeededPod
from tests.responder.test_kube_gateway_budget import SLACK_SECONDS

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]
QUICK = Retry(attempts=3, initial_backoff_seconds=0.01, max_backoff_seconds=0.02)


def hang(running: RunningCluster, plural: str) -> None:
    running.call(
        running.emulator.inject,
        Fault(status=503, method="GET", plural=plural, times=1000, delay_seconds=5.0),
    )


def fetched(running: RunningCluster, plural: str) -> int:
    """GETs of one object of ``plural`` the API was sent (answered, failed or hung)."""
    if plural == "namespaces":
        return len([r for r in running.emulator["get"] if r.url.path.count("/") == 4])
    return len([r for r in running.emulator["get"] if f"/{plural}/" in r.url.path])


def test_an_api_that_hangs_after_the_pod_read_holds_the_lookup_its_budget_not_each_calls(
    seeded: Seeded,
) -> None:
    running, pods, kubeconfig = seeded
    triton = pods["triton"]  # a Deployment's replica: ReplicaSet, then Deployment
    gateway = KubeGateway.from_config(
        Cluster(kubeconfig=kubeconfig, request_timeout_seconds=0.3, retry=QUICK)
    )
    try:
        for plural in ("namespaces", "replicasets", "deployments"):
            hang(running, plural)
        started = time.monotonic()
        lookup = PodDirectory(gateway, ttl_seconds=0).lookup(triton.namespace, triton.name)
        took = time.monotonic() - started
    finally:
        gateway.close()
    assert lookup.status is LookupStatus.FOUND and lookup.pod is not None
    # Not read, so unknown: withheld as an outage would be, never "not opted in".
    assert lookup.pod.namespace_labels_error is not None
    # The namespace's read took its whole call (3 attempts); the owner's got what was left: fewer.
    assert fetched(running, "namespaces") == 3
    assert fetched(running, "replicasets") <= 2
    assert fetched(running, "deployments") == 0
    assert [owner.kind for owner in lookup.pod.owners] == ["ReplicaSet"]
    # A bound on the hang, not a timing: each call's budget over would be twice the call's.
    assert took < gateway.call_budget_seconds * LOOKUP_BUDGET_CALLS + SLACK_SECONDS


class SlowGateway:
    """The emulator's gateway, whose named reads each take ``seconds`` on the test's clock."""

    def __init__(self, gateway: KubeGateway, clock: list[float], seconds: dict[str, float]) -> None:
        self._gateway = gateway
        self._clock = clock
        self._seconds = seconds
        self.budgets: dict[str, float | None] = {}

    def _took(self, what: str, budget: float | None = None) -> None:
        self.budgets[what] = budget
        self._clock[0] += self._seconds.get(what, 0.0)

    def get_pod(self, namespace: str, name: str) -> dict[str, Any]:
        self._took("pod")
        return self._gateway.get_pod(namespace, name)

    def get_namespace(self, name: str, *, budget_seconds: float | None = None) -> dict[str, Any]:
        self._took("namespace", budget_seconds)
        if self._seconds.get("namespace"):
            raise KubeError(None, "timed out", verb="GET", path=f"/api/v1/namespaces/{name}")
        return self._gateway.get_namespace(name, budget_seconds=budget_seconds)

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._gateway, attribute)


def test_what_is_left_of_the_budget_goes_to_the_next_read_and_none_is_made_without_it(
    seeded: Seeded,
) -> None:
    running, pods, kubeconfig = seeded
    triton = pods["triton"]
    gateway = KubeGateway.from_config(Cluster(kubeconfig=kubeconfig))
    budget = gateway.call_budget_seconds * LOOKUP_BUDGET_CALLS
    try:
        # The pod's read took half the lookup's budget: the namespace's is given the rest.
        clock = [0.0]
        slow = SlowGateway(gateway, clock, {"pod": budget / 2})
        lookup = PodDirectory(slow, ttl_seconds=0, clock=lambda: clock[0]).lookup(  # type: ignore[arg-type]
            triton.namespace, triton.name
        )
        assert lookup.pod is not None and lookup.pod.namespace_labels_error is None
        assert slow.budgets["namespace"] == budget / 2
        assert [owner.kind for owner in lookup.pod.owners] == ["ReplicaSet", "Deployment"]

        # The pod's read took it all: neither the namespace nor an owner is read.
        before = (fetched(running, "namespaces"), fetched(running, "replicasets"))
        clock = [0.0]
        slow = SlowGateway(gateway, clock, {"pod": budget})
        lookup = PodDirectory(slow, ttl_seconds=0, clock=lambda: clock[0]).lookup(  # type: ignore[arg-type]
            triton.namespace, triton.name
        )
        assert lookup.pod is not None
        assert lookup.pod.namespace_labels_error == (
            f"namespace {triton.namespace} could not be read: the pod's lookup ran out of time"
        )
        assert "namespace" not in slow.budgets
        assert (fetched(running, "namespaces"), fetched(running, "replicasets")) == before
        assert [owner.kind for owner in lookup.pod.owners] == ["ReplicaSet"]  # named by the pod, not read
    finally:
        gateway.close()
