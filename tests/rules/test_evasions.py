"""Evasions and false positives found by the audits, each on a recorded action rewritten the way the
attacker (or the cluster) changes it. The cases are defined in responder/rulespack/evasions_*.py,
which `serving-guard rules test` also evaluates on the user's rules; here every case holds on the
shipped pack (with the captures' scope override), and every derivation shows what it means to (its
witnesses, which `rules test` trusts).

Below the cases: the checks that are no derived case (the pack's own lists, the scapedit round trip,
a condition changed for a young container, the README's GKE recipe).
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import pytest

from responder.rulespack import scapedit as se
from responder.rulespack.condition import Value, checks
from responder.rulespack.derived import Conditions, DerivedCase, judge, write_derived
from responder.rulespack.derived_suite import conditions_of
from responder.rulespack.evasion_cases import evasion_cases
from responder.rulespack.evasions_common import EGRESS, SHELL
from responder.rulespack.evasions_exec import TRITON_STUB
from responder.rulespack.evttypes import event_types
from responder.rulespack.expand import load_paths
from responder.rulespack.recorded import (
    EXECVE,
    PYTHON_E1,
    PYTHON_E2,
    SH_A1,
    SH_A4_PTY,
    CaptureLibrary,
    as_pid_1,
    tcp_to,
    udp_to,
)
from responder.rulespack.sysdig import Sysdig
from responder.rulespack.sysdig_compat import to_sysdig

from .conftest import CAPTURES, PACK, README, SCOPE_OVERRIDE

pytestmark = pytest.mark.timeout(120)

CASES = evasion_cases()


@pytest.fixture(scope="module")
def library() -> CaptureLibrary:
    return CaptureLibrary(CAPTURES)


@pytest.fixture(scope="module")
def pack_conditions() -> Conditions:
    return conditions_of(load_paths([str(PACK), str(SCOPE_OVERRIDE)]))


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_evasion_case_holds_on_the_pack(
    sysdig: Sysdig, library: CaptureLibrary, pack_conditions: Conditions, tmp_path: Path, case: DerivedCase
) -> None:
    capture = write_derived(library, case, tmp_path / case.recorded.capture)
    verdict = judge(sysdig, library, case, pack_conditions, capture, check_witness=True)
    assert verdict.problems == ()


def test_every_case_names_a_rule_of_the_pack(pack_conditions: Conditions) -> None:
    assert {rule for case in CASES for rule in case.rules} == set(pack_conditions.enabled)
    assert len(CASES) >= 766


def test_rewriting_an_event_as_recorded_gives_the_recording_back(tmp_path: Path) -> None:
    # Every block is re-encoded exactly: a derived capture differs only where an event was changed.
    for capture in ("sg-a-shell.scap", "sg-e-egress.scap"):
        events = se.read_events(CAPTURES / capture)
        copy = tmp_path / capture
        se.rewrite(CAPTURES / capture, copy, {e.index: list(e.params) for e in events[:: len(events) // 50]})
        assert copy.read_bytes() == (CAPTURES / capture).read_bytes()


@pytest.mark.parametrize("damage", ["truncated", "not-a-capture"])
def test_a_damaged_capture_is_named_not_a_traceback(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "bad.scap"
    data = (CAPTURES / "sg-h-creds.scap").read_bytes()
    path.write_bytes(data[: len(data) - 7] if damage == "truncated" else b"hello")
    with pytest.raises(se.CaptureFormatError, match=re.escape(str(path))):
        se.read_events(path)


def test_unconnected_udp_includes_sendmmsg() -> None:
    # No capture holds a sendmmsg (and sysdig 0.29's sendmmsg events carry no address): the rule is
    # checked to select the event type; `rules check` compiles it.
    ruleset = load_paths([str(PACK)])
    assert {"connect", "sendto", "sendmsg", "sendmmsg"} <= event_types(ruleset.expanded[EGRESS].ast).names


def test_every_model_dir_is_spelled_out_for_proc_paths() -> None:
    """The mirror macro holds every default model dir (the checker holds overrides to it too)."""
    ruleset = load_paths([str(PACK)])
    mirror = ruleset.macros["serving_guard_model_dir_through_proc"]
    assert mirror.ast is not None
    tested = {c.value.text for c in checks(mirror.ast) if isinstance(c.value, Value)}
    assert tested == {f"*/proc/*/root{d}*" for d in ruleset.list_items["serving_guard_model_dirs"]}


def test_the_entrypoint_exception_holds_only_while_the_container_starts() -> None:
    ruleset = load_paths([str(PACK)])
    rule = ruleset.rules[SHELL]
    [entrypoint] = [e for e in rule.exceptions if e.name == "container_entrypoint"]
    assert (entrypoint.fields, entrypoint.comps, entrypoint.values) == (
        ("proc.vpid", "container.duration", "proc.tty"),
        ("=", "<", "="),
        (("1", "30000000000", "0"),),
    )


@pytest.mark.parametrize(("on_a_terminal", "fires"), [(True, True), (False, False)], ids=["tty", "no-tty"])
def test_a_young_pid_1_shell_on_a_terminal_is_a_shell(
    sysdig: Sysdig,
    library: CaptureLibrary,
    pack_conditions: Conditions,
    tmp_path: Path,
    on_a_terminal: bool,
    fires: bool,
) -> None:
    """`kubectl debug -it POD --image=busybox -- sh` runs the shell as PID 1 of an ephemeral container
    seconds old, on a terminal. 2022 libsinsp has no container.duration (its stand-in is never true),
    so here the stand-in is made always true: every container is young. The entrypoint exception
    then holds for a PID-1 shell without a terminal only. (Not a derived case: the condition is
    changed, which `rules test` does not do to the user's rules.)"""
    shell = pack_conditions.enabled[SHELL]
    young = shell.replace("(proc.vpid = 1 and evt.num = 0 and", "(proc.vpid = 1 and evt.num > 0 and")
    assert young != shell
    recorded = SH_A4_PTY if on_a_terminal else SH_A1
    path = tmp_path / recorded.capture
    se.rewrite(CAPTURES / recorded.capture, path, {**recorded.exec(library), **as_pid_1(library, recorded)})
    thread = f"{EXECVE} and {recorded.thread(library)}"
    [event] = sysdig.read_capture(str(path), thread, ["proc.vpid", "proc.tty", "proc.name"])
    assert (event["proc.vpid"], event["proc.name"], event["proc.tty"] != 0) == (1, "sh", fires)
    assert bool(sysdig.read_capture(str(path), f"({thread}) and ({young})", ["evt.num"])) is fires


def test_programs_without_a_terminal_are_not_shell_sessions(
    sysdig: Sysdig, pack_conditions: Conditions
) -> None:
    """Every recorded program started without a terminal that is no shell stays quiet under rule 3."""
    fired = sysdig.read_capture(
        str(CAPTURES / SH_A1.capture), f"({EXECVE}) and ({pack_conditions.enabled[SHELL]})", ["proc.name"]
    )
    assert {e["proc.name"] for e in fired} == {"sh", "bash", "busybox"}  # a1-a4's shells


def test_the_triton_stub_exception_spells_out_every_model_dir() -> None:
    """Like the /proc mirror: the stub's model argument is pinned to each default model dir."""
    ruleset = load_paths([str(PACK)])
    macro = ruleset.macros["serving_guard_triton_python_stub_launch"]
    assert macro.ast is not None
    pinned = {
        c.value.text.removeprefix(f"-c  exec {TRITON_STUB} ")
        for c in checks(macro.ast)
        if isinstance(c.value, Value) and c.value.text.startswith(f"-c  exec {TRITON_STUB} /")
    }
    assert pinned == {f"{d}/*" for d in ruleset.list_items["serving_guard_model_dirs"]}


@pytest.mark.parametrize(("proto", "port", "alerts"), [("udp", 53, False), ("tcp", 80, True)])
def test_the_readme_gke_cloud_dns_recipe_allows_dns_to_the_metadata_server(
    sysdig: Sysdig, library: CaptureLibrary, tmp_path: Path, proto: str, port: int, alerts: bool
) -> None:
    """GKE with Cloud DNS resolves through the metadata address; the README's recipe (replace
    serving_guard_node_dns) quiets DNS to it and keeps its API alerting."""
    readme = README.read_text(encoding="utf-8")
    [recipe] = [
        block
        for block in re.findall(r"```yaml\n(.*?)```", readme, re.S)
        if block.startswith("- macro: serving_guard_node_dns\n")
    ]
    tuning = tmp_path / "gke.yaml"
    tuning.write_text(recipe, encoding="utf-8")
    ruleset = load_paths([str(PACK), str(SCOPE_OVERRIDE), str(tuning)])
    egress = to_sysdig(ruleset.expanded[EGRESS].ast).text
    recorded, rewrite = (PYTHON_E2, udp_to) if proto == "udp" else (PYTHON_E1, tcp_to)
    path = tmp_path / recorded.capture
    se.rewrite(CAPTURES / recorded.capture, path, rewrite(library, "169.254.169.254", port))
    fired = sysdig.read_capture(str(path), f"({recorded.thread(library)}) and ({egress})", ["evt.num"])
    assert bool(fired) is alerts, fired


def test_every_default_model_dirs_parent_is_watched() -> None:
    ruleset = load_paths([str(PACK)])
    ancestors = set(ruleset.list_items["serving_guard_model_dir_ancestors"])
    parents = {
        str(parent)
        for model_dir in ruleset.list_items["serving_guard_model_dirs"]
        for parent in PurePosixPath(model_dir).parents
        if str(parent) != "/"
    }
    assert parents == ancestors
