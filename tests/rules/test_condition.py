"""The condition parser follows the libsinsp grammar: what it accepts, what it rejects and where."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from responder.rulespack.condition import (
    MAX_NESTING,
    And,
    Check,
    ConditionSyntaxError,
    ConditionTooDeep,
    FieldRef,
    ListValue,
    MacroRef,
    Not,
    Or,
    Value,
    first_conjunct,
    parse,
    render,
    tree_depth,
)
from responder.rulespack.evttypes import event_types


@pytest.mark.parametrize(
    "text",
    [
        "evt.type in (execve, execveat) and evt.rawres = 0",
        'k8s.pod.label[serving-guard.io/serving] = "true"',
        'proc.aname[2] = sh and fd.name pmatch (/a, "/b c")',
        "not (a or b) and not c",
        "proc.name exists",
        "fd.sport in ()",
        "tolower(proc.name) = val(proc.pname)",
        "evt.rawres >= 0 or evt.res = EINPROGRESS",
        'proc.args contains "://127.0.0.1:" and proc.args startswith "-m pip"',
    ],
)
def test_render_parses_back_to_the_same_tree(text: str) -> None:
    tree = parse(text)
    assert parse(render(tree)) == parse(render(parse(render(tree))))
    assert render(parse(render(tree))) == render(tree)


def test_tree_shape() -> None:
    tree = parse("evt.type = execve and (proc.name in (sh, bash) or not spawned) and fd.name exists")
    assert isinstance(tree, And)
    first, middle, last = tree.children
    assert first == Check(FieldRef("evt.type", pos=0), "=", Value("execve", False, 11), 0)
    assert isinstance(middle, Or)
    assert isinstance(middle.children[0], Check)
    assert isinstance(middle.children[0].value, ListValue)
    assert [v.text for v in middle.children[0].value.items] == ["sh", "bash"]
    assert isinstance(middle.children[1], Not)
    assert isinstance(middle.children[1].child, MacroRef)
    assert isinstance(last, Check)
    assert last.op == "exists"
    assert last.value is None


def test_bracket_label_argument() -> None:
    check = parse("k8s.pod.label[serving-guard.io/serving] = true")
    assert isinstance(check, Check)
    assert check.field.name == "k8s.pod.label"
    assert check.field.arg == "serving-guard.io/serving"


def test_quoted_values_keep_blanks_and_escapes() -> None:
    check = parse('proc.cmdline = "a \\"quoted\\" word"')
    assert isinstance(check, Check)
    assert check.value == Value('a "quoted" word', True, 15)
    assert render(check) == 'proc.cmdline = "a \\"quoted\\" word"'


@pytest.mark.parametrize(
    ("text", "message", "token"),
    [
        # Falco rejects a label key with '/' in dot form: the field name ends at the '-'.
        (
            "k8s.pod.label.serving-guard.io/serving = true",
            "expected a valid check operator",
            "-guard.io/serving",
        ),
        ("evt.type = execve and (proc.name = sh", "expected a ')' token", "<end of condition>"),
        ("proc.name", "expected a valid check operator", "<end of condition>"),
        ("proc.name = ", "expected a string value", "<end of condition>"),
        ("fd.sport > abc", "expected a number value", "abc"),
        ("proc.name in (a b)", "expected a ',' or ')' token", "b"),
        ("evt.type = execve and", "unexpected token", "and"),
        ("", "empty condition", "<end of condition>"),
        ('proc.name = "open', "unterminated quoted string", '"open'),
    ],
)
def test_syntax_errors_name_the_token(text: str, message: str, token: str) -> None:
    with pytest.raises(ConditionSyntaxError) as caught:
        parse(text)
    assert message in caught.value.message
    assert caught.value.token == token


def test_event_types_follow_falco_resolution() -> None:
    assert event_types(parse("evt.type in (open, openat) and fd.name = x")).names == {"open", "openat"}
    assert not event_types(parse("proc.name = sh")).restricted
    assert not event_types(parse("evt.type != execve")).restricted
    # not (A and B) = not A or not B: a non-evt.type check under a negation still matches everything.
    assert not event_types(parse("not (evt.type = open and proc.name = x)")).restricted
    assert event_types(parse("(evt.type = open or evt.type = connect) and not evt.type = open")).names == {
        "connect"
    }
    assert event_types(parse("evt.type = open or proc.name = x")).restricted is False


def test_first_conjunct() -> None:
    assert render(first_conjunct(parse("evt.type = open and proc.name = x"))) == "evt.type = open"
    assert render(first_conjunct(parse("proc.name = x"))) == "proc.name = x"


TOO_DEEP = (
    f"condition nested too deeply (more than {MAX_NESTING} levels of parentheses, 'not' and transformers)"
)


@pytest.mark.parametrize(
    ("nested", "levels"),
    [
        (lambda n: "(" * n + "proc.name = sh" + ")" * n, 1),  # the whole condition is a level too
        (lambda n: "not " * n + "proc.name = sh", 1),
        (lambda n: "not (" * n + "proc.name = sh" + ")" * n, 2),
        (lambda n: "tolower(" * n + "proc.name" + ")" * n + " = sh", 1),
        (lambda n: "proc.name = val(" + "tolower(" * (n - 1) + "proc.pname" + ")" * n, 1),
    ],
    ids=["parentheses", "not", "not-parentheses", "transformers", "val-transformers"],
)
def test_nesting_is_bounded_before_the_stack_runs_out(nested: Callable[[int], str], levels: int) -> None:
    fits = (MAX_NESTING - 1) // levels
    parse(nested(fits))
    for depth in (fits + 1, 300, 5000):
        with pytest.raises(ConditionTooDeep) as caught:
            parse(nested(depth))
        assert caught.value.message == TOO_DEEP


def test_tree_depth_counts_and_or_not_levels_without_recursion() -> None:
    assert tree_depth(parse("proc.name = sh")) == 1
    assert tree_depth(parse("a and (b or not c)")) == 4
    node = parse("proc.name = sh")
    for _ in range(20_000):
        node = Not(node)
    assert tree_depth(node) == 20_001
