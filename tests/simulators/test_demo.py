"""`serving-guard demo` end to end (emulated cluster, Slack sink, PKI, the real responder over mutual
TLS HTTP and gRPC), its exit status following the expectations, and its self-contained report."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
from html import escape
from pathlib import Path

import pytest

from responder.cli import main as cli_main
from simulators.demo import PKI_DIR, PKI_FILES, WORKDIR_FILES, WORKDIR_MARKER
from simulators.scenario import load_scenarios

SCENARIOS = load_scenarios()
# The shipped scenarios the demo sends (a scenario without a demo part is left out, saying so).
DEMOED = [s.name for s in SCENARIOS.by_name.values() if s.demo is not None]
LEFT_OUT = [s.name for s in SCENARIOS.by_name.values() if s.demo is None]


def run_demo(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli_main(["demo", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_demo_passes_and_writes_a_self_contained_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "demo-report.html"
    code, out, err = run_demo(["--report", str(report), "--workdir", str(tmp_path / "work")], capsys)
    assert code == 0, out + err
    assert err == ""  # quiet: only the table on stdout
    rows = [line for line in out.splitlines() if line.endswith(("PASS", "FAIL")) and not line.startswith(" ")]
    assert len(rows) == len(DEMOED) + 2  # every scenario with a demo part, the forged alert and the drill
    assert len(rows) + 1 == 16  # and the by-hand step: 16 expectations
    assert LEFT_OUT == ["shell-from-model-server"]
    for name in LEFT_OUT:
        assert f"demo: {name} has no demo part (the seeded pod and input to send it with): left out;" in out
        assert not any(row.startswith(f"{name} ") for row in rows)
    assert all(row.endswith("PASS") for row in rows)
    table = "\n".join(rows)
    assert re.search(
        r"shell-in-serving-pod\s+http\s+Shell in serving pod\s+verified\s+notify, quarantine\s+"
        r"LEAKY: still allowed by allow-gateway-to-triton\s+sent\s+\d+ ms\s+PASS",
        table,
    )
    assert re.search(
        r"forged-alert\s+http\s+Shell in serving pod\s+unverified\s+notify\s+quarantine withheld", table
    )
    assert re.search(r"benign-serving\s+http\s+\(none\)\s+-\s+-\s+silent\s+-\s+-\s+PASS", table)
    # The drill of the shell scenario, on the pod whose real alert was acted on: its own incident,
    # decided in dry-run (the real one above is LEAKY-quarantined, not folded into the drill).
    assert re.search(
        r"drill\s+http\s+Shell in serving pod\s+verified\s+notify, quarantine\s+dry-run: would quarantine",
        table,
    )
    assert re.search(r"reverse-shell-one-liner\s+grpc\s+.*quarantined\s+sent", table)
    assert re.search(
        r"anomalous-egress\s+grpc\s+.*notify, block_destination\s+blocked 203.0.113.10\s+sent", table
    )
    # A person confirms what the policy on trial predicted, with the command its Slack message gives.
    by_hand = out[out.index("BY HAND  runtime-download") :].splitlines()
    assert by_hand[1].startswith("  $ serving-guard quarantine --namespace ml-serving triton-")
    assert "--incident inc-" in by_hand[1] and "--by demo-oncall --config " in by_hand[1]
    assert "LEAKY quarantine: still allowed by allow-gateway-to-triton" in by_hand[2]
    assert "the responder tells incident inc-" in by_hand[3]
    assert (
        by_hand[5] == "  told in the incident's Slack thread, its message rendered again with who acted  PASS"
    )
    assert f"all {len(rows) + 1} expectations held" in out

    html = report.read_text(encoding="utf-8")
    # Self-contained: nothing to fetch.
    assert not re.search(
        r"<(link|script|img|iframe|object|embed)\b|@import|url\(|<[a-z]+\s[^>]*\b(src|href)=", html
    )
    assert "All 16 expectations held." in html
    # The header says what the demo did not prove: the alerts are templates (the responder, not the
    # rules), the rule conditions' result the console printed first, and each scenario left out.
    header = html[: html.index('<section id="scenarios">')]
    assert "Scenario alert templates\nreplayed into the real responder" in header
    proves = "they prove the responder (verification, policy, actions, Slack), not that a rule still detects"
    assert f"{proves} the attack" in header
    first = out.splitlines()[0]
    assert first.startswith("rule conditions: ")
    assert f'id="rule-conditions">{escape(first)}</div>' in header
    for name in LEFT_OUT:
        assert f"<li><code>{name}</code>: " in header
        assert "It has no demo part (the seeded pod and input to send it with): left out" in header
        assert f"<code>serving-guard replay {name}</code>" in header
    assert '<section id="by-hand"><h2>By hand</h2>' in html and "By hand, by *demo-oncall*" not in html
    assert "By hand, by <b>demo-oncall</b>" in html or "By hand, by <strong>demo-oncall</strong>" in html
    for name in DEMOED:
        assert name in html
    # The destination block is made on a pod no quarantine cuts (under one, no block would be).
    assert (
        "<strong>Blocked</strong> egress to <code>203.0.113.10</code>: the pod's other egress is unchanged"
        in html
    )
    assert "No block made" not in html and "with NetworkPolicy serving-guard-block-" in html
    # Slack messages rendered from their Block Kit, with the alert text escaped.
    assert html.count('<div class="slack">') == 14  # every case but the control
    assert "DRILL: " in html and "No command to cut the pod" in html
    assert "LEAKY quarantine" in html and "Unverified alert: someone may be forging alerts." in html
    assert "serving-guard release --namespace ml-serving" in html
    assert "<script" not in html.lower()
    # The demo leaves its files where it was told.
    assert {p.name for p in (tmp_path / "work").iterdir()} >= {
        "config.yaml",
        "journal.db",
        "responder.log",
        "pki",
    }


def test_a_second_run_in_the_same_workdir_starts_clean(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A reused --workdir gets a fresh journal (the old one made 8 of 10 fail with negative
    latencies), and only the files a demo run creates are removed: the user's own stay."""
    work = tmp_path / "work"
    code, out, err = run_demo(["--no-report", "--workdir", str(work)], capsys)
    assert code == 0, out + err
    (work / "notes.txt").write_text("mine", encoding="utf-8")
    (work / PKI_DIR / "mine.pem").write_text("mine", encoding="utf-8")
    code, out, err = run_demo(["--no-report", "--workdir", str(work)], capsys)
    assert code == 0, out + err
    assert err == ""
    assert "all 16 expectations held" in out
    assert not re.search(r"-\d+ ms", out)
    assert (work / "notes.txt").read_text(encoding="utf-8") == "mine"
    assert (work / PKI_DIR / "mine.pem").read_text(encoding="utf-8") == "mine"
    # Everything else there is the demo's own, so the next run can clear it all.
    assert {p.name for p in work.iterdir()} <= {*WORKDIR_FILES, WORKDIR_MARKER, PKI_DIR, "notes.txt"}
    assert {p.name for p in (work / PKI_DIR).iterdir()} == {*PKI_FILES, "mine.pem"}
    assert (work / "responder.log").read_text(encoding="utf-8").count("responder started") == 1


def test_an_altered_expectation_fails_the_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "demo-report.html"
    code, out, _ = run_demo(
        [
            "--report",
            str(report),
            "--expect",
            "shell-in-serving-pod=quarantined",
            "--expect",
            "forged-alert=quarantined",
        ],
        capsys,
    )
    assert code == 1
    assert (
        "FAIL shell-in-serving-pod (expected quarantined + Slack): quarantine is LEAKY: still allowed by "
        in out
    )
    assert "FAIL forged-alert (expected quarantined + Slack): alert not verified against the live pod" in out
    assert "2 of 16 expectations FAILED" in out
    assert "2 of 16 expectations FAILED." in report.read_text(encoding="utf-8")


def test_an_altered_scenario_file_fails_the_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    altered = tmp_path / "scenarios"
    altered.mkdir()
    for path in SCENARIOS.directory.glob("*.yaml"):
        text = path.read_text(encoding="utf-8")
        if path.stem == "runtime-download":
            text = text.replace("outcome: dry_run", "outcome: quarantined")
        (altered / path.name).write_text(text, encoding="utf-8")
    code, out, _ = run_demo(["--no-report", "--scenarios-dir", str(altered)], capsys)
    assert code == 1
    assert (
        "FAIL runtime-download (expected quarantined + Slack): expected quarantined, but policy"
        " report-runtime-changes is in dry-run: nothing was changed" in out
    )


def test_demo_rejects_unknown_expectations(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_demo(["--expect", "nope=silent"], capsys)
    assert code == 2 and "--expect 'nope=silent'" in err
    code, _, err = run_demo(["--expect", "drift-exec=exploded"], capsys)
    assert code == 2 and "outcome must be one of" in err


def test_the_by_hand_step_takes_the_command_slack_gives_and_says_what_is_missing(tmp_path: Path) -> None:
    from simulators.demo_by_hand import DEMO_PERSON, command_from, confirm_by_hand, trial_incident
    from simulators.slack_sink import SinkMessage, SlackSink

    predicted = {"incident_id": "inc-1", "actions": [{"action": "quarantine", "status": "dry_run"}]}
    done = {"incident_id": "inc-2", "actions": [{"action": "quarantine", "status": "quarantined"}]}
    assert trial_incident([("a", done), ("b", None), ("c", predicted)]) == ("c", predicted)
    assert trial_incident([("a", done)]) is None
    # A drill's prediction is never the one confirmed by hand: its pod is not under attack.
    drill = {**predicted, "incident_id": "inc-3", "decision": {"dry_run": True, "dry_run_by": "drill"}}
    assert trial_incident([("d", drill), ("c", predicted)]) == ("c", predicted)
    offered = (
        "```serving-guard quarantine --namespace ml x-0 --incident inc-1 --reason '&lt;why&gt;'"
        " --by '&lt;you&gt;'```"
    )
    post = SinkMessage("C1", "1.1", "t", [{"type": "section", "text": {"text": offered}}], None)
    assert command_from(post, tmp_path / "c.yaml") == [
        *["serving-guard", "quarantine", "--namespace", "ml", "x-0", "--incident", "inc-1", "--reason"],
        "confirmed by hand after the trial predicted it",
        "--by",
        DEMO_PERSON,
        "--config",
        str(tmp_path / "c.yaml"),
    ]
    # A command that names its config (the demo's responder runs with one) is run as it is.
    named = offered.replace(" --by '&lt;you&gt;'```", " --by '&lt;you&gt;' --config /etc/sg/config.yaml```")
    post = SinkMessage("C1", "1.1", "t", [{"type": "section", "text": {"text": named}}], None)
    argv = command_from(post, tmp_path / "c.yaml") or []
    assert argv.count("--config") == 1 and argv[-1] == "/etc/sg/config.yaml"
    # Only the placeholders the message gives are filled in: one without --by is run without it.
    bare_by = offered.replace(" --by '&lt;you&gt;'", "")
    post = SinkMessage("C1", "1.1", "t", [{"type": "section", "text": {"text": bare_by}}], None)
    assert "--by" not in (command_from(post, tmp_path / "c.yaml") or [])
    bare = SinkMessage("C1", "1.1", "t", [], None)
    step = asyncio.run(confirm_by_hand("c", predicted, bare, tmp_path / "c.yaml", SlackSink(), None, 1.0))
    assert not step.passed and step.problems == ("the incident's Slack message offers no quarantine command",)


def test_ctrl_c_during_the_demo_is_said_in_one_line(tmp_path: Path) -> None:
    work = tmp_path / "work"
    command = [sys.executable, "-m", "responder", "demo", "--no-report", "--workdir", str(work)]
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as demo:
        deadline = time.monotonic() + 60  # a bound on a hang, not a timing assertion
        while not (work / "config.yaml").exists():  # the run under way: its cluster and PKI made
            assert demo.poll() is None and time.monotonic() < deadline, "the demo never got under way"
            time.sleep(0.05)
        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=60) == 130
        assert demo.stderr is not None
        err = demo.stderr.read().decode()
    assert err.splitlines().count("demo: interrupted; no report written") == 1, err
    assert "Traceback" not in err
