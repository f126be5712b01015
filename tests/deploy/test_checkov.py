"""checkov (the security scanner a security team would run) on the rendered chart and the Dockerfile:
no failed check without a reviewed reason in deploy/checkov-skips.yaml, and no stale reason there.

checkov runs once for the whole matrix (about 5 s). It scans rendered YAML, never `--framework helm`,
which needs a helm binary and silently checks nothing without one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import helm_python
import pytest
import yaml

from tests.deploy.deploy_support import CASES, DEPLOY, DIGEST, REPO, Case, Values, deep_merge

SKIPS_FILE = DEPLOY / "checkov-skips.yaml"
MIN_REASON = 80


def _checkov_binary() -> str:
    configured = os.environ.get("SERVING_GUARD_CHECKOV")
    if configured:
        if not os.access(configured, os.X_OK):
            pytest.fail(f"SERVING_GUARD_CHECKOV={configured} is not an executable")
        return configured
    for candidate in (REPO / ".venv-scan" / "bin" / "checkov", shutil.which("checkov")):
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    reason = "checkov not found: run `make .venv-scan/bin/checkov` or set SERVING_GUARD_CHECKOV"
    if os.environ.get("SERVING_GUARD_REQUIRE_SYSDIG") == "1":
        pytest.fail(f"{reason} (SERVING_GUARD_REQUIRE_SYSDIG=1 makes the real tools mandatory)")
    pytest.skip(reason)


@dataclass(frozen=True)
class Finding:
    check: str
    case: str  # the rendered value set, or "Dockerfile"
    resource: str


@dataclass(frozen=True)
class Scan:
    findings: frozenset[Finding]
    summaries: dict[str, dict[str, Any]]


def _scan_values(case: Case) -> Values:
    # Pulling by digest is orthogonal to every other axis of the matrix: scan each value set as
    # production would run it, and only the untouched defaults without a digest.
    if case.name == "defaults":
        return dict(case.values)
    return deep_merge(case.values, {"image": {"digest": DIGEST}})


@pytest.fixture(scope="module")
def scan(chart: helm_python.Chart, tmp_path_factory: pytest.TempPathFactory) -> Scan:
    binary = _checkov_binary()
    root = tmp_path_factory.mktemp("checkov")
    for case in CASES:
        files = chart.render(_scan_values(case), name="serving-guard", namespace=case.namespace)
        documents = [text for path, text in sorted(files.items()) if path.endswith(".yaml") and text.strip()]
        (root / f"{case.name}.yaml").write_text("\n---\n".join(documents), encoding="utf-8")
    shutil.copy(DEPLOY / "Dockerfile", root / "Dockerfile")
    command = [binary, "--directory", str(root), "--framework", "kubernetes", "dockerfile",
               "--skip-download", "--quiet", "--soft-fail", "--output", "json"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"checkov failed to run ({done.returncode}):\n{done.stderr[-3000:]}"
    reports = json.loads(done.stdout)
    findings = set()
    summaries = {}
    for report in reports if isinstance(reports, list) else [reports]:
        summaries[report["check_type"]] = report["summary"]
        for failed in report["results"]["failed_checks"]:
            scanned = PurePosixPath(failed["file_path"]).stem or "Dockerfile"
            findings.add(Finding(failed["check_id"], scanned, failed["resource"]))
    return Scan(frozenset(findings), summaries)


def _skips() -> list[dict[str, Any]]:
    data = yaml.safe_load(SKIPS_FILE.read_text(encoding="utf-8"))
    skips: list[dict[str, Any]] = data["skips"]
    return skips


def _covered(finding: Finding, skip: dict[str, Any]) -> bool:
    return (
        skip["check"] == finding.check
        and finding.case in skip["cases"]
        and skip["resource"] == finding.resource
    )


def test_checkov_really_scanned_everything(scan: Scan) -> None:
    # Guards against the silent "0 resources" outcome (wrong framework, unparsable YAML).
    kubernetes, dockerfile = scan.summaries["kubernetes"], scan.summaries["dockerfile"]
    assert kubernetes["parsing_errors"] == 0 and dockerfile["parsing_errors"] == 0
    assert kubernetes["resource_count"] >= 10 * len(CASES)
    assert dockerfile["resource_count"] >= 1 and dockerfile["passed"] >= 20


def test_every_failed_check_has_a_reviewed_skip(scan: Scan) -> None:
    unexplained = sorted(
        f"{f.check} in {f.case}: {f.resource}"
        for f in scan.findings
        if not any(_covered(f, s) for s in _skips())
    )
    assert unexplained == [], "fix these or add a reviewed reason to deploy/checkov-skips.yaml"


def test_no_stale_skips(scan: Scan) -> None:
    stale = [
        f"{skip['check']} for {case}"
        for skip in _skips()
        for case in skip["cases"]
        if not any(_covered(f, skip) and f.case == case for f in scan.findings)
    ]
    assert stale == [], "these skips match no finding any more: remove them from deploy/checkov-skips.yaml"


def test_skips_are_explained_and_narrow() -> None:
    known_cases = {case.name for case in CASES} | {"Dockerfile"}
    for skip in _skips():
        assert set(skip) == {"check", "cases", "resource", "reason"}, skip
        assert len(" ".join(skip["reason"].split())) >= MIN_REASON, f"{skip['check']}: write the reason out"
        assert skip["cases"] and set(skip["cases"]) <= known_cases, skip["check"]
        # A skip for the production-like value set would mean production ships with the finding.
        assert "production" not in skip["cases"], skip["check"]


def test_dockerfile_passes_without_skips(scan: Scan) -> None:
    assert [f for f in scan.findings if f.case == "Dockerfile"] == []
    assert not any("Dockerfile" in skip["cases"] for skip in _skips())
