"""The stage tracer of bench/stages.py: its probes record what they wrap, its summary measures the
waits between stages, and a smoke run of the HTTP scenario under it gives a summary per run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.stages import StageRecorder, main, summarize
from tests.bench.smoke import run_bench_smoke

MS = 1_000_000


def test_a_probe_records_its_stage_the_count_before_the_call_and_failures_too() -> None:
    recorder = StageRecorder(max_events=10)
    pending = [1, 2, 3]

    def take_all(items: list[int]) -> int:
        taken = len(items)
        items.clear()
        return taken

    probed = recorder.probe("hand_over", take_all, len)
    assert probed(pending) == 3
    stage, start, end, count = recorder.events[0]
    assert (stage, count) == ("hand_over", 3) and start <= end

    def fail() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        recorder.probe("commit", fail)()
    assert [event[0] for event in recorder.events] == ["hand_over", "commit"]


def test_the_recorder_keeps_only_the_newest_events() -> None:
    recorder = StageRecorder(max_events=3)
    probed = recorder.probe("read", lambda: None)
    for _ in range(5):
        probed()
    assert len(recorder.events) == 3


def test_summary_measures_each_wait_between_stages() -> None:
    events = [
        ("read", 0, int(0.5 * MS), 0),
        ("hand_over", int(0.9 * MS), 1 * MS, 3),
        ("commit", 2 * MS, 3 * MS, 3),
        ("fsync", int(3.5 * MS), int(4.5 * MS), 0),
        ("resolve", 5 * MS, int(5.2 * MS), 3),
        ("answer", int(5.2 * MS), int(5.4 * MS), 0),
    ]
    summary = summarize(events)
    assert summary["commits"] == 1 and summary["ops_per_commit"] == 3.0
    waits = summary["ms"]
    assert waits["hand_over_to_commit_start"]["p50"] == pytest.approx(1.0)
    assert waits["commit"]["p50"] == pytest.approx(1.0)
    assert waits["commit_end_to_fsync_start"]["p50"] == pytest.approx(0.5)
    assert waits["fsync"]["p50"] == pytest.approx(1.0)
    assert waits["fsync_end_to_resolve"]["p50"] == pytest.approx(0.5)
    assert waits["hand_over_to_resolve"]["p50"] == pytest.approx(4.0)
    # The loop ran traced callbacks for 0.5 + 0.1 + 0.2 + 0.2 ms of the 5.4 ms.
    assert summary["loop_traced_busy_fraction"] == pytest.approx(1.0 / 5.4, abs=0.001)


def test_summary_measures_the_hops_to_the_writer_process_and_back() -> None:
    events = [
        ("hand_over", 0, int(0.1 * MS), 3),
        ("frame_in", int(0.4 * MS), int(0.5 * MS), 3),  # in the writer process
        ("commit", int(1.5 * MS), int(2 * MS), 3),
        ("fsync", int(2.2 * MS), int(2.8 * MS), 0),
        ("frame_back", int(1 * MS), int(3.1 * MS), 0),  # a blocking read: only its end counts
        ("resolve", int(3.3 * MS), int(3.4 * MS), 3),
    ]
    summary = summarize(events)
    waits = summary["ms"]
    assert summary["writer_process_frames"] == 1
    assert waits["hand_over_to_frame_in"]["p50"] == pytest.approx(0.3)
    assert waits["frame_in_to_commit_start"]["p50"] == pytest.approx(1.0)
    assert waits["fsync_end_to_frame_back"]["p50"] == pytest.approx(0.3)
    assert waits["frame_back_to_resolve"]["p50"] == pytest.approx(0.2)
    assert waits["hand_over_to_resolve"]["p50"] == pytest.approx(3.2)


def test_summary_keeps_the_window_only_and_overlapping_loop_work_counts_once() -> None:
    events = [
        ["commit", 0, 1 * MS, 50],  # in the warm-up: left out
        ["read", 10 * MS, 12 * MS, 0],
        ["resolve", 11 * MS, 13 * MS, 4],  # overlaps the read (nested callbacks)
        ["commit", 13 * MS, 14 * MS, 4],
    ]
    summary = summarize(events, (10 * MS, 20 * MS))
    assert summary["commits"] == 1 and summary["ops_per_commit"] == 4.0
    assert summary["loop_traced_busy_fraction"] == pytest.approx(3 / 4)
    assert summarize(events, (30 * MS, 40 * MS)) == {"events": 0}


def test_the_summary_command_reads_an_events_file_and_names_what_is_wrong_in_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = tmp_path / "events.json"
    events.write_text(json.dumps([["commit", 0, 2 * MS, 5], ["commit", 10 * MS, 11 * MS, 3]]))
    assert main(["summary", str(events)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["commits"] == 2 and summary["ops_per_commit"] == 4.0
    assert main(["summary", str(events), "--skip-seconds", "0.005"]) == 0
    assert json.loads(capsys.readouterr().out)["commits"] == 1

    for content, reason in (
        ("{not json", "not JSON"),
        ('{"commit": 1}', "expected a list of events, got dict"),
        ('[["commit", 0, 1]]', "event 0: expected [stage, start_ns, end_ns, count]"),
        ('[["commit", 0, 1, 2], ["fsync", "0", 1, 2]]', "event 1: expected"),
    ):
        events.write_text(content)
        assert main(["summary", str(events)]) == 2
        error = capsys.readouterr().err
        assert f"bench.stages: {events}: {reason}" in error and "Traceback" not in error
    assert main(["summary", str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.timeout(120)
def test_a_traced_smoke_run_summarizes_each_http_run(tmp_path: Path) -> None:
    out = tmp_path / "stages.json"
    completed = run_bench_smoke(out, "--only", "http_ingest", "--stages", timeout=110)
    assert completed.returncode == 0, completed.stderr[-3000:]
    for run in json.loads(out.read_text())["http_ingest"]["runs"]:
        # The default writer commits in its own process, probed there too: every stage, and the hops.
        stages = run["stages"]
        assert stages["commits"] > 0 and stages["ops_per_commit"] >= 1
        assert stages["ms"]["fsync"]["count"] > 0  # the default durability fsyncs every group
        assert stages["ms"]["read"]["count"] > 0 and stages["ms"]["answer"]["count"] > 0
        assert stages["hand_overs"] > 0 and stages["ms"]["resolve"]["count"] > 0
        assert stages["writer_process_frames"] > 0
        for hop in ("hand_over_to_frame_in", "frame_in_to_commit_start", "fsync_end_to_frame_back"):
            assert stages["ms"][hop]["count"] > 0 and stages["ms"][hop]["p50"] >= 0, hop
        assert stages["ms"]["frame_back_to_resolve"]["count"] > 0
        assert stages["ms"]["hand_over_to_resolve"]["count"] > 0
        assert 0 < stages["loop_traced_busy_fraction"] <= 1
        # The thread writer's run: the same stages, without the hops between processes.
        threaded = run["thread_writer_stages"]
        assert threaded["commits"] > 0 and threaded["ops_per_commit"] >= 1
        assert threaded["ms"]["read"]["count"] > 0
        assert threaded["ms"]["fsync"]["count"] > 0
        assert (
            threaded["writer_process_frames"] == 0 and threaded["ms"]["frame_back_to_resolve"]["count"] == 0
        )
        assert 0 < threaded["loop_traced_busy_fraction"] <= 1
