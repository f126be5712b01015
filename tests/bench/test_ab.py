"""bench.ab: the interleaved A/B of responder variants. No timing is asserted: these tests check
that variants are read strictly, that a commit runs from its own worktree, and that a tiny A/B
runs end to end and reports every variant in every round."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.ab import Variant, checkout, compare, imported_responder, parse_variant
from bench.procs import ROOT


def test_variants_are_read_with_their_settings() -> None:
    assert parse_variant("new=") == Variant("new")
    assert parse_variant("base=rev:HEAD~1") == Variant("base", "HEAD~1")
    assert parse_variant("t_1=writer:thread,synchronous:normal,commit_interval_ms:0.5") == Variant(
        "t_1", None, {"writer": "thread", "synchronous": "normal", "commit_interval_ms": 0.5}
    )


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("new", "variant 'new': expected NAME= or NAME=KEY:VALUE"),
        ("=writer:thread", "variant '=writer:thread': expected NAME= or NAME=KEY:VALUE"),
        ("a b=", "variant 'a b=': expected NAME= or NAME=KEY:VALUE"),
        ("x=fast:yes", "variant x: unknown key 'fast' (known: rev, writer, synchronous, commit_interval_ms)"),
        ("x=writer", "variant x: writer needs a value (writer:VALUE)"),
        ("x=writer:fast", "variant x: writer must be one of process, thread, got 'fast'"),
        ("x=synchronous:off", "variant x: synchronous must be one of full, normal, got 'off'"),
        ("x=commit_interval_ms:soon", "variant x: commit_interval_ms must be a number, got 'soon'"),
        ("x=commit_interval_ms:-1", "variant x: commit_interval_ms must be within 0..1000, got -1"),
    ],
)
def test_a_bad_variant_is_refused_by_name(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(reason)):
        parse_variant(text)


def test_the_summary_counts_the_rounds_each_variant_was_higher_in() -> None:
    lines = compare({"base": [100.0, 200.0, 300.0], "new": [150.0, 150.0, 350.0], "aiohttp": [9.0, 9.0, 9.0]})
    assert lines[0].startswith("base") and "mean      200/s" in lines[0] and "higher" not in lines[0]
    assert lines[1].endswith("higher than base in 2 of 3")
    assert "higher" not in lines[2]


def test_a_commit_runs_from_a_worktree_of_its_own(tmp_path: Path) -> None:
    where = tmp_path / "tree"
    with checkout("HEAD", where) as root:
        assert root == where
        assert imported_responder(root).is_relative_to(where.resolve())
    assert not where.exists()
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "list"], capture_output=True, text=True, check=True
    )
    assert str(where) not in listed.stdout


def test_an_unknown_revision_is_a_clear_error(tmp_path: Path) -> None:
    with (
        pytest.raises(ValueError, match="rev 'no-such-rev': not a commit of"),
        checkout("no-such-rev", tmp_path / "t"),
    ):
        pass


def test_a_tiny_ab_runs_every_variant_in_every_round(tmp_path: Path) -> None:
    out = tmp_path / "ab.json"
    size = ["--senders", "2", "--rounds", "2", "--seconds", "1", "--warmup", "0.2"]
    ran = subprocess.run(
        [sys.executable, "-m", "bench.ab", *size, "--out", str(out), "default=", "thread=writer:thread"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    results = json.loads(out.read_text())
    assert results["variants"] == {"default": {"rev": None}, "thread": {"rev": None, "writer": "thread"}}
    for name in ("default", "thread"):
        assert len(results["rate_per_second"][name]) == 2 and min(results["rate_per_second"][name]) > 0
    assert len(results["aiohttp_baseline_rate_per_second"]) == 2
    assert "thread" in ran.stdout and "higher than default in" in ran.stdout
    # The second round runs the variants in the opposite order.
    order = [line.split()[2] for line in ran.stderr.splitlines() if line.startswith("round ")]
    assert order == ["default", "thread", "thread", "default"]
