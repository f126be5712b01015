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
import textwrap
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

from responder.journal.schema import SCHEMA_VERSION, newer_schema_message
from tests.deploy.deploy_support import DEPLOY, RELEASE, Case, Values, deep_merge, render
from tests.deploy.test_falco_values import _snippet
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


# -- Certificates: the CA recipe for your own Secrets --------------------------------------------------


def _own_secrets_recipe() -> str:
    section = README.split("- **Your own Secrets.**", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "no sh block under **Your own Secrets.**"
    # The openssl part; the kubectl lines that follow need a cluster.
    lines = textwrap.dedent(block.group(1)).splitlines()
    return "\n".join(lines[: next(i for i, line in enumerate(lines) if line.startswith("kubectl"))])


def test_the_own_ca_recipe_verifies_strictly(tmp_path: Path) -> None:
    """Python 3.13+ verifies with VERIFY_X509_STRICT (serving-guard audit --responder, verify): a CA
    without keyUsage is refused there, as by openssl's -x509_strict."""
    assert shutil.which("openssl") and shutil.which("bash")
    recipe = _own_secrets_recipe()
    assert '-addext "keyUsage=critical,keyCertSign,cRLSign"' in recipe
    subprocess.run(["bash", "-euc", recipe], cwd=tmp_path, check=True, capture_output=True, text=True)
    verified = subprocess.run(
        ["openssl", "verify", "-x509_strict", "-CAfile", "ca.crt", "tls.crt", "falco.crt"],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.split() == ["tls.crt:", "OK", "falco.crt:", "OK"]


# -- a first install as written --------------------------------------------------------------------------


def _install_steps() -> str:
    return README.split("## Install", 1)[1].split("### On kind", 1)[0]


def test_the_install_creates_the_enforced_namespaces_before_the_chart(chart: helm_python.Chart) -> None:
    example = _snippet("chart-values-example")
    steps = _install_steps()
    install = steps.index("helm install serving-guard")
    for namespace in example["enforcement"]["namespaces"]:
        created = steps.index(f"kubectl create namespace {namespace}")
        assert created < install, namespace
    # The chart puts objects there, which a missing namespace fails.
    rendered = render(chart, Case("readme-example", example))
    assert {m["metadata"].get("namespace") for m in rendered.manifests} >= set(
        example["enforcement"]["namespaces"]
    )
    # The example's PriorityClass is created before the install too.
    assert steps.index(f"kubectl create priorityclass {example['priorityClassName']} ") < install


def test_every_helm_template_command_names_a_kube_version() -> None:
    commands = re.findall(r"helm template [^\n]*(?:\\\n[^\n]*)*", README)
    assert len(commands) >= 2
    for command in commands:
        assert "--kube-version 1.30" in command, command


def test_the_kind_section_adds_the_falco_repository_before_installing_from_it() -> None:
    section = README.split("### On kind", 1)[1].split("\n## ", 1)[0]
    assert section.index("helm repo add falcosecurity ") < section.index(
        "helm install falco falcosecurity/falco"
    )


def test_the_audit_section_says_how_to_get_the_ca(chart: helm_python.Chart) -> None:
    section = README.split("### Who reads the audit trail", 1)[1].split("\n## ", 1)[0]
    fetch = re.search(
        r"kubectl -n falco get secret (\S+) -o jsonpath='\{\.data\.ca\\\.crt\}' \| base64 -d > ca\.crt",
        section,
    )
    assert fetch, section
    assert section.index(fetch.group(0)) < section.index("--ca ca.crt")
    # The responder's TLS Secret as the chart names it.
    tls = render(chart, Case("audit", {})).one("Certificate", f"{RELEASE}-server")["spec"]["secretName"]
    assert fetch.group(1) == tls


def test_the_node_failure_recovery_is_documented() -> None:
    section = README.split("## When the responder's node fails", 1)[1].split("\n## ", 1)[0]
    assert "kubectl -n falco delete pod POD --force --grace-period=0" in section
    assert "node.kubernetes.io/out-of-service=nodeshutdown:NoExecute" in section
    prose = " ".join(section.split())
    assert "`Recreate` starts no new pod while the old one exists" in prose


def test_operators_are_told_where_the_chart_version_shows() -> None:
    prose = " ".join(README.split())
    assert "`helm history serving-guard -n falco` shows in its CHART column" in prose
