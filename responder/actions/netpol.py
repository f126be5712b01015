"""NetworkPolicy reasoning, pure: the deny-all policy we want, and which other policies still
let traffic reach or leave a pod (NetworkPolicies are a union of allows)."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from responder.cluster.selectors import SelectorError, selector_matches

MANAGED_BY = {"app.kubernetes.io/managed-by": "serving-guard"}
PATCHED_ANNOTATION = "serving-guard.io/patched-for-quarantine"

# Why a host-network pod is out of any NetworkPolicy's reach (quarantine or block alike).
HOST_NETWORK = "the pod uses the host network, which NetworkPolicies do not cover"


def name_of(policy: Mapping[str, Any]) -> str:
    """The policy's metadata.name, as text ("None" when it has none)."""
    return str((policy.get("metadata") or {}).get("name"))


# What a quarantine may cut, in the order of a NetworkPolicy's policyTypes.
BOTH_DIRECTIONS = ("ingress", "egress")


def uncut(directions: tuple[str, ...]) -> tuple[str, ...]:
    """The directions a cut of ``directions`` leaves alone."""
    return tuple(d for d in BOTH_DIRECTIONS if d not in directions)


def _policy_types(directions: tuple[str, ...]) -> list[str]:
    return [direction.capitalize() for direction in BOTH_DIRECTIONS if direction in directions]


def deny_all_policy(
    namespace: str, name: str, label: str, value: str, directions: tuple[str, ...] = BOTH_DIRECTIONS
) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(MANAGED_BY)},
        "spec": deny_all_spec(label, value, directions),
    }


def deny_all_spec(label: str, value: str, directions: tuple[str, ...] = BOTH_DIRECTIONS) -> dict[str, Any]:
    # The cut directions as policy types and no rules: a selected pod may neither receive (ingress)
    # nor send (egress) anything in them; the other direction is left to the namespace's policies.
    return {"podSelector": {"matchLabels": {label: value}}, "policyTypes": _policy_types(directions)}


def spec_is_deny_all(
    spec: Mapping[str, Any] | None, label: str, value: str, directions: tuple[str, ...] = BOTH_DIRECTIONS
) -> bool:
    if not isinstance(spec, Mapping):
        return False
    selector = spec.get("podSelector") or {}
    return (
        selector.get("matchLabels") == {label: value}
        and not selector.get("matchExpressions")
        and sorted(spec.get("policyTypes") or []) == sorted(_policy_types(directions))
        and not spec.get("ingress")
        and not spec.get("egress")
    )


def may_select(selector: Mapping[str, Any], pod_labels: Mapping[str, str]) -> bool:
    """Whether a podSelector selects a pod with ``pod_labels``; fail safe: one that cannot be
    evaluated may select it."""
    try:
        return selector_matches(selector, pod_labels)
    except SelectorError:
        return True


@dataclass(frozen=True, slots=True)
class Leak:
    policy: str
    directions: tuple[str, ...]  # "ingress", "egress"
    reason: str


def policy_types(spec: Mapping[str, Any]) -> set[str]:
    declared = spec.get("policyTypes")
    if isinstance(declared, list) and declared:
        return {str(t) for t in declared}
    # The API server's defaulting: Ingress always, Egress when egress rules are present.
    types = {"Ingress"}
    if spec.get("egress"):
        types.add("Egress")
    return types


def deny_all_gap(
    policies: Iterable[Mapping[str, Any]],
    name: str,
    pod_labels: Mapping[str, str],
    directions: tuple[str, ...],
) -> str | None:
    """What keeps our deny-all ``name`` (as listed in ``policies``) from cutting a pod with
    ``pod_labels`` in ``directions``: gone, no longer selecting the pod, or no longer cutting a
    direction (its type dropped, a rule added). None: it cuts them (cutting more is still a cut)."""
    policy = next((p for p in policies if name_of(p) == name), None)
    if policy is None:
        return f"NetworkPolicy {name} is gone"
    spec = policy.get("spec") or {}
    try:
        selects = selector_matches(spec.get("podSelector") or {}, pod_labels)
    except SelectorError:
        selects = False  # a selector that cannot be evaluated proves no cut
    if not selects:
        return f"NetworkPolicy {name} no longer selects the pod"
    types = policy_types(spec)
    opened = [d for d in directions if d.capitalize() not in types or spec.get(d)]
    if opened:
        return f"NetworkPolicy {name} no longer cuts {'+'.join(opened)}"
    return None


def find_leaks(
    policies: Iterable[Mapping[str, Any]],
    pod_labels: Mapping[str, str],
    *,
    own_policy: str,
    directions: tuple[str, ...] = BOTH_DIRECTIONS,
) -> list[Leak]:
    """Policies (other than ours) that select the pod and allow some of its traffic in the cut
    ``directions``."""
    leaks = []
    for policy in policies:
        name = str((policy.get("metadata") or {}).get("name", "?"))
        if name == own_policy:
            continue
        spec = policy.get("spec") or {}
        try:
            selects = selector_matches(spec.get("podSelector") or {}, pod_labels)
            reason = "its podSelector selects the pod"
        except SelectorError as exc:
            # Fail safe: a selector we cannot evaluate may select the pod.
            selects, reason = True, f"its podSelector cannot be evaluated ({exc})"
        if not selects:
            continue
        types = policy_types(spec)
        allowed = [
            direction
            for direction in BOTH_DIRECTIONS
            if direction in directions and direction.capitalize() in types and spec.get(direction)
        ]
        if allowed:
            leaks.append(Leak(policy=name, directions=tuple(allowed), reason=reason))
    return leaks


def governed_beyond(policy: Mapping[str, Any], directions: tuple[str, ...]) -> tuple[str, ...]:
    """The directions outside the cut ``directions`` that the policy governs (its policy types).
    A quarantine excludes pods from a policy by its label, so every quarantined pod of the
    namespace, now and later, leaves it; in a direction the cut leaves alone that may lift the
    pod's isolation (a pod is isolated in a direction while any policy of that type selects it).
    Such a policy is never patched: its leak is reported instead."""
    types = policy_types(policy.get("spec") or {})
    return tuple(d for d in uncut(directions) if d.capitalize() in types)


def excluded_beyond(
    policy: Mapping[str, Any], label: str, pod_labels: Mapping[str, str], directions: tuple[str, ...]
) -> tuple[str, ...]:
    """The directions outside the cut ``directions`` in which a policy we patched no longer
    governs the pod: it selects the pod but for our exclusion, and governs those directions. Only
    a patch made for a quarantine that cut them too (``quarantine.isolate`` changed since; see
    :func:`governed_beyond`) leaves this: the pod's traffic there may be open to all."""
    if not is_patched_by_us(policy, label):
        return ()
    beyond = governed_beyond(policy, directions)
    if not beyond:
        return ()
    selector = (without_exclusion(policy, label).get("spec") or {}).get("podSelector") or {}
    return beyond if may_select(selector, pod_labels) else ()


def exclusion_expression(label: str) -> dict[str, Any]:
    return {"key": label, "operator": "DoesNotExist"}


def with_exclusion(policy: Mapping[str, Any], label: str) -> dict[str, Any]:
    """The policy with `label DoesNotExist` added to its podSelector, marked as patched by us."""
    patched = copy.deepcopy(dict(policy))
    spec = patched.setdefault("spec", {})
    selector = spec.setdefault("podSelector", {})
    expressions = selector.setdefault("matchExpressions", [])
    if exclusion_expression(label) not in expressions:
        expressions.append(exclusion_expression(label))
    annotations = patched.setdefault("metadata", {}).setdefault("annotations", {})
    annotations[PATCHED_ANNOTATION] = label
    return patched


def without_exclusion(policy: Mapping[str, Any], label: str) -> dict[str, Any]:
    """Undo :func:`with_exclusion`, leaving anything else the owner changed since."""
    restored = copy.deepcopy(dict(policy))
    spec = restored.get("spec") or {}
    selector = spec.get("podSelector") or {}
    expressions = [e for e in selector.get("matchExpressions") or [] if e != exclusion_expression(label)]
    if expressions:
        selector["matchExpressions"] = expressions
    else:
        selector.pop("matchExpressions", None)
    annotations = (restored.get("metadata") or {}).get("annotations") or {}
    annotations.pop(PATCHED_ANNOTATION, None)
    return restored


def is_patched_by_us(policy: Mapping[str, Any], label: str) -> bool:
    annotations = (policy.get("metadata") or {}).get("annotations") or {}
    return bool(annotations.get(PATCHED_ANNOTATION) == label)
