"""`make bench`: throughput, alert-to-quarantine latency and memory under an alert storm.

    python -m bench.run [--smoke] [--only NAME,...] [--out FILE] [--keep] [--profile] [--stages]

Scenarios (each beside its baseline, in one run, so a noisy machine still gives a meaningful ratio):
  http_ingest  alerts/s accepted end to end over HTTP vs. a server that only parses the JSON (204)
  grpc_ingest  alerts/s consumed from a local Falco gRPC outputs server with a full queue
  latency      alert -> quarantine p50/p95/p99 on distinct pods, 10 ms API latency, under a storm
  storm        200,000 alerts of one rule across 50 pods: RSS, lost alerts, quarantines, Slack posts

The responder runs as ``python -m responder serve`` (its own process), the load generator and the
fixture (Kubernetes emulator, Slack sink, Falco gRPC server, prober) in processes of their own.
Results go to ``--out`` (JSON) and a short table on stdout. Everything stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procs import LoadGenerator, LoadSpec, Responder, RssSampler, baseline_server, fixture, http_json
from bench.stages import load_events, summarize
from bench.stats import distribution

STORM_RULE = "Bench shell in serving pod"
PROBE_RULE = "Bench shell probe"
WARMUP_RULE = "Bench warmup notice"
MB = 1024 * 1024

TARGETS = {
    "http_ratio_min": 0.60,
    "http_rate_min": 5000.0,
    "latency_p99_max_seconds": 0.150,
    "storm_peak_rss_max_bytes": 200 * MB,
    # "Back to baseline": within this much of the pre-storm RSS once the storm is over.
    "storm_rss_return_tolerance_bytes": 10 * MB,
}


@dataclass(frozen=True)
class Sizes:
    connections: int
    # HTTP ingest is measured at each of these sender counts (one Falco per node sends on one
    # connection, so a large cluster's storm arrives over many).
    ingest_connections: tuple[int, ...]
    ingest_seconds: float
    ingest_warmup: float
    grpc_alerts: int
    probes: int
    probe_interval: float
    storm_alerts: int
    # The background storm during the latency probes (alerts/s; None: as fast as possible).
    latency_storm_rate: float | None
    storm_pods: int
    settle_seconds: float


FULL = Sizes(
    connections=16,
    ingest_connections=(16, 64, 256),
    ingest_seconds=10.0,
    ingest_warmup=2.0,
    grpc_alerts=10_000,
    probes=200,
    probe_interval=0.05,
    storm_alerts=200_000,
    latency_storm_rate=1000.0,
    storm_pods=50,
    settle_seconds=5.0,
)
SMOKE = Sizes(
    connections=4,
    ingest_connections=(4,),
    ingest_seconds=1.5,
    ingest_warmup=0.3,
    grpc_alerts=300,
    probes=5,
    probe_interval=0.05,
    storm_alerts=1_000,
    latency_storm_rate=200.0,
    storm_pods=5,
    settle_seconds=0.5,
)


class Bench:
    def __init__(
        self,
        workdir: Path,
        world: dict[str, Any],
        sizes: Sizes,
        *,
        profile: bool = False,
        stages: bool = False,
    ) -> None:
        self.workdir = workdir
        self.world = world
        self.sizes = sizes
        self.profile = profile
        self.stages = stages

    def responder(self, name: str, **options: Any) -> Responder:
        settings: dict[str, Any] = {"profile": self.profile, "stages": self.stages, **options}
        return Responder(self.workdir, self.world, name, **settings)

    def control(self, path: str, payload: Any | None = None) -> Any:
        return http_json(self.world["control"] + path, payload)

    def pods(self, namespace: str, count: int | None = None, first: int = 0) -> list[dict[str, Any]]:
        pods: list[dict[str, Any]] = self.world["pods"][namespace]
        return pods[first : None if count is None else first + count]

    def load(self, name: str, port: int, **spec: Any) -> LoadGenerator:
        return LoadGenerator(self.workdir, name, LoadSpec(port=port, **spec))

    # -- 1. HTTP ingest -----------------------------------------------------------------------

    def http_ingest(self) -> dict[str, Any]:
        self.control("/latency", {"seconds": 0.0})
        runs = [self._http_ingest_with(connections) for connections in self.sizes.ingest_connections]
        return {"seconds": self.sizes.ingest_seconds, "runs": runs, "one_sender": self._http_one_sender()}

    def ingest_spec(self, connections: int, seconds: float, warmup: float) -> dict[str, Any]:
        """The HTTP ingest load: unique alerts of the storm rule over the ingest pods, from
        ``connections`` keep-alive senders for ``seconds`` (the first ``warmup`` not counted)."""
        return {
            "pods": self.pods("bench-ingest"),
            "rules": [STORM_RULE],
            "connections": connections,
            "seconds": seconds,
            "warmup_seconds": warmup,
        }

    def _http_ingest_with(self, connections: int) -> dict[str, Any]:
        sizes = self.sizes
        spec = self.ingest_spec(connections, sizes.ingest_seconds, sizes.ingest_warmup)
        baselines = []
        with baseline_server(self.workdir) as port:
            baselines.append(self.load(f"baseline-{connections}-1", port, token=None, **spec).result())
        name = f"ingest-{connections}"
        with self.responder(name) as responder:
            started = time.monotonic()
            measured_from = time.monotonic_ns() + int(sizes.ingest_warmup * 1e9)
            measured = self.load(name, responder.http_port, **spec).result()
            measured_to = time.monotonic_ns()
            settled = responder.wait_settled(timeout=120)
            accepted = responder.query("SELECT COUNT(*) FROM alerts")[0][0]
            opened = responder.query("SELECT COUNT(*) FROM alerts WHERE outcome = 'opened'")[0][0]
        # The documented trade (journal.synchronous: normal): acknowledged after the commit, not
        # after the fsync that follows it. Reported beside the default, not held to the targets.
        with self.responder(f"{name}-normal", synchronous="normal", stages=False) as relaxed:
            normal = self.load(f"{name}-normal", relaxed.http_port, **spec).result()
        # The journal's writer in the responder's own process (journal.writer: thread), the default
        # before round 7: what the writer process buys, measured in every run.
        with self.responder(f"{name}-thread", writer="thread") as threaded:
            thread_from = time.monotonic_ns() + int(sizes.ingest_warmup * 1e9)
            thread_writer = self.load(f"{name}-thread", threaded.http_port, **spec).result()
            thread_to = time.monotonic_ns()
        with baseline_server(self.workdir) as port:
            baselines.append(self.load(f"baseline-{connections}-2", port, token=None, **spec).result())
        with baseline_server(self.workdir, stack="input") as port:
            own_stack = self.load(f"baseline-input-{connections}", port, token=None, **spec).result()
        baseline_rate = statistics.mean(b["rate_per_second"] for b in baselines)
        own_stack_rate = own_stack["rate_per_second"]
        rate = measured["rate_per_second"]
        stages = {}
        if self.stages:  # the responders have stopped: their probes wrote their events
            stages = {
                # The writer process is probed too (bench.stages starts it), so the default's
                # summary has the hops between the processes besides the thread writer's stages.
                "stages": summarize(load_events(responder.stages_file), (measured_from, measured_to)),
                "thread_writer_stages": summarize(
                    load_events(threaded.stages_file), (thread_from, thread_to)
                ),
            }
        return {
            **stages,
            "connections": connections,
            "baseline_rate_per_second": round(baseline_rate, 1),
            "baseline_runs": [b["rate_per_second"] for b in baselines],
            "responder_rate_per_second": rate,
            "responder_round_trip_ms": measured["round_trip_ms"],
            "baseline_round_trip_ms": baselines[0]["round_trip_ms"],
            "ratio": round(rate / baseline_rate, 3) if baseline_rate else None,
            # The responder's own HTTP server answering 204 after parsing: what the HTTP layer alone
            # reaches, so ratio_to_own_stack is the cost of everything the responder does per alert.
            "own_stack_baseline_rate_per_second": own_stack_rate,
            "ratio_to_own_stack": round(rate / own_stack_rate, 3) if own_stack_rate else None,
            "normal_sync_rate_per_second": normal["rate_per_second"],
            "normal_sync_ratio": (
                round(normal["rate_per_second"] / baseline_rate, 3) if baseline_rate else None
            ),
            "thread_writer_rate_per_second": thread_writer["rate_per_second"],
            "thread_writer_ratio": (
                round(thread_writer["rate_per_second"] / baseline_rate, 3) if baseline_rate else None
            ),
            "thread_writer_round_trip_ms": thread_writer["round_trip_ms"],
            "responder_statuses": measured["statuses"],
            "accepted_alerts": accepted,
            "incidents_opened": opened,
            # From the first request to the last accepted alert's final outcome in the journal.
            "end_to_end_rate_per_second": (
                round(accepted / (settled - started), 1) if settled is not None else None
            ),
        }

    def _http_one_sender(self) -> dict[str, Any]:
        """One sender, one request in flight: how Falco's http_output sends (one POST per alert, from
        its one outputs thread, the next after the answer). So one node's Falco delivers at most one
        alert per round trip, whatever the responder's capacity. Reported, not held to a target."""
        sizes = self.sizes
        spec = self.ingest_spec(1, sizes.ingest_seconds, sizes.ingest_warmup)
        with baseline_server(self.workdir) as port:
            baseline = self.load("baseline-1", port, token=None, **spec).result()
        with self.responder("ingest-1", stages=False) as responder:
            measured = self.load("ingest-1", responder.http_port, **spec).result()
        with self.responder("ingest-1-normal", synchronous="normal", stages=False) as relaxed:
            normal = self.load("ingest-1-normal", relaxed.http_port, **spec).result()
        # At one sender the writer process's two hops between processes are in every round trip,
        # with nothing to share them: the thread writer shows what they cost there.
        with self.responder("ingest-1-thread", writer="thread", stages=False) as threaded:
            thread_writer = self.load("ingest-1-thread", threaded.http_port, **spec).result()
        return {
            "baseline_rate_per_second": baseline["rate_per_second"],
            "baseline_round_trip_ms": baseline["round_trip_ms"],
            "responder_rate_per_second": measured["rate_per_second"],
            "responder_round_trip_ms": measured["round_trip_ms"],
            "normal_sync_rate_per_second": normal["rate_per_second"],
            "normal_sync_round_trip_ms": normal["round_trip_ms"],
            "thread_writer_rate_per_second": thread_writer["rate_per_second"],
            "thread_writer_round_trip_ms": thread_writer["round_trip_ms"],
        }

    # -- 2. gRPC ingest -----------------------------------------------------------------------

    def grpc_ingest(self) -> dict[str, Any]:
        count = self.sizes.grpc_alerts
        self.control("/latency", {"seconds": 0.0})
        self.control("/grpc", {"count": count, "namespace": "bench-grpc", "rule": STORM_RULE})
        samples: list[tuple[float, float]] = []
        with self.responder("grpc", grpc=True) as responder:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                received = responder.metric("serving_guard_alerts_received_total", input="grpc")
                samples.append((time.monotonic(), received))
                if received >= count:
                    break
                time.sleep(0.05)
            settled = responder.wait_settled(timeout=120)
            journaled = responder.query("SELECT COUNT(*) FROM alerts WHERE input = 'grpc'")[0][0]
        moving = [(t, n) for t, n in samples if n > 0]
        rate = None
        if len(moving) >= 2 and moving[-1][1] > moving[0][1]:
            rate = (moving[-1][1] - moving[0][1]) / (moving[-1][0] - moving[0][0])
        return {
            "alerts": count,
            "journaled": journaled,
            "rate_per_second": round(rate, 1) if rate is not None else None,
            "settled": settled is not None,
        }

    # -- 3. latency under a storm ---------------------------------------------------------------

    def latency(self) -> dict[str, Any]:
        sizes = self.sizes
        self.control("/latency", {"seconds": 0.010})
        storm_pods = self.pods("bench-latency", 10, first=390)
        probe_seconds = sizes.probes * sizes.probe_interval
        with self.responder("latency") as responder:
            storm = self.load(
                "latency-storm",
                responder.http_port,
                pods=storm_pods,
                rules=[STORM_RULE],
                connections=sizes.connections,
                seconds=probe_seconds + 3.0,
                warmup_seconds=1.5,
                rate=sizes.latency_storm_rate,
            )
            try:
                time.sleep(1.5)  # let the storm reach full speed and its incidents open
                probes = self.control(
                    "/probe",
                    {
                        "namespace": "bench-latency",
                        "first": 0,
                        "count": sizes.probes,
                        "interval": sizes.probe_interval,
                        "rule": PROBE_RULE,
                        "url": responder.url + "/v1/alerts",
                        "token": responder_token(),
                        "wait_seconds": 30,
                    },
                )
            finally:
                storm_result = storm.result()
            responder.wait_settled(timeout=120)
            internal = [
                (finished - received) / 1e9
                for received, finished in responder.query(
                    "SELECT a.received_ns, x.finished_ns FROM actions x"
                    " JOIN alerts a ON a.alert_id = x.alert_id"
                    " WHERE x.action = 'quarantine' AND x.status IN ('quarantined', 'leaky') AND a.rule = ?",
                    (PROBE_RULE,),
                )
            ]
        return {
            "api_latency_seconds": 0.010,
            "probes": probes["probes"],
            "quarantined": probes["quarantined"],
            "probe_statuses": probes["statuses"],
            # POST start (prober) -> the emulator applies the quarantine label (same process, same clock).
            "alert_to_quarantine_seconds": distribution(probes["latencies_seconds"]),
            # The responder's own view: journal receipt -> quarantine action finished (after leak check).
            "internal_seconds": distribution(internal),
            "ack_seconds": distribution(probes["ack_seconds"]),
            "storm_target_rate_per_second": sizes.latency_storm_rate,
            "storm_rate_per_second": storm_result["rate_per_second"],
            "storm_statuses": storm_result["statuses"],
        }

    # -- 4. the storm ---------------------------------------------------------------------------

    def storm(self) -> dict[str, Any]:
        sizes = self.sizes
        self.control("/latency", {"seconds": 0.010})
        pods = self.pods("bench-storm", sizes.storm_pods)
        ids_file = self.workdir / "storm-accepted.txt"
        with self.responder("storm") as responder:
            # Warm up (imports, caches, one notify-only incident), then take the baseline.
            self.load(
                "storm-warmup",
                responder.http_port,
                pods=self.pods("bench-ingest", 1),
                rules=[WARMUP_RULE],
                connections=sizes.connections,
                total=2000 if sizes.storm_alerts >= 10_000 else 100,
            ).result()
            responder.wait_settled(timeout=60)
            time.sleep(sizes.settle_seconds)
            rss_before = responder.rss()["VmRSS"]
            before = self.control("/stats?namespace=bench-storm")
            with RssSampler(responder) as sampler:
                started = time.monotonic()
                sent = self.load(
                    "storm",
                    responder.http_port,
                    pods=pods,
                    rules=[STORM_RULE],
                    connections=sizes.connections,
                    total=sizes.storm_alerts,
                    ids_file=str(ids_file),
                ).result(timeout=900)
                sent_at = time.monotonic()
                settled = responder.wait_settled(timeout=300)
                time.sleep(sizes.settle_seconds)
            rss_after = responder.rss()["VmRSS"]
            peak = max(sampler.peak, rss_after)
            after = self.control("/stats?namespace=bench-storm")
            accepted_ids = set(ids_file.read_text().split())
            rows = responder.query("SELECT alert_id, state FROM alerts WHERE rule = ?", (STORM_RULE,))
            quarantines = responder.query(
                "SELECT COUNT(*), COUNT(DISTINCT pod) FROM actions WHERE action = 'quarantine'"
                " AND status IN ('quarantined', 'leaky')"
            )[0]
            outcomes = dict(
                responder.query(
                    "SELECT outcome, COUNT(*) FROM alerts WHERE rule = ? GROUP BY outcome", (STORM_RULE,)
                )
            )
        done = {alert_id for alert_id, state in rows if state == "done"}
        journaled = {alert_id for alert_id, _ in rows}
        slack = {key: after["slack"][key] - before["slack"][key] for key in after["slack"]}
        return {
            "alerts": sizes.storm_alerts,
            "pods": sizes.storm_pods,
            "accepted": len(accepted_ids),
            "sender_statuses": sent["statuses"],
            "sender_retries_after_503": sent["retries_after_503"],
            "send_rate_per_second": round(len(accepted_ids) / (sent_at - started), 1),
            "drain_seconds_after_last_send": round(settled - sent_at, 2) if settled is not None else None,
            "accepted_then_lost": len(accepted_ids - journaled),
            "accepted_not_final": len(accepted_ids - done),
            "outcomes": outcomes,
            "quarantine_actions": quarantines[0],
            "pods_quarantined": quarantines[1],
            "label_patches": after["label_patches"] - before["label_patches"],
            "slack_incident_posts": slack["incident_posts"],
            # Of them, posted in the channel; the others are replies in their workload's thread.
            "slack_incident_top_level": slack["incident_top_level"],
            "slack_thread_replies": slack["thread_replies"],
            "slack_updates": slack["updates"],
            "rss_before_bytes": rss_before,
            "rss_peak_bytes": peak,
            "rss_after_bytes": rss_after,
            "rss_samples": len(sampler.samples),
        }


def responder_token() -> str:
    from bench.procs import TOKEN

    return TOKEN


def evaluate(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    targets: dict[str, dict[str, Any]] = {}

    def check(name: str, value: Any, limit: Any, ok: Callable[[Any, Any], bool]) -> None:
        targets[name] = {"value": value, "target": limit, "met": value is not None and ok(value, limit)}

    for run in results.get("http_ingest", {}).get("runs", []):
        senders = run["connections"]
        check(f"http_ratio_{senders}_senders", run["ratio"], TARGETS["http_ratio_min"], lambda v, t: v >= t)
        check(
            f"http_rate_{senders}_senders",
            run["responder_rate_per_second"],
            TARGETS["http_rate_min"],
            lambda v, t: v >= t,
        )
    if "latency" in results:
        p99 = results["latency"]["alert_to_quarantine_seconds"]["p99"]
        check("latency_p99_seconds", p99, TARGETS["latency_p99_max_seconds"], lambda v, t: v <= t)
    if "storm" in results:
        storm = results["storm"]
        check(
            "storm_peak_rss_bytes",
            storm["rss_peak_bytes"],
            TARGETS["storm_peak_rss_max_bytes"],
            lambda v, t: v <= t,
        )
        check(
            "storm_rss_returns",
            storm["rss_after_bytes"] - storm["rss_before_bytes"],
            TARGETS["storm_rss_return_tolerance_bytes"],
            lambda v, t: v <= t,
        )
        check("storm_lost", storm["accepted_then_lost"] + storm["accepted_not_final"], 0, lambda v, t: v == t)
        check("storm_quarantines", storm["quarantine_actions"], storm["pods"], lambda v, t: v == t)
        check("storm_incident_posts", storm["slack_incident_posts"], storm["pods"], lambda v, t: v == t)
    return targets


def table(results: dict[str, Any]) -> str:
    lines = [f"{'measure':<44} {'value':>14}  target"]

    def row(label: str, value: Any, target: str = "") -> None:
        lines.append(f"{label:<44} {value!s:>14}  {target}")

    for run in results.get("http_ingest", {}).get("runs", []):
        senders = run["connections"]
        row(f"HTTP, {senders} senders: aiohttp baseline, alerts/s", run["baseline_rate_per_second"])
        row("  responder, alerts/s", run["responder_rate_per_second"], ">= 5000")
        row("  ratio responder / aiohttp baseline", run["ratio"], ">= 0.60")
        row(
            "  own-stack baseline; ratio to it",
            f"{run['own_stack_baseline_rate_per_second']}; {run['ratio_to_own_stack']}",
        )
        row("  end to end (journal final), alerts/s", run["end_to_end_rate_per_second"])
        trip, base_trip = run["responder_round_trip_ms"], run["baseline_round_trip_ms"]
        row(
            "  round trip p50 / p99 (ms); baseline's",
            f"{trip['p50']:.1f} / {trip['p99']:.1f}; {base_trip['p50']:.1f} / {base_trip['p99']:.1f}",
        )
        row(
            "  journal.synchronous normal: alerts/s; ratio",
            f"{run['normal_sync_rate_per_second']}; {run['normal_sync_ratio']}",
        )
        row(
            "  journal.writer thread: alerts/s; ratio",
            f"{run['thread_writer_rate_per_second']}; {run['thread_writer_ratio']}",
        )
    one = results.get("http_ingest", {}).get("one_sender")
    if one:
        trip, base_trip = one["responder_round_trip_ms"], one["baseline_round_trip_ms"]
        row("HTTP, 1 sender (one Falco's http_output)", "")
        row(
            "  responder, alerts/s; aiohttp baseline",
            f"{one['responder_rate_per_second']}; {one['baseline_rate_per_second']}",
        )
        row(
            "  round trip p50 / p99 (ms); baseline's",
            f"{trip['p50']:.2f} / {trip['p99']:.2f}; {base_trip['p50']:.2f} / {base_trip['p99']:.2f}",
        )
        normal_trip = one["normal_sync_round_trip_ms"]
        row(
            "  journal.synchronous normal: alerts/s; p50",
            f"{one['normal_sync_rate_per_second']}; {normal_trip['p50']:.2f} ms",
        )
        thread_trip = one["thread_writer_round_trip_ms"]
        row(
            "  journal.writer thread: alerts/s; p50",
            f"{one['thread_writer_rate_per_second']}; {thread_trip['p50']:.2f} ms",
        )
    grpc = results.get("grpc_ingest")
    if grpc:
        row("gRPC ingest, alerts/s", grpc["rate_per_second"])
    latency = results.get("latency")
    if latency:
        dist = latency["alert_to_quarantine_seconds"]
        row("alert->quarantine p50 / p95 (ms)", f"{dist['p50'] * 1000:.0f} / {dist['p95'] * 1000:.0f}")
        row("alert->quarantine p99 (ms)", f"{dist['p99'] * 1000:.0f}", "<= 150")
        row("  storm meanwhile, alerts/s", latency["storm_rate_per_second"])
    storm = results.get("storm")
    if storm:
        row("storm peak RSS (MB)", f"{storm['rss_peak_bytes'] / MB:.1f}", "<= 200")
        row(
            "storm RSS before / after (MB)",
            f"{storm['rss_before_bytes'] / MB:.1f} / {storm['rss_after_bytes'] / MB:.1f}",
        )
        row("storm accepted-then-lost", storm["accepted_then_lost"] + storm["accepted_not_final"], "0")
        row("storm quarantines", storm["quarantine_actions"], f"{storm['pods']}")
        row(
            "storm Slack incidents (in channel) / replies / updates",
            f"{storm['slack_incident_posts']} ({storm.get('slack_incident_top_level', '-')})"
            f" / {storm['slack_thread_replies']} / {storm['slack_updates']}",
            f"{storm['pods']} incidents",
        )
    for name, target in results.get("targets", {}).items():
        if not target["met"]:
            lines.append(f"NOT MET: {name} = {target['value']} (target {target['target']})")
    return "\n".join(lines)


SCENARIOS = ("http_ingest", "grpc_ingest", "latency", "storm")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that everything runs")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios to run")
    parser.add_argument("--out", default="bench/results.json", help="where to write the JSON results")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, journals)")
    parser.add_argument(
        "--profile", action="store_true", help="record each responder with py-spy (implies --keep)"
    )
    parser.add_argument(
        "--stages",
        action="store_true",
        help="time each HTTP ingest run's stages (bench/stages.py); its results get a summary",
    )
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    sizes = SMOKE if args.smoke else FULL
    workdir = Path(tempfile.mkdtemp(prefix="serving-guard-bench-"))
    results: dict[str, Any] = {
        "smoke": args.smoke,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sizes": sizes.__dict__,
    }
    began = time.monotonic()
    keep = args.keep or args.profile
    try:
        with fixture(workdir) as world:
            bench = Bench(workdir, world, sizes, profile=args.profile, stages=args.stages)
            for name in chosen:
                print(f"bench: {name} ...", file=sys.stderr, flush=True)
                results[name] = getattr(bench, name)()
    finally:
        if keep:
            print(f"bench: work directory kept at {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    results["duration_seconds"] = round(time.monotonic() - began, 1)
    results["targets"] = evaluate(results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
