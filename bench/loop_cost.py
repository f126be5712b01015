"""The event loop's CPU per alert, without sockets (how round 5 of bench/README.md found the
garbage collector's share):

    python -m bench.loop_cost [--alerts N] [--connections K] [--collector default|tuned|off]

K connections of the responder's own HTTP server (``responder/ingest/httpserver.py``) are fed Falco
JSON requests straight into their ``data_received``, and each answer sends the next request on its
connection (one in flight each, as Falco sends). Behind them runs the real responder: pipeline,
journal (fsync'd, in a temporary directory), and the Kubernetes emulator on loopback. The alerts
are a storm of one rule over 50 pods.

It prints one JSON line:
- the event loop's CPU per alert (thread time);
- the part of it spent in the cyclic garbage collector (``gc.callbacks``);
- the wall-clock rate.

Kernel and socket costs are not in it: use it to compare two versions of the code, not to judge
the targets. ``--collector tuned`` applies what ``serve`` does after start-up; ``off`` disables
the collector.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop
import yaml

from bench.loadgen import Bodies, request, request_head
from responder.cluster.api import KubeGateway
from responder.commands.serve import tune_collector_after_start
from responder.config import load_config_text
from responder.ingest.http import ALERTS_PATH
from responder.ingest.httpserver import Connection
from responder.service import Responder
from simulators.cluster_emulator import RunningCluster
from simulators.seed import ENFORCE_LABEL, SeededPod, make_pod, pod_manifest

NAMESPACE = "bench-loop"
PODS = 50
RULE = "Bench shell in serving pod"


class RecordingTransport:
    """The transport a connection writes its answers to: each write is one answer, handed on."""

    def __init__(self, on_answer: Any) -> None:
        self._on_answer = on_answer
        self._closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def write(self, data: bytes) -> None:
        self._on_answer(data)

    def is_closing(self) -> bool:
        return self._closing

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        self._closing = True

    def abort(self) -> None:
        self._closing = True


def responder_config(workdir: Path, kubeconfig: Path) -> str:
    return yaml.safe_dump(
        {
            "inputs": {"http": {"listen": "127.0.0.1:0", "allow_unauthenticated": True}},
            "server": {"metrics_listen": None},
            "cluster": {"kubeconfig": str(kubeconfig)},
            "guardrails": {"max_quarantines": {"count": 10000, "window_seconds": 300}},
            "policies": [
                {"name": "bench-isolate", "match": {"rules": ["Bench shell *"]}, "actions": ["quarantine"]}
            ],
            "journal": {"path": str(workdir / "journal.db")},
            "logging": {"level": "warning"},
        }
    )


def requests(pods: list[SeededPod], count: int) -> list[bytes]:
    """The bytes the load generator would send (bench/loadgen.py), one request per alert."""
    bodies = Bodies(pods, [RULE], int(time.time()))
    head = request_head(ALERTS_PATH, "127.0.0.1", 8080)
    return [request(head, bodies.body(index)) for index in range(count)]


async def drive(responder: Responder, payloads: list[bytes], connections: int) -> dict[str, Any]:
    server = responder.input_server
    if server is None:
        raise RuntimeError("the responder's HTTP input did not start")
    loop = asyncio.get_running_loop()
    statuses: dict[str, int] = {}
    next_index = 0
    finished = loop.create_future()

    def open_connection() -> Connection:
        connection = Connection(server)

        def on_answer(data: bytes) -> None:
            nonlocal next_index
            status = data[9:12].decode()
            statuses[status] = statuses.get(status, 0) + 1
            if sum(statuses.values()) == len(payloads) and not finished.done():
                finished.set_result(None)
            if next_index < len(payloads):
                loop.call_soon(connection.data_received, payloads[next_index])
                next_index += 1

        connection.connection_made(RecordingTransport(on_answer))  # type: ignore[arg-type]
        return connection

    opened = [open_connection() for _ in range(min(connections, len(payloads)))]
    collector_seconds = 0.0
    started_at = 0.0

    def time_collector(phase: str, info: dict[str, Any]) -> None:
        nonlocal collector_seconds, started_at
        if phase == "start":
            started_at = time.thread_time()
        else:
            collector_seconds += time.thread_time() - started_at

    gc.callbacks.append(time_collector)
    cpu, wall = time.thread_time(), time.perf_counter()
    try:
        for connection in opened:
            connection.data_received(payloads[next_index])
            next_index += 1
        await finished
    finally:
        gc.callbacks.remove(time_collector)
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    for connection in opened:
        connection.connection_lost(None)
    return {
        "alerts": len(payloads),
        "connections": len(opened),
        "statuses": statuses,
        "event_loop_cpu_us_per_alert": round(cpu / len(payloads) * 1e6, 1),
        "collector_us_per_alert": round(collector_seconds / len(payloads) * 1e6, 1),
        "rate_per_second": round(len(payloads) / wall),
    }


async def measure(workdir: Path, kubeconfig: Path, payloads: list[bytes], options: argparse.Namespace) -> Any:
    config = load_config_text(responder_config(workdir, kubeconfig), "bench.loop_cost")
    responder = Responder(config, KubeGateway.from_config(config.cluster))
    await responder.start()
    try:
        if options.collector == "tuned":
            tune_collector_after_start()
        elif options.collector == "off":
            gc.disable()
        return await drive(responder, payloads, options.connections)
    finally:
        gc.enable()
        await responder.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.loop_cost",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--alerts", type=int, default=30_000, help="alerts to send (default 30,000)")
    parser.add_argument("--connections", type=int, default=256, help="connections (default 256)")
    parser.add_argument("--collector", choices=["default", "tuned", "off"], default="tuned")
    options = parser.parse_args(argv)
    if options.alerts < 1 or options.connections < 1:
        parser.error("--alerts and --connections must be at least 1")
    with tempfile.TemporaryDirectory(prefix="loop-cost-") as directory, RunningCluster() as cluster:
        workdir = Path(directory)
        cluster.call(cluster.emulator.add_namespace, NAMESPACE, {ENFORCE_LABEL: "true"})
        pods = []
        for index in range(PODS):
            pod = make_pod(
                NAMESPACE, f"model-server-{index:03d}", f"worker-{index % 4}", "triton", "triton:24", {}
            )
            cluster.call(cluster.emulator.put_object, "v1/pods", pod_manifest(pod, None))
            pods.append(pod)
        kubeconfig = workdir / "kubeconfig.json"
        kubeconfig.write_text(json.dumps(cluster.kubeconfig()))
        result = uvloop.run(measure(workdir, kubeconfig, requests(pods, options.alerts), options))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
