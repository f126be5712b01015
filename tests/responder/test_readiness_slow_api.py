"""/readyz's API check against an API server that answers /version in 3 s (slow, not hung): a
probe waits 2 s, and a call that answers after its probe gave up is what the next probe says, rather
than a new call given up on again. An API that answers every call is reachable, if slow."""

from __future__ import annotations

import asyncio
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from responder import service
from responder.cluster.api import KubeGateway
from responder.service import Responder
from tests.helpers import responder_config
from tests.responder.test_kube_gateway_budget import kubeconfig_for


class SlowVersion(BaseHTTPRequestHandler):
    answered: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        time.sleep(3.0)
        body = b'{"major":"1","minor":"31","gitVersion":"v1.31.0"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.answered.append(self.path)

    def log_message(self, *args: object) -> None:
        pass


async def test_an_api_answering_after_the_probes_wait_is_reachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowVersion)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(service, "READY_CACHE_SECONDS", 0.0)
    kubeconfig = kubeconfig_for(tmp_path, server.server_address[1])
    config = responder_config(
        tmp_path, kubeconfig, extra={"inputs": {}, "cluster": {"kubeconfig": kubeconfig}}
    )
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    await responder.start()
    try:
        seen = []
        for _ in range(4):  # a probe every 5 s, as the kubelet's, compressed
            await responder.check_ready()
            seen.append(responder.readiness.cluster_ok)
            await asyncio.sleep(1.5)
        assert len(SlowVersion.answered) >= 2
        assert seen[0] is False and True in seen, (
            seen
        )  # the first probe gives up; a later one says it answered
    finally:
        await responder.stop()
        server.shutdown()
