"""What a cluster enforces for one pod in one direction, read from the NetworkPolicy spec alone and
written without the responder's code (its selectors serve the emulator's label filtering too, so
the tests that judge isolation must not lean on them).

Spec rules: a pod is isolated in a direction while some policy that selects it has that direction
in its policyTypes (absent: Ingress, plus Egress when it has egress rules); isolated, it may do what
the union of those policies' rules allows."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

OPEN = "open"
CLOSED = "closed"


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A podSelector's verdict on a pod's labels (every term must hold; an empty selector: all)."""
    if not selector:
        return True
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for term in selector.get("matchExpressions") or []:
        key, operator, values = term["key"], term["operator"], term.get("values") or []
        present = key in labels
        holds = {
            "In": present and labels.get(key) in values,
            "NotIn": not (present and labels.get(key) in values),
            "Exists": present,
            "DoesNotExist": not present,
        }[operator]
        if not holds:
            return False
    return True


def _types(spec: Mapping[str, Any]) -> set[str]:
    if spec.get("policyTypes"):
        return set(spec["policyTypes"])
    return {"Ingress", "Egress"} if spec.get("egress") else {"Ingress"}


def direction_state(policies: Iterable[Mapping[str, Any]], labels: Mapping[str, str], direction: str) -> str:
    """``open`` (no policy of that type selects the pod), ``closed`` (some do, none has a rule), or
    ``partial via <names>`` (the policies whose rules allow some of it)."""
    kind = direction.capitalize()
    governing = [
        p
        for p in policies
        if selects((p.get("spec") or {}).get("podSelector"), labels) and kind in _types(p.get("spec") or {})
    ]
    if not governing:
        return OPEN
    allowing = sorted(p["metadata"]["name"] for p in governing if (p.get("spec") or {}).get(direction))
    return "partial via " + ",".join(allowing) if allowing else CLOSED
