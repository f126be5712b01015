"""Keyword cases: one derived case per keyword of each pack macro that is a list written as a
condition (`proc.args contains urllib or proc.args contains httpx ...`), built from the **pack's**
macros, as evasions_lists does for its lists. A tuning that replaces such a macro without a keyword
fails on the case named after that keyword (a space at its ends spelled out: netcat's `-e ` is
`[-e<space>]`, which a shell or a copy cannot lose).

Each case starts a program whose command line holds only that keyword, and what else the keyword's
branch needs: the substrings it is and-ed with (`://` for `copy(`, `socket` for `/bin/sh`) and the
program the branch names (netcat, a shell). The dynamic loader's operands are paths and names: a
program at a path each glob matches, or started under each name. The options of
serving_guard_inline_code are each a one-liner that downloads with only that option: one that starts
the command line (`-c CODE`), or one after a first argument that is no option (`app.py -r CODE`).
The busybox branches of serving_guard_shell and serving_guard_download_command are busybox started
with each spelling of an applet (`busybox sh`, `busybox ./sh -c id`, argv[0] `-sh` or `/x/sh`: a text
each glob matches). The dotted spellings are a script run by python3 at a path each operand of
serving_guard_script_from_writable_dir reads (`//app/x.py`, `./app/../x.py`, from `/proc/1/cwd`), and
a link to a target each operand of serving_guard_model_path_with_dot_segments reads (`../model-store`,
`/x//model`); an operand and-ed with another `or` comes with that `or`'s first operand. The pip branch
of serving_guard_download_command is python3 started with a text each of its globs matches (`-m pip
install evil`, `-mpip`, `/x/pip install evil`: a module or a pip script it runs). These cases are
named by field, operator and value (`[proc.args startswith ./]`).
The keywords are read from the parsed condition of each macro as loaded, not from its text; the
macros a branch names (serving_guard_python, the shell, a model file) are not enumerated here: they
are what the case starts, or cases of their own.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase

from responder.rulespack.condition import And, Check, ListValue, Node, Not, Or, Value, parse, render
from responder.rulespack.derived import DerivedCase
from responder.rulespack.evasions_common import (
    DOWNLOAD,
    DRIFT,
    EXEC,
    REVERSE_SHELL,
    SHELL,
    SYMLINKED,
    TAMPER,
    case,
    exec_as,
    fires,
    linked,
    shows,
    visible_edges,
)
from responder.rulespack.expand import RuleSet
from responder.rulespack.recorded import (
    CURL_F2,
    DROPPED_G2,
    LN_D4,
    PYTHON_B1,
    SH_A1,
    Recorded,
)

PYTHON = "/usr/bin/python3.11"
# Where a command-line keyword points (bash's /dev/tcp/HOST/PORT, netcat's -e before its target).
TARGET = "203.0.113.9/4444"
# The program a branch's other conjunct asks for, by that conjunct as written: its name and path.
PROGRAM_OF_MACRO = {"serving_guard_shell": ("sh", "/bin/sh"), "serving_guard_python": ("python3", PYTHON)}
ANY_PROGRAM = ("x", "/opt/tools/x")  # no list names it: the keyword alone must match
BUSYBOX = "/usr/bin/busybox"
# What an interpreter's option follows when it does not start the command line: a script's name.
FIRST_ARGUMENT = "app.py"
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
    group: str,
    keyword: Keyword,
    recorded: Recorded,
    rule: str,
    program: tuple[str, str],
    args: list[str],
    label: str | None = None,
) -> DerivedCase:
    """The case of ``keyword``: the program started with ``args``, named by ``label`` (by default the
    keyword's value)."""
    name, path = program
    return case(
        group,
        visible_edges(keyword.value) if label is None else label,
        recorded,
        exec_as(recorded, path=path, argv=[name, *args], name=name),
        fires(rule, True, EXEC, count=1),
        witness=(shows(EXEC, {"proc.name": name, "proc.exepath": path, "proc.args": " ".join(args)}),),
    )


def _labelled(keyword: Keyword) -> str:
    """A case's label by field, operator and value (`proc.args glob -*m pip *`)."""
    return f"{keyword.field} {keyword.op} {visible_edges(keyword.value)}"


def _one_liners(
    macros: PackMacros, macro: str, rule: str, recorded: Recorded, what: str
) -> list[DerivedCase]:
    """python3 -c KEYWORD: an interpreter one-liner (serving_guard_inline_code) of that keyword alone."""
    group = f"{macro}: each keyword in a python3 -c one-liner {what}"
    return [
        _started(group, keyword, recorded, rule, ("python3", PYTHON), ["-c", keyword.text()])
        for keyword in macros.keywords(macro)
    ]


def _option_args(keyword: Keyword, code: str) -> list[str]:
    """The arguments of a one-liner whose only option serving_guard_inline_code tests is ``keyword``:
    the leading `-` is python's `-c` (`-c CODE`, no space before it); an option inside the command
    line (` -r `) follows a first argument that is no option (`app.py -r CODE`)."""
    option = keyword.value.strip()
    if keyword.op == "startswith" and keyword.value == "-":
        return ["-c", code]
    if keyword.op == "contains" and keyword.value == f" {option} " and option.startswith("-"):
        return [FIRST_ARGUMENT, *option.split(" "), code]
    raise ValueError(
        f"the keyword cases make no command line for the option {keyword}: they were not written for it"
    )


def _inline_options(macros: PackMacros, macro: str, recorded: Recorded) -> list[DerivedCase]:
    """python3 OPTIONS urllib: a one-liner that downloads (the first keyword of
    serving_guard_download_code), seen as one by that option of ``macro`` alone."""
    group = f"{macro}: each option of a one-liner that downloads is a download"
    code = macros.keywords("serving_guard_download_code")[0].text()
    return [
        _started(group, keyword, recorded, DOWNLOAD, ("python3", PYTHON), _option_args(keyword, code))
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


def _glob_instance(glob: str, rest: str) -> str:
    """A text the glob matches: a leading `*/` a directory (`/x/`), a trailing ` *` the rest of the
    command line, a class its first character, any other `*` nothing (`[./]*/sh *`: `./sh -c id`)."""
    text = "/x" + glob[1:] if glob.startswith("*/") else glob
    text = text[:-1] + rest if text.endswith(" *") else text
    text = re.sub(r"\[(\]?[^]]*)\]", lambda m: m.group(1)[0], text).replace("*", "")
    if not fnmatchcase(text, glob):
        raise ValueError(
            f"the keyword cases make no text for the glob {glob!r}: they were not written for it"
        )
    return text


def _applet(keyword: Keyword, rest: str) -> list[str]:
    """busybox's argv for an applet spelling: by its first argument (`busybox sh`, `busybox sh -c id`,
    `busybox ./sh -c id`) or by argv[0] (`exec -a -sh busybox -c id`, `/x/sh`)."""
    words = rest.split(" ")
    if keyword.field == "proc.args" and keyword.op == "in":
        return ["busybox", keyword.value]
    if keyword.field == "proc.args" and keyword.op == "startswith":
        return ["busybox", *_then(keyword.value, rest).split(" ")]
    if keyword.field == "proc.args" and keyword.op == "glob":
        return ["busybox", *_glob_instance(keyword.value, rest).split(" ")]
    if keyword.field == "proc.exe" and keyword.op == "in":
        return [keyword.value, *words]
    if keyword.field == "proc.exe" and keyword.op == "glob":
        return [_glob_instance(keyword.value, ""), *words]
    raise ValueError(f"the keyword cases cannot start busybox for {keyword}: they were not written for it")


def _applets(
    macros: PackMacros, macro: str, recorded: Recorded, rule: str, what: str, rest: str
) -> list[DerivedCase]:
    """busybox (by its name and path) running an applet spelled as each operand of the busybox
    branch of ``macro`` names it, and no other: the operands that need busybox."""
    group = f"{macro}: each busybox applet spelling {what}"
    cases = []
    for keyword in macros.keywords(macro):
        if not any("busybox" in need for need in keyword.needs):
            continue
        argv = _applet(keyword, rest)
        cases.append(
            case(
                group,
                _labelled(keyword),
                recorded,
                exec_as(recorded, path=BUSYBOX, argv=argv, name="busybox"),
                fires(rule, True, EXEC, count=1),
                witness=(
                    shows(
                        EXEC,
                        {
                            "proc.name": "busybox",
                            "proc.exepath": BUSYBOX,
                            "proc.exe": argv[0],
                            "proc.args": " ".join(argv[1:]),
                        },
                    ),
                ),
            )
        )
    return cases


def _pip_runs(
    macros: PackMacros, macro: str, recorded: Recorded, rule: str, what: str, rest: str
) -> list[DerivedCase]:
    """python3 (by its name and path) running pip as a module or a script, spelled as each glob of the
    branch of ``macro`` that needs the interpreter matches (`-m pip install evil`, `-mpip`,
    `/x/pip0`), and no other: the operands and-ed with serving_guard_python."""
    group = f"{macro}: each spelling of pip run by python3 {what}"
    cases = []
    for keyword in macros.keywords(macro):
        if keyword.needs != ("serving_guard_python",):
            continue
        if (keyword.field, keyword.op, keyword.along) != ("proc.args", "glob", ()):
            raise ValueError(f"the keyword cases cannot run pip for {keyword}: they were not written for it")
        args = _glob_instance(keyword.value, rest).split(" ")
        cases.append(
            _started(group, keyword, recorded, rule, macros.program(keyword), args, _labelled(keyword))
        )
    return cases


def _versioned_names(
    macros: PackMacros, macro: str, recorded: Recorded, rule: str, what: str, rest: str
) -> list[DerivedCase]:
    """A program started under a name each `proc.name glob` of ``macro`` alone matches (pip by a
    versioned name, `pip[0-9.-]*`: `pip0`), at a path no list names."""
    group = f"{macro}: each versioned name {what}"
    cases = []
    for keyword in macros.keywords(macro):
        if (keyword.field, keyword.op, keyword.along, keyword.needs) != ("proc.name", "glob", (), ()):
            continue
        name = _glob_instance(keyword.value, "")
        program = (name, f"{ANY_PROGRAM[1].rsplit('/', 1)[0]}/{name}")
        cases.append(_started(group, keyword, recorded, rule, program, rest.split(" "), _labelled(keyword)))
    return cases


def _partner(macros: PackMacros, keyword: Keyword) -> Keyword | None:
    """The first operand of the `or` the keyword's branch is and-ed with, when that `or` is of
    substrings and prefixes (`proc.args startswith /` needs `contains /../` or `contains /./`)."""
    for need in keyword.needs:
        found = keywords(parse(need), macros.ruleset.list_items)
        if found and all(k.op in ("startswith", *SUBSTRING_OPS) for k in found):
            return found[0]
    return None


def _holds(keyword: Keyword, text: str) -> bool:
    if keyword.op == "startswith":
        return text.startswith(keyword.value)
    if keyword.op == "contains":
        return keyword.value in text
    return keyword.op == "glob" and fnmatchcase(text, keyword.value)


# The directory a dotted script path goes through, and the working directory of the script cases:
# no list names them.
SCRIPT_DIR = "/app"


def _script(keyword: Keyword, partner: Keyword | None) -> tuple[str, str]:
    """The script's path and the working directory it is run in, spelled by that operand (and the
    first of the operands it is and-ed with): `cd /proc/1/cwd; python3 x.py`, `python3 //app/x.py`,
    `python3 ./app/../x.py`."""
    if keyword.field == "proc.cwd" and keyword.op == "startswith" and partner is None:
        return "x.py", _then(keyword.value, "1/cwd")
    if keyword.field == "proc.args" and keyword.op == "startswith" and partner is None:
        path = _then(keyword.value, "app/x.py")
    elif keyword.field == "proc.args" and partner is not None and partner.field == keyword.field:
        start, middle = (keyword, partner) if keyword.op == "startswith" else (partner, keyword)
        path = f"{start.value}app{middle.value}x.py"
    else:
        path = ""
    if not (path and _holds(keyword, path) and (partner is None or _holds(partner, path))):
        raise ValueError(f"the keyword cases make no script path for {keyword}: they were not written for it")
    return path, SCRIPT_DIR


def _scripts(macros: PackMacros, macro: str) -> list[DerivedCase]:
    """python3 running a script by a path (or from a working directory) spelled so that its
    directory cannot be read from it, matched by that operand of ``macro`` alone."""
    group = f"{macro}: each dotted or /proc spelling of a script run is drift"
    cases = []
    for keyword in macros.keywords(macro):
        path, cwd = _script(keyword, _partner(macros, keyword))
        cases.append(
            case(
                group,
                _labelled(keyword),
                DROPPED_G2,
                exec_as(DROPPED_G2, path=PYTHON, argv=["python3", path], name="python3", cwd=cwd),
                fires(DRIFT, True, EXEC, count=1),
                witness=(
                    shows(
                        EXEC,
                        {"proc.exepath": PYTHON, "proc.args": path, "proc.cwd": cwd.rstrip("/") + "/"},
                    ),
                ),
            )
        )
    return cases


def _dotted(keyword: Keyword, partner: Keyword | None) -> str:
    """A link target spelled by that operand: the glob's text (`../models`), or a segment of only
    dots and slashes before a model dir's last component (`/x/./model`, `/x//data`)."""
    target = ""
    if keyword.field == "evt.args" and keyword.op == "glob" and partner is None:
        target = _glob_instance(keyword.value, "")
    elif keyword.field == "evt.args" and keyword.op == "contains" and partner is not None:
        segment, name = (keyword, partner) if set(keyword.value) <= {"/", "."} else (partner, keyword)
        target = "/x" + segment.value + name.value.lstrip("/")
    if not (
        target
        and _holds(keyword, target)
        and (partner is None or _holds(partner, target))
        and all(text in target for text in keyword.along)
    ):
        raise ValueError(f"the keyword cases make no link target for {keyword}: they were not written for it")
    return target


# Where the dotted-path cases make their link: no model dir.
LINK = "/tmp/m"  # noqa: S108 - a path in a derived capture


def _dotted_links(macros: PackMacros, macro: str) -> list[DerivedCase]:
    """A link (at a path no list names) to a model dir spelled with dot segments, matched by that
    operand of ``macro`` alone (the macros it names, a model file, are their own cases)."""
    group = f"{macro}: each dotted spelling of a model dir linked to is tampering"
    cases = []
    for keyword in macros.keywords(macro):
        target = _dotted(keyword, _partner(macros, keyword))
        cases.append(
            case(
                group,
                _labelled(keyword),
                LN_D4,
                linked(target, LINK),
                fires(TAMPER, True, SYMLINKED, count=1),
                witness=(shows(SYMLINKED, {"evt.arg.target": target, "evt.arg.linkpath": LINK}),),
            )
        )
    return cases


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
        *_inline_options(macros, "serving_guard_inline_code", CURL_F2),
        *_applets(macros, "serving_guard_shell", SH_A1, SHELL, "is a shell", "-c id"),
        *_applets(
            macros, "serving_guard_download_command", CURL_F2, DOWNLOAD, "is a download", "evil.example/x"
        ),
        *_pip_runs(
            macros, "serving_guard_download_command", CURL_F2, DOWNLOAD, "is a download", "install evil"
        ),
        *_versioned_names(
            macros, "serving_guard_download_command", CURL_F2, DOWNLOAD, "is a download", "install evil"
        ),
        *_scripts(macros, "serving_guard_script_from_writable_dir"),
        *_dotted_links(macros, "serving_guard_model_path_with_dot_segments"),
    ]
