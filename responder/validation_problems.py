"""A strict model's refusal of a YAML document, in the house's words and at each key's line:
"file:line: slack.mode: must be one of disabled, bot, webhook; not 'Bot'". The config, the
scenarios and the rules' examples file report their errors through this."""

from __future__ import annotations

import ast
import base64
import datetime
import functools
import math
import re
from typing import Any, NamedTuple

import yaml
from pydantic import BaseModel, ValidationError

from responder.name_patterns import PATTERN_WORDS
from responder.yamlsource import YamlDocument


def dotted_path(path: tuple[str | int, ...]) -> str:
    text = ""
    for part in path:
        shown = _visible(str(part))
        text += f"[{part}]" if isinstance(part, int) else (f".{shown}" if text else shown)
    return text or "(top level)"


def _visible(key: str) -> str:
    """A key with the characters a terminal shows as nothing named (a second byte-order mark
    at the start of a file reads as part of the first key)."""
    return "".join(
        char if char.isprintable() else _INVISIBLE_NAMES.get(char, f"<U+{ord(char):04X}>") for char in key
    )


_INVISIBLE_NAMES = {"\ufeff": "<U+FEFF byte-order mark>"}


def located(
    document: YamlDocument, path: tuple[str | int, ...], message: str, at: tuple[str | int, ...] | None = None
) -> str:
    """``file:line: key: message``, as every problem in a config is reported; the line is that of
    ``at`` when given (a bad key's own line, where ``path`` names the mapping holding it)."""
    line = document.line_of(path if at is None else at)
    where = f"{document.file}:{line}" if line is not None else document.file
    return f"{where}: {dotted_path(path)}: {message}"


# pydantic's error types, said in the config's terms (its messages speak of Python types).
_TYPE_WORDS = {
    "extra_forbidden": "unknown key",
    "tuple_type": "must be a list (e.g. [a, b])",
    "list_type": "must be a list (e.g. [a, b])",
    "set_type": "must be a list (e.g. [a, b])",
    "frozen_set_type": "must be a list (e.g. [a, b])",
    "dict_type": "must be a mapping of keys to values",
    "model_type": "must be a mapping of keys to values",
    "model_attributes_type": "must be a mapping of keys to values",
    "string_type": "must be text",
    "string_unicode": "must be text",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "int_parsing": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "none_required": "must be empty (null)",
    "missing": "required, missing",
}
# The same, as one of several a value may be (a union: each member refuses it on its own).
_TYPE_NOUNS = {
    "tuple_type": "a list",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "string_type": "text",
    "bool_type": "a boolean (true or false)",
    "bool_parsing": "a boolean (true or false)",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "none_required": "empty (null)",
}
# Bounds, with pydantic's ctx key for the limit.
_BOUND_WORDS = {
    "greater_than_equal": ("must be at least", "ge"),
    "greater_than": ("must be more than", "gt"),
    "less_than_equal": ("must be at most", "le"),
    "less_than": ("must be less than", "lt"),
}
# Lengths, with pydantic's ctx key for the limit and what is counted.
_LENGTH_WORDS = {
    "too_short": ("must have at least", "min_length", "item"),
    "too_long": ("must have at most", "max_length", "item"),
    "string_too_short": ("must be at least", "min_length", "character"),
    "string_too_long": ("must be at most", "max_length", "character"),
}
_PLAIN_CHOICE = re.compile(r"[\w./:-]+")


def clipped(value: object) -> str:
    text = _yaml_text(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _yaml_text(value: object) -> str:
    """A value as the YAML file has it (true, 2024-01-01, ['a', no]), not as Python prints it
    (True, datetime.date(2024, 1, 1)); text stays quoted, so its spaces and escapes show."""
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, bytes):
        return f"!!binary {base64.b64encode(value).decode()}"
    if isinstance(value, datetime.date):  # a datetime too
        return value.isoformat()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_yaml_text(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_yaml_text(key)}: {_yaml_text(item)}" for key, item in value.items()) + "}"
    return repr(value)


def _choices(expected: object) -> list[str] | None:
    """The values pydantic lists in an enum's or a literal's error ("'a', 'b' or 'c'", "1"), or
    None when they are not plain values."""
    if not isinstance(expected, str):
        return None
    try:
        tree = ast.parse(expected, mode="eval").body  # "'a', 'b' or 'c'" is a tuple ending in an `or`
    except SyntaxError:
        return None
    values: list[str] = []
    for item in tree.elts if isinstance(tree, ast.Tuple) else [tree]:
        for value in item.values if isinstance(item, ast.BoolOp) else [item]:
            if not isinstance(value, ast.Constant):
                return None
            text = str(value.value)
            values.append(text if _PLAIN_CHOICE.fullmatch(text) else repr(value.value))
    return values or None


def _given(reason: str, error: Any, separator: str = ",") -> str:
    """The reason with the value the file had: "(it is empty)" for a YAML null, else the value
    (clipped, escaped as Python does)."""
    given = error.get("input")
    return f"{reason} (it is empty)" if given is None else f"{reason}{separator} not {clipped(given)}"


# A number with an exponent as Python reads it (1e99, 5E-3, .5e3): YAML 1.1 (PyYAML) reads it as a
# float only with a dot in its mantissa and a sign in its exponent (1e99 and 1.0e99 are text to it,
# 1.0e+99 a number).
_NUMBER_TEXT = re.compile(r"(?P<mantissa>[-+]?[0-9_]*\.?[0-9_]*)[eE](?P<sign>[-+]?)(?P<exponent>[0-9]+)")


def _yaml_float_spelling(given: object) -> str | None:
    """For text that is a number to Python but that YAML read as text (``1e99``): the way to write it
    that YAML reads as that number (``1.0e+99``); else None."""
    if not isinstance(given, str) or len(given) > 64:
        return None
    match = _NUMBER_TEXT.fullmatch(given)
    if match is None or not any(char.isdigit() for char in match["mantissa"]):
        return None  # without an exponent YAML reads a number as one: such text was quoted
    mantissa = match["mantissa"]
    if "." not in mantissa:
        mantissa += ".0"
    spelled = f"{mantissa}e{match['sign'] or '+'}{match['exponent']}"
    try:
        value = yaml.safe_load(spelled)
    except yaml.YAMLError:
        return None
    if not isinstance(value, float) or not math.isfinite(value) or spelled == given:
        return None
    return spelled


def _in_words(error: Any) -> str:
    """One validation error as the file's reader needs it: what the key must be, and what the
    file had when that is not plain from the line (a YAML null, a text where a list goes)."""
    kind = error["type"]
    given = error.get("input")
    ctx = error.get("ctx") or {}
    if kind == "string_pattern_mismatch":
        pattern = ctx.get("pattern", "")
        words = PATTERN_WORDS.get(pattern, f"does not have the form this key takes ({pattern})")
        return f"{clipped(given)}: {words}" if isinstance(given, str) else words
    if kind in ("enum", "literal_error", "union_tag_invalid"):
        choices = _choices(ctx.get("expected_tags" if kind == "union_tag_invalid" else "expected"))
        if kind == "union_tag_invalid":
            given = ctx.get("tag")
        if choices is not None and len(choices) == 1:
            return _given(f"must be {choices[0]}", {"input": given})
        if choices is not None:
            return _given(f"must be one of {', '.join(choices)}", {"input": given}, ";")
    if kind == "union_tag_not_found":
        return _TYPE_WORDS["missing"]
    if kind in _BOUND_WORDS:
        if isinstance(given, float) and math.isnan(given):  # .nan is neither above nor below a bound
            return _given("must be a finite number", error)
        words, key = _BOUND_WORDS[kind]
        limit = ctx.get(key)
        return f"{words} {limit}, not {clipped(given)}" if limit is not None else str(error["msg"])
    if kind in _LENGTH_WORDS and ctx.get(_LENGTH_WORDS[kind][1]) is not None:
        words, key, unit = _LENGTH_WORDS[kind]
        limit = ctx[key]
        counted = f"{words} {limit} {unit}{'' if limit == 1 else 's'}"
        if unit == "item":
            actual = ctx.get("actual_length")
            return f"{counted}, not {actual}" if actual is not None else counted
        return f"{counted} long, not {clipped(given)}"
    if kind == "invalid_key":
        return f"keys must be text, not {clipped(given)} (quote a key that is meant as text)"
    if kind in _TYPE_WORDS:
        reason = _TYPE_WORDS[kind]
        if kind in ("extra_forbidden", "missing"):
            return reason
        spelled = _yaml_float_spelling(given) if kind in ("float_type", "float_parsing") else None
        hint = f" (YAML reads {given} as text: write {spelled})" if spelled is not None else ""
        return _given(reason, error) + hint
    message = str(error["msg"])
    if message.startswith("Input should be "):  # a type not named above, in the same words
        return _given("must be " + message.removeprefix("Input should be "), error)
    return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _data_path(error: Any, data: Any, tag_keys: frozenset[str]) -> tuple[str | int, ...]:
    """The keys of the document an error is about. pydantic's loc also holds the names of validator
    steps ("function-after[...]"), of a union's members ("str", "int") and a tagged union's tag (the
    value of its discriminator key, e.g. "shell" for {action: shell}). Following the data, keep only
    the keys it has, and the key a "missing" error names. ``tag_keys``: the models' discriminator
    keys; a tag is the first part under a mapping whose discriminator key holds that very value."""
    loc = [part for part in error["loc"] if isinstance(part, int) or not part.startswith(("function-", "["))]
    path: list[str | int] = []
    node = data
    entered = True  # node was just reached: a tagged union's tag, if any, comes first
    for index, part in enumerate(loc):
        last = index == len(loc) - 1
        if node is _UNKNOWN:
            path.append(part)
        elif isinstance(node, list):
            if isinstance(part, int) and 0 <= part < len(node):
                path.append(part)
                node = node[part]
                entered = True
            # else: a union member's name (the value is a list, "str" refused it)
        elif isinstance(node, dict):
            if last and error["type"] != "missing" and error.get("input") == node:
                continue  # the mapping's own error, under its union tag or member's name
            if entered and any(node.get(key) == part for key in tag_keys):
                entered = False
                continue  # a tagged union's tag: the keys after it are the mapping's own
            path.append(part)
            # Not in the file: the key a "missing" error names, or one a validator added.
            node = node.get(part, _UNKNOWN)
            entered = True
        # else: a scalar has no keys; the part names a union member or a validator step
    return tuple(path)


_UNKNOWN = object()


@functools.cache
def discriminator_keys(model: type[BaseModel]) -> frozenset[str]:
    """The keys the model's tagged unions are told apart by (Field(discriminator=...)), at any depth."""
    keys: set[str] = set()
    pending: list[object] = [model.__pydantic_core_schema__]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            if node.get("type") == "tagged-union" and isinstance(node.get("discriminator"), str):
                keys.add(node["discriminator"])
            pending.extend(node.values())
        elif isinstance(node, list | tuple):
            pending.extend(node)
    return frozenset(keys)


class Problem(NamedTuple):
    """One thing wrong in a YAML file, at the key it is about."""

    path: tuple[str | int, ...]  # the key, as dotted_path says it
    message: str
    at: tuple[str | int, ...] | None = None  # where to look its line up, when not at path


def validation_problems(exc: ValidationError, data: Any, model: type[BaseModel]) -> list[Problem]:
    """pydantic's refusal of ``data`` (a YAML document's) in the house's words, each at its key:
    what the key must be and the value the file had ("slack.mode: must be one of disabled, bot,
    webhook; not 'Bot'"), never the validation library's terms. Every loader of a strict model
    reports its errors through this (the config, scenarios, the rules' examples file)."""
    tag_keys = discriminator_keys(model)
    errors = [(_data_path(error, data, tag_keys), error) for error in exc.errors(include_url=False)]
    problems: list[Problem] = []
    index = 0
    while index < len(errors):
        path, error = errors[index]
        kind = error["type"]
        # A list whose item failed is also "too short" (pydantic counts the items that passed):
        # the item's own error says what is wrong.
        if kind == "too_short" and any(
            len(other) > len(path) and other[: len(path)] == path and isinstance(other[len(path)], int)
            for other, _ in errors
        ):
            index += 1
            continue
        # A union's members each refuse the value: one problem, naming every type it may be.
        members = [error]
        while (
            index + len(members) < len(errors)
            and errors[index + len(members)][0] == path
            and kind in _TYPE_NOUNS
            and errors[index + len(members)][1]["type"] in _TYPE_NOUNS
        ):
            members.append(errors[index + len(members)][1])
        index += len(members)
        if len(members) > 1:
            nouns = list(dict.fromkeys(_TYPE_NOUNS[member["type"]] for member in members))
            listed = f"{', '.join(nouns[:-1])} or {nouns[-1]}" if len(nouns) > 1 else nouns[0]
            problems.append(Problem(path, _given(f"must be {listed}", error)))
        elif kind == "invalid_key":
            problems.append(Problem(path[:-1], _in_words(error), path))
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            key = _choices((error.get("ctx") or {}).get("discriminator"))
            problems.append(Problem((*path, key[0]) if key and len(key) == 1 else path, _in_words(error)))
        else:
            problems.append(Problem(path, _in_words(error)))
    return problems
