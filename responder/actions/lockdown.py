"""Whom a cut's deny-all holds once its podSelector was changed by hand, by the pods listed: pure
reading, no I/O. A repair narrows the policy back to the cut's label, so it must never be made
where that frees a pod: one nobody quarantined (a lockdown: `app Exists`, `app: vllm`), one
quarantined under another label, or one of this config's other cuts that the policy stops in a
direction its own cut leaves alone. A podSelector of one `matchLabels` of another label is shaped
like another config's deny-all (a stale copy of the config, or the one in force): which it is
cannot be told from the policy, so it is never repaired either."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from responder.actions import netpol
from responder.actions.pod_records import quarantine_record_holds
from responder.cluster.selectors import SelectorError, selector_matches
from responder.config import Isolation
from responder.wording import first_few

# Pod names in a message before "and N more" (the detail is clipped at 1000 characters).
SHOWN_PODS = 3


def selected(selector: Mapping[str, Any], pod: Mapping[str, Any]) -> bool:
    """Whether ``selector`` selects ``pod`` (as listed); one that cannot be evaluated does not."""
    try:
        return selector_matches(selector, (pod.get("metadata") or {}).get("labels") or {})
    except SelectorError:
        return False


def label_of(pod: Mapping[str, Any], label: str) -> str | None:
    return ((pod.get("metadata") or {}).get("labels") or {}).get(label)


def pod_names(pods: Sequence[Mapping[str, Any]]) -> list[str]:
    return sorted(str((p.get("metadata") or {}).get("name")) for p in pods)


def shown(names: Sequence[str]) -> str:
    """Pod names for a message: the first few, and how many more."""
    return first_few(names, SHOWN_PODS)


def with_pod(pods: list[dict[str, Any]], metadata: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The namespace's pods as listed, the one of ``metadata``'s uid as ``metadata`` says (the pod
    being labelled as the label will leave it, or as it was found before; None: as listed)."""
    if metadata is None:
        return pods
    uid = metadata.get("uid")
    others = [p for p in pods if (p.get("metadata") or {}).get("uid") != uid]
    return [*others, {"metadata": dict(metadata)}]


@dataclass(frozen=True, slots=True)
class HeldPods:
    """The pods a podSelector selects outside this config's cuts: nobody quarantined them (no
    quarantine record, or one whose labels were all taken off by hand: a lockdown holds them), or
    they are recorded as quarantined under another label whose key they still carry, any value
    (another config's; a record of an earlier version names no label, and holds while it stands)."""

    unquarantined: tuple[str, ...] = ()
    elsewhere: tuple[str, ...] = ()

    @classmethod
    def of(
        cls, selector: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], label: str, ours: Collection[str]
    ) -> HeldPods:
        """``ours``: this config's label values (a pod labelled so is held by its own cut)."""
        unquarantined: list[Mapping[str, Any]] = []
        elsewhere: list[Mapping[str, Any]] = []
        for pod in pods:
            if label_of(pod, label) in ours or not selected(selector, pod):
                continue
            (elsewhere if quarantine_record_holds(pod.get("metadata") or {}) else unquarantined).append(pod)
        return cls(tuple(pod_names(unquarantined)), tuple(pod_names(elsewhere)))

    def said(self) -> list[str]:
        words = []
        if self.unquarantined:
            words.append(f"pods nobody quarantined ({shown(self.unquarantined)})")
        if self.elsewhere:
            words.append(f"pods quarantined under another label ({shown(self.elsewhere)})")
        return words


def _restricts_beyond(spec: Mapping[str, Any], directions: tuple[str, ...]) -> bool:
    """Whether a policy restricts a direction outside the cut ``directions``: it governs it and its
    rules there do not allow everything (cut, or restricted to some peers)."""
    governed = netpol.policy_directions(spec)
    return any(d in governed and not netpol.allows_all(spec, d) for d in netpol.uncut(directions))


@dataclass(frozen=True, slots=True)
class Lockdown:
    """Whom a deny-all whose podSelector was changed by hand holds, that narrowing it to the cut's
    label would free (``held``: outside this config's cuts; ``beyond``: pods of its other cuts it
    restricts in a direction their own cut leaves alone), and the pods of the cut it no longer
    selects (``missing``). ``foreign``: its podSelector is shaped like another config's deny-all."""

    held: HeldPods
    missing: tuple[str, ...]
    beyond: tuple[str, ...] = ()
    foreign: Mapping[str, str] | None = None

    @classmethod
    def of(
        cls,
        spec: Mapping[str, Any],
        pods: Sequence[Mapping[str, Any]],
        label: str,
        value: str,
        ours: Mapping[str, tuple[str, ...]],
        foreign: Mapping[str, str] | None = None,
    ) -> Lockdown | None:
        """None: narrowing it frees nobody (it holds no pod outside the config's cuts ``ours``,
        each value with the directions its cut stops, and restricts no pod of another cut beyond
        it), and it is not ``foreign``: it only looks wider, or is narrower. The cut's own pods
        (``value``) stay held by the repaired policy."""
        selector = spec.get("podSelector") or {}
        held = HeldPods.of(selector, pods, label, ours)
        beyond = [
            p
            for p in pods
            if label_of(p, label) != value
            and (directions := ours.get(label_of(p, label) or "")) is not None
            and selected(selector, p)
            and _restricts_beyond(spec, directions)
        ]
        if not (held.unquarantined or held.elsewhere or beyond or foreign):
            return None
        missing = [p for p in pods if label_of(p, label) == value and not selected(selector, p)]
        return cls(held, tuple(pod_names(missing)), tuple(pod_names(beyond)), foreign)

    def whom(self) -> str:
        """In words: whom it holds that narrowing it would free ("" where none is listed)."""
        words = self.held.said()
        if self.beyond:
            words.append(
                f"pods of this config's other cuts beyond what their cut stops ({shown(self.beyond)})"
            )
        return " and ".join(words)


def _fits_cut(value: str, isolation: Isolation) -> bool:
    """Whether a label value could be another config's for the cut ``isolation``: a one-way cut's
    value is a config's label_value with the cut's fixed suffix (config.Quarantine.cut); the both
    cut's is label_value itself, which may be anything."""
    if isolation is Isolation.BOTH:
        return True  # a config's both value may end in anything (label_value is free)
    return value.endswith(f"-{isolation.value}")


def other_config_labels(
    selector: Mapping[str, Any], label: str, values: Collection[str], isolation: Isolation
) -> dict[str, str] | None:
    """The labels the deny-all of the cut ``isolation`` selects by, when they are shaped like
    another config's: one `matchLabels` (nothing else), not ``label`` with one of this config's
    ``values`` (any of its cuts', the legacy both value included), whose value fits the cut (an
    egress cut's ends in -egress). None: this config's label, or a selector by no label (emptied,
    or by expressions only), or by several labels or labels and expressions without this config's
    label key, or a value no config gives this cut: altered by hand, never a config's."""
    match = selector.get("matchLabels")
    if not isinstance(match, Mapping) or not match or match.get(label) in values:
        return None
    # A config's deny-all selects by its one label, nothing else; other shapes are hand edits,
    # unless they name this config's label key with a value of another config's.
    if label not in match and (len(match) != 1 or selector.get("matchExpressions")):
        return None
    theirs = {str(k): str(v) for k, v in match.items()}
    value = theirs[label] if label in theirs else next(iter(theirs.values()))
    return theirs if _fits_cut(value, isolation) else None
