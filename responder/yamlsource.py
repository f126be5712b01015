"""YAML loading that remembers where every value came from, so errors can name file and line.

Hostile or broken input is refused with a file:line error, never a traceback: a file larger than
:data:`MAX_FILE_BYTES` (read no further, so /dev/zero or an endless FIFO are refused too), characters
YAML does not allow, nesting deeper than :data:`MAX_DEPTH`, more than :data:`MAX_VALUES` values, an
alias inside the node it names (a recursive structure), and aliases that would expand the document
by more than :data:`MAX_ALIAS_VALUES` values (a "billion laughs" file: a few lines of nested aliases
that stand for billions of values).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.composer import ComposerError

from responder.errors import SourceError

Path = tuple[str | int, ...]

# Every YAML input (configs, rules files, examples, scenarios, kubeconfigs) is read up to this many
# bytes: Falco's whole upstream rule set is well under 1 MiB, a config or kubeconfig a few KiB.
MAX_FILE_BYTES = 16 * 1024 * 1024
# Values (mappings, sequences, scalars; keys included) one document may hold. Each costs about 1 KiB
# while loading, so this bounds memory where MAX_FILE_BYTES alone would not ("[0,0,0,...]" packs a
# value into every two bytes); the largest file in this repository holds about 1,200.
MAX_VALUES = 200_000
# Deeper than any config or rules file needs; keeps the loader's recursion far from Python's limit.
MAX_DEPTH = 100
# Values an alias may stand for, summed over the document (merge keys `<<: *x` included).
MAX_ALIAS_VALUES = 100_000

_MERGE_TAG = "tag:yaml.org,2002:merge"
_VALUE_TAG = "tag:yaml.org,2002:value"
_STR_TAG = "tag:yaml.org,2002:str"
# What a plain mapping or list resolves to (also `!`, YAML's non-specific tag); any other tag on one
# (!!set, !!omap, !!python/object:..., a custom !tag) would be silently dropped: it is refused, as an
# unknown tag on a scalar is.
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_LINE_BREAK = re.compile("\r\n|[\n\r\x85\u2028\u2029]")  # YAML's line breaks, as PyYAML counts them


@dataclass(frozen=True)
class YamlDocument:
    """Plain Python data (dicts, lists, scalars) plus the 1-based line of every node by its path."""

    file: str
    data: Any
    lines: Mapping[Path, int] = field(default_factory=dict)

    def line_of(self, path: Path) -> int | None:
        """Line of the node at ``path``, or of its nearest ancestor that has one."""
        probe = tuple(path)
        while True:
            if probe in self.lines:
                return self.lines[probe]
            if not probe:
                return None
            probe = probe[:-1]

    def error(self, path: Path, message: str) -> SourceError:
        return SourceError(self.file, self.line_of(path), message)


def _mark_line(mark: yaml.Mark | None) -> int | None:
    return mark.line + 1 if mark is not None else None


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with bounds on nesting and on alias expansion, checked while composing."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.depth = 0
        self.open_anchors: set[str] = set()  # anchors of the nodes being composed (the current path)
        self.sizes: dict[int, int] = {}  # id(node) -> values it stands for, aliases expanded
        self.alias_values = 0
        self.values = 0  # nodes composed, aliases not counted (MAX_ALIAS_VALUES bounds those)

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]  # untyped in the stubs
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self.open_anchors:
                raise _refused(
                    f"an alias refers to itself: *{event.anchor} stands inside the node anchored "
                    f"&{event.anchor} (a recursive structure)",
                    event,
                )
            target = super().compose_node(parent, index)
            self.alias_values += self.sizes[id(target)]
            if self.alias_values > MAX_ALIAS_VALUES:
                raise _refused(
                    f"aliases expand to more than {MAX_ALIAS_VALUES} values (at *{event.anchor}): "
                    "write the values out or use fewer nested aliases",
                    event,
                )
            return target
        if self.depth >= MAX_DEPTH:
            raise _refused(f"nested too deeply (more than {MAX_DEPTH} levels)", event)
        self.values += 1
        if self.values > MAX_VALUES:
            raise _refused(
                f"more than {MAX_VALUES} values (mappings, lists and scalars): far more than a config, "
                "rules, scenario or kubeconfig file holds",
                event,
            )
        anchor: str | None = getattr(event, "anchor", None)
        self.depth += 1
        if anchor is not None:
            self.open_anchors.add(anchor)
        try:
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
            if anchor is not None:
                self.open_anchors.discard(anchor)
        size = 1
        if isinstance(node, yaml.SequenceNode):
            size += sum(self.sizes[id(item)] for item in node.value)
        elif isinstance(node, yaml.MappingNode):
            size += sum(self.sizes[id(key)] + self.sizes[id(value)] for key, value in node.value)
        self.sizes[id(node)] = size
        return node


def _refused(message: str, event: yaml.Event) -> ComposerError:
    mark = event.start_mark
    return ComposerError(None, None, message, mark if isinstance(mark, yaml.error.Mark) else None)


class _Builder:
    def __init__(self, file: str, loader: _Loader) -> None:
        self.file = file
        self.loader = loader
        self.lines: dict[Path, int] = {}
        self.pairs: dict[int, list[tuple[yaml.Node, yaml.Node]]] = {}  # id(mapping) -> merged pairs

    def error(self, node: yaml.Node, message: str) -> SourceError:
        return SourceError(self.file, _mark_line(node.start_mark), message)

    def check_tag(self, node: yaml.Node) -> None:
        """A mapping or a list must be a plain one: PyYAML's safe constructors would make a set of
        `!!set`, and a tag they do not know (`!!python/object:...`, `!custom`) would be dropped."""
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            plain, kind = (_MAP_TAG, "mapping") if isinstance(node, yaml.MappingNode) else (_SEQ_TAG, "list")
            if node.tag != plain:
                raise self.error(
                    node,
                    f"invalid YAML: tag {node.tag!r} on a {kind}: only plain {kind}s are read"
                    " (remove the tag)",
                )

    def mapping_pairs(self, node: yaml.MappingNode) -> list[tuple[yaml.Node, yaml.Node]]:
        """The mapping's key/value nodes with merge keys (``<<``) applied, as YAML defines them: the
        mapping's own keys win over merged ones, and an earlier merged mapping over a later one.
        Unlike PyYAML's flatten_mapping this leaves the (possibly shared) nodes as they are."""
        cached = self.pairs.get(id(node))
        if cached is not None:
            return cached
        own: list[tuple[yaml.Node, yaml.Node]] = []
        merged: list[tuple[yaml.Node, yaml.Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                own.append((key_node, value_node))
                continue
            self.check_tag(value_node)
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for source in sources:
                self.check_tag(source)
                if not isinstance(source, yaml.MappingNode):
                    raise self.error(source, "a merge key (<<) takes an alias of a mapping or a list of them")
                merged += self.mapping_pairs(source)
        seen = {self.key_of(key) for key, _ in own}
        pairs: list[tuple[yaml.Node, yaml.Node]] = []
        for key_node, value_node in merged:
            key = self.key_of(key_node)
            if key not in seen:
                seen.add(key)
                pairs.append((key_node, value_node))
        pairs += own
        self.pairs[id(node)] = pairs
        return pairs

    def key_of(self, key_node: yaml.Node) -> Any:
        if not isinstance(key_node, yaml.ScalarNode):
            raise self.error(key_node, "mapping keys must be scalars")
        if key_node.tag == _VALUE_TAG:
            # A bare '=' as a key: YAML 1.1's value key; read it as text, as PyYAML's mappings do.
            key_node = yaml.ScalarNode(_STR_TAG, key_node.value, key_node.start_mark, key_node.end_mark)
        key = self.loader.construct_object(key_node, deep=True)
        if not isinstance(key, str | int | bool | float) and key is not None:
            # A scalar of another type (!!binary, a date): named as the file writes it.
            shown = f"!!binary {key_node.value.strip()}" if isinstance(key, bytes) else key_node.value
            raise self.error(
                key_node, f"mapping keys must be text, not {shown} (quote a key that is meant as text)"
            )
        return key

    def build(self, node: yaml.Node, path: Path) -> Any:
        line = _mark_line(node.start_mark)
        if line is not None:
            self.lines.setdefault(path, line)
        self.check_tag(node)
        if isinstance(node, yaml.MappingNode):
            own: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue  # a merged key may be given again: the mapping's own value wins
                key = self.key_of(key_node)
                if key in own:
                    raise self.error(key_node, f"duplicate key {key!r}")
                own.add(key)
            result: dict[Any, Any] = {}
            for key_node, value_node in self.mapping_pairs(node):
                key = self.key_of(key_node)
                child = (*path, key if isinstance(key, str | int) else str(key))
                # The key's line is the one users look for ("line of `priority:`").
                key_line = _mark_line(key_node.start_mark)
                if key_line is not None:
                    self.lines[child] = key_line
                result[key] = self.build(value_node, child)
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, index)) for index, item in enumerate(node.value)]
        return self.loader.construct_object(node, deep=True)


def _reader_error(text: str, exc: yaml.reader.ReaderError, file: str) -> SourceError:
    """A character YAML does not allow, with the line and column where it stands."""
    position = max(0, min(exc.position, len(text)))
    breaks = list(_LINE_BREAK.finditer(text, 0, position))
    line = len(breaks) + 1
    column = position - (breaks[-1].end() if breaks else 0) + 1
    code = exc.character if isinstance(exc.character, int) else ord(exc.character)
    kind = "control character" if code < 0x20 or 0x7F <= code <= 0x9F else "character"
    return SourceError(
        file,
        line,
        f"invalid YAML: {kind} #x{code:04x} at column {column} (YAML allows only printable characters, "
        "tabs and line breaks)",
    )


def load_yaml(text: str, file: str) -> YamlDocument:
    """Parse one YAML document; syntax errors become a SourceError with the line."""
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as exc:
        raise _reader_error(text, exc, file) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return YamlDocument(file=file, data=None, lines={})
        builder = _Builder(file, loader)
        data = builder.build(node, ())
    except yaml.reader.ReaderError as exc:
        raise _reader_error(text, exc, file) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        line = _mark_line(mark)
        started = _mark_line(exc.context_mark)
        if exc.problem and exc.context and started is not None and started != line:
            # Where the problem was found is often far from its cause (an unclosed quote is found at
            # the end of the file): say where what was being read began.
            problem += f" ({exc.context} that starts on line {started})"
        raise SourceError(file, line, f"invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise SourceError(file, None, f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    return YamlDocument(file=file, data=data, lines=builder.lines)


def size_text(limit: int) -> str:
    """A byte count as users read it: 16 MiB, 64 KiB, 100 bytes."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if limit >= size and limit % size == 0:
            return f"{limit // size} {unit}"
    return f"{limit} bytes"


class FileTooLarge(Exception):
    """A file holds more than the bytes its reader accepts (:func:`read_bounded`)."""

    def __init__(self, path: str, limit: int) -> None:
        self.path = path
        self.limit = limit
        super().__init__(f"{path}: larger than {size_text(limit)}")


def read_bounded(path: str, limit: int) -> bytes:
    """The bytes of ``path``, reading at most ``limit`` + 1 of them: FileTooLarge past ``limit``.

    The size is what a read returns, not what stat says, so /dev/zero, a FIFO or a file that
    grows while it is read are bounded too (stat gives 0 for the first two). A directory raises
    IsADirectoryError, other failures their OSError."""
    with open(path, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise FileTooLarge(path, limit)
    return data


class FileRefused(Exception):
    """A file :func:`read_regular_file` does not read: the text says why (not naming the file)."""


def read_regular_file(path: str, limit: int, what: str) -> bytes:
    """The bytes of ``path``, a file that other code (ssl, gRPC, the Kubernetes client) reads again
    by its path, whole and without a bound: so it must be a regular file of at most ``limit``
    bytes, which stat tells before a byte is read (a device or FIFO is refused, never read or
    waited on). FileRefused says what is wrong; ``what`` is what such a file holds ("a
    kubeconfig holds"). Other failures raise their OSError (a directory: IsADirectoryError)."""
    mode = os.stat(path).st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise FileRefused(f"is {_file_kind(mode)}, not a regular file")
    try:
        return read_bounded(path, limit)
    except FileTooLarge:
        raise FileRefused(f"is larger than {size_text(limit)}, far more than {what}") from None


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((kind for test, kind in kinds if test(mode)), "a special file")


def read_text(path: str, what: str = "a YAML file") -> str:
    """A UTF-8 text file (universal newlines) of at most :data:`MAX_FILE_BYTES`; errors name the file,
    and the line of a bad byte. ``what`` names the kind of file for a directory given in its place."""
    try:
        data = read_bounded(path, MAX_FILE_BYTES)
    except IsADirectoryError:
        raise SourceError(path, None, f"is a directory, not {what}") from None
    except FileTooLarge:
        raise SourceError(
            path,
            None,
            f"larger than {size_text(MAX_FILE_BYTES)}: too large for {what} (the limit for YAML input)",
        ) from None
    except OSError as exc:
        raise SourceError(path, None, f"cannot read file: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = max(data.rfind(b"\n", 0, exc.start), data.rfind(b"\r", 0, exc.start)) + 1
        line = data.count(b"\n", 0, exc.start) + data.count(b"\r", 0, exc.start)
        line -= data.count(b"\r\n", 0, exc.start)
        column = len(data[line_start : exc.start].decode("utf-8")) + 1
        raise SourceError(
            path, line + 1, f"not UTF-8 text: {exc.reason} (byte 0x{data[exc.start]:02x} at column {column})"
        ) from None
    # Universal newlines, as a file opened in text mode reads them.
    return text.replace("\r\n", "\n").replace("\r", "\n")


def load_yaml_file(path: str, what: str = "a YAML file") -> YamlDocument:
    return load_yaml(read_text(path, what), path)
