"""NetworkPolicy reasoning, pure: the deny-all policy we want, and which other policies still
let traffic reach or leave a pod (NetworkPolicies are a union of allows)."""

from __future__ import annotations

import copy
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from responder.cluster.selectors import SelectorError, expression_matches, selector_matches

if TYPE_CHECKING:  # at run time api imports config, which imports this module
    from responder.cluster.api import KubeError

MANAGED_BY = {"app.kubernetes.io/managed-by": "serving-guard"}
PATCHED_ANNOTATION = "serving-guard.io/patched-for-quarantine"

# Why a host-network pod is out of any NetworkPolicy's reach (quarantine or block alike).
HOST_NETWORK = "the pod uses the host network, which NetworkPolicies do not cover"


def changed_since_read(exc: KubeError) -> bool:
    """A write to a NetworkPolicy as read met it changed (409) or deleted (404) since: read it again
    and work the write out afresh (a policy gone is then created, or left gone, as the caller does
    with a missing one). A 404 is never the pod gone: the pod may carry its label already."""
    return exc.conflict or exc.not_found


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
    return (
        spec_selects_only(spec.get("podSelector") or {}, label, value)
        and sorted(spec.get("policyTypes") or []) == sorted(_policy_types(directions))
        and not spec.get("ingress")
        and not spec.get("egress")
    )


def deny_all_beyond(
    spec: Mapping[str, Any] | None, label: str, value: str, directions: tuple[str, ...]
) -> tuple[str, ...]:
    """The directions outside the cut ``directions`` that a deny-all of ours (selecting
    ``label=value``) also cuts: it governs them and has no rule there. A repair to the cut alone
    would open them for every pod in it, so they are kept (a quarantine is never narrowed)."""
    if not isinstance(spec, Mapping) or not spec_selects_only(spec.get("podSelector") or {}, label, value):
        return ()
    types = policy_types(spec)
    return tuple(d for d in uncut(directions) if d.capitalize() in types and not spec.get(d))


def spec_selects_only(selector: Mapping[str, Any], label: str, value: str) -> bool:
    """Whether a podSelector is a deny-all's as built: ``label=value`` alone."""
    return selector.get("matchLabels") == {label: value} and not selector.get("matchExpressions")


def restricted_beyond(
    spec: Mapping[str, Any] | None, label: str, value: str, directions: tuple[str, ...]
) -> dict[str, list[Any]]:
    """The directions outside the cut ``directions`` that a deny-all of ours (selecting
    ``label=value``) restricts by rules naming peers or ports (added by hand: only the monitoring
    pods may reach them), with those rules. A repair keeps them: dropping them would open that
    direction for every pod in the cut, and a repair never opens a quarantined pod's traffic.
    Rules that allow everything there are no restriction, and are dropped."""
    if not isinstance(spec, Mapping) or not spec_selects_only(spec.get("podSelector") or {}, label, value):
        return {}
    types = policy_types(spec)
    return {
        d: list(spec.get(d) or [])
        for d in uncut(directions)
        if d.capitalize() in types and spec.get(d) and not allows_all(spec, d)
    }


@dataclass(frozen=True)
class DenyAllRepair:
    """What a repair makes of a deny-all of ours found altered: ``spec``, and what it keeps beyond
    the cut, the directions it cut (``kept_beyond``) and those it restricted (``kept_rules``)."""

    spec: dict[str, Any]
    kept_beyond: tuple[str, ...]
    kept_rules: tuple[str, ...]


def plan_repair(
    spec: Mapping[str, Any] | None, label: str, value: str, directions: tuple[str, ...]
) -> DenyAllRepair:
    """The repair of a deny-all of ours found as ``spec``: the cut ``directions`` governed with no
    rule, and beyond them what it cut (deny_all_beyond) or restricted (restricted_beyond) kept as
    it was."""
    cut = deny_all_beyond(spec, label, value, directions)
    rules = restricted_beyond(spec, label, value, directions)
    governed = tuple(d for d in BOTH_DIRECTIONS if d in directions or d in cut or d in rules)
    return DenyAllRepair({**deny_all_spec(label, value, governed), **rules}, cut, tuple(rules))


def repaired_deny_all(
    spec: Mapping[str, Any] | None, label: str, value: str, directions: tuple[str, ...]
) -> dict[str, Any]:
    """The spec a repair gives a deny-all of ours found as ``spec`` (plan_repair)."""
    return plan_repair(spec, label, value, directions).spec


def same_spec(spec: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> bool:
    """Whether a policy ``spec`` as read is ``wanted`` (a deny-all as repaired_deny_all builds it),
    empty and absent rules alike and policy types in any order."""
    if not isinstance(spec, Mapping) or spec.get("podSelector") != wanted["podSelector"]:
        return False
    if sorted(spec.get("policyTypes") or []) != sorted(wanted["policyTypes"]):
        return False
    return all((spec.get(d) or []) == (wanted.get(d) or []) for d in BOTH_DIRECTIONS)


def is_deny_all_as_built(
    spec: Mapping[str, Any] | None, label: str, value: str, directions: tuple[str, ...]
) -> bool:
    """Whether ``spec`` is a cut's deny-all as the responder builds it (selecting ``label=value``
    alone, no rules), cutting ``directions`` and maybe more (deny_all_beyond): a hand edit that
    widens its selector or adds a rule makes it a policy like any other."""
    beyond = deny_all_beyond(spec, label, value, directions)
    cut = tuple(d for d in BOTH_DIRECTIONS if d in directions or d in beyond)
    return spec_is_deny_all(spec, label, value, cut)


def selects_beyond(selector: Any, label: str, value: str) -> bool:
    """Whether a podSelector selects every pod labelled ``label=value`` and is not that label
    alone: wider than a deny-all's (emptied to every pod of the namespace, or by the label's key
    with other values too). Narrowing it to the label would let go the other pods it holds."""
    if not isinstance(selector, Mapping) or selector == {"matchLabels": {label: value}}:
        return False
    match = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []
    if not isinstance(match, Mapping) or not isinstance(expressions, list):
        return False
    if any(key != label or wanted != value for key, wanted in match.items()):
        return False
    if not all(isinstance(e, Mapping) and e.get("key") == label for e in expressions):
        return False

    def selects(labels: Mapping[str, str]) -> bool:
        return all(match.get(key) == labels.get(key) for key in match) and all(
            _holds(e, labels) for e in expressions
        )

    # It holds every pod of the label, and some other: one without the label, or with another
    # value, named by an expression or not (`In [true]`, or `Exists` beside the label's
    # matchLabels, select the label's pods alone).
    listed = [e["values"] for e in expressions if isinstance(e.get("values"), list)]
    named = {str(v) for values in listed for v in values if v != value}
    others = [{}, {label: value + "-other"}, *({label: v} for v in sorted(named))]
    return selects({label: value}) and any(selects(other) for other in others)


def _holds(expression: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    try:
        return expression_matches(expression, labels)
    except SelectorError:
        return False


def cuts(spec: Mapping[str, Any] | None, directions: tuple[str, ...]) -> bool:
    """Whether a policy ``spec`` cuts ``directions`` for the pods it selects: it governs each and
    has no rule there (allows nothing)."""
    if not isinstance(spec, Mapping):
        return False
    types = policy_types(spec)
    return all(d.capitalize() in types and not spec.get(d) for d in directions)


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


def policy_directions(spec: Mapping[str, Any]) -> tuple[str, ...]:
    """The directions a policy governs (its policy types, as defaulted), in BOTH_DIRECTIONS order."""
    types = policy_types(spec)
    return tuple(d for d in BOTH_DIRECTIONS if d.capitalize() in types)


def governed_beyond(policy: Mapping[str, Any], directions: tuple[str, ...]) -> tuple[str, ...]:
    """The directions outside the cut ``directions`` that the policy governs (its policy types).
    Our exclusion takes out of a policy only the pods whose cut stops every direction it governs
    (:func:`exclusion_expression`): taking out a pod whose cut leaves one alone could lift its
    isolation there (a pod is isolated in a direction while any policy of that type selects it).
    So for such a pod the policy is not patched: its leak is reported instead."""
    types = policy_types(policy.get("spec") or {})
    return tuple(d for d in uncut(directions) if d.capitalize() in types)


def excluded_beyond(
    policy: Mapping[str, Any],
    label: str,
    cut_values: Collection[str],
    pod_labels: Mapping[str, str],
    directions: tuple[str, ...],
) -> tuple[str, ...]:
    """The directions outside the cut ``directions`` in which a policy we patched no longer
    governs the pod: it selects the pod but for our exclusion, which takes the pod out, and
    governs those directions. Only an exclusion by an earlier version (`DoesNotExist`: every
    quarantined pod) or one made before the policy's types changed leaves this: the pod's traffic
    there may be open to all."""
    if not excludes(policy, label, cut_values, pod_labels.get(label)):
        return ()
    beyond = governed_beyond(policy, directions)
    if not beyond:
        return ()
    selector = (without_exclusion(policy, label, cut_values).get("spec") or {}).get("podSelector") or {}
    return beyond if may_select(selector, pod_labels) else ()


def _strictly_selects(policy: Mapping[str, Any], pod_labels: Mapping[str, str]) -> bool:
    """Whether ``policy`` selects a pod with ``pod_labels``; one whose selector cannot be evaluated
    does not (a restriction it may have had is not claimed)."""
    try:
        return selector_matches((policy.get("spec") or {}).get("podSelector") or {}, pod_labels)
    except SelectorError:
        return False


def taken_out(
    policy: Mapping[str, Any], before: Mapping[str, str], after: Mapping[str, str]
) -> tuple[str, ...]:
    """The directions ``policy`` governs for a pod with labels ``before`` and no longer for the
    same pod with labels ``after``: its podSelector leaves out the label change (a `DoesNotExist`
    or `NotIn` on the quarantine label, written by hand or by an exclusion left from an earlier
    quarantine). Whatever it restricted there no longer applies to the pod."""
    if not _strictly_selects(policy, before) or may_select(
        (policy.get("spec") or {}).get("podSelector") or {}, after
    ):
        return ()
    return policy_directions(policy.get("spec") or {})


@dataclass(frozen=True, slots=True)
class Opened:
    """A policy a label change took the pod out of (or, ``brought_in``, into), and the directions
    that left the pod open to every peer: nothing restricts it there any more, or a policy it
    now joins allows all there (allows are a union: one allow-all outweighs every restriction)."""

    policy: str
    directions: tuple[str, ...]
    brought_in: bool = False


# A rule's peers, by the direction it allows.
_PEERS = {"ingress": "from", "egress": "to"}


def allows_all(spec: Mapping[str, Any], direction: str) -> bool:
    """Whether a policy's rules in ``direction`` allow every peer on every port: one of them has
    no peers (its from/to absent or empty) and no ports (absent or empty), as `egress: [{}]`. Kept
    exact: a rule naming any peer or port, however wide (every namespace, 0.0.0.0/0), counts as a
    restriction."""
    rules = spec.get(direction)
    if not isinstance(rules, list):
        return False
    return any(
        isinstance(rule, Mapping) and not rule.get(_PEERS[direction]) and not rule.get("ports")
        for rule in rules
    )


def open_to_all(policies: Iterable[Mapping[str, Any]], pod_labels: Mapping[str, str]) -> set[str]:
    """The directions in which a pod with ``pod_labels`` is open to every peer: no policy selecting
    it governs them (a pod is isolated in a direction while one does), or one that does allows all
    there (allows_all: the pod's allows are the union of its policies'). A selector that cannot be
    evaluated is taken not to select."""
    governed: set[str] = set()
    allowed: set[str] = set()
    for policy in policies:
        if not _strictly_selects(policy, pod_labels):
            continue
        spec = policy.get("spec") or {}
        for direction in policy_directions(spec):
            governed.add(direction)
            if allows_all(spec, direction):
                allowed.add(direction)
    return {d for d in BOTH_DIRECTIONS if d not in governed or d in allowed}


def brought_in(
    policy: Mapping[str, Any], before: Mapping[str, str], after: Mapping[str, str]
) -> tuple[str, ...]:
    """The directions in which ``policy`` allows all (allows_all) to a pod with labels ``after``
    and did not select the same pod with labels ``before``: its podSelector selects the label
    (a policy for quarantined pods, our deny-all altered by hand)."""
    if _strictly_selects(policy, before) or not _strictly_selects(policy, after):
        return ()
    spec = policy.get("spec") or {}
    return tuple(d for d in policy_directions(spec) if allows_all(spec, d))


def opened_by_label(
    policies: Iterable[Mapping[str, Any]],
    before: Mapping[str, str],
    after: Mapping[str, str],
    held: tuple[str, ...],
) -> list[Opened]:
    """The policies by which a label change (``before`` to ``after``) left the pod open to all in
    directions outside ``held`` (those a deny-all holds) that were not open before (open_to_all
    with the policies of ``policies``): those it takes the pod out of (losing the last policy that
    restricts a direction opens it) and those it brings the pod into whose rules there allow
    everything (`egress: [{}]`: a policy selecting quarantined pods, our deny-all altered by hand).
    A selector that cannot be evaluated is taken not to select: an opening is said rather than
    missed."""
    listed = list(policies)
    opened = open_to_all(listed, after) - open_to_all(listed, before)
    found = []
    for policy in listed:
        gone = [d for d in taken_out(policy, before, after) if d not in held and d in opened]
        if gone:
            found.append(Opened(name_of(policy), tuple(gone)))
        joined = [d for d in brought_in(policy, before, after) if d not in held and d in opened]
        if joined:
            found.append(Opened(name_of(policy), tuple(joined), brought_in=True))
    return found


def exclusion_expression(label: str, values: Collection[str]) -> dict[str, Any]:
    """The exclusion that takes the pods quarantined in the cuts labelled ``values`` (those that
    stop every direction of the policy: Quarantine.covering_values) out of a policy's podSelector."""
    return {"key": label, "operator": "NotIn", "values": sorted(values)}


def is_exclusion(expression: Any, label: str, cut_values: Collection[str]) -> bool:
    """A podSelector expression that is an exclusion of ours: `label NotIn` some cuts' values, or
    `label DoesNotExist` (every quarantined pod, as versions before exclusions by cut made it)."""
    if not isinstance(expression, Mapping) or expression.get("key") != label:
        return False
    if expression.get("operator") == "DoesNotExist":
        return True
    values = expression.get("values")
    return (
        expression.get("operator") == "NotIn"
        and isinstance(values, list)
        and bool(values)
        and all(value in cut_values for value in values)
    )


def _exclusions(
    policy: Mapping[str, Any], label: str, cut_values: Collection[str]
) -> list[Mapping[str, Any]]:
    selector = (policy.get("spec") or {}).get("podSelector") or {}
    return [e for e in selector.get("matchExpressions") or [] if is_exclusion(e, label, cut_values)]


def excludes(policy: Mapping[str, Any], label: str, cut_values: Collection[str], value: str | None) -> bool:
    """Whether a policy we patched has an exclusion that takes out a pod labelled ``label=value``
    (None: not labelled, never taken out)."""
    if value is None or not is_patched_by_us(policy, label):
        return False
    return any(
        e.get("operator") == "DoesNotExist" or value in (e.get("values") or [])
        for e in _exclusions(policy, label, cut_values)
    )


def with_exclusion(policy: Mapping[str, Any], label: str, values: Collection[str]) -> dict[str, Any]:
    """The policy with :func:`exclusion_expression` (``values``) added to its podSelector, marked as
    patched by us. An exclusion there already is kept: taking it away could put pods back."""
    patched = copy.deepcopy(dict(policy))
    spec = patched.setdefault("spec", {})
    selector = spec.setdefault("podSelector", {})
    expressions = selector.setdefault("matchExpressions", [])
    if exclusion_expression(label, values) not in expressions:
        expressions.append(exclusion_expression(label, values))
    annotations = patched.setdefault("metadata", {}).setdefault("annotations", {})
    annotations[PATCHED_ANNOTATION] = label
    return patched


def without_exclusion(policy: Mapping[str, Any], label: str, cut_values: Collection[str]) -> dict[str, Any]:
    """Undo :func:`with_exclusion` (and an earlier version's `DoesNotExist`), leaving anything
    else the owner changed since."""
    restored = copy.deepcopy(dict(policy))
    spec = restored.get("spec") or {}
    selector = spec.get("podSelector") or {}
    expressions = [
        e for e in selector.get("matchExpressions") or [] if not is_exclusion(e, label, cut_values)
    ]
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
