"""Every evasion case `rules test` evaluates on the user's rules (and tests/rules/test_evasions.py on
the shipped pack): the audits' and reviews' evasions and false positives, each on the nearest recorded
action rewritten the way the attacker (or the cluster) changes it."""

from __future__ import annotations

from responder.rulespack.derived import DerivedCase
from responder.rulespack.evasions_exec import exec_cases
from responder.rulespack.evasions_files import file_cases
from responder.rulespack.evasions_keywords import keyword_cases
from responder.rulespack.evasions_lists import list_cases
from responder.rulespack.evasions_net import net_cases
from responder.rulespack.expand import RuleSet, load_paths
from responder.rulespack.paths import default_pack


def evasion_cases(loaded: RuleSet | None = None) -> tuple[DerivedCase, ...]:
    """Built per call (the tables are code, the cases immutable): ids are unique. Last, one case per
    item of the shipped pack's detection lists (evasions_lists) and one per keyword of its macros that
    are keyword lists, options, applet spellings, pip globs or dotted paths (evasions_keywords).
    ``loaded``: the rules `rules test` runs (the pack and the user's files): the model dirs they add
    get the model dir cases too."""
    pack = load_paths([str(default_pack())])  # loaded once for both
    cases = (*exec_cases(), *file_cases(), *net_cases(), *list_cases(pack, loaded), *keyword_cases(pack))
    ids = [c.id for c in cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"duplicate evasion case ids: {', '.join(duplicates)}")
    return cases
