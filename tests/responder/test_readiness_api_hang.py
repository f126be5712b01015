"""/readyz against an API server that accepts connections and never answers: the probes make at
most one API call at a time, on a thread of their own, so the pipeline's Kubernetes pool stays free
for pod reads; the call ends within its short budget; and readiness still says only whether the
journal writes (the API's state is in the body)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from responder import service
from responder.cluster.api import KubeGateway
from responder.service import Responder
from tests.helpers import responder_config
from tests.responder.test_kube_gateway_budget import SLACK_SECONDS, SilentServer, kubeconfig_for

PROBES = 4


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


async def test_probes_against_a_hung_api_make_one_call_at_a_time_off_the_pipelines_pool(
    silent: SilentServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every probe checks again (none answered from the 5 s cache), as the kubelet's would over time.
    monkeypatch.setattr(service, "READY_CACHE_SECONDS", 0.0)
    kubeconfig = kubeconfig_for(tmp_path, silent.port)
    config = responder_config(
        tmp_path,
        kubeconfig,
        extra={
            "inputs": {},
            "cluster": {"kubeconfig": kubeconfig, "workers": 2, "request_timeout_seconds": 10.0},
        },
    )
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    await responder.start()
    try:
        # Probes at once, then one more while the first call still hangs.
        assert await asyncio.gather(*(responder.check_ready() for _ in range(PROBES))) == [True] * PROBES
        assert await responder.check_ready()
        assert not responder.readiness.cluster_ok and "kubernetes" in responder.readiness.detail
        assert silent.most_open == 1

        # A pod read finds a thread of the pipeline's pool at once (else it queues behind hung calls).
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.run_in_executor(responder.executor, lambda: None), SLACK_SECONDS)

        # The readiness call gives up within its own budget, not the pipeline's retries.
        ends_by = time.monotonic() + service.READY_API_BUDGET_SECONDS + SLACK_SECONDS
        while silent.open and time.monotonic() < ends_by:
            await asyncio.sleep(0.05)
        assert silent.open == 0
    finally:
        await responder.stop()
