"""Case ids are typed in `rules test --accept NAME`: none starts or ends in whitespace. netcat's `-e `
keyword (the rule matches `-e ` with its space) named its case `...[-e ]`, which a shell or a copy
loses; the space at a keyword's ends is spelled `<space>`, and the old id still accepts the case."""

from __future__ import annotations

from pathlib import Path

import pytest

from responder.cli import main
from responder.errors import UserError
from responder.rulespack.accept import check_names, known_names, renamed
from responder.rulespack.evasion_cases import evasion_cases
from responder.rulespack.evasions_common import visible_edges
from responder.rulespack.examples import load_examples
from responder.rulespack.expand import load_paths
from responder.rulespack.sysdig import Sysdig

from .conftest import EXAMPLES, PACK

MACRO = "serving_guard_reverse_shell_command"
GROUP = f"{MACRO}: each keyword on a command line is a reverse shell"
NETCAT_E = f"{GROUP}[-e<space>]"
NETCAT_C = f"{GROUP}[-c<space>]"
# What else a tuning without netcat's `-e ` and `-c ` silences: the other cases of netcat with -e.
NETCAT_E_CASES = (
    "serving_guard_netcat_binaries: each item with -e is a reverse shell",
    "a reverse-shell command line is a reverse shell at its start[nc -e as recorded]",
)


def test_no_case_id_starts_or_ends_in_whitespace() -> None:
    cases = evasion_cases()
    names = [case.id for case in cases] + [case.group for case in cases]
    assert [name for name in names if name != name.strip()] == []
    labels = [case.id[len(case.group) + 1 : -1] for case in cases]
    assert [label for label in labels if label != label.strip()] == []


def test_the_keywords_with_a_space_at_an_end_are_spelled_out() -> None:
    ids = {case.id for case in evasion_cases() if case.group == GROUP}
    assert {NETCAT_E, NETCAT_C} <= ids
    assert f"{GROUP}[/dev/tcp/]" in ids  # a keyword without one keeps its id
    assert visible_edges(" -c\t") == "<space>-c<U+0009>"


def test_the_old_id_of_a_spelled_out_case_is_taken_and_a_lost_space_is_not() -> None:
    cases = evasion_cases()
    assert renamed([f"{GROUP}[-e ]", NETCAT_E, f"{GROUP}[-e]", GROUP], cases) == [
        NETCAT_E,
        NETCAT_E,
        f"{GROUP}[-e]",
        GROUP,
    ]
    with pytest.raises(UserError, match=r"--accept '.*\[-e\]': no evasion group, evasion case"):
        check_names([f"{GROUP}[-e]"], known_names(load_examples(EXAMPLES), cases))


@pytest.mark.timeout(300)
def test_accept_takes_the_spelled_out_id_and_the_old_one(
    sysdig: Sysdig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    condition = load_paths([str(PACK)]).macros[MACRO].condition
    clause = 'proc.args contains "-e " or proc.args contains "-c " or '
    assert clause in condition
    condition = " ".join(condition.replace(clause, "").split())
    tuning = tmp_path / "no-netcat-e.yaml"
    tuning.write_text(
        f"- macro: {MACRO}\n  condition: >\n    {condition}\n  override:\n    condition: replace\n"
    )
    args = ["rules", "test", "--override", str(tuning), "--accept", NETCAT_E, "--accept", f"{GROUP}[-c ]"]
    for name in NETCAT_E_CASES:
        args += ["--accept", name]
    code = main(args)
    out = capsys.readouterr().out
    assert code == 0, out[-4000:]
    accepted = [line.strip() for line in out.splitlines() if line.startswith("  accepted: evasion ")]
    assert [line for line in accepted if line.startswith(f"accepted: evasion {GROUP}[")] == [
        f"accepted: evasion {NETCAT_E}: Reverse shell or interpreter one-liner in serving pod must fire"
        f" exactly 1x, fired 0x; your files change Reverse shell or interpreter one-liner in serving pod at"
        f" {tuning}:2 (macro {MACRO})",
        f"accepted: evasion {NETCAT_C}: Reverse shell or interpreter one-liner in serving pod must fire"
        f" exactly 1x, fired 0x; your files change Reverse shell or interpreter one-liner in serving pod at"
        f" {tuning}:2 (macro {MACRO})",
    ]
    assert "nothing it names failed" not in out
