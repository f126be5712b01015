"""Kubernetes label-selector semantics (matchLabels + matchExpressions), pure and strict.

Used by the quarantine leak check: which NetworkPolicies still select a quarantined pod.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class SelectorError(ValueError):
    """A selector the API server would reject; callers treat it as 'might select' (fail safe)."""


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """True when ``selector`` selects an object with ``labels``.

    An empty selector ({}) selects everything, as for NetworkPolicy.spec.podSelector.
    """
    if selector is None:
        return True
    match_labels = selector.get("matchLabels") or {}
    if not isinstance(match_labels, Mapping):
        raise SelectorError("matchLabels must be a mapping")
    for key, value in match_labels.items():
        if labels.get(key) != value:
            return False
    expressions = selector.get("matchExpressions") or []
    if not isinstance(expressions, list):
        raise SelectorError("matchExpressions must be a list")
    return all(expression_matches(expression, labels) for expression in expressions)


def expression_matches(expression: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    if not isinstance(expression, Mapping):
        raise SelectorError("a matchExpressions item must be a mapping")
    key = expression.get("key")
    operator = expression.get("operator")
    values = expression.get("values") or []
    if not isinstance(key, str) or not key:
        raise SelectorError("matchExpressions key must be a non-empty string")
    if not isinstance(values, list):
        raise SelectorError("matchExpressions values must be a list")
    if operator == "In":
        if not values:
            raise SelectorError("operator In needs values")
        return key in labels and labels[key] in values
    if operator == "NotIn":
        if not values:
            raise SelectorError("operator NotIn needs values")
        return key not in labels or labels[key] not in values
    if operator == "Exists":
        if values:
            raise SelectorError("operator Exists takes no values")
        return key in labels
    if operator == "DoesNotExist":
        if values:
            raise SelectorError("operator DoesNotExist takes no values")
        return key not in labels
    raise SelectorError(f"unknown operator {operator!r}")


def parse_label_selector(text: str) -> dict[str, Any]:
    """The string form used by ?labelSelector= (a=b, a!=b, a in (x,y), a notin (x), a, !a)."""
    expressions: list[dict[str, Any]] = []
    for raw_term in _split_terms(text):
        term = raw_term.strip()
        if not term:
            continue
        if term.startswith("!"):
            expressions.append({"key": term[1:].strip(), "operator": "DoesNotExist"})
        elif " notin " in term or " in " in term:
            operator = "NotIn" if " notin " in term else "In"
            key, _, rest = term.partition(" notin " if operator == "NotIn" else " in ")
            rest = rest.strip()
            if not (rest.startswith("(") and rest.endswith(")")):
                raise SelectorError(f"bad set in selector term {term!r}")
            values = [value.strip() for value in rest[1:-1].split(",") if value.strip()]
            expressions.append({"key": key.strip(), "operator": operator, "values": values})
        elif "!=" in term:
            key, _, value = term.partition("!=")
            expressions.append({"key": key.strip(), "operator": "NotIn", "values": [value.strip()]})
        elif "=" in term:
            key, _, value = term.partition("==") if "==" in term else term.partition("=")
            expressions.append({"key": key.strip(), "operator": "In", "values": [value.strip()]})
        else:
            expressions.append({"key": term, "operator": "Exists"})
    return {"matchExpressions": expressions}


def _split_terms(text: str) -> list[str]:
    terms, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    terms.append(current)
    return terms
