"""After an upgrade to fixed cuts, a block policy made by an earlier version leaves out the label
values of its day (`NotIn [true, true-both]` after `quarantine.isolate: egress`, `[true-both,
true-egress]` after `ingress`), so it still selects a pod now labelled into a cut that stops egress
(`true-egress`; `true`, which the chart widens to both) and allows the rest of its egress. A block on
such a pod is never "already out of reach" while that policy lets its egress through: the policy is
rewritten as built now (leaving the pod out) and proven, or the block is LEAKY. Where the block code
meets such a policy otherwise, it rewrites it too, so a later quarantine finds the pod left out.
Against the emulator over real HTTP; the pod's egress is judged by the independent spec reading."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

import pytest

from responder.actions import destination
from responder.actions.block import DestinationBlocks
from responder.actions.events import EventRecorder
from responder.actions.outcome import KeptOut, OutcomeStatus
from responder.config import BlockDestination, Isolation, Quarantine, load_config_text
from simulators.cluster_emulator import Fault, RunningCluster
from simulators.seed import SeededPod
from tests.responder.spec_reading import CLOSED, direction_state
from tests.responder.test_block_destination import egress_alert
from tests.responder.test_quarantine import NP, Harness, shell_alert

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]
QUARANTINE = "serving-guard.io/quarantine"
BLOCK = "serving-guard.io/block"
OLD_EGRESS_VARIANT = ["true", "true-both"]  # an earlier version under quarantine.isolate: egress
OLD_INGRESS_VARIANT = ["true-both", "true-egress"]  # ... under quarantine.isolate: ingress
BUILT_NOW = ["true", "true-egress"]  # Quarantine.covering_values(("egress",))
MANAGED = {"app.kubernetes.io/managed-by": "serving-guard"}


@pytest.fixture
def harness(seeded: Seeded) -> Harness:
    running, _, kubeconfig = seeded
    return Harness(running, kubeconfig)


def old_block(harness: Harness, pod: SeededPod, values: list[str], address: str = "203.0.113.7") -> str:
    """What an earlier version's block of ``address`` left: the pod's block policy, leaving out the
    quarantine label ``values`` (and without NAT64 forms), and the pod labelled into it."""
    uid = harness.pod(pod).uid
    key = destination.pod_key(uid)
    name = destination.block_policy_name("serving-guard-block", uid)
    spec = {
        "podSelector": {
            "matchLabels": {BLOCK: key},
            "matchExpressions": [{"key": QUARANTINE, "operator": "NotIn", "values": values}],
        },
        "policyTypes": ["Egress"],
        "egress": [
            {
                "to": [
                    {"ipBlock": {"cidr": "0.0.0.0/0", "except": [f"{address}/32"]}},
                    {"ipBlock": {"cidr": "::/0"}},
                ]
            },
            {"to": [{"namespaceSelector": {}}]},
        ],
    }
    body = destination.block_policy(pod.namespace, name, spec, owner=(pod.name, uid))
    harness.running.call(harness.running.emulator.put_object, NP, body)
    harness.gateway.patch_pod(pod.namespace, pod.name, {"metadata": {"labels": {BLOCK: key}}})
    return name


def put_deny_all(harness: Harness, namespace: str, name: str, value: str, types: list[str]) -> None:
    """A quarantine policy as the chart renders it (or an earlier version made it)."""
    body = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(MANAGED)},
        "spec": {"podSelector": {"matchLabels": {QUARANTINE: value}}, "policyTypes": types},
    }
    harness.running.call(harness.running.emulator.put_object, NP, body)


def label(harness: Harness, pod: SeededPod, value: str) -> None:
    harness.gateway.patch_pod(pod.namespace, pod.name, {"metadata": {"labels": {QUARANTINE: value}}})


def egress_of(harness: Harness, pod: SeededPod) -> str:
    """The pod's egress as the cluster enforces it, read from the specs alone."""
    policies = harness.running.call(harness.running.emulator.list_objects, NP, pod.namespace)
    return direction_state(policies, harness.pod(pod).labels, "egress")


def stored_policy(harness: Harness, pod: SeededPod, name: str) -> dict[str, Any]:
    stored = harness.stored(NP, pod.namespace, name)
    assert stored is not None
    return stored


def not_in(policy: dict[str, Any]) -> list[str]:
    expressions = policy["spec"]["podSelector"]["matchExpressions"]
    assert [e["key"] for e in expressions] == [QUARANTINE]
    values: list[str] = expressions[0]["values"]
    return values


def test_case_a_an_egress_quarantine_over_an_old_block_rewrites_it_to_leave_the_pod_out(
    seeded: Seeded,
) -> None:
    running, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    harness = Harness(running, kubeconfig, Quarantine(isolate=Isolation.EGRESS))
    name = old_block(harness, vllm, OLD_EGRESS_VARIANT)
    # The new version's egress quarantine labels true-egress, which the old policy does not leave
    # out: the quarantine rewrites the policy, then proves the cut.
    quarantine = harness.actions.quarantine(
        harness.pod(vllm), shell_alert(vllm), "inc-1", "Notice: shell", dry_run=False
    )
    assert quarantine.status is OutcomeStatus.QUARANTINED, quarantine.detail
    assert harness.pod(vllm).labels[QUARANTINE] == "true-egress"
    assert egress_of(harness, vllm) == CLOSED
    policy = stored_policy(harness, vllm, name)
    assert not_in(policy) == BUILT_NOW
    # What it blocked is kept (and in both forms now), should the quarantine be lifted by hand.
    assert destination.blocked_by(policy["spec"]) == {ipaddress.ip_address("203.0.113.7")}
    assert "64:ff9b::cb00:7107/128" in str(policy["spec"]["egress"])

    block = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "198.51.100.9"), dry_run=False
    )
    assert block.status is OutcomeStatus.BLOCKED, block.detail
    assert block.kept_out is KeptOut.QUARANTINE
    assert egress_of(harness, vllm) == CLOSED
    # The block of the earlier address holds too: the cut keeps it out.
    assert harness.lapse(harness.pod(vllm), cut=None, blocked={"203.0.113.7"}) is None


def test_case_a_a_quarantine_that_cannot_rewrite_the_old_block_is_leaky(seeded: Seeded) -> None:
    running, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    harness = Harness(running, kubeconfig, Quarantine(isolate=Isolation.EGRESS))
    name = old_block(harness, vllm, OLD_EGRESS_VARIANT)
    harness.fail(Fault(status=403, method="PUT", plural="networkpolicies", times=10))
    quarantine = harness.actions.quarantine(
        harness.pod(vllm), shell_alert(vllm), "inc-1", "Notice: shell", dry_run=False
    )
    assert quarantine.status is OutcomeStatus.LEAKY, quarantine.detail
    assert f"its block policy {name} still selects it and was not rewritten to leave it out" in (
        quarantine.detail
    )
    assert egress_of(harness, vllm) == f"partial via {name}"


def egress_cut_as_before(harness: Harness, pod: SeededPod) -> None:
    """The pod in the egress cut with the old block policy still selecting it: as an earlier
    version's quarantine left it (before a quarantine rewrote block policies)."""
    label(harness, pod, "true-egress")
    put_deny_all(harness, pod.namespace, "serving-guard-quarantine-egress", "true-egress", ["Egress"])


def test_case_a_a_block_over_an_old_block_the_quarantine_left_is_kept_out_only_once_rewritten(
    seeded: Seeded,
) -> None:
    running, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    harness = Harness(running, kubeconfig, Quarantine(isolate=Isolation.EGRESS))
    name = old_block(harness, vllm, OLD_EGRESS_VARIANT)
    egress_cut_as_before(harness, vllm)
    assert egress_of(harness, vllm) == f"partial via {name}"

    block = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "198.51.100.9"), dry_run=False
    )

    assert block.status is OutcomeStatus.BLOCKED, block.detail
    assert block.kept_out is KeptOut.QUARANTINE
    assert f"rewrote its block policy {name}" in block.detail
    assert egress_of(harness, vllm) == CLOSED
    assert not_in(stored_policy(harness, vllm, name)) == BUILT_NOW


def test_case_b_an_old_ingress_cut_widened_by_the_chart_is_opened_by_an_old_block_until_rewritten(
    harness: Harness, seeded: Seeded
) -> None:
    triton = seeded[1]["triton"]
    name = old_block(harness, triton, OLD_INGRESS_VARIANT)
    # The earlier version (isolate: ingress) labelled `true` into an Ingress-only deny-all ...
    label(harness, triton, "true")
    put_deny_all(harness, triton.namespace, "serving-guard-quarantine", "true", ["Ingress"])
    assert egress_of(harness, triton) == f"partial via {name}"
    # ... which `helm upgrade` renders both ways: `true` now means both, but the old block policy
    # (NotIn [true-both, true-egress]) still selects the pod and keeps its egress open.
    put_deny_all(harness, triton.namespace, "serving-guard-quarantine", "true", ["Ingress", "Egress"])
    assert egress_of(harness, triton) == f"partial via {name}"

    block = harness.actions.block_destination(
        harness.pod(triton), egress_alert(triton, "198.51.100.9"), dry_run=False
    )

    assert block.status is OutcomeStatus.BLOCKED, block.detail
    assert block.kept_out is KeptOut.QUARANTINE and f"rewrote its block policy {name}" in block.detail
    assert egress_of(harness, triton) == CLOSED
    assert not_in(stored_policy(harness, triton, name)) == BUILT_NOW


def test_an_old_block_that_cannot_be_rewritten_makes_the_block_leaky_not_kept_out(
    seeded: Seeded,
) -> None:
    running, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    harness = Harness(running, kubeconfig, Quarantine(isolate=Isolation.EGRESS))
    name = old_block(harness, vllm, OLD_EGRESS_VARIANT)
    egress_cut_as_before(harness, vllm)
    before = stored_policy(harness, vllm, name)
    # The rewrite is refused (an admission policy, RBAC).
    harness.fail(Fault(status=403, method="PUT", plural="networkpolicies", times=10))

    block = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "198.51.100.9"), dry_run=False
    )

    assert block.status is OutcomeStatus.LEAKY, block.detail
    assert block.kept_out is None and block.leaky_policies == (name,)
    assert f"the pod's block policy {name} still selects it" in block.detail
    assert "198.51.100.9 is not blocked" in block.detail
    assert stored_policy(harness, vllm, name)["spec"] == before["spec"]
    assert egress_of(harness, vllm) == f"partial via {name}"


def test_a_dry_run_over_an_old_block_says_it_would_rewrite_it_and_changes_nothing(
    seeded: Seeded,
) -> None:
    running, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    harness = Harness(running, kubeconfig, Quarantine(isolate=Isolation.EGRESS))
    name = old_block(harness, vllm, OLD_EGRESS_VARIANT)
    egress_cut_as_before(harness, vllm)
    before = stored_policy(harness, vllm, name)

    predicted = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "198.51.100.9"), dry_run=True
    )

    assert predicted.status is OutcomeStatus.DRY_RUN
    assert f"the pod's block policy {name} still selects it" in predicted.detail
    assert "it would be rewritten to leave the pod out" in predicted.detail
    assert stored_policy(harness, vllm, name) == before
    assert egress_of(harness, vllm) == f"partial via {name}"


def test_an_old_block_met_where_another_policy_lets_the_address_through_is_rewritten_for_a_later_quarantine(
    seeded: Seeded,
) -> None:
    running, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    harness = Harness(running, kubeconfig, Quarantine(isolate=Isolation.EGRESS))
    name = old_block(harness, vllm, OLD_EGRESS_VARIANT)
    harness.put_policy(
        vllm.namespace,
        "allow-partner",
        {
            "podSelector": {"matchLabels": {"app": "vllm"}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": "198.51.100.0/24"}}]}],
        },
    )
    # No block is made (allow-partner restricts the pod's egress and allows the address) ...
    leaky = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "198.51.100.9"), dry_run=False
    )
    assert leaky.status is OutcomeStatus.LEAKY and leaky.leaky_policies == ("allow-partner",), leaky.detail
    # ... but the pod's old block policy is brought up to date on the way.
    assert f"rewrote its block policy {name}" in leaky.detail
    assert not_in(stored_policy(harness, vllm, name)) == BUILT_NOW

    # So an egress quarantine later is not opened by it: only allow-partner leaks.
    quarantine = harness.actions.quarantine(
        harness.pod(vllm), shell_alert(vllm), "inc-1", "Notice: shell", dry_run=False
    )
    assert quarantine.leaky_policies == ("allow-partner",), quarantine.detail
    assert egress_of(harness, vllm) == "partial via allow-partner"


def test_a_pods_own_block_policy_letting_the_address_through_is_no_kept_out(
    harness: Harness, seeded: Seeded
) -> None:
    vllm = seeded[1]["vllm"]
    name = old_block(harness, vllm, OLD_EGRESS_VARIANT)
    harness.put_policy(
        vllm.namespace,
        "egress-dns-only",
        {
            "podSelector": {"matchLabels": {"app": "vllm"}},
            "policyTypes": ["Egress"],
            "egress": [{"ports": [{"protocol": "UDP", "port": 53}], "to": [{"namespaceSelector": {}}]}],
        },
    )
    # egress-dns-only does not allow 198.51.100.9, but the pod's block policy (all but 203.0.113.7) does:
    # the address is not "already out of reach".
    assert egress_of(harness, vllm) == f"partial via egress-dns-only,{name}"

    block = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "198.51.100.9"), dry_run=False
    )

    assert block.kept_out is None, block.detail
    policy = stored_policy(harness, vllm, name)
    assert destination.blocked_by(policy["spec"]) == {
        ipaddress.ip_address("203.0.113.7"),
        ipaddress.ip_address("198.51.100.9"),
    }
    assert not_in(policy) == BUILT_NOW
    # It is blocked now, and the widening of egress-dns-only by the block policy is said.
    assert block.status is OutcomeStatus.LEAKY and "egress-dns-only now restrict" in block.detail


def test_a_pod_still_labelled_true_both_is_never_written_into_a_block_policy_that_selects_it(
    harness: Harness, seeded: Seeded
) -> None:
    vllm = seeded[1]["vllm"]
    name = old_block(harness, vllm, OLD_EGRESS_VARIANT)
    # Quarantined both ways by the earlier version: the chart keeps its deny-all.
    label(harness, vllm, "true-both")
    put_deny_all(harness, vllm.namespace, "serving-guard-quarantine-both", "true-both", ["Ingress", "Egress"])
    before = stored_policy(harness, vllm, name)
    assert egress_of(harness, vllm) == CLOSED

    block = harness.actions.block_destination(
        harness.pod(vllm), egress_alert(vllm, "198.51.100.9"), dry_run=False
    )

    # Kept out by the earlier version's deny-all; the block policy as built now would select the
    # pod (true-both is not among its values), so it is left as it is.
    assert block.status is OutcomeStatus.BLOCKED and block.kept_out is KeptOut.POLICIES, block.detail
    assert "was left so" in block.detail
    assert stored_policy(harness, vllm, name)["spec"] == before["spec"]
    assert egress_of(harness, vllm) == CLOSED


def test_leave_out_rewrites_the_old_block_policy_of_a_pod_just_quarantined_into_an_egress_cut(
    seeded: Seeded,
) -> None:
    # The quarantine calls it once it has labelled the pod: its leak check then finds no leak.
    running, pods, kubeconfig = seeded
    vllm, torchserve = pods["vllm"], pods["torchserve"]
    settings = Quarantine(isolate=Isolation.EGRESS)
    harness = Harness(running, kubeconfig, settings)
    blocks = DestinationBlocks(harness.gateway, BlockDestination(), settings, EventRecorder(harness.gateway))
    name = old_block(harness, vllm, OLD_EGRESS_VARIANT)
    old_block(harness, torchserve, OLD_EGRESS_VARIANT)
    assert egress_of(harness, vllm) == f"partial via {name}"
    outcome = harness.actions.quarantine(
        harness.pod(vllm), shell_alert(vllm), "inc-1", "Notice: shell", dry_run=False
    )
    assert outcome.status is OutcomeStatus.QUARANTINED, outcome.detail
    assert not_in(stored_policy(harness, vllm, name)) == BUILT_NOW
    assert egress_of(harness, vllm) == CLOSED
    pod = harness.pod(vllm)
    assert blocks.leave_out(pod, pod.labels) is None  # nothing left to do
    assert egress_of(harness, vllm) == CLOSED
    # A pod in no egress cut keeps its block policy as it is (it selects the pod on purpose).
    other = harness.pod(torchserve)
    torchserve_policy = destination.block_policy_name("serving-guard-block", other.uid)
    before = stored_policy(harness, torchserve, torchserve_policy)
    assert blocks.leave_out(other, other.labels) is None
    assert stored_policy(harness, torchserve, torchserve_policy) == before
    # A rewrite refused is said.
    label(harness, torchserve, "true-egress")
    harness.fail(Fault(status=403, method="PUT", plural="networkpolicies", times=10))
    refused = blocks.leave_out(other, harness.pod(torchserve).labels)
    assert refused is not None and refused.startswith(
        f"its block policy {torchserve_policy} still selects it"
    )
    assert egress_of(harness, torchserve) == f"partial via {torchserve_policy}"


# -- the chart's admission policy admits these rewrites -------------------------------------------


@pytest.fixture(scope="module")
def chart() -> Iterator[Any]:
    pytest.importorskip("helm_python")
    from tests.deploy.deploy_support import CHART_DIR, InstallableChart

    loaded = InstallableChart.load(CHART_DIR)
    try:
        yield loaded
    finally:
        loaded.close()


def test_the_rewrites_of_old_block_policies_are_admitted_by_the_chart(chart: Any, seeded: Seeded) -> None:
    from tests.deploy.admission import Request
    from tests.deploy.deploy_support import Case, render
    from tests.deploy.test_admission_policy import NP_GROUP, Recorder, policies_of

    running, pods, kubeconfig = seeded
    rendered = render(chart, Case("block-upgrade-rewrites", {"quarantine": {"isolate": "egress"}}))
    config = load_config_text(rendered.config_text())
    harness = Harness(running, kubeconfig, config.quarantine)
    vllm, triton = pods["vllm"], pods["triton"]
    old_block(harness, vllm, OLD_EGRESS_VARIANT)
    old_block(harness, triton, OLD_INGRESS_VARIANT)
    recorder = Recorder(running, harness.gateway)
    label(harness, triton, "true")
    put_deny_all(harness, triton.namespace, "serving-guard-quarantine", "true", ["Ingress", "Egress"])
    egress_cut_as_before(harness, vllm)
    for pod in (vllm, triton):
        block = harness.actions.block_destination(
            harness.pod(pod), egress_alert(pod, "198.51.100.9"), dry_run=False
        )
        assert block.status is OutcomeStatus.BLOCKED and "rewrote its block policy" in block.detail

    policies = policies_of(rendered)
    rewrites = [w for w in recorder.writes if w.resource == "networkpolicies" and w.verb == "PUT"]
    assert {w.new["metadata"]["name"] for w in rewrites} == {
        destination.block_policy_name("serving-guard-block", harness.pod(p).uid) for p in (vllm, triton)
    }
    for write in rewrites:
        assert write.namespace is not None
        request = Request(
            "UPDATE",
            policies.username,
            NP_GROUP,
            "networkpolicies",
            write.new,
            write.old,
            "",
            write.namespace,
        )
        verdict = policies.decide(request)
        assert verdict.applies and verdict.allowed, verdict.denials


# -- a quarantine of a blocked pod never lifts its block before the cut is in place ------------------


@pytest.mark.parametrize("old", [False, True], ids=["block-as-built", "old-block"])
def test_a_quarantine_whose_deny_all_cannot_be_made_leaves_a_blocked_pod_blocked(
    seeded: Seeded, old: bool
) -> None:
    """The egress cut's label takes the pod out of its block policy (its NotIn leaves out every pod
    an egress cut holds): labelled before a deny-all that then cannot be made, the pod would reach
    the address it was blocked from. The deny-all goes first; failing, the pod is not labelled."""
    running, pods, kubeconfig = seeded
    vllm = pods["vllm"]
    harness = Harness(running, kubeconfig, Quarantine(isolate=Isolation.EGRESS))
    if old:
        name = old_block(harness, vllm, OLD_EGRESS_VARIANT)
    else:
        block = harness.actions.block_destination(
            harness.pod(vllm), egress_alert(vllm, "203.0.113.7"), dry_run=False
        )
        assert block.status is OutcomeStatus.BLOCKED, block.detail
        name = destination.block_policy_name("serving-guard-block", harness.pod(vllm).uid)
    before = stored_policy(harness, vllm, name)
    assert egress_of(harness, vllm) == f"partial via {name}"
    harness.fail(Fault(status=503, method="POST", plural="networkpolicies", times=10))

    outcome = harness.actions.quarantine(
        harness.pod(vllm), shell_alert(vllm), "inc-1", "Notice: shell", dry_run=False
    )

    assert outcome.status is OutcomeStatus.FAILED and not outcome.labelled
    assert outcome.detail.startswith(
        "the pod was not labelled: NetworkPolicy serving-guard-quarantine-egress is not ensured:"
    )
    assert QUARANTINE not in harness.pod(vllm).labels
    assert stored_policy(harness, vllm, name) == before  # still selecting the pod, still blocking
    assert egress_of(harness, vllm) == f"partial via {name}"
    if not old:  # (an earlier version's policy is "not as built" to the recheck, by design)
        assert harness.lapse(harness.pod(vllm), cut=None, blocked={"203.0.113.7"}) is None


@pytest.mark.parametrize("by", ["block", "quarantine"])
def test_an_old_block_policy_leaving_the_pod_out_today_is_rewritten_before_a_move_by_hand_selects_it(
    harness: Harness, seeded: Seeded, by: str
) -> None:
    """An earlier version (isolate: egress) blocked and quarantined the pod: labelled `true`, its
    block policy NotIn [true, true-both] leaves it out, and `true` now cuts both ways. The upgrade
    notes' move to the egress cut by hand (`true-egress`) would bring it back under that policy,
    whose allow of all other egress opens the cut: met by a block or a quarantine first, the policy
    is rewritten as built now."""
    vllm = seeded[1]["vllm"]
    name = old_block(harness, vllm, OLD_EGRESS_VARIANT)
    label(harness, vllm, "true")
    put_deny_all(harness, vllm.namespace, "serving-guard-quarantine", "true", ["Ingress", "Egress"])
    assert egress_of(harness, vllm) == CLOSED
    if by == "block":
        outcome = harness.actions.block_destination(
            harness.pod(vllm), egress_alert(vllm, "198.51.100.9"), dry_run=False
        )
        assert outcome.status is OutcomeStatus.BLOCKED and outcome.kept_out is KeptOut.QUARANTINE
        assert f"rewrote its block policy {name}" in outcome.detail
    else:
        outcome = harness.actions.quarantine(
            harness.pod(vllm), shell_alert(vllm), "inc-1", "Notice: shell", dry_run=False
        )
        assert outcome.status is OutcomeStatus.QUARANTINED, outcome.detail
    assert not_in(stored_policy(harness, vllm, name)) == BUILT_NOW
    # The move by hand, its deny-all in place: the pod's egress stays cut.
    put_deny_all(harness, vllm.namespace, "serving-guard-quarantine-egress", "true-egress", ["Egress"])
    label(harness, vllm, "true-egress")
    assert egress_of(harness, vllm) == CLOSED
