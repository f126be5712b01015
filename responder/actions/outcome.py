"""What an action did: the one vocabulary shared by actions, the journal, Slack and metrics."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from responder.actions.netpol import BOTH_DIRECTIONS
from responder.cluster.api import KubeError


class OutcomeStatus(StrEnum):
    # Quarantine label set and no other NetworkPolicy still allows traffic to/from the pod.
    QUARANTINED = "quarantined"
    # Label set and deny-all policy in place, but other policies still allow traffic.
    LEAKY = "leaky"
    ANNOTATED = "annotated"
    DRY_RUN = "dry_run"
    # Not attempted by policy/guardrail decision (the reason says which).
    WITHHELD = "withheld"
    # The pod is gone (a 404 to its own read or patch) or was replaced (uid changed): nothing left
    # to isolate.
    POD_GONE = "pod_gone"
    FAILED = "failed"
    RELEASED = "released"
    # block_destination: the pod can no longer reach the address (its other traffic unchanged).
    BLOCKED = "blocked"
    # recheck: what the incident put on the pod (a quarantine, a destination block) no longer holds,
    # found while its alerts still came; the detail says what undid it.
    LAPSED = "lapsed"


FINAL_STATUSES = frozenset(OutcomeStatus)


@dataclass(frozen=True, slots=True)
class UnknownStatus:
    """A status word this version does not know, read back from the journal (a later version's, or
    a damaged row's): kept as written, shown as it is (``value``, as an OutcomeStatus's), and equal
    to none of ours, so nothing is done on it. The journal's schema number keeps a later version's
    words from an earlier one; this keeps a word that came anyway from stopping a reader mid-run."""

    value: str

    def __str__(self) -> str:
        return self.value


def status_of(word: str) -> OutcomeStatus | UnknownStatus:
    """A stored status word: ours, else kept as an UnknownStatus (never a ValueError)."""
    try:
        return OutcomeStatus(word)
    except ValueError:
        return UnknownStatus(word)


class KeptOut(StrEnum):
    """What already kept a block's address out of the pod's reach, so that no block was made."""

    # The deny-all of a quarantine that cuts the pod's egress: the pod reaches nothing.
    QUARANTINE = "quarantine"
    # Other NetworkPolicies restrict the pod's egress, and none of them allows the address.
    POLICIES = "policies"


# ActionOutcome.extra's key for a FAILED quarantine that had already labelled the pod.
LABELLED = "labelled"
# ActionOutcome.extra's key for the one direction a quarantine cut ("ingress" or "egress") when it
# did not cut both (quarantine.isolate); absent: both.
ISOLATED = "isolated"
# ActionOutcome.extra's key for the directions ("ingress", "egress") other policies still leave open
# on a LEAKY quarantine, as the leak check found them; absent: not known (a record from before).
LEAKING_DIRECTIONS = "leaking_directions"
# ActionOutcome.extra's key for the directions each leaking policy of a LEAKY quarantine leaves
# open ({policy: ["ingress", ...]}), so that a recheck tells a known leak from the same policy
# opening another direction since; absent (a record from before): each named one counts as open
# both ways, as then (known_leaks).
LEAKS = "leaks"
# ActionOutcome.extra's key of a quarantine that no NetworkPolicy can hold at all, and why
# ("host_network"): LEAKY (the status Slack and the metrics know), yet certainly not isolated, which
# the detail says first (HOST_NETWORK_NOT_ISOLATED), with what to do instead.
NOT_ISOLATED = "not_isolated"
ON_HOST_NETWORK = "host_network"  # NOT_ISOLATED's value for a host-network pod
HOST_NETWORK_NOT_ISOLATED = "NOT isolated: NetworkPolicies cannot hold a host-network pod"
# ActionOutcome.extra's key for the leaking policies patch_other_policies left alone: they also
# restrict the direction a one-way cut leaves open (see netpol.governed_beyond).
NOT_PATCHED = "not_patched"
# ActionOutcome.extra's key for the policies that exclude quarantined pods in the direction a one-way
# cut leaves alone: patched by an earlier version (`DoesNotExist`: every quarantined pod), or before
# the policy's types changed (see netpol.excluded_beyond).
EXCLUDED_BEYOND = "excluded_beyond"
# ActionOutcome.extra's keys for an action a person took by hand: who (--by) and why (--reason).
BY_HAND = "by_hand"
REASON = "reason"
# ...and the key marking a release that found this config's release recorded on the pod already (a
# rerun): journaled as that release, by whom and why the pod records it (its BY_HAND and REASON).
RECORDED_RELEASE = "recorded_release"
# ...and the key marking what the responder did when it tried an isolation it had withheld again
# (dedupe.retry_withheld_seconds): it stands for the incident's own action, withheld or failed before.
RETRIED = "retried"
# The block_destination action's name (its outcomes' ``action``), and its outcomes' extra keys:
# the address blocked (or that could not be) and the pod's block policy.
BLOCK_DESTINATION = "block_destination"
BLOCKED_ADDRESS = "address"
BLOCK_POLICY = "network_policy"
# ...and the key marking a block that added its address to the pod's block policy (not one that
# found it there): what the block circuit breaker counts (guardrails.max_blocks).
NEWLY_BLOCKED = "newly_blocked"
# ...the policies that restrict the pod's egress and keep the address out, which the block policy
# came to widen (it allows what they deny): the block is in force, their restriction is not.
WIDENED = "widened"
# ...and the addresses taken out of the pod's block because block_destination.never_block now holds them.
UNBLOCKED = "unblocked"
# ...and, for a block that made no block policy because the address was out of reach already, what
# kept it out (a KeptOut) and the NetworkPolicies that do: the rest of the pod's traffic is not kept.
KEPT_OUT = "kept_out"
KEPT_OUT_BY = "kept_out_by"
# A workload thread's word for an incident whose latest action is a block that found its address
# already out of reach (its status is blocked, yet no block was made).
THREAD_KEPT_OUT = "kept_out"
# How a dry-run block that would make the pod's block policy begins (one that other policies or a
# quarantine decide either way says so instead): what a person can then do by hand.
WOULD_BLOCK = "would block egress to"
# How the reason begins when the block circuit breaker (guardrails.max_blocks) held a block back:
# also one for a person to take by hand.
BLOCK_BREAKER_OPEN = "block circuit breaker open"
# How the reason begins when a pod has had its share of the block breaker's window
# (guardrails.max_blocks.per_pod): its block became a quarantine of its egress, or was withheld.
BLOCK_SHARE_USED = "the pod's share of blocks is used"
# The extra key of a block that found the pod's block policy full (block_destination.max_per_pod).
POLICY_FULL = "policy_full"
# The extra key of a quarantine of the pod's egress that stood for a block (escalation) and that the
# quarantine breaker held back: it is offered by hand, with its cut.
HELD_ESCALATION = "held_escalation"
# A dry-run quarantine's extra: the pod is in the cut already, its deny-all as built (another
# incident's quarantine, or a person's): a quarantine by hand would change nothing, so none is offered.
ALREADY_IN_CUT = "already_in_cut"
# How a release that found nothing to lift begins its detail (not said "released").
NOTHING_TO_RELEASE = "nothing to release"
# Who took an action the responder took on its own (the journal's actions.actor); else a person.
RESPONDER_ACTOR = "responder"
# The responder's recheck of what an incident put on its pod, journaled as an action of the incident
# when it finds that no longer holding (status LAPSED); ActionOutcome.extra's key LAPSED_ACTION names
# what no longer holds: "quarantine" or BLOCK_DESTINATION.
RECHECK = "recheck"
LAPSED_ACTION = "lapsed"
# ActionOutcome.extra's key of a lapse whose label is gone from the pod (True): nothing is left to
# release, so the incident offers no release command for it.
LAPSED_LABEL_GONE = "label_gone"
# What no longer holds, in words: "the quarantine no longer holds".
LAPSED_WORDS = {"quarantine": "quarantine", BLOCK_DESTINATION: "destination block"}


@dataclass(frozen=True, slots=True)
class Lapse:
    """What undid, since it was made, a quarantine or destination block an incident put on its pod
    (ClusterActions.lapse_of): which of the two (``action``: "quarantine" or BLOCK_DESTINATION), and
    what undid it, in words (``detail``: names from the cluster, such as a policy's)."""

    action: str
    detail: str
    label_gone: bool = False  # its label is off the pod: nothing of it is left to release

    @property
    def what(self) -> str:
        """ "quarantine" or "destination block"."""
        return LAPSED_WORDS.get(self.action, self.action)


def known_leaks(outcomes: Iterable[ActionOutcome]) -> dict[str, tuple[str, ...]]:
    """The leaks ``outcomes`` (an incident's quarantines) were reported with, by policy and
    direction (ActionOutcome.leaks), for the recheck (ClusterActions.lapse_of's known_leaks)."""
    known: dict[str, set[str]] = {}
    for outcome in outcomes:
        for policy, directions in outcome.leaks.items():
            known.setdefault(policy, set()).update(directions)
    return {policy: tuple(d for d in BOTH_DIRECTIONS if d in dirs) for policy, dirs in known.items()}


def release_note(by: str, reason: str) -> str:
    """How a release's detail opens: who released the pod, and why (Slack says them once, apart)."""
    return f"released by {by}: {reason}"


# What kept a block's address out, in describe()'s words.
_KEPT_OUT_WORDS = {
    KeptOut.QUARANTINE: "a quarantine cuts the pod's egress",
    KeptOut.POLICIES: "other NetworkPolicies restrict the pod's egress",
}


@dataclass(frozen=True, slots=True)
class ActionOutcome:
    action: str
    # UnknownStatus only for an outcome read back from the journal (from_json) with a word this
    # version does not know; the responder's own outcomes always have an OutcomeStatus.
    status: OutcomeStatus | UnknownStatus
    detail: str = ""
    # NetworkPolicies that still allow traffic to/from the quarantined pod (LEAKY), by name.
    leaky_policies: tuple[str, ...] = ()
    # NetworkPolicies we patched with `label DoesNotExist` (patch_other_policies).
    patched_policies: tuple[str, ...] = ()
    started_ns: int = 0
    finished_ns: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def labelled(self) -> bool:
        """The quarantine left the pod carrying its label: isolated, not proven isolated (LEAKY),
        or FAILED after the label went on (the deny-all policy not ensured). Such a pod counts
        against the circuit breaker: once the policy is in place, the label isolates it."""
        if self.action != "quarantine":
            return False
        if self.status in (OutcomeStatus.QUARANTINED, OutcomeStatus.LEAKY):
            return True
        return self.status is OutcomeStatus.FAILED and self.extra.get(LABELLED) is True

    @property
    def block_labelled(self) -> bool:
        """This destination block left the pod labelled into its block policy (LABELLED)."""
        return self.action == BLOCK_DESTINATION and self.extra.get(LABELLED) is True

    @property
    def newly_blocked(self) -> bool:
        """This destination block added its address to the pod's block policy: it counts against
        the block circuit breaker, whatever came after (a failed label may still leave it in force)."""
        return self.action == BLOCK_DESTINATION and self.extra.get(NEWLY_BLOCKED) is True

    @property
    def kept_out(self) -> KeptOut | None:
        """A destination block that made no block policy: what kept its address out already (a
        quarantine's cut, or other policies); None for a block that was made, and for other actions."""
        kept = self.extra.get(KEPT_OUT) if self.action == BLOCK_DESTINATION else None
        return next((why for why in KeptOut if why == kept), None)

    @property
    def kept_out_by(self) -> tuple[str, ...]:
        """The NetworkPolicies that kept a block's address out already (see kept_out)."""
        names = self.extra.get(KEPT_OUT_BY)
        return tuple(str(name) for name in names) if isinstance(names, list) else ()

    @property
    def held_by_block_breaker(self) -> bool:
        """A destination block the block circuit breaker held back (guardrails.max_blocks): taken
        on again by a later repeat, and one a person may take by hand meanwhile."""
        return self.status is OutcomeStatus.WITHHELD and self.detail.startswith(BLOCK_BREAKER_OPEN)

    @property
    def leaking_directions(self) -> tuple[str, ...] | None:
        """The directions other policies still leave open on this LEAKY quarantine, or None: not
        known (its isolation was not proven, or a record from before they were kept)."""
        found = self.extra.get(LEAKING_DIRECTIONS)
        if not isinstance(found, list) or not found:
            return None
        return tuple(d for d in BOTH_DIRECTIONS if d in found)

    @property
    def leaks(self) -> dict[str, tuple[str, ...]]:
        """This LEAKY quarantine's leaking policies with the directions each leaves open; a record
        from before they were kept: each named policy open in the directions the record says leak
        (both ways where it says none: all a recheck could tell), so that a later opening of the
        other direction through the same policy is still news."""
        found = self.extra.get(LEAKS)
        if isinstance(found, dict):
            return {
                str(name): tuple(d for d in BOTH_DIRECTIONS if isinstance(dirs, list) and d in dirs)
                for name, dirs in found.items()
            }
        return dict.fromkeys(self.leaky_policies, self.leaking_directions or BOTH_DIRECTIONS)

    @property
    def not_isolated(self) -> str | None:
        """Why no NetworkPolicy can hold this quarantine's pod ("host_network"), or None."""
        why = self.extra.get(NOT_ISOLATED)
        return why if isinstance(why, str) else None

    @property
    def cut_only(self) -> str | None:
        """The one direction this quarantine cut ("ingress" or "egress"), or None: both."""
        cut = self.extra.get(ISOLATED)
        return cut if cut in BOTH_DIRECTIONS else None

    @property
    def excluded_beyond(self) -> tuple[str, ...]:
        """Policies that no longer apply their rules to this pod in the direction its one-way cut
        leaves alone (see EXCLUDED_BEYOND): its traffic there may be open to all."""
        names = self.extra.get(EXCLUDED_BEYOND)
        return tuple(str(name) for name in names) if isinstance(names, list) else ()

    @property
    def by_hand(self) -> str | None:
        """Who took this action by hand, or None: the responder's own."""
        who = self.extra.get(BY_HAND)
        return who if isinstance(who, str) else None

    @property
    def retried(self) -> bool:
        """Whether this is what a retry of the incident's withheld isolation did."""
        return self.extra.get(RETRIED) is True

    @property
    def reason(self) -> str | None:
        """Why a person took this action (by hand), or None: the responder's own."""
        reason = self.extra.get(REASON)
        return reason if isinstance(reason, str) else None

    @property
    def lapse(self) -> Lapse | None:
        """For the recheck's record of a lapse (action RECHECK, status LAPSED): what no longer
        holds; None for any other outcome."""
        if self.action != RECHECK or self.status is not OutcomeStatus.LAPSED:
            return None
        lapsed = self.extra.get(LAPSED_ACTION)
        gone = self.extra.get(LAPSED_LABEL_GONE) is True
        return Lapse(lapsed if isinstance(lapsed, str) else "quarantine", self.detail, gone)

    @property
    def ok(self) -> bool:
        return self.status in (
            OutcomeStatus.QUARANTINED,
            OutcomeStatus.ANNOTATED,
            OutcomeStatus.RELEASED,
            OutcomeStatus.BLOCKED,
        )

    def describe(self) -> str:
        """One line for Slack, logs and the audit trail."""
        if self.status is OutcomeStatus.QUARANTINED:
            text = "quarantined" if self.cut_only is None else f"quarantined ({self.cut_only} cut)"
            if self.patched_policies:
                text += " (patched policies to exclude it: " + ", ".join(self.patched_policies) + ")"
            return text + self._excluded_beyond_text()
        if self.action == BLOCK_DESTINATION and self.status in (OutcomeStatus.BLOCKED, OutcomeStatus.LEAKY):
            address = self.extra.get(BLOCKED_ADDRESS, "its destination")
            if self.status is OutcomeStatus.BLOCKED and self.kept_out is not None:
                return f"no block made: {address} is already out of reach ({_KEPT_OUT_WORDS[self.kept_out]})"
            if self.status is OutcomeStatus.BLOCKED:
                return f"blocked egress to {address}"
            if self.leaky_policies:
                return f"LEAKY block of {address}: still allowed by " + ", ".join(self.leaky_policies)
            return f"LEAKY block of {address}: " + (self.detail or "not proven")
        if self.status is OutcomeStatus.LEAKY:
            if self.leaky_policies:
                text = "LEAKY quarantine: still allowed by " + ", ".join(self.leaky_policies)
                return text + self._excluded_beyond_text()
            return "LEAKY quarantine: " + (self.detail or "isolation not proven")
        lapse = self.lapse
        if lapse is not None:
            return f"{lapse.what} no longer holds: {lapse.detail}"
        if self.status is OutcomeStatus.DRY_RUN:
            return f"dry-run: would {self.action}"
        if self.status is OutcomeStatus.FAILED:
            return f"failed: {self.detail}"
        if self.action == "release" and self.detail.startswith(NOTHING_TO_RELEASE):
            return self.detail
        if self.status is OutcomeStatus.POD_GONE:
            return "pod gone" + (f": {self.detail}" if self.detail else "")
        if self.detail.startswith(self.status.value):  # "released by ...": the word once
            return self.detail
        if self.detail:
            return f"{self.status.value}: {self.detail}"
        return self.status.value

    def _excluded_beyond_text(self) -> str:
        if not self.excluded_beyond:
            return ""
        return " (excluded beyond the cut by " + ", ".join(self.excluded_beyond) + ")"

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "status": self.status.value,
            "detail": self.detail,
            "leaky_policies": list(self.leaky_policies),
            "patched_policies": list(self.patched_policies),
            "started_ns": self.started_ns,
            "finished_ns": self.finished_ns,
            **({"extra": self.extra} if self.extra else {}),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ActionOutcome:
        return cls(
            action=str(data["action"]),
            status=status_of(str(data["status"])),
            detail=str(data.get("detail", "")),
            leaky_policies=tuple(data.get("leaky_policies", ())),
            patched_policies=tuple(data.get("patched_policies", ())),
            started_ns=int(data.get("started_ns", 0)),
            finished_ns=int(data.get("finished_ns", 0)),
            extra=dict(data.get("extra", {})),
        )


# The path of one pod's reads and writes (KubeGateway.get_pod, patch_pod): names are one segment each.
_POD_PATH = re.compile(r"^/api/v1/namespaces/[^/]+/pods/[^/]+$")


def pod_gone(exc: KubeError) -> bool:
    """A 404 to reading or patching the pod itself: the pod is gone. A 404 to any other call (a
    NetworkPolicy deleted between a read and a write) says nothing of the pod, which may carry the
    action's label already."""
    return exc.not_found and _POD_PATH.match(exc.path) is not None


def failure_outcome(action: str, exc: KubeError, started_ns: int, finished_ns: int) -> ActionOutcome:
    """What a failed API call made of ``action``: the pod gone (a 404 to the pod's own read or
    patch: pod_gone), forbidden (by RBAC or an admission policy, named), or failed with the API's answer."""
    if pod_gone(exc):
        return ActionOutcome(
            action,
            OutcomeStatus.POD_GONE,
            f"not found: {exc.reason}",
            started_ns=started_ns,
            finished_ns=finished_ns,
        )
    # An admission policy (the chart ships some that narrow the responder) answers 403 too.
    detail = (
        f"forbidden by RBAC or an admission policy ({exc.verb} {exc.path}): {exc.reason}"
        if exc.forbidden
        else str(exc)
    )
    return ActionOutcome(
        action, OutcomeStatus.FAILED, detail[:1000], started_ns=started_ns, finished_ns=finished_ns
    )
