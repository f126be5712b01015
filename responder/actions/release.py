"""Release: take a pod out of quarantine and out of its destination block, as `serving-guard release`
asks (ClusterActions.release delegates here).

The pod is read and written back as read (a compare-and-set on its version): its quarantine label
and, where this config's alone, its block label come off, and its release record is written (who,
why, when), which the responder reads as a person's word. Another config's quarantine or block on
the pod stays, said by name; a pod quarantined or blocked only under a label this release does not
know is refused, nothing changed. Once the write lands the pod is released: the block policy is
emptied and the other policies quarantines patched are restored (each only while no quarantined pod
of the namespace is one its exclusion takes out), and what fails of that is said in the detail.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from responder.actions import netpol
from responder.actions.block import DestinationBlocks
from responder.actions.destination import pod_key
from responder.actions.events import EventRecorder
from responder.actions.outcome import (
    BY_HAND,
    NOTHING_TO_RELEASE,
    REASON,
    RECORDED_RELEASE,
    ActionOutcome,
    OutcomeStatus,
    failure_outcome,
    release_note,
)
from responder.actions.pod_patch import CONFLICT_RETRIES
from responder.actions.pod_records import (
    A_BLOCKED_BY,
    A_PATCHED,
    A_QUARANTINE_LABELS,
    A_QUARANTINED_AT,
    A_RELEASE_REASON,
    A_RELEASED_AT,
    A_RELEASED_BY,
    A_RELEASED_LABELS,
    QUARANTINE_ANNOTATIONS,
    RELEASED_AT,
    ReleaseRecord,
    blocked_by,
    clip_annotation,
    held_under,
    labels_text,
    now_text,
    quarantine_record_holds,
    recorded_labels,
    release_record_in,
    with_released_label,
)
from responder.cluster.api import KubeError, KubeGateway
from responder.cluster.context import PodContext
from responder.config import BlockDestination, Quarantine

# The ipBlocks a block policy allows, less its blocked addresses (destination.block_spec).
ALL_ADDRESSES = ("0.0.0.0/0", "::/0")


def _is_block_of(policy: Mapping[str, Any], uid: str) -> str | None:
    """The block label of ``policy`` when it is the block of the pod with ``uid``, under any
    block_destination.label and network_policy_prefix, as destination.block_policy makes it: owned
    by that pod, named <prefix>-<pod key>, egress only, selecting by one label whose value is the
    pod key (destination.pod_key), and allowing only ipBlocks of all addresses (some excepted) and
    every pod. None: some other policy (one the pod owns for other reasons included)."""
    meta, spec = policy.get("metadata") or {}, policy.get("spec") or {}
    owners = meta.get("ownerReferences") or []
    if not any(o.get("kind") == "Pod" and o.get("uid") == uid for o in owners):
        return None
    key = pod_key(uid)
    match = (spec.get("podSelector") or {}).get("matchLabels") or {}
    if (
        len(match) != 1
        or list(match.values()) != [key]
        or not str(meta.get("name")).endswith(f"-{key}")
        or spec.get("policyTypes") != ["Egress"]
        or spec.get("ingress")
    ):
        return None
    rules = spec.get("egress")
    if not isinstance(rules, list) or not rules or not all(_block_rule(rule) for rule in rules):
        return None
    return str(next(iter(match)))


def _block_rule(rule: Any) -> bool:
    """An egress rule of a block policy's: to ipBlocks of all addresses (with excepts), or to every
    pod of every namespace, on any port."""
    if not isinstance(rule, Mapping) or set(rule) != {"to"} or not isinstance(rule["to"], list):
        return False
    return bool(rule["to"]) and all(
        peer == {"namespaceSelector": {}}
        or (
            isinstance(peer, Mapping)
            and set(peer) == {"ipBlock"}
            and isinstance(peer["ipBlock"], Mapping)
            and peer["ipBlock"].get("cidr") in ALL_ADDRESSES
            and set(peer["ipBlock"]) <= {"cidr", "except"}
        )
        for peer in rule["to"]
    )


@dataclass(frozen=True, slots=True)
class PolicyRestore:
    """What a release did to the other policies quarantines had patched."""

    restored: tuple[str, ...] = ()
    # Left patched: a pod still quarantined in the namespace is one their exclusion takes out.
    kept: tuple[str, ...] = ()
    # Restored, then patched again: a pod their exclusion takes out was quarantined meanwhile.
    reinstated: tuple[str, ...] = ()
    # Restored under such a pod, and the exclusion could not be put back.
    exposed: tuple[str, ...] = ()
    # Why some could not be restored (API failures, by policy): they keep their exclusion.
    failed: str | None = None
    # Why the restored ones could not be checked against pods quarantined meanwhile (the recheck).
    unchecked: str | None = None

    def notes(self) -> list[str]:
        """What the release's detail says of them."""
        notes = []
        if self.restored:
            notes.append("restored NetworkPolicies " + ", ".join(self.restored))
        if self.kept:
            notes.append("kept exclusion on " + ", ".join(self.kept) + " (other pods are still quarantined)")
        if self.reinstated:
            notes.append(
                "put the exclusion back on " + ", ".join(self.reinstated) + " (a pod it takes out was"
                " quarantined while they were being restored)"
            )
        if self.exposed:
            notes.append(
                "restored " + ", ".join(self.exposed) + " while a pod their exclusion takes out was"
                " being quarantined, and could not exclude it again: that pod may be LEAKY through"
                " them; quarantine it again"
            )
        if self.unchecked is not None:
            notes.append(
                f"the quarantined pods could not be listed again after restoring them ({self.unchecked}):"
                " a pod quarantined meanwhile may be LEAKY through them; quarantine it again"
            )
        if self.failed is not None:
            notes.append(
                f"the NetworkPolicies quarantines patched could not all be restored ({self.failed}):"
                " those left keep their exclusion, which no longer takes this pod out; release it again"
                " to restore them"
            )
        return notes


def _release_annotations(
    annotations: Mapping[str, str], label: str, others: Mapping[str, str], by: str, reason: str, at: str
) -> dict[str, str | None]:
    """The annotations a release of the config quarantining under ``label`` patches, the pod's as
    read being ``annotations``: its release record, of this config and any a release since the last
    quarantine or block was of (those clear it). With ``others`` (labels of other configs' standing
    quarantines), their quarantine record stands, naming their labels only: their responders read
    their quarantines as standing, their releases find them; its patched policies stay listed (each
    config restores only those it patched). Else the quarantine record is cleared."""
    record: dict[str, str | None] = {
        A_RELEASED_AT: at,
        A_RELEASED_BY: clip_annotation(by),
        A_RELEASE_REASON: clip_annotation(reason),
        A_RELEASED_LABELS: with_released_label(annotations, label),
    }
    if others:
        return {**record, A_QUARANTINE_LABELS: labels_text(others)}
    return {**dict.fromkeys(QUARANTINE_ANNOTATIONS), **record}


def _still_quarantined(others: Mapping[str, str]) -> str:
    return (
        f"the pod is still quarantined under {_pairs(others)} (another config's quarantine.label):"
        " release it with that config"
    )


@dataclass(frozen=True, slots=True)
class _BlockOnPod:
    """The pod's destination block as a release by the config quarantining under ``config`` reads
    it. Configs share the block label and policy by default: the block is this config's when its
    record (A_BLOCKED_BY) names it, or names none (an earlier version's: any config's), and it stays
    while another config the record names still holds it (its responder would read it gone as a
    lapse)."""

    label: str  # block_destination.label
    present: bool  # the pod carries it
    attributed: bool  # its record names configs
    others: tuple[str, ...]  # the other configs its record names
    mine: bool

    @classmethod
    def read(cls, metadata: Mapping[str, Any], block_label: str, config: str) -> _BlockOnPod:
        present = block_label in (metadata.get("labels") or {})
        configs = blocked_by(metadata.get("annotations") or {}) if present else None
        return cls(
            label=block_label,
            present=present,
            attributed=configs is not None,
            others=tuple(sorted((configs or set()) - {config})),
            mine=present and (configs is None or config in configs),
        )

    @property
    def lifted(self) -> bool:
        """A release by this config lifts it."""
        return self.mine and not self.others

    def released(self) -> dict[str, str | None]:
        """What such a release patches of the block's record: gone with the block, or this config's
        name off it."""
        if self.lifted:
            return {A_BLOCKED_BY: None}
        if self.mine and self.attributed:
            return {A_BLOCKED_BY: ",".join(self.others)}
        return {}

    def stays(self) -> str:
        """That the block stays, made (or made too) by the other configs its record names."""
        whose = "the config" if len(self.others) == 1 else "the configs"
        made = "blocked it too" if self.mine else "made it"
        return (
            f"its destination block (label {self.label}) stays: {whose} with quarantine.label"
            f" {', '.join(self.others)} {made} ({A_BLOCKED_BY}): release it with that config"
        )


@dataclass(frozen=True, slots=True)
class _ReleasePlan:
    """A release's write, planned on the pod as read (``meta``): what it then says and clears."""

    meta: Mapping[str, Any]
    was_labelled: bool
    block: _BlockOnPod
    others: Mapping[str, str]  # other configs' labels whose quarantine stays
    released_at: str
    patch: dict[str, Any]


def _other_configs(metadata: Mapping[str, Any], label: str) -> dict[str, str]:
    """The labels of other keys than ``label`` the pod's quarantine record names and it still carries:
    other configs' quarantines standing on it (held_under)."""
    return {key: value for key, value in held_under(metadata).items() if key != label}


def _held_elsewhere(others: Mapping[str, str], block: _BlockOnPod) -> list[str]:
    """What other configs still hold on a pod this config released: their quarantines (``others``,
    their labels), a block its record names them for."""
    standing = [_still_quarantined(others)] if others else []
    if block.others:
        standing.append(block.stays())
    return standing


def _not_this_configs(
    label: str, others: Mapping[str, str], labels_known: bool, meta: Mapping[str, Any], block: _BlockOnPod
) -> str | None:
    """Why a release of a pod (``meta``, as read) not carrying ``label`` is refused: it is recorded
    as quarantined under ``others`` (labels of other configs it carries; none: the record names
    none, refused only without the config, ``labels_known`` false), or it is in another config's
    block alone. None: not refused (nothing of another config's, or a partial release: this
    config's own recorded block lifted, the other config's quarantine kept). A block no record
    attributes cannot be told from the other config's, and lifting it would give the pod its
    traffic to the address back."""
    rerun = (
        "run release with the --config of the config whose quarantine.label that is"
        if labels_known
        else "run release with the responder's --config"
    )
    if others and block.mine and block.attributed:
        return None
    if others or (not labels_known and quarantine_record_holds(meta)):
        under = (
            f"it was quarantined under {_pairs(others)}"
            if others
            else "it may have been quarantined under another quarantine.label"
        )
        if block.others:
            rerun += f" ({block.stays()})"
        elif block.present:
            rerun += f" (the destination block, label {block.label}, stays: it cannot be told from that"
            rerun += " config's)"
        return (
            f"the pod carries a quarantine record ({A_QUARANTINED_AT}) but not the label {label}: {under};"
            f" nothing was changed: {rerun}"
        )
    if block.present and not block.mine:
        return f"the pod is not quarantined under {label}, and {block.stays()}; nothing was changed: {rerun}"
    return None


def _pairs(labels: Mapping[str, str]) -> str:
    """Labels for a message: `key=value`, by commas."""
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))


class PodRelease:
    """Release a pod, with the collaborators of the ClusterActions it is built for: the gateway, the
    quarantine and block settings, its destination blocks (whose policy a release empties), its event
    recorder, and its ``exclude_from`` (ClusterActions._exclude_from: puts a restored policy's
    exclusion back for a pod quarantined meanwhile)."""

    def __init__(
        self,
        gateway: KubeGateway,
        settings: Quarantine,
        block_settings: BlockDestination,
        blocks: DestinationBlocks,
        events: EventRecorder,
        *,
        exclude_from: Callable[[str, Mapping[str, Any]], bool],
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._gateway = gateway
        self._settings = settings
        self._block_settings = block_settings
        self._blocks = blocks
        self._events = events
        self._exclude_from = exclude_from
        self._clock_ns = clock_ns

    def release(
        self, namespace: str, name: str, *, by: str, reason: str, labels_known: bool = True
    ) -> ActionOutcome:
        """Lift the pod's quarantine and destination block. ``labels_known``: the labels are the
        responder's own (its config was given); else a pod with a quarantine record but without
        the default label is refused, not released: it was likely quarantined under another
        label, which this release would leave on while clearing the record."""
        started = self._clock_ns()
        # A compare-and-set on the pod as read: what another writer changed since (another config's
        # block naming itself in the block's record, a release) is read again and planned afresh.
        for attempt in range(CONFLICT_RETRIES):
            try:
                raw = self._gateway.get_pod(namespace, name)
            except KubeError as exc:
                return self._failure("release", exc, started)
            meta = raw.get("metadata") or {}
            planned = self._plan_release(namespace, meta, by, reason, labels_known, started)
            if isinstance(planned, ActionOutcome):
                return planned
            try:
                self._gateway.patch_pod(namespace, name, planned.patch)
            except KubeError as exc:
                if exc.conflict and attempt < CONFLICT_RETRIES - 1:
                    continue
                return self._failure("release", exc, started)
            return self._released(namespace, name, planned, by, reason, started)
        conflict = KubeError(409, "the pod kept changing while being released")
        return self._failure("release", conflict, started)

    def _plan_release(
        self,
        namespace: str,
        meta: Mapping[str, Any],
        by: str,
        reason: str,
        labels_known: bool,
        started: int,
    ) -> _ReleasePlan | ActionOutcome:
        """What a release of the pod (``meta``, as read) writes, or the outcome that ends it unwritten
        (refused, or released already)."""
        label = self._settings.label
        annotations = meta.get("annotations") or {}
        was_labelled = label in (meta.get("labels") or {})
        # A destination block is lifted too: release gives the pod back all of its traffic.
        block = _BlockOnPod.read(meta, self._block_settings.label, label)
        # Labels of other keys the record names and the pod still carries: quarantined under them
        # by another config, whose quarantine this release leaves on, and its record with it (a
        # partial release). A record whose labels are all gone was lapsed by hand, and is cleared.
        others = _other_configs(meta, label)
        earlier = release_record_in(annotations, label)
        # A block under a block label this release does not know, looked for once (the API listing
        # the namespace's policies), and only when the label is not known.
        foreign: tuple[str, str] | None = None
        looked = block.present or labels_known
        if (
            not (was_labelled or block.mine)
            and earlier is not None
            and (others or block.others or A_QUARANTINED_AT not in annotations)
        ):
            # Released already (another config's quarantine or block left standing, or nothing): a
            # rerun, said so; the record keeps who released it and why (review-operator M2: a
            # second person's rerun wrote theirs over it and read "was not quarantined"). Policies a
            # release could not restore are tried again, as the release said to. Not a pod blocked
            # since under a block label this release does not know (review-session-51 L5): refused
            # below, naming it.
            if not looked:
                try:
                    foreign = self._blocked_under(namespace, meta)
                except KubeError as exc:
                    return self._failure("release", exc, started)
                looked = True
            if foreign is None:
                return self._released_already(namespace, earlier, others, block, started)
        refused = None if was_labelled else _not_this_configs(label, others, labels_known, meta, block)
        if refused is not None:
            return ActionOutcome(
                "release", OutcomeStatus.FAILED, refused, started_ns=started, finished_ns=self._clock_ns()
            )
        try:
            foreign = foreign if looked else self._blocked_under(namespace, meta)
        except KubeError as exc:
            return self._failure("release", exc, started)
        if foreign is not None:
            key, policy = foreign
            return ActionOutcome(
                "release",
                OutcomeStatus.FAILED,
                f"the pod is blocked under the label {key} (NetworkPolicy {policy}), not {block.label}:"
                " it was blocked under another block_destination.label; nothing was changed:"
                " run release with the responder's --config",
                started_ns=started,
                finished_ns=self._clock_ns(),
            )
        released_at = now_text()
        metadata: dict[str, Any] = {
            "uid": meta.get("uid"),
            "labels": {label: None, **({block.label: None} if block.lifted else {})},
            "annotations": {
                **_release_annotations(annotations, label, others, by, reason, released_at),
                **block.released(),
            },
        }
        if meta.get("resourceVersion") is not None:
            metadata["resourceVersion"] = meta["resourceVersion"]
        return _ReleasePlan(meta, was_labelled, block, others, released_at, {"metadata": metadata})

    def _released(
        self, namespace: str, name: str, planned: _ReleasePlan, by: str, reason: str, started: int
    ) -> ActionOutcome:
        """After the release's write landed: the block policy emptied, policy patches undone, said."""
        label, meta, block, others = self._settings.label, planned.meta, planned.block, planned.others
        annotations = meta.get("annotations") or {}
        recorded = recorded_labels(annotations)
        # Released from here on (the labels are off the pod): what fails of the rest is said in the
        # detail, never a failed release, which a rerun would call nothing to release.
        left = self._clear_block(namespace, meta) if block.lifted else []
        policies = self._restore_policies(namespace, annotations.get(A_PATCHED, ""))
        if planned.was_labelled or block.mine:
            notes = [release_note(by, reason)]
            if others:
                notes.append(_still_quarantined(others))
        elif A_QUARANTINED_AT in annotations:
            if not recorded:
                gone = f"the label {label} was"
            elif len(recorded) == 1:
                gone = f"the label it was quarantined under ({_pairs(recorded)}) was"
            else:
                gone = f"the labels it was quarantined under ({_pairs(recorded)}) were"
            notes = [f"{NOTHING_TO_RELEASE}: {gone} already gone; its quarantine record cleared by {by}"]
        else:
            notes = [f"{NOTHING_TO_RELEASE}: the pod was not quarantined or blocked; recorded {by}"]
        if block.lifted:
            notes.append("lifted its destination block")
        elif block.present:
            notes.append(block.stays())
        notes += [*left, *policies.notes()]
        outcome = ActionOutcome(
            "release",
            OutcomeStatus.RELEASED,
            "; ".join(notes),
            patched_policies=policies.restored,
            started_ns=started,
            finished_ns=self._clock_ns(),
            # As the pod records it: the responder, finding the release there, tells it only once.
            extra={RELEASED_AT: planned.released_at},
        )
        self._events.record(
            namespace, name, meta.get("uid"), "QuarantineReleased", outcome.detail, warning=False
        )
        return outcome

    def held_elsewhere(self, pod: PodContext) -> list[str]:
        """For a release of ``pod`` (as read since) found by the responder: what other configs still
        hold on it, in words (none: it is free of serving-guard's cuts)."""
        metadata = {"labels": pod.labels, "annotations": pod.annotations}
        label = self._settings.label
        others = _other_configs(metadata, label)
        return _held_elsewhere(others, _BlockOnPod.read(metadata, self._block_settings.label, label))

    def _released_already(
        self,
        namespace: str,
        earlier: ReleaseRecord,
        others: Mapping[str, str],
        block: _BlockOnPod,
        started: int,
    ) -> ActionOutcome:
        """A release rerun once this config's release is recorded (with what another config holds
        standing, and the policies quarantines patched that it restores now): the release the pod
        records, by its person (journaled as theirs, told once)."""
        standing = _held_elsewhere(others, block)
        policies = self._restore_policies(namespace, "")
        return ActionOutcome(
            "release",
            OutcomeStatus.RELEASED,
            "; ".join(
                [
                    f"{NOTHING_TO_RELEASE}: its release from {self._settings.label} is recorded already"
                    f" (by {earlier.by} at {earlier.at})",
                    *standing,
                    *policies.notes(),
                ]
            ),
            patched_policies=policies.restored,
            started_ns=started,
            finished_ns=self._clock_ns(),
            extra={
                RELEASED_AT: earlier.at,
                BY_HAND: earlier.by,
                REASON: earlier.reason,
                RECORDED_RELEASE: True,
            },
        )

    def _clear_block(self, namespace: str, meta: Mapping[str, Any]) -> list[str]:
        """Empty the block policy of the pod released (``meta``: its metadata as read), which no
        longer selects it; what the detail says if that failed."""
        uid = meta.get("uid")
        if not uid:
            return []
        try:
            self._blocks.clear(namespace, str(uid))
        except KubeError as exc:
            return [
                f"its block policy could not be emptied ({exc}): it no longer selects the pod, but a"
                " later block of the pod would block the released addresses again"
            ]
        return []

    def _restore_policies(self, namespace: str, recorded: str) -> PolicyRestore:
        """_undo_policy_patches, a failure said in what it returns."""
        try:
            return self._undo_policy_patches(namespace, recorded)
        except KubeError as exc:
            return PolicyRestore(failed=str(exc))

    def _blocked_under(self, namespace: str, meta: Mapping[str, Any]) -> tuple[str, str] | None:
        """The label and policy of a block the pod (``meta``: its metadata as read) is in, found by
        the policy it owns in the shape a block policy has (_is_block_of): for a release that does
        not know the responder's block label. Any other policy the pod owns is not a block."""
        uid, labels = meta.get("uid"), meta.get("labels") or {}
        if not uid:
            return None
        for policy in self._gateway.list_network_policies(namespace):
            key = _is_block_of(policy, str(uid))
            if key is not None and labels.get(key) == pod_key(str(uid)):
                return key, netpol.name_of(policy)
        return None

    def _undo_policy_patches(self, namespace: str, recorded: str) -> PolicyRestore:
        """Restore the policies quarantines patched (``recorded`` on the pod, and any marked as
        ours), each only while no quarantined pod of the namespace is one its exclusion takes out."""
        label = self._settings.label
        candidates = {n for n in recorded.split(",") if n}
        candidates |= {
            netpol.name_of(p)
            for p in self._gateway.list_network_policies(namespace)
            if netpol.is_patched_by_us(p, label)
        }
        if not candidates:
            return PolicyRestore()
        quarantined = self._quarantined_values(namespace)
        restored, kept, failed = [], [], []
        for name in sorted(candidates):
            # One policy the API refuses does not stop the others: each restored one is named, and
            # rechecked below, whatever came after it.
            try:
                outcome = self._restore_policy(namespace, name, quarantined)
            except KubeError as exc:
                failed.append(f"{name}: {exc}")
                continue
            if outcome is True:
                restored.append(name)
            elif outcome is False:
                kept.append(name)
        failure = "; ".join(failed) or None
        if not restored:
            return PolicyRestore(kept=tuple(kept), failed=failure)
        # A quarantine labels its pod before it reads the policies: one that found a policy still
        # patched, before the restore, shows in a listing made after it.
        try:
            rechecked = self._recheck_restored(namespace, restored, tuple(kept))
        except KubeError as exc:
            # Restored all the same: said, with why a pod quarantined meanwhile may not be excluded.
            return PolicyRestore(tuple(restored), tuple(kept), failed=failure, unchecked=str(exc))
        return replace(rechecked, failed=failure)

    def _quarantined_values(self, namespace: str) -> set[str]:
        """The quarantine label's values on the namespace's pods (any value, any cut)."""
        label = self._settings.label
        pods = self._gateway.list_pods(namespace, label_selector=label)
        return {str(((p.get("metadata") or {}).get("labels") or {}).get(label)) for p in pods}

    def _restore_policy(self, namespace: str, name: str, quarantined: set[str]) -> bool | None:
        """Take our exclusion off the policy, as read now, unless it takes out a pod labelled one
        of ``quarantined``. True: restored; False: kept; None: gone or no longer patched by us."""
        label, cut_values = self._settings.label, self._settings.cut_values()
        written: dict[str, Any] | None = None  # what the last attempt wrote
        for _ in range(CONFLICT_RETRIES):
            current = self._gateway.get_network_policy(namespace, name)
            if current is None or not netpol.is_patched_by_us(current, label):
                # Gone, or no longer patched: restored by our last write, whose answer was lost (the
                # client retried it into a conflict) when it reads as that write; else by another.
                if written is None or current is None:
                    return None
                return True if current.get("spec") == written.get("spec") else None
            if any(netpol.excludes(current, label, cut_values, value) for value in quarantined):
                return False
            written = netpol.without_exclusion(current, label, cut_values)
            try:
                self._gateway.replace_network_policy(namespace, name, written)
                return True
            except KubeError as exc:
                if not netpol.changed_since_read(exc):
                    raise
        raise KubeError(409, f"NetworkPolicy {name} kept changing while being restored")

    def _recheck_restored(self, namespace: str, restored: list[str], kept: tuple[str, ...]) -> PolicyRestore:
        """List the quarantined pods again after restoring ``restored``: a policy whose exclusion
        would take out one that appeared meanwhile gets it back (that pod's quarantine read it still
        patched and reported it isolated)."""
        quarantined = self._quarantined_values(namespace)
        still_restored, reinstated, exposed, unchecked = [], [], [], []
        for name in restored:
            try:  # each on its own: a failure leaves the others' findings standing
                current = self._gateway.get_network_policy(namespace, name)
            except KubeError as exc:
                still_restored.append(name)
                unchecked.append(f"{name}: {exc}")
                continue
            spec = (current or {}).get("spec") or {}
            covering = self._settings.covering_values(netpol.policy_directions(spec))
            if current is None or not quarantined & set(covering):
                still_restored.append(name)
            # Put back only where this config patches other policies (the admission policy refuses
            # it otherwise): off, the pod that relied on it is said exposed.
            elif self._settings.patch_other_policies and self._exclude_from(namespace, current):
                reinstated.append(name)
            else:
                exposed.append(name)
        said = "; ".join(unchecked) or None
        return PolicyRestore(tuple(still_restored), kept, tuple(reinstated), tuple(exposed), unchecked=said)

    def _failure(self, action: str, exc: KubeError, started: int) -> ActionOutcome:
        return failure_outcome(action, exc, started, self._clock_ns())
