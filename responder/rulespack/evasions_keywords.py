"""Keyword cases: one derived case per keyword of each pack macro that is a list written as a
condition (`proc.args contains urllib or proc.args contains httpx ...`), built from the **pack's**
macros, as evasions_lists does for its lists. A tuning that replaces such a macro without a keyword
fails on the case named after that keyword (a space at its ends spelled out: netcat's `-e ` is
`[-e<space>]`, which a shell or a copy cannot lose).

Each case starts a program whose command line holds only that keyword, and what else the keyword's
branch needs: the substrings it is and-ed with (`://` for `copy(`, `socket` for `/bin/sh`) and the
program the branch names (netcat, a shell). The dynamic loader's operands are paths and names: a
program at a path each glob matches, or started under each name. The keywords are read from the
parsed condition of each macro as loaded, not from its text; the macros it names
(serving_guard_inline_code, the shell) are not enumerated here: they are what the case starts.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass

from responder.rulespack.condition import And, Check, ListValue, Node, Not, Or, Value, parse, render
from responder.rulespack.derived import DerivedCase
from responder.rulespack.evasions_common import (
    DOWNLOAD,
    DRIFT,
    EXEC,
    REVERSE_SHELL,
    case,
    exec_as,
    fires,
    shows,
    visible_edges,
)
from responder.rulespack.expand import RuleSet
from responder.rulespack.recorded import CURL_F2, PYTHON_B1, Recorded

PYTHON = "/usr/bin/python3.11"
# Where a command-line keyword points (bash's /dev/tcp/HOST/PORT, netcat's -e before its target).
TARGET = "203.0.113.9/4444"
# The program a branch's other conjunct asks for, by that conjunct as written: its name and path.
PROGRAM_OF_MACRO = {"serving_guard_shell": ("sh", "/bin/sh")}
ANY_PROGRAM = ("x", "/opt/tools/x")  # no list names it: the keyword alone must match
SUBSTRING_OPS = ("contains", "icontains")


@dataclass(frozen=True)
class Keyword:
    """One operand of a macro's `or`: ``field op value``, with the substrings its branch is and-ed
    with (``along``) and the other conjuncts of its branch as written (``needs``)."""

    field: str
    op: str
    value: str
    along: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()

    def text(self) -> str:
        """The keyword, after the substrings its branch also needs."""
        return " ".join((*self.along, self.value))


def keywords(condition: Node, lists: Collection[str]) -> list[Keyword]:
    """The `field op value` tests (and the items of an inline `in (...)`) a condition is the `or` of.
    A conjunct that tests a substring is needed, not a keyword (dropping it widens the branch); a
    negated part is what a case must not match; a named list is a list case's."""
    return list(_disjuncts(condition, (), (), lists))


def _disjuncts(
    node: Node, along: tuple[str, ...], needs: tuple[str, ...], lists: Collection[str]
) -> Iterator[Keyword]:
    if isinstance(node, Or):
        for child in node.children:
            yield from _disjuncts(child, along, needs, lists)
    elif isinstance(node, And):
        substrings = tuple(text for c in node.children if (text := _substring(c)) is not None)
        branches = [c for c in node.children if isinstance(c, And | Or) or _inline_items(c, lists)]
        others = tuple(
            render(c)
            for c in node.children
            if not (_substring(c) is not None or isinstance(c, Not) or c in branches)
        )
        for child in branches:
            rest = tuple(render(c) for c in branches if c is not child)
            yield from _disjuncts(child, along + substrings, needs + others + rest, lists)
    elif isinstance(node, Check) and isinstance(node.value, Value):
        yield Keyword(node.field.name, node.op, node.value.text, along, needs)
    elif _inline_items(node, lists):
        assert isinstance(node, Check) and isinstance(node.value, ListValue)
        field = node.field.name
        yield from (Keyword(field, node.op, item.text, along, needs) for item in node.value.items)


def _substring(node: Node) -> str | None:
    """The substring a `contains` test looks for (None for any other node)."""
    if isinstance(node, Check) and node.op in SUBSTRING_OPS and isinstance(node.value, Value):
        return node.value.text
    return None


def _inline_items(node: Node, lists: Collection[str]) -> bool:
    """An `in (...)` of values written out (not of a list, whose items the list cases test)."""
    return (
        isinstance(node, Check)
        and node.op == "in"
        and isinstance(node.value, ListValue)
        and not any(item.text in lists for item in node.value.items)
    )


@dataclass(frozen=True)
class PackMacros:
    """The shipped pack as loaded: each macro's own condition (the macros it names not inlined)."""

    ruleset: RuleSet

    def keywords(self, macro: str) -> list[Keyword]:
        if macro not in self.ruleset.macros:
            raise ValueError(f"the pack defines no macro {macro}: the keyword cases were written for it")
        return keywords(parse(self.ruleset.macros[macro].condition), self.ruleset.list_items)

    def program(self, keyword: Keyword) -> tuple[str, str]:
        """The name and path to start for a keyword's branch: a program no list names, or the one
        its other conjunct asks for (a shell, the first netcat binary)."""
        if not keyword.needs:
            return ANY_PROGRAM
        need = " and ".join(keyword.needs)
        if need in PROGRAM_OF_MACRO:
            return PROGRAM_OF_MACRO[need]
        node = parse(need)  # one conjunct `proc.name in (LIST)`: the list's first program
        if isinstance(node, Check) and node.field.name == "proc.name" and isinstance(node.value, ListValue):
            listed = [item.text for item in node.value.items if item.text in self.ruleset.list_items]
            if node.op == "in" and listed:
                name = self.ruleset.list_items[listed[0]][0]
                return name, f"/usr/bin/{name}"
        raise ValueError(
            f"the keyword cases cannot start a program for {need!r}: they were not written for it"
        )


def _started(
    group: str, keyword: Keyword, recorded: Recorded, rule: str, program: tuple[str, str], args: list[str]
) -> DerivedCase:
    name, path = program
    return case(
        group,
        visible_edges(keyword.value),
        recorded,
        exec_as(recorded, path=path, argv=[name, *args], name=name),
        fires(rule, True, EXEC, count=1),
        witness=(shows(EXEC, {"proc.name": name, "proc.exepath": path, "proc.args": " ".join(args)}),),
    )


def _one_liners(
    macros: PackMacros, macro: str, rule: str, recorded: Recorded, what: str
) -> list[DerivedCase]:
    """python3 -c KEYWORD: an interpreter one-liner (serving_guard_inline_code) of that keyword alone."""
    group = f"{macro}: each keyword in a python3 -c one-liner {what}"
    return [
        _started(group, keyword, recorded, rule, ("python3", PYTHON), ["-c", keyword.text()])
        for keyword in macros.keywords(macro)
    ]


def _then(value: str, rest: str) -> str:
    """The keyword, then what it names: attached after a separator it ends with (`-e `, `exec:`,
    `/dev/tcp/`), else after a space."""
    return value + rest if value.endswith((" ", ":", "/")) else f"{value} {rest}"


def _command_lines(macros: PackMacros, macro: str) -> list[DerivedCase]:
    """A program started with the keyword alone: what its branch names, the keyword, its target
    (`x /dev/tcp/HOST/PORT`, `nc -e HOST/PORT`); an `in` item is the whole argument (`sh -i`)."""
    group = f"{macro}: each keyword on a command line is a reverse shell"
    cases = []
    for keyword in macros.keywords(macro):
        args = [keyword.value] if keyword.op == "in" else _then(keyword.value, TARGET).split(" ")
        cases.append(_started(group, keyword, PYTHON_B1, REVERSE_SHELL, macros.program(keyword), args))
    return cases


def _path_matching(glob: str) -> str:
    """A path the glob matches: its leading `*` a directory, each other `*` one letter."""
    if any(c in glob for c in "?["):
        raise ValueError(
            f"the keyword cases make no path for the glob {glob!r}: they were not written for it"
        )
    return ("/lib" + glob[1:] if glob.startswith("*/") else glob).replace("*", "x")


def _loader_program(keyword: Keyword) -> tuple[str, str]:
    """The loader by its resolved path under a name no list names, or by the name it was started
    under from a directory no list names (`startswith` and `=` hold for the value itself)."""
    if keyword.field == "proc.exepath" and keyword.op == "glob":
        return ANY_PROGRAM[0], _path_matching(keyword.value)
    if keyword.field == "proc.name" and keyword.op in ("startswith", "="):
        return keyword.value, ANY_PROGRAM[1]
    raise ValueError(f"the keyword cases cannot start a loader for {keyword}: they were not written for it")


def _loaders(macros: PackMacros, macro: str) -> list[DerivedCase]:
    """The dynamic loader run as a command (`LOADER /usr/bin/id`), matched by that operand alone."""
    group = f"{macro}: each path or name run as a command is drift"
    return [
        _started(group, keyword, CURL_F2, DRIFT, _loader_program(keyword), ["/usr/bin/id"])
        for keyword in macros.keywords(macro)
    ]


def keyword_cases(pack: RuleSet) -> list[DerivedCase]:
    """The keyword cases of the pack ``pack``, as loaded (the shipped one: its keywords are the ones no
    tuning may lose)."""
    macros = PackMacros(pack)
    return [
        *_one_liners(macros, "serving_guard_download_code", DOWNLOAD, CURL_F2, "is a download"),
        *_one_liners(
            macros, "serving_guard_reverse_shell_code", REVERSE_SHELL, PYTHON_B1, "is a reverse shell"
        ),
        *_command_lines(macros, "serving_guard_reverse_shell_command"),
        *_loaders(macros, "serving_guard_dynamic_loader"),
    ]
