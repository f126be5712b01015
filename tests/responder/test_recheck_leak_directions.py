"""A quarantine reported LEAKY through a policy in one direction is rechecked by policy and
direction: the same policy opening the other direction since (exfiltration through a policy accepted
for its ingress) is a lapse. A journal record from before leaks were kept by policy counts its named
policies in the directions it says leak; one from before those were kept, in every direction.
Against the emulated API server over real HTTP."""

from __future__ import annotations

from responder.actions.outcome import ActionOutcome, OutcomeStatus, known_leaks
from responder.config import Isolation
from simulators.cluster_emulator import RunningCluster
from simulators.seed import LEAKY_POLICY, SeededPod
from tests.responder.test_quarantine import NP, Harness, shell_alert

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]


def _leaky_for_its_ingress(harness: Harness, triton: SeededPod) -> ActionOutcome:
    outcome = harness.actions.quarantine(harness.pod(triton), shell_alert(triton), "inc", "r", dry_run=False)
    assert outcome.status is OutcomeStatus.LEAKY and outcome.leaky_policies == (LEAKY_POLICY,)
    assert outcome.leaks == {LEAKY_POLICY: ("ingress",)}
    return outcome


def allow_egress_too(harness: Harness, triton: SeededPod) -> None:
    stored = harness.stored(NP, triton.namespace, LEAKY_POLICY)
    assert stored is not None
    stored["spec"]["policyTypes"] = ["Ingress", "Egress"]
    stored["spec"]["egress"] = [{}]
    harness.running.call(harness.running.emulator.put_object, NP, stored)


def test_a_known_leak_that_opens_another_direction_is_a_lapse(seeded: Seeded) -> None:
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    triton = pods["triton"]
    outcome = _leaky_for_its_ingress(harness, triton)
    # Journaled and read back: the directions come with it.
    known = known_leaks([ActionOutcome.from_json(outcome.to_json())])
    assert known == {LEAKY_POLICY: ("ingress",)}
    assert harness.lapse(harness.pod(triton), cut=Isolation.BOTH, known_leaks=known) is None
    allow_egress_too(harness, triton)
    assert (
        harness.lapse(harness.pod(triton), cut=Isolation.BOTH, known_leaks=known)
        == f"NetworkPolicy {LEAKY_POLICY} now allows its egress too"
    )


def test_a_record_from_before_leaks_by_policy_were_kept_is_bounded_by_its_leaking_directions(
    seeded: Seeded,
) -> None:
    """An earlier version journaled the directions that leak, not which policy leaks which: its
    named policies count in those directions, so the same policy opening the other one is a lapse."""
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    triton = pods["triton"]
    written = _leaky_for_its_ingress(harness, triton).to_json()
    written["extra"] = {"leaking_directions": ["ingress"]}  # as that version journaled it
    known = known_leaks([ActionOutcome.from_json(written)])
    assert known == {LEAKY_POLICY: ("ingress",)}
    assert harness.lapse(harness.pod(triton), cut=Isolation.BOTH, known_leaks=known) is None
    allow_egress_too(harness, triton)
    assert (
        harness.lapse(harness.pod(triton), cut=Isolation.BOTH, known_leaks=known)
        == f"NetworkPolicy {LEAKY_POLICY} now allows its egress too"
    )


def test_a_record_from_before_directions_were_kept_reads_as_before(seeded: Seeded) -> None:
    running, pods, kubeconfig = seeded
    harness = Harness(running, kubeconfig)
    triton = pods["triton"]
    written = _leaky_for_its_ingress(harness, triton).to_json()
    written["extra"] = {}  # as the earliest versions journaled it: policy names alone
    known = known_leaks([ActionOutcome.from_json(written)])
    assert known == {LEAKY_POLICY: ("ingress", "egress")}
    allow_egress_too(harness, triton)
    assert harness.lapse(harness.pod(triton), cut=Isolation.BOTH, known_leaks=known) is None
    # ...and so do names alone, as the recheck was called before.
    assert harness.lapse(harness.pod(triton), cut=Isolation.BOTH, known_leaks={LEAKY_POLICY}) is None
