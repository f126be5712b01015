"""The chart follows the responder's fixed cuts and exclusions by cut: it renders the cut of both
(labelValue into networkPolicyName) and quarantine.isolate's own (labelValue-<cut> into
networkPolicyName-<cut>) whatever isolate says; its admission policy lets the responder's
ServiceAccount add to another NetworkPolicy only `<label> NotIn` the values of the cuts that stop
every direction that policy governs (no earlier version's `DoesNotExist`, no other values), remove
either, and keep a deny-all that cuts more than its cut. The real responder's writes (one-way cuts,
patches by cut, a wider deny-all repaired, a release putting an exclusion back) are all admitted."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python
import pytest

from responder.actions import netpol
from responder.actions.netpol import deny_all_spec
from responder.actions.quarantine import ClusterActions
from responder.alert import Alert
from responder.alert_json import alert_from_mapping
from responder.cluster.api import KubeGateway
from responder.cluster.context import PodContext
from responder.cluster.enrich import LookupStatus, PodDirectory
from responder.config import Cluster, Isolation, Retry, load_config_text
from simulators.cluster_emulator import RunningCluster
from simulators.falco_json import falco_alert
from simulators.seed import LEAKY_POLICY, SeededPod, seed_serving_cluster
from tests.deploy.admission import Request
from tests.deploy.deploy_support import Case, Rendered, render
from tests.deploy.test_admission_policy import (
    GROUPS,
    PATCHING_OTHER_POLICIES,
    RESOURCES,
    Recorder,
    _kind_of,
    _netpol,
    _refused,
    policies_of,
)

QUARANTINE = "serving-guard.io/quarantine"
GATEWAY_IN = [{"from": [{"podSelector": {"matchLabels": {"app": "gw"}}}]}]
DNS_OUT = [{"ports": [{"protocol": "UDP", "port": 53}]}]
MANAGED = {"app.kubernetes.io/managed-by": "serving-guard"}


def _config_of(rendered: Rendered) -> Any:
    return load_config_text(rendered.config_text())


def _quarantine_policies(rendered: Rendered) -> dict[str, dict[str, Any]]:
    return {
        m["metadata"]["name"]: m["spec"]
        for m in rendered.of_kind("NetworkPolicy")
        if m["metadata"]["name"].startswith("serving-guard-quarantine")
    }


@pytest.mark.parametrize(
    ("isolate", "names"),
    [
        ("both", {"serving-guard-quarantine"}),
        ("egress", {"serving-guard-quarantine", "serving-guard-quarantine-egress"}),
        ("ingress", {"serving-guard-quarantine", "serving-guard-quarantine-ingress"}),
    ],
)
def test_the_chart_renders_the_cut_of_both_and_isolates_own(
    chart: helm_python.Chart, isolate: str, names: set[str]
) -> None:
    values = {
        "enforcement": {"scope": "namespaced", "namespaces": ["models"]},
        "quarantine": {"isolate": isolate},
    }
    rendered = render(chart, Case(f"fixed-cuts-{isolate}", values))
    config = _config_of(rendered)
    found = _quarantine_policies(rendered)
    assert set(found) == names
    for isolation in Isolation:
        cut = config.quarantine.cut(isolation)
        if cut.network_policy in found:
            # The responder's own spec for that cut, label value included: never "repaired".
            assert found[cut.network_policy] == deny_all_spec(QUARANTINE, cut.label_value, cut.directions)
    # "true" is the cut of both under any isolate (an upgrade from an older isolate widens it).
    assert found["serving-guard-quarantine"]["policyTypes"] == ["Ingress", "Egress"]


def _other(types: list[str] | None, **rules: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": {"matchLabels": {"app": "model"}}, **rules}
    if types is not None:
        spec["policyTypes"] = types
    return _netpol("namespace-policy", spec)


def _with(policy: dict[str, Any], *expressions: dict[str, Any]) -> dict[str, Any]:
    changed: dict[str, Any] = {**policy, "spec": {**policy["spec"]}}
    selector = dict(changed["spec"]["podSelector"])
    selector["matchExpressions"] = [*selector.get("matchExpressions", []), *expressions]
    changed["spec"]["podSelector"] = selector
    return changed


def _not_in(*values: str) -> dict[str, Any]:
    return {"key": QUARANTINE, "operator": "NotIn", "values": list(values)}


LEGACY = {"key": QUARANTINE, "operator": "DoesNotExist"}
CUT_VALUES = ("true", "true-egress", "true-ingress")


@pytest.mark.parametrize(
    ("policy", "covering"),
    [
        (_other(["Ingress"], ingress=GATEWAY_IN), ("true", "true-ingress")),
        (_other(["Egress"], egress=DNS_OUT), ("true", "true-egress")),
        (_other(["Ingress", "Egress"], ingress=GATEWAY_IN, egress=DNS_OUT), ("true",)),
        # No policyTypes: Ingress, plus Egress with egress rules (the API server's defaulting).
        (_other(None, ingress=GATEWAY_IN), ("true", "true-ingress")),
        (_other(None, egress=DNS_OUT), ("true",)),
    ],
)
def test_only_the_exclusion_of_the_cuts_covering_the_policy_may_be_added(
    chart: helm_python.Chart, policy: dict[str, Any], covering: tuple[str, ...]
) -> None:
    policies = policies_of(render(chart, PATCHING_OTHER_POLICIES))
    values = netpol.exclusion_expression(QUARANTINE, covering)["values"]
    assert policies.update("networkpolicies", policy, _with(policy, _not_in(*values))).allowed
    # Any other set of cut values would take out pods that rely on the policy, or leave some in.
    for size in (1, 2, 3):
        for other in itertools.combinations(CUT_VALUES, size):
            if list(other) != values:
                verdict = policies.update("networkpolicies", policy, _with(policy, _not_in(*other)))
                assert _refused(verdict), other
    assert _refused(policies.update("networkpolicies", policy, _with(policy, _not_in(*values, "canary"))))
    # An earlier version's exclusion takes out every quarantined pod: never added again.
    assert _refused(policies.update("networkpolicies", policy, _with(policy, LEGACY)))
    # Either comes off (a release), alone.
    for exclusion in (_not_in(*values), LEGACY, _not_in("true-egress")):
        excluded = _with(policy, exclusion)
        assert policies.update("networkpolicies", excluded, policy).allowed, exclusion
    owner = {"key": "tier", "operator": "In", "values": ["gold"]}
    assert _refused(policies.update("networkpolicies", _with(policy, LEGACY), _with(policy, owner)))


def test_the_exclusion_follows_a_custom_label_value(chart: helm_python.Chart) -> None:
    values = {"quarantine": {"labelValue": "yes", "patchOtherPolicies": True}}
    rendered = render(chart, Case("custom-cut-values", values))
    policies = policies_of(rendered)
    policy = _other(["Ingress"], ingress=GATEWAY_IN)
    assert policies.update("networkpolicies", policy, _with(policy, _not_in("yes", "yes-ingress"))).allowed
    assert _refused(
        policies.update("networkpolicies", policy, _with(policy, _not_in("true", "true-ingress")))
    )


def test_a_deny_all_may_cut_more_than_its_cut_never_less(renders: dict[str, Rendered]) -> None:
    policies = policies_of(renders["cluster-listed"])  # isolate egress: names stay fixed

    def deny_all(name: str, value: str, types: list[str]) -> dict[str, Any]:
        spec = {"podSelector": {"matchLabels": {QUARANTINE: value}}, "policyTypes": types}
        return _netpol(name, spec, labels=dict(MANAGED))

    exact = deny_all("serving-guard-quarantine-egress", "true-egress", ["Egress"])
    wider = deny_all("serving-guard-quarantine-egress", "true-egress", ["Ingress", "Egress"])
    assert policies.create_policy(exact).allowed
    assert policies.create_policy(wider).allowed
    assert policies.update("networkpolicies", wider, wider).allowed  # left as it is
    assert _refused(
        policies.create_policy(deny_all("serving-guard-quarantine-egress", "true-egress", ["Ingress"]))
    )
    both = deny_all("serving-guard-quarantine", "true", ["Ingress", "Egress"])
    assert policies.create_policy(both).allowed
    # The cut of both is "true" under any isolate: an Egress-only one would narrow it.
    assert _refused(policies.create_policy(deny_all("serving-guard-quarantine", "true", ["Egress"])))
    assert _refused(
        policies.create_policy(deny_all("serving-guard-quarantine", "true-egress", ["Ingress", "Egress"]))
    )


# -- the real responder's writes --------------------------------------------------------------------


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[RunningCluster, dict[str, SeededPod], str]]:
    with RunningCluster() as running:
        pods = running.call(seed_serving_cluster, running.emulator)
        yield running, pods, running.write_kubeconfig(str(tmp_path / "kubeconfig.json"))


def test_the_responders_writes_with_fixed_cuts_and_exclusions_by_cut_are_admitted(
    chart: helm_python.Chart, cluster: tuple[RunningCluster, dict[str, SeededPod], str]
) -> None:
    running, pods, kubeconfig = cluster
    values = {"quarantine": {"isolate": "egress", "patchOtherPolicies": True}}
    rendered = render(chart, Case("fixed-cuts-writes", values))
    config = load_config_text(rendered.config_text())
    gateway = KubeGateway.from_config(
        Cluster(kubeconfig=kubeconfig, retry=Retry(attempts=3, initial_backoff_seconds=0.01))
    )
    recorder = Recorder(running, gateway)
    actions, replica = ClusterActions.of_config(gateway, config), ClusterActions.of_config(gateway, config)
    directory = PodDirectory(gateway, ttl_seconds=0)
    namespace = pods["triton"].namespace

    def pod(short: str) -> PodContext:
        lookup = directory.lookup(namespace, pods[short].name)
        assert lookup.status is LookupStatus.FOUND and lookup.pod is not None
        return lookup.pod

    def shell(short: str) -> Alert:
        return alert_from_mapping(
            falco_alert(pods[short], "Shell in serving pod", "Warning", "x", {"proc.name": "sh"})
        )

    def put(body: dict[str, Any]) -> None:  # someone else's write: not the responder's
        running.call(
            running.emulator.put_object,
            RESOURCES["networkpolicies"],
            {**body, "metadata": {**body["metadata"], "namespace": namespace}},
        )

    put(_netpol("egress-to-dns", {"podSelector": {}, "policyTypes": ["Egress"], "egress": DNS_OUT}))
    # The egress cut's policy, opened (egress rules) and made to cut ingress too.
    put(
        _netpol(
            "serving-guard-quarantine-egress",
            {
                "podSelector": {"matchLabels": {QUARANTINE: "true-egress"}},
                "policyTypes": ["Ingress", "Egress"],
                "egress": [{}],
            },
            labels=dict(MANAGED),
        )
    )
    egress_cut = actions.quarantine(pod("torchserve"), shell("torchserve"), "i1", "r", dry_run=False)
    assert "keeping its cut of ingress" in egress_cut.detail and egress_cut.patched_policies == (
        "egress-to-dns",
    )
    both = actions.quarantine(
        pod("triton"), shell("triton"), "i2", "r", dry_run=False, isolate=Isolation.BOTH
    )
    assert set(both.patched_policies) == {LEAKY_POLICY}, both.detail

    # A release racing a quarantine of a second triton replica: the exclusion is put back.
    second = running.call(running.emulator.get_object, "v1/pods", namespace, pods["vllm"].name)
    second["metadata"]["labels"]["app"] = "triton"
    running.call(running.emulator.put_object, "v1/pods", second)
    list_pods, pending = gateway.list_pods, [True]

    def listing(namespace: str, label_selector: str | None = None) -> list[dict[str, Any]]:
        found = list_pods(namespace, label_selector=label_selector)
        if pending:
            pending.pop()
            replica.quarantine(pod("vllm"), shell("vllm"), "i3", "r", dry_run=False, isolate=Isolation.BOTH)
        return found

    gateway.list_pods = listing  # type: ignore[method-assign]
    raced = actions.release(namespace, pods["triton"].name, by="alice", reason="done")
    assert f"put the exclusion back on {LEAKY_POLICY}" in raced.detail, raced.detail
    for short in ("vllm", "torchserve"):
        assert actions.release(namespace, pods[short].name, by="alice", reason="done").ok

    policies = policies_of(rendered)
    refused = []
    for write in recorder.writes:
        assert write.namespace is not None
        request = Request(
            "CREATE" if write.verb == "POST" else "UPDATE",
            policies.username,
            GROUPS[write.resource],
            write.resource,
            write.new,
            write.old,
            "",
            write.namespace,
        )
        verdict = policies.decide(request)
        assert verdict.applies
        if not verdict.allowed:
            refused.append((write.verb, write.new["metadata"]["name"], verdict.denials))
    assert refused == []
    # Guards the guard: the writes this test is about were made.
    others = [w for w in recorder.writes if _kind_of(w) == "other"]
    added = [w for w in others if len(w.new["spec"]["podSelector"].get("matchExpressions", [])) > 0]
    assert {w.new["metadata"]["name"] for w in added} == {LEAKY_POLICY, "egress-to-dns"}
    assert [w.new["metadata"]["name"] for w in added].count(LEAKY_POLICY) == 2  # patched, then put back
    repaired = [w for w in recorder.writes if w.new["metadata"]["name"] == "serving-guard-quarantine-egress"]
    assert repaired and repaired[0].new["spec"]["policyTypes"] == ["Ingress", "Egress"]
