"""journal.maxBytes must leave room on the journal's volume (SQLite's write-ahead log and the lock file
sit beside the journal): the chart refuses more than 80% of an emptyDir's sizeLimit (past it the
kubelet evicts the pod) or of the claim it creates, reading Kubernetes quantities as the API server
does; a size it cannot read, or an existing claim's unknown size, is not checked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import helm_python
import pytest

from tests.deploy.deploy_support import CHART_DIR, NAMESPACE, RELEASE, Case, InstallableChart, render

# (quantity, bytes): binary and decimal suffixes, fractions, plain bytes.
QUANTITIES = [
    ("2Gi", 2 * 1024**3),
    ("1536Mi", 1536 * 1024**2),
    ("500M", 500 * 1000**2),
    ("1.5G", 1_500_000_000),
    ("2.5Gi", 2.5 * 1024**3),
    ("3000000000", 3_000_000_000),
    ("4000000k", 4_000_000_000),
    ("1Ti", 1024**4),
    ("1T", 1000**4),
]


def _render(chart: helm_python.Chart, journal: dict[str, Any]) -> None:
    chart.render({"journal": journal}, name=RELEASE, namespace=NAMESPACE)


@pytest.mark.parametrize(("quantity", "size"), QUANTITIES, ids=[q for q, _ in QUANTITIES])
def test_max_bytes_up_to_80_percent_of_the_emptydir_renders_and_beyond_fails(
    chart: helm_python.Chart, quantity: str, size: float
) -> None:
    room = int(size * 0.8)
    _render(chart, {"emptyDir": {"sizeLimit": quantity}, "maxBytes": room})
    with pytest.raises(helm_python.HelmRenderError) as caught:
        _render(chart, {"emptyDir": {"sizeLimit": quantity}, "maxBytes": room + 1})
    message = str(caught.value)
    assert f"journal.maxBytes: {room + 1} bytes leave too little of the journal's volume" in message
    assert f"(journal.emptyDir.sizeLimit {quantity} = {size:.0f} bytes)" in message
    assert f"keep maxBytes at most 80% of the volume ({room})" in message


def test_the_claims_size_counts_with_persistence_and_an_existing_claims_is_unknown(
    chart: helm_python.Chart,
) -> None:
    big = 3 * 1024**3
    with pytest.raises(helm_python.HelmRenderError, match=r"journal\.persistence\.size 2Gi"):
        _render(chart, {"maxBytes": big, "persistence": {"enabled": True}})
    _render(chart, {"maxBytes": big, "persistence": {"enabled": True, "size": "4Gi"}})
    # The emptyDir is not used with a claim: its small limit does not count.
    _render(
        chart,
        {"maxBytes": big, "persistence": {"enabled": True, "size": "4Gi"}, "emptyDir": {"sizeLimit": "1Gi"}},
    )
    # An existing claim's size is not in the values: nothing to compare with.
    _render(chart, {"maxBytes": 50 * 1024**3, "persistence": {"enabled": True, "existingClaim": "mine"}})


def test_the_defaults_fit(chart: helm_python.Chart) -> None:
    rendered = render(chart, Case("journal-defaults", {}))
    volumes = rendered.one("Deployment")["spec"]["template"]["spec"]["volumes"]
    assert next(v for v in volumes if v["name"] == "journal")["emptyDir"] == {"sizeLimit": "2Gi"}


def test_a_size_the_chart_cannot_read_is_not_checked(tmp_path: Path) -> None:
    """An exponent form (2e9) is a Kubernetes quantity the schema's pattern does not take; were it let
    through, the chart must not refuse (nor pass judgement on) what it cannot read."""
    chart_dir = tmp_path / "serving-guard"
    shutil.copytree(CHART_DIR, chart_dir)  # follows the rules-pack symlink
    schema_file = chart_dir / "values.schema.json"
    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    del schema["properties"]["journal"]["properties"]["emptyDir"]["properties"]["sizeLimit"]["pattern"]
    schema_file.write_text(json.dumps(schema), encoding="utf-8")
    with InstallableChart.load(chart_dir) as relaxed:
        relaxed.render(
            {"journal": {"emptyDir": {"sizeLimit": "2e9"}, "maxBytes": 10 * 1024**3}},
            name=RELEASE,
            namespace=NAMESPACE,
        )
