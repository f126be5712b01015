"""A quarantine proven when made is proven again while its incident is open, though no repeat
comes (a reverse shell alerts once): Pipeline.run_idle_rechecks. Against the emulator over real HTTP."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import FakeClock
from tests.responder.test_isolation_recheck import ALLOW_ALL, Seeded, rechecked
from tests.responder.test_pipeline import rows, shell, start_with_clock, submit_all
from tests.responder.test_quarantine import Harness


async def test_a_one_off_alerts_quarantine_is_checked_again_though_no_repeat_comes(
    tmp_path: Path, seeded: Seeded
) -> None:
    """A reverse shell alerts once: its quarantine is proven again by the idle pass
    (Pipeline.run_idle_rechecks), not only by repeats."""
    running, pods, kubeconfig = seeded
    clock = FakeClock()
    harness = Harness(running, kubeconfig)
    responder = await start_with_clock(tmp_path, kubeconfig, clock)
    pipeline = responder.pipeline
    assert pipeline is not None
    try:
        vllm = pods["vllm"]
        await submit_all(responder, [shell(vllm, n=0)])
        assert pipeline.recheck_idle() == 0  # just made: not due yet
        clock.advance(16)
        assert pipeline.recheck_idle() == 1
        assert not await rechecked(responder)  # it holds
        harness.put_policy(vllm.namespace, "debug-allow-all", ALLOW_ALL)
        clock.advance(16)
        assert pipeline.recheck_idle() == 1
        assert await rechecked(responder)
        actions = rows(responder.config, "SELECT status, detail FROM actions ORDER BY id")
        assert [a["status"] for a in actions] == ["quarantined", "lapsed"]
        assert "debug-allow-all now allows" in actions[-1]["detail"]
        clock.advance(16)
        assert pipeline.recheck_idle() == 0  # said once: the rechecks of this incident are over
        assert any(task.get_name() == "idle-rechecks" and not task.done() for task in responder._tasks)
    finally:
        await responder.stop()
