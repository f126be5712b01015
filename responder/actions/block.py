"""Block one destination: the pod may no longer reach the address the alert names, and keeps the
rest of its traffic (see responder/actions/destination.py for why and when NetworkPolicies can).

The namespace's policies are read first: a pod whose egress other policies restrict gets no block
policy (it would open the rest), only a word on whether they let the address through (but where
its own block policy, made earlier, lets the address through, the address is added there). Otherwise
the pod's own block policy is created or updated (it selects nothing until the pod is labelled),
then the pod is labelled (a compare-and-set on its uid and version), then the policies are read
again to prove it: the block is in place and nothing else governs the pod's egress. Every step is
idempotent; a block never narrows a quarantine (the policy leaves out pods whose egress is cut; one
an earlier version made, with the label values of its day, is rewritten as built now when met).
The block is proven again while the attack goes on (lapse): its label, its policy as built and
selecting the pod (or the pod's egress cut holding), and no other policy letting an address through.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from responder.actions import destination, netpol
from responder.actions.events import EventRecorder
from responder.actions.outcome import (
    BLOCK_DESTINATION,
    BLOCK_POLICY,
    BLOCKED_ADDRESS,
    KEPT_OUT,
    KEPT_OUT_BY,
    LABELLED,
    NEWLY_BLOCKED,
    POLICY_FULL,
    UNBLOCKED,
    WIDENED,
    WOULD_BLOCK,
    ActionOutcome,
    KeptOut,
    OutcomeStatus,
    UnknownStatus,
    failure_outcome,
)
from responder.actions.pod_patch import (
    CONFLICT_RETRIES,
    KeptChanging,
    PodReplaced,
    ReleasedMeanwhile,
    patch_as_read,
)
from responder.actions.pod_records import (
    A_BLOCKED_BY,
    clear_release_record_of,
    released_after_alert,
    with_blocker,
)
from responder.alert import Alert
from responder.cluster.api import KubeError, KubeGateway
from responder.cluster.context import PodContext
from responder.cluster.network_escape import out_of_reach, out_of_reach_as_read
from responder.cluster.selectors import SelectorError, selector_matches
from responder.config import BlockDestination, Isolation, Quarantine, QuarantineCut

log = logging.getLogger("serving_guard.actions")

ACTION = BLOCK_DESTINATION
DISCOVERY_TTL_NS = 300 * 10**9
# Keyed as outcome.status is typed (an UnknownStatus only ever comes back from the journal).
_EVENT_REASONS: dict[OutcomeStatus | UnknownStatus, str] = {
    OutcomeStatus.BLOCKED: "DestinationBlocked",
    OutcomeStatus.LEAKY: "DestinationBlockLeaky",
    OutcomeStatus.WITHHELD: "DestinationBlockWithheld",
    OutcomeStatus.FAILED: "DestinationBlockFailed",
}


# What a full block policy's LEAKY outcome advises (the pipeline does it, when it may: escalation).
QUARANTINE_EGRESS_ADVICE = "quarantine the pod's egress instead"


class TooMany(Exception):
    """The pod's block holds block_destination.max_per_pod addresses already."""

    def __init__(self, held: int) -> None:
        super().__init__(f"{held} addresses blocked already")
        self.held = held


class DestinationBlocks:
    def __init__(
        self,
        gateway: KubeGateway,
        settings: BlockDestination,
        quarantine: Quarantine,
        events: EventRecorder,
        *,
        clock_ns: Callable[[], int] = time.time_ns,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self._gateway = gateway
        self._settings = settings
        self._quarantine = quarantine
        self._events = events
        self._clock_ns = clock_ns
        # Times the discovery cache: a wall clock stepped back would keep it for the step too.
        self._monotonic_ns = monotonic_ns
        self._discovered: tuple[int, list[str]] | None = None

    def block(
        self,
        pod: PodContext,
        alert: Alert,
        *,
        dry_run: bool,
        address: str | None = None,
        yield_to_release: bool = False,
        release_since_ns: int | None = None,
    ) -> ActionOutcome:
        """Block the address the alert names, or ``address`` (a person's --address) when given.
        ``yield_to_release``: an incident's follow-up block, which a release made since ``pod`` was
        read stops (ReleasedMeanwhile) rather than be undone by it. ``release_since_ns``: an
        incident's opening block, which gives way (WITHHELD) to such a release made at that time or
        later (after the alert's event, as the decision withholds on a release its read shows)."""
        started = self._clock_ns()
        settings = self._settings
        target = (
            destination.target_of(alert, settings.address_fields, settings.never_block)
            if address is None
            else destination.target_from_text("--address", address, settings.never_block)
        )
        if isinstance(target, str):
            outcome = self._outcome(OutcomeStatus.WITHHELD, f"nothing to block: {target}", started)
        else:
            try:
                outcome = self._block(
                    pod,
                    target,
                    started,
                    dry_run=dry_run,
                    yield_to_release=yield_to_release,
                    release_since_ns=release_since_ns,
                )
            except KubeError as exc:
                outcome = failure_outcome(ACTION, exc, started, self._clock_ns())
            except ReleasedMeanwhile as exc:
                if yield_to_release:
                    raise
                outcome = self._outcome(
                    OutcomeStatus.WITHHELD, released_after_alert(exc.record, alert), started
                )
        # Dry-run writes nothing to the cluster, not even an Event.
        if outcome.status is not OutcomeStatus.POD_GONE and not dry_run:
            # A block that found its address out of reach already made nothing: not "blocked".
            kept_out = outcome.kept_out is not None
            reason = "DestinationKeptOut" if kept_out else _EVENT_REASONS.get(outcome.status, "ServingGuard")
            self._events.record_for(pod, reason, f"serving-guard {ACTION}: {outcome.detail}")
        return outcome

    # -- the steps ------------------------------------------------------------------------------

    def _block(
        self,
        pod: PodContext,
        target: destination.Target,
        started: int,
        *,
        dry_run: bool,
        yield_to_release: bool,
        release_since_ns: int | None,
    ) -> ActionOutcome:
        address = target.address
        name = destination.block_policy_name(self._settings.network_policy_prefix, pod.uid)
        extra: dict[str, Any] = {BLOCKED_ADDRESS: str(address), BLOCK_POLICY: name}
        # The host network, or a way out of the pod's network namespace: no policy holds the pod.
        unreachable = out_of_reach_as_read(pod.host_network, pod.network_escape)
        if unreachable:
            return self._outcome(
                OutcomeStatus.DRY_RUN if dry_run else OutcomeStatus.LEAKY,
                f"{address} ({target.field}) cannot be blocked: {'; '.join(unreachable)}; nothing was made,"
                " quarantine cannot isolate it either",
                started,
                extra,
            )
        others = [] if self._settings.ignore_other_policy_apis else self.other_policy_apis()
        if others:
            return self._outcome(
                OutcomeStatus.WITHHELD,
                f"not blocked: the cluster serves {', '.join(others)}, whose policies may restrict the"
                " pod's egress, and a block policy would add to what they allow; quarantine the pod's"
                " egress (or set block_destination.ignore_other_policy_apis once none restricts it)",
                started,
                extra,
            )
        policies = self._gateway.list_network_policies(pod.namespace)
        value = destination.pod_key(pod.uid)
        listed = next((p for p in policies if netpol.name_of(p) == name), None)
        governance = destination.egress_governance(policies, pod.labels, address, self._ours(name, policies))
        # In dry-run the same findings are the prediction (nothing is changed either way).
        if governance.allowing:
            said = self._brought_up_to_date(pod, name, value, listed, dry_run)
            allowing = self._names(governance.allowing, policies, pod.labels)
            return self._outcome(
                OutcomeStatus.DRY_RUN if dry_run else OutcomeStatus.LEAKY,
                f"{address} ({target.field}) is allowed by {allowing}, which restrict"
                " the pod's egress: a block policy would only add to what they allow, so none was made;"
                " change them to block it, or quarantine the pod's egress" + "".join(f"; {n}" for n in said),
                started,
                extra,
                leaky=governance.allowing,
            )
        # Kept out by them unless the pod's own block policy, made earlier, selects it and lets the
        # address through (it allows all egress but what it blocks): then it is added there.
        if governance.governing and not self._lets_through(listed, pod.labels, address):
            said = self._brought_up_to_date(pod, name, value, listed, dry_run)
            return self._outcome(
                OutcomeStatus.DRY_RUN if dry_run else OutcomeStatus.BLOCKED,
                f"{address} ({target.field}) is already out of reach: the pod's egress is restricted by"
                f" {self._names(governance.governing, policies, pod.labels)}, none of which allows it; "
                + ("; ".join(said) if said else "nothing was changed"),
                started,
                {**extra, KEPT_OUT: KeptOut.POLICIES.value, KEPT_OUT_BY: list(governance.governing)},
            )
        cut = self._egress_cut(pod.labels)
        if cut is not None:
            return self._kept_out_by_cut(pod, target, cut, policies, listed, started, extra, dry_run=dry_run)
        if dry_run:
            return self._outcome(
                OutcomeStatus.DRY_RUN,
                f"{WOULD_BLOCK} {address} ({target.field}) with NetworkPolicy {name}, all other egress kept",
                started,
                extra,
            )
        try:
            blocked, added, unblocked = self._ensure_policy(pod, name, value, listed, address)
        except TooMany as exc:
            return self._outcome(
                OutcomeStatus.LEAKY,
                f"{address} ({target.field}) is not blocked: the pod's block already holds {exc.held}"
                f" addresses (block_destination.max_per_pod is {self._settings.max_per_pod});"
                f" {QUARANTINE_EGRESS_ADVICE}",
                started,
                {**extra, POLICY_FULL: True},
            )
        if added:
            extra[NEWLY_BLOCKED] = True
        if unblocked:
            extra[UNBLOCKED] = sorted(str(a) for a in unblocked)
        try:
            return self._label_and_prove(
                pod, name, value, target, blocked, started, extra, yield_to_release, release_since_ns
            )
        except KubeError as exc:
            failed = failure_outcome(ACTION, exc, started, self._clock_ns())
            if failed.status is not OutcomeStatus.FAILED:
                return failed
            # The address is in the policy (and the pod may carry its label): it counts against
            # the block breaker, and release must lift it. Without the address: tried again.
            kept = {key: extra[key] for key in (NEWLY_BLOCKED, LABELLED) if key in extra}
            return dataclasses.replace(failed, extra=kept)

    def _kept_out_by_cut(
        self,
        pod: PodContext,
        target: destination.Target,
        cut: QuarantineCut,
        policies: list[dict[str, Any]],
        listed: dict[str, Any] | None,
        started: int,
        extra: dict[str, Any],
        *,
        dry_run: bool,
    ) -> ActionOutcome:
        """The pod's quarantine label puts it in ``cut``, which stops its egress: no block policy is
        made. Lifted by hand later, the policies the quarantine had patched could select the pod
        again, and a block policy made meanwhile would add to what they allow. The label alone
        proves nothing: the cut is its deny-all, and the pod's own block policy (``listed``, made
        earlier) must leave the pod out, or its allow of all other egress opens the cut (an earlier
        version's policy leaves out the label values of its day: ``true`` and ``true-both`` after
        ``quarantine.isolate: egress``). Such a policy is rewritten as built now, then proven."""
        address, name = target.address, str(extra[BLOCK_POLICY])

        def uncut(gap: str) -> ActionOutcome:
            return self._outcome(
                OutcomeStatus.DRY_RUN if dry_run else OutcomeStatus.LEAKY,
                f"{address} ({target.field}) is not blocked: the pod's quarantine label cuts its"
                f" egress, but {gap}, so nothing cuts it; no block policy was made (it would leave"
                " the labelled pod out): quarantine the pod again to repair its cut",
                started,
                extra,
            )

        gap = netpol.deny_all_gap(policies, cut.network_policy, pod.labels, ("egress",))
        if gap is not None:
            return uncut(gap)
        notes = ""
        if listed is not None and self._may_select(listed, pod.labels):
            opened = (
                f"{address} ({target.field}): a quarantine cuts the pod's egress (NetworkPolicy"
                f" {cut.network_policy}), but the pod's block policy {name} still selects it (made by an"
                " earlier version, or changed) and allows the rest of its egress"
            )
            if dry_run:
                return self._outcome(
                    OutcomeStatus.DRY_RUN,
                    f"{opened}: it would be rewritten to leave the pod out, keeping {address} out of reach",
                    started,
                    extra,
                )
            refused = self._leave_out(pod, name, destination.pod_key(pod.uid), listed, pod.labels)
            if refused is None:
                # Prove it, as read back: our policy leaves the pod out, the cut is in force, and
                # no other policy lets the address through.
                policies = self._gateway.list_network_policies(pod.namespace)
                listed = next((p for p in policies if netpol.name_of(p) == name), None)
                if listed is not None and self._may_select(listed, pod.labels):
                    refused = "rewritten, it still selects the pod when read back"
            if refused is not None:
                return self._outcome(
                    OutcomeStatus.LEAKY,
                    f"{opened}, and it was not rewritten to leave the pod out ({refused}): {address} is"
                    " not blocked; release the pod (serving-guard release) and quarantine it again",
                    started,
                    extra,
                    leaky=(name,),
                )
            gap = netpol.deny_all_gap(policies, cut.network_policy, pod.labels, ("egress",))
            if gap is not None:
                return uncut(gap)
            governance = destination.egress_governance(
                policies, pod.labels, address, self._ours(name, policies)
            )
            if governance.allowing:
                allowing = self._names(governance.allowing, policies, pod.labels)
                return self._outcome(
                    OutcomeStatus.LEAKY,
                    f"{address} ({target.field}) is allowed by {allowing}, which"
                    f" came to restrict the pod's egress while its block policy {name} was being"
                    " rewritten to leave the pod out (a quarantine cuts its egress); change them to block it",
                    started,
                    extra,
                    leaky=governance.allowing,
                )
            notes = (
                f"; rewrote its block policy {name}, which still selected the pod and allowed the rest of"
                " its egress, to leave the pod out"
            )
        else:
            # Leaving the pod out now, yet by an earlier version's values: moved to another cut
            # that stops egress (by hand, as the upgrade notes say), the pod would be selected again.
            key = destination.pod_key(pod.uid)
            notes = "".join(f"; {note}" for note in self._brought_up_to_date(pod, name, key, listed, dry_run))
        return self._outcome(
            OutcomeStatus.DRY_RUN if dry_run else OutcomeStatus.BLOCKED,
            f"{address} ({target.field}) is already out of reach: a quarantine cuts the pod's"
            f" egress (NetworkPolicy {cut.network_policy}); no block policy was made{notes}",
            started,
            {**extra, KEPT_OUT: KeptOut.QUARANTINE.value, KEPT_OUT_BY: [cut.network_policy]},
        )

    @staticmethod
    def _lets_through(
        policy: Mapping[str, Any] | None, labels: Mapping[str, str], address: destination.Address
    ) -> bool:
        """Whether ``policy`` (the pod's block policy as listed; None: there is none) selects a pod
        with ``labels`` and allows it egress to ``address``."""
        return policy is not None and bool(
            destination.egress_governance([policy], labels, address, set()).allowing
        )

    @staticmethod
    def _may_select(policy: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
        """Whether ``policy`` selects a pod with ``labels``; fail safe: one whose selector cannot be
        evaluated may select it."""
        return netpol.may_select((policy.get("spec") or {}).get("podSelector") or {}, labels)

    def _label_and_prove(
        self,
        pod: PodContext,
        name: str,
        value: str,
        target: destination.Target,
        blocked: set[destination.Address],
        started: int,
        extra: dict[str, Any],
        yield_to_release: bool,
        release_since_ns: int | None,
    ) -> ActionOutcome:
        """Label the pod into its block policy (made already), then prove the block."""
        label = self._settings.label
        try:
            # The pod's labels as read are not needed: its block's label is its own. (An earlier
            # release's record goes: a release recorded on the pod is then one made since.)
            quarantine_label = self._quarantine.label
            patched = patch_as_read(
                self._gateway,
                pod,
                lambda meta: {
                    "labels": {label: value},
                    "annotations": {
                        **clear_release_record_of(meta.get("annotations") or {}, quarantine_label),
                        # Which config's block this is: a release by another leaves it.
                        A_BLOCKED_BY: with_blocker(meta, label, quarantine_label),
                    },
                },
                label=quarantine_label,
                yield_to_release=yield_to_release,
                release_since_ns=release_since_ns,
            )
        except PodReplaced as exc:
            return self._outcome(OutcomeStatus.POD_GONE, str(exc), started)
        except ReleasedMeanwhile:
            # The release emptied the block policy before this block wrote its address there: empty
            # it again, or a later block of the pod would bring the released address back.
            try:
                self.clear(pod.namespace, pod.uid)
            except KubeError as exc:
                log.warning(
                    "a block that gave way to a release could not take its address out again",
                    extra={"pod": f"{pod.namespace}/{pod.name}", "policy": name, "error": str(exc)},
                )
            raise
        except KeptChanging as exc:
            # Without the address: a failed block is tried again (see Pipeline._maybe_block_more).
            counted = {NEWLY_BLOCKED: True} if NEWLY_BLOCKED in extra else None
            return self._outcome(OutcomeStatus.FAILED, str(exc), started, counted)
        extra[LABELLED] = True  # the pod is in its block policy: `serving-guard release` lifts it
        # As labelled: an ephemeral container added since the pod was read counts.
        unreachable = out_of_reach(patched.get("spec") or {})
        if unreachable:
            return self._outcome(
                OutcomeStatus.LEAKY,
                f"{'; '.join(unreachable)}: nothing is blocked",
                started,
                extra,
            )
        labels = (patched.get("metadata") or {}).get("labels") or {}
        return self._proven(pod.namespace, name, labels, target, blocked, started, extra)

    def _proven(
        self,
        namespace: str,
        name: str,
        labels: Mapping[str, str],
        target: destination.Target,
        blocked: set[destination.Address],
        started: int,
        extra: dict[str, Any],
    ) -> ActionOutcome:
        """Read the policies again: the block is in place, and no other policy came to govern the
        pod's egress meanwhile (ours would then open what it restricts)."""
        address = target.address
        policies = self._gateway.list_network_policies(namespace)
        ours = next((p for p in policies if netpol.name_of(p) == name), None)
        if ours is None or address not in destination.blocked_by(ours.get("spec")):
            return self._outcome(
                OutcomeStatus.LEAKY,
                f"NetworkPolicy {name} does not block {address} when read back; check the pod's traffic",
                started,
                extra,
            )
        governance = destination.egress_governance(policies, labels, address, self._ours(name, policies))
        if governance.allowing:
            allowing = self._names(governance.allowing, policies, labels)
            return self._outcome(
                OutcomeStatus.LEAKY,
                f"made NetworkPolicy {name} to block {address}, but {allowing} now"
                " restrict the pod's egress and allow it: it is not blocked, and the block policy adds"
                " to what they allow; release the block (serving-guard release) and change them",
                started,
                extra,
                leaky=governance.allowing,
            )
        if governance.governing:
            # In force (none of them allows the address), but their restriction is not: ours
            # allows all other egress, and policies are a union of allows.
            extra[WIDENED] = list(governance.governing)
            governing = self._names(governance.governing, policies, labels)
            return self._outcome(
                OutcomeStatus.LEAKY,
                f"blocked {address} with NetworkPolicy {name}, but {governing} now"
                " restrict the pod's egress too, and the block policy allows what they deny; they keep"
                f" {address} out themselves: release the block (serving-guard release)",
                started,
                extra,
            )
        others = sorted(str(a) for a in blocked if a != address)
        detail = f"blocked egress to {address} ({target.field}) with NetworkPolicy {name};"
        detail += " all other egress kept"
        if others:
            detail += "; also blocked: " + ", ".join(others)
        if extra.get(UNBLOCKED):
            detail += "; no longer blocked (block_destination.never_block holds them now): "
            detail += ", ".join(extra[UNBLOCKED])
        if self._settings.ignore_other_policy_apis:
            detail += (
                "; other network-policy APIs (Cilium, Calico, Antrea, AdminNetworkPolicy, EKS, GKE FQDN)"
                " were not read: block_destination.ignore_other_policy_apis says none of them restricts it"
            )
        return self._outcome(OutcomeStatus.BLOCKED, detail, started, extra)

    def _ensure_policy(
        self,
        pod: PodContext,
        name: str,
        value: str,
        current: Mapping[str, Any] | None,
        address: destination.Address,
    ) -> tuple[set[destination.Address], bool, set[destination.Address]]:
        """Create the pod's block policy, or add ``address`` to what it blocks; changed, created or
        deleted meanwhile (a 409, or a 404 to the rewrite), it is read again and merged afresh, so
        that an address another writer added is kept. Returns what it blocks, whether ``address``
        is new to it, and the addresses it let go (never_block holds them now). Raises TooMany past
        block_destination.max_per_pod."""
        namespace = pod.namespace
        for attempt in range(CONFLICT_RETRIES):
            if attempt:
                current = self._gateway.get_network_policy(namespace, name)
            held = destination.blocked_by((current or {}).get("spec"))
            # An address never_block came to hold since it was blocked is let go now.
            unblocked = {a for a in held if destination.never_blocked(a, self._settings.never_block)}
            earlier = held - unblocked
            blocked = earlier | {address}
            if len(blocked) > self._settings.max_per_pod:
                raise TooMany(len(earlier))
            spec = self._spec(value, blocked)
            added = address not in earlier
            try:
                if current is None:
                    body = destination.block_policy(namespace, name, spec, owner=(pod.name, pod.uid))
                    self._gateway.create_network_policy(namespace, body)
                    return blocked, added, unblocked
                if current.get("spec") == spec:
                    return blocked, added, unblocked
                replaced = dict(current)
                replaced["spec"] = spec
                self._gateway.replace_network_policy(namespace, name, replaced)
                return blocked, added, unblocked
            except KubeError as exc:
                # Created meanwhile (409 to the create), or changed or deleted since read (409 or
                # 404 to the rewrite): read again. A 404 to the create is not of this policy.
                if not (exc.conflict if current is None else netpol.changed_since_read(exc)):
                    raise
        raise KubeError(409, f"NetworkPolicy {name} kept changing while being written")

    def clear(self, namespace: str, uid: str) -> None:
        """After a release: the pod's block policy (which no longer selects it) blocks nothing, so
        that a later block starts from its own address, not the released ones."""
        name = destination.block_policy_name(self._settings.network_policy_prefix, uid)
        spec = self._spec(destination.pod_key(uid), set())
        for _ in range(CONFLICT_RETRIES):
            current = self._gateway.get_network_policy(namespace, name)
            if current is None or current.get("spec") == spec:
                return
            replaced = dict(current)
            replaced["spec"] = spec
            try:
                self._gateway.replace_network_policy(namespace, name, replaced)
                return
            except KubeError as exc:
                if not netpol.changed_since_read(exc):
                    raise
        raise KubeError(409, f"NetworkPolicy {name} kept changing while being cleared")

    def leave_out(self, pod: PodContext, labels: Mapping[str, str]) -> str | None:
        """For a quarantine that has just labelled ``pod`` (now with ``labels``) into a cut that
        stops its egress: the pod's block policy, if it still selects the pod (an earlier version's
        NotIn values), is rewritten as built now, which leaves the pod out; read the policies
        afterwards to prove it (the leak check does). None: nothing to do, or done; else why it
        still selects the pod, in words. Raises KubeError when the policy cannot be read."""
        if self._settings.label not in labels or self._egress_cut(labels) is None:
            return None
        name = destination.block_policy_name(self._settings.network_policy_prefix, pod.uid)
        current = self._gateway.get_network_policy(pod.namespace, name)
        if current is None:
            return None
        key = destination.pod_key(pod.uid)
        if not self._may_select(current, labels):
            # Left out now, yet perhaps by an earlier version's values, which another cut that
            # stops egress (a move by hand) would not be: brought up to date while here.
            built = self._spec(key, set())["podSelector"]
            if (current.get("spec") or {}).get("podSelector") != built:
                refused = self._leave_out(pod, name, key, current, labels)
                if refused is not None:
                    log.warning(
                        "block policy %s selects pods otherwise than built now, and was left so (%s)",
                        name,
                        refused,
                        extra={"pod": f"{pod.namespace}/{pod.name}"},
                    )
            return None
        refused = self._leave_out(pod, name, key, current, labels)
        if refused is None:
            return None
        return f"its block policy {name} still selects it and was not rewritten to leave it out ({refused})"

    def _leave_out(
        self,
        pod: PodContext,
        name: str,
        value: str,
        current: Mapping[str, Any] | None,
        labels: Mapping[str, str],
    ) -> str | None:
        """Rewrite the pod's block policy (``current``, as read) as built now, blocking what it
        blocks: its NotIn then leaves out every pod whose quarantine cuts its egress. None: done, or
        nothing to do (gone, or as built already); else why not, in words. Never into a form that
        selects the pod (with ``labels``) while its quarantine cuts its egress (an earlier version's
        label value that the block's NotIn does not hold): that would open the cut. On a conflict it
        is read again."""
        namespace = pod.namespace
        for attempt in range(CONFLICT_RETRIES):
            if attempt:
                current = self._gateway.get_network_policy(namespace, name)
            if current is None:
                return None
            spec = self._spec(value, destination.blocked_by(current.get("spec")))
            if self._egress_cut(labels) is not None and netpol.may_select(spec["podSelector"], labels):
                return (
                    f"as built now it would select the pod too: its label {self._quarantine.label}="
                    f"{labels.get(self._quarantine.label)} is not among the values the block leaves out"
                )
            if current.get("spec") == spec:
                return None
            replaced = dict(current)
            replaced["spec"] = spec
            try:
                self._gateway.replace_network_policy(namespace, name, replaced)
                return None
            except KubeError as exc:
                if not netpol.changed_since_read(exc):
                    return str(exc)
        return f"NetworkPolicy {name} kept changing while being rewritten"

    def _brought_up_to_date(
        self, pod: PodContext, name: str, value: str, listed: Mapping[str, Any] | None, dry_run: bool
    ) -> list[str]:
        """Where no block policy is made or changed (other policies govern the pod's egress): the
        pod's block policy, if one was made earlier and selects pods otherwise than built now (an
        earlier version's NotIn values), is rewritten as built now, so that a later quarantine into
        a cut that stops egress finds the pod left out. What the detail says of it (nothing when
        there was nothing to do, and in dry-run)."""
        if dry_run or listed is None:
            return []
        built = self._spec(value, set())["podSelector"]
        if (listed.get("spec") or {}).get("podSelector") == built:
            return []
        refused = self._leave_out(pod, name, value, listed, pod.labels)
        if refused is not None:
            return [
                f"its block policy {name} selects pods otherwise than built now, and was left so ({refused})"
            ]
        return [
            f"rewrote its block policy {name}, which selected pods otherwise than built now (an earlier"
            " version's), to leave out the pods whose quarantine cuts their egress"
        ]

    # -- shared ---------------------------------------------------------------------------------

    def _ours(self, name: str, policies: list[dict[str, Any]]) -> set[str]:
        """The pod's block policy and the quarantine cuts' deny-alls as built (of ``policies``, as
        listed): while a cut stops the pod's egress, the block policy leaves the pod out, so they
        never add to each other. A deny-all is known by its spec, not its name: one edited by hand
        (its selector widened, a rule added) is a policy like any other, whose allows count. So is
        a cut's deny-all kept cutting egress beyond a cut that does not stop it (the ingress cut's):
        the block policy selects its pods, and skipped, the pod's egress cut whole would pass for
        open, and the block's allow-all-but-the-address would open it."""
        label = self._quarantine.label
        cuts = {cut.network_policy: cut for cut in map(self._quarantine.cut, Isolation)}
        deny_alls = set()
        for policy in policies:
            cut = cuts.get(netpol.name_of(policy))
            spec = policy.get("spec")
            if cut is None or not netpol.is_deny_all_as_built(spec, label, cut.label_value, cut.directions):
                continue
            beyond = netpol.deny_all_beyond(spec, label, cut.label_value, cut.directions)
            if "egress" in cut.directions or "egress" not in beyond:
                deny_alls.add(cut.network_policy)
        return {name, *deny_alls}

    def _names(
        self, names: tuple[str, ...], policies: list[dict[str, Any]], labels: Mapping[str, str]
    ) -> str:
        """``names`` (of ``policies``, as listed) joined, a cut's deny-all among them said to be
        altered, and how (one as built is never among them: _ours)."""
        cuts = {cut.network_policy: cut for cut in map(self._quarantine.cut, Isolation)}
        said = []
        for name in names:
            cut = cuts.get(name)
            gap = netpol.deny_all_gap(policies, name, labels, cut.directions) if cut else None
            altered = f" (a quarantine deny-all altered by hand{': ' + gap if gap else ''})" if cut else ""
            said.append(name + altered)
        return ", ".join(said)

    def unread_policy_apis(self, setting: str) -> str | None:
        """Network-policy APIs the cluster serves now, which the proofs do not read (a CNI installed
        since what was proven), in words naming ``setting`` (the ignore_other_policy_apis that says
        they were reviewed); None: none. A failed discovery is none: asked again next time."""
        try:
            served = self.other_policy_apis()
        except KubeError:
            return None
        if not served:
            return None
        return (
            f"the cluster now serves {', '.join(served)} network policies, which are not read: they may let"
            f" its traffic through (set {setting} once none of them does)"
        )

    def other_policy_apis(self) -> list[str]:
        """Served network-policy APIs other than NetworkPolicy's, read at most every few minutes
        (discovery changes only when such a CNI is installed or removed); the quarantine asks too.
        Raises KubeError when discovery fails (not cached: asked again next time)."""
        now = self._monotonic_ns()
        if self._discovered is None or now - self._discovered[0] > DISCOVERY_TTL_NS:
            groups = self._gateway.api_groups()
            served = destination.other_policy_apis(groups)
            for group, resources in destination.shared_policy_groups(groups).items():
                if self._serves(group, resources):
                    served.append(group)
            self._discovered = (now, served)
        return self._discovered[1]

    def _serves(self, group: str, wanted: tuple[str, ...]) -> bool:
        """Whether the cluster serves one of the resources ``wanted`` of API ``group`` in any
        version (discovery: one read of the group, one of each of its versions)."""
        versions = self._gateway.request("GET", f"/apis/{group}").get("versions")
        for version in versions if isinstance(versions, list) else []:
            served = version.get("groupVersion") if isinstance(version, dict) else None
            if not isinstance(served, str):
                continue
            resources = self._gateway.request("GET", f"/apis/{served}").get("resources")
            if isinstance(resources, list) and any(
                isinstance(r, dict) and r.get("name") in wanted for r in resources
            ):
                return True
        return False

    def _spec(self, value: str, blocked: set[destination.Address]) -> dict[str, Any]:
        """The block policy's spec for the pod labelled ``value``, blocking ``blocked``. It leaves
        out the pods of the cuts that stop egress (Quarantine.covering_values: the values the chart's
        admission policy admits, egressCutValues). Not the legacy both value (``true-both``): the
        admission policy would refuse it; a pod still labelled so is never written into a block
        policy that selects it (_leave_out refuses, and no block policy is made under a cut)."""
        return destination.block_spec(
            self._settings.label,
            value,
            blocked,
            quarantine_label=self._quarantine.label,
            egress_cut_values=self._quarantine.covering_values(("egress",)),
        )

    def _egress_cut(self, labels: Mapping[str, str]) -> QuarantineCut | None:
        """The quarantine cut the pod's label puts it in, if that cut stops its egress."""
        isolation = self._quarantine.cut_of(labels.get(self._quarantine.label))
        if isolation is None or "egress" not in isolation.directions:
            return None
        return self._quarantine.cut(isolation)

    def lapse(self, pod: PodContext, policies: list[dict[str, Any]], blocked: Collection[str]) -> str | None:
        """What undid the block of ``blocked`` on ``pod`` (as read afresh, with its namespace's
        ``policies``), in words; None: as made. Its label or policy gone; the policy no longer
        blocking one of them (but for those never_block came to hold, let go on purpose); the policy
        no longer selecting the pod (where the pod's quarantine cuts its egress it is meant not to:
        then that cut's deny-all must hold); its rules or types not the block's (an allow added);
        another policy that came to govern the pod's egress and let one of them through, or that
        restricts it while the block policy selects the pod (which then undoes that restriction),
        as the proof when made reads them (egress_governance); as for a proven quarantine, a way out of the
        pod's network namespace found since, or a network-policy API the cluster came to serve
        (unless block_destination.ignore_other_policy_apis): a block is only made without either."""
        if self._settings.label not in pod.labels:
            return "its block label is gone"
        escapes = out_of_reach_as_read(pod.host_network, pod.network_escape)
        if escapes:
            return "; ".join(escapes)
        if not self._settings.ignore_other_policy_apis:
            unread = self.unread_policy_apis("block_destination.ignore_other_policy_apis")
            if unread is not None:
                return unread
        name = destination.block_policy_name(self._settings.network_policy_prefix, pod.uid)
        ours = next((p for p in policies if netpol.name_of(p) == name), None)
        if ours is None:
            return f"NetworkPolicy {name} is gone"
        spec = ours.get("spec") or {}
        held = destination.blocked_by(spec)
        never_block = self._settings.never_block
        wanted = {ipaddress.ip_address(a) for a in blocked}
        wanted = {a for a in wanted if not destination.never_blocked(a, never_block)}
        missing = sorted(str(a) for a in wanted - held)
        if missing:
            return f"NetworkPolicy {name} no longer blocks {', '.join(missing)}"
        try:
            selects = selector_matches(spec.get("podSelector") or {}, pod.labels)
        except SelectorError:
            selects = False  # a selector that cannot be evaluated proves no block
        cut = self._egress_cut(pod.labels)
        if not selects and cut is None:
            return f"NetworkPolicy {name} no longer selects the pod"
        if not selects and cut is not None:
            # Left out on purpose: the cut keeps every address out, while its deny-all holds.
            gap = netpol.deny_all_gap(policies, cut.network_policy, pod.labels, ("egress",))
            if gap is not None:
                return f"{gap} (the block relied on that cut: NetworkPolicy {name} leaves the pod out)"
        if selects and not self._as_built(spec, destination.pod_key(pod.uid), held):
            return (
                f"NetworkPolicy {name} is no longer the block as built: its rules, types or selected"
                " labels were changed (or made by an earlier version)"
            )
        allowing: dict[str, list[str]] = {}
        governing: set[str] = set()
        for address in sorted(wanted, key=lambda a: (a.version, a)):
            governance = destination.egress_governance(
                policies, pod.labels, address, self._ours(name, policies)
            )
            for policy in governance.allowing:
                allowing.setdefault(policy, []).append(str(address))
            governing.update(governance.governing)
        if allowing:
            return "; ".join(
                f"NetworkPolicy {self._names((policy,), policies, pod.labels)} now allows egress to"
                f" {', '.join(addresses)}"
                for policy, addresses in sorted(allowing.items())
            )
        if governing and selects:
            # As when made (_proven): policies are a union of allows, so the block policy's "all but
            # these" undoes a restriction that came since.
            one = len(governing) == 1
            return (
                f"{'NetworkPolicy' if one else 'NetworkPolicies'} {', '.join(sorted(governing))} now"
                f" restrict{'s' if one else ''} the pod's egress, and the block policy {name} allows what"
                f" {'it denies' if one else 'they deny'} ({'it keeps' if one else 'they keep'}"
                f" {', '.join(sorted(str(a) for a in wanted))} out: release the block)"
            )
        return None

    def _as_built(self, spec: Mapping[str, Any], value: str, held: set[destination.Address]) -> bool:
        """Whether a block policy's ``spec`` (as read) is the block of ``held`` as built for the pod
        labelled ``value``: the same rules and types, and the same matchLabels. Its matchExpressions
        (which quarantined pods it leaves out) are judged by whom it selects, not here: an earlier
        version's NotIn values, or an exclusion a quarantine added, change nothing for the pod."""
        built = self._spec(value, held)
        rest = {key: item for key, item in spec.items() if key != "podSelector"}
        built_rest = {key: item for key, item in built.items() if key != "podSelector"}
        labels = (spec.get("podSelector") or {}).get("matchLabels")
        return rest == built_rest and labels == built["podSelector"]["matchLabels"]

    def _outcome(
        self,
        status: OutcomeStatus,
        detail: str,
        started: int,
        extra: dict[str, Any] | None = None,
        *,
        leaky: tuple[str, ...] = (),
    ) -> ActionOutcome:
        return ActionOutcome(
            ACTION,
            status,
            detail,
            leaky_policies=leaky,
            started_ns=started,
            finished_ns=self._clock_ns(),
            extra=dict(extra or {}),
        )
