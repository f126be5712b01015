"""A user's tuning file loaded after the pack: a mistake in it is reported at the user's file and line,
not at the pack's lines that the expansion put it into (review 70, finding 4); and a pack list or macro
defined again without `override`, which Falco applies by dropping everything the pack put in it, is an
error (finding 11)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from responder.rulespack.check import ExitCode, check_files
from responder.rulespack.expand import load_paths
from responder.rulespack.problems import Problem
from responder.rulespack.sysdig import Sysdig

from .conftest import PACK

pytestmark = pytest.mark.timeout(120)


def _check(sysdig: Sysdig | None, tmp_path: Path, text: str) -> tuple[Path, list[Problem]]:
    user = tmp_path / "zz-overrides.yaml"
    user.write_text(text)
    report = check_files([str(PACK), str(user)], sysdig, require_sysdig=sysdig is not None, run_falco=False)
    assert report.exit_code is ExitCode.ERRORS
    return user, report.errors


def test_a_typo_appended_to_the_scope_is_reported_at_the_users_line(sysdig: Sysdig, tmp_path: Path) -> None:
    # k8s.ns.nam is also the start of the pack's k8s.ns.name: only a whole token is its place.
    user, errors = _check(
        sysdig,
        tmp_path,
        "- macro: serving_guard_scope\n  condition: or k8s.ns.nam in (ml-serving)\n  override:\n"
        "    condition: append\n",
    )
    # Every rule expands the scope: one error, naming how many rules it affects.
    [error] = errors
    assert (error.file, error.line, error.token) == (str(user), 2, "k8s.ns.nam")
    assert "(it affects 8 rules:" in error.message


@pytest.mark.parametrize(
    ("items", "token", "message"),
    [
        ("[10.0.0.0/33, 100.64.0.0/10]", "10.0.0.0/33", "invalid netmask 33"),
        ("[100.64.0.0/10, example.com]", "example.com", "unrecognized IP network example.com"),
    ],
)
def test_a_bad_item_appended_to_a_pack_list_is_reported_at_the_users_line(
    sysdig: Sysdig, tmp_path: Path, items: str, token: str, message: str
) -> None:
    user, errors = _check(
        sysdig,
        tmp_path,
        "# my cluster's ranges\n- list: serving_guard_allowed_egress_networks\n"
        f"  items: {items}\n  override:\n    items: append\n",
    )
    [error] = errors
    assert (error.file, error.line, error.token) == (str(user), 3, token)
    assert message in error.message
    assert error.item == "rule 'Anomalous egress from serving pod'"


def test_the_latest_append_is_blamed_first(sysdig: Sysdig, tmp_path: Path) -> None:
    """Two appends to the same list: the token is found in the second one, where it is written."""
    user, errors = _check(
        sysdig,
        tmp_path,
        "- list: serving_guard_allowed_egress_networks\n  items: [100.64.0.0/10]\n  override:\n"
        "    items: append\n"
        "- list: serving_guard_allowed_egress_networks\n  items: [172.31.0.0/40]\n  override:\n"
        "    items: append\n",
    )
    [error] = errors
    assert (error.file, error.line, error.token) == (str(user), 6, "172.31.0.0/40")


def test_a_bad_field_in_an_appended_exception_is_reported_at_the_users_file(
    sysdig: Sysdig, tmp_path: Path
) -> None:
    user, errors = _check(
        sysdig,
        tmp_path,
        "- rule: Credential access in serving pod\n  exceptions:\n    - name: vault_agent\n"
        '      fields: [proc.nme]\n      comps: ["="]\n      values:\n        - [vault-agent]\n'
        "  override:\n    exceptions: append\n",
    )
    [error] = errors
    assert (error.file, error.line, error.token) == (str(user), 4, "proc.nme")


def test_a_mistake_in_the_pack_itself_is_still_reported_at_the_pack(sysdig: Sysdig, tmp_path: Path) -> None:
    """The user's file only names the pack's list; the bad item is the pack's (a copy of the pack with
    a broken item stands in for it)."""
    broken_pack = tmp_path / "pack.yaml"
    text = PACK.read_text(encoding="utf-8")
    broken_pack.write_text(text.replace("items: [10.0.0.0/8,", "items: [10.0.0.0/88,", 1))
    user = tmp_path / "zz-overrides.yaml"
    user.write_text(
        "- list: serving_guard_allowed_egress_ports\n  items: [8443]\n  override:\n    items: append\n"
    )
    report = check_files([str(broken_pack), str(user)], sysdig, require_sysdig=True, run_falco=False)
    [error] = report.errors
    line = next(n for n, row in enumerate(text.splitlines(), 1) if "items: [10.0.0.0/8," in row)
    assert (error.file, error.line, error.token) == (str(broken_pack), line, "10.0.0.0/88")


@pytest.mark.parametrize(
    ("text", "kind", "key"),
    [
        ("- list: serving_guard_model_dirs\n  items: [/var/lib/models]\n", "list", "items"),
        ("- macro: serving_guard_scope\n  condition: (k8s.ns.name = ml)\n", "macro", "condition"),
    ],
)
def test_redefining_a_pack_list_or_macro_without_override_is_an_error(
    tmp_path: Path, text: str, kind: str, key: str
) -> None:
    user, errors = _check(None, tmp_path, text)
    [error] = [e for e in errors if "redefines" in e.message]
    assert (error.file, error.line) == (str(user), 1)
    assert f"redefines the {kind} from {PACK}:" in error.message
    assert f"'override: {{{key}: append}}'" in error.message
    assert f"'override: {{{key}: replace}}'" in error.message


def test_redefining_a_users_own_list_in_another_file_stays_a_warning(tmp_path: Path) -> None:
    first = tmp_path / "a.yaml"
    first.write_text("- list: my_models\n  items: [/srv/models]\n")
    second = tmp_path / "b.yaml"
    second.write_text("- list: my_models\n  items: [/opt/models]\n")
    report = check_files([str(PACK), str(first), str(second)], None, require_sysdig=False, run_falco=False)
    assert report.errors == []
    assert [(p.file, p.line) for p in report.warnings if "redefines" in p.message] == [(str(second), 1)]


def test_replacing_a_pack_list_with_override_is_not_an_error(tmp_path: Path) -> None:
    user = tmp_path / "zz-overrides.yaml"
    user.write_text(
        "- list: serving_guard_download_tools\n  items: [curl, wget]\n  override:\n    items: replace\n"
    )
    report = check_files([str(PACK), str(user)], None, require_sysdig=False, run_falco=False)
    assert report.errors == []
    # ... but what it leaves out is said at the user's line: those tools are matched no more (a
    # tuning that silenced most downloads passed `rules check` and `rules test` without a word).
    [dropped] = [w for w in report.warnings if "without" in w.message]
    assert (dropped.file, dropped.line, dropped.item) == (str(user), 1, "list 'serving_guard_download_tools'")
    assert dropped.message.startswith("replaces the list from ")
    assert (
        "items (pip, pip3, pipx, uv, conda, mamba, micromamba, apt and 44 more): those are matched no more"
        in (dropped.message)
    )
    # Keeping every item the pack put in it (and adding some) drops nothing: no warning.
    pack_items = next(
        i for i in load_paths([str(PACK)]).lists.values() if i.name == "serving_guard_download_tools"
    )
    user.write_text(
        "- list: serving_guard_download_tools\n  items: ["
        + ", ".join([*pack_items.items, "mytool"])
        + "]\n  override:\n    items: replace\n"
    )
    report = check_files([str(PACK), str(user)], None, require_sysdig=False, run_falco=False)
    assert not [w for w in report.warnings if "without" in w.message]


def test_a_model_dir_appended_without_its_proc_form_is_reported_at_the_users_line(tmp_path: Path) -> None:
    """serving_guard_model_dir_through_proc spells out every model dir: an append to the list alone is
    reported where the user wrote the item, with the clause to append to the macro."""
    user, errors = _check(
        None,
        tmp_path,
        "- list: serving_guard_model_dirs\n  items: [/var/lib/models]\n  override:\n    items: append\n",
    )
    # (The Triton stub macro's glob is missing too: tested below.)
    [error] = [e for e in errors if e.item == "macro 'serving_guard_model_dir_through_proc'"]
    assert (error.file, error.line, error.token) == (str(user), 2, "/var/lib/models")
    assert "'evt.args glob \"*/proc/*/root/var/lib/models*\"'" in error.message


def test_a_model_dir_appended_with_its_proc_form_passes(tmp_path: Path) -> None:
    user = tmp_path / "zz-overrides.yaml"
    user.write_text(
        "- list: serving_guard_model_dirs\n  items: [/var/lib/models]\n  override:\n    items: append\n"
        "- list: serving_guard_model_dir_ancestors\n  items: [/var, /var/lib]\n"
        "  override:\n    items: append\n"
        "- macro: serving_guard_model_dir_through_proc\n"
        '  condition: or evt.args glob "*/proc/*/root/var/lib/models*"\n'
        "  override:\n    condition: append\n"
    )
    report = check_files([str(PACK), str(user)], None, require_sysdig=False, run_falco=False)
    assert [e.item for e in report.errors] == ["macro 'serving_guard_triton_python_stub_launch'"]


STUB_GLOB = '"-c  exec /opt/tritonserver/backends/python/triton_python_backend_stub {}/*"'
# The pack's stub macro with /workspace/model_repository added (a replacement, as rules/README.md says).
STUB_MACRO = PACK.read_text().split("- macro: serving_guard_triton_python_stub_launch\n")[1].split("\n\n")[0]
PROC_MIRROR = (
    "- macro: serving_guard_model_dir_through_proc\n"
    '  condition: or evt.args glob "*/proc/*/root/workspace/model_repository*"\n'
    "  override:\n    condition: append\n"
    # And its '..' spelling (rules check requires both mirrors of a model dir).
    "- macro: serving_guard_model_path_with_dot_segments\n"
    '  condition: or (evt.args contains ".." and evt.args glob "*..*/model_repository*")\n'
    "  override:\n    condition: append\n"
)
APPENDED_DIR = (
    "- list: serving_guard_model_dirs\n  items: [/workspace/model_repository]\n"
    "  override:\n    items: append\n"
    "- list: serving_guard_model_dir_ancestors\n  items: [/workspace]\n  override:\n    items: append\n"
)


def test_a_model_dir_appended_without_its_parents_is_reported_at_the_users_line(tmp_path: Path) -> None:
    """The tampering rule watches every directory above a model dir for a rename or a link put in
    its place (the model dir swapped whole): a model dir appended without its parents in that list
    is an error at the user's item, naming the parents missing."""
    user, errors = _check(
        None,
        tmp_path,
        "- list: serving_guard_model_dirs\n  items: [/srv/ml/models]\n  override:\n    items: append\n",
    )
    [error] = [e for e in errors if e.item == "list 'serving_guard_model_dirs'"]
    assert (error.file, error.line, error.token) == (str(user), 2, "/srv/ml/models")
    assert "list serving_guard_model_dir_ancestors lacks '/srv/ml', '/srv'" in error.message


def test_a_model_dir_appended_without_its_triton_stub_glob_is_reported_at_the_users_line(
    tmp_path: Path,
) -> None:
    """Review of the fixes, finding 5: serving_guard_triton_python_stub_launch pins the stub's model
    argument to each model dir. A dir appended to the list (and to the /proc mirror) but not to the
    stub macro is an error at the user's item: every Python-backend model from it would alert."""
    user, errors = _check(None, tmp_path, APPENDED_DIR + PROC_MIRROR)
    [error] = errors
    assert (error.file, error.line, error.token) == (str(user), 2, "/workspace/model_repository")
    assert error.item == "macro 'serving_guard_triton_python_stub_launch'"
    assert f"'proc.args glob {STUB_GLOB.format('/workspace/model_repository')}'" in error.message
    assert "override condition: replace" in error.message


def test_a_model_dir_with_its_triton_stub_glob_passes_and_a_glob_without_a_dir_is_reported(
    tmp_path: Path,
) -> None:
    glob = STUB_GLOB.format("/workspace/model_repository")
    replaced = STUB_MACRO.replace(
        "\n              and not proc.args contains",
        f"\n                   or proc.args glob {glob})\n              and not proc.args contains",
        1,
    ).replace('/home/bentoml/bento/models/*")\n', '/home/bentoml/bento/models/*"\n', 1)
    assert replaced != STUB_MACRO
    macro = (
        "- macro: serving_guard_triton_python_stub_launch\n"
        + replaced
        + "\n  override:\n    condition: replace\n"
    )
    user = tmp_path / "zz-overrides.yaml"
    user.write_text(APPENDED_DIR + PROC_MIRROR + macro)
    report = check_files([str(PACK), str(user)], None, require_sysdig=False, run_falco=False)
    assert report.errors == []
    # The same macro without the list item: the glob pins a dir the list does not have.
    user.write_text(macro)
    user, errors = _check(None, tmp_path, macro)
    [error] = errors
    assert (
        error.file == str(user)
        and error.line
        == macro.splitlines().index(
            next(line for line in macro.splitlines() if "/workspace/model_repository" in line)
        )
        + 1
    )
    assert "list serving_guard_model_dirs has no item for it" in error.message


def test_a_model_dir_list_replaced_short_is_one_error_per_mirroring_macro(tmp_path: Path) -> None:
    """A list replaced (or redefined) without the pack's model dirs leaves each of the pack's macros
    that mirror it testing every dir dropped: one error per macro naming a few and the count, and
    where the list was loaded (the user's line), not one error per dir (13 errors for one mistake)."""
    user, errors = _check(
        None,
        tmp_path,
        "- list: serving_guard_model_dirs\n  items: [/models, /mnt/models]\n"
        "  override:\n    items: replace\n",
    )
    mirrors = [e for e in errors if "has no item" in e.message]
    assert sorted(e.item or "" for e in mirrors) == [
        "macro 'serving_guard_model_dir_through_proc'",
        "macro 'serving_guard_triton_python_stub_launch'",
    ]
    for error in mirrors:
        assert error.file == str(PACK)
        assert "and 3 more but list serving_guard_model_dirs has no items for them" in error.message
        assert f"(the list as loaded ends at {user}:1): keep them the same" in error.message


def test_a_pack_macro_replaced_with_a_users_earlier_macro_compiles(tmp_path: Path) -> None:
    """The replaced macro keeps the pack's place but sees the user's macro defined before the replace
    (Falco resolves by visibility, not compile order): the rule using it is there, not silently gone
    (rules check said ok with 7 of 8 rules compiled, and rules test said the rule was not defined)."""
    user = tmp_path / "zz-overrides.yaml"
    user.write_text(
        "- macro: my_download_command\n  condition: proc.name = my-fetch\n"
        "- macro: serving_guard_download_command\n  condition: my_download_command\n"
        "  override:\n    condition: replace\n"
    )
    report = check_files([str(PACK), str(user)], None, require_sysdig=False, run_falco=False)
    assert report.errors == []
    expanded = report.ruleset.expanded
    assert "Runtime download or package install in serving pod" in expanded
    assert len(expanded) == len(report.ruleset.rules)
    assert "my-fetch" in repr(expanded["Runtime download or package install in serving pod"].ast)


def test_a_chain_of_a_thousand_forward_macros_is_one_error_not_a_traceback(tmp_path: Path) -> None:
    """Each macro replaced to name the one defined after it: expanding the first goes a thousand
    deep. Said once, at the first macro; nothing is dropped unsaid."""
    chain = 1000
    text = "".join(f"- macro: m{n}\n  condition: proc.name = a{n}\n" for n in range(chain + 1))
    text += "".join(
        f"- macro: m{n}\n  condition: m{n + 1}\n  override:\n    condition: replace\n" for n in range(chain)
    )
    user = tmp_path / "chain.yaml"
    user.write_text(text)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(600)  # a session may have raised it: the chain overflows this one
    try:
        report = check_files([str(PACK), str(user)], None, require_sysdig=False, run_falco=False)
    finally:
        sys.setrecursionlimit(limit)
    deep = [e for e in report.errors if "nested too deeply" in e.message]
    assert len(deep) == 1 and deep[0].file == str(user) and deep[0].item == "macro 'm0'"


def test_a_loop_closed_by_a_users_replace_is_said_at_the_users_line(tmp_path: Path) -> None:
    """The pack's serving_guard_inline_code names serving_guard_python; a user's replace makes
    serving_guard_python name serving_guard_inline_code back. The loop was said where it was met
    (the pack's line naming serving_guard_python), which the user cannot change: it is said at the
    replace that closed it."""
    user = tmp_path / "zz-overrides.yaml"
    user.write_text(
        "- macro: serving_guard_python\n  condition: serving_guard_inline_code\n"
        "  override:\n    condition: replace\n"
    )
    report = check_files([str(PACK), str(user)], None, require_sysdig=False, run_falco=False)
    loops = [e for e in report.errors if "in a loop" in e.message]
    assert [(e.file, e.line, e.item, e.token) for e in loops] == [
        (str(user), 2, "macro 'serving_guard_python'", "serving_guard_inline_code")
    ]
    assert "(serving_guard_python -> serving_guard_inline_code -> serving_guard_python)" in loops[0].message


def test_a_loop_is_said_at_the_edit_that_closed_it_whatever_else_was_appended_later(tmp_path: Path) -> None:
    """The replace closes the loop; an append to the pack's macro after it names nothing of the loop
    and does not move the error back to the pack's line."""
    user = tmp_path / "zz-overrides.yaml"
    user.write_text(
        "- macro: serving_guard_python\n  condition: serving_guard_inline_code\n"
        "  override:\n    condition: replace\n"
        "- macro: serving_guard_inline_code\n  condition: or proc.name = zz\n"
        "  override:\n    condition: append\n"
    )
    report = check_files([str(PACK), str(user)], None, require_sysdig=False, run_falco=False)
    loops = [(e.file, e.line, e.token) for e in report.errors if "in a loop" in e.message]
    assert loops == [(str(user), 2, "serving_guard_inline_code")]


RULE_OF_LOOP = (
    '- rule: R\n  desc: d\n  condition: evt.type = execve and sg_a\n  output: "x %proc.name"\n'
    "  priority: WARNING\n"
)
LOOPS_CLOSED_BY_APPENDS = {
    # A macro appended to name itself: said at the append (line 8), not at its definition, whose
    # list name holds its name as text.
    "self, by an append": (
        "- list: sg_a_names\n  items: [sh]\n"
        "- macro: sg_a\n  condition: proc.name in (sg_a_names)\n- macro: sg_x\n  condition: proc.name = x\n"
        "- macro: sg_a\n  condition: or (sg_a and sg_x)\n  override:\n    condition: append\n",
        8,
        "sg_a",
    ),
    # Two appends; sg_a_extra holds sg_a as text, not as a token: the closing append is line 12.
    "two appends, a longer name": (
        "- macro: sg_a\n  condition: proc.name = sh\n- macro: sg_a_extra\n  condition: proc.name = zsh\n"
        "- macro: sg_b\n  condition: sg_a_extra\n- macro: sg_a\n  condition: or sg_b\n"
        "  override:\n    condition: append\n- macro: sg_b\n  condition: or sg_a\n"
        "  override:\n    condition: append\n",
        12,
        "sg_a",
    ),
}


@pytest.mark.parametrize(
    ("text", "line", "token"), LOOPS_CLOSED_BY_APPENDS.values(), ids=LOOPS_CLOSED_BY_APPENDS
)
def test_a_loop_closed_by_an_append_is_said_at_that_append(
    tmp_path: Path, text: str, line: int, token: str
) -> None:
    user = tmp_path / "loops.yaml"
    user.write_text(text + RULE_OF_LOOP)
    report = check_files([str(user)], None, require_sysdig=False, run_falco=False)
    loops = [(e.line, e.token) for e in report.errors if "in a loop" in e.message]
    assert loops == [(line, token)]
