"""Which event types a condition can match, resolved as Falco's `filter_evttype_resolver` does.

A check on any field other than `evt.type` can match every event type, negated or not, so the
result is an over-approximation: a rule is "restricted" only when its condition names its event
types (Falco warns LOAD_NO_EVTTYPE otherwise, and the rule then runs on every event).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce

from responder.rulespack.condition import And, Check, ListValue, Node, Not, Or, Value


@dataclass(frozen=True)
class EventTypes:
    """A set of event type names, or the complement of one (``complement=True``)."""

    names: frozenset[str] = frozenset()
    complement: bool = False

    @property
    def restricted(self) -> bool:
        """A finite set of named types (not 'everything' nor 'everything but ...')."""
        return not self.complement

    def __contains__(self, name: object) -> bool:
        return (name in self.names) != self.complement

    def invert(self) -> EventTypes:
        return EventTypes(self.names, not self.complement)

    def intersect(self, other: EventTypes) -> EventTypes:
        if not self.complement and not other.complement:
            return EventTypes(self.names & other.names)
        if not self.complement:
            return EventTypes(self.names - other.names)
        if not other.complement:
            return EventTypes(other.names - self.names)
        return EventTypes(self.names | other.names, True)

    def union(self, other: EventTypes) -> EventTypes:
        if not self.complement and not other.complement:
            return EventTypes(self.names | other.names)
        if not self.complement:
            return EventTypes(other.names - self.names, True)
        if not other.complement:
            return EventTypes(self.names - other.names, True)
        return EventTypes(self.names & other.names, True)


ALL = EventTypes(frozenset(), True)


def _check_types(check: Check) -> EventTypes | None:
    field = check.field
    if field.name != "evt.type" or field.arg is not None or field.transformers:
        return None
    if check.op in ("=", "==") and isinstance(check.value, Value):
        return EventTypes(frozenset({check.value.text}))
    if check.op == "!=" and isinstance(check.value, Value):
        return EventTypes(frozenset({check.value.text}), True)
    if check.op == "in" and isinstance(check.value, ListValue) and check.value.identifier is None:
        return EventTypes(frozenset(item.text for item in check.value.items))
    return None


def event_types(node: Node, negated: bool = False) -> EventTypes:
    if isinstance(node, Check):
        types = _check_types(node)
        if types is None:
            return ALL
        return types.invert() if negated else types
    if isinstance(node, Not):
        return event_types(node.child, not negated)
    if isinstance(node, And | Or):
        parts = [event_types(child, negated) for child in node.children]
        # De Morgan: under a negation an 'and' behaves as an 'or' and vice versa.
        conjunction = isinstance(node, And) != negated
        if conjunction:
            return reduce(EventTypes.intersect, parts)
        return reduce(EventTypes.union, parts)
    return ALL  # an unresolved macro reference
