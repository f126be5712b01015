"""The discovery of other network-policy APIs (a CNI's policies, which no proof reads) is cached
for a few minutes of the monotonic clock: a wall clock stepped back keeps no CNI installed since
unseen for the length of the step, and one stepped ahead does not shorten the cache. Against the
emulated API server."""

from __future__ import annotations

from responder.actions.block import DISCOVERY_TTL_NS, DestinationBlocks
from responder.actions.destination import OTHER_POLICY_GROUPS
from responder.actions.events import EventRecorder
from responder.cluster.api import KubeGateway
from responder.config import BlockDestination, Cluster, Quarantine, Retry
from simulators.cluster_emulator import RunningCluster
from simulators.seed import SeededPod
from tests.helpers import FakeClock
from tests.responder.test_quarantine_other_policy_apis import serve

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]


class Monotonic:
    """The monotonic clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 10**12

    def __call__(self) -> int:
        return self.now


def test_discovery_is_cached_on_the_monotonic_clock_not_the_wall_clock(seeded: Seeded) -> None:
    running, _, kubeconfig = seeded
    gateway = KubeGateway.from_config(Cluster(kubeconfig=kubeconfig, retry=Retry(attempts=1)))
    wall, monotonic = FakeClock(), Monotonic()
    blocks = DestinationBlocks(
        gateway,
        BlockDestination(),
        Quarantine(),
        EventRecorder(gateway),
        clock_ns=wall,
        monotonic_ns=monotonic,
    )
    first, second = OTHER_POLICY_GROUPS[:2]
    assert blocks.other_policy_apis() == []

    # A wall clock stepped ahead an hour: the cache is a second old, not an hour.
    wall.advance(3600)
    monotonic.now += 10**9
    serve(running, first)
    assert blocks.other_policy_apis() == []

    # A wall clock stepped back an hour, then the cache's time passes: the CNI is seen.
    wall.advance(-2 * 3600)
    monotonic.now += DISCOVERY_TTL_NS
    assert blocks.other_policy_apis() == [first]

    serve(running, second)
    monotonic.now += DISCOVERY_TTL_NS + 1
    assert sorted(blocks.other_policy_apis()) == sorted([first, second])
