"""Falco's loading semantics over a sequence of rules files, as the engine applies them
(falco `rule_loader_collector.cpp` and `rule_loader_compiler.cpp`, 0.40-0.44):

- items load in file order; defining a name again replaces it in place, `append` extends it, a rule
  `override` appends and/or replaces single keys of an earlier rule;
- a list item naming an earlier list is spliced in; lists are substituted into condition *text*
  (comma-separated items, items with blanks quoted) wherever the name stands alone;
- a macro sees only the macros defined before it, a rule sees all; a macro reference becomes the
  macro's parsed condition (a parenthesised sub-expression);
- rule exceptions become `and not (...)` clauses appended to the rule's condition.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from responder.errors import UserError
from responder.rulespack.condition import (
    LIST_OPERATORS,
    MAX_TREE_DEPTH,
    ConditionSyntaxError,
    ConditionTooDeep,
    ListValue,
    MacroRef,
    Node,
    checks,
    parse,
    render,
    transform,
    tree_depth,
    walk,
)
from responder.rulespack.problems import Problem, Severity, item_label
from responder.rulespack.rulesfile import (
    PRIORITIES,
    EngineVersion,
    ExceptionSpec,
    ListItem,
    MacroItem,
    Mode,
    PluginRequirement,
    RuleItem,
    RulesFile,
    read_rules_file,
)
from responder.wording import first_few

_BLANKS = " \t\n\r"
_DELIMS = _BLANKS + "(),="
# Lists our namespace owns: a bare list value with this prefix that names no list is a typo.
RESERVED_LIST_PREFIX = "serving_guard_"


@dataclass(frozen=True)
class Origin:
    """Where a piece of text came from: the file and the line of its key, and the position of its item
    in the load order (``seq``: later items override earlier ones; -1 when not known)."""

    file: RulesFile
    line: int | None
    seq: int = -1
    # Where its text starts in the condition it was appended to (0: the definition's own).
    offset: int = 0


def locate(
    origins: Iterable[Origin], token: str, fallback: Origin, *, whole: bool = False
) -> tuple[str, int | None]:
    """File and line of the first origin whose text holds ``token`` (with ``whole``, as a token of its
    own); else the fallback's."""
    for origin in origins:
        line = origin.file.find(token, origin.line, whole=whole)
        if line is not None:
            return origin.file.path, line
    return fallback.file.path, fallback.line


@dataclass
class ListState:
    name: str
    items: list[str]
    index: int
    visibility: int
    origin: Origin
    used: bool = False
    # Where its items were written: the definition (or replace), then every append, in load order.
    origins: list[Origin] = field(default_factory=list)
    lists: set[str] = field(default_factory=set)  # the earlier lists spliced into it


@dataclass
class MacroState:
    name: str
    condition: str
    index: int
    visibility: int
    origin: Origin
    condition_origins: list[Origin]
    used: bool = False
    ast: Node | None = None
    macros: set[str] = field(default_factory=set)  # the macros its condition names
    lists: set[str] = field(default_factory=set)  # the lists substituted into its condition


@dataclass
class RuleState:
    name: str
    index: int
    origin: Origin
    source: str
    desc: str
    condition: str
    output: str
    priority: str
    tags: list[str]
    exceptions: list[ExceptionSpec]
    enabled: bool = True
    # Where `enabled` was last set (the key's line): a disabled rule is reported there.
    enabled_origin: Origin | None = None
    warn_evttypes: bool = True
    skip_if_unknown_filter: bool = False
    condition_origins: list[Origin] = field(default_factory=list)
    output_origin: Origin | None = None
    # Where each exception was written: its definition and every append of values, by name.
    exception_origins: dict[str, list[Origin]] = field(default_factory=dict)

    @property
    def disabled_at(self) -> str | None:
        """FILE:LINE of the `enabled: false` that switched the rule off (the rule's own line when
        the key's is not known); None when it is enabled."""
        if self.enabled:
            return None
        origin = self.enabled_origin or self.origin
        return f"{origin.file.path}:{origin.line}" if origin.line is not None else origin.file.path


@dataclass(frozen=True)
class ExpandedRule:
    """A rule as Falco compiles it: condition with exceptions, lists substituted, macros resolved."""

    name: str
    origin: Origin
    source: str
    desc: str
    output: str
    priority: str
    tags: tuple[str, ...]
    enabled: bool
    warn_evttypes: bool
    condition_text: str  # the text Falco parses: condition + exceptions, lists substituted
    ast: Node  # macros resolved
    condition_origins: tuple[Origin, ...]
    output_origin: Origin | None
    # Every text the expanded condition is made of: the rule's condition and exceptions, and the
    # macros and lists it expands (transitively), each definition, append and override; latest first.
    token_origins: tuple[Origin, ...] = ()

    @property
    def expanded(self) -> str:
        return render(self.ast)

    def locate(self, token: str) -> tuple[str, int | None]:
        """Where a token of the expanded condition (one sysdig rejected) is written: the latest text
        that holds it as a token of its own (a user's override or append before the pack it
        extends), else the rule itself."""
        return locate(self.token_origins, token, self.origin, whole=True)


@dataclass
class RuleSet:
    """Everything loaded from the files, after Falco's semantics, plus what went wrong."""

    files: list[RulesFile]
    lists: dict[str, ListState] = field(default_factory=dict)
    macros: dict[str, MacroState] = field(default_factory=dict)
    rules: dict[str, RuleState] = field(default_factory=dict)
    engine_versions: list[tuple[EngineVersion, RulesFile]] = field(default_factory=list)
    plugin_requirements: list[tuple[PluginRequirement, RulesFile]] = field(default_factory=list)
    list_items: dict[str, list[str]] = field(default_factory=dict)  # lists after splicing nested lists
    expanded: dict[str, ExpandedRule] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    defined_in: dict[tuple[str, str], list[Origin]] = field(default_factory=dict)  # (kind, name) -> defs

    def error(self, origin: Origin, message: str, item: str | None, token: str | None = None) -> None:
        self.problems.append(Problem(Severity.ERROR, origin.file.path, origin.line, message, item, token))

    def warn(self, origin: Origin, message: str, item: str | None, token: str | None = None) -> None:
        self.problems.append(Problem(Severity.WARNING, origin.file.path, origin.line, message, item, token))


# --- collecting (define / append / override) ------------------------------------------------------
def collect(files: list[RulesFile]) -> RuleSet:
    ruleset = RuleSet(files=files)
    counter = 0
    for rules_file in files:
        for item in rules_file.items:
            origin = Origin(rules_file, item.line, counter)
            if isinstance(item, EngineVersion):
                ruleset.engine_versions.append((item, rules_file))
            elif isinstance(item, PluginRequirement):
                ruleset.plugin_requirements.append((item, rules_file))
            elif isinstance(item, ListItem):
                _collect_list(ruleset, item, origin, counter)
            elif isinstance(item, MacroItem):
                _collect_macro(ruleset, item, origin, counter)
            else:
                _collect_rule(ruleset, item, origin, counter)
            counter += 1
    return ruleset


def _note_definition(ruleset: RuleSet, kind: str, name: str, origin: Origin) -> None:
    earlier = ruleset.defined_in.setdefault((kind, name), [])
    label = item_label(kind, name)
    for previous in earlier:
        where = f"{previous.file.path}:{previous.line}"
        if previous.file is origin.file:
            ruleset.error(origin, f"duplicate {kind} name (first defined at {where})", label, name)
            break
    else:
        if earlier:
            where = f"{earlier[-1].file.path}:{earlier[-1].line}"
            key = _OVERRIDE_KEYS.get(kind)
            if key is not None and name.startswith(RESERVED_LIST_PREFIX):
                # Falco replaces it without a word: every item or clause of the pack's is dropped.
                ruleset.error(
                    origin,
                    f"redefines the {kind} from {where}, which drops everything the pack put in it: "
                    f"add 'override: {{{key}: append}}' to extend it, or 'override: {{{key}: replace}}' "
                    "to replace it on purpose",
                    label,
                    name,
                )
            else:
                ruleset.warn(
                    origin, f"redefines the {kind} from {where}; prefer an 'override' item", label, name
                )
    earlier.append(origin)


# The key an override of a list or a macro names.
_OVERRIDE_KEYS = {"list": "items", "macro": "condition"}


def _collect_list(ruleset: RuleSet, item: ListItem, origin: Origin, counter: int) -> None:
    previous = ruleset.lists.get(item.name)
    if item.mode is Mode.APPEND:
        if previous is None:
            ruleset.error(
                origin, "append to a list that is not defined earlier", item_label("list", item.name)
            )
            return
        previous.items.extend(item.items)
        previous.visibility = counter
        previous.origins.append(origin)
        return
    if item.mode is Mode.DEFINE:
        _note_definition(ruleset, "list", item.name, origin)
    elif previous is not None:
        _note_dropped_items(ruleset, previous, item, origin)
    # Falco: replacing a list is the same as defining it again (in place, if it exists).
    index = previous.index if previous else counter
    ruleset.lists[item.name] = ListState(
        item.name, list(item.items), index, counter, origin, origins=[origin]
    )


# The dropped items a warning names (the rest counted).
DROPPED_SHOWN = 8


def _note_dropped_items(ruleset: RuleSet, previous: ListState, item: ListItem, origin: Origin) -> None:
    """An `override: {items: replace}` of one of the pack's lists, in another file, that leaves out
    items the pack put in it: a warning naming them. Each is matched no more (replacing the
    download tools with four of them silenced the rest, and `rules test` had no capture of them)."""
    if not item.name.startswith(RESERVED_LIST_PREFIX) or previous.origin.file is origin.file:
        return
    kept = set(item.items)
    dropped = [entry for entry in previous.items if entry not in kept]
    if not dropped:
        return
    shown = first_few(dropped, DROPPED_SHOWN)
    where = f"{previous.origin.file.path}:{previous.origin.line}"
    ruleset.warn(
        origin,
        f"replaces the list from {where} without {len(dropped)} of its {len(previous.items)} items ({shown}):"
        " those are matched no more; 'override: {items: append}' adds items and keeps the pack's",
        item_label("list", item.name),
        item.name,
    )


def _collect_macro(ruleset: RuleSet, item: MacroItem, origin: Origin, counter: int) -> None:
    previous = ruleset.macros.get(item.name)
    condition_origin = Origin(origin.file, item.condition_line, counter)
    if item.mode is Mode.APPEND:
        if previous is None:
            ruleset.error(
                origin, "append to a macro that is not defined earlier", item_label("macro", item.name)
            )
            return
        previous.condition_origins.append(replace(condition_origin, offset=len(previous.condition) + 1))
        previous.condition = f"{previous.condition} {item.condition}"
        previous.visibility = counter
        return
    if item.mode is Mode.DEFINE:
        _note_definition(ruleset, "macro", item.name, origin)
    index = previous.index if previous else counter
    ruleset.macros[item.name] = MacroState(
        item.name, item.condition, index, counter, origin, [condition_origin]
    )


def _collect_rule(ruleset: RuleSet, item: RuleItem, origin: Origin, counter: int) -> None:
    label = item_label("rule", item.name)
    previous = ruleset.rules.get(item.name)
    condition_origin = Origin(origin.file, item.key_lines.get("condition"), counter)
    if item.mode is Mode.DEFINE:
        source = item.get("source") or "syscall"
        if previous is not None and previous.source != source:
            ruleset.error(origin, "rule re-defined with a different source", label)
            return
        _note_definition(ruleset, "rule", item.name, origin)
        ruleset.rules[item.name] = RuleState(
            name=item.name,
            index=previous.index if previous else counter,
            origin=origin,
            source=source,
            desc=item.get("desc"),
            condition=item.get("condition"),
            output=item.get("output").strip(),
            priority=PRIORITIES[item.get("priority").lower()],
            tags=sorted(set(item.get("tags") or ())),
            exceptions=list(item.get("exceptions") or ()),
            enabled=item.values.get("enabled", True),
            enabled_origin=_enabled_origin(item, origin),
            warn_evttypes=item.values.get("warn_evttypes", True),
            skip_if_unknown_filter=item.values.get("skip-if-unknown-filter", False),
            condition_origins=[condition_origin],
            output_origin=Origin(origin.file, item.key_lines.get("output")),
            exception_origins=_exception_origins(item, origin),
        )
        return
    if previous is None:
        ruleset.error(origin, f"{item.mode.value} of a rule that is not defined earlier", label, item.name)
        return
    if item.mode is Mode.ENABLE:
        previous.enabled = bool(item.get("enabled"))
        previous.enabled_origin = _enabled_origin(item, origin)
        return
    appends = set(item.append_keys) if item.mode is Mode.OVERRIDE else {"condition", "exceptions"}
    replaces = set(item.replace_keys) if item.mode is Mode.OVERRIDE else set()
    if appends:
        _append_rule(ruleset, previous, item, appends, origin=origin, condition_origin=condition_origin)
    if replaces:
        _replace_rule(previous, item, replaces, origin, condition_origin)


def _append_rule(
    ruleset: RuleSet,
    rule: RuleState,
    item: RuleItem,
    keys: set[str],
    *,
    origin: Origin,
    condition_origin: Origin,
) -> None:
    label = item_label("rule", item.name)
    if "condition" in keys and item.get("condition"):
        rule.condition_origins.append(replace(condition_origin, offset=len(rule.condition) + 1))
        rule.condition = f"{rule.condition} {item.get('condition')}"
    for key in ("output", "desc"):
        if key in keys and item.get(key):
            setattr(rule, key, f"{getattr(rule, key)} {item.get(key)}")
    if "tags" in keys:
        rule.tags = sorted(set(rule.tags) | set(item.get("tags") or ()))
    for exception in item.get("exceptions") or () if "exceptions" in keys else ():
        existing = next((e for e in rule.exceptions if e.name == exception.name), None)
        if existing is None:
            if exception.fields is None or not exception.values:
                ruleset.error(
                    origin, f"new exception '{exception.name}' needs fields and values", label, exception.name
                )
                continue
            rule.exceptions.append(exception)
            rule.exception_origins[exception.name] = [Origin(origin.file, exception.line, origin.seq)]
            continue
        if exception.fields is not None or exception.comps is not None:
            ruleset.error(
                origin,
                f"can only append values to the existing exception '{exception.name}', not fields or comps",
                label,
                exception.name,
            )
            continue
        shape_error = _values_shape_error(existing, exception.values or ())
        if shape_error:
            ruleset.error(origin, f"exception '{exception.name}': {shape_error}", label, exception.name)
            continue
        merged = (*(existing.values or ()), *(exception.values or ()))
        rule.exceptions[rule.exceptions.index(existing)] = ExceptionSpec(
            existing.name, existing.fields, existing.comps, merged, existing.line
        )
        rule.exception_origins.setdefault(exception.name, []).append(
            Origin(origin.file, exception.line, origin.seq)
        )


def _enabled_origin(item: RuleItem, origin: Origin) -> Origin | None:
    """Where the item writes `enabled` (its key's line, else the item's); None when it does not."""
    if "enabled" not in item.values:
        return None
    return Origin(origin.file, item.key_lines.get("enabled") or origin.line, origin.seq)


def _exception_origins(item: RuleItem, origin: Origin) -> dict[str, list[Origin]]:
    """Where each exception of a rule item is written (in the item's own file)."""
    return {
        exception.name: [Origin(origin.file, exception.line, origin.seq)]
        for exception in item.get("exceptions") or ()
    }


def _values_shape_error(
    exception: ExceptionSpec, values: tuple[str | tuple[str | tuple[str, ...], ...], ...]
) -> str | None:
    for value in values:
        if isinstance(exception.fields, tuple):
            if not isinstance(value, tuple) or len(value) != len(exception.fields):
                return f"each value must be a list of {len(exception.fields)} entries, one per field"
        elif not isinstance(value, str):
            return "with a single field, values must be a list of strings"
    return None


def _replace_rule(
    rule: RuleState, item: RuleItem, keys: set[str], origin: Origin, condition_origin: Origin
) -> None:
    if "condition" in keys:
        rule.condition = item.get("condition")
        rule.condition_origins = [condition_origin]
    if "output" in keys:
        rule.output = item.get("output").strip()
        rule.output_origin = Origin(origin.file, item.key_lines.get("output"))
    if "desc" in keys:
        rule.desc = item.get("desc")
    if "priority" in keys:
        rule.priority = PRIORITIES[item.get("priority").lower()]
    if "tags" in keys:
        rule.tags = sorted(set(item.get("tags") or ()))
    if "exceptions" in keys:
        rule.exceptions = list(item.get("exceptions") or ())
        rule.exception_origins = _exception_origins(item, origin)
    if "enabled" in keys:
        rule.enabled = bool(item.get("enabled"))
        rule.enabled_origin = _enabled_origin(item, origin)
    if "warn_evttypes" in keys:
        rule.warn_evttypes = bool(item.get("warn_evttypes"))
    if "skip-if-unknown-filter" in keys:
        rule.skip_if_unknown_filter = bool(item.get("skip-if-unknown-filter"))


# --- compiling (lists, macros, exceptions, rules) ---------------------------------------------------
def _quote_item(value: str) -> str:
    """Falco's quote_item: wrap in double quotes when the item has a blank and is not quoted yet."""
    if " " in value and value[:1] not in ("'", '"'):
        return f'"{value}"'
    return value


def substitute_list(condition: str, name: str, items: list[str]) -> tuple[str, bool]:
    """Falco's resolve_list: replace every stand-alone occurrence of ``name`` with its items."""
    used = False
    start = condition.find(name)
    while start != -1:
        end = start + len(name)
        if (start == 0 or condition[start - 1] in _DELIMS) and (
            end >= len(condition) or condition[end] in _DELIMS
        ):
            while start > 0 and condition[start - 1] in _BLANKS:
                start -= 1
            while end < len(condition) and condition[end] in _BLANKS:
                end += 1
            substitution = ", ".join(_quote_item(item) for item in items)
            if not substitution:
                if start > 0 and condition[start - 1] == ",":
                    start -= 1
                elif end < len(condition) and condition[end] == ",":
                    end += 1
            rebuilt = ""
            if start > 0:
                rebuilt += condition[:start] + " "
            rebuilt += substitution + " "
            rebuilt += condition[end:]
            condition = rebuilt
            start += len(substitution) + 1
            used = True
        start = condition.find(name, start + 1)
    return condition, used


def exception_condition(exceptions: list[ExceptionSpec]) -> str:
    """Falco's build_rule_exception_infos: the text appended to a rule's (parenthesised) condition."""
    text = ""
    for exception in exceptions:
        clause = ""
        values = exception.values or ()
        if isinstance(exception.fields, str):
            assert isinstance(exception.comps, str)
            items = [_quote_item(v) for v in values if isinstance(v, str)]
            if items:
                clause = f"({exception.fields} {exception.comps} ({', '.join(items)}))"
        elif isinstance(exception.fields, tuple):
            assert isinstance(exception.comps, tuple)
            alternatives = []
            for value in values:
                assert isinstance(value, tuple)
                parts = []
                for field_name, comp, element in zip(exception.fields, exception.comps, value, strict=True):
                    if isinstance(element, tuple):
                        operand = "(" + ", ".join(_quote_item(e) for e in element) + ")"
                    elif comp in LIST_OPERATORS:
                        operand = element if element.startswith("(") else f"({element})"
                    else:
                        operand = _quote_item(element)
                    parts.append(f"{field_name} {comp} {operand}")
                alternatives.append("(" + " and ".join(parts) + ")")
            if alternatives:
                clause = "(" + " or ".join(alternatives) + ")"
        if clause:
            text += f" and not {clause}"
    return text


def _compile_lists(ruleset: RuleSet) -> dict[str, list[str]]:
    compiled: dict[str, list[str]] = {}
    for state in sorted(ruleset.lists.values(), key=lambda s: s.index):
        items: list[str] = []
        for item in state.items:
            referenced = ruleset.lists.get(item)
            if referenced is not None and referenced.index < state.visibility:
                referenced.used = True
                state.lists.add(referenced.name)
                items.extend(referenced.items)
            else:
                items.append(item)
        compiled[state.name] = items
    return compiled


def _substitute_lists(
    ruleset: RuleSet, compiled: dict[str, list[str]], condition: str, used_names: set[str] | None = None
) -> str:
    for state in sorted(ruleset.lists.values(), key=lambda s: s.index):
        condition, used = substitute_list(condition, state.name, compiled[state.name])
        state.used = state.used or used
        if used and used_names is not None:
            used_names.add(state.name)
    return condition


def _token_origins(
    ruleset: RuleSet, origins: list[Origin], macros: set[str], lists: set[str]
) -> tuple[Origin, ...]:
    """Every text a rule's expanded condition is made of: its own (``origins``), and every definition,
    append and override of the macros and lists it expands, transitively; the latest loaded first."""
    collected = list(origins)
    pending = [("macro", name) for name in sorted(macros)] + [("list", name) for name in sorted(lists)]
    seen: set[tuple[str, str]] = set()
    while pending:
        kind, name = pending.pop()
        if (kind, name) in seen:
            continue
        seen.add((kind, name))
        if kind == "macro" and name in ruleset.macros:
            macro = ruleset.macros[name]
            collected += macro.condition_origins
            pending += [("macro", n) for n in sorted(macro.macros)] + [
                ("list", n) for n in sorted(macro.lists)
            ]
        elif kind == "list" and name in ruleset.lists:
            state = ruleset.lists[name]
            collected += state.origins
            pending += [("list", n) for n in sorted(state.lists)]
    ordered: list[Origin] = []
    for origin in sorted(collected, key=lambda o: o.seq, reverse=True):
        if origin not in ordered:
            ordered.append(origin)
    return tuple(ordered)


def _check_list_references(ruleset: RuleSet, tree: Node, where: Origin, label: str) -> None:
    """A bare value in our reserved namespace that names no list would silently compare as text."""
    for check in checks(tree):
        if not isinstance(check.value, ListValue):
            continue
        names = [check.value.identifier] if check.value.identifier else []
        names += [item.text for item in check.value.items if not item.quoted]
        for name in names:
            if name.startswith(RESERVED_LIST_PREFIX) and name not in ruleset.lists:
                ruleset.problems.append(
                    Problem(
                        Severity.ERROR,
                        where.file.path,
                        locate([where], name, where)[1],
                        f"undefined list '{name}'",
                        label,
                        name,
                    )
                )


def _parse(
    ruleset: RuleSet,
    text: str,
    substituted: str,
    *,
    origins: list[Origin],
    fallback: Origin,
    label: str,
    shift: int = 0,
    conditions: int | None = None,
) -> Node | None:
    """Parse the text as written (errors point at the file) and then as Falco sees it (lists inlined).
    ``shift``: where the origins' own text starts in ``text`` (a rule's, wrapped for its exceptions);
    ``conditions``: how many of ``origins`` are the condition's (the rest: its exceptions')."""
    try:
        written = parse(text)
    except ConditionSyntaxError as exc:
        # At the end of the text, the last word is the one to look for.
        probe = exc.token if exc.pos < len(text) else (text.split() or [""])[-1]
        # Looked for from the piece the error is in, back (an append's '(' is not the pack's).
        # At the end (an unclosed parenthesis), the last piece of the condition that opens more
        # parentheses than it closes, not its exceptions.
        pieces = origins[:conditions] if exc.pos >= len(text) and conditions else origins
        holding = [o for o in pieces if shift + o.offset <= exc.pos] or pieces
        if exc.pos >= len(text) and conditions:
            holding = _unclosed(text, origins, conditions, shift) or holding
        file, line = locate(reversed(holding), probe, holding[-1] if holding else fallback)
        if isinstance(exc, ConditionTooDeep):
            ruleset.problems.append(Problem(Severity.ERROR, file, line, exc.message, label))
        else:
            ruleset.problems.append(
                Problem(Severity.ERROR, file, line, f"syntax error: {exc.message}", label, exc.token)
            )
        return None
    _check_list_references(ruleset, written, origins[0] if origins else fallback, label)
    try:
        return parse(substituted)
    except ConditionSyntaxError as exc:
        ruleset.problems.append(
            Problem(
                Severity.ERROR,
                fallback.file.path,
                fallback.line,
                f"syntax error after substituting lists: {exc.message}; check the lists used here",
                label,
                exc.token,
            )
        )
        return None


def _resolve_macros(
    ruleset: RuleSet,
    tree: Node,
    visible: dict[str, Node],
    *,
    origins: list[Origin],
    fallback: Origin,
    label: str,
) -> Node | None:
    failed: list[MacroRef] = []

    def visit(node: Node) -> Node | None:
        if isinstance(node, MacroRef):
            if node.name not in visible:
                failed.append(node)
                return None
            ruleset.macros[node.name].used = True
            return visible[node.name]
        return None

    resolved = transform(tree, visit)
    for ref in failed:
        file, line = locate(origins, ref.name, fallback)
        known = ruleset.macros.get(ref.name)
        message = f"undefined macro '{ref.name}'"
        if known is not None:
            message += (
                f" (it is defined later, at {known.origin.file.path}:{known.origin.line}; a macro sees only "
            )
            message += "the macros defined before it)"
        _add_problem(ruleset, Problem(Severity.ERROR, file, line, message, label, ref.name))
    if failed:
        return None
    depth = tree_depth(resolved)
    if depth > MAX_TREE_DEPTH:
        where = origins[0] if origins else fallback
        message = (
            f"condition nested too deeply once its macros are expanded ({depth} levels of and/or/not, "
            f"at most {MAX_TREE_DEPTH}): flatten the macros it uses"
        )
        ruleset.problems.append(Problem(Severity.ERROR, where.file.path, where.line, message, label))
        return None
    return resolved


def compile_ruleset(ruleset: RuleSet) -> None:
    """Fill ``ruleset.expanded`` and record every problem Falco would report while compiling."""
    compiled_lists = _compile_lists(ruleset)
    ruleset.list_items = compiled_lists
    resolved_macros = _compile_macros(ruleset, compiled_lists)
    every_macro = {name: ast for name, (_, ast) in resolved_macros.items()}
    # What a rule that did not parse names: whether those are used cannot be said.
    unjudged: set[str] = set()
    for rule in sorted(ruleset.rules.values(), key=lambda r: r.index):
        label = item_label("rule", rule.name)
        written = (
            f"({rule.condition}){exception_condition(rule.exceptions)}" if rule.exceptions else rule.condition
        )
        rule_lists: set[str] = set()
        substituted = _substitute_lists(ruleset, compiled_lists, written, rule_lists)
        origins = list(rule.condition_origins)
        # The exceptions' text comes after the condition's (and its closing parenthesis).
        after = len(rule.condition) + 1
        origins += [
            replace(o, offset=after) for e in rule.exceptions for o in rule.exception_origins.get(e.name, ())
        ]
        shift = 1 if rule.exceptions else 0  # the "(" that wraps it
        tree = _parse(
            ruleset,
            written,
            substituted,
            origins=origins,
            fallback=rule.origin,
            label=label,
            shift=shift,
            conditions=len(rule.condition_origins),
        )
        if tree is None:
            unjudged |= _names_reached(ruleset, set(_NAME.findall(written)))
            continue
        rule_macros = {ref.name for ref in _macro_refs(tree)}
        if _refers_to_failed_macro(ruleset, tree, resolved_macros):
            continue  # the macro itself failed to compile; its own problem names the cause
        resolved = _resolve_macros(
            ruleset, tree, every_macro, origins=origins, fallback=rule.origin, label=label
        )
        if resolved is None:
            continue
        ruleset.expanded[rule.name] = ExpandedRule(
            name=rule.name,
            origin=rule.origin,
            source=rule.source,
            desc=rule.desc,
            output=rule.output,
            priority=rule.priority,
            tags=tuple(rule.tags),
            enabled=rule.enabled,
            warn_evttypes=rule.warn_evttypes,
            condition_text=substituted,
            ast=resolved,
            condition_origins=tuple(origins),
            output_origin=rule.output_origin,
            token_origins=_token_origins(ruleset, origins, rule_macros, rule_lists),
        )
    for macro in ruleset.macros.values():
        if not macro.used and macro.name not in unjudged:
            message = "macro not used by any rule or macro (Falco warns LOAD_UNUSED_MACRO)"
            ruleset.warn(macro.origin, message, item_label("macro", macro.name))
    for state in ruleset.lists.values():
        if not state.used and state.name not in unjudged:
            message = "list not used by any rule, macro or list (Falco warns LOAD_UNUSED_LIST)"
            ruleset.warn(state.origin, message, item_label("list", state.name))


def _unclosed(text: str, origins: list[Origin], conditions: int, shift: int) -> list[Origin]:
    """The condition's pieces up to the last that leaves a parenthesis open (none: [])."""
    starts = [shift + o.offset for o in origins[:conditions]]
    end = shift + origins[conditions].offset - 1 if conditions < len(origins) else len(text)
    ends = [*starts[1:], end]
    opening = [
        i
        for i, (a, b) in enumerate(zip(starts, ends, strict=True))
        if text.count("(", a, b) > text.count(")", a, b)
    ]
    return origins[: opening[-1] + 1] if opening else []


# A word of a condition that may name a macro or a list.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


def _names_reached(ruleset: RuleSet, names: set[str]) -> set[str]:
    """``names`` and the macros and lists they name, on down."""
    reached: set[str] = set()
    pending = list(names)
    while pending:
        name = pending.pop()
        if name in reached:
            continue
        reached.add(name)
        macro = ruleset.macros.get(name)
        if macro is not None:
            pending += [*macro.macros, *macro.lists]
        listed = ruleset.lists.get(name)
        if listed is not None:
            pending += list(listed.lists)
    return reached


def _compile_macros(ruleset: RuleSet, compiled_lists: dict[str, list[str]]) -> dict[str, tuple[int, Node]]:
    """Each macro's condition with the macros it names expanded: name -> (index, tree). As Falco
    does: the macros are taken in the order of their place (index); each sees the macros placed
    before its last definition (visibility), those not taken yet as written (a pack macro replaced by
    a user's file keeps its place and sees the user's macros defined before the replace), expanded
    with that same visibility. A loop between macros is an error."""
    parsed: dict[str, Node] = {}
    for macro in sorted(ruleset.macros.values(), key=lambda m: m.index):
        substituted = _substitute_lists(ruleset, compiled_lists, macro.condition, macro.lists)
        tree = _parse(
            ruleset,
            macro.condition,
            substituted,
            origins=macro.condition_origins,
            fallback=macro.origin,
            label=item_label("macro", macro.name),
        )
        if tree is not None:
            parsed[macro.name] = tree
            macro.macros = {ref.name for ref in _macro_refs(tree)}
    resolved: dict[str, tuple[int, Node]] = {}
    failed: set[str] = set()

    def expand(macro: MacroState, visibility: int, chain: list[str]) -> Node | None:
        """``macro``'s tree with the macros placed below ``visibility`` expanded (None: it cannot
        be; its problem said, or that of a macro it names)."""
        tree = parsed.get(macro.name)
        if tree is None:
            return None
        found: dict[str, Node] = {}
        for name in sorted(macro.macros):
            named = ruleset.macros.get(name)
            if named is None or named.index >= visibility:
                continue  # undefined for it: said by _resolve_macros
            named.used = True
            if name in resolved:
                found[name] = resolved[name][1]
                continue
            if name in failed or name not in parsed:
                return None  # that macro's own problem names the cause
            if name in chain:
                _say_loop(ruleset, chain[chain.index(name) :])
                return None
            expanded = expand(named, visibility, [*chain, name])  # as written, with this visibility
            if expanded is None:
                return None
            found[name] = expanded
        label = item_label("macro", macro.name)
        if len(chain) > 1:  # expanded as written inside the first: it sees what that one sees
            label += (
                f" (expanded inside macro '{chain[0]}', which sees only the macros before its last"
                " definition)"
            )
        return _resolve_macros(
            ruleset, tree, found, origins=macro.condition_origins, fallback=macro.origin, label=label
        )

    too_deep = False  # said once: each later macro of the same chain meets it again
    for macro in sorted(ruleset.macros.values(), key=lambda m: m.index):
        try:
            tree = expand(macro, macro.visibility, [macro.name])
        except RecursionError:
            if not too_deep:
                message = (
                    "macros nested too deeply to expand (a chain of hundreds of macros, each naming one"
                    " defined after it): flatten them"
                )
                label = item_label("macro", macro.name)
                where = macro.origin
                _add_problem(ruleset, Problem(Severity.ERROR, where.file.path, where.line, message, label))
            too_deep, tree = True, None
        if tree is None:
            failed.add(macro.name)
        else:
            macro.ast = tree
            resolved[macro.name] = (macro.index, tree)
    return resolved


def _say_loop(ruleset: RuleSet, loop: list[str]) -> None:
    """A loop between macros (each names the next, the last the first), said where the edit that
    closed it stands: of the places where a macro of the loop names the next (its definition or an
    append, the name as a token of its own), the one loaded last (a user's replace or append
    rather than the pack's macro it meets, whatever else the user appended meanwhile)."""
    places = []
    for position, name in enumerate(loop):
        macro, named = ruleset.macros[name], loop[(position + 1) % len(loop)]
        naming = [
            (origin.seq, origin.file.path, line)
            for origin in macro.condition_origins
            if (line := origin.file.find(named, origin.line, whole=True)) is not None
        ]
        seq, file, line = max(naming, default=(-1, macro.origin.file.path, macro.origin.line))
        places.append((seq, position, file, line))
    _, last, file, line = max(places)
    turned = [*loop[last:], *loop[:last]]
    named = turned[1 % len(turned)]
    message = (
        f"macros refer to each other in a loop ({' -> '.join([*turned, turned[0]])}): Falco cannot"
        " expand them"
    )
    _add_problem(ruleset, Problem(Severity.ERROR, file, line, message, item_label("macro", turned[0]), named))


def _add_problem(ruleset: RuleSet, problem: Problem) -> None:
    """A problem said once (a macro expanded inside several others meets the same one each time)."""
    if problem not in ruleset.problems:
        ruleset.problems.append(problem)


def _macro_refs(tree: Node) -> list[MacroRef]:
    return [node for node in walk(tree) if isinstance(node, MacroRef)]


def _refers_to_failed_macro(ruleset: RuleSet, tree: Node, resolved: dict[str, tuple[int, Node]]) -> bool:
    """Whether the rule's condition names a macro that did not compile; its own problem names the
    cause. The macros it names count as used either way."""
    failed = False
    for ref in _macro_refs(tree):
        macro = ruleset.macros.get(ref.name)
        if macro is None:
            continue
        if ref.name not in resolved:
            failed = True
        macro.used = True
    return failed


def load(files: list[RulesFile]) -> RuleSet:
    ruleset = collect(files)
    compile_ruleset(ruleset)
    return ruleset


def load_paths(paths: list[str]) -> RuleSet:
    """The rules files as Falco would load them, for commands that use the rules rather than check
    them: any error (unreadable file, bad YAML, bad item, bad condition) stops the command with a
    UserError naming file and line, as `rules check` reports it."""
    files = [read_rules_file(path) for path in paths]
    ruleset = load(files)
    errors = [p for f in files for p in f.problems if p.severity is Severity.ERROR]
    errors += [p for p in ruleset.problems if p.severity is Severity.ERROR]
    if errors:
        count = f"{len(errors)} error" + ("" if len(errors) == 1 else "s")
        details = "; ".join(problem.format() for problem in errors[:5])
        more = f"; and {len(errors) - 5} more" if len(errors) > 5 else ""
        raise UserError(f"the rules do not load ({count}; see `serving-guard rules check`): {details}{more}")
    return ruleset
