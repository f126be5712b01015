"""Falco filter conditions: a parser for the libsinsp grammar (libs `userspace/libsinsp/filter/parser.h`,
as used by Falco 0.40-0.44) into a small typed tree, and a renderer back to text.

Every node keeps the offset where it starts in the parsed text, so errors can name the token and,
through the caller, the file line. Parsing is pure: macros are not resolved here (see expand.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

# Operators exactly as libsinsp lexes them (str operators that are words need a blank after them).
UNARY_OPERATORS = ("exists",)
NUM_OPERATORS = ("<=", "<", ">=", ">")
STR_OPERATORS = (
    "==",
    "=",
    "!=",
    "glob",
    "iglob",
    "contains",
    "icontains",
    "bcontains",
    "startswith",
    "bstartswith",
    "endswith",
    "regex",
)
LIST_OPERATORS = ("intersects", "in", "pmatch")
ALL_OPERATORS = UNARY_OPERATORS + NUM_OPERATORS + STR_OPERATORS + LIST_OPERATORS
# Field transformers (tolower(fd.name) ...) and the val() field reference on the right-hand side.
TRANSFORMERS = ("tolower", "toupper", "b64", "basename", "len")

_FIELD_NAME = re.compile(r"[a-zA-Z]+[a-zA-Z0-9_]*(\.[a-zA-Z]+[a-zA-Z0-9_]*)+")
_IDENTIFIER = re.compile(r"[a-zA-Z]+[a-zA-Z0-9_]*")
_FIELD_ARG_BARE = re.compile(r"[^ \b\t\n\r\[\]\"']+")
_BARE_STR = re.compile(r"[^ \b\t\n\r(),=\"']+")
_HEX_NUM = re.compile(r"0[xX][0-9a-zA-Z]+")
_NUM = re.compile(r"[+\-]?[0-9]+\.?[0-9]*([eE][+\-][0-9]+)?")
_BLANKS = " \t\n\r\b"
# Nesting the parser accepts: parentheses, `not` and transformers, one level each (libsinsp's parser
# has a limit of 100 too, counted in its own recursion steps). Far beyond any real rule, and far
# from Python's recursion limit.
MAX_NESTING = 100
# Depth of a tree after macros are resolved (and/or/not levels): what the renderers may walk.
MAX_TREE_DEPTH = 200


class ConditionSyntaxError(Exception):
    """A condition that libsinsp would reject while parsing; ``pos`` is an offset into the text."""

    def __init__(self, message: str, text: str, pos: int) -> None:
        self.message = message
        self.text = text
        self.pos = pos
        super().__init__(f"{message} (at offset {pos}, near {token_at(text, pos)!r})")

    @property
    def token(self) -> str:
        return token_at(self.text, self.pos)


class ConditionTooDeep(ConditionSyntaxError):
    """A condition nested more than :data:`MAX_NESTING` levels: refused before it can exhaust the stack."""


def token_at(text: str, pos: int) -> str:
    """The word at ``pos`` (up to the next blank or parenthesis), for error messages."""
    if pos >= len(text):
        return "<end of condition>"
    match = re.compile(r"[^\s()]+|[()]").match(text, pos)
    return match.group(0) if match else text[pos]


@dataclass(frozen=True)
class Value:
    text: str
    quoted: bool = False
    pos: int = 0


@dataclass(frozen=True)
class FieldRef:
    name: str
    arg: str | None = None
    arg_quoted: bool = False
    transformers: tuple[str, ...] = ()  # outermost first: tolower(b64(x)) -> ("tolower", "b64")
    is_val: bool = False  # val(field) on the right-hand side
    pos: int = 0

    @property
    def full_name(self) -> str:
        """The field as written in a rule without transformers: ``k8s.pod.label[app]``."""
        return self.name if self.arg is None else f"{self.name}[{self.arg}]"


@dataclass(frozen=True)
class ListValue:
    items: tuple[Value, ...] = ()
    identifier: str | None = None  # `in some_list` written without parentheses
    pos: int = 0


@dataclass(frozen=True)
class Check:
    field: FieldRef
    op: str
    value: Value | ListValue | FieldRef | None
    pos: int = 0


@dataclass(frozen=True)
class MacroRef:
    name: str
    pos: int = 0


@dataclass(frozen=True)
class And:
    children: tuple[Node, ...]
    pos: int = 0


@dataclass(frozen=True)
class Or:
    children: tuple[Node, ...]
    pos: int = 0


@dataclass(frozen=True)
class Not:
    child: Node
    pos: int = 0


Node = Check | MacroRef | And | Or | Not


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0

    # --- lexing helpers -------------------------------------------------------------------------
    def error(self, message: str, pos: int | None = None) -> ConditionSyntaxError:
        return ConditionSyntaxError(message, self.text, self.pos if pos is None else pos)

    def blank(self) -> bool:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _BLANKS:
            self.pos += 1
        return self.pos > start

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def literal(self, word: str) -> bool:
        if self.text.startswith(word, self.pos):
            self.pos += len(word)
            return True
        return False

    def keyword(self, word: str) -> bool:
        """``and``/``or``/``not`` count only when a blank or '(' follows them."""
        end = self.pos + len(word)
        if self.text.startswith(word, self.pos) and end < len(self.text) and self.text[end] in _BLANKS + "(":
            self.pos = end
            return True
        return False

    def regex(self, pattern: re.Pattern[str]) -> str | None:
        match = pattern.match(self.text, self.pos)
        if match is None:
            return None
        self.pos = match.end()
        return match.group(0)

    def quoted(self) -> str | None:
        if self.at_end() or self.text[self.pos] not in "\"'":
            return None
        quote = self.text[self.pos]
        index = self.pos + 1
        chars: list[str] = []
        while index < len(self.text):
            char = self.text[index]
            if char == "\\" and index + 1 < len(self.text) and self.text[index + 1] in (quote, "\\"):
                chars.append(self.text[index + 1])
                index += 2
                continue
            if char == quote:
                self.pos = index + 1
                return "".join(chars)
            chars.append(char)
            index += 1
        raise self.error("unterminated quoted string")

    def enter(self) -> None:
        """One more level of nesting (a parenthesis, a `not`, a transformer); call leave() after it."""
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise ConditionTooDeep(
                f"condition nested too deeply (more than {MAX_NESTING} levels of parentheses, "
                "'not' and transformers)",
                self.text,
                self.pos,
            )

    def leave(self) -> None:
        self.depth -= 1

    # --- grammar --------------------------------------------------------------------------------
    def parse(self) -> Node:
        self.blank()
        if self.at_end():
            raise self.error("empty condition")
        node = self.parse_or()
        self.blank()
        if not self.at_end():
            raise self.error("unexpected token after the end of a complete expression")
        return node

    def parse_or(self) -> Node:
        self.enter()  # the whole condition and every parenthesised group
        self.blank()
        start = self.pos
        children = [self.parse_and()]
        self.blank()
        while self.keyword("or"):
            children.append(self.embedded(self.parse_and, "or"))
            self.blank()
        self.leave()
        return children[0] if len(children) == 1 else Or(tuple(children), start)

    def parse_and(self) -> Node:
        self.blank()
        start = self.pos
        children = [self.parse_not()]
        self.blank()
        while self.keyword("and"):
            children.append(self.embedded(self.parse_not, "and"))
            self.blank()
        return children[0] if len(children) == 1 else And(tuple(children), start)

    def embedded(self, parse_next: Callable[[], Node], after: str) -> Node:
        if self.blank():
            return parse_next()
        if self.literal("("):
            child = self.parse_or()
            self.blank()
            if not self.literal(")"):
                raise self.error("expected a ')' token")
            return child
        raise self.error(f"expected a blank space or '(' after '{after}'")

    def parse_not(self) -> Node:
        self.blank()
        start = self.pos
        if not self.keyword("not"):
            return self.parse_check()
        self.enter()
        node = Not(self.embedded(self.parse_not, "not"), start)
        self.leave()
        return node

    def parse_check(self) -> Node:
        self.blank()
        start = self.pos
        if self.literal("("):
            child = self.parse_or()
            self.blank()
            if not self.literal(")"):
                raise self.error("expected a ')' token")
            return child
        transformed = self.try_transformer(allow_val=False)
        if transformed is not None:
            return self.parse_condition(transformed, start)
        name = self.regex(_FIELD_NAME)
        if name is not None:
            return self.parse_condition(self.field_remainder(name, start), start)
        identifier = self.regex(_IDENTIFIER)
        if identifier is not None:
            return MacroRef(identifier, start)
        raise self.error("expected a '(' token, a field check, or an identifier")

    def field_remainder(self, name: str, start: int) -> FieldRef:
        if not self.literal("["):
            return FieldRef(name, pos=start)
        arg_quoted = False
        arg = self.quoted()
        if arg is not None:
            arg_quoted = True
        else:
            arg = self.regex(_FIELD_ARG_BARE)
            if arg is None:
                raise self.error(f"expected a field argument after '{name}['")
        if not self.literal("]"):
            raise self.error("expected a ']' token")
        return FieldRef(name, arg, arg_quoted, pos=start)

    def try_transformer(self, allow_val: bool) -> FieldRef | None:
        start = self.pos
        names = (*TRANSFORMERS, "val") if allow_val else TRANSFORMERS
        for name in names:
            if self.literal(f"{name}("):
                break
        else:
            return None
        self.enter()
        self.blank()
        inner = self.try_transformer(allow_val=False)
        if inner is None:
            field_name = self.regex(_FIELD_NAME)
            if field_name is None:
                raise self.error(f"expected a field inside '{name}('")
            inner = self.field_remainder(field_name, self.pos)
        self.blank()
        if not self.literal(")"):
            raise self.error("expected a ')' token")
        self.leave()
        if name == "val":
            return replace(inner, is_val=True, pos=start)
        return replace(inner, transformers=(name, *inner.transformers), pos=start)

    def operator(self, group: tuple[str, ...], word_ops: bool) -> str | None:
        for op in group:
            if not self.text.startswith(op, self.pos):
                continue
            end = self.pos + len(op)
            if op[0].isalpha():
                # Word operators need a boundary: blank after str ops, blank or '(' after list ops.
                follow = _BLANKS if word_ops else _BLANKS + "("
                if end >= len(self.text) or self.text[end] not in follow:
                    continue
            self.pos = end
            return op
        return None

    def parse_condition(self, field: FieldRef, start: int) -> Check:
        self.blank()
        op_pos = self.pos
        if self.unary_operator():
            return Check(field, "exists", None, start)
        op = self.operator(NUM_OPERATORS, word_ops=True)
        if op is not None:
            return Check(field, op, self.num_value(), start)
        op = self.operator(STR_OPERATORS, word_ops=True)
        if op is not None:
            return Check(field, op, self.str_value(), start)
        op = self.operator(LIST_OPERATORS, word_ops=False)
        if op is not None:
            return Check(field, op, self.list_value(), start)
        message = f"expected a valid check operator after field '{field.full_name}': one of " + ", ".join(
            ALL_OPERATORS
        )
        if ".label." in field.name and self.text[op_pos : op_pos + 1] in ("-", "/", "."):
            family = field.name[: field.name.index(".label.") + len(".label")]
            message += f"; write a label key with '/' or '-' in the bracket form: {family}[key]"
        raise self.error(message, op_pos)

    def unary_operator(self) -> bool:
        # `exists` ends at a blank, a ')' or the end of the text.
        end = self.pos + len("exists")
        if self.text.startswith("exists", self.pos) and (
            end == len(self.text) or self.text[end] in _BLANKS + ")"
        ):
            self.pos = end
            return True
        return False

    def num_value(self) -> Value | FieldRef:
        self.blank()
        start = self.pos
        transformed = self.try_transformer(allow_val=True)
        if transformed is not None:
            return transformed
        number = self.regex(_HEX_NUM) or self.regex(_NUM)
        if number is None:
            raise self.error("expected a number value")
        return Value(number, False, start)

    def str_value(self) -> Value | FieldRef:
        self.blank()
        start = self.pos
        transformed = self.try_transformer(allow_val=True)
        if transformed is not None:
            return transformed
        text = self.quoted()
        if text is not None:
            return Value(text, True, start)
        bare = self.regex(_BARE_STR)
        if bare is None:
            raise self.error("expected a string value")
        return Value(bare, False, start)

    def list_value(self) -> ListValue | FieldRef:
        self.blank()
        start = self.pos
        if self.literal("("):
            items: list[Value] = []
            self.blank()
            if self.literal(")"):
                return ListValue((), None, start)
            while True:
                self.blank()
                item_pos = self.pos
                text = self.quoted()
                if text is not None:
                    items.append(Value(text, True, item_pos))
                else:
                    bare = self.regex(_BARE_STR)
                    if bare is None:
                        raise self.error("expected a string value in the list")
                    items.append(Value(bare, False, item_pos))
                self.blank()
                if self.literal(")"):
                    return ListValue(tuple(items), None, start)
                if not self.literal(","):
                    raise self.error("expected a ',' or ')' token in the list")
        transformed = self.try_transformer(allow_val=True)
        if transformed is not None:
            return transformed
        identifier = self.regex(_IDENTIFIER)
        if identifier is not None:
            return ListValue((), identifier, start)
        raise self.error("expected a list value: '(' items ')' or a list name")


def parse(text: str) -> Node:
    """Parse one condition; raises ConditionSyntaxError with the offset of the offending token."""
    return _Parser(text).parse()


# --- rendering -----------------------------------------------------------------------------------
_NEEDS_QUOTES = re.compile(r"[ \b\t\n\r(),=\"']")


def render_value(value: Value) -> str:
    if value.quoted or not value.text or _NEEDS_QUOTES.search(value.text):
        escaped = value.text.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    return value.text


def render_field(field: FieldRef) -> str:
    if field.arg is None:
        text = field.name
    elif field.arg_quoted:
        text = f'{field.name}["{field.arg}"]'
    else:
        text = f"{field.name}[{field.arg}]"
    for transformer in reversed(field.transformers):
        text = f"{transformer}({text})"
    return f"val({text})" if field.is_val else text


def render_operand(operand: Value | ListValue | FieldRef | None) -> str:
    if operand is None:
        return ""
    if isinstance(operand, FieldRef):
        return render_field(operand)
    if isinstance(operand, ListValue):
        if operand.identifier is not None:
            return f"({operand.identifier})"
        return "(" + ", ".join(render_value(item) for item in operand.items) + ")"
    return render_value(operand)


def render(node: Node) -> str:
    """Text libsinsp parses back into the same tree; nested and/or groups keep their parentheses."""
    if isinstance(node, Check):
        operand = render_operand(node.value)
        return f"{render_field(node.field)} {node.op}" + (f" {operand}" if operand else "")
    if isinstance(node, MacroRef):
        return node.name
    if isinstance(node, Not):
        inner = render(node.child)
        return f"not ({inner})" if isinstance(node.child, And | Or | Not) else f"not {inner}"
    joiner = " and " if isinstance(node, And) else " or "
    return joiner.join(_grouped(child) for child in node.children)


def _grouped(node: Node) -> str:
    return f"({render(node)})" if isinstance(node, And | Or) else render(node)


# --- walking -------------------------------------------------------------------------------------
def tree_depth(node: Node) -> int:
    """Levels of and/or/not above the deepest check (1 for a lone check); iterative, for any depth."""
    deepest = 0
    stack: list[tuple[Node, int]] = [(node, 1)]
    while stack:
        current, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(current, And | Or):
            stack += [(child, depth + 1) for child in current.children]
        elif isinstance(current, Not):
            stack.append((current.child, depth + 1))
    return deepest


def walk(node: Node) -> Iterator[Node]:
    """Every node, depth first, parents before children."""
    yield node
    if isinstance(node, And | Or):
        for child in node.children:
            yield from walk(child)
    elif isinstance(node, Not):
        yield from walk(node.child)


def checks(node: Node) -> Iterator[Check]:
    return (n for n in walk(node) if isinstance(n, Check))


def macro_refs(node: Node) -> Iterator[MacroRef]:
    return (n for n in walk(node) if isinstance(n, MacroRef))


def transform(node: Node, visit: Callable[[Node], Node | None]) -> Node:
    """Rebuild the tree bottom-up; ``visit`` may return a replacement for a node (or None to keep it)."""
    rebuilt: Node
    if isinstance(node, And):
        rebuilt = And(tuple(transform(c, visit) for c in node.children), node.pos)
    elif isinstance(node, Or):
        rebuilt = Or(tuple(transform(c, visit) for c in node.children), node.pos)
    elif isinstance(node, Not):
        rebuilt = Not(transform(node.child, visit), node.pos)
    else:
        rebuilt = node
    replacement = visit(rebuilt)
    return rebuilt if replacement is None else replacement


def first_conjunct(node: Node) -> Node:
    """The left-most operand of the top-level 'and' chain (the part Falco's style puts evt.type in)."""
    return node.children[0] if isinstance(node, And) else node
