"""An incident whose opening fails before it is decided, on an error no step expected (here: the
decision itself raising, as a bug on an unusual API object would), is decided afresh by a repeat
after the re-decide wait: not left undecided while every repeat of its window folds into it, with
no action and no one told. Against the emulator over real HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from responder import pipeline as pipeline_module
from responder.policy import decide
from simulators.cluster_emulator import RunningCluster
from simulators.seed import SeededPod
from tests.helpers import FakeClock
from tests.responder.test_pipeline import labels, rows, shell, start_with_clock, submit_all

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]
LABEL = "serving-guard.io/quarantine"


async def test_an_incident_that_failed_to_open_is_decided_by_the_next_repeat_after_the_wait(
    tmp_path: Path, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    running, pods, kubeconfig = seeded
    clock = FakeClock()
    responder = await start_with_clock(tmp_path, kubeconfig, clock)
    failures = iter([RuntimeError("a bug no step expected")])

    def failing_once(*args: Any, **kwargs: Any) -> Any:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return decide(*args, **kwargs)

    monkeypatch.setattr(pipeline_module, "decide", failing_once)
    try:
        vllm = pods["vllm"]
        await submit_all(responder, [shell(vllm, n=0)])
        assert responder.pipeline is not None and responder.pipeline.stats.failed == 1
        clock.advance(2)
        await submit_all(responder, [shell(vllm, n=1)])  # too soon: folded
        assert LABEL not in labels(running, vllm)
        clock.advance(10)
        await submit_all(responder, [shell(vllm, n=2)])  # decided afresh: quarantined
        assert labels(running, vllm)[LABEL] == "true"
        assert [r[0] for r in rows(responder.config, "SELECT status FROM actions")] == ["quarantined"]
    finally:
        await responder.stop()
