"""deploy/README.md says what the chart cannot check: `helm rollback` renders nothing, so pods held under
what the target revision does not know are released first; and on Cilium the responder's egress policy
needs node addresses matched (or the kube-apiserver entity) to reach an API server on the nodes. Its
procedures use the commands the chart's refusals give (templates/upgrade-guards.yaml)."""

from __future__ import annotations

import re
import shlex

import yaml

from tests.deploy.deploy_support import CHART_DIR, DEPLOY, RELEASE, Rendered

README = (DEPLOY / "README.md").read_text(encoding="utf-8")
VALUES = (CHART_DIR / "values.yaml").read_text(encoding="utf-8")


def _section(heading: str) -> str:
    start = README.index(f"{heading}\n")
    end = README.index("\n#", start + len(heading))
    return README[start:end]


def _sh_blocks(text: str) -> list[str]:
    return [block.replace("\\\n", " ") for block in re.findall(r"```sh\n(.*?)```", text, re.S)]


def _release_lines(block: str) -> list[list[str]]:
    return [
        shlex.split(line, comments=True) for line in block.splitlines() if "serving-guard release" in line
    ]


def _as_the_chart_says(words: list[str], reason: str) -> None:
    """The release command of the chart's refusals: in the responder's pod, with its config."""
    assert words[:6] == ["kubectl", "-n", "falco", "exec", f"deploy/{RELEASE}", "--"], words
    assert words[6:9] == ["serving-guard", "release", "--namespace"], words
    assert words[words.index("--reason") + 1] == reason
    assert words[words.index("--by") + 1] == "$USER"
    assert words[words.index("--config") + 1] == "/etc/serving-guard/config.yaml"


def test_the_upgrade_section_releases_before_narrowing_or_a_block_label_change() -> None:
    upgrade = _section("## Upgrade")
    reasons = [
        words[words.index("--reason") + 1] for block in _sh_blocks(upgrade) for words in _release_lines(block)
    ]
    assert reasons == ["block label change", "rights narrowed"]
    for block in _sh_blocks(upgrade):
        for words in _release_lines(block):
            _as_the_chart_says(words, words[words.index("--reason") + 1])
    prose = " ".join(upgrade.split())
    assert "`helm rollback` renders nothing" in prose
    # Every cut's value, as the chart's refusal lists them for the default labelValue.
    assert "'serving-guard.io/quarantine in (true,true-both,true-egress,true-ingress)'" in upgrade


def test_rolling_back_releases_first_and_says_why() -> None:
    rollback = _section("### Going back a version")
    prose = " ".join(rollback.split())
    assert "**`helm rollback` renders nothing.**" in prose
    assert "released silently" in prose and "403" in prose
    (block,) = [b for b in _sh_blocks(rollback) if "helm rollback" in b]
    lines = [line.strip() for line in block.splitlines() if line.strip()]
    released = next(i for i, line in enumerate(lines) if "serving-guard release" in line)
    rolled = next(i for i, line in enumerate(lines) if line.startswith("helm rollback"))
    assert released < rolled, "release before the rollback, with the responder that knows the labels"
    (words,) = _release_lines(block)
    _as_the_chart_says(words, "rollback")
    assert "--revision REV" in block and "--all" in block


def test_the_cilium_note_says_what_to_do(renders: dict[str, Rendered]) -> None:
    access = " ".join(_section("## The responder's network access").split())
    for needed in ("policy-cidr-match-mode: nodes", "policyCIDRMatchMode: [nodes]", "kube-apiserver"):
        assert needed in access
    assert "leave `egressPolicy` off" in access
    comment = VALUES.split("  apiServer:\n", 1)[1].split("    cidrs:", 1)[0]
    assert "policy-cidr-match-mode" in comment and "kube-apiserver" in comment
    # The CiliumNetworkPolicy selects the responder's pods, as the chart labels them.
    snippet = re.search(r"```yaml\n(\s*apiVersion: cilium.io/v2\n.*?)```", README, re.S)
    assert snippet, "no CiliumNetworkPolicy in the README"
    policy = yaml.safe_load(snippet.group(1))
    assert policy["kind"] == "CiliumNetworkPolicy"
    assert policy["spec"]["egress"][0]["toEntities"] == ["kube-apiserver"]
    deployment = renders["defaults"].one("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["endpointSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["metadata"]["namespace"] == renders["defaults"].case.namespace
