"""What a config's policies can never do, found before an attack finds it. Pure: no I/O.

Policies are tried in order and the first match decides, so a policy whose every alert an earlier
policy also matches never applies: a quarantine policy placed below a broad notify-only one is
silently dead. And a rule name with a typo matches no alert at all. Both are reported with the
place in the config (``serving-guard config check``, and a warning when the responder starts).

The coverage test is sound, not complete: it says "never applies" only when every condition of
the earlier policy provably holds for every alert the later one matches (a glob is compared by
the names it spells out, or as identical text).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from responder.config import Config, PolicyMatch

_GLOB_CHARS = frozenset("*?[")

ConfigPath = tuple[str | int, ...]


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


def covers(earlier: PolicyMatch, later: PolicyMatch) -> bool:
    """Every alert ``later`` matches, ``earlier`` matches too (so ``later`` below it never applies)."""
    if not _patterns_cover(earlier.rules, later.rules) or not _patterns_cover(
        earlier.namespaces, later.namespaces
    ):
        return False
    # Any of the tags: every alert with one of later's tags must carry one of earlier's.
    if earlier.tags and not (later.tags and set(later.tags) <= set(earlier.tags)):
        return False
    if earlier.min_priority is not None and not (
        later.min_priority is not None and later.min_priority.at_least(earlier.min_priority)
    ):
        return False
    if any(later.pod_labels.get(key) != value for key, value in earlier.pod_labels.items()):
        return False
    return not earlier.sources or bool(later.sources and set(later.sources) <= set(earlier.sources))


def unreachable_policies(config: Config) -> list[PolicyFinding]:
    """Policies an earlier policy takes every alert from."""
    findings = []
    for index, policy in enumerate(config.policies):
        for earlier_index, earlier in enumerate(config.policies[:index]):
            if covers(earlier.match, policy.match):
                findings.append(
                    PolicyFinding(
                        ("policies", index),
                        f"policy {policy.name!r} never applies: policy {earlier.name!r} above it"
                        f" (policies[{earlier_index}]) matches every alert it does, and the first match"
                        " decides; move it up or narrow the other",
                    )
                )
                break
    return findings


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
