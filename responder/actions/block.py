"""Block one destination: the pod may no longer reach the address the alert names, and keeps the
rest of its traffic (see responder/actions/destination.py for why and when NetworkPolicies can).

The namespace's policies are read first: a pod whose egress other policies restrict gets no block
policy (it would open the rest), only a word on whether they let the address through. Otherwise
the pod's own block policy is created or updated (it selects nothing until the pod is labelled),
then the pod is labelled (a compare-and-set on its uid and version), then the policies are read
again to prove it: the block is in place and nothing else governs the pod's egress. Every step is
idempotent; a block never narrows a quarantine (the policy leaves out pods whose egress is cut).
"""

from __future__ import annotations

import dataclasses
import ipaddress
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
    UNBLOCKED,
    WIDENED,
    WOULD_BLOCK,
    ActionOutcome,
    KeptOut,
    OutcomeStatus,
    failure_outcome,
)
from responder.actions.pod_patch import CONFLICT_RETRIES, KeptChanging, PodReplaced, patch_as_read
from responder.alert import Alert
from responder.cluster.api import KubeError, KubeGateway
from responder.cluster.context import PodContext
from responder.cluster.network_escape import network_escape
from responder.config import BlockDestination, Isolation, Quarantine, QuarantineCut

ACTION = BLOCK_DESTINATION
DISCOVERY_TTL_NS = 300 * 10**9
_EVENT_REASONS = {
    OutcomeStatus.BLOCKED: "DestinationBlocked",
    OutcomeStatus.LEAKY: "DestinationBlockLeaky",
    OutcomeStatus.WITHHELD: "DestinationBlockWithheld",
    OutcomeStatus.FAILED: "DestinationBlockFailed",
}


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
    ) -> None:
        self._gateway = gateway
        self._settings = settings
        self._quarantine = quarantine
        self._events = events
        self._clock_ns = clock_ns
        self._discovered: tuple[int, list[str]] | None = None

    def block(
        self, pod: PodContext, alert: Alert, *, dry_run: bool, address: str | None = None
    ) -> ActionOutcome:
        """Block the address the alert names, or ``address`` (a person's --address) when given."""
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
                outcome = self._block(pod, target, started, dry_run=dry_run)
            except KubeError as exc:
                outcome = failure_outcome(ACTION, exc, started, self._clock_ns())
        # Dry-run writes nothing to the cluster, not even an Event.
        if outcome.status is not OutcomeStatus.POD_GONE and not dry_run:
            # A block that found its address out of reach already made nothing: not "blocked".
            kept_out = outcome.kept_out is not None
            reason = "DestinationKeptOut" if kept_out else _EVENT_REASONS.get(outcome.status, "ServingGuard")
            self._events.record_for(pod, reason, f"serving-guard {ACTION}: {outcome.detail}")
        return outcome

    # -- the steps ------------------------------------------------------------------------------

    def _block(
        self, pod: PodContext, target: destination.Target, started: int, *, dry_run: bool
    ) -> ActionOutcome:
        address = target.address
        name = destination.block_policy_name(self._settings.network_policy_prefix, pod.uid)
        extra: dict[str, Any] = {BLOCKED_ADDRESS: str(address), BLOCK_POLICY: name}
        # The host network, or a way out of the pod's network namespace: no policy holds the pod.
        out_of_reach = netpol.HOST_NETWORK if pod.host_network else pod.network_escape
        if out_of_reach is not None:
            return self._outcome(
                OutcomeStatus.DRY_RUN if dry_run else OutcomeStatus.LEAKY,
                f"{address} ({target.field}) cannot be blocked: {out_of_reach}; nothing was made,"
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
        governance = destination.egress_governance(policies, pod.labels, address, self._ours(name))
        # In dry-run the same findings are the prediction (nothing is changed either way).
        if governance.allowing:
            return self._outcome(
                OutcomeStatus.DRY_RUN if dry_run else OutcomeStatus.LEAKY,
                f"{address} ({target.field}) is allowed by {', '.join(governance.allowing)}, which restrict"
                " the pod's egress: a block policy would only add to what they allow, so none was made;"
                " change them to block it, or quarantine the pod's egress",
                started,
                extra,
                leaky=governance.allowing,
            )
        if governance.governing:
            return self._outcome(
                OutcomeStatus.DRY_RUN if dry_run else OutcomeStatus.BLOCKED,
                f"{address} ({target.field}) is already out of reach: the pod's egress is restricted by"
                f" {', '.join(governance.governing)}, none of which allows it; nothing was changed",
                started,
                {**extra, KEPT_OUT: KeptOut.POLICIES.value, KEPT_OUT_BY: list(governance.governing)},
            )
        cut = self._egress_cut(pod.labels)
        if cut is not None:
            # No block policy under an egress quarantine: lifted by hand later, the policies it
            # had patched could select the pod again, and ours would add to what they allow. (Nor
            # would it select the pod: it leaves out pods whose label cuts their egress.) The label
            # alone proves nothing: the cut is its deny-all.
            gap = netpol.deny_all_gap(policies, cut.network_policy, pod.labels, ("egress",))
            if gap is not None:
                return self._outcome(
                    OutcomeStatus.DRY_RUN if dry_run else OutcomeStatus.LEAKY,
                    f"{address} ({target.field}) is not blocked: the pod's quarantine label cuts its"
                    f" egress, but {gap}, so nothing cuts it; no block policy was made (it would leave"
                    " the labelled pod out): quarantine the pod again to repair its cut",
                    started,
                    extra,
                )
            return self._outcome(
                OutcomeStatus.DRY_RUN if dry_run else OutcomeStatus.BLOCKED,
                f"{address} ({target.field}) is already out of reach: a quarantine cuts the pod's"
                f" egress (NetworkPolicy {cut.network_policy}); no block policy was made",
                started,
                {**extra, KEPT_OUT: KeptOut.QUARANTINE.value, KEPT_OUT_BY: [cut.network_policy]},
            )
        if dry_run:
            return self._outcome(
                OutcomeStatus.DRY_RUN,
                f"{WOULD_BLOCK} {address} ({target.field}) with NetworkPolicy {name}, all other egress kept",
                started,
                extra,
            )
        value = destination.pod_key(pod.uid)
        listed = next((p for p in policies if netpol.name_of(p) == name), None)
        try:
            blocked, added, unblocked = self._ensure_policy(pod, name, value, listed, address)
        except TooMany as exc:
            return self._outcome(
                OutcomeStatus.LEAKY,
                f"{address} ({target.field}) is not blocked: the pod's block already holds {exc.held}"
                f" addresses (block_destination.max_per_pod is {self._settings.max_per_pod});"
                " quarantine the pod's egress instead",
                started,
                extra,
            )
        if added:
            extra[NEWLY_BLOCKED] = True
        if unblocked:
            extra[UNBLOCKED] = sorted(str(a) for a in unblocked)
        try:
            return self._label_and_prove(pod, name, value, target, blocked, started, extra)
        except KubeError as exc:
            failed = failure_outcome(ACTION, exc, started, self._clock_ns())
            if failed.status is not OutcomeStatus.FAILED:
                return failed
            # The address is in the policy (and the pod may carry its label): it counts against
            # the block breaker, and release must lift it. Without the address: tried again.
            kept = {key: extra[key] for key in (NEWLY_BLOCKED, LABELLED) if key in extra}
            return dataclasses.replace(failed, extra=kept)

    def _label_and_prove(
        self,
        pod: PodContext,
        name: str,
        value: str,
        target: destination.Target,
        blocked: set[destination.Address],
        started: int,
        extra: dict[str, Any],
    ) -> ActionOutcome:
        """Label the pod into its block policy (made already), then prove the block."""
        label = self._settings.label
        try:
            # The pod's labels as read are not needed: its block's label is its own.
            patched = patch_as_read(self._gateway, pod, lambda _meta: {"labels": {label: value}})
        except PodReplaced as exc:
            return self._outcome(OutcomeStatus.POD_GONE, str(exc), started)
        except KeptChanging as exc:
            # Without the address: a failed block is tried again (see Pipeline._maybe_block_more).
            counted = {NEWLY_BLOCKED: True} if NEWLY_BLOCKED in extra else None
            return self._outcome(OutcomeStatus.FAILED, str(exc), started, counted)
        extra[LABELLED] = True  # the pod is in its block policy: `serving-guard release` lifts it
        # As labelled: an ephemeral container added since the pod was read counts.
        spec = patched.get("spec") or {}
        out_of_reach = netpol.HOST_NETWORK if spec.get("hostNetwork") else network_escape(spec)
        if out_of_reach is not None:
            return self._outcome(
                OutcomeStatus.LEAKY,
                f"{out_of_reach}: nothing is blocked",
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
        governance = destination.egress_governance(policies, labels, address, self._ours(name))
        if governance.allowing:
            return self._outcome(
                OutcomeStatus.LEAKY,
                f"made NetworkPolicy {name} to block {address}, but {', '.join(governance.allowing)} now"
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
            return self._outcome(
                OutcomeStatus.LEAKY,
                f"blocked {address} with NetworkPolicy {name}, but {', '.join(governance.governing)} now"
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
        return self._outcome(OutcomeStatus.BLOCKED, detail, started, extra)

    def _ensure_policy(
        self,
        pod: PodContext,
        name: str,
        value: str,
        current: Mapping[str, Any] | None,
        address: destination.Address,
    ) -> tuple[set[destination.Address], bool, set[destination.Address]]:
        """Create the pod's block policy, or add ``address`` to what it blocks; on a conflict it is
        read again and merged afresh, so that an address another writer added is kept. Returns what
        it blocks, whether ``address`` is new to it, and the addresses it let go (never_block holds
        them now). Raises TooMany past block_destination.max_per_pod."""
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
                if not exc.conflict:
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
                if not exc.conflict:
                    raise
        raise KubeError(409, f"NetworkPolicy {name} kept changing while being cleared")

    # -- shared ---------------------------------------------------------------------------------

    def _ours(self, name: str) -> set[str]:
        """The pod's block policy and the quarantine cuts' deny-alls: while a cut stops the pod's
        egress, the block policy leaves the pod out, so they never add to each other."""
        return {name, *(self._quarantine.cut(isolation).network_policy for isolation in Isolation)}

    def other_policy_apis(self) -> list[str]:
        """Served network-policy APIs other than NetworkPolicy's, read at most every few minutes
        (discovery changes only when such a CNI is installed or removed); the quarantine asks too.
        Raises KubeError when discovery fails (not cached: asked again next time)."""
        now = self._clock_ns()
        if self._discovered is None or now - self._discovered[0] > DISCOVERY_TTL_NS:
            self._discovered = (now, destination.other_policy_apis(self._gateway.api_groups()))
        return self._discovered[1]

    def _spec(self, value: str, blocked: set[destination.Address]) -> dict[str, Any]:
        """The block policy's spec for the pod labelled ``value``, blocking ``blocked``."""
        return destination.block_spec(
            self._settings.label,
            value,
            blocked,
            quarantine_label=self._quarantine.label,
            egress_cut_values=self._egress_cut_values(),
        )

    def _egress_cut_values(self) -> list[str]:
        return [
            self._quarantine.cut(isolation).label_value
            for isolation in Isolation
            if "egress" in isolation.directions
        ]

    def _egress_cut(self, labels: Mapping[str, str]) -> QuarantineCut | None:
        """The quarantine cut the pod's label puts it in, if that cut stops its egress."""
        isolation = self._quarantine.cut_of(labels.get(self._quarantine.label))
        if isolation is None or "egress" not in isolation.directions:
            return None
        return self._quarantine.cut(isolation)

    def lapse(self, pod: PodContext, policies: list[dict[str, Any]], blocked: Collection[str]) -> str | None:
        """What undid the block of ``blocked`` on ``pod`` (as read afresh, with its namespace's
        ``policies``): its label or policy gone, or the policy no longer blocking one of them (but
        for those never_block came to hold, let go on purpose). None: as made."""
        if self._settings.label not in pod.labels:
            return "its block label is gone"
        name = destination.block_policy_name(self._settings.network_policy_prefix, pod.uid)
        ours = next((p for p in policies if netpol.name_of(p) == name), None)
        if ours is None:
            return f"NetworkPolicy {name} is gone"
        held = {str(a) for a in destination.blocked_by(ours.get("spec"))}
        never_block = self._settings.never_block
        missing = sorted(
            a
            for a in set(blocked) - held
            if not destination.never_blocked(ipaddress.ip_address(a), never_block)
        )
        if missing:
            return f"NetworkPolicy {name} no longer blocks {', '.join(missing)}"
        return None

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
