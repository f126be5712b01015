"""`serving-guard audit` shows what people did by hand outside any incident (a quarantine, a
release from a workstation) in every format, says when --limit cut the trail, refuses epoch
seconds given for nanoseconds, says an --incident is not in the journal, and calls a damaged
journal damaged with how to save what it holds. Against the Kubernetes emulator, over loopback."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from responder.cli import main
from simulators.falco_json import falco_alert
from simulators.seed import SeededPod
from tests.helpers import SHELL_RULE
from tests.responder.test_quarantine_command import Seeded, journaled_incident, write_config


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def journal_with_an_incident(tmp_path: Path, seeded: Seeded) -> tuple[Path, dict[str, SeededPod], str]:
    """A config, the cluster's pods, and the incident a shell on the vLLM pod opened in its journal."""
    _, pods, kubeconfig = seeded
    config = write_config(tmp_path, kubeconfig)
    alert = falco_alert(pods["vllm"], SHELL_RULE, "Notice", "shell", {"proc.name": "sh"})
    return config, pods, journaled_incident(tmp_path, config, alert)


def test_a_quarantine_and_a_release_by_hand_outside_incidents_are_in_the_trail(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    """The release undid what the alert's incident did: without --incident it was journaled and no
    format of audit showed it, so a mistaken (or hostile) release left nothing a reader could see."""
    config, pods, _ = journal_with_an_incident(tmp_path, seeded)
    served = pods["torchserve"]
    where = ["--config", str(config)]
    by = ["--reason", "looked odd", "--by", "alice"]
    assert cli(["quarantine", "-n", served.namespace, served.name, *by, *where], capsys)[0] == 0
    undo = ["--reason", "false positive", "--by", "mallory"]
    assert cli(["release", "-n", served.namespace, served.name, *undo, *where], capsys)[0] == 0
    served_ref = f"{served.namespace}/{served.name}"

    code, out, err = cli(["audit", *where], capsys)
    assert (code, err) == (0, "")
    rows = out.splitlines()[1:]
    assert len(rows) == 3
    assert "Shell in serving pod" in rows[0]
    assert rows[1].split()[2:5] == ["-", served_ref, "by_hand"]
    assert "by hand: looked odd" in rows[1] and "quarantine=quarantined(by alice)" in rows[1]
    assert "by hand: false positive" in rows[2] and "release=released(by mallory)" in rows[2]

    code, out, _ = cli(["audit", *where, "--format", "json", "--pod", served_ref], capsys)
    entries = json.loads(out)
    assert [(e["outcome"], e["action"]["action"], e["action"]["actor"]) for e in entries] == [
        ("by_hand", "quarantine", "alice"),
        ("by_hand", "release", "mallory"),
    ]
    assert entries[1]["action"]["reason"] == "false positive"

    code, out, _ = cli(["audit", *where, "--format", "incidents"], capsys)
    blocks = out.strip().split("\n\n")
    assert len(blocks) == 3 and blocks[0].startswith("inc-")
    assert blocks[2].splitlines()[0] == f"by hand  {served_ref}, outside any incident"
    # Who and why said once, not in the detail and again after it.
    assert blocks[2].splitlines()[1].endswith("release released by mallory: false positive"), blocks[2]

    code, out, _ = cli(["audit", *where, "--format", "summary"], capsys)
    assert "2 action(s) by hand outside any incident:" in out.splitlines()
    assert f"  {served_ref}: " in out and "by alice: looked odd" in out

    # A filter that selects alerts or incidents leaves them out: they have none.
    code, out, _ = cli(["audit", *where, "--policy", "default", "--format", "json"], capsys)
    assert all(e["outcome"] != "by_hand" for e in json.loads(out))


def test_a_trail_cut_by_limit_says_so_in_every_format(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    config, pods, _ = journal_with_an_incident(tmp_path, seeded)
    by = ["--reason", "r", "--by", "alice", "--config", str(config)]
    assert (
        cli(["quarantine", "-n", pods["torchserve"].namespace, pods["torchserve"].name, *by], capsys)[0] == 0
    )
    note = "(read from the newest 1 entries only: raise --limit to take in older ones)"
    for form in ("table", "json", "incidents"):
        code, out, err = cli(["audit", "--config", str(config), "--limit", "1", "--format", form], capsys)
        assert code == 0 and err.splitlines() == [note], form
        if form == "json":
            assert [e["outcome"] for e in json.loads(out)] == ["by_hand"]  # the newest, still JSON
    code, out, _ = cli(["audit", "--config", str(config), "--format", "json"], capsys)
    whole = len(json.loads(out))
    for form in ("table", "json", "incidents", "summary"):
        # Exactly --limit entries: nothing was left out, so nothing is said.
        exactly = str(whole)
        code, out, err = cli(["audit", "--config", str(config), "--limit", exactly, "--format", form], capsys)
        assert code == 0 and "raise --limit" not in err + out, form
        # One fewer: the oldest is left out, and that is said.
        limit = str(whole - 1)
        code, out, err = cli(["audit", "--config", str(config), "--limit", limit, "--format", form], capsys)
        assert code == 0 and f"newest {limit} entries only" in err + out, form
        if form == "json":
            assert len(json.loads(out)) == whole - 1


def test_epoch_seconds_are_refused_with_the_nanoseconds_they_stand_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`date +%s` read as nanoseconds was 1970: the whole trail, unsaid."""
    code, _, err = cli(["audit", "--journal", str(tmp_path / "j.db"), "--since", "1796544980"], capsys)
    assert code == 2
    assert (
        "--since '1796544980': epoch seconds, not nanoseconds (that would be 1970): give"
        " 1796544980000000000 for that time, or like 15m, 2h, 3d or an RFC 3339 time"
    ) in err
    code, _, err = cli(["audit", "--journal", str(tmp_path / "j.db"), "--since", "1796544980123"], capsys)
    assert "epoch milliseconds" in err and "1796544980123000000" in err
    # 17 digits: no unit makes it a time the journal holds (x1000 is past 2262): none offered.
    code, _, err = cli(["audit", "--journal", str(tmp_path / "j.db"), "--since", "12345678901234567"], capsys)
    assert code == 2
    assert "--since '12345678901234567': epoch nanoseconds before 1973, taken for a mistake" in err


def test_an_incident_not_in_the_journal_is_said_to_be_so(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _, incident = journal_with_an_incident(tmp_path, seeded)
    where = ["audit", "--config", str(config)]
    assert cli([*where, "--incident", incident], capsys)[0] == 0
    code, _, err = cli([*where, "--incident", "inc-00000000000000000000"], capsys)
    assert code == 1
    assert err == "--incident inc-00000000000000000000: nothing in the trail (mistyped, or pruned since)\n"


def test_a_damaged_journal_is_called_damaged_with_how_to_save_what_it_holds(
    tmp_path: Path, seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    journal_with_an_incident(tmp_path, seeded)
    path = tmp_path / "journal.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'alerts'").fetchone()
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    with path.open("r+b") as raw:  # the alerts table's root page, overwritten
        raw.seek((root - 1) * page_size)
        raw.write(b"\xff" * page_size)
    code, _, err = cli(["audit", "--journal", str(path)], capsys)
    assert code == 2
    assert f"journal {path}: damaged where the trail asked for was read:" in err
    assert f"`sqlite3 {path} .recover | sqlite3 {path}.recovered`" in err
