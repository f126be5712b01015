"""The Serving Guard house rules for a rules pack, on top of Falco's own format.

They apply to every file that defines a rule tagged ``serving_guard`` (the shipped pack, or a fork
of it): the responder reads the pod identity from output fields, the tags carry MITRE ATT&CK ids
and a maturity, names stay in our namespace, and the file must load on Falco 0.40.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import PurePosixPath

from responder.rulespack.condition import Check, Value, checks, first_conjunct
from responder.rulespack.evttypes import event_types
from responder.rulespack.expand import Origin, RuleSet, locate
from responder.rulespack.problems import Problem, Severity, item_label
from responder.rulespack.rulesfile import SCHEMA_PRIORITIES, ListItem, MacroItem, Mode, RuleItem, RulesFile
from responder.wording import first_few

PACK_TAG = "serving_guard"
NAME_PREFIX = "serving_guard_"
# The responder identifies the pod from these output fields (falco output_fields keys).
REQUIRED_OUTPUT_FIELDS = (
    "k8s.ns.name",
    "k8s.pod.name",
    "container.id",
    "container.image.repository",
    "proc.name",
    "proc.cmdline",
    "proc.pname",
    "user.name",
)
MITRE_TECHNIQUE = re.compile(r"T\d{4}(\.\d{3})?")
MATURITY = re.compile(r"maturity_(stable|incubating|sandbox|deprecated)")
# Falco 0.40 has engine 0.46.0; a file requiring more does not load there.
OLDEST_ENGINE = (0, 46, 0)
ENGINE_RELEASES = {
    (0, 46, 0): "0.40",
    (0, 50, 0): "0.41",
    (0, 57, 0): "0.42",
    (0, 58, 0): "0.43",
    (0, 62, 0): "0.44",
}


@dataclass(frozen=True)
class Mirror:
    """A macro that spells out every item of a list as ``field operator template(item)``, because Falco
    cannot apply that operator (or that form of the item) to a list."""

    macro: str
    list: str
    field: str
    operator: str
    template: str  # "{}" is the item
    why: str
    # When set, only the macro's values that match it (fullmatch) are the mirror's, its group 1 the
    # item; other values of the same field and operator are not compared. Otherwise every value is.
    pattern: str | None = None
    fix: str = "so append to both"

    def value(self, item: str) -> str:
        return self.template.format(item)

    def item_of(self, value: str) -> str | None:
        """The list item a tested value spells out, or None if the value is not the mirror's."""
        if self.pattern is None:
            return value
        match = re.fullmatch(self.pattern, value)
        return match.group(1) if match else None

    def clause(self, value: str) -> str:
        shown = f'"{value}"' if any(c in value for c in ' *?[]"') else value
        return f"{self.field} {self.operator} {shown}"


TRITON_STUB = "/opt/tritonserver/backends/python/triton_python_backend_stub"
MIRRORED_LISTS = (
    Mirror(
        "serving_guard_model_file",
        "serving_guard_model_extensions",
        "fd.name",
        "endswith",
        "{}",
        "Falco before 0.44 cannot apply endswith to a list",
    ),
    Mirror(
        "serving_guard_model_file",
        "serving_guard_model_extensions",
        "fd.filename",
        "iglob",
        "*{}",
        "Falco before 0.44 cannot apply iglob to a list (the case-insensitive test)",
    ),
    Mirror(
        "serving_guard_model_dir_through_proc",
        "serving_guard_model_dirs",
        "evt.args",
        "glob",
        "*/proc/*/root{}*",
        "Falco cannot strip /proc/<pid>/root from a path to apply pmatch",
    ),
    Mirror(
        "serving_guard_triton_python_stub_launch",
        "serving_guard_model_dirs",
        "proc.args",
        "glob",
        "-c  exec " + TRITON_STUB + " {}/*",
        "the stub's model argument is pinned to each model dir (pmatch cannot test an argument), and "
        "without it every Python-backend model instance started from that dir alerts as a shell",
        # Any stub path (the macro may be replaced to except another stub): the item is the model dir.
        pattern=r"-c  exec /[^ ]+ (/[^ *]*)/\*",
        fix="so add the glob inside the macro (define it again with override condition: replace; an "
        "appended `or` clause would hold without the macro's other tests)",
    ),
)
OUTPUT_FIELD = re.compile(r"%([a-zA-Z][a-zA-Z0-9_]*(?:\.[a-zA-Z0-9_]+)*(?:\[[^\]]*\])?)")


def output_fields(output: str) -> list[str]:
    return OUTPUT_FIELD.findall(output)


def _problem(origin: Origin, message: str, item: str, token: str | None = None) -> Problem:
    return Problem(Severity.ERROR, origin.file.path, origin.line, message, item, token)


def pack_files(ruleset: RuleSet) -> list[RulesFile]:
    return [
        rules_file
        for rules_file in ruleset.files
        if any(
            isinstance(item, RuleItem) and item.mode is Mode.DEFINE and PACK_TAG in (item.get("tags") or ())
            for item in rules_file.items
        )
    ]


def check_engine_versions(ruleset: RuleSet) -> list[Problem]:
    """Every file: say when a required engine version keeps Falco 0.40 from loading it."""
    problems = []
    for version, rules_file in ruleset.engine_versions:
        if version.version > OLDEST_ENGINE:
            release = ENGINE_RELEASES.get(version.version, "a release newer than 0.40")
            problems.append(
                Problem(
                    Severity.WARNING,
                    rules_file.path,
                    version.line,
                    f"required_engine_version {version.text} needs Falco {release}; "
                    "Falco 0.40 (engine 0.46.0) will not load this file",
                    "required_engine_version",
                    version.text,
                )
            )
    return problems


def check_evttype_restriction(ruleset: RuleSet) -> list[Problem]:
    """Every rule: its condition must be restricted by evt.type, and start with that restriction."""
    problems = []
    for rule in ruleset.expanded.values():
        label = item_label("rule", rule.name)
        severity = Severity.ERROR if rule.warn_evttypes else Severity.WARNING
        if rule.source != "syscall":
            continue
        if not event_types(rule.ast).restricted:
            problems.append(
                Problem(
                    severity,
                    rule.origin.file.path,
                    rule.origin.line,
                    "condition is not restricted by evt.type: Falco runs it on every event (LOAD_NO_EVTTYPE)",
                    label,
                )
            )
        elif not event_types(first_conjunct(rule.ast)).restricted:
            where = rule.condition_origins[0] if rule.condition_origins else rule.origin
            problems.append(
                Problem(
                    severity,
                    where.file.path,
                    where.line,
                    "condition must start with its evt.type restriction (e.g. 'evt.type in (execve, "
                    "execveat) and ...' or a macro that starts so), so the cheapest test runs first",
                    label,
                )
            )
    return problems


def check_pack(ruleset: RuleSet) -> list[Problem]:
    problems: list[Problem] = []
    for rules_file in pack_files(ruleset):
        problems += _check_pack_file(ruleset, rules_file)
    for rule in ruleset.expanded.values():
        if PACK_TAG not in rule.tags:
            continue
        present = set(output_fields(rule.output))
        missing = [name for name in REQUIRED_OUTPUT_FIELDS if name not in present]
        if missing:
            origin = rule.output_origin or rule.origin
            problems.append(
                _problem(
                    origin,
                    "output lacks the fields the responder reads: "
                    + " ".join(f"%{name}" for name in missing),
                    item_label("rule", rule.name),
                    f"%{missing[0]}",
                )
            )
    problems += consistency_problems(ruleset)
    return problems


def consistency_problems(ruleset: RuleSet) -> list[Problem]:
    """The lists and the macros that must stay in step with them (the mirrors, the model dirs'
    ancestors, the model dirs' '..' globs), each reported where the item was written: `rules check`
    says them, and `rules test` says those in the user's files."""
    return [
        *_check_mirrors(ruleset),
        *_check_model_dir_ancestors(ruleset),
        *_check_model_dir_dot_segments(ruleset),
    ]


MODEL_DIRS = "serving_guard_model_dirs"
MODEL_DIR_ANCESTORS = "serving_guard_model_dir_ancestors"
MODEL_DIR_DOT_SEGMENTS = "serving_guard_model_path_with_dot_segments"
# The macro's operands for a model dir: `evt.args glob "*..*/TAIL*"`, TAIL the dir's last
# component(s) (/models, /ml/model, /huggingface).
_DOT_SEGMENT_GLOB = re.compile(r"\*\.\.\*/([^*?\[\]]+)\*")


def dot_segment_glob(model_dir: str) -> str:
    """The glob of serving_guard_model_path_with_dot_segments a model dir needs: its last component
    after a '..' (`/var/run/../opt/triton/model_repository/x`, which the kernel resolves into the dir
    and libsinsp shows as /var/opt/triton/...)."""
    return f"*..*/{PurePosixPath(model_dir).name}*"


def _dot_segment_covers(glob: str, model_dir: str) -> bool:
    """Whether one `evt.args glob` operand of the macro reaches a model dir written through '..':
    its text after `*..*/` is the end of the dir's path (`*..*/ml/model*` for /opt/ml/model), or the
    glob matches the dir's last component right after a '..' (`*..*/model*` for .../model_repository)."""
    path = "/" + model_dir.strip("/")
    match = _DOT_SEGMENT_GLOB.fullmatch(glob)
    if match is not None and path.endswith("/" + match.group(1).strip("/")):
        return True
    return fnmatchcase(f"/x/../{PurePosixPath(path).name}/", glob)


def _check_model_dir_dot_segments(ruleset: RuleSet) -> list[Problem]:
    """Every model dir's last component has a '..' glob in serving_guard_model_path_with_dot_segments:
    without it a write through `/var/run/../<the dir>/...` (the kernel follows /var/run to /run first;
    libsinsp resolves the '..' as text and shows /var/<the dir>/...) goes unseen. Reported at the
    model dir's item (a user's append, not the pack)."""
    macro = ruleset.macros.get(MODEL_DIR_DOT_SEGMENTS)
    if macro is None or macro.ast is None or MODEL_DIRS not in ruleset.list_items:
        return []
    globs = [
        check.value.text
        for check in checks(macro.ast)
        if isinstance(check, Check)
        and check.field.name == "evt.args"
        and check.op == "glob"
        and isinstance(check.value, Value)
        and ".." in check.value.text
    ]
    model_dirs = ruleset.lists[MODEL_DIRS]
    origins = list(reversed(model_dirs.origins))
    problems = []
    for model_dir in ruleset.list_items[MODEL_DIRS]:
        name = PurePosixPath(model_dir).name
        if not name or any(_dot_segment_covers(glob, model_dir) for glob in globs):
            continue
        needed = dot_segment_glob(model_dir)
        file, line = locate(origins, model_dir, macro.origin, whole=True)
        problems.append(
            Problem(
                Severity.ERROR,
                file,
                line,
                f"list {MODEL_DIRS} has {model_dir!r} but macro {MODEL_DIR_DOT_SEGMENTS} tests no '..'"
                f" glob for its last component {name!r}: a write through '/var/run/..{model_dir}/...'"
                f" (the kernel follows /var/run to /run; libsinsp shows '/var{model_dir}/...') goes"
                f' unseen; append `or (evt.args contains ".." and evt.args glob "{needed}")` to the macro'
                " (override: condition: append)",
                item_label("macro", MODEL_DIR_DOT_SEGMENTS),
                model_dir,
            )
        )
    return problems


def _check_model_dir_ancestors(ruleset: RuleSet) -> list[Problem]:
    """Every directory above a model dir (but /) is in the ancestors list, which the tampering rule
    watches for a rename or a link put in its place: a model dir appended without its parents
    could be swapped whole by renaming one. Reported at the model dir's item."""
    if MODEL_DIRS not in ruleset.list_items or MODEL_DIR_ANCESTORS not in ruleset.list_items:
        return []
    have = set(ruleset.list_items[MODEL_DIR_ANCESTORS])
    model_dirs = ruleset.lists[MODEL_DIRS]
    origins = list(reversed(model_dirs.origins))
    problems = []
    for model_dir in ruleset.list_items[MODEL_DIRS]:
        parents = [
            str(parent) for parent in PurePosixPath(model_dir).parents if str(parent) not in ("/", ".")
        ]
        missing = [parent for parent in parents if parent not in have]
        if not missing:
            continue
        file, line = locate(origins, model_dir, model_dirs.origin, whole=True)
        problems.append(
            Problem(
                Severity.ERROR,
                file,
                line,
                f"list {MODEL_DIRS} has {model_dir!r} but list {MODEL_DIR_ANCESTORS} lacks"
                f" {', '.join(repr(m) for m in missing)}: renaming one away, or a link put in its place,"
                " would swap the model dir unseen; append to both",
                item_label("list", MODEL_DIRS),
                model_dir,
            )
        )
    return problems


def _check_pack_file(ruleset: RuleSet, rules_file: RulesFile) -> list[Problem]:
    problems: list[Problem] = []
    versions = [v for v, f in ruleset.engine_versions if f is rules_file]
    if not versions:
        problems.append(
            Problem(
                Severity.ERROR,
                rules_file.path,
                1,
                "the pack must declare required_engine_version: 0.46.0",
                None,
            )
        )
    for requirement, owner in ruleset.plugin_requirements:
        if owner is rules_file:
            problems.append(
                Problem(
                    Severity.ERROR,
                    rules_file.path,
                    requirement.line,
                    f"do not declare required_plugin_versions ({requirement.name}): Falco 0.40 has no "
                    "container plugin and would refuse the pack; the fields are built in there and come "
                    "from the bundled plugin on Falco >= 0.41",
                    "required_plugin_versions",
                    requirement.name,
                )
            )
    for item in rules_file.items:
        origin = Origin(rules_file, item.line)
        if (
            isinstance(item, ListItem | MacroItem)
            and item.mode is Mode.DEFINE
            and not item.name.startswith(NAME_PREFIX)
        ):
            kind = "list" if isinstance(item, ListItem) else "macro"
            problems.append(
                _problem(
                    origin,
                    f"{kind} names must start with {NAME_PREFIX}",
                    item_label(kind, item.name),
                    item.name,
                )
            )
        if isinstance(item, RuleItem) and item.mode is Mode.DEFINE:
            problems += _check_rule_item(rules_file, item)
    return problems


def _check_rule_item(rules_file: RulesFile, item: RuleItem) -> list[Problem]:
    problems = []
    label = item_label("rule", item.name)
    tags = list(item.get("tags") or ())
    origin = Origin(rules_file, item.key_lines.get("tags", item.line))
    if PACK_TAG not in tags:
        problems.append(_problem(origin, f"tags must include {PACK_TAG}", label))
    if not any(MITRE_TECHNIQUE.fullmatch(tag) for tag in tags):
        problems.append(
            _problem(origin, "tags must include a MITRE ATT&CK technique id such as T1059", label)
        )
    if not tags or not MATURITY.fullmatch(tags[0]):
        problems.append(
            _problem(
                origin,
                "the first tag must be the maturity (maturity_stable, maturity_incubating, ...)",
                label,
            )
        )
    priority = item.get("priority")
    if priority is not None and (priority not in SCHEMA_PRIORITIES or priority != priority.upper()):
        problems.append(
            _problem(
                Origin(rules_file, item.key_lines.get("priority", item.line)),
                f"priority must be upper case ({priority.upper()})",
                label,
                priority,
            )
        )
    return problems


def _check_mirrors(ruleset: RuleSet) -> list[Problem]:
    problems = []
    for mirror in MIRRORED_LISTS:
        macro = ruleset.macros.get(mirror.macro)
        if macro is None or macro.ast is None or mirror.list not in ruleset.list_items:
            continue
        values = {
            check.value.text
            for check in checks(macro.ast)
            if isinstance(check, Check)
            and check.field.name == mirror.field
            and check.op == mirror.operator
            and isinstance(check.value, Value)
        }
        # Tested values, keyed by what the list item would make of them (the stub macro's values with
        # another stub path count for the item they pin).
        tested = {
            mirror.value(item) if mirror.pattern is not None else value: value
            for value in values
            if (item := mirror.item_of(value)) is not None
        }
        expected = {mirror.value(item): item for item in ruleset.list_items[mirror.list]}
        label = item_label("macro", mirror.macro)
        # Reported where the item (or the clause) was written: a user's append, not the pack.
        list_origins = list(reversed(ruleset.lists[mirror.list].origins))
        for value in sorted(set(expected) - set(tested)):
            item = expected[value]
            file, line = locate(list_origins, item, macro.origin, whole=True)
            problems.append(
                Problem(
                    Severity.ERROR,
                    file,
                    line,
                    f"list {mirror.list} has {item!r} but macro {mirror.macro} does not test "
                    f"'{mirror.clause(value)}': {mirror.why}, {mirror.fix}",
                    label,
                    item,
                )
            )
        extras = sorted(tested[key] for key in set(tested) - set(expected))
        problems += _untested_items(mirror, macro.condition_origins, macro.origin, extras, list_origins[0])
    return problems


# The clauses one mirror problem names before "and N more".
MIRROR_CLAUSES_SHOWN = 3


def _untested_items(
    mirror: Mirror,
    condition_origins: list[Origin],
    fallback: Origin,
    extras: list[str],
    list_origin: Origin,
) -> list[Problem]:
    """One error per file and line where the macro tests values its list has no item for (each value
    located where the macro's text holds it): a list replaced by a user's file without some of the
    pack's items leaves the pack's macro testing every one, said once, not once a value."""
    by_place: dict[tuple[str, int | None], list[str]] = {}
    for extra in extras:
        place = locate(list(reversed(condition_origins)), extra, fallback, whole=True)
        first = next((key for key in by_place if key[0] == place[0]), place)
        by_place.setdefault(first, []).append(extra)
    label = item_label("macro", mirror.macro)
    problems = []
    for (file, line), values in by_place.items():
        tests = first_few([f"'{mirror.clause(value)}'" for value in values], MIRROR_CLAUSES_SHOWN)
        items = "item for it" if len(values) == 1 else "items for them"
        loaded = (
            f" (the list as loaded ends at {list_origin.file.path}:{list_origin.line})"
            if list_origin.file.path != file
            else ""
        )
        problems.append(
            Problem(
                Severity.ERROR,
                file,
                line,
                f"this macro tests {tests} but list {mirror.list} has no {items}{loaded}: keep them the same",
                label,
                values[0],
            )
        )
    return problems
