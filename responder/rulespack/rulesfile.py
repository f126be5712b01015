"""Read one Falco rules file into typed items, checking every key and value against Falco's rules
format (falco `userspace/engine/rule_loader_reader.cpp` and `rule_json_schema.h`, 0.40-0.44).

The reader never stops at the first problem: it records each one (file, line, item, token) and keeps
the items it could read, so one run of the checker reports everything that is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from responder.errors import SourceError
from responder.rulespack.condition import ALL_OPERATORS
from responder.rulespack.problems import Problem, Severity, item_label
from responder.yamlsource import YamlDocument, load_yaml, read_text

PRIORITIES = {
    "emergency": "EMERGENCY",
    "alert": "ALERT",
    "critical": "CRITICAL",
    "error": "ERROR",
    "warning": "WARNING",
    "notice": "NOTICE",
    "informational": "INFORMATIONAL",
    "info": "INFORMATIONAL",
    "debug": "DEBUG",
}
# Falco's JSON schema lists only these spellings; anything else loads but draws a schema warning.
SCHEMA_PRIORITIES = {
    "EMERGENCY",
    "ALERT",
    "CRITICAL",
    "ERROR",
    "WARNING",
    "NOTICE",
    "INFO",
    "INFORMATIONAL",
    "DEBUG",
}

RULE_KEYS = {
    "rule", "desc", "condition", "output", "priority", "source", "enabled", "tags", "exceptions",
    "warn_evttypes", "skip-if-unknown-filter", "capture", "capture_duration", "append", "override",
}  # fmt: skip
RULE_APPENDABLE = ("condition", "output", "desc", "tags", "exceptions")
RULE_REPLACEABLE = (
    "condition", "output", "desc", "priority", "tags", "exceptions", "enabled", "warn_evttypes",
    "skip-if-unknown-filter", "capture", "capture_duration",
)  # fmt: skip
# Keys newer than Falco 0.40: accepted, with a warning naming the first release that knows them.
NEWER_RULE_KEYS = {"capture": "0.42", "capture_duration": "0.42"}
EXCEPTION_KEYS = {"name", "fields", "comps", "values"}
SINGLE_FIELD_COMPS = ("in", "pmatch", "intersects")

# Falco loads an empty (or comments-only) rules file without a word.
EMPTY_FILE = "no rules, macros or lists: the file is empty (Falco loads it and adds nothing)"

_LIST_NAME = re.compile(r"[^()\"'\s=,]+")
_MACRO_NAME = re.compile(r"[a-zA-Z]+[a-zA-Z0-9_]*")
_SEMVER = re.compile(r"(\d+)\.(\d+)\.(\d+)")


class Mode(StrEnum):
    DEFINE = "define"
    APPEND = "append"  # `override: {key: append}` or the deprecated `append: true`
    REPLACE = "replace"  # lists and macros: `override: {key: replace}` (Falco: defines it again)
    OVERRIDE = "override"  # rules only: selective append and/or replace of keys
    ENABLE = "enable"  # rules only: the deprecated bare `enabled:` item


@dataclass(frozen=True)
class ExceptionSpec:
    name: str
    fields: str | tuple[str, ...] | None
    comps: str | tuple[str, ...] | None
    values: tuple[str | tuple[str | tuple[str, ...], ...], ...] | None
    line: int | None


@dataclass(frozen=True)
class EngineVersion:
    text: str
    version: tuple[int, int, int]
    line: int | None


@dataclass(frozen=True)
class PluginRequirement:
    name: str
    version: str
    line: int | None


@dataclass(frozen=True)
class ListItem:
    name: str
    items: tuple[str, ...]
    mode: Mode
    line: int | None


@dataclass(frozen=True)
class MacroItem:
    name: str
    condition: str
    mode: Mode
    line: int | None
    condition_line: int | None


@dataclass(frozen=True)
class RuleItem:
    name: str
    mode: Mode
    line: int | None
    values: dict[str, Any]  # the keys present (normalised): desc, condition, output, priority, tags, ...
    key_lines: dict[str, int | None]
    append_keys: frozenset[str] = frozenset()
    replace_keys: frozenset[str] = frozenset()

    def get(self, key: str) -> Any:
        return self.values.get(key)


Item = EngineVersion | PluginRequirement | ListItem | MacroItem | RuleItem


@dataclass
class RulesFile:
    path: str
    text: str
    items: list[Item] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    item_lines: list[int] = field(default_factory=list)  # start line of every top-level item

    def find(self, token: str, from_line: int | None, *, whole: bool = False) -> int | None:
        """The first line at or after ``from_line``, within the same item, that contains ``token``
        (with ``whole``, as a token of its own: not inside a longer word, k8s.ns.nam in k8s.ns.name)."""
        if from_line is None or not token:
            return None
        pattern = _whole_token(token) if whole else None
        lines = self.text.splitlines()
        later = [start for start in self.item_lines if start > from_line]
        end = min(later) - 1 if later else len(lines)
        for number in range(from_line, min(end, len(lines)) + 1):
            line = lines[number - 1]
            if (pattern.search(line) is not None) if pattern is not None else token in line:
                return number
        return None


# What separates the tokens of a condition or of a YAML flow list on a line of a rules file.
_WORD_DELIMITERS = r"\s()\[\]{},'\"="


def _whole_token(token: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![^{_WORD_DELIMITERS}]){re.escape(token)}(?![^{_WORD_DELIMITERS}])")


class _Reader:
    def __init__(self, doc: YamlDocument, result: RulesFile) -> None:
        self.doc = doc
        self.result = result

    def problem(
        self,
        path: tuple[str | int, ...],
        message: str,
        item: str | None,
        token: str | None = None,
        severity: Severity = Severity.ERROR,
    ) -> None:
        self.result.problems.append(
            Problem(severity, self.result.path, self.doc.line_of(path), message, item, token)
        )

    def warn(
        self, path: tuple[str | int, ...], message: str, item: str | None, token: str | None = None
    ) -> None:
        self.problem(path, message, item, token, Severity.WARNING)

    # --- scalars -------------------------------------------------------------------------------
    def text(self, data: dict[str, Any], key: str, path: tuple[str | int, ...], item: str) -> str | None:
        value = data.get(key)
        if value is None:
            self.problem((*path, key), f"'{key}' must not be empty", item, key)
            return None
        if isinstance(value, dict | list):
            self.problem((*path, key), f"'{key}' must be a string, not {_kind(value)}", item, key)
            return None
        text = _scalar_text(value)
        if not text.strip():
            self.problem((*path, key), f"'{key}' must not be empty", item, key)
            return None
        return text

    def boolean(self, data: dict[str, Any], key: str, path: tuple[str | int, ...], item: str) -> bool | None:
        value = data.get(key)
        if not isinstance(value, bool):
            self.problem((*path, key), f"'{key}' must be true or false, got {value!r}", item, key)
            return None
        return value

    def scalar_list(
        self, data: dict[str, Any], key: str, path: tuple[str | int, ...], item: str
    ) -> tuple[str, ...] | None:
        value = data.get(key)
        if value is None:
            return ()
        if not isinstance(value, list):
            self.problem((*path, key), f"'{key}' must be a list, not {_kind(value)}", item, key)
            return None
        out: list[str] = []
        for index, element in enumerate(value):
            if element is None or isinstance(element, dict | list):
                self.problem(
                    (*path, key, index),
                    f"every entry of '{key}' must be a scalar, got {element!r}",
                    item,
                    key,
                )
                return None
            if isinstance(element, float):
                self.warn(
                    (*path, key, index), f"quote {element!r} in '{key}': YAML reads it as a number", item
                )
            out.append(_scalar_text(element))
        return tuple(out)

    def unknown_keys(
        self, data: dict[str, Any], allowed: set[str], path: tuple[str | int, ...], kind: str, item: str
    ) -> None:
        for key in data:
            if key not in allowed:
                self.problem(
                    (*path, key),
                    f"unknown key '{key}' in a {kind} (allowed: {', '.join(sorted(allowed))})",
                    item,
                    str(key),
                )

    # --- items ---------------------------------------------------------------------------------
    def read(self) -> None:
        data = self.doc.data
        if data is None or data == []:
            # Likely a wrong path or a truncated file, and nothing else would show it; Falco takes it,
            # so a warning. No line: the parser puts an empty document past the end of the file.
            self.result.problems.append(Problem(Severity.WARNING, self.result.path, None, EMPTY_FILE))
            return
        if not isinstance(data, list):
            self.problem(
                (), "a rules file must be a YAML sequence of items (- rule: ..., - macro: ...)", None
            )
            return
        self.result.item_lines = [line for i in range(len(data)) if (line := self.doc.line_of((i,)))]
        for index, entry in enumerate(data):
            path: tuple[str | int, ...] = (index,)
            if not isinstance(entry, dict):
                self.problem(path, f"each item must be a mapping, got {_kind(entry)}", None)
                continue
            if "required_engine_version" in entry:
                self.read_engine_version(entry, path)
            elif "required_plugin_versions" in entry:
                self.read_plugin_versions(entry, path)
            elif "list" in entry:
                self.read_list(entry, path)
            elif "macro" in entry:
                self.read_macro(entry, path)
            elif "rule" in entry:
                self.read_rule(entry, path)
            else:
                keys = ", ".join(str(k) for k in entry) or "none"
                self.problem(
                    path,
                    f"unknown top-level item (keys: {keys}); expected rule, macro, list, "
                    "required_engine_version or required_plugin_versions",
                    None,
                    str(next(iter(entry), "")),
                )

    def read_engine_version(self, entry: dict[str, Any], path: tuple[str | int, ...]) -> None:
        item = "required_engine_version"
        self.unknown_keys(entry, {"required_engine_version"}, path, "required_engine_version item", item)
        value = entry["required_engine_version"]
        line = self.doc.line_of((*path, "required_engine_version"))
        if isinstance(value, int) and not isinstance(value, bool):
            self.result.items.append(EngineVersion(str(value), (0, value, 0), line))
            return
        match = _SEMVER.fullmatch(str(value)) if isinstance(value, str) else None
        if match is None:
            self.problem(path, f'expected a semver string such as "0.46.0", got {value!r}', item, str(value))
            return
        major, minor, patch = (int(part) for part in match.groups())
        self.result.items.append(EngineVersion(str(value), (major, minor, patch), line))

    def read_plugin_versions(self, entry: dict[str, Any], path: tuple[str | int, ...]) -> None:
        item = "required_plugin_versions"
        self.unknown_keys(entry, {"required_plugin_versions"}, path, "required_plugin_versions item", item)
        value = entry["required_plugin_versions"]
        key_path = (*path, "required_plugin_versions")
        if not isinstance(value, list):
            self.problem(key_path, "required_plugin_versions must be a sequence", item)
            return
        for index, plugin in enumerate(value):
            plugin_path = (*key_path, index)
            if not isinstance(plugin, dict):
                self.problem(plugin_path, "each plugin requirement must be a mapping", item)
                continue
            self.unknown_keys(
                plugin, {"name", "version", "alternatives"}, plugin_path, "plugin requirement", item
            )
            name = self.text(plugin, "name", plugin_path, item)
            version = self.text(plugin, "version", plugin_path, item)
            if version is not None and not _SEMVER.fullmatch(version):
                self.problem((*plugin_path, "version"), f"invalid plugin version {version!r}", item, version)
            if name and version:
                self.result.items.append(PluginRequirement(name, version, self.doc.line_of(plugin_path)))

    def read_list(self, entry: dict[str, Any], path: tuple[str | int, ...]) -> None:
        name = _scalar_text(entry["list"]) if entry["list"] is not None else ""
        item = item_label("list", name)
        self.unknown_keys(entry, {"list", "items", "append", "override"}, path, "list", item)
        if not _LIST_NAME.fullmatch(name):
            self.problem((*path, "list"), f"invalid list name {name!r}", item, name)
            return
        if "items" not in entry:
            self.problem(path, "a list needs 'items'", item)
            return
        items = self.scalar_list(entry, "items", path, item)
        mode = self.read_simple_override(entry, path, item, "items")
        if items is not None and mode is not None:
            self.result.items.append(ListItem(name, items, mode, self.doc.line_of(path)))

    def read_macro(self, entry: dict[str, Any], path: tuple[str | int, ...]) -> None:
        name = _scalar_text(entry["macro"]) if entry["macro"] is not None else ""
        item = item_label("macro", name)
        self.unknown_keys(entry, {"macro", "condition", "append", "override"}, path, "macro", item)
        if not _MACRO_NAME.fullmatch(name):
            self.problem((*path, "macro"), f"invalid macro name {name!r} (letters, digits, '_')", item, name)
            return
        if "condition" not in entry:
            self.problem(path, "a macro needs a 'condition'", item)
            return
        condition = self.text(entry, "condition", path, item)
        mode = self.read_simple_override(entry, path, item, "condition")
        if condition is not None and mode is not None:
            self.result.items.append(
                MacroItem(
                    name, condition, mode, self.doc.line_of(path), self.doc.line_of((*path, "condition"))
                )
            )

    def read_simple_override(
        self, entry: dict[str, Any], path: tuple[str | int, ...], item: str, key: str
    ) -> Mode | None:
        """Lists and macros: `override: {items|condition: append|replace}` or the deprecated `append`."""
        append = False
        if "append" in entry:
            flag = self.boolean(entry, "append", path, item)
            if flag is None:
                return None
            append = flag
            self.warn((*path, "append"), "'append' is deprecated: use override: {" + key + ": append}", item)
        if "override" not in entry:
            return Mode.APPEND if append else Mode.DEFINE
        override = entry["override"]
        opath = (*path, "override")
        if append:
            self.problem(opath, "'append' and 'override' cannot be used together", item)
            return None
        if not isinstance(override, dict) or not override:
            self.problem(opath, "'override' must be a mapping such as {" + key + ": append}", item)
            return None
        mode = Mode.DEFINE
        for okey, operation in override.items():
            if okey != key:
                self.problem(
                    (*opath, okey), f"key '{okey}' cannot be overridden here (only '{key}')", item, okey
                )
                return None
            if operation not in ("append", "replace"):
                self.problem(
                    (*opath, okey), f"invalid override operation {operation!r}: use append or replace", item
                )
                return None
            mode = Mode.APPEND if operation == "append" else Mode.REPLACE
        return mode

    def read_rule(self, entry: dict[str, Any], path: tuple[str | int, ...]) -> None:
        name = _scalar_text(entry["rule"]) if entry["rule"] is not None else ""
        item = item_label("rule", name)
        if not name.strip():
            self.problem((*path, "rule"), "a rule needs a non-empty name", item)
            return
        self.unknown_keys(entry, RULE_KEYS, path, "rule", item)
        for key, release in NEWER_RULE_KEYS.items():
            if key in entry:
                self.warn(
                    (*path, key), f"'{key}' needs Falco >= {release}; older releases ignore it", item, key
                )
        append_flag = False
        if "append" in entry:
            flag = self.boolean(entry, "append", path, item)
            if flag is None:
                return
            append_flag = flag
            self.warn((*path, "append"), "'append' is deprecated: use override: {condition: append}", item)
        values: dict[str, Any] = {}
        ok = True
        for key in entry:
            if key in ("rule", "append", "override") or key not in RULE_KEYS:
                continue
            parsed = self.rule_value(entry, key, path, item)
            if parsed is None:
                ok = False
            else:
                values[key] = parsed
        key_lines = {key: self.doc.line_of((*path, key)) for key in entry if isinstance(key, str)}
        line = self.doc.line_of(path)
        if "override" in entry:
            overrides = self.rule_overrides(entry, path, item, append_flag)
            if overrides is None or not ok:
                return
            appends, replaces = overrides
            self.result.items.append(
                RuleItem(name, Mode.OVERRIDE, line, values, key_lines, appends, replaces)
            )
            return
        if append_flag:
            ignored = [k for k in values if k not in ("condition", "exceptions")]
            for key in ignored:
                self.problem((*path, key), f"with append: true Falco appends only condition and exceptions; "
                             f"'{key}' would be ignored", item, key)  # fmt: skip
            if ok and not ignored:
                self.result.items.append(RuleItem(name, Mode.APPEND, line, values, key_lines))
            return
        if not any(key in entry for key in ("condition", "output", "desc", "priority")):
            if "enabled" not in entry:
                self.problem(path, "a rule needs desc, condition, output and priority", item)
                return
            self.warn(path, "a bare 'enabled' item is deprecated: use override: {enabled: replace}", item)
            if ok:
                self.result.items.append(RuleItem(name, Mode.ENABLE, line, values, key_lines))
            return
        for key in ("desc", "condition", "output", "priority"):
            if key not in entry:
                self.problem(path, f"missing required key '{key}'", item, key)
                ok = False
        for exception in values.get("exceptions", ()):
            if exception.fields is None:
                self.problem(path, f"exception '{exception.name}' needs 'fields'", item, exception.name)
                ok = False
        if ok:
            self.result.items.append(RuleItem(name, Mode.DEFINE, line, values, key_lines))

    def rule_overrides(
        self, entry: dict[str, Any], path: tuple[str | int, ...], item: str, append_flag: bool
    ) -> tuple[frozenset[str], frozenset[str]] | None:
        override = entry["override"]
        opath = (*path, "override")
        if append_flag:
            self.problem(opath, "'append' and 'override' cannot be used together", item)
            return None
        if not isinstance(override, dict) or not override:
            self.problem(opath, "'override' must be a mapping such as {condition: append}", item)
            return None
        appends: set[str] = set()
        replaces: set[str] = set()
        for key, operation in override.items():
            if operation == "append" and key in RULE_APPENDABLE:
                appends.add(key)
            elif operation == "replace" and key in RULE_REPLACEABLE:
                replaces.add(key)
            elif operation not in ("append", "replace"):
                self.problem(
                    (*opath, key), f"invalid override operation {operation!r} for '{key}'", item, str(key)
                )
                return None
            else:
                self.problem(
                    (*opath, key), f"key '{key}' cannot be overridden with {operation}", item, str(key)
                )
                return None
        present = {key for key in (*RULE_APPENDABLE, *RULE_REPLACEABLE) if key in entry}
        for key in sorted((appends | replaces) - present):
            self.problem(opath, f"an override for '{key}' was given but '{key}' is not defined", item, key)
            return None
        for key in sorted(present - appends - replaces):
            self.problem((*path, key), f"key '{key}' has no entry under 'override'", item, key)
            return None
        return frozenset(appends), frozenset(replaces)

    def rule_value(self, entry: dict[str, Any], key: str, path: tuple[str | int, ...], item: str) -> Any:
        if key in ("desc", "condition", "output", "source"):
            return self.text(entry, key, path, item)
        if key == "priority":
            text = self.text(entry, key, path, item)
            if text is None:
                return None
            if text.lower() not in PRIORITIES:
                self.problem(
                    (*path, key), f"invalid priority {text!r} (one of: {', '.join(PRIORITIES)})", item, text
                )
                return None
            if text not in SCHEMA_PRIORITIES:
                self.warn(
                    (*path, key), f"priority {text!r}: write it upper case as Falco's schema does", item, text
                )
            return text  # as written; expand.py normalises it, policy.py checks the spelling
        if key in ("enabled", "warn_evttypes", "skip-if-unknown-filter", "capture"):
            return self.boolean(entry, key, path, item)
        if key == "capture_duration":
            value = entry[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                self.problem((*path, key), f"'{key}' must be a whole number of milliseconds", item, key)
                return None
            return value
        if key == "tags":
            return self.scalar_list(entry, key, path, item)
        if key == "exceptions":
            return self.exceptions(entry, path, item)
        return None

    def exceptions(
        self, entry: dict[str, Any], path: tuple[str | int, ...], item: str
    ) -> tuple[ExceptionSpec, ...] | None:
        raw = entry.get("exceptions")
        epath = (*path, "exceptions")
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self.problem(epath, "'exceptions' must be a sequence", item)
            return None
        specs: list[ExceptionSpec] = []
        ok = True
        for index, exc in enumerate(raw):
            spec = self.exception(exc, (*epath, index), item)
            if spec is None:
                ok = False
                continue
            if any(s.name == spec.name for s in specs):
                self.problem(
                    (*epath, index), f"exception names must be unique: '{spec.name}'", item, spec.name
                )
                ok = False
                continue
            specs.append(spec)
        return tuple(specs) if ok else None

    def exception(self, exc: Any, path: tuple[str | int, ...], item: str) -> ExceptionSpec | None:
        if not isinstance(exc, dict):
            self.problem(path, "each exception must be a mapping with name, fields, comps, values", item)
            return None
        self.unknown_keys(exc, EXCEPTION_KEYS, path, "rule exception", item)
        if any(key not in EXCEPTION_KEYS for key in exc):
            return None
        name = exc.get("name")
        if not isinstance(name, str) or not name.strip():
            self.problem(path, "an exception needs a non-empty 'name'", item)
            return None
        label = f"exception '{name}'"
        fields = self.exception_entry(exc.get("fields"), (*path, "fields"), item, label, "fields")
        comps = self.exception_entry(exc.get("comps"), (*path, "comps"), item, label, "comps")
        if fields is False or comps is False:
            return None
        assert not isinstance(fields, bool) and not isinstance(comps, bool)
        if isinstance(fields, tuple):
            if comps is None:
                comps = tuple("=" for _ in fields)
            if not isinstance(comps, tuple) or len(comps) != len(fields):
                self.problem(
                    (*path, "comps"), f"{label}: fields and comps lists must have equal length", item
                )
                return None
            for comp in comps:
                if comp not in ALL_OPERATORS:
                    self.problem(
                        (*path, "comps"), f"{label}: '{comp}' is not a supported operator", item, comp
                    )
                    return None
        elif isinstance(fields, str):
            comps = "in" if comps is None else comps
            if not isinstance(comps, str) or comps not in SINGLE_FIELD_COMPS:
                self.problem(
                    (*path, "comps"),
                    f"{label}: when fields is a single field, comps must be one of in, pmatch, intersects",
                    item,
                    str(comps),
                )
                return None
        values = self.exception_values(exc, fields, path, item, label)
        if values is False:
            return None
        assert not isinstance(values, bool)
        return ExceptionSpec(name, fields, comps, values, self.doc.line_of(path))

    def exception_entry(
        self, value: Any, path: tuple[str | int, ...], item: str, label: str, key: str
    ) -> str | tuple[str, ...] | bool | None:
        if value is None:
            return None
        if isinstance(value, str):
            if not value.strip():
                self.problem(path, f"{label}: '{key}' must not be empty", item)
                return False
            return value
        if isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value):
            return tuple(value)
        self.problem(path, f"{label}: '{key}' must be a string or a list of strings", item)
        return False

    def exception_values(
        self,
        exc: dict[str, Any],
        fields: str | tuple[str, ...] | None,
        path: tuple[str | int, ...],
        item: str,
        label: str,
    ) -> tuple[str | tuple[str | tuple[str, ...], ...], ...] | bool | None:
        if "values" not in exc:
            return None
        raw = exc["values"]
        vpath = (*path, "values")
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self.problem(vpath, f"{label}: 'values' must be a sequence", item)
            return False
        out: list[str | tuple[str | tuple[str, ...], ...]] = []
        for index, value in enumerate(raw):
            if isinstance(fields, tuple) and (not isinstance(value, list) or len(value) != len(fields)):
                message = f"{label}: each value must be a list of {len(fields)} entries, one per field"
                self.problem((*vpath, index), message, item)
                return False
            if isinstance(fields, str) and not _is_scalar(value):
                message = f"{label}: with a single field, values must be a list of strings"
                self.problem((*vpath, index), message, item)
                return False
            # Without fields (values appended to an existing exception) either shape is read here;
            # expand.py checks it against the exception's fields.
            if isinstance(value, list):
                tuple_value: list[str | tuple[str, ...]] = []
                for element in value:
                    if isinstance(element, list) and all(_is_scalar(e) for e in element):
                        tuple_value.append(tuple(_scalar_text(e) for e in element))
                    elif _is_scalar(element):
                        tuple_value.append(_scalar_text(element))
                    else:
                        self.problem((*vpath, index), f"{label}: invalid value {element!r}", item)
                        return False
                out.append(tuple(tuple_value))
            elif _is_scalar(value):
                out.append(_scalar_text(value))
            else:
                self.problem((*vpath, index), f"{label}: invalid value {value!r}", item)
                return False
        return tuple(out)


def _is_scalar(value: Any) -> bool:
    return value is not None and not isinstance(value, dict | list)


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _kind(value: Any) -> str:
    """What a YAML value is, with its article: "a mapping", "null", "an integer"."""
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a sequence"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return f"a {type(value).__name__}"


def read_rules_text(text: str, path: str) -> RulesFile:
    result = RulesFile(path=path, text=text)
    try:
        doc = load_yaml(text, path)
    except SourceError as exc:
        message = exc.message
        if "tag:yaml.org,2002:value" in message:
            # YAML 1.1 gives a bare '=' a meaning of its own; Falco's reader takes it as text.
            message = (
                'write a bare = in quotes ("="), e.g. comps: ["="]: this YAML reader cannot read it bare'
            )
        result.problems.append(Problem(Severity.ERROR, path, exc.line, message))
        return result
    _Reader(doc, result).read()
    return result


def read_rules_file(path: str) -> RulesFile:
    try:
        text = read_text(path, "a rules file")
    except SourceError as exc:
        result = RulesFile(path=path, text="")
        result.problems.append(Problem(Severity.ERROR, path, exc.line, exc.message))
        return result
    return read_rules_text(text, path)
