"""Where the user's tuning files change a rule: every item of theirs whose text the rule's expanded
condition is made of (the rule's own override, its exceptions, a macro or list it expands) or that
switched it off, as FILE:LINE (kind name). A failed case names them, so the user reads which of their
items silenced (or woke) the rule."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from responder.rulespack.expand import Origin, RuleSet
from responder.rulespack.rulesfile import ListItem, MacroItem, RuleItem, RulesFile


def _holder(rules_file: RulesFile, line: int | None) -> ListItem | MacroItem | RuleItem | None:
    """The top-level item that holds ``line``."""
    if line is None:
        return None
    holder = None
    for item in rules_file.items:
        if (
            item.line is not None
            and item.line <= line
            and (holder is None or item.line >= (holder.line or 0))
        ):
            holder = item
    return holder if isinstance(holder, (ListItem, MacroItem, RuleItem)) else None


def _item_at(holder: ListItem | MacroItem | RuleItem | None) -> str:
    """The kind and name of a top-level item."""
    if isinstance(holder, ListItem):
        return f"list {holder.name}"
    if isinstance(holder, MacroItem):
        return f"macro {holder.name}"
    if isinstance(holder, RuleItem):
        return f"rule {holder.name!r}"
    return ""


@dataclass(frozen=True)
class Change:
    """An item of the user's files that changes a rule: FILE:LINE (what), the LINE it names, and the
    top-level item holding it as (FILE, its line), which can be left out to see what the rule is
    without it."""

    text: str
    item: tuple[str, int]
    line: int


def _origins(ruleset: RuleSet, rule: str) -> Iterable[tuple[Origin, str | None]]:
    """The origins of the rule's text, each with what it is when the origin alone does not say."""
    state = ruleset.rules.get(rule)
    if state is not None:
        for name, origins in state.exception_origins.items():
            yield from ((origin, f"exception {name} of rule {rule!r}") for origin in origins)
        if state.enabled_origin is not None:
            yield state.enabled_origin, None
    expanded = ruleset.expanded.get(rule)
    if expanded is not None:
        yield from ((origin, None) for origin in (*expanded.condition_origins, *expanded.token_origins))


def tuning_points(ruleset: RuleSet, user_files: Collection[str]) -> dict[str, list[str]]:
    """Every list and macro the user's files define, append to or replace: name -> [FILE:LINE]."""
    found: dict[str, list[str]] = {}
    for rules_file in ruleset.files:
        if rules_file.path not in user_files:
            continue
        for item in rules_file.items:
            if isinstance(item, (ListItem, MacroItem)):
                found.setdefault(item.name, []).append(f"{rules_file.path}:{item.line or 0}")
    return found


def changes_of(ruleset: RuleSet, rule: str, user_files: Collection[str]) -> list[Change]:
    """Every item of ``user_files`` that changes ``rule``, in load order."""
    found: dict[tuple[str, int], Change] = {}
    for origin, what in _origins(ruleset, rule):
        if origin.file.path not in user_files:
            continue
        line = origin.line or 0
        if (origin.file.path, line) in found:
            continue  # the first says it best: an exception's name before its rule's
        holder = _holder(origin.file, origin.line)
        said = what or _item_at(holder)
        text = f"{origin.file.path}:{line}" + (f" ({said})" if said else "")
        held_at = holder.line if holder is not None and holder.line is not None else line
        found[(origin.file.path, line)] = Change(text, (origin.file.path, held_at), line)
    order = {path: index for index, path in enumerate(user_files)}
    return [found[key] for key in sorted(found, key=lambda key: (order.get(key[0], 0), key[1]))]


def changed_by(ruleset: RuleSet, rule: str, user_files: Collection[str]) -> list[str]:
    """FILE:LINE (what) of every item of ``user_files`` that changes ``rule``, in load order."""
    return [change.text for change in changes_of(ruleset, rule, user_files)]
