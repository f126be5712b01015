"""Every tuning recipe of rules/README.md passes `serving-guard rules test --override <recipe>`, with
the `--accept` names its text documents (a `sh` block after the recipe) and no other: the docs and the
tool stay consistent. A recipe that opens an attack says so and names what it accepts; a correct one
accepts nothing, or only what the recordings cannot tell apart (their destination inside CGNAT).

Then `--accept` itself: a name that matches nothing is an error before anything runs, and a name
whose cases all held is said."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from responder.cli import main
from responder.rulespack.sysdig import Sysdig

from .conftest import README

pytestmark = pytest.mark.timeout(300)


def _recipes() -> list[tuple[str, list[str]]]:
    """Each ```yaml block of the README's Tuning section, with the --accept names of the ```sh
    block that follows it (before the next recipe)."""
    text = README.read_text(encoding="utf-8")
    tuning = text[text.index("\n## Tuning\n") :]
    tuning = tuning[: tuning.index("\n## ", 1)]
    parts = re.split(r"```yaml\n(.*?)```", tuning, flags=re.S)
    recipes = []
    for block, after in zip(parts[1::2], parts[2::2], strict=True):
        accepts: list[str] = []
        for command in re.findall(r"```sh\n(.*?)```", after, re.S):
            words = shlex.split(command.replace("\\\n", " "))
            if words[:3] == ["serving-guard", "rules", "test"]:
                accepts += [words[i + 1] for i, word in enumerate(words) if word == "--accept"]
        recipes.append((block, accepts))
    return recipes


RECIPES = _recipes()


def test_the_readme_has_its_tuning_recipes() -> None:
    assert len(RECIPES) >= 21
    accepted = {block.split("\n", 1)[0]: accepts for block, accepts in RECIPES if accepts}
    # Only the trade-offs (and the recordings' CGNAT address) are accepted; the rest pass as they are.
    assert sorted(accepted) == [
        "- list: serving_guard_allowed_egress_networks",
        "- list: serving_guard_allowed_egress_ports",
        "- rule: Shell in serving pod",
    ]


@pytest.mark.parametrize(
    ("recipe", "accepts"),
    RECIPES,
    ids=[f"{i:02d}-{b.split(chr(10), 1)[0][2:]}" for i, (b, _) in enumerate(RECIPES)],
)
def test_a_readme_recipe_passes_rules_test(
    sysdig: Sysdig, tmp_path: Path, capsys: pytest.CaptureFixture[str], recipe: str, accepts: list[str]
) -> None:
    tuning = tmp_path / "my-overrides.yaml"
    tuning.write_text(recipe, encoding="utf-8")
    args = ["rules", "test", "--override", str(tuning)]
    for name in accepts:
        args += ["--accept", name]
    code = main(args)
    out = capsys.readouterr().out
    result = out.rstrip().rsplit("\n", 1)[-1]
    assert code == 0, "\n".join(line for line in out.splitlines() if "FAIL" in line or line.startswith("  "))[
        -4000:
    ]
    assert result.startswith("result: ok: every capture expectation, rule example and evasion case held")
    # Every documented acceptance is needed: none is left over from a case that changed.
    assert "nothing it names failed" not in out


def test_an_unknown_accept_name_is_an_error_before_anything_runs(
    sysdig: Sysdig, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["rules", "test", "--accept", "no such case"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "serving-guard: error: --accept 'no such case': no evasion group, evasion case" in captured.err


def test_an_accept_whose_cases_held_is_said_and_the_run_passes(
    sysdig: Sysdig, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["rules", "test", "--accept", "TCP Fast Open is egress"]) == 0
    out = capsys.readouterr().out
    assert "--accept TCP Fast Open is egress: nothing it names failed (the acceptance can go)" in out
    assert out.rstrip().endswith("result: ok: every capture expectation, rule example and evasion case held")
