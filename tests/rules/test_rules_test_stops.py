"""How `rules test` and the demo's first stage stop: the demo says why it stops (a recorded scenario
that no longer alerts, or only examples and evasion cases), and a SIGTERM (a CI timeout, timeout(1))
removes the derived captures' temporary directory, as Ctrl-C does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from responder.rulespack.paths import PROJECT_ROOT, default_pack
from responder.rulespack.sysdig import Sysdig
from simulators.demo_captures import capture_stage

pytestmark = pytest.mark.timeout(180)

# Silences one evasion case (a model beside the unpack dirs, in /tmp) and no recorded scenario.
UNPACK_DIRS_TMP = """\
- list: serving_guard_torchserve_unpack_dirs
  items: [/tmp]
  override:
    items: append
"""


def test_the_demo_says_its_scenarios_still_alert_when_only_evasion_cases_fail(
    sysdig: Sysdig, tmp_path: Path
) -> None:
    tuning = tmp_path / "unpack-tmp.yaml"
    tuning.write_text(UNPACK_DIRS_TMP, encoding="utf-8")
    stage = capture_stage([str(default_pack()), str(tuning)])
    assert not stage.passed
    assert stage.lines[0].startswith("rule conditions: FAILED (1) on the captures")
    assert stage.lines[-1] == (
        "the rules fail 1 rule examples and evasion cases that `serving-guard rules test` lists"
        " (the recorded scenarios still alert); the demo stops here"
    )
    assert not any("Falco would not send them" in line for line in stage.lines)


def test_sigterm_removes_the_derived_captures(sysdig: Sysdig, tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    command = [sys.executable, "-m", "responder.cli", "rules", "test"]
    process = subprocess.Popen(
        command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("sg-derived-*/*.scap")):
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.monotonic() < deadline, "no derived capture was written"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert b"Traceback" not in err
    assert list(tmp_path.glob("sg-derived-*")) == []
