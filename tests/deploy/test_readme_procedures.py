"""deploy/README.md's procedures do what they say with the chart as it renders: adopting the responder's
quarantine policies covers every cut's the chart renders (not only the cut of both's), and rolling back
across a journal schema change gives the earlier version a claim of its own, while the newer journal
stays readable from a pod Pod Security "restricted" admits (the image has no shell to move it aside)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from typing import Any

import helm_python
import pytest
import yaml

from responder.journal_schema import SCHEMA_VERSION, newer_schema_message
from tests.deploy.deploy_support import DEPLOY, RELEASE, Case, Values, deep_merge, render
from tests.pss import restricted_violations

README = (DEPLOY / "README.md").read_text(encoding="utf-8")
QUARANTINE_TEMPLATE = f"{RELEASE}/templates/quarantine-networkpolicies.yaml"


def _sh_block_after(marker: str) -> str:
    match = re.search(rf"{re.escape(marker)}\s*```sh\n(.*?)```", README, re.S)
    assert match, f"README.md has no sh block after {marker}"
    return match.group(1)


def _section(title: str) -> str:
    start = README.index(f"### {title}")
    end = README.index("\n#", start + 1)
    return README[start:end]


# -- 8. adopting the quarantine policies the responder created ----------------------------------------

ADOPT = _sh_block_after("<!-- adopt-quarantine-policies -->")


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, ["serving-guard-quarantine"]),
        (
            {"quarantine": {"isolate": "egress"}},
            ["serving-guard-quarantine", "serving-guard-quarantine-egress"],
        ),
        (
            {
                "policies": [
                    {"name": "egress", "actions": ["notify", "quarantine"], "isolate": "egress"},
                ]
            },
            [
                "serving-guard-quarantine",
                "serving-guard-quarantine-egress",
                "serving-guard-quarantine-ingress",
            ],
        ),
    ],
    ids=["both", "isolate-egress", "policy-cutting-otherwise"],
)
def test_adoption_covers_every_cut_the_chart_renders(
    chart: helm_python.Chart, values: Values, expected: list[str]
) -> None:
    assert shutil.which("awk"), "awk is needed to run the README's pipeline"
    values = {**values, "enforcement": {"scope": "namespaced", "namespaces": ["models", "llm"]}}
    rendered = render(chart, Case("adopt", values))
    rendered_names = sorted({p["metadata"]["name"] for p in rendered.of_kind("NetworkPolicy")} - {RELEASE})
    assert rendered_names == expected
    # The README's pipeline, on what `helm template --show-only` prints.
    awk = re.search(r"\| awk '([^']+)'", ADOPT)
    assert awk, ADOPT
    assert "--show-only templates/quarantine-networkpolicies.yaml" in ADOPT
    shown = f"---\n# Source: {QUARANTINE_TEMPLATE}\n{rendered.files[QUARANTINE_TEMPLATE]}"
    found = subprocess.run(["awk", awk.group(1)], input=shown, capture_output=True, text=True, check=True)
    assert sorted(found.stdout.split()) == expected


def test_adoption_annotates_and_labels_each_name_the_loop_finds() -> None:
    assert re.search(r"^for name in \$\(helm template serving-guard ", ADOPT, re.M)
    kubectl = [line.strip() for line in ADOPT.splitlines() if line.strip().startswith("kubectl")]
    assert len(kubectl) == 3
    for line in kubectl:
        words = shlex.split(line.rstrip("\\"), comments=True)
        assert words[:4] == ["kubectl", "-n", "$NS", words[3]] and words[4:6] == ["networkpolicy", "$name"], (
            line
        )
    assert "meta.helm.sh/release-name=serving-guard meta.helm.sh/release-namespace=falco" in ADOPT
    assert "app.kubernetes.io/managed-by=Helm --overwrite" in ADOPT


# -- 9. going back a version --------------------------------------------------------------------------

ROLLBACK = _section("Going back a version")


def _rollback_sets() -> dict[str, Any]:
    upgrade = re.search(
        r"helm upgrade serving-guard \S+ -n falco -f my-values.yaml \\\n(.*?)\n  ```", ROLLBACK, re.S
    )
    assert upgrade, ROLLBACK
    words = shlex.split(upgrade.group(1).replace("\\\n", " "))
    sets: dict[str, Any] = {}
    for flag, assignment in zip(words[::2], words[1::2], strict=True):
        assert flag == "--set", words
        key, _, value = assignment.partition("=")
        sets[key] = {"true": True, "false": False}.get(value, value)
    return sets


def _nested(flat: dict[str, Any]) -> Values:
    nested: Values = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def test_rolling_back_puts_the_earlier_version_on_a_claim_of_its_own(chart: helm_python.Chart) -> None:
    claim = yaml.safe_load(re.search(r"<<'EOF'\n(.*?)\n  EOF", ROLLBACK, re.S).group(1))  # type: ignore[union-attr]
    assert claim["kind"] == "PersistentVolumeClaim"
    # Someone's values as the README's install has them: persistence on a class of their own.
    my_values = {"journal": {"persistence": {"enabled": True, "storageClassName": "fast"}}}
    before = render(chart, Case("rollback-before", my_values))
    kept = before.one("PersistentVolumeClaim")
    assert kept["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    sets = _rollback_sets()
    assert sets["journal.persistence.existingClaim"] == claim["metadata"]["name"]
    # `-f my-values.yaml` and the --set flags over it (without storageClassName="" the chart refuses).
    rolled = render(chart, Case("rollback", deep_merge(my_values, _nested(sets))))
    assert rolled.of_kind("PersistentVolumeClaim") == []
    volumes = rolled.one("Deployment")["spec"]["template"]["spec"]["volumes"]
    journal = next(v for v in volumes if v["name"] == "journal")
    assert journal["persistentVolumeClaim"] == {"claimName": claim["metadata"]["name"]}
    # The newer journal is read from the kept claim, in a pod restricted Pod Security admits.
    overrides = re.search(r"--overrides='(.*?)'\n", ROLLBACK, re.S)
    assert overrides, ROLLBACK
    pod = json.loads(overrides.group(1).replace("'\"$image\"'", "registry.example.com/sg:newer"))
    spec = pod["spec"]
    assert restricted_violations(spec) == []
    (volume,) = [v for v in spec["volumes"] if "persistentVolumeClaim" in v]
    assert volume["persistentVolumeClaim"]["claimName"] == kept["metadata"]["name"]
    (container,) = spec["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    journal_file = f"{mount['mountPath']}/journal.db"
    assert container["args"][:3] == ["audit", "--journal", journal_file]
    # The file the responder writes there (journal.path in the chart's config, on the journal volume).
    config = yaml.safe_load(before.config_text())
    assert config["journal"]["path"].rsplit("/", 1)[1] == "journal.db"


def test_the_rollback_section_names_this_versions_journal_schema() -> None:
    """The number an operator reads in the refusal is the one this section prepares them for, in
    the words the refusal uses (this version's, about a journal one schema newer, are the same)."""
    prose = " ".join(ROLLBACK.split())
    assert f"(this one: {SCHEMA_VERSION}," in prose
    assert f"journal PATH: schema {SCHEMA_VERSION}, this version reads {SCHEMA_VERSION - 1}`" in prose
    assert newer_schema_message("PATH", SCHEMA_VERSION + 1).startswith(
        f"journal PATH: schema {SCHEMA_VERSION + 1}, this version reads {SCHEMA_VERSION} "
    )
