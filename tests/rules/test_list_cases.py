"""Review of 1aeb985, M1: every item of the pack's detection lists is a derived case of its own (built
from the shipped pack), so a tuning that drops or excepts one item fails on that item, by name; and
(review-wip-lists M-B) every keyword of the pack's macros that are keyword lists written as conditions."""

from __future__ import annotations

from pathlib import Path

import pytest

from responder.rulespack.condition import parse
from responder.rulespack.evasion_cases import evasion_cases
from responder.rulespack.evasions_common import visible_edges
from responder.rulespack.evasions_keywords import Keyword, PackMacros, keyword_cases, keywords
from responder.rulespack.evasions_lists import list_cases, read_pack_lists
from responder.rulespack.expand import load_paths
from responder.rulespack.sysdig import Sysdig

from .conftest import PACK, failing_cases

pytestmark = pytest.mark.timeout(120)

# The lists whose items make a rule fire (an allow-list's items only quiet one).
DETECTION_LISTS = (
    "serving_guard_download_tools",
    "serving_guard_download_tool_paths",
    "serving_guard_shell_binaries",
    "serving_guard_shell_paths",
    "serving_guard_script_interpreters",
    "serving_guard_netcat_binaries",
    "serving_guard_script_runners",
    "serving_guard_script_runner_paths",
    "serving_guard_writable_exec_dirs",
    "serving_guard_model_extensions",
    "serving_guard_model_dirs",
    "serving_guard_model_dir_ancestors",
    "serving_guard_credential_files",
    "serving_guard_credential_dirs",
    "serving_guard_token_file_names",
)


def _labels(group_prefix: str) -> set[str]:
    return {
        case.id[len(case.group) + 1 : -1]
        for case in evasion_cases()
        if case.group.startswith(f"{group_prefix}:")
    }


@pytest.mark.parametrize("name", DETECTION_LISTS)
def test_every_item_of_a_detection_list_is_a_case(name: str) -> None:
    assert _labels(name) == set(read_pack_lists(PACK).items(name))


def test_every_home_credential_file_is_a_case() -> None:
    paths = read_pack_lists(PACK).endswith_paths("serving_guard_home_credential_file")
    assert "/.aws/credentials" in paths and "/.cache/huggingface/token" in paths
    assert _labels("serving_guard_home_credential_file") == set(paths)


def test_the_cases_come_from_the_pack_given(tmp_path: Path) -> None:
    pack = tmp_path / "pack.yaml"
    pack.write_text(
        PACK.read_text().replace("items: [sh, bash, dash,", "items: [sh, bash, dash, yash,"), encoding="utf-8"
    )
    assert "serving_guard_shell_binaries: each item by name is a shell[yash]" in {
        c.id for c in list_cases(load_paths([str(pack)]))
    }


def test_dropping_the_hugging_face_tools_fails_on_them(sysdig: Sysdig, tmp_path: Path) -> None:
    items = [
        t
        for t in read_pack_lists(PACK).items("serving_guard_download_tools")
        if t not in ("hf", "huggingface-cli")
    ]
    tuning = (
        f"- list: serving_guard_download_tools\n  items: [{', '.join(items)}]\n"
        "  override:\n    items: replace\n"
    )
    group = "serving_guard_download_tools:"
    assert failing_cases(sysdig, tmp_path, tuning, group) == [
        "serving_guard_download_tools: each item by name is a download[hf]",
        "serving_guard_download_tools: each item by name is a download[huggingface-cli]",
    ]


def test_excepting_pickles_fails_on_them(sysdig: Sysdig, tmp_path: Path) -> None:
    tuning = """\
- rule: Unexpected model file load in serving pod
  exceptions:
    - name: pickles
      fields: [fd.name]
      comps: [endswith]
      values: [[.pkl]]
  override:
    exceptions: append
"""
    assert failing_cases(sysdig, tmp_path, tuning, "serving_guard_model_extensions:") == [
        "serving_guard_model_extensions: each item loaded from /tmp is a model load[.pkl]"
    ]


# Review of 0091c3f (review-wip-lists M-B): the macros that are keyword lists written as conditions.
KEYWORD_MACROS = (
    "serving_guard_download_code",
    "serving_guard_reverse_shell_code",
    "serving_guard_reverse_shell_command",
)


def test_a_keyword_is_an_operand_of_an_or_with_what_its_branch_needs() -> None:
    condition = parse(
        "(proc.args contains k1 or proc.args icontains k2"
        " or (proc.args contains need and (proc.args contains k3 or proc.exe in (k4, k5)))"
        " or (m and proc.name in (k6))"
        " or (proc.name in (some_list) and (proc.args contains k7 or proc.args startswith k8)))"
        " and not proc.args contains never"
    )
    assert keywords(condition, {"some_list"}) == [
        Keyword("proc.args", "contains", "k1"),
        Keyword("proc.args", "icontains", "k2"),
        Keyword("proc.args", "contains", "k3", ("need",)),
        Keyword("proc.exe", "in", "k4", ("need",)),
        Keyword("proc.exe", "in", "k5", ("need",)),
        Keyword("proc.name", "in", "k6", (), ("m",)),
        Keyword("proc.args", "contains", "k7", (), ("proc.name in (some_list)",)),
        Keyword("proc.args", "startswith", "k8", (), ("proc.name in (some_list)",)),
    ]


@pytest.mark.parametrize("macro", KEYWORD_MACROS)
def test_every_keyword_case_holds_that_keyword_alone(macro: str) -> None:
    """So a tuning that drops one keyword fails its case: no other keyword of the macro matches."""
    keywords_of = {visible_edges(k.value): k for k in PackMacros(load_paths([str(PACK)])).keywords(macro)}
    cases = [c for c in evasion_cases() if c.group.startswith(f"{macro}:")]
    assert {c.id[len(c.group) + 1 : -1] for c in cases} == set(keywords_of)
    for case in cases:
        args = str(case.witness[0].fields["proc.args"])
        matched = [k for k in keywords_of.values() if (k.value == args if k.op == "in" else k.value in args)]
        assert [visible_edges(k.value) for k in matched] == [case.id[len(case.group) + 1 : -1]], case.id


def test_the_keyword_cases_come_from_the_pack_given(tmp_path: Path) -> None:
    pack = tmp_path / "pack.yaml"
    pack.write_text(
        PACK.read_text().replace(
            "or proc.args contains httpx", "or proc.args contains httpx or proc.args contains pycurl"
        ),
        encoding="utf-8",
    )
    assert "serving_guard_download_code: each keyword in a python3 -c one-liner is a download[pycurl]" in {
        c.id for c in keyword_cases(load_paths([str(pack)]))
    }


def test_dropping_keywords_fails_on_them(sysdig: Sysdig, tmp_path: Path) -> None:
    macro = "serving_guard_reverse_shell_code"
    condition = PackMacros(load_paths([str(PACK)])).ruleset.macros[macro].condition
    for clause in ("or proc.cmdline contains fsockopen", 'or proc.cmdline contains "spawn("'):
        assert clause in condition
        condition = condition.replace(clause, "")
    condition = " ".join(condition.split())
    tuning = f"- macro: {macro}\n  condition: >\n    {condition}\n  override:\n    condition: replace\n"
    group = f"{macro}:"
    assert failing_cases(sysdig, tmp_path, tuning, group) == [
        f"{macro}: each keyword in a python3 -c one-liner is a reverse shell[fsockopen]",
        f"{macro}: each keyword in a python3 -c one-liner is a reverse shell[spawn(]",
    ]


# Pack macros with several substring operands that have no keyword cases, and why.
NOT_ENUMERATED = {
    "serving_guard_loopback_code": "an allow-list: dropping a loopback URL makes more alerts, not fewer",
    "serving_guard_credential_dir_in_path": "serving_guard_credential_dirs' items match the same paths",
}


def test_every_macro_of_substring_keywords_is_enumerated_or_said_why_not() -> None:
    """A keyword macro added to the pack is noticed: it gets cases, or a reason here."""
    ruleset = load_paths([str(PACK)])
    several = {
        name
        for name, macro in ruleset.macros.items()
        if sum(
            k.op in ("contains", "icontains") for k in keywords(parse(macro.condition), ruleset.list_items)
        )
        >= 3
    }
    enumerated = {case.group.split(":")[0] for case in keyword_cases(load_paths([str(PACK)]))}
    assert several - set(NOT_ENUMERATED) <= enumerated
    assert set(NOT_ENUMERATED) <= several
