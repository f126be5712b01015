from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from simulators.cluster_emulator import RunningCluster
from simulators.seed import SeededPod, seed_serving_cluster


@pytest.fixture
def seeded(tmp_path: Path) -> Iterator[tuple[RunningCluster, dict[str, SeededPod], str]]:
    with RunningCluster() as running:
        pods = running.call(seed_serving_cluster, running.emulator)
        kubeconfig = running.write_kubeconfig(str(tmp_path / "kubeconfig.json"))
        yield running, pods, kubeconfig
