"""Quarantine and annotate: the actions that touch the cluster (a release: responder/actions/release.py;
the deny-all policy: responder/actions/deny_all.py).

Quarantine = label the pod into the deny-all NetworkPolicy (merge patch guarded by the pod's
uid, so a re-created pod of the same name is never hit, and by its version, so a pod changed since
it was read is read again and its cut is never narrowed), then read the namespace's policies
once: create the deny-all policy if it is missing, repair it if altered (never narrowing it),
and prove isolation: every other NetworkPolicy that still selects the pod and allows traffic
makes the quarantine LEAKY, by name. ``quarantine.isolate`` may cut one direction only (egress:
the pod keeps serving); then only that direction's leaks count. Each cut's label value and policy
are fixed (config.Quarantine.cut), so a label keeps its meaning whatever the config says. With
``patch_other_policies`` those policies get ``<label> NotIn`` the values of the cuts that stop
every direction they govern added to their podSelector (undone on release, once no pod it takes
out is quarantined): a pod of a cut that leaves one of them alone relies on the policy there, so
it is never taken out, and such a policy is not patched for it.

The label goes first: where the policy exists (the usual case) the pod is isolated one API round
trip sooner than if the policy were read first. A policy that cannot be ensured leaves a labelled
pod and a FAILED outcome that says so (decided again on a later repeat; it counts against the
circuit breaker, see ActionOutcome.labelled), never "quarantined".
Every step is idempotent: running it twice leaves the cluster as running it once.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from responder.actions import netpol
from responder.actions.block import DestinationBlocks
from responder.actions.deny_all import DenyAllCheck, DenyAllPolicies
from responder.actions.events import EventRecorder
from responder.actions.outcome import (
    ALREADY_IN_CUT,
    BLOCK_DESTINATION,
    EXCLUDED_BEYOND,
    HOST_NETWORK_NOT_ISOLATED,
    ISOLATED,
    LABELLED,
    LEAKING_DIRECTIONS,
    LEAKS,
    NOT_ISOLATED,
    NOT_PATCHED,
    ON_HOST_NETWORK,
    ActionOutcome,
    Lapse,
    OutcomeStatus,
    UnknownStatus,
    failure_outcome,
    pod_gone,
)
from responder.actions.pod_patch import (
    CONFLICT_RETRIES,
    KeptChanging,
    PodReplaced,
    ReleasedMeanwhile,
    patch_as_read,
)
from responder.actions.pod_records import (
    A_ALERT_ID,
    A_FLAGGED_AT,
    A_INCIDENT,
    A_PATCHED,
    A_QUARANTINE_LABELS,
    A_QUARANTINED_AT,
    A_REASON,
    A_RULE,
    CLOCK_SKEW_NS,
    clear_release_record_of,
    clip_annotation,
    now_text,
    release_record_in,
    released_after_alert,
    with_recorded_label,
)
from responder.actions.release import PodRelease
from responder.alert import Alert
from responder.cluster.api import KubeError, KubeGateway
from responder.cluster.context import PodContext
from responder.cluster.network_escape import out_of_reach, out_of_reach_as_read
from responder.config import BlockDestination, Config, Isolation, Quarantine, QuarantineCut, widest

# Why a quarantine is not proven when the pod of its name is not the one it labelled.
REPLACED_SINCE_LABEL = "the pod was deleted or replaced since it was labelled"
# Tries to take the label off again where another write to the pod moved its version meanwhile.
TAKE_OFF_TRIES = 3


@dataclass(frozen=True, slots=True)
class IsolationReport:
    leaks: tuple[netpol.Leak, ...]
    patched: tuple[str, ...]
    # Leaking policies left unpatched because they also restrict the direction the cut leaves alone.
    not_patched: tuple[str, ...] = ()
    # Policies whose exclusion, made for an earlier cut of both directions, also lifts their rules
    # in the direction this cut leaves alone (netpol.excluded_beyond).
    excluded_beyond: tuple[str, ...] = ()
    # Why isolation is not proven though the policies were read (the patched ones not read back).
    unproven: tuple[str, ...] = ()
    # Policies by which the label opened a direction the cut leaves alone to all: those it took
    # the pod out of (a podSelector that leaves quarantined pods out, not ours: excluded_beyond
    # names those) that were the only ones restricting it there, and those it brought the pod
    # into that allow all there.
    opened: tuple[netpol.Opened, ...] = ()

    def leaking(self) -> dict[str, tuple[str, ...]]:
        """The directions each policy lets through, in the cut (leaks) or beyond it (opened); one
        the label brought the pod into may do both."""
        found: dict[str, set[str]] = {}
        for name, directions in [
            *((k.policy, k.directions) for k in self.leaks),
            *((o.policy, o.directions) for o in self.opened),
        ]:
            found.setdefault(name, set()).update(directions)
        return {name: tuple(d for d in netpol.BOTH_DIRECTIONS if d in dirs) for name, dirs in found.items()}

    def leaky_policies(self) -> tuple[str, ...]:
        """The policies of ``leaking``, once each, leaks first."""
        return tuple(self.leaking())


@dataclass(frozen=True, slots=True)
class Labelled:
    """What labelling the pod did (ClusterActions._label_pod)."""

    pod: dict[str, Any]  # the pod as the label patch returned it
    cut: QuarantineCut
    current: Isolation | None  # the cut it was in
    ensured: DenyAllCheck | None  # what ensuring the cut's deny-all first did (None: nothing)
    before: dict[str, str]  # its labels as the patch found them
    undo: dict[str, Any]  # the metadata that puts back what the patch changed

    def as_found(self) -> dict[str, Any]:
        """The pod's uid, name, labels and quarantine record as the label patch found them (a key
        the patch set is in ``undo`` with its value found, None where it had none)."""
        meta = self.pod.get("metadata") or {}
        found = {
            k: v for k, v in (meta.get("annotations") or {}).items() if k not in self.undo["annotations"]
        }
        found.update({k: v for k, v in self.undo["annotations"].items() if v is not None})
        return {
            "uid": meta.get("uid"),
            "name": meta.get("name"),
            "labels": dict(self.before),
            "annotations": found,
        }


class CutNotEnsured(Exception):
    """The deny-all of the cut a pod was to be labelled into could not be ensured first: the pod
    was not labelled."""

    def __init__(self, policy: str, error: KubeError) -> None:
        super().__init__(f"NetworkPolicy {policy} is not ensured: {error}")
        self.policy = policy
        self.error = error


def _open_until(opened: netpol.Opened, cut: QuarantineCut) -> str:
    """Which of a policy's directions the label opened, each with until when it stays open: the
    cut's deny-all, once it exists, holds only the cut's directions."""
    inside = [d for d in opened.directions if d in cut.directions]
    beyond = [d for d in opened.directions if d not in cut.directions]
    said = []
    if inside:
        said.append(f"its {'+'.join(inside)} to all until the policy exists or the pod is released")
    if beyond:
        held = f"NetworkPolicy {cut.network_policy} does not hold its {'+'.join(beyond)}"
        said.append(f"its {'+'.join(beyond)} to all until the pod is released ({held})")
    return ", and ".join(said)


def _as_ensured(policies: list[dict[str, Any]], name: str, ensured: DenyAllCheck) -> list[dict[str, Any]]:
    """The namespace's policies as listed, the deny-all ``name`` as ensuring it last read or wrote
    it (created, repaired, or read again after a conflict): the leak check must not judge the pod by
    a spec it replaced."""
    if ensured.spec is None:
        return policies
    others = [p for p in policies if netpol.name_of(p) != name]
    old = next((p for p in policies if netpol.name_of(p) == name), {"metadata": {"name": name}})
    return [*others, {**old, "spec": dict(ensured.spec)}]


def _cut_notes(labelled: Labelled, ensured: DenyAllCheck) -> list[str]:
    """What a quarantine's detail says of its cut: widened, and what ensuring its deny-all did
    before the label and after it (a deny-all left as it is before is found so again: said once)."""
    notes = []
    if labelled.current is not None and labelled.current is not labelled.cut.isolation:
        notes.append(f"widened its {labelled.current.value} cut to {labelled.cut.isolation.value}")
    before_label = labelled.ensured.notes() if labelled.ensured else []
    return [*notes, *before_label, *(note for note in ensured.notes() if note not in before_label)]


def _beyond_known(
    leaks: list[netpol.Leak], known: Collection[str] | Mapping[str, Collection[str]]
) -> list[netpol.Leak]:
    """Of ``leaks``, those not among the ``known`` ones, each with its directions not known: by
    policy and direction where ``known`` says directions, else by name alone (any direction)."""
    if not isinstance(known, Mapping):
        return [leak for leak in leaks if leak.policy not in known]
    found = []
    for leak in leaks:
        new = tuple(d for d in leak.directions if d not in known.get(leak.policy, ()))
        if new:
            found.append(replace(leak, directions=new))
    return found


def _said_already(why: str, said: list[str]) -> bool:
    """Whether ``said`` tells that the pod was replaced already, as ``why`` does."""
    return why.startswith(REPLACED_SINCE_LABEL) and any(s.startswith(REPLACED_SINCE_LABEL) for s in said)


class ClusterActions:
    def __init__(
        self,
        gateway: KubeGateway,
        settings: Quarantine,
        events: EventRecorder,
        *,
        blocks: BlockDestination | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._gateway = gateway
        self._settings = settings
        self._block_settings = blocks or BlockDestination()
        self._blocks = DestinationBlocks(gateway, self._block_settings, settings, events, clock_ns=clock_ns)
        self._events = events
        self._clock_ns = clock_ns
        self._deny_all = DenyAllPolicies(gateway, settings)
        self._release = PodRelease(
            gateway,
            settings,
            self._block_settings,
            self._blocks,
            events,
            exclude_from=self._exclude_from,
            clock_ns=clock_ns,
        )

    @classmethod
    def of_config(
        cls, gateway: KubeGateway, config: Config, *, clock_ns: Callable[[], int] = time.time_ns
    ) -> ClusterActions:
        """The actions as the responder's config sets them (quarantine and block labels, policies),
        for the responder and the commands a person acts with alike."""
        return cls(
            gateway,
            config.quarantine,
            EventRecorder(gateway),
            blocks=config.block_destination,
            clock_ns=clock_ns,
        )

    # -- block one destination ------------------------------------------------------------------

    def block_destination(
        self,
        pod: PodContext,
        alert: Alert,
        *,
        dry_run: bool,
        address: str | None = None,
        yield_to_release: bool = False,
        release_since_ns: int | None = None,
    ) -> ActionOutcome:
        """Cut the pod off from the address the alert names (or ``address``), keeping its other
        traffic (see responder/actions/block.py)."""
        return self._blocks.block(
            pod,
            alert,
            dry_run=dry_run,
            address=address,
            yield_to_release=yield_to_release,
            release_since_ns=release_since_ns,
        )

    # -- quarantine ---------------------------------------------------------------------------

    def quarantine(
        self,
        pod: PodContext,
        alert: Alert,
        incident_id: str,
        reason: str,
        *,
        dry_run: bool,
        isolate: Isolation | None = None,
    ) -> ActionOutcome:
        """Quarantine ``pod`` with the cut ``isolate`` (None: quarantine.isolate), widened to cover
        the cut it is already in: a quarantine is never narrowed (egress, then ingress: both)."""
        started = self._clock_ns()
        requested = isolate if isolate is not None else self._settings.isolate
        try:
            if dry_run:
                current = self._settings.cut_of(pod.labels.get(self._settings.label))
                return self._dry_run(pod, started, self._settings.cut(widest(current, requested)), current)
            outcome = self._quarantine(pod, alert, incident_id, reason, started, requested)
        except KubeError as exc:
            outcome = self._failure("quarantine", exc, started)
        self._record_event(pod, outcome)
        return outcome

    def _dry_run(
        self, pod: PodContext, started: int, cut: QuarantineCut, current: Isolation | None
    ) -> ActionOutcome:
        label, own = self._settings.label, cut.network_policy
        labels = {**pod.labels, label: cut.label_value}
        policies, repair = self._as_repair_leaves(self._gateway.list_network_policies(pod.namespace), cut)
        leaks = netpol.find_leaks(policies, labels, own_policy=own, directions=cut.directions)
        # A pod another policy already quarantined: the prediction must not read as if it were free.
        if current is cut.isolation:
            notes = [f"the pod is already labelled into {own}"]
        elif current is not None:
            notes = [
                f"would widen its {current.value} cut to {cut.isolation.value}: label the pod into {own}"
            ]
        else:
            notes = [f"would label the pod into {own}"]
        notes += repair
        unproven = [*out_of_reach_as_read(pod.host_network, pod.network_escape), *self._unread_policy_apis()]
        notes += [f"it would be LEAKY: {why}" for why in unproven]
        if pod.host_network:
            notes.append(HOST_NETWORK_NOT_ISOLATED)
        if leaks:
            notes.append("it would be LEAKY through " + ", ".join(leak.policy for leak in leaks))
        beyond = self._excluded_beyond(policies, labels, cut)
        opened = self._opened_beyond(policies, pod.labels, labels, cut, beyond)
        notes += [f"it would be LEAKY: {self._opened_words(o, cut, policies)}" for o in opened]
        report = IsolationReport(tuple(leaks), (), excluded_beyond=beyond, opened=opened)
        extra = self._report_extra(report, notes, cut)
        if current is cut.isolation and not (repair or unproven or pod.host_network or leaks or opened):
            extra[ALREADY_IN_CUT] = True  # in its cut, isolated as predicted: nothing for a person to do
        return ActionOutcome(
            action="quarantine",
            status=OutcomeStatus.DRY_RUN,
            detail="; ".join(notes),
            leaky_policies=report.leaky_policies(),
            started_ns=started,
            finished_ns=self._clock_ns(),
            extra=extra,
        )

    def _as_repair_leaves(
        self, policies: list[dict[str, Any]], cut: QuarantineCut
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """For a prediction: the policies as listed, the cut's deny-all as a repair would leave it
        where it still selects by the cut's label alone (a rule added by hand, its types changed:
        the repair takes what opens and keeps what restricts), and the note that it would repair it.
        A selector changed by hand is judged as found (a repair may leave it as it is)."""
        label, value, name = self._settings.label, cut.label_value, cut.network_policy
        listed = next((p for p in policies if netpol.name_of(p) == name), None)
        spec = (listed or {}).get("spec")
        selector = (spec or {}).get("podSelector") if isinstance(spec, Mapping) else None
        if (
            listed is None
            or not isinstance(selector, Mapping)
            or not netpol.spec_selects_only(selector, label, value)
        ):
            return policies, []
        wanted = netpol.repaired_deny_all(spec, label, value, cut.directions)
        if netpol.same_spec(spec, wanted):
            return policies, []
        repaired = DenyAllCheck(cut, spec=wanted)
        return _as_ensured(policies, name, repaired), [f"would repair altered NetworkPolicy {name}"]

    def _excluded_beyond(
        self, policies: list[dict[str, Any]], labels: Mapping[str, str], cut: QuarantineCut
    ) -> tuple[str, ...]:
        """The policies that exclude a pod with ``labels`` beyond the cut (netpol.excluded_beyond)."""
        label, values = self._settings.label, self._settings.cut_values()
        return tuple(
            netpol.name_of(p)
            for p in policies
            if netpol.excluded_beyond(p, label, values, labels, cut.directions)
        )

    @staticmethod
    def _opened_beyond(
        policies: Sequence[Mapping[str, Any]],
        before: Mapping[str, str],
        labels: Mapping[str, str],
        cut: QuarantineCut,
        excluded: tuple[str, ...],
    ) -> tuple[netpol.Opened, ...]:
        """Directions beyond the cut that the label (``before`` to ``labels``) opened to all, by the
        policy that restricted them (netpol.opened_by_label), but for the exclusions of ours
        (``excluded``: excluded_beyond says those)."""
        opened = netpol.opened_by_label(policies, before, labels, held=cut.directions)
        return tuple(o for o in opened if o.policy not in excluded)

    def _unread_policy_apis(self) -> list[str]:
        """Why isolation is not proven where the cluster serves network-policy APIs the leak check
        does not read (their allows may let the pod's traffic through, an Antrea or admin policy's
        before any NetworkPolicy), unless quarantine.ignore_other_policy_apis says they were
        reviewed. Discovery is the block's, cached alike; its failure is said, never a failure."""
        if self._settings.ignore_other_policy_apis:
            return []
        try:
            served = self._blocks.other_policy_apis()
        except KubeError as exc:
            return [f"the cluster's network-policy APIs could not be listed ({exc})"]
        if not served:
            return []
        return [
            f"the cluster serves {', '.join(served)} network policies, which are not read (set"
            " quarantine.ignore_other_policy_apis once none of them lets a quarantined pod's traffic through)"
        ]

    def _unread_policy_apis_since(self) -> str | None:
        """For a quarantine proven isolated when made: network-policy APIs the cluster serves now,
        which the leak check does not read (a CNI installed since), in words; None: none, or they
        were reviewed (quarantine.ignore_other_policy_apis). A failed discovery is no lapse: asked
        again at the next recheck. Discovery is cached (DISCOVERY_TTL_NS)."""
        if self._settings.ignore_other_policy_apis:
            return None
        return self._blocks.unread_policy_apis("quarantine.ignore_other_policy_apis")

    def _report_extra(self, report: IsolationReport, notes: list[str], cut: QuarantineCut) -> dict[str, Any]:
        """Outcome.extra for an isolation report (adding to ``notes`` what the detail says of it):
        the one direction cut, when the cut is not both ways."""
        extra: dict[str, Any] = {} if cut.isolation is Isolation.BOTH else {ISOLATED: cut.isolation.value}
        leaks = report.leaking()
        if leaks:
            extra[LEAKING_DIRECTIONS] = sorted({d for directions in leaks.values() for d in directions})
            extra[LEAKS] = {name: list(directions) for name, directions in sorted(leaks.items())}
        if report.not_patched:
            extra[NOT_PATCHED] = list(report.not_patched)
        if report.excluded_beyond:
            extra[EXCLUDED_BEYOND] = list(report.excluded_beyond)
            left_alone = "+".join(netpol.uncut(cut.directions))
            notes.append(
                f"{', '.join(report.excluded_beyond)} still exclude quarantined pods, as patched by"
                " an earlier version (every quarantined pod) or before their policy types changed:"
                f" their {left_alone} rules no longer apply to this pod"
            )
        return extra

    def _leave_block_policy(self, pod: PodContext, labels: Mapping[str, str]) -> list[str]:
        """An earlier version's block policy may still select a pod now in an egress cut (and
        allow its egress): rewritten to leave it out, before the policies are read for the leak
        check. Why it could not be, if so."""
        try:
            kept_in = self._blocks.leave_out(pod, labels)
        except KubeError as exc:
            kept_in = f"its block policy could not be checked ({exc})"
        return [kept_in] if kept_in is not None else []

    def _quarantine(
        self,
        pod: PodContext,
        alert: Alert,
        incident_id: str,
        reason: str,
        started: int,
        requested: Isolation,
    ) -> ActionOutcome:
        try:
            labelled = self._label_pod(pod, alert, incident_id, reason, requested)
        except KeptChanging as exc:
            # Not labelled: decided again on a later repeat, like any failed quarantine.
            return ActionOutcome(
                "quarantine", OutcomeStatus.FAILED, str(exc), started_ns=started, finished_ns=self._clock_ns()
            )
        except ReleasedMeanwhile as exc:
            # As the decision withholds it when its read shows the release: the person's judgement
            # is newer than the alert.
            return ActionOutcome(
                "quarantine",
                OutcomeStatus.WITHHELD,
                released_after_alert(exc.record, alert),
                started_ns=started,
                finished_ns=self._clock_ns(),
            )
        except CutNotEnsured as exc:
            failed = self._failure("quarantine", exc.error, started)
            return replace(
                failed,
                detail=f"the pod was not labelled: NetworkPolicy {exc.policy} is not ensured:"
                f" {failed.detail}",
            )
        except PodReplaced as exc:
            return ActionOutcome(
                "quarantine",
                OutcomeStatus.POD_GONE,
                str(exc),
                started_ns=started,
                finished_ns=self._clock_ns(),
            )
        except KubeError as exc:
            if pod_gone(exc):
                return ActionOutcome(
                    "quarantine",
                    OutcomeStatus.POD_GONE,
                    "pod no longer exists",
                    started_ns=started,
                    finished_ns=self._clock_ns(),
                )
            raise
        labels = (labelled.pod.get("metadata") or {}).get("labels") or {}
        cut = labelled.cut
        spec = labelled.pod.get("spec") or {}
        # Read from the pod as labelled: an ephemeral container added since the read counts. The host
        # network is said apart (_on_host_network): no NetworkPolicy holds such a pod at all.
        unproven = [why for why in out_of_reach(spec) if why != netpol.HOST_NETWORK]
        unproven += self._leave_block_policy(pod, labels)
        # One read of the namespace's policies serves the deny-all check and the leak check.
        policies: list[dict[str, Any]] | None = None
        try:
            policies = self._gateway.list_network_policies(pod.namespace)
        except KubeError as exc:
            # The label is on, but whether another policy still lets traffic through cannot be
            # checked. Say so; never call it isolated.
            unproven.append(f"other NetworkPolicies could not be checked ({exc})")
        try:
            ensured = self._deny_all.ensure_after_label(pod.namespace, cut, policies, labelled.as_found())
        except KubeError as exc:
            # FAILED, not LEAKY: the incident is decided again on a later repeat (every step is
            # idempotent), as when nothing could be done at all.
            return self._not_ensured(
                pod, labelled, labels, policies, self._failure("quarantine", exc, started)
            )
        notes = _cut_notes(labelled, ensured)
        report = IsolationReport((), ())
        if policies is not None:
            policies = _as_ensured(policies, cut.network_policy, ensured)
            report = self._isolate(pod, labelled.before, labels, policies, cut)
            unproven += report.unproven
            unrecorded, replaced = self._record_patched(pod, report.patched)
            notes += unrecorded
            unproven += replaced
        # Read once more after the leak check: a release (or the label taken off by hand) that
        # landed between the label and the listing leaves the pod out of the deny-all.
        confirmed = self._confirm_label(pod, alert, cut, labels, policies, started)
        if isinstance(confirmed, ActionOutcome):
            return replace(confirmed, patched_policies=report.patched)
        unproven += [why for why in confirmed if not _said_already(why, unproven)]
        unproven += self._unread_policy_apis()  # last: the pod is isolated first
        notes += self._unread_by_setting()
        extra = self._report_extra(report, notes, cut)
        leaky = report.leaky_policies()
        if spec.get("hostNetwork"):
            return self._on_host_network(pod, notes, unproven, report, extra, started)
        if unproven:
            return ActionOutcome(
                action="quarantine",
                status=OutcomeStatus.LEAKY,
                detail="; ".join([*notes, "isolation not proven: " + "; ".join(unproven)]),
                leaky_policies=leaky,
                patched_policies=report.patched,
                started_ns=started,
                finished_ns=self._clock_ns(),
                extra=extra,
            )
        if leaky:
            notes += [
                f"{leak.policy} allows {'+'.join(leak.directions)} ({leak.reason})" for leak in report.leaks
            ]
            notes += [self._opened_words(o, cut, policies or []) for o in report.opened]
            status = OutcomeStatus.LEAKY
        else:
            status = OutcomeStatus.QUARANTINED
        return ActionOutcome(
            action="quarantine",
            status=status,
            detail="; ".join(notes),
            leaky_policies=leaky,
            patched_policies=report.patched,
            started_ns=started,
            finished_ns=self._clock_ns(),
            extra=extra,
        )

    def _not_ensured(
        self,
        pod: PodContext,
        labelled: Labelled,
        labels: Mapping[str, str],
        policies: list[dict[str, Any]] | None,
        failed: ActionOutcome,
    ) -> ActionOutcome:
        """The FAILED outcome of a labelled pod whose deny-all could not be ensured. Where the label
        took the pod out of the only policies restricting it in some direction (a podSelector that
        leaves quarantined pods out), or brought it into one allowing all there, the label alone
        opened that direction to all: it is taken off again (the pod back as it was, restricted as
        before), since a label that isolates nothing yet and opens something is worse than no
        label; said either way. Otherwise the label stays
        (it isolates the pod the moment the policy exists, made by a repeat or the chart)."""
        if failed.status is not OutcomeStatus.FAILED:
            return failed
        own = labelled.cut.network_policy
        opened = netpol.opened_by_label(policies or [], labelled.before, labels, held=())
        if not opened:
            return replace(
                failed,
                detail=f"the pod is labelled, but NetworkPolicy {own} is not ensured: {failed.detail}",
                extra={LABELLED: True},  # counts against the circuit breaker: see ActionOutcome.labelled
            )
        said = "; ".join(self._label_effect(o) for o in opened)
        refused = self._take_label_off(pod, labelled)
        if refused is None:
            return replace(
                failed,
                detail=f"the pod was not left labelled: NetworkPolicy {own} is not ensured: {failed.detail};"
                f" {said}: the label was taken off again, so that the pod is restricted as before",
            )
        opening = "; ".join(
            f"{self._label_effect(o)}, which opened {_open_until(o, labelled.cut)}" for o in opened
        )
        return replace(
            failed,
            detail=f"the pod is labelled, but NetworkPolicy {own} is not ensured: {failed.detail}; {opening}"
            f" (the label could not be taken off again: {refused})",
            extra={LABELLED: True},
        )

    @staticmethod
    def _label_effect(opened: netpol.Opened) -> str:
        """In words: how the label opened ``opened``'s directions, by taking the pod out of the only
        policy restricting it there or by bringing it into one that allows all there."""
        dirs = "+".join(opened.directions)
        if opened.brought_in:
            return (
                f"NetworkPolicy {opened.policy} (its podSelector selects quarantined pods) allows all of"
                f" the pod's {dirs}, and the label brought the pod into it"
            )
        return (
            f"NetworkPolicy {opened.policy} (its podSelector leaves out quarantined pods) was the only"
            f" policy restricting the pod's {dirs}, and the label took the pod out of it"
        )

    def _opened_words(
        self, opened: netpol.Opened, cut: QuarantineCut, policies: Sequence[Mapping[str, Any]]
    ) -> str:
        """What a LEAKY outcome says of a direction beyond the cut that the label opened, and how
        the policy keeps applying to pods of such a cut (never `DoesNotExist`: every quarantined pod)."""
        dirs = "+".join(opened.directions)
        said = f"{self._label_effect(opened)}: its {dirs}, which the {cut.isolation.value} cut leaves alone,"
        if opened.brought_in:
            # A rule with no peers and no ports allows everyone: name whom it is for.
            return (
                f"{said} is open to all; name in {opened.policy}'s {dirs} rules the peers it is for"
                " (a rule with neither peers nor ports allows every peer)"
            )
        policy = next((p for p in policies if netpol.name_of(p) == opened.policy), {})
        values = self._settings.covering_values(netpol.policy_directions(policy.get("spec") or {}))
        return (
            f"{said} is open to all; to keep {opened.policy} applying"
            f" to such pods, leave out `{self._settings.label} NotIn [{', '.join(sorted(values))}]`"
            " (the cuts that stop what it governs), never `DoesNotExist`"
        )

    def _take_label_off(self, pod: PodContext, labelled: Labelled) -> str | None:
        """Put back what labelling the pod changed (its label and the quarantine's annotations as
        found), guarded by the version the label patch returned: a pod changed since (a release,
        another quarantine) is left as it is. Why it was not, if so."""
        meta = labelled.pod.get("metadata") or {}
        ours = {key: (meta.get("annotations") or {}).get(key) for key in labelled.undo["annotations"]}
        label, value = self._settings.label, labelled.cut.label_value
        for _ in range(TAKE_OFF_TRIES):
            undo = {**labelled.undo, "uid": pod.uid, "resourceVersion": meta.get("resourceVersion")}
            try:
                self._gateway.patch_pod(pod.namespace, pod.name, {"metadata": undo})
            except KubeError as exc:
                if exc.status != 409:
                    return str(exc)
                # Another write to the pod (the kubelet's status, say) moved its version: read it
                # again, and go on only while the label and annotations are still this patch's.
                try:
                    meta = self._gateway.get_pod(pod.namespace, pod.name).get("metadata") or {}
                except KubeError as again:
                    return str(again)
                found = meta.get("annotations") or {}
                still = (meta.get("labels") or {}).get(label) == value and all(
                    found.get(key) == written for key, written in ours.items()
                )
                if meta.get("uid") != pod.uid or not still:
                    return "the pod changed since it was labelled (a release, or another quarantine)"
                continue
            return None
        return f"the pod kept changing ({TAKE_OFF_TRIES} tries)"

    def _confirm_label(
        self,
        pod: PodContext,
        alert: Alert,
        cut: QuarantineCut,
        labels: Mapping[str, str],
        policies: list[dict[str, Any]] | None,
        started: int,
    ) -> ActionOutcome | list[str]:
        """Read the pod again after the leak check. The outcome where it no longer carries a label
        that holds the cut (released meanwhile, its label taken off or narrowed by hand) or is gone;
        else why isolation is not proven (the read failed; its label widened to a cut whose deny-all
        does not cut it, as listed; its labels changed so that other policies now select it and
        allow its traffic), maybe nothing."""
        try:
            raw = self._gateway.get_pod(pod.namespace, pod.name)
        except KubeError as exc:
            if pod_gone(exc):
                return self._ended(OutcomeStatus.POD_GONE, "pod no longer exists", started)
            return [f"the pod could not be read again to confirm its label ({exc})"]
        meta = raw.get("metadata") or {}
        if meta.get("uid") != pod.uid:
            # Said as _record_patched says it: what the quarantine did (patched policies) stands.
            return [f"{REPLACED_SINCE_LABEL} (its uid changed)"]
        now = meta.get("labels") or {}
        held = self._settings.cut_of(now.get(self._settings.label))
        if held is None or widest(held, cut.isolation) is not held:
            return self._lifted_meanwhile(meta, alert, cut, held, policies, started)
        # Widened meanwhile (by hand, or another quarantine): the wider cut's deny-all holds the pod
        # now, not the one ensured, and may not be there.
        gap = self._held_gap(held, now, policies, cut.directions) if held is not cut.isolation else None
        said = (
            [f"its quarantine label was changed to the {held.value} cut meanwhile, and {gap}"] if gap else []
        )
        if now == labels or policies is None:
            return said
        own = self._settings.cut(held).network_policy
        found = {
            leak.policy
            for leak in netpol.find_leaks(policies, labels, own_policy=own, directions=cut.directions)
        }
        later = [
            leak.policy
            for leak in netpol.find_leaks(policies, now, own_policy=own, directions=cut.directions)
            if leak.policy not in found
        ]
        if not later:
            return said
        return [
            *said,
            f"its labels changed while it was being quarantined, and {', '.join(later)} now select it",
        ]

    def _held_gap(
        self,
        held: Isolation,
        labels: Mapping[str, str],
        policies: Sequence[Mapping[str, Any]] | None,
        directions: tuple[str, ...],
    ) -> str | None:
        """What keeps the deny-all of the cut ``held`` (the pod's label as read again, not the cut
        ensured) from cutting ``directions`` for a pod with ``labels``, in the recheck's words
        (netpol.deny_all_gap, on the policies as listed); None: it cuts them, or the policies were
        not listed (said already)."""
        if policies is None:
            return None
        return netpol.deny_all_gap(policies, self._settings.cut(held).network_policy, labels, directions)

    def _lifted_meanwhile(
        self,
        meta: Mapping[str, Any],
        alert: Alert,
        cut: QuarantineCut,
        held: Isolation | None,
        policies: Sequence[Mapping[str, Any]] | None,
        started: int,
    ) -> ActionOutcome:
        """The outcome of a quarantine whose label was lifted or narrowed between the label patch
        and the read after the leak check: never QUARANTINED. A release recorded on the pod is the
        person's word, as when it lands before the label (ReleasedMeanwhile): WITHHELD. A label
        taken off by hand (no release recorded): FAILED, decided again on a later repeat. A label
        narrowed to a cut that leaves part of this one open: LEAKY in those directions, and where
        that cut's own deny-all does not cut it (as listed), not even the narrower cut is proven."""
        released = release_record_in(meta.get("annotations") or {}, self._settings.label)
        if held is None and released is not None:
            return self._ended(OutcomeStatus.WITHHELD, released_after_alert(released, alert), started)
        own = cut.network_policy
        if held is None:
            return self._ended(
                OutcomeStatus.FAILED,
                "NOT isolated: the quarantine label was taken off the pod while it was being quarantined,"
                f" with no release recorded (by hand, or by another tool), so NetworkPolicy {own} does not"
                " select it",
                started,
            )
        left = [d for d in cut.directions if d not in held.directions]
        gap = self._held_gap(held, meta.get("labels") or {}, policies, held.directions)
        return ActionOutcome(
            action="quarantine",
            status=OutcomeStatus.LEAKY,
            detail=f"its quarantine label was changed while it was being quarantined: it now cuts"
            f" {held.value} only, so its {'+'.join(left)} is not cut"
            + (f"; isolation not proven for its {held.value} cut either: {gap}" if gap else ""),
            started_ns=started,
            finished_ns=self._clock_ns(),
            extra={LEAKING_DIRECTIONS: left, **({} if held is Isolation.BOTH else {ISOLATED: held.value})},
        )

    def _ended(self, status: OutcomeStatus, detail: str, started: int) -> ActionOutcome:
        return ActionOutcome("quarantine", status, detail, started_ns=started, finished_ns=self._clock_ns())

    def _unread_by_setting(self) -> list[str]:
        """What an outcome says where quarantine.ignore_other_policy_apis holds: the other
        network-policy APIs were not read (the proof covers NetworkPolicies only)."""
        if not self._settings.ignore_other_policy_apis:
            return []
        return [
            "other network-policy APIs (Cilium, Calico, Antrea, AdminNetworkPolicy, EKS, GKE FQDN) were"
            " not read: quarantine.ignore_other_policy_apis says none of them lets a quarantined pod's"
            " traffic through"
        ]

    def _on_host_network(
        self,
        pod: PodContext,
        notes: list[str],
        unproven: list[str],
        report: IsolationReport,
        extra: dict[str, Any],
        started: int,
    ) -> ActionOutcome:
        """A host-network pod: labelled like any (the label records the quarantine, and release
        lifts it), but no NetworkPolicy holds it, so it is NOT isolated, whatever the policies say.
        LEAKY (the status Slack and the metrics know), with what to do instead."""
        ns, name = shlex.quote(pod.namespace), shlex.quote(pod.name)
        node = shlex.quote(pod.node) if pod.node else "<its node>"
        said = [
            HOST_NETWORK_NOT_ISOLATED,
            f"next: cordon its node (kubectl cordon {node}), then delete or evict the pod"
            f" (kubectl -n {ns} delete pod {name}); its controller may start it again on the host"
            " network: scale its workload down, or drop hostNetwork from its spec",
            *notes,
            *(["also: " + "; ".join(unproven)] if unproven else []),
        ]
        return ActionOutcome(
            action="quarantine",
            status=OutcomeStatus.LEAKY,
            detail="; ".join(said),
            leaky_policies=report.leaky_policies(),
            patched_policies=report.patched,
            started_ns=started,
            finished_ns=self._clock_ns(),
            extra={**extra, NOT_ISOLATED: ON_HOST_NETWORK},
        )

    def ensure_deny_all(self, namespace: str, isolation: Isolation | None = None) -> DenyAllCheck:
        """Create a cut's deny-all policy (None: quarantine.isolate's) if missing, repair it if
        altered, never narrowing it (see responder/actions/deny_all.py)."""
        return self._deny_all.ensure_deny_all(namespace, isolation)

    def _label_pod(
        self, pod: PodContext, alert: Alert, incident_id: str, reason: str, requested: Isolation
    ) -> Labelled:
        """Label the pod into the cut ``requested``, widened to the cut it is in. A compare-and-set on
        the pod's version: a pod changed since it was read (another quarantine, by hand or by a
        replica; a release) is read again and its cut worked out afresh, so that a stale read never
        narrows a wider quarantine. A pod moving from one cut's label value to another's (widened,
        or off an earlier version's value) gets the new cut's deny-all ensured first, so that it is
        never, even for a moment, in a policy that cuts less than the one it leaves (if that fails
        it stays where it was). So does a pod in a destination block labelled for the first time:
        its label takes it out of its block policy (whose NotIn leaves out every pod an egress cut
        holds), and must never land before the deny-all that cuts its egress. So does any pod with
        quarantine.patch_other_policies: a policy that restricts it may leave quarantined pods out
        (patched for another pod's quarantine), and the label must not take it out of that
        restriction before the deny-all holds. Any other pod is labelled first, its deny-all ensured
        after: where the deny-all exists (the chart renders it) the label alone isolates it, one API
        call sooner, and even when the API fails after.
        Returns what it did (Labelled): the patched pod, the cut, the cut it was in, what ensuring
        the cut's deny-all first did, and the labels and quarantine annotations it found.
        Raises KubeError (404: the pod is gone), PodReplaced, KeptChanging (see pod_patch) or
        CutNotEnsured (the pod not labelled)."""
        label = self._settings.label
        chosen: list[tuple[QuarantineCut, Isolation | None, dict[str, str], dict[str, Any]]] = []
        ensured: dict[Isolation, DenyAllCheck] = {}

        def metadata_for(meta: Mapping[str, Any]) -> dict[str, Any]:
            value = (meta.get("labels") or {}).get(label)
            current = self._settings.cut_of(value)
            cut = self._settings.cut(widest(current, requested))
            # First, where the label could open something: a move between cuts, a pod in a
            # destination block (the label takes it out of its block policy), or policies patched to
            # leave quarantined pods out (the label takes the pod out of what they restrict).
            blocked = self._block_settings.label in (meta.get("labels") or {})
            opens = current is not None or blocked or self._settings.patch_other_policies
            if value != cut.label_value and cut.isolation not in ensured and opens:
                labelling = {
                    "uid": pod.uid,
                    "name": pod.name,
                    "labels": {**(meta.get("labels") or {}), label: cut.label_value},
                }
                try:
                    ensured[cut.isolation] = self._deny_all.ensure_listed(pod.namespace, cut, labelling)
                except KubeError as exc:
                    raise CutNotEnsured(cut.network_policy, exc) from exc
            found = meta.get("annotations") or {}
            annotations = {
                A_RULE: clip_annotation(alert.rule),
                A_ALERT_ID: alert.alert_id,
                A_INCIDENT: incident_id,
                A_REASON: clip_annotation(reason),
                A_QUARANTINE_LABELS: with_recorded_label(meta, label, cut.label_value),
                **clear_release_record_of(found, label),
            }
            if A_QUARANTINED_AT not in found:
                annotations[A_QUARANTINED_AT] = now_text()  # keep the first time on repeats
            undo = {"labels": {label: value}, "annotations": {key: found.get(key) for key in annotations}}
            chosen.append((cut, current, dict(meta.get("labels") or {}), undo))
            return {"labels": {label: cut.label_value}, "annotations": annotations}

        # A release since the read, after the alert's event, is the person's word over the alert's
        # (the decision withholds on a release its read shows; a cached read may not show it).
        patched = patch_as_read(
            self._gateway,
            pod,
            metadata_for,
            label=self._settings.label,
            release_since_ns=alert.time_ns + CLOCK_SKEW_NS,
        )
        cut, current, before, undo = chosen[-1]
        return Labelled(patched, cut, current, ensured.get(cut.isolation), before, undo)

    def _isolate(
        self,
        pod: PodContext,
        before: Mapping[str, str],
        labels: Mapping[str, str],
        policies: list[dict[str, Any]],
        cut: QuarantineCut,
    ) -> IsolationReport:
        """The other policies (``policies``: the namespace's, read after the label) that still let
        traffic through, after patching them if configured to, and those the label (``before`` to
        ``labels``) took the pod out of, opening a direction the cut leaves alone. API failures are
        said in the report (a patch refused leaves its policy leaking; a read-back that fails,
        unproven)."""
        own, directions = cut.network_policy, cut.directions
        leaks = netpol.find_leaks(policies, labels, own_policy=own, directions=directions)
        patched: list[str] = []
        held: dict[str, tuple[str, ...]] = {}  # not patched: the directions it governs beyond the cut
        current = policies
        unproven: tuple[str, ...] = ()
        if leaks and self._settings.patch_other_policies:
            by_name = {netpol.name_of(p): p for p in policies}
            for leak in leaks:
                beyond = netpol.governed_beyond(by_name[leak.policy], directions)
                if beyond:
                    held[leak.policy] = beyond
                elif self._exclude_from(pod.namespace, by_name[leak.policy]):
                    patched.append(leak.policy)
            try:
                # Prove it rather than assume it: read the policies again and re-evaluate.
                current = self._gateway.list_network_policies(pod.namespace)
                leaks = netpol.find_leaks(current, labels, own_policy=own, directions=directions)
            except KubeError as exc:
                # Patched all the same (the release undoes them), but not proven: the leaks found
                # before, less those patched, are named still.
                leaks = [leak for leak in leaks if leak.policy not in patched]
                unproven = (f"the NetworkPolicies patched to exclude it could not be read back ({exc})",)
            leaks = [
                replace(
                    leak,
                    reason=f"{leak.reason}; not patched: it also restricts {'+'.join(held[leak.policy])}, "
                    "which excluding quarantined pods from it could open to all traffic",
                )
                if leak.policy in held
                else leak
                for leak in leaks
            ]
        not_patched = tuple(leak.policy for leak in leaks if leak.policy in held)
        excluded = self._excluded_beyond(current, labels, cut)
        opened = self._opened_beyond(current, before, labels, cut, excluded)
        return IsolationReport(tuple(leaks), tuple(patched), not_patched, excluded, unproven, opened)

    def _exclude_from(self, namespace: str, policy: Mapping[str, Any]) -> bool:
        """Take out of ``policy`` the pods of the cuts that stop every direction it governs (never
        a pod that relies on it in a direction its cut leaves alone); its types as read each time."""
        label = self._settings.label
        name = netpol.name_of(policy)
        current: Mapping[str, Any] | None = policy
        for _ in range(CONFLICT_RETRIES):
            if current is None:
                return False
            values = self._settings.covering_values(netpol.policy_directions(current.get("spec") or {}))
            try:
                self._gateway.replace_network_policy(
                    namespace, name, netpol.with_exclusion(current, label, values)
                )
                return True
            except KubeError as exc:
                if not netpol.changed_since_read(exc):
                    return False  # e.g. 403: the policy stays leaky and the outcome says so
            try:
                current = self._gateway.get_network_policy(namespace, name)
            except KubeError:
                return False  # not patched: the read-back of the leak check names it, if it leaks
        return False

    def _record_patched(self, pod: PodContext, patched: tuple[str, ...]) -> tuple[list[str], list[str]]:
        """Record on the pod the policies its quarantine patched, for its release. What the detail
        says if that failed: a note, where the isolation proven stands (a release also finds each
        patched policy by the mark the patch put on it: netpol.is_patched_by_us); or why it is not
        proven, where the pod was deleted or replaced since its label (a 404, or a 409: the write
        is guarded by its uid alone), so that the pod of its name is not the one labelled."""
        if not patched:
            return [], []
        try:
            self._remember_patched(pod, patched)
        except KubeError as exc:
            if exc.not_found or exc.conflict:
                return [], [f"{REPLACED_SINCE_LABEL} ({exc})"]
            return [
                f"the NetworkPolicies it patched could not be recorded on the pod ({exc}); a release"
                " still restores them, found by the mark the patch put on each"
            ], []
        return [], []

    def _remember_patched(self, pod: PodContext, patched: tuple[str, ...]) -> None:
        known = set(filter(None, pod.annotations.get(A_PATCHED, "").split(",")))
        names = ",".join(sorted(known | set(patched)))
        # Guarded by the uid like every pod write: never onto a pod re-created under the same name.
        patch = {"metadata": {"uid": pod.uid, "annotations": {A_PATCHED: names}}}
        self._gateway.patch_pod(pod.namespace, pod.name, patch)

    # -- re-check -----------------------------------------------------------------------------

    def lapse_of(
        self,
        pod: PodContext,
        *,
        cut: Isolation | None,
        known_leaks: Collection[str] | Mapping[str, Collection[str]] = (),
        blocked: Collection[str] = (),
        proven: bool = False,
    ) -> Lapse | None:
        """What undid, since it was made, a quarantine in the cut ``cut`` (None: none was made) or
        a block of the addresses ``blocked``, with ``pod`` as read afresh, and which of the two;
        None: they hold as made.
        A quarantine's label narrowed or gone, the deny-all of the cut the pod is in now gone or
        altered, a policy now letting traffic through other than as ``known_leaks`` (those it was
        reported LEAKY through: by policy and direction, outcome.known_leaks; or by name alone, as
        before directions were recorded), each in the directions of ``cut`` only (a later quarantine that
        widened the pod's cut answers for the rest); a block policy gone or no longer blocking an
        address. With ``proven`` (the quarantine was reported isolated, not LEAKY), also a way out
        of the pod's network namespace found since (an ephemeral debug container added privileged,
        say), which no NetworkPolicy covers, and a network-policy API the cluster came to serve
        (unless quarantine.ignore_other_policy_apis). One read of the namespace's policies."""
        held: QuarantineCut | None = None
        if cut is not None:
            current = self._settings.cut_of(pod.labels.get(self._settings.label))
            if current is None:
                return Lapse("quarantine", "its quarantine label is gone", label_gone=True)
            if widest(current, cut) is not current:
                return Lapse(
                    "quarantine", f"its quarantine label now cuts {current.value} only, not {cut.value}"
                )
            held = self._settings.cut(current)
            escapes = out_of_reach_as_read(pod.host_network, pod.network_escape) if proven else []
            if escapes:
                return Lapse("quarantine", "; ".join(escapes))
            unread = self._unread_policy_apis_since() if proven else None
            if unread is not None:
                return Lapse("quarantine", unread)
        elif not blocked:
            return None
        policies = self._gateway.list_network_policies(pod.namespace)
        if held is not None and cut is not None:
            # The deny-all the pod is in now (its cut may have been widened since), held to this
            # quarantine's own directions: another's leak beyond them is that one's to report.
            gap = netpol.deny_all_gap(policies, held.network_policy, pod.labels, cut.directions)
            if gap is not None:
                return Lapse("quarantine", gap)
            leaks = netpol.find_leaks(
                policies, pod.labels, own_policy=held.network_policy, directions=cut.directions
            )
            opened = _beyond_known(leaks, known_leaks)
            if opened:
                return Lapse(
                    "quarantine",
                    "; ".join(
                        f"NetworkPolicy {leak.policy} now allows its {'+'.join(leak.directions)}"
                        + (" too" if leak.policy in known_leaks else "")
                        for leak in opened
                    ),
                )
        undone = self._blocks.lapse(pod, policies, blocked) if blocked else None
        return Lapse(BLOCK_DESTINATION, undone) if undone is not None else None

    # -- annotate -----------------------------------------------------------------------------

    def annotate(
        self, pod: PodContext, alert: Alert, incident_id: str, reason: str, *, dry_run: bool
    ) -> ActionOutcome:
        """Record the finding on the pod without isolating it (in dry-run: say so, write nothing)."""
        started = self._clock_ns()
        if dry_run:
            return ActionOutcome(
                "annotate",
                OutcomeStatus.DRY_RUN,
                "would record the finding in the pod's annotations",
                started_ns=started,
                finished_ns=self._clock_ns(),
            )
        patch = {
            "metadata": {
                "uid": pod.uid,
                "annotations": {
                    A_FLAGGED_AT: now_text(),
                    A_RULE: clip_annotation(alert.rule),
                    A_ALERT_ID: alert.alert_id,
                    A_INCIDENT: incident_id,
                    A_REASON: clip_annotation(reason),
                },
            }
        }
        try:
            self._gateway.patch_pod(pod.namespace, pod.name, patch)
            outcome = ActionOutcome(
                "annotate", OutcomeStatus.ANNOTATED, started_ns=started, finished_ns=self._clock_ns()
            )
        except KubeError as exc:
            outcome = self._failure("annotate", exc, started)
        self._record_event(pod, outcome)
        return outcome

    # -- release ------------------------------------------------------------------------------

    def release(
        self, namespace: str, name: str, *, by: str, reason: str, labels_known: bool = True
    ) -> ActionOutcome:
        """Lift the pod's quarantine and destination block (see responder/actions/release.py)."""
        return self._release.release(namespace, name, by=by, reason=reason, labels_known=labels_known)

    def held_elsewhere(self, pod: PodContext) -> list[str]:
        """What other configs still hold on a released pod (see responder/actions/release.py)."""
        return self._release.held_elsewhere(pod)

    # -- shared -------------------------------------------------------------------------------

    def _failure(self, action: str, exc: KubeError, started: int) -> ActionOutcome:
        return failure_outcome(action, exc, started, self._clock_ns())

    def _record_event(self, pod: PodContext, outcome: ActionOutcome) -> None:
        if outcome.status is OutcomeStatus.POD_GONE:
            return
        reasons: dict[OutcomeStatus | UnknownStatus, str] = {
            OutcomeStatus.QUARANTINED: "Quarantined",
            OutcomeStatus.LEAKY: "QuarantineLeaky",
            OutcomeStatus.DRY_RUN: "QuarantineDryRun",
            OutcomeStatus.ANNOTATED: "SecurityFinding",
            OutcomeStatus.FAILED: "QuarantineFailed" if outcome.action == "quarantine" else "ActionFailed",
        }
        reason = reasons.get(outcome.status, "ServingGuard")
        self._events.record_for(pod, reason, f"serving-guard {outcome.action}: {outcome.describe()}")
