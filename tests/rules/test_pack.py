"""Issue 3: the shipped pack passes the checker, keeps the names other parts depend on, follows the
house rules, and every tuning example in rules/README.md loads with it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from responder.metrics import SHIPPED_RULES
from responder.rulespack.check import ExitCode, check_files
from responder.rulespack.condition import checks, first_conjunct
from responder.rulespack.evttypes import event_types
from responder.rulespack.expand import RuleSet, load
from responder.rulespack.policy import MITRE_TECHNIQUE, REQUIRED_OUTPUT_FIELDS, output_fields
from responder.rulespack.rulesfile import read_rules_file
from responder.rulespack.sysdig import Sysdig

from .conftest import PACK, README, SCOPE_OVERRIDE

# The fixed rule names other parts depend on; the responder's metrics label them from this list.
RULE_NAMES = list(SHIPPED_RULES)
TUNING_POINTS = [
    "serving_guard_scope",
    "serving_guard_serving_images",
    "serving_guard_model_dirs",
    "serving_guard_model_extensions",
    "serving_guard_shell_binaries",
    "serving_guard_shell_paths",
    "serving_guard_allowed_egress_networks",
    "serving_guard_allowed_egress_ports",
    "serving_guard_node_dns_networks",
    "serving_guard_metadata_addresses",
    "serving_guard_download_tools",
    "serving_guard_credential_dirs",
    "serving_guard_model_dir_through_proc",
    "serving_guard_python_site_roots",
    "serving_guard_torchserve_unpack_dirs",
    "serving_guard_download_tool_paths",
    "serving_guard_writable_exec_dirs",
    "serving_guard_allowed_script_dirs",
    "serving_guard_script_runners",
    "serving_guard_script_runner_paths",
    "serving_guard_system_script_shells",
    "serving_guard_modelcar_commands",
    "serving_guard_credential_dir_in_path",
    "serving_guard_model_path_with_dot_segments",
]


@pytest.fixture(scope="module")
def pack() -> RuleSet:
    return load([read_rules_file(str(PACK))])


def test_pack_passes_the_checker(sysdig: Sysdig) -> None:
    report = check_files([str(PACK)], sysdig, require_sysdig=True, run_falco=False)
    assert [p.format() for p in report.problems] == []
    assert report.exit_code is ExitCode.OK
    assert [v.compiled for v in report.verdicts] == [True] * 8


def test_pack_defines_exactly_the_fixed_rule_names(pack: RuleSet) -> None:
    assert list(pack.expanded) == RULE_NAMES
    assert all(rule.enabled for rule in pack.expanded.values())


def test_tuning_points_exist(pack: RuleSet) -> None:
    for name in TUNING_POINTS:
        assert name in pack.lists or name in pack.macros, name


def test_house_rules(pack: RuleSet) -> None:
    for rule in pack.expanded.values():
        assert "serving_guard" in rule.tags
        assert any(MITRE_TECHNIQUE.fullmatch(tag) for tag in rule.tags), rule.name
        assert rule.priority == rule.priority.upper()
        assert set(REQUIRED_OUTPUT_FIELDS) <= set(output_fields(rule.output)), rule.name
        assert event_types(first_conjunct(rule.ast)).restricted, rule.name
    raw_tags = [item.get("tags") for item in read_rules_file(str(PACK)).items if hasattr(item, "get")]
    assert all(tags[0].startswith("maturity_") for tags in raw_tags if tags)
    assert all(name.startswith("serving_guard_") for name in [*pack.macros, *pack.lists])


def test_labels_use_the_bracket_form(pack: RuleSet) -> None:
    text = PACK.read_text(encoding="utf-8")
    assert "k8s.pod.label[serving-guard.io/serving]" in text
    assert "k8s.pod.label.serving-guard.io" not in text
    scope = pack.macros["serving_guard_scope"].ast
    assert scope is not None
    assert any(
        c.field.name == "k8s.pod.label" and c.field.arg == "serving-guard.io/serving" for c in checks(scope)
    )


def test_pack_with_the_capture_scope_override_loads(sysdig: Sysdig) -> None:
    report = check_files([str(PACK), str(SCOPE_OVERRIDE)], sysdig, require_sysdig=True, run_falco=False)
    assert report.errors == []
    # Retargeting the scope leaves the image list unused, which Falco also only warns about.
    assert [p.message for p in report.warnings] == [
        "list not used by any rule, macro or list (Falco warns LOAD_UNUSED_LIST)"
    ]


def _readme_override_examples() -> list[str]:
    text = README.read_text(encoding="utf-8")
    return [block for block in re.findall(r"```yaml\n(.*?)```", text, re.S) if "override:" in block]


def test_readme_has_an_override_example_for_every_tuning_point() -> None:
    blocks = _readme_override_examples()
    for name in TUNING_POINTS:
        assert any(re.search(rf"- (macro|list): {name}\n", block) for block in blocks), name


@pytest.mark.parametrize("index", range(len(_readme_override_examples())))
def test_readme_override_example_loads_with_the_pack(sysdig: Sysdig, tmp_path: Path, index: int) -> None:
    example = tmp_path / "override.yaml"
    example.write_text(_readme_override_examples()[index])
    report = check_files([str(PACK), str(example)], sysdig, require_sysdig=True, run_falco=False)
    assert [p.format() for p in report.errors] == []
