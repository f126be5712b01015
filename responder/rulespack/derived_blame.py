"""Which items of the user's tuning files make a failed derived case fail, found by ablation: the
case is judged again on the rules loaded without one of the user's items that change the failing
rule (each item alone; every item's cases in one parallel run), then without all of them, and last
without the user's files. An item whose text is in the rule but that silenced nothing (an append to
serving_guard_scope) is not named, and only a case that fails without the user's files too is said to
fail on the rules files before them."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace

from responder.rulespack.derived import CaseVerdict, DerivedCase
from responder.rulespack.expand import RuleSet, load
from responder.rulespack.problems import Problem, Severity
from responder.rulespack.tuning_changes import Change, changes_of

ALONE, TOGETHER, YOUR_FILES, NOT_YOURS = "alone", "together", "your files", "not yours"
LEFT_OPEN = "left open"


@dataclass(frozen=True)
class Blame:
    """Why a case fails on a rule: ALONE (the case holds without any one of ``items``), TOGETHER (it
    holds only without all of them), YOUR_FILES (it holds without the user's files, but leaving out
    ``items`` did not show it: they do not load without them, or another of the user's items does it),
    NOT_YOURS (it fails without the user's files too), LEFT_OPEN (it fails without them too, but
    `rules check` finds the user's files leave open what it tests: ``note``, its error)."""

    how: str
    items: tuple[Change, ...]
    note: str = ""


def rule_of(problem: str, rules: Collection[str], first: Sequence[str]) -> str:
    """The rule a problem is about: each problem starts with the rule's name (the case's own rules
    first, then any loaded rule: a rule that must stay silent need not be the case's)."""
    for rule in (*first, *sorted(rules, key=len, reverse=True)):
        if problem.startswith(f"{rule} "):
            return rule
    return first[0]


def _without(ruleset: RuleSet, items: Collection[tuple[str, int]]) -> RuleSet | None:
    """The rules loaded again without the user's top-level items at (FILE, LINE); None when they
    do not load without them (a later item of the user's builds on it)."""
    files = [
        replace(f, items=[i for i in f.items if (f.path, getattr(i, "line", None)) not in items])
        for f in ruleset.files
    ]
    loaded = load(files)
    if any(p.severity is Severity.ERROR for p in loaded.problems):
        return None
    return loaded


def _without_files(ruleset: RuleSet, paths: Collection[str]) -> RuleSet | None:
    """The rules loaded again without the files at ``paths`` (the user's tuning files)."""
    loaded = load([f for f in ruleset.files if f.path not in paths])
    if any(p.severity is Severity.ERROR for p in loaded.problems):
        return None
    return loaded


def _disabled(ruleset: RuleSet, rule: str) -> bool:
    state = ruleset.rules.get(rule)
    return state is not None and bool(state.disabled_at)


def _holds(verdict: CaseVerdict, rule: str) -> bool:
    return not any(p.startswith(f"{rule} ") for p in verdict.problems)


Key = tuple[str, str]  # (case id, rule)
Batch = tuple[RuleSet, Sequence[DerivedCase]]
# Judges each batch of cases on its rules, all batches in one run (derived_suite's runner); a list
# of verdicts per batch, in order.
Rejudge = Callable[[Sequence[Batch]], Sequence[Sequence[CaseVerdict]]]


def _holding(
    rejudge: Rejudge, failing: Mapping[Key, CaseVerdict], passes: Sequence[tuple[RuleSet | None, list[Key]]]
) -> list[set[Key]]:
    """For each (rules, keys) of an ablation pass: the keys that hold on those rules (none when they
    did not load). One rejudge call for the whole pass, so the runner's pool stays full."""
    loaded = [(rules, keys) for rules, keys in passes if rules is not None]
    batches = [
        (rules, list({failing[k].case.id: failing[k].case for k in keys}.values())) for rules, keys in loaded
    ]
    judged = iter(rejudge(batches) if batches else [])
    holding: list[set[Key]] = []
    for rules, keys in passes:
        if rules is None:
            holding.append(set())
            continue
        verdicts = {v.case.id: v for v in next(judged)}
        holding.append({key for key in keys if _holds(verdicts[key[0]], key[1])})
    return holding


def blame_failures(
    ruleset: RuleSet, user_files: Sequence[str], verdicts: Sequence[CaseVerdict], rejudge: Rejudge
) -> dict[Key, Blame]:
    """(case id, rule) -> Blame, for every failed case whose failing rule the user's files change
    (``verdicts``: the failures to blame, accepted and not-judged ones left out by the caller)."""
    failing: dict[Key, CaseVerdict] = {}
    for verdict in verdicts:
        for problem in verdict.problems:
            rule = rule_of(problem, ruleset.rules, verdict.case.rules)
            failing[(verdict.case.id, rule)] = verdict
    # A disabled rule's failures name the line that disables it: nothing to find by ablation.
    candidates = {
        key: changes_of(ruleset, key[1], user_files) for key in failing if not _disabled(ruleset, key[1])
    }
    candidates = {key: items for key, items in candidates.items() if items}
    if not candidates:
        return {}

    by_item: dict[tuple[str, int], list[Key]] = {}
    for key, changes in candidates.items():
        for change in changes:
            by_item.setdefault(change.item, []).append(key)
    alone = _holding(
        rejudge, failing, [(_without(ruleset, frozenset([item])), keys) for item, keys in by_item.items()]
    )
    culprits: dict[Key, list[Change]] = {}
    for held_at, held in zip(by_item, alone, strict=True):
        for key in held:
            culprits.setdefault(key, []).extend(c for c in candidates[key] if c.item == held_at)
    blamed = {key: Blame(ALONE, tuple(changes)) for key, changes in culprits.items()}
    rest = [key for key in candidates if key not in blamed]
    if rest:
        every = frozenset(item.item for key in rest for item in candidates[key])
        [together] = _holding(rejudge, failing, [(_without(ruleset, every), rest)])
        # "Not your tuning" is said only of a case that fails without the user's files too: leaving out
        # the items that change the rule may not load (a later item of the user's builds on one), or
        # leave in another of the user's items that silences it.
        undecided = [key for key in rest if key not in together]
        yours = (
            _holding(rejudge, failing, [(_without_files(ruleset, user_files), undecided)])[0]
            if undecided
            else set()
        )
        for key in rest:
            how = TOGETHER if key in together else YOUR_FILES if key in yours else NOT_YOURS
            blamed[key] = Blame(how, tuple(candidates[key]))
    return blamed


def left_open(
    blame: Mapping[Key, Blame], verdicts: Sequence[CaseVerdict], problems: Sequence[Problem]
) -> dict[Key, Blame]:
    """``blame`` with each NOT_YOURS made LEFT_OPEN where one of ``problems`` (rules check's errors
    on the user's files) names what the failed case tests: a model dir the user appended without
    its '..' glob fails its case without the user's files too (there it is no model dir at all),
    and "not your tuning" would point away from the append that leaves it open."""
    texts = {
        verdict.case.id: " ".join(
            (verdict.case.id, *verdict.problems, *(expectation.on for expectation in verdict.case.expect))
        )
        for verdict in verdicts
    }
    found = dict(blame)
    for key, said in blame.items():
        if said.how != NOT_YOURS:
            continue
        text = texts.get(key[0], key[0])
        named = [problem for problem in problems if problem.token and problem.token in text]
        if named:
            found[key] = Blame(LEFT_OPEN, said.items, named[0].format())
    return found


def blamed_text(rule: str, blame: Blame | None, static: Mapping[str, list[str]], has_user_files: bool) -> str:
    """The cause said after a failure: the user's items that make it fail, or that none do."""
    if blame is None:
        items = static.get(rule, [])
        if items:
            return f"; your files change {rule} at {', '.join(items)}"
        if has_user_files:
            return f"; no --override file changes {rule}: the rules files before them do this"
        return ""
    where = ", ".join(change.text for change in blame.items)
    if blame.how == ALONE:
        return f"; your files change {rule} at {where}"
    if blame.how == TOGETHER:
        return (
            f"; your files change {rule} at {where} (together: it holds without all of them, not without one)"
        )
    if blame.how == YOUR_FILES:
        return (
            f"; your files make it fail: it holds without your --override files (your items that change"
            f" {rule}, at {where}, could not be left out to tell which: a later item of yours may build"
            " on them)"
        )
    if blame.how == LEFT_OPEN:
        return (
            f"; your files leave it open: without your --override files {rule} does not watch it"
            f" either, and `serving-guard rules check` says what your files lack: {blame.note}"
        )
    return (
        f"; not your tuning: it fails without your --override files too, on the rules files before them"
        f" (your items that change {rule}, at {where}, are not the cause)"
    )
