"""What Debian's sysdig 0.29.3 (falcosecurity/libs of 2022) cannot compile although Falco 0.40-0.44 can,
and the translation of an expanded condition into text that sysdig compiles and evaluates.

Everything sysdig lacks must be named in the allow-lists below, each with its reason; any other
field, operator or event type that sysdig rejects is an error in the rules, not a gap. A clause
that uses an allow-listed item is replaced by a stand-in that is never true (``evt.num = 0``,
sysdig numbers events from 1), so the rest of the condition is still compiled and evaluated, and
every replacement is reported: nothing passes silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from responder.rulespack.condition import Check, FieldRef, ListValue, Node, Value, render, transform

# Fields Falco 0.40-0.44 has and 2022 libsinsp does not.
UNSUPPORTED_FIELDS: dict[str, str] = {
    # overlayfs upper-layer flags (container drift); newer libsinsp reads them from the exe's inode
    "proc.is_exe_upper_layer": "overlayfs upper-layer flag of the executable, newer than 2022 libsinsp",
    "fd.is_upper_layer": "overlayfs upper-layer flag of the file, newer than 2022 libsinsp",
    # fileless execution: the executable is a memfd
    "proc.is_exe_from_memfd": "memfd executable flag, newer than 2022 libsinsp",
    # newer process-tree and argument fields
    "proc.pexepath": "parent executable path, newer than 2022 libsinsp",
    "proc.aexepath": "ancestor executable path, newer than 2022 libsinsp",
    "proc.cmdnargs": "argument count, newer than 2022 libsinsp",
    "fd.types": "list of fd types of the event, newer than 2022 libsinsp",
    "thread.cap_effective": "capability sets, newer than 2022 libsinsp",
    # container age: in libsinsp since libs 0.11 (Falco 0.40), from the container plugin since 0.41
    "container.duration": "container age (nanoseconds since its PID 1 started), newer than 2022 libsinsp",
    "container.start_ts": "container start time, newer than 2022 libsinsp",
    # Kubernetes fields the container plugin added
    "k8s.pod.uid": "pod uid, newer than 2022 libsinsp",
    "k8s.pod.ip": "pod ip, newer than 2022 libsinsp",
}
# Field families (prefix before the '.' or '[' that carries the argument).
UNSUPPORTED_FIELD_FAMILIES: dict[str, str] = {
    "fs.path": "fs.path.* (resolved paths of file syscalls), newer than 2022 libsinsp",
    "container.label": "container.label[...] is not in 2022 libsinsp (nor in Falco 0.40)",
}
UNSUPPORTED_OPERATORS: dict[str, str] = {
    "regex": "operator regex, newer than 2022 libsinsp",
    "bcontains": "operator bcontains, newer than 2022 libsinsp",
    "bstartswith": "operator bstartswith, newer than 2022 libsinsp",
    "intersects": "operator intersects, newer than 2022 libsinsp",
}
# iglob (case-insensitive glob, libs 0.10): 2022 libsinsp only has glob, which is fnmatch without
# FNM_CASEFOLD. A pattern without bracket expressions or escapes is translated exactly (each ASCII
# letter c becomes [cC], which is what FNM_CASEFOLD matches in the C locale Falco runs in); any other
# pattern is replaced by the never-true stand-in.
IGLOB_REASON = "operator iglob with a bracket expression or an escape, newer than 2022 libsinsp"
UNSUPPORTED_TRANSFORMER = "field transformers (tolower(), b64(), ...) and val() are newer than 2022 libsinsp"
UNSUPPORTED_EVENT_TYPES: dict[str, str] = {
    "memfd_create": "event type memfd_create is unknown to 2022 libsinsp",
    "pidfd_open": "event type pidfd_open is unknown to 2022 libsinsp",
    "pidfd_getfd": "event type pidfd_getfd is unknown to 2022 libsinsp",
}
UNSUPPORTED_EVENT_TYPE_PREFIXES: dict[str, str] = {
    "io_uring_": "io_uring_* event types are unknown to 2022 libsinsp",
}
# fd.*net with an IPv6 CIDR: 2022 libsinsp parses IPv6 network values with inet_pton (no prefix
# length) and rejects them; newer libsinsp has ipv6net.
NET_FIELDS = ("fd.net", "fd.cnet", "fd.snet", "fd.lnet", "fd.rnet")
IPV6_NET_REASON = "IPv6 networks in fd.*net: 2022 libsinsp cannot parse an IPv6 CIDR"
# Label fields: Falco needs the bracket form for keys with '/', sysdig 0.29 only knows the dot form.
LABEL_FIELDS = (
    "k8s.pod.label",
    "k8s.ns.label",
    "k8s.rc.label",
    "k8s.svc.label",
    "k8s.rs.label",
    "k8s.deployment.label",
)

NEVER_TRUE = Check(FieldRef("evt.num"), "=", Value("0"))
# Operators over a list, which an empty list (a tuning list emptied) never satisfies in Falco: its
# parser reads `()` as no values, so `fd.sip in ()` compiles and is false, and so is `pmatch ()`.
# 2022 libsinsp reads one empty value instead: it refuses it for an address field ("unrecognized
# IPv6 address") and `pmatch ()` matches every path. Translated to the never-true stand-in: exact.
LIST_OPERATORS = ("in", "pmatch", "intersects")


@dataclass(frozen=True)
class StandIn:
    """A clause sysdig cannot evaluate, what replaced it and why."""

    clause: str
    replacement: str
    reason: str
    token: str  # the token to locate in the rules file


@dataclass(frozen=True)
class SysdigCondition:
    text: str
    tree: Node
    stand_ins: tuple[StandIn, ...]
    translations: tuple[str, ...]  # faithful rewrites (bracket labels to dot form)


def _field_gap(field: FieldRef) -> str | None:
    if field.transformers or field.is_val:
        return UNSUPPORTED_TRANSFORMER
    if field.name in UNSUPPORTED_FIELDS:
        return UNSUPPORTED_FIELDS[field.name]
    for family, reason in UNSUPPORTED_FIELD_FAMILIES.items():
        if field.name == family or field.name.startswith(family + "."):
            return reason
    return None


def _event_type_gap(name: str) -> str | None:
    if name in UNSUPPORTED_EVENT_TYPES:
        return UNSUPPORTED_EVENT_TYPES[name]
    for prefix, reason in UNSUPPORTED_EVENT_TYPE_PREFIXES.items():
        if name.startswith(prefix):
            return reason
    return None


def _label_dot_form(field: FieldRef) -> FieldRef | None:
    if field.name in LABEL_FIELDS and field.arg is not None:
        return FieldRef(f"{field.name}.{field.arg}", pos=field.pos)
    return None


class _Translator:
    def __init__(self) -> None:
        self.stand_ins: list[StandIn] = []
        self.translations: list[str] = []

    def stand_in(self, check: Check, reason: str, token: str) -> Check:
        self.stand_ins.append(StandIn(render(check), render(NEVER_TRUE), reason, token))
        return NEVER_TRUE

    def dropped(self, check: Check, item: str, reason: str) -> None:
        clause = f"{item} in {render(check)}"
        self.stand_ins.append(StandIn(clause, "dropped from the list", reason, item))

    def visit(self, node: Node) -> Node | None:
        if not isinstance(node, Check):
            return None
        field = node.field
        gap = _field_gap(field)
        if gap is None and isinstance(node.value, FieldRef):
            gap = _field_gap(node.value)
        if gap is not None:
            return self.stand_in(node, gap, field.name)
        if node.op in LIST_OPERATORS and isinstance(node.value, ListValue) and not node.value.items:
            self.translations.append(f"{render(node)} -> {render(NEVER_TRUE)} (an empty list: never true)")
            return NEVER_TRUE
        if node.op in UNSUPPORTED_OPERATORS:
            return self.stand_in(node, UNSUPPORTED_OPERATORS[node.op], node.op)
        if node.op == "iglob":
            return self.case_insensitive_glob(node)
        if field.name == "evt.type" and field.arg is None:
            return self.event_types(node)
        if field.name in NET_FIELDS:
            return self.ipv4_networks_only(node)
        dotted = _label_dot_form(field)
        if dotted is not None:
            self.translations.append(f"{field.full_name} -> {dotted.name}")
            return Check(dotted, node.op, node.value, node.pos)
        return None

    def case_insensitive_glob(self, node: Check) -> Node:
        if not isinstance(node.value, Value) or any(c in node.value.text for c in "[]\\"):
            return self.stand_in(node, IGLOB_REASON, node.op)
        pattern = "".join(
            f"[{c.lower()}{c.upper()}]" if c.isascii() and c.isalpha() else c for c in node.value.text
        )
        translated = Check(node.field, "glob", Value(pattern, quoted=True, pos=node.value.pos), node.pos)
        self.translations.append(f"{render(node)} -> {render(translated)}")
        return translated

    def event_types(self, node: Check) -> Node | None:
        if isinstance(node.value, Value):
            gap = _event_type_gap(node.value.text)
            return self.stand_in(node, gap, node.value.text) if gap is not None else None
        if not isinstance(node.value, ListValue):
            return None
        kept = tuple(item for item in node.value.items if _event_type_gap(item.text) is None)
        if len(kept) == len(node.value.items):
            return None
        for item in node.value.items:
            gap = _event_type_gap(item.text)
            if gap is not None:
                self.dropped(node, item.text, gap)
        if not kept:
            return NEVER_TRUE
        return Check(node.field, node.op, ListValue(kept, None, node.value.pos), node.pos)

    def ipv4_networks_only(self, node: Check) -> Node | None:
        if isinstance(node.value, Value):
            return self.stand_in(node, IPV6_NET_REASON, node.value.text) if ":" in node.value.text else None
        if not isinstance(node.value, ListValue):
            return None
        kept = tuple(item for item in node.value.items if ":" not in item.text)
        if len(kept) == len(node.value.items):
            return None
        for item in node.value.items:
            if ":" in item.text:
                self.dropped(node, item.text, IPV6_NET_REASON)
        if not kept:
            return NEVER_TRUE  # as an empty list (what is left of it) would be
        return Check(node.field, node.op, ListValue(kept, None, node.value.pos), node.pos)


def to_sysdig(tree: Node) -> SysdigCondition:
    """The condition as sysdig 0.29 can compile it, with every stand-in and translation listed."""
    translator = _Translator()
    translated = transform(tree, translator.visit)
    return SysdigCondition(
        render(translated), translated, tuple(translator.stand_ins), tuple(translator.translations)
    )


_OUTPUT_FIELD = re.compile(r"%([a-zA-Z][a-zA-Z0-9_]*(?:\.[a-zA-Z0-9_]+)*)(?:\[([^\]]*)\])?")


@dataclass(frozen=True)
class SysdigOutput:
    text: str
    dropped: tuple[StandIn, ...]  # output fields sysdig cannot print, each with its reason


def output_to_sysdig(output: str) -> SysdigOutput:
    """The output format as sysdig can check it: bracket labels in dot form, newer fields dropped."""
    dropped: list[StandIn] = []

    def replace_field(match: re.Match[str]) -> str:
        name, arg = match.group(1), match.group(2)
        field = FieldRef(name, arg)
        gap = _field_gap(field)
        if gap is not None:
            dropped.append(StandIn(match.group(0), "dropped from the output", gap, name))
            return "(n/a)"
        dotted = _label_dot_form(field)
        return f"%{dotted.name}" if dotted is not None else match.group(0)

    return SysdigOutput(_OUTPUT_FIELD.sub(replace_field, " ".join(output.split())), tuple(dropped))
