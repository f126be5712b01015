"""Review of 1aeb985, M1: every item of the pack's detection lists is a derived case of its own (built
from the shipped pack), so a tuning that drops or excepts one item fails on that item, by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from responder.rulespack.evasion_cases import evasion_cases
from responder.rulespack.evasions_lists import list_cases, read_pack_lists
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
        c.id for c in list_cases(pack)
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
