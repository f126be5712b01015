"""The benchmark runs end to end at smoke size and writes results of the committed shape.

No timing is asserted here (speed targets belong to the benchmark's own report): these tests check
that every scenario ran for real (alerts journaled, pods quarantined, Slack posted) and that the
committed ``bench/results.json`` is a full run with every figure the issue asks for.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bench.loadgen import SENTINEL, Bodies
from bench.procs import process_tree
from bench.run import FULL, SCENARIOS, evaluate
from bench.stats import distribution, percentile
from responder.alert_json import parse_falco_json
from simulators.seed import make_pod
from tests.bench.smoke import run_bench_smoke

ROOT = Path(__file__).resolve().parents[2]


def check_round_trip(trip: dict[str, float]) -> None:
    assert trip["count"] > 0 and 0 < trip["p50"] <= trip["p99"] <= trip["max"]


def check_shape(results: dict[str, Any], *, smoke: bool) -> None:
    assert results["smoke"] is smoke
    assert results["machine"]["cpus"] >= 1
    runs = results["http_ingest"]["runs"]
    assert runs
    for http in runs:
        baseline = http["baseline_rate_per_second"]
        assert baseline > 0
        assert http["own_stack_baseline_rate_per_second"] > 0
        # The default responder and the two measured beside it, each as a rate and its ratio.
        for rate, ratio in (
            ("responder_rate_per_second", "ratio"),
            ("normal_sync_rate_per_second", "normal_sync_ratio"),
            ("thread_writer_rate_per_second", "thread_writer_ratio"),
        ):
            assert http[rate] > 0
            assert http[ratio] == pytest.approx(http[rate] / baseline, abs=0.01)
        assert http["ratio_to_own_stack"] == pytest.approx(
            http["responder_rate_per_second"] / http["own_stack_baseline_rate_per_second"], abs=0.01
        )
        assert http["accepted_alerts"] > 0
        for trip in (
            http["responder_round_trip_ms"],
            http["baseline_round_trip_ms"],
            http["thread_writer_round_trip_ms"],
        ):
            check_round_trip(trip)
        assert http["end_to_end_rate_per_second"] is not None
        assert {
            f"http_ratio_{http['connections']}_senders",
            f"http_rate_{http['connections']}_senders",
        } <= set(results["targets"])
    one = results["http_ingest"]["one_sender"]
    for rate, trip in (
        ("baseline_rate_per_second", "baseline_round_trip_ms"),
        ("responder_rate_per_second", "responder_round_trip_ms"),
        ("normal_sync_rate_per_second", "normal_sync_round_trip_ms"),
        ("thread_writer_rate_per_second", "thread_writer_round_trip_ms"),
    ):
        assert one[rate] > 0
        check_round_trip(one[trip])
    grpc = results["grpc_ingest"]
    assert grpc["journaled"] == grpc["alerts"]
    assert grpc["rate_per_second"] > 0
    latency = results["latency"]
    assert latency["quarantined"] == latency["probes"] > 0
    for key in ("p50", "p95", "p99"):
        assert latency["alert_to_quarantine_seconds"][key] > 0
    storm = results["storm"]
    assert storm["accepted"] == storm["alerts"]
    assert storm["accepted_then_lost"] == 0
    assert storm["accepted_not_final"] == 0
    assert storm["quarantine_actions"] == storm["pods"] == storm["pods_quarantined"]
    assert storm["slack_incident_posts"] == storm["pods"]
    # Its pods are one Deployment's replicas: one message in the channel, the others in its thread.
    assert storm["slack_incident_top_level"] == 1
    assert storm["rss_peak_bytes"] >= storm["rss_before_bytes"] > 0
    assert set(results["targets"]) >= {
        "latency_p99_seconds",
        "storm_peak_rss_bytes",
        "storm_rss_returns",
        "storm_lost",
        "storm_quarantines",
        "storm_incident_posts",
    }
    for target in results["targets"].values():
        assert set(target) == {"value", "target", "met"}


@pytest.mark.timeout(180)
def test_smoke_run_measures_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "smoke.json"
    completed = run_bench_smoke(out, timeout=170)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "alert->quarantine p99" in completed.stdout
    check_shape(json.loads(out.read_text()), smoke=True)


def test_committed_results_are_a_full_run() -> None:
    results = json.loads((ROOT / "bench" / "results.json").read_text())
    check_shape(results, smoke=False)
    assert results["storm"]["alerts"] == 200_000
    assert results["storm"]["pods"] == 50
    assert results["latency"]["api_latency_seconds"] == 0.010
    assert [run["connections"] for run in results["http_ingest"]["runs"]] == list(FULL.ingest_connections)
    assert all(name in results for name in SCENARIOS)


def test_bodies_are_falco_alerts_with_unique_ids() -> None:
    pods = [make_pod("ns", f"pod-{n}", "node-1", "c", "img:1", {"app": "x"}) for n in range(3)]
    bodies = Bodies(pods, ["Rule A", "Rule B"], base_seconds=1_700_000_000)
    alerts = [parse_falco_json(bodies.body(i)) for i in range(12)]
    assert len({a.alert_id for a in alerts}) == 12
    assert [a.pod for a in alerts[:3]] == ["pod-0", "pod-1", "pod-2"]
    assert {a.rule for a in alerts} == {"Rule A", "Rule B"}
    assert SENTINEL not in bodies.body(5)


def test_percentiles_and_target_evaluation() -> None:
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert distribution([])["count"] == 0
    targets = evaluate(
        {
            "http_ingest": {
                "runs": [
                    {"connections": 16, "ratio": 0.7, "responder_rate_per_second": 4000.0},
                    {"connections": 64, "ratio": 0.5, "responder_rate_per_second": 5200.0},
                ]
            },
            "latency": {"alert_to_quarantine_seconds": {"p99": 0.1}},
        }
    )
    assert targets["http_ratio_16_senders"]["met"] is True
    assert targets["http_rate_16_senders"]["met"] is False
    assert targets["http_ratio_64_senders"]["met"] is False
    assert targets["http_rate_64_senders"]["met"] is True
    assert targets["latency_p99_seconds"]["met"] is True


def test_the_process_tree_has_children_of_every_thread_and_their_children() -> None:
    """The responder's RSS counts its journal writer: found from any thread that started it."""
    started: list[subprocess.Popen[bytes]] = []
    thread = threading.Thread(target=lambda: started.append(subprocess.Popen(["sleep", "30"])))
    thread.start()
    thread.join()
    parent = subprocess.Popen(["sh", "-c", "sleep 30 & wait"])
    try:
        deadline = time.monotonic() + 10
        while len(process_tree(parent.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # the shell has not started its child yet
        shell_tree = process_tree(parent.pid)
        assert len(shell_tree) == 2 and shell_tree[0] == parent.pid
        tree = process_tree(os.getpid())
        assert tree[0] == os.getpid()
        assert {started[0].pid, *shell_tree} <= set(tree)
    finally:
        for process in (*started, parent):
            process.kill()
            process.wait()
