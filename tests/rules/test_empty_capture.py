"""security review LOW-2: a capture sysdig reads 0 events from (truncated, or unreadable to it:
`sysdig -r` stops at the first broken block and exits 0) passes every "no alert" expectation
vacuously. `rules test --captures DIR` fails on it, naming the file, and prints the events read
per capture."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from responder.cli import main
from responder.rulespack.captures import CaptureRun, evaluate_capture
from responder.rulespack.examples import CaptureExpectations
from responder.rulespack.matrix import judge
from responder.rulespack.sysdig import Sysdig

from .conftest import CAPTURES, EXAMPLES, SCOPE_OVERRIDE

pytestmark = pytest.mark.timeout(300)

EMPTY_FAILURE = "trunc.scap: sysdig read 0 events from it (a truncated or unreadable capture?)"


def _truncated(directory: Path) -> Path:
    """sg-a-shell.scap cut to its first 5000 bytes, as the review made it."""
    directory.mkdir()
    path = directory / "trunc.scap"
    path.write_bytes((CAPTURES / "sg-a-shell.scap").read_bytes()[:5000])
    shutil.copy(SCOPE_OVERRIDE, directory / SCOPE_OVERRIDE.name)
    return path


def _examples(path: Path) -> Path:
    """The shipped examples, with one capture declared benign: the truncated one."""
    document = yaml.safe_load(EXAMPLES.read_text(encoding="utf-8"))
    document["captures"] = {
        "scope_override": SCOPE_OVERRIDE.name,
        "files": [{"file": "trunc.scap", "scenario": "my serving image, recorded", "benign": True}],
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def test_sysdig_reads_no_event_from_a_truncated_capture(sysdig: Sysdig, tmp_path: Path) -> None:
    truncated = _truncated(tmp_path / "caps")
    assert sysdig.count_events(str(truncated)) == 0
    assert sysdig.count_events(str(CAPTURES / "sg-a-shell.scap")) > 100
    run = evaluate_capture(sysdig, str(truncated), [], [])
    assert (run.events, run.alerts) == (0, ())


def test_a_capture_of_no_event_fails_its_benign_expectation() -> None:
    expectations = CaptureExpectations(file="trunc.scap", scenario="my serving image", benign=True)
    verdict = judge(expectations, CaptureRun("trunc.scap", (), 1, 0))
    assert [f for f in verdict.failures if f.startswith(EMPTY_FAILURE)] == list(verdict.failures)
    assert verdict.failures
    # Not counted (an older caller): judged as before.
    assert judge(expectations, CaptureRun("trunc.scap", (), 1)).failures == ()
    # Without expectations too: there is nothing in it to have no alert on.
    assert judge(None, CaptureRun("trunc.scap", (), 1, 0)).failures[0].startswith(EMPTY_FAILURE)


def test_rules_test_fails_on_a_truncated_benign_capture(
    sysdig: Sysdig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    captures = _truncated(tmp_path / "caps").parent
    examples = _examples(tmp_path / "examples.yaml")
    code = main(["rules", "test", "--captures", str(captures), "--examples", str(examples)])
    out = capsys.readouterr().out
    assert code == 1, out[-3000:]
    lines = out.splitlines()
    assert "Events read per capture:" in lines
    assert "  trunc.scap  0 events  FAILED" in lines
    assert "captures: FAILED (1)" in lines
    assert any(line.startswith(f"  {EMPTY_FAILURE}: nothing in it was tested") for line in lines)
    assert lines[-1].startswith("result: FAILED (1: captures 1,")


def test_rules_test_prints_the_events_read_per_capture(
    sysdig: Sysdig, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["rules", "test", "--format", "json"])
    document = json.loads(capsys.readouterr().out)
    assert code == 0, document["failures"]
    events = {capture["file"]: capture["events"] for capture in document["captures"]}
    assert set(events) == {path.name for path in CAPTURES.glob("*.scap")}
    assert all(count > 100 for count in events.values()), events
