"""YAML loading that remembers where every value came from, so errors can name file and line."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from responder.errors import SourceError

Path = tuple[str | int, ...]


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


class _Builder:
    def __init__(self, file: str, loader: yaml.SafeLoader) -> None:
        self.file = file
        self.loader = loader
        self.lines: dict[Path, int] = {}

    def build(self, node: yaml.Node, path: Path) -> Any:
        line = _mark_line(node.start_mark)
        if line is not None:
            self.lines.setdefault(path, line)
        if isinstance(node, yaml.MappingNode):
            result: dict[Any, Any] = {}
            self.loader.flatten_mapping(node)
            for key_node, value_node in node.value:
                key = self.loader.construct_object(key_node, deep=True)
                if not isinstance(key, str | int | bool | float) and key is not None:
                    raise SourceError(
                        self.file, _mark_line(key_node.start_mark), "mapping keys must be scalars"
                    )
                if key in result:
                    raise SourceError(self.file, _mark_line(key_node.start_mark), f"duplicate key {key!r}")
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


def load_yaml(text: str, file: str) -> YamlDocument:
    """Parse one YAML document; syntax errors become a SourceError with the line."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return YamlDocument(file=file, data=None, lines={})
        builder = _Builder(file, loader)
        data = builder.build(node, ())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        raise SourceError(file, _mark_line(mark), f"invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise SourceError(file, None, f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    return YamlDocument(file=file, data=data, lines=builder.lines)


def load_yaml_file(path: str) -> YamlDocument:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise SourceError(path, None, f"cannot read file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise SourceError(path, None, f"not UTF-8 text: {exc.reason}") from None
    return load_yaml(text, path)
