"""The deny-all policy of a quarantine's cut: make sure the namespace has it as built (created if
missing, repaired if altered, never narrowed), and refuse to create it or take over one that is not
this config's (ClusterActions.ensure_deny_all, and the quarantine before or after its label, delegate
here).

A deny-all found cutting more than the cut, selecting more pods than the cut's label (a lockdown),
or shaped like another config's is left as it is, said so (DenyAllCheck.notes); where leaving it
would not cut the pod, or repairing or creating it would release or fail another config's
quarantines, DenyAllInUse says what a person must decide.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from responder.actions import netpol
from responder.actions.lockdown import (
    SHOWN_PODS,
    HeldPods,
    Lockdown,
    other_config_labels,
    selected,
    shown,
    with_pod,
)
from responder.actions.pod_patch import CONFLICT_RETRIES
from responder.actions.pod_records import held_under, quarantine_record_holds
from responder.cluster.api import KubeError, KubeGateway
from responder.config import Isolation, Quarantine, QuarantineCut
from responder.incident import BY_PLACEHOLDER, REASON_PLACEHOLDERS
from responder.wording import first_few

# What the chart puts on the deny-all policies it renders (templates/quarantine-networkpolicies.yaml).
HELM_MANAGED = ("app.kubernetes.io/managed-by", "Helm")
HELM_RELEASE_NAME = "meta.helm.sh/release-name"
HELM_RELEASE_NAMESPACE = "meta.helm.sh/release-namespace"


class DenyAllInUse(KubeError):
    """A deny-all that is another config's (it selects by another quarantine label), or that pods
    quarantined under another label rely on: not repaired to this config's label."""

    def __init__(self, reason: str) -> None:
        super().__init__(409, reason)

    def __str__(self) -> str:
        return self.reason


@dataclass(frozen=True, slots=True)
class DenyAllCheck:
    """What ensuring a cut's deny-all policy found and did."""

    cut: QuarantineCut
    created: bool = False
    repaired: bool = False
    # Directions beyond the cut that the policy was found cutting too, and still cuts.
    kept_beyond: tuple[str, ...] = ()
    # Directions beyond the cut that it was found restricting by rules (added by hand), kept so.
    kept_rules: tuple[str, ...] = ()
    # The podSelector it was found with, selecting more pods than the cut's label: left as it is.
    wider: str | None = None
    # Helm manages that policy: an upgrade renders its podSelector back to the label.
    helm: bool = False
    # Left as it is, its podSelector shaped like another config's deny-all: the labels it selects,
    # and what its metadata says of which config is in force (_provenance).
    foreign: str | None = None
    provenance: str = ""
    # The spec last read or written (created, repaired, or re-read after a conflict): the policies as
    # listed before may hold another.
    spec: Mapping[str, Any] | None = None
    # Created beside another cut's deny-all read as a lockdown: what the quarantine says of it.
    beside: str | None = None

    def notes(self) -> list[str]:
        """What the quarantine's detail says of it (nothing when it was as built)."""
        name, cut = self.cut.network_policy, self.cut.isolation.value
        kept = "+".join(self.kept_beyond)
        if self.created:
            return [f"created NetworkPolicy {name}" + (f" ({self.beside})" if self.beside else "")]
        if self.foreign is not None:
            return [
                f"left NetworkPolicy {name} as it is: it selects {self.foreign}, not the {cut} cut's label:"
                f" another config's deny-all (one of the two configs is stale{self.provenance}) or a"
                " lockdown made by hand; it cuts this pod all the same"
            ]
        if self.wider is not None:
            upgrade = (
                " (Helm manages the policy: the next `helm upgrade` renders its podSelector back to the"
                " label, which does the same)"
                if self.helm
                else ""
            )
            return [
                f"left NetworkPolicy {name} as it is: its podSelector {self.wider} selects more pods than"
                f" the {cut} cut's label (widened by hand: a lockdown?), and narrowing it would give them"
                f" their traffic back{upgrade}"
            ]
        ruled = "+".join(self.kept_rules)
        if self.repaired:
            keeping = [f"its cut of {kept}"] if kept else []
            keeping += [f"its {ruled} rules"] if ruled else []
            said = f", keeping {' and '.join(keeping)} beyond the {cut} cut" if keeping else ""
            return [f"repaired altered NetworkPolicy {name}{said}"]
        if kept:
            return [
                f"left NetworkPolicy {name} as it is: it cuts {kept} too, beyond its {cut} cut"
                " (a repair would narrow the quarantines in it)"
            ]
        if ruled:
            return [
                f"left NetworkPolicy {name} as it is: it restricts {ruled} too by rules added beyond its"
                f" {cut} cut (a repair would open that for the quarantines in it)"
            ]
        return []


def _helm_managed(policy: Mapping[str, Any]) -> bool:
    """Whether the policy's metadata says Helm manages it (the chart renders it)."""
    labels = (policy.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(HELM_MANAGED[0]) == HELM_MANAGED[1])


def _selector_text(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _provenance(policy: Mapping[str, Any]) -> str:
    """What the policy's metadata says of which config is in force: where Helm manages it, the
    chart's values (they make the responder's config too)."""
    if not _helm_managed(policy):
        return ""
    annotations = (policy.get("metadata") or {}).get("annotations") or {}
    release, home = annotations.get(HELM_RELEASE_NAME), annotations.get(HELM_RELEASE_NAMESPACE)
    command = f"helm get values {release} -n {home}" if release and home else "helm get values RELEASE"
    return f" (Helm manages the policy: `{command}` shows the label of the responder it deploys)"


class DenyAllPolicies:
    """Ensure the deny-all policies of a config's cuts, with the collaborators of the ClusterActions
    it is built for: the gateway and the quarantine settings."""

    def __init__(self, gateway: KubeGateway, settings: Quarantine) -> None:
        self._gateway = gateway
        self._settings = settings

    def ensure_deny_all(self, namespace: str, isolation: Isolation | None = None) -> DenyAllCheck:
        """Create a cut's deny-all policy (None: quarantine.isolate's) if missing, repair it if
        altered, never narrowing it."""
        cut = self._settings.cut(isolation)
        current = self._gateway.get_network_policy(namespace, cut.network_policy)
        return self._ensure_deny_all(namespace, current, cut, policies=None)

    def ensure_listed(self, namespace: str, cut: QuarantineCut, labelling: Mapping[str, Any]) -> DenyAllCheck:
        """_ensure_deny_all with the namespace's policies listed (the other cuts' deny-alls count:
        _refuse_to_create), before the pod ``labelling`` (its metadata as the label will leave it)
        is labelled into the cut."""
        policies = self._gateway.list_network_policies(namespace)
        listed = next((p for p in policies if netpol.name_of(p) == cut.network_policy), None)
        return self._ensure_deny_all(namespace, listed, cut, policies, labelling)

    def ensure_after_label(
        self,
        namespace: str,
        cut: QuarantineCut,
        policies: list[dict[str, Any]] | None,
        found: Mapping[str, Any],
    ) -> DenyAllCheck:
        """Ensure the cut's deny-all with the policies as listed after the label (None: not
        listed, then read on its own), the pod just labelled judged as ``found`` before the label
        where its selector holds it (_refuse_to_take_over)."""
        if policies is None:
            current = self._gateway.get_network_policy(namespace, cut.network_policy)
            return self._ensure_deny_all(namespace, current, cut, None, found=found)
        listed = next((p for p in policies if netpol.name_of(p) == cut.network_policy), None)
        return self._ensure_deny_all(namespace, listed, cut, policies, found=found)

    def _ensure_deny_all(
        self,
        namespace: str,
        current: Mapping[str, Any] | None,
        cut: QuarantineCut,
        policies: Sequence[Mapping[str, Any]] | None,
        labelling: Mapping[str, Any] | None = None,
        found: Mapping[str, Any] | None = None,
    ) -> DenyAllCheck:
        """Create the cut's deny-all policy if missing, repair it if altered, given the policy as
        just read (None: missing) and the namespace's ``policies`` as listed with it (None: not
        listed); changed or deleted since (a 409 or 404 to the repair), it is read again. A
        direction beyond the cut that it is found cutting too stays cut: the pods in it may rely on
        that (a cut made wider by hand), and a repair is never the thing that opens a quarantined
        pod's traffic. Nor is a podSelector that holds other pods than the cut's narrowed back
        (_left_wider): a superset of the label, or any that selects a listed pod outside the
        config's cuts (``labelling``: the pod about to be labelled into the cut, counted as the label
        leaves it; ``found``: the pod just labelled, as found before the label, for whether the
        selector locked it down before)."""
        name, label, value = cut.network_policy, self._settings.label, cut.label_value
        for attempt in range(CONFLICT_RETRIES):
            if attempt:
                current = self._gateway.get_network_policy(namespace, name)
            if current is None:
                beside = self._refuse_to_create(namespace, cut, policies, found)
                try:
                    made = netpol.deny_all_policy(namespace, name, label, value, cut.directions)
                    self._gateway.create_network_policy(namespace, made)
                    return DenyAllCheck(cut, created=True, spec=made["spec"], beside=beside)
                except KubeError as exc:
                    if exc.conflict:  # created concurrently (another replica, the chart): re-check it
                        continue
                    raise
            repair = netpol.plan_repair(current.get("spec"), label, value, cut.directions)
            if netpol.same_spec(current.get("spec"), repair.spec):
                # As read (after a conflict, maybe not as listed): the leak check judges it so.
                return DenyAllCheck(
                    cut,
                    kept_beyond=repair.kept_beyond,
                    kept_rules=repair.kept_rules,
                    spec=current.get("spec"),
                )
            selector = (current.get("spec") or {}).get("podSelector")
            if netpol.selects_beyond(selector, label, value):
                return self._left_wider(namespace, current, cut)
            pods, foreign = self._refuse_to_take_over(namespace, current, cut, labelling, found)
            ours = {v: self._settings.cut(self._settings.cut_of(v)).directions for v in self._our_values()}
            spec = current.get("spec") or {}
            lockdown = (
                Lockdown.of(spec, pods, label, value, ours, foreign)
                if isinstance(selector, Mapping)
                else None
            )
            if lockdown is not None:
                return self._left_wider(namespace, current, cut, lockdown)
            repaired = dict(current)
            repaired["spec"] = repair.spec
            try:
                self._gateway.replace_network_policy(namespace, name, repaired)
                return DenyAllCheck(
                    cut,
                    repaired=True,
                    kept_beyond=repair.kept_beyond,
                    kept_rules=repair.kept_rules,
                    spec=repair.spec,
                )
            except KubeError as exc:
                if not netpol.changed_since_read(exc):
                    raise
        # What the last try was: a create (the policy missing as read) or a repair.
        doing = "created" if current is None else "repaired"
        raise KubeError(409, f"NetworkPolicy {name} kept changing while being {doing}")

    def _left_wider(
        self,
        namespace: str,
        policy: Mapping[str, Any],
        cut: QuarantineCut,
        lockdown: Lockdown | None = None,
    ) -> DenyAllCheck:
        """A cut's deny-all whose podSelector was widened by hand to select more pods than the cut's
        label (emptied: a namespace lockdown), or changed to one that holds pods a narrowing would
        free (``lockdown``, by the pods listed: `app Exists`, say), or shaped like another config's
        (lockdown.foreign), is never narrowed back: that would give every other pod it holds its
        traffic back, or retarget the config in force. Left as it is while it still cuts the cut's
        directions for every pod of the cut; otherwise neither repair is safe (narrowing frees the
        others, dropping its rules cuts them all, and a pod of the cut it leaves out stays out):
        DenyAllInUse, for a person to decide. Helm renders it back on an upgrade: said."""
        name = netpol.name_of(policy)
        spec = policy.get("spec") or {}
        edit = f"kubectl -n {namespace} edit networkpolicy {name}"
        what = self._selects_what(policy, cut, lockdown)
        if lockdown is not None and lockdown.missing:
            raise DenyAllInUse(
                f"{what} but not {shown(lockdown.missing)} of the {cut.isolation.value} cut: it was left"
                " as it is (narrowing it to the label would free the other pods it selects); fix it by"
                f" hand ({edit})"
            )
        if netpol.cuts(spec, cut.directions):
            foreign = lockdown.foreign if lockdown is not None else None
            return DenyAllCheck(
                cut,
                wider=str(spec.get("podSelector")),
                helm=_helm_managed(policy),
                foreign=_selector_text(foreign) if foreign is not None else None,
                provenance=_provenance(policy),
                spec=spec,
            )
        raise DenyAllInUse(
            f"{what} and no longer cuts {'+'.join(cut.directions)}: it was left as it is (narrowing it to"
            f" the label would free the other pods it selects, and dropping its rules would cut them all);"
            f" fix it by hand ({edit})"
        )

    def _selects_what(self, policy: Mapping[str, Any], cut: QuarantineCut, lockdown: Lockdown | None) -> str:
        """What a deny-all left as it is selects, in words: another config's label (one of the two
        configs stale, or a lockdown), whom a narrowing would free, or merely more than the label."""
        name, label, value = netpol.name_of(policy), self._settings.label, cut.label_value
        selector = (policy.get("spec") or {}).get("podSelector")
        whom = lockdown.whom() if lockdown is not None else ""
        if lockdown is not None and lockdown.foreign is not None:
            holding = f"; it holds {whom}" if whom else ""
            return (
                f"NetworkPolicy {name} selects {_selector_text(lockdown.foreign)}, not this config's"
                f" {label}={value} ({cut.isolation.value} cut): another config's deny-all (one of the two"
                f" configs is stale{_provenance(policy)}) or a lockdown made by hand{holding}"
            )
        if whom:
            return (
                f"NetworkPolicy {name} selects {whom} by its podSelector {selector} (changed by hand,"
                " a lockdown?)"
            )
        return (
            f"NetworkPolicy {name} selects more pods than {label}={value} (its podSelector is {selector}:"
            " widened by hand?)"
        )

    def _refuse_to_create(
        self,
        namespace: str,
        cut: QuarantineCut,
        policies: Sequence[Mapping[str, Any]] | None,
        found: Mapping[str, Any] | None = None,
    ) -> str | None:
        """Raise DenyAllInUse rather than create the cut's missing deny-all where another of this
        config's cuts' deny-alls, as listed (``policies``; None: not listed, each is read),
        selects by a label shaped like another config's for that cut (other_config_labels): this
        config is not the one the namespace's quarantines are made under, or that one is stale (see
        _refuse_to_take_over); a policy of its own label here would fail the other's quarantines
        into this cut later. One that holds only pods nobody quarantined (``found``: the pod being
        quarantined, as before its label) is read as a lockdown: a config's deny-all holds the pods
        it quarantined, recorded so. Isolating the pod now outweighs the risk: the deny-all is made,
        and the returned note says beside what."""
        ours = self._our_values()
        notes = []
        for isolation in Isolation:
            sibling = self._settings.cut(isolation)
            if sibling == cut:
                continue
            listed = self._listed_or_read(namespace, sibling.network_policy, policies)
            if listed is None:
                continue
            selector = (listed.get("spec") or {}).get("podSelector")
            if not isinstance(selector, Mapping):
                continue
            other = other_config_labels(selector, self._settings.label, ours, isolation)
            if other is None:
                continue
            pods = with_pod(self._gateway.list_pods(namespace), found)
            held = HeldPods.of(selector, pods, self._settings.label, ours)
            both = (
                f"NetworkPolicy {sibling.network_policy} selects {_selector_text(other)}, not this config's"
                f" {self._settings.label}={sibling.label_value}: a lockdown made by hand, or another"
                f" config's deny-all (one of the two configs is stale{_provenance(listed)})"
            )
            if held.unquarantined and not held.elsewhere:
                notes.append(
                    f"beside it: {both}; it holds only {held.said()[0]}, so it was read as a lockdown (if"
                    f" it is the config in force's, its quarantines into the {cut.isolation.value} cut"
                    f" fail, saying so, until NetworkPolicy {cut.network_policy} is deleted)"
                )
                continue
            if held.unquarantined:
                edit = f"kubectl -n {namespace} edit networkpolicy {sibling.network_policy}"
                raise DenyAllInUse(
                    f"NetworkPolicy {cut.network_policy} was not created: {both}; it holds"
                    f" {' and '.join(held.said())}: a person must tell which ({edit})"
                )
            relying = sorted(
                str((p.get("metadata") or {}).get("name")) for p in pods if selected(selector, p)
            )
            raise DenyAllInUse(
                f"NetworkPolicy {cut.network_policy} was not created: "
                + self._another_configs(namespace, listed, other, sibling, relying)
            )
        return "; ".join(notes) or None

    def _our_values(self) -> set[str]:
        """This config's label values: every cut's, and the legacy both value."""
        return {*self._settings.cut_values(), self._settings.legacy_both_value}

    def _listed_or_read(
        self, namespace: str, name: str, policies: Sequence[Mapping[str, Any]] | None
    ) -> Mapping[str, Any] | None:
        """The policy ``name`` as listed in ``policies``, or read now where they were not listed."""
        if policies is None:
            return self._gateway.get_network_policy(namespace, name)
        return next((p for p in policies if netpol.name_of(p) == name), None)

    def _refuse_to_take_over(
        self,
        namespace: str,
        policy: Mapping[str, Any],
        cut: QuarantineCut,
        labelling: Mapping[str, Any] | None = None,
        found: Mapping[str, Any] | None = None,
    ) -> tuple[list[dict[str, Any]], dict[str, str] | None]:
        """Raise DenyAllInUse rather than repair the cut's deny-all ``policy`` (as read) when it is
        another config's: its podSelector selects by labels shaped like another config's deny-all
        for the cut (other_config_labels: a config whose quarantine.label or label_value differs, a
        stale copy on a workstation, or the one in force where this copy is the stale one), whether
        or not any pod is in it: which of the two is in force cannot be told from here, and a
        repair would make every quarantine of the other fail. A policy altered by hand in other
        ways (its selector emptied or narrowed, its types or rules changed) is repaired, unless
        pods quarantined under another label rely on it: the repair would release them (a pod in
        another of this config's cuts relies on that cut's deny-all). Where the policy holds pods
        nobody quarantined (a lockdown), neither is said here: Lockdown judges it and never narrows
        it; one shaped like another config's is returned as ``foreign`` (a lockdown or another
        config's: never repaired). The pod being quarantined counts as it was before the label
        (``found`` once labelled): held then, it was locked down. Returns the namespace's pods as
        listed for it, the one being labelled (``labelling``) as the label leaves it (none where the
        podSelector is no selector at all), and ``foreign``."""
        label, value = self._settings.label, cut.label_value
        selector = (policy.get("spec") or {}).get("podSelector")
        if not isinstance(selector, Mapping):
            return [], None
        ours = self._our_values()
        other = other_config_labels(selector, label, ours, cut.isolation)
        listed = self._gateway.list_pods(namespace)
        pods = with_pod(listed, labelling)
        held = HeldPods.of(selector, with_pod(listed, found), label, ours)
        if held.unquarantined:
            return pods, other
        if other is not None:
            relying = [str((p.get("metadata") or {}).get("name")) for p in pods if selected(selector, p)]
            raise DenyAllInUse(self._another_configs(namespace, policy, other, cut, sorted(relying)))
        stranded = []
        under: set[str] = set()  # the labels their records name (none: an earlier version's)
        for pod in pods:
            meta = pod.get("metadata") or {}
            labels = meta.get("labels") or {}
            # A pod in one of this config's cuts is held by that cut's deny-all, not by this one.
            if not quarantine_record_holds(meta) or labels.get(label) in ours:
                continue
            if selected(selector, pod):
                stranded.append(str(meta.get("name")))
                under.update(held_under(meta))
        if stranded:
            name = netpol.name_of(policy)
            rely = (
                "1 pod quarantined under another label relies"
                if len(stranded) == 1
                else f"{len(stranded)} pods quarantined under another label rely"
            )
            them = "it" if len(stranded) == 1 else "them"
            raise DenyAllInUse(
                f"NetworkPolicy {name} selects pods by {dict(selector)}, and {rely} on it"
                f" ({first_few(sorted(stranded), SHOWN_PODS)}):"
                f" repairing it to this config's {label}={value} ({cut.isolation.value} cut) would"
                f" release {them}; nothing was changed to the policy: release {them} with the config"
                f" {them} {'was' if len(stranded) == 1 else 'were'} quarantined under"
                + (f" (quarantine.label {', '.join(sorted(under))})" if under else "")
                + f", or put the policy's podSelector back to {label}={value} by hand"
            )
        return pods, None

    def _another_configs(
        self,
        namespace: str,
        policy: Mapping[str, Any],
        other: Mapping[str, str],
        cut: QuarantineCut,
        relying: list[str],
    ) -> str:
        """Why the deny-all ``policy``, selecting by ``other``, is not repaired: what it and this
        config select, who relies on it, and what to do whichever config is the one in force."""
        name, label, value = netpol.name_of(policy), self._settings.label, cut.label_value
        theirs = _selector_text(other)
        text = (
            f"NetworkPolicy {name} selects {theirs}, but this config's label for its"
            f" {cut.isolation.value} cut is {label}={value}: one of the two configs is stale"
            f"{_provenance(policy)}; the policy was left as it is."
        )
        fix = (
            f"set the policy's podSelector to {label}={value}"
            f" (kubectl -n {namespace} edit networkpolicy {name})"
        )
        if not relying:
            text += f" No pod is labelled {theirs}. If this config is the one in force, {fix}"
        else:
            shown = relying[:SHOWN_PODS]
            more = len(relying) - len(shown)
            rely = "1 pod relies" if len(relying) == 1 else f"{len(relying)} pods rely"
            text += (
                f" {rely} on it. If this config is the one in force, release"
                f" {'it' if len(relying) == 1 else 'them'} with the config whose label is {theirs}:"
                f" serving-guard release --namespace {namespace} {' '.join(map(shlex.quote, shown))}"
                f" --reason {shlex.quote(REASON_PLACEHOLDERS[1])} --by {shlex.quote(BY_PLACEHOLDER)}"
                " --config <that config>"
                + (
                    f" (and {more} more: kubectl -n {namespace} get pods -l {shlex.quote(theirs)})"
                    if more
                    else ""
                )
                + f"; then {fix}"
            )
        return (
            text + f". If the config whose label is {theirs} is the one in force, act with it, not this one."
        )
