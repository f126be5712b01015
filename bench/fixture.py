"""The benchmark's world, in a process of its own: the Kubernetes emulator (with per-request
latency), the Slack sink, a Falco gRPC outputs server, and the latency prober.

``python -m bench.fixture WORKDIR`` seeds one namespace per scenario, prints one JSON line
(``{"control": URL, "kube": URL, "slack": BASE_URL, "grpc": ADDRESS, "pods": {...}}``) and then
serves a small control API on 127.0.0.1 until SIGTERM:

- ``POST /latency {"seconds": s}``: latency the emulator adds to every request;
- ``POST /grpc {"count": n, "namespace": ns, "rule": r}``: queue n alerts in the Falco server;
- ``POST /probe {...}``: send one alert per probe pod to the responder and time each one from
  just before the POST to the moment the emulator applies the quarantine label patch;
- ``GET /stats?namespace=ns``: label patches per pod, API requests, Slack posts/replies/updates.

The prober lives here, beside the emulator, so that both ends of a latency use one monotonic
clock and the storm sender's busy loop (another process) cannot delay a probe's timestamps.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import signal
import sys
import time
from collections import Counter, defaultdict
from typing import Any

import aiohttp
import attrs
import kmock
from aiohttp import web

from simulators.cluster_emulator import ClusterEmulator
from simulators.falco_grpc_server import FalcoGrpcServer
from simulators.falco_json import falco_alert, falco_bytes
from simulators.seed import ENFORCE_LABEL, SeededPod, make_pod, pod_manifest
from simulators.slack_sink import SlackSink

QUARANTINE_LABEL = "serving-guard.io/quarantine"
# Pods per scenario namespace (the scenarios use a prefix of each list).
NAMESPACES = {
    "bench-ingest": 50,
    "bench-grpc": 50,
    "bench-latency": 400,
    "bench-storm": 50,
}
NODES = 4


@attrs.define(kw_only=True)
class BenchEmulator(ClusterEmulator):
    """The project's emulator, plus a record of when each pod got its quarantine label."""

    label_patches: list[tuple[str, str, float]] = attrs.field(factory=list)
    api_requests: Counter[str] = attrs.field(factory=Counter)

    async def _handle(self, request: kmock.Request) -> web.StreamResponse:
        method = str(request.method.value if request.method else "GET")
        self.api_requests[method] += 1
        return await super()._handle(request)

    async def _serve_patch(self, request: kmock.Request) -> web.StreamResponse:
        response = await super()._serve_patch(request)
        data = request.data if isinstance(request.data, dict) else {}
        labels = (data.get("metadata") or {}).get("labels") or {}
        plural = request.resource.plural if request.resource is not None else None
        if response.status == 200 and plural == "pods" and QUARANTINE_LABEL in labels:
            self.label_patches.append((str(request.namespace), str(request.name), time.monotonic()))
        return response


def seed(emulator: BenchEmulator) -> dict[str, list[SeededPod]]:
    """One Deployment of model-server pods per scenario namespace, opted in to enforcement."""
    pods: dict[str, list[SeededPod]] = {}
    for namespace, count in NAMESPACES.items():
        emulator.add_namespace(namespace, {ENFORCE_LABEL: "true"})
        deployment = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "model-server", "namespace": namespace},
            "spec": {},
        }
        emulator.put_object("apps/v1/deployments", deployment)
        replica_set = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": "model-server-7d4f9",
                "namespace": namespace,
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": "model-server",
                        "controller": True,
                    }
                ],
            },
            "spec": {},
        }
        emulator.put_object("apps/v1/replicasets", replica_set)
        owner = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "name": "model-server-7d4f9",
            "controller": True,
        }
        pods[namespace] = []
        for index in range(count):
            pod = make_pod(
                namespace,
                f"model-server-7d4f9-{index:05d}",
                f"worker-{index % NODES}",
                "triton",
                "nvcr.io/nvidia/tritonserver:24.05-py3",
                {"app": "model-server", "serving-guard.io/serving": "true"},
            )
            emulator.put_object("v1/pods", pod_manifest(pod, owner))
            pods[namespace].append(pod)
    return pods


class Fixture:
    def __init__(self, workdir: str) -> None:
        self.emulator = BenchEmulator()
        self.sink = SlackSink(token=None)
        self.grpc = FalcoGrpcServer(f"unix://{workdir}/falco.sock", max_workers=4)
        self.pods: dict[str, list[SeededPod]] = {}
        self.probe_times: dict[tuple[str, str], float] = {}

    # -- control API ------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/latency", self.set_latency)
        app.router.add_post("/grpc", self.publish_grpc)
        app.router.add_post("/probe", self.probe)
        app.router.add_get("/stats", self.stats)
        return app

    async def set_latency(self, request: web.Request) -> web.Response:
        self.emulator.latency_seconds = float((await request.json())["seconds"])
        return web.json_response({"ok": True})

    async def publish_grpc(self, request: web.Request) -> web.Response:
        spec = await request.json()
        pods = self.pods[spec["namespace"]][: spec.get("pods", 50)]
        base = int(time.time()) * 1_000_000_000
        alerts = [
            falco_alert(
                pods[index % len(pods)],
                spec["rule"],
                "Critical",
                "Shell spawned in a serving container",
                {"proc.name": "sh", "proc.cmdline": "sh -c id", "user.name": "root"},
                time_ns=base + index,
            )
            for index in range(int(spec["count"]))
        ]
        await asyncio.get_running_loop().run_in_executor(None, self.grpc.publish_many, alerts)
        return web.json_response({"queued": self.grpc.pending()})

    async def probe(self, request: web.Request) -> web.Response:
        """Alerts on distinct pods, one every ``interval`` seconds; latency = POST start to label patch."""
        spec = await request.json()
        pods = self.pods[spec["namespace"]][spec["first"] : spec["first"] + spec["count"]]
        headers = {"Authorization": f"Bearer {spec['token']}", "Content-Type": "application/json"}
        sent: dict[tuple[str, str], float] = {}
        acks: list[float] = []
        statuses: Counter[int] = Counter()
        timeout = aiohttp.ClientTimeout(total=30)

        async def one(session: aiohttp.ClientSession, pod: SeededPod) -> None:
            body = falco_bytes(
                falco_alert(
                    pod,
                    spec["rule"],
                    "Critical",
                    "Shell spawned in a serving container",
                    {"proc.name": "sh", "proc.cmdline": "sh -i", "user.name": "root"},
                )
            )
            started = time.monotonic()
            sent[pod.namespace, pod.name] = started
            async with session.post(spec["url"], data=body, headers=headers) as response:
                await response.read()
                statuses[response.status] += 1
            acks.append(time.monotonic() - started)

        async with aiohttp.ClientSession(timeout=timeout) as session:
            tasks = []
            for pod in pods:
                tasks.append(asyncio.create_task(one(session, pod)))
                await asyncio.sleep(spec["interval"])
            await asyncio.gather(*tasks, return_exceptions=True)
        deadline = time.monotonic() + spec.get("wait_seconds", 30)
        while time.monotonic() < deadline:
            labelled = self._first_label_times(spec["namespace"])
            if all(key in labelled for key in sent):
                break
            await asyncio.sleep(0.1)
        labelled = self._first_label_times(spec["namespace"])
        latencies = [labelled[key] - started for key, started in sent.items() if key in labelled]
        return web.json_response(
            {
                "probes": len(sent),
                "quarantined": len(latencies),
                "statuses": {str(k): v for k, v in statuses.items()},
                "latencies_seconds": latencies,
                "ack_seconds": acks,
            }
        )

    def _first_label_times(self, namespace: str) -> dict[tuple[str, str], float]:
        first: dict[tuple[str, str], float] = {}
        for ns, name, at in self.emulator.label_patches:
            if ns == namespace and (ns, name) not in first:
                first[ns, name] = at
        return first

    async def stats(self, request: web.Request) -> web.Response:
        namespace = request.query.get("namespace")
        patches: defaultdict[str, int] = defaultdict(int)
        for ns, name, _ in self.emulator.label_patches:
            if namespace is None or ns == namespace:
                patches[name] += 1
        posts = self.sink.requests("chat.postMessage")
        updates = self.sink.requests("chat.update")
        sent = [r for r in posts if r.status == 200]
        # An incident's message is top level, or a reply in its workload's thread (slack.thread_by_workload).
        incident_posts = [r for r in sent if _kind(r.params) == "incident"]
        replies = [r for r in sent if r.params.get("thread_ts") and _kind(r.params) != "incident"]
        return web.json_response(
            {
                "label_patches": sum(patches.values()),
                "pods_labelled": len(patches),
                "api_requests": dict(self.emulator.api_requests),
                "slack": {
                    "incident_posts": len(incident_posts),
                    "incident_top_level": len([r for r in incident_posts if not r.params.get("thread_ts")]),
                    "thread_replies": len(replies),
                    "updates": len([r for r in updates if r.status == 200]),
                    "requests": len(self.sink.requests()),
                },
                "grpc": {"delivered": self.grpc.delivered, "pending": self.grpc.pending()},
            }
        )

    # -- running --------------------------------------------------------------------------------

    async def serve(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signum, stop.set)
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self.grpc.start()
        try:
            async with self.emulator, kmock.Server(self.emulator) as kube, self.sink:
                self.pods = seed(self.emulator)
                ready = {
                    "control": f"http://127.0.0.1:{runner.addresses[0][1]}",
                    "kube": str(kube.url).rstrip("/"),
                    "slack": self.sink.base_url,
                    "grpc": self.grpc.address,
                    "pods": {ns: [dataclasses.asdict(p) for p in pods] for ns, pods in self.pods.items()},
                }
                print(json.dumps(ready), flush=True)
                await stop.wait()
        finally:
            self.grpc.stop(0)
            await runner.cleanup()


def _kind(params: dict[str, Any]) -> str | None:
    """The kind of one of our messages (incident, repeat) from the metadata it was posted with."""
    metadata = params.get("metadata")
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata)
        except ValueError:
            return None
    payload = metadata.get("event_payload") if isinstance(metadata, dict) else None
    kind = payload.get("kind") if isinstance(payload, dict) else None
    return kind if isinstance(kind, str) else None


def main(argv: list[str]) -> int:
    asyncio.run(Fixture(argv[0]).serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
