"""What a config's policies can never do, found before an attack finds it. Pure: no I/O.

Policies are tried in order and the first match decides, so a policy whose every alert an earlier
policy also matches never applies: a quarantine policy placed below a broad notify-only one is
silently dead. And a rule name with a typo matches no alert at all. Both are reported with the
place in the config (``serving-guard config check``, and a warning when the responder starts).

The coverage test is sound, not complete: it says "never applies" only when every condition of
the earlier policy provably holds for every alert the later one matches (a glob is compared by
the names it spells out, or as identical text). Given the rules files loaded (``--rules``), rule
names and tags are also compared through the rules themselves: an alert carries its rule's tags,
so a policy matching a tag every rule of the later one carries takes all its alerts.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from responder.config import ActionName, Config, Policy, PolicyMatch

_GLOB_CHARS = frozenset("*?[")

ConfigPath = tuple[str | int, ...]
# The rules that can fire (those of the rules files given, enabled), by name: each rule's tags,
# which every alert of it carries.
RuleTags = Mapping[str, frozenset[str]]


@dataclass(frozen=True, slots=True)
class PolicyFinding:
    path: ConfigPath  # where in the config, e.g. ("policies", 2)
    message: str


def _is_glob(pattern: str) -> bool:
    return any(char in _GLOB_CHARS for char in pattern)


def _patterns_cover(earlier: Sequence[str], later: Sequence[str]) -> bool:
    """Every name ``later``'s patterns match, one of ``earlier``'s matches (empty: any name)."""
    if not earlier or "*" in earlier:
        return True
    if not later:
        return False  # later takes any name; earlier only some
    return all(
        pattern in earlier
        or (not _is_glob(pattern) and any(fnmatch.fnmatchcase(pattern, e) for e in earlier))
        for pattern in later
    )


def _rules_and_tags_cover(earlier: PolicyMatch, later: PolicyMatch) -> bool:
    """By the policies' text alone: later's rule patterns and tags are among earlier's."""
    if not _patterns_cover(earlier.rules, later.rules):
        return False
    # Any of the tags: every alert with one of later's tags must carry one of earlier's.
    return not earlier.tags or bool(later.tags and set(later.tags) <= set(earlier.tags))


def _rules_taken(match: PolicyMatch, rule_tags: RuleTags) -> set[str]:
    """The rules whose alerts ``match`` takes, by their names and tags."""
    return {
        name
        for name, tags in rule_tags.items()
        if match.matches_rule(name) and (not match.tags or not tags.isdisjoint(match.tags))
    }


def covers_through_rules(
    earlier: PolicyMatch, later: PolicyMatch, rule_tags: RuleTags, *, given_rules_only: bool = False
) -> bool:
    """Every rule whose alerts ``later`` takes, ``earlier`` takes too (by name or by a tag the
    rule carries). Only for a later policy that names its rules, each by its literal name: a glob
    may also take the alerts of rules in files not given (Falco's own, where only the pack is),
    whose tags nobody here knows. (A literal name from a file not given is a finding of its own:
    unmatched_rule_patterns.)
    ``given_rules_only`` drops that condition: true then says only that among the rules given,
    ``later`` takes nothing ``earlier`` does not. And a policy that takes no rule is not said to be
    shadowed: its pattern that matches nothing is the finding there (unmatched_rule_patterns)."""
    if not later.rules:
        return False
    if not given_rules_only and any(_is_glob(pattern) for pattern in later.rules):
        return False
    taken = _rules_taken(later, rule_tags)
    return bool(taken) and taken <= _rules_taken(earlier, rule_tags)


def covers(
    earlier: PolicyMatch,
    later: PolicyMatch,
    rule_tags: RuleTags | None = None,
    *,
    given_rules_only: bool = False,
) -> bool:
    """Every alert ``later`` matches, ``earlier`` matches too (so ``later`` below it never applies);
    with ``rule_tags``, rule names and tags are also compared through the rules (``given_rules_only``:
    as if no other rule could fire, see covers_through_rules)."""
    if not _rules_and_tags_cover(earlier, later) and not (
        rule_tags is not None
        and covers_through_rules(earlier, later, rule_tags, given_rules_only=given_rules_only)
    ):
        return False
    # Even "*" takes no alert without a namespace (a host's), which a later policy without any takes.
    namespaces = earlier.namespaces
    if namespaces and not (later.namespaces and _patterns_cover(namespaces, later.namespaces)):
        return False
    if earlier.min_priority is not None and not (
        later.min_priority is not None and later.min_priority.at_least(earlier.min_priority)
    ):
        return False
    if any(later.pod_labels.get(key) != value for key, value in earlier.pod_labels.items()):
        return False
    return not earlier.sources or bool(later.sources and set(later.sources) <= set(earlier.sources))


def unreachable_policies(
    config: Config, rule_tags: RuleTags | None = None, rules_files: str = ""
) -> list[PolicyFinding]:
    """Policies an earlier policy takes every alert from; with ``rule_tags`` (the rules of
    ``rules_files``), also where only the rules' tags show it."""
    findings = []
    for index, policy in enumerate(config.policies):
        for earlier_index, earlier in enumerate(config.policies[:index]):
            if not covers(earlier.match, policy.match, rule_tags):
                continue
            # Said when only the rules show it: the reader cannot see it in the config alone.
            through = "" if covers(earlier.match, policy.match) else _through_rules(earlier, rules_files)
            findings.append(
                PolicyFinding(
                    ("policies", index),
                    f"policy {policy.name!r} never applies: policy {earlier.name!r} above it"
                    f" (policies[{earlier_index}]) matches every alert it does{through}, and the first"
                    " match decides; move it up or narrow the other",
                )
            )
            break
    return findings


def shadowed_among_given_rules(config: Config, rule_tags: RuleTags, rules_files: str) -> list[PolicyFinding]:
    """Policies an earlier policy takes every alert from as far as the rules of ``rules_files``
    go, whose rule globs may still match rules loaded from other files: notes, not findings (a
    config may rightly aim a glob at Falco's own rules)."""
    notes = []
    for index, policy in enumerate(config.policies):
        earlier_ones = config.policies[:index]
        if any(covers(earlier.match, policy.match, rule_tags) for earlier in earlier_ones):
            continue  # a finding already (unreachable_policies)
        for earlier_index, earlier in enumerate(earlier_ones):
            if covers(earlier.match, policy.match, rule_tags, given_rules_only=True):
                notes.append(
                    PolicyFinding(
                        ("policies", index),
                        f"policy {policy.name!r} takes no alert of the rules of {rules_files} that policy"
                        f" {earlier.name!r} above it (policies[{earlier_index}]) does not take first: it"
                        " applies only to rules loaded from other files its globs match (Falco's own?)",
                    )
                )
                break
    return notes


def _through_rules(earlier: Policy, rules_files: str) -> str:
    tags = earlier.match.tags
    by_tags = f", by the tag{'s' if len(tags) > 1 else ''} {', '.join(tags)} they carry" if tags else ""
    return f" (each rule of {rules_files} it matches, {earlier.name!r} matches too{by_tags})"


def unmatched_rule_patterns(config: Config, rule_names: Collection[str], where: str) -> list[PolicyFinding]:
    """Rule names or globs in ``match.rules`` that match none of ``rule_names`` (the rules files
    ``where`` names): a typo, or a rule renamed since."""
    findings = []
    for index, policy in enumerate(config.policies):
        for position, pattern in enumerate(policy.match.rules):
            if not any(fnmatch.fnmatchcase(name, pattern) for name in rule_names):
                findings.append(
                    PolicyFinding(
                        ("policies", index, "match", "rules", position),
                        f"{pattern!r} matches no rule in {where}",
                    )
                )
    return findings


def unmatched_tags_and_sources(
    config: Config, rule_tags: RuleTags, rule_sources: Collection[str], where: str
) -> list[PolicyFinding]:
    """Tags in ``match.tags`` that no rule of ``rule_tags`` carries, and sources in
    ``match.sources`` that no rule is of (``rule_sources``; the rules files ``where`` names): a
    typo matches no alert, and the policy never applies through it."""
    carried = {tag for tags in rule_tags.values() for tag in tags}
    findings = []
    for index, policy in enumerate(config.policies):
        for position, tag in enumerate(policy.match.tags):
            if tag not in carried:
                findings.append(
                    PolicyFinding(
                        ("policies", index, "match", "tags", position),
                        f"no rule in {where} carries the tag {tag!r}",
                    )
                )
        for position, source in enumerate(policy.match.sources):
            if source not in rule_sources:
                known = ", ".join(sorted(rule_sources)) or "none"
                findings.append(
                    PolicyFinding(
                        ("policies", index, "match", "sources", position),
                        f"no rule in {where} is of the source {source!r} (theirs: {known})",
                    )
                )
    return findings


def protected_only_policies(config: Config) -> list[PolicyFinding]:
    """Policies that quarantine, annotate or block, whose every namespace is protected
    (guardrails.protected_namespaces, by name: a glob may match others): they only ever notify
    (review-operator L6: `config check` said "ok")."""
    protected = set(config.guardrails.protected_namespaces)
    isolating = {ActionName.QUARANTINE, ActionName.ANNOTATE, ActionName.BLOCK_DESTINATION}
    findings = []
    for index, policy in enumerate(config.policies):
        names = policy.match.namespaces
        if not names or not isolating & set(policy.actions):
            continue
        if all(not _is_glob(name) and name in protected for name in names):
            findings.append(
                PolicyFinding(
                    ("policies", index, "match", "namespaces"),
                    f"policy {policy.name!r} acts only in protected namespaces"
                    " (guardrails.protected_namespaces): it never changes a pod, only notifies",
                )
            )
    return findings
