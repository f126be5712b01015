"""Deliberately broken rules files: each one fails the checker with the right message, at the right line.

Each file in tests/rules/broken/ says in its header what it expects:
  # expect: <text of the error>      (required)
  # line: <n>                        (the line the error must point at)
  # needs: sysdig                    (only the real filter engine catches it)
  # with-pack: true                  (load the shipped pack first, as an override file would be)
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from responder.rulespack.check import ExitCode, check_files
from responder.rulespack.sysdig import Sysdig

from .conftest import PACK, RULES_TESTS

BROKEN = sorted((RULES_TESTS / "broken").glob("*.yaml"))
_HEADER = re.compile(r"^# (expect|line|needs|with-pack): (.*)$")


def _header(path: Path) -> dict[str, str]:
    header = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _HEADER.match(line)
        if match:
            header[match.group(1)] = match.group(2).strip()
    return header


def test_there_are_broken_files() -> None:
    assert len(BROKEN) >= 20


@pytest.mark.parametrize("path", BROKEN, ids=[p.stem for p in BROKEN])
def test_broken_file_fails_with_its_message(path: Path, request: pytest.FixtureRequest) -> None:
    header = _header(path)
    assert "expect" in header, f"{path.name} has no '# expect:' header"
    sysdig: Sysdig | None = (
        request.getfixturevalue("sysdig") if header.get("needs") == "sysdig" else Sysdig.find()
    )
    files = [str(PACK), str(path)] if header.get("with-pack") == "true" else [str(path)]
    report = check_files(files, sysdig, require_sysdig=False, run_falco=False)
    assert report.exit_code is ExitCode.ERRORS
    matching = [p for p in report.errors if header["expect"] in p.format()]
    assert matching, f"expected {header['expect']!r}, got:\n" + "\n".join(p.format() for p in report.errors)
    if "line" in header:
        assert any(p.file == str(path) and p.line == int(header["line"]) for p in matching), (
            f"expected line {header['line']}, got: " + "; ".join(p.format() for p in matching)
        )
