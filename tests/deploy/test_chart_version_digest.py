"""The chart's content is tied to its version (review of the fixes, finding 8): besides values.yaml
(test_chart_reuse_values.py), a digest of everything the chart packages (templates, schema, values,
Chart.yaml and the embedded rules pack) is recorded per chart version in
fixtures/values-by-chart-version/chart-digests.json. A change to the chart under a version whose digest
is recorded fails here: bump Chart.yaml's version and record the new one (a version not yet released
may have its digest updated instead; its README says how)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from tests.deploy.deploy_support import CHART_DIGESTS, CHART_DIR, VALUES_BY_CHART_VERSION, chart_digest

CHART_VERSION = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text(encoding="utf-8"))["version"]
RECORD = (
    ".venv/bin/python -c 'import json; from tests.deploy.deploy_support import CHART_DIGESTS, chart_digest; "
    'd = json.loads(CHART_DIGESTS.read_text()); d["VERSION"] = chart_digest(); '
    'CHART_DIGESTS.write_text(json.dumps(d, indent=2, sort_keys=True) + "\\n")\''
)


def _recorded() -> dict[str, str]:
    recorded: dict[str, str] = json.loads(CHART_DIGESTS.read_text(encoding="utf-8"))
    return recorded


def test_the_chart_content_is_the_one_recorded_for_its_version() -> None:
    recorded = _recorded()
    assert CHART_VERSION in recorded, (
        f"no digest recorded for chart version {CHART_VERSION}: {RECORD.replace('VERSION', CHART_VERSION)}"
    )
    assert recorded[CHART_VERSION] == chart_digest(), (
        f"the chart's content (templates, schema, values, Chart.yaml or the embedded rules pack) changed "
        f"under version {CHART_VERSION}, whose digest is recorded in {CHART_DIGESTS}: bump Chart.yaml's "
        f"version, copy values.yaml to {VALUES_BY_CHART_VERSION}/<new version>.yaml and record its digest "
        f"({RECORD.replace('VERSION', '<new version>')}); only a version never released may have its "
        "digest replaced"
    )


def test_every_version_with_a_digest_has_its_values_and_none_is_newer_than_the_chart() -> None:
    def version(text: str) -> tuple[int, ...]:
        return tuple(int(part) for part in text.split("."))

    for recorded in _recorded():
        assert (VALUES_BY_CHART_VERSION / f"{recorded}.yaml").is_file(), recorded
        assert version(recorded) <= version(CHART_VERSION), recorded


def test_the_digest_follows_the_embedded_rules_pack_and_the_templates(tmp_path: Path) -> None:
    """The digest changes with a template or the rules pack behind the files/ link."""
    copy = tmp_path / "chart"
    shutil.copytree(CHART_DIR, copy)  # links followed: files/ holds a copy of the rules pack
    base = chart_digest(copy)
    assert base == chart_digest()
    rules = copy / "files" / "serving_guard_rules.yaml"
    rules.write_text(rules.read_text(encoding="utf-8") + "# tuned\n", encoding="utf-8")
    assert chart_digest(copy) != base
    template = copy / "templates" / "falcosidekick-networkpolicy.yaml"
    rules.write_text(rules.read_text(encoding="utf-8").removesuffix("# tuned\n"), encoding="utf-8")
    assert chart_digest(copy) == base
    template.write_text(template.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    assert chart_digest(copy) != base
