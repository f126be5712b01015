"""The decision core: (Alert, pod, verification, guardrail state, config) -> Decision. No I/O.

Policies are tried in file order and the first match decides; an alert that no policy
matches gets ``default_actions`` (notify only). Guardrails can only take actions away:
an unverified alert, a protected or not-opted-in namespace, or an open circuit breaker
turn a quarantine (or a block) into a loud "withheld" note, never into a silent drop.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import NamedTuple

from responder.actions.outcome import BLOCK_BREAKER_OPEN, BLOCK_SHARE_USED, Lapse
from responder.actions.pod_records import CLOCK_SKEW_NS, release_record, released_after_alert
from responder.alert import Alert, Priority
from responder.cluster.context import PodContext
from responder.cluster.verify import UNREACHED, Verification, VerificationStatus
from responder.config import ActionName, Config, Guardrails, Isolation, Policy, widest
from responder.sender import is_drill

DEFAULT_POLICY = "default"
# The actions that change the pod or its traffic: guardrails (verification, protected and
# not-opted-in namespaces) and dry-run apply to them.
ISOLATING = (ActionName.QUARANTINE, ActionName.ANNOTATE, ActionName.BLOCK_DESTINATION)
# The actions that cut a pod's traffic (annotate only records).
CUTTING = (ActionName.QUARANTINE, ActionName.BLOCK_DESTINATION)
# What put a decision in dry-run (Decision.dry_run_by): the global guardrail, the matched policy's
# own, or the alert being a drill (sent with the drill token; guardrails.enforce_drills off).
DRY_RUN_BY_GUARDRAILS = "guardrails"
DRY_RUN_BY_POLICY = "policy"
DRY_RUN_BY_DRILL = "drill"


@dataclass(frozen=True, slots=True)
class GuardrailState:
    """Quarantines, and destinations newly blocked, in their breakers' current windows."""

    recent_quarantines: int = 0
    recent_blocks: int = 0
    # Of those, the alert's pod's (its share: guardrails.max_blocks.per_pod).
    recent_blocks_of_pod: int = 0
    # The responder's clock when deciding (None: not known, nothing is dated against it).
    now_ns: int | None = None


@dataclass(frozen=True, slots=True)
class Reopened:
    """An earlier incident of the same rule on the same pod whose quarantine or destination block was
    found no longer holding (``lapse``, by the recheck at ``checked_ns``) while its alerts still came:
    the next alert opened a new incident instead of folding into it (Decision.reopens)."""

    incident_id: str
    lapse: Lapse
    checked_ns: int


@dataclass(frozen=True, slots=True)
class Decision:
    policy: str
    # The actions to perform now (after guardrails).
    actions: tuple[ActionName, ...]
    # The actions the matched policy asked for.
    requested: tuple[ActionName, ...]
    # Its actions on the pod are predicted and reported, not done (Decision.dry_run), because of
    # DRY_RUN_BY_GUARDRAILS or DRY_RUN_BY_POLICY; guardrails.dry_run wins when both are on. "": acted.
    dry_run_by: str = ""
    # Why requested actions were withheld, in words for Slack and the audit trail.
    withheld: tuple[str, ...] = ()
    slack_channel: str | None = None
    # Whether on-call is told (Slack): priority routing, or always for security problems.
    notify: bool = True
    # The alert failed verification: on-call gets a distinct "unverified alert" message.
    unverified: bool = False
    breaker_open: bool = False
    # The block breaker (guardrails.max_blocks) held back its block_destination.
    block_breaker_open: bool = False
    # Isolation was withheld because the namespace's labels could not be read, so whether it opted
    # in is unknown: decided again like a failed lookup, never taken as "not opted in".
    opt_in_unknown: bool = False
    # Isolation was withheld because the namespace lacks this opt-in label (=true): no by-hand
    # command helps either (serving-guard quarantine refuses such a namespace too). "": not so.
    opt_in_missing: str = ""
    # The cut its quarantine makes (the policy's isolate, else quarantine.isolate); "" when it
    # requests no quarantine, or in records from before cuts per policy (quarantine.isolate).
    isolate: str = ""
    # Why its block_destination became a quarantine of the pod's egress (the pod past its share of
    # the block breaker), in words; "" when it did not.
    escalated: str = ""
    # The incident was opened because what an earlier one put on the pod no longer held (set by the
    # pipeline, not by decide): Slack and the audit trail say which, and why.
    reopens: Reopened | None = None

    @property
    def dry_run(self) -> bool:
        return bool(self.dry_run_by)

    @property
    def isolates(self) -> bool:
        return ActionName.QUARANTINE in self.actions

    @property
    def changes_pod(self) -> bool:
        """Some action of the decision would change the pod (quarantine or annotate)."""
        return any(a in ISOLATING for a in self.actions)

    def summary(self) -> str:
        acted = ", ".join(a.value for a in self.actions) or "nothing"
        prefix = "dry-run " if self.dry_run and self.changes_pod else ""
        text = f"policy {self.policy}: {prefix}{acted}"
        if self.withheld:
            text += " (withheld: " + "; ".join(self.withheld) + ")"
        return text


def select_policy(alert: Alert, pod: PodContext | None, config: Config) -> Policy | None:
    for policy in config.policies:
        if policy_matches(policy, alert, pod):
            return policy
    return None


def policy_matches(policy: Policy, alert: Alert, pod: PodContext | None) -> bool:
    return mismatch(policy, alert, pod) is None


def mismatch(policy: Policy, alert: Alert, pod: PodContext | None) -> str | None:
    """Why ``policy`` does not match the alert, in words (the first condition that fails), or None
    when it matches. `config explain` shows it; policy_matches is it."""
    not_of_alert = _alert_mismatch(policy, alert)
    if not_of_alert is not None:
        return not_of_alert
    match = policy.match
    if match.pod_labels:
        wanted = ", ".join(f"{key}={value}" for key, value in match.pod_labels.items())
        if pod is None:
            return f"it needs pod labels {wanted}, known only from the live pod"
        if any(pod.labels.get(key) != value for key, value in match.pod_labels.items()):
            return f"the pod does not carry {wanted}"
    return None


def _alert_mismatch(policy: Policy, alert: Alert) -> str | None:
    """Why ``policy`` does not match the alert by what the alert itself says (all but pod labels)."""
    match = policy.match
    if not match.matches_rule(alert.rule):
        return f"rule {alert.rule!r} is not one of {', '.join(map(repr, match.rules))}"
    if match.tags and not set(match.tags) & set(alert.tags):
        return f"the alert has none of the tags {', '.join(match.tags)}"
    if match.min_priority is not None and not alert.priority.at_least(match.min_priority):
        return f"priority {alert.priority.label} is below {match.min_priority.label}"
    if match.sources and alert.source not in match.sources:
        return f"source {alert.source!r} is not one of {', '.join(match.sources)}"
    if match.namespaces:
        namespace = alert.namespace
        if namespace is None or not any(fnmatch.fnmatchcase(namespace, ns) for ns in match.namespaces):
            return f"namespace {namespace or '(none)'} is not one of {', '.join(match.namespaces)}"
    return None


def isolating_policy_unknown(
    alert: Alert, pod: PodContext | None, verification: Verification, config: Config
) -> Policy | None:
    """With the pod unread (its API read failed, or it is not found yet): a policy that would isolate,
    ahead of the one selected, that matches all the alert says and needs only pod labels to apply.
    The pod may carry them: it must not fall to a later policy (or the default's notify) unnoticed,
    but be withheld in words and decided again once the pod can be read."""
    if pod is not None or verification.status not in UNREACHED:
        return None
    for policy in config.policies:
        if policy_matches(policy, alert, pod):
            return None  # selected: policies after it never apply
        if (
            policy.match.pod_labels
            and _alert_mismatch(policy, alert) is None
            and any(a in ISOLATING for a in policy.actions)
        ):
            return policy
    return None


def _latest_credible(now_ns: int | None) -> int | None:
    """The latest time a record written on the pod can bear (its writer's clock ahead of ours)."""
    return None if now_ns is None else now_ns + CLOCK_SKEW_NS


def _with_isolation_of(policy: Policy | None, requested: tuple[ActionName, ...]) -> tuple[ActionName, ...]:
    if policy is None:
        return requested
    return tuple(dict.fromkeys((*requested, *(a for a in policy.actions if a in ISOLATING))))


def _labels_unknown(policy: Policy) -> str:
    wanted = ", ".join(f"{key}={value}" for key, value in policy.match.pod_labels.items())
    return f"policy {policy.name} applies if the pod carries {wanted}, unknown until it is read"


def _slack_routing(policy: Policy | None, alert: Alert, config: Config) -> tuple[str | None, bool]:
    channel = config.slack.default_channel
    minimum: Priority = config.slack.min_priority
    if policy is not None:
        channel = policy.slack.channel or channel
        if policy.slack.min_priority is not None:
            minimum = policy.slack.min_priority
    return channel, alert.priority.at_least(minimum)


class _NamespaceHold(NamedTuple):
    reason: str
    # The namespace's labels could not be read: whether it opted in is not known.
    unknown: bool = False
    # The opt-in label the namespace lacks (guardrails.enforce_namespace_label); "" for another hold.
    missing_label: str = ""


def _namespace_guardrail(
    namespace: str | None, pod: PodContext | None, guardrails: Guardrails
) -> _NamespaceHold | None:
    """Why the namespace guardrails withhold isolation (protected, not opted in, or its opt-in
    unknown because its labels could not be read); None: they allow it."""
    if namespace is None:
        return None
    if namespace in guardrails.protected_namespaces:
        return _NamespaceHold(f"namespace {namespace} is protected")
    label = guardrails.enforce_namespace_label
    if not label or pod is None:
        return None
    if pod.namespace_labels_error is not None:
        return _NamespaceHold(
            f"whether namespace {namespace} opted in ({label}=true) is unknown:"
            f" {pod.namespace_labels_error}; decided again on the next alert",
            unknown=True,
        )
    if pod.namespace_labels.get(label) != "true":
        return _NamespaceHold(
            f"namespace {namespace} is not opted in (label {label}=true is missing)", missing_label=label
        )
    return None


def decide(
    alert: Alert,
    pod: PodContext | None,
    verification: Verification,
    state: GuardrailState,
    config: Config,
) -> Decision:
    policy = select_policy(alert, pod, config)
    requested = policy.actions if policy is not None else config.default_actions
    name = policy.name if policy is not None else DEFAULT_POLICY
    channel, notify = _slack_routing(policy, alert, config)
    guardrails = config.guardrails
    dry_run_by = _dry_run_by(alert, policy, guardrails)

    undecided = isolating_policy_unknown(alert, pod, verification, config)
    # Its isolation asked for, so that it is withheld below for the pod's read and decided again.
    requested = _with_isolation_of(undecided, requested)
    withheld: list[str] = [_labels_unknown(undecided)] if undecided is not None else []
    actions = list(requested)
    wants_isolation = any(a in ISOLATING for a in actions)

    def withhold(reason: str, only: tuple[ActionName, ...] = ISOLATING) -> None:
        nonlocal actions
        if any(a in only for a in actions):
            withheld.append(reason)
        actions = [a for a in actions if a not in only]

    unverified = False
    if verification.status is VerificationStatus.UNVERIFIED:
        unverified = True
        withhold(f"alert not verified against the live pod: {verification.reason}")
    elif not verification.verified:
        withhold(_unverifiable_reason(verification))

    namespace_hold = _namespace_guardrail(alert.namespace, pod, guardrails) if wants_isolation else None
    if namespace_hold is not None:
        withhold(namespace_hold.reason)
    opt_in_unknown = namespace_hold is not None and namespace_hold.unknown

    # A person released the pod after this alert's event (an alert taken up late: deferred while
    # the pipeline was full, a slow API, a replayed file): their judgement is newer than the alert.
    released = (
        release_record(
            pod,
            config.quarantine.label,
            since_ns=alert.time_ns + CLOCK_SKEW_NS,
            until_ns=_latest_credible(state.now_ns),
        )
        if wants_isolation and pod is not None
        else None
    )
    if released is not None:
        withhold(released_after_alert(released, alert))

    # Past its share, the pod's egress is quarantined instead (the quarantine breaker below applies).
    actions, escalated, past_share = _share_of_blocks(actions, state, pod, config, dry_run_by)
    if past_share:
        withhold(
            f"{past_share}; block_destination.escalate_to_quarantine is off", (ActionName.BLOCK_DESTINATION,)
        )

    # The breaker counts pods newly isolated: re-asserting an existing quarantine costs no slot.
    breaker_reason = _quarantine_breaker_reason(actions, state, pod, config, dry_run_by)
    breaker_open = bool(breaker_reason)
    if breaker_open:
        # An escalation held back says what it stood for: the block the pod was past its share for.
        held = (
            f"{escalated}; its egress is not quarantined instead: {breaker_reason}"
            if escalated
            else breaker_reason
        )
        withhold(held, only=(ActionName.QUARANTINE,))
    # Slots are taken per address newly blocked; one already blocked gives its slot back (pipeline).
    block_breaker_open = (
        ActionName.BLOCK_DESTINATION in actions
        and not dry_run_by
        and state.recent_blocks >= guardrails.max_blocks.count
    )
    if block_breaker_open:
        withhold(
            block_breaker_reason(state.recent_blocks, config)
            + "; no destination is blocked until the window passes"
            # Whether this address is among them is not known without reading its policy.
            + ("; the pod's blocks in force stay" if is_blocked(pod, config) else ""),
            only=(ActionName.BLOCK_DESTINATION,),
        )

    if unverified or withheld or (not dry_run_by and any(a in CUTTING for a in actions)):
        # A withheld action or a possible forgery is always worth a human's look, and so is a pod cut
        # off (whatever the alert's priority or the policy's actions say): whether it held, a lapse,
        # a way out left open need a person, and they are told in the incident's messages.
        notify = True
        if ActionName.NOTIFY not in actions:
            actions.insert(0, ActionName.NOTIFY)
    if ActionName.NOTIFY not in actions:
        notify = False

    quarantining = (
        undecided if undecided is not None and ActionName.QUARANTINE in undecided.actions else policy
    )
    cut = config.policy_isolation(quarantining).value if ActionName.QUARANTINE in requested else ""
    if escalated:
        cut = widest(Isolation(cut) if cut else None, Isolation.EGRESS).value
    return Decision(
        policy=name,
        actions=tuple(actions),
        requested=tuple(requested),
        dry_run_by=dry_run_by,
        withheld=tuple(withheld),
        slack_channel=channel,
        notify=notify,
        unverified=unverified,
        breaker_open=breaker_open,
        block_breaker_open=block_breaker_open,
        opt_in_unknown=opt_in_unknown,
        opt_in_missing=namespace_hold.missing_label if namespace_hold is not None else "",
        isolate=cut,
        escalated=escalated,
    )


def _share_of_blocks(
    actions: list[ActionName], state: GuardrailState, pod: PodContext | None, config: Config, dry_run_by: str
) -> tuple[list[ActionName], str, str]:
    """The actions once the block among them is checked against the pod's share of the block
    breaker (pod_past_block_share), why it became a quarantine (escalated) and why it is to be
    withheld instead (escalation off); the words are "" when neither. A dry-run takes no slots,
    so it is never past its share."""
    if ActionName.BLOCK_DESTINATION not in actions or dry_run_by:
        return actions, "", ""
    past_share = pod_past_block_share(state.recent_blocks_of_pod, pod, config)
    if not past_share:
        return actions, "", ""
    if not config.block_destination.escalate_to_quarantine:
        return actions, "", past_share
    escalated: list[ActionName] = [a for a in actions if a is not ActionName.BLOCK_DESTINATION]
    return escalated + ([] if ActionName.QUARANTINE in escalated else [ActionName.QUARANTINE]), past_share, ""


def _quarantine_breaker_reason(
    actions: list[ActionName], state: GuardrailState, pod: PodContext | None, config: Config, dry_run_by: str
) -> str:
    """Why the quarantine breaker (guardrails.max_quarantines) holds back the quarantine among
    ``actions``, or "" (a pod already quarantined takes no slot)."""
    if (
        ActionName.QUARANTINE not in actions
        or dry_run_by
        or is_quarantined(pod, config)
        or state.recent_quarantines < config.guardrails.max_quarantines.count
    ):
        return ""
    return quarantine_breaker_reason(state.recent_quarantines, config)


def quarantine_breaker_reason(recent_quarantines: int, config: Config) -> str:
    """Why the quarantine circuit breaker holds a quarantine back."""
    limit = config.guardrails.max_quarantines
    quarantines = "1 quarantine" if recent_quarantines == 1 else f"{recent_quarantines} quarantines"
    return (
        f"circuit breaker open: {quarantines} in the last "
        f"{limit.window_seconds:g}s (limit {limit.count}); no pod is quarantined until the window passes"
    )


def block_breaker_reason(recent_blocks: int, config: Config) -> str:
    """Why the block circuit breaker holds a block back (BLOCK_BREAKER_OPEN begins it, so that the
    outcome is known for one, see ActionOutcome.held_by_block_breaker)."""
    limit = config.guardrails.max_blocks
    destinations = "1 destination" if recent_blocks == 1 else f"{recent_blocks} destinations"
    window = f"{limit.window_seconds:g}s"
    return f"{BLOCK_BREAKER_OPEN}: {destinations} blocked in the last {window} (limit {limit.count})"


def pod_past_block_share(recent_of_pod: int, pod: PodContext | None, config: Config) -> str:
    """Why a block on ``pod``, which took ``recent_of_pod`` of the block breaker's window, is one
    too many (its share: guardrails.max_blocks.per_pod), in words; "" when it is not. A pod whose
    egress a quarantine already cuts is not past it: a block there costs no slot."""
    limit = config.guardrails.max_blocks
    if recent_of_pod < limit.per_pod or egress_cut(pod, config):
        return ""
    return (
        f"{BLOCK_SHARE_USED}: {recent_of_pod} destinations blocked on this pod in the last"
        f" {limit.window_seconds:g}s (guardrails.max_blocks.per_pod {limit.per_pod}): it reaches too"
        " many places to block one by one"
    )


def egress_cut(pod: PodContext | None, config: Config) -> bool:
    """The pod is in a quarantine whose cut includes its egress."""
    if pod is None:
        return False
    cut = config.quarantine.cut_of(pod.labels.get(config.quarantine.label))
    return cut is not None and "egress" in cut.directions


def is_blocked(pod: PodContext | None, config: Config) -> bool:
    """The pod carries a destination block's label (block_destination)."""
    return pod is not None and config.block_destination.label in pod.labels


def _dry_run_by(alert: Alert, policy: Policy | None, guardrails: Guardrails) -> str:
    """What puts the decision on ``alert`` in dry-run (Decision.dry_run_by), or "" for none."""
    if guardrails.dry_run:
        return DRY_RUN_BY_GUARDRAILS
    if is_drill(alert.sender) and not guardrails.enforce_drills:
        return DRY_RUN_BY_DRILL
    if policy is not None and policy.dry_run:
        return DRY_RUN_BY_POLICY
    return ""


def dry_run_lifted(decision: Decision, config: Config, *, drill: bool = False) -> bool:
    """The decision was a dry-run that would have changed the pod, and ``config`` no longer makes it
    one: guardrails.dry_run and the dry_run of the policy it named are both off now (or that policy
    is gone), and, for a drill's (``drill``), guardrails.enforce_drills is on now. (A notify-only
    decision made under dry-run is the same without it: nothing to redo.)"""
    if not decision.dry_run or not decision.changes_pod or config.guardrails.dry_run:
        return False
    if drill and not config.guardrails.enforce_drills:
        return False
    return not any(policy.name == decision.policy and policy.dry_run for policy in config.policies)


def is_quarantined(pod: PodContext | None, config: Config) -> bool:
    """The pod already carries the quarantine label, in any cut (as last read from the API)."""
    return pod is not None and config.quarantine.cut_of(pod.labels.get(config.quarantine.label)) is not None


def _unverifiable_reason(verification: Verification) -> str:
    if verification.status is VerificationStatus.POD_NOT_FOUND:
        return "pod not found (already gone?)"
    if verification.status is VerificationStatus.NO_POD_IDENTITY:
        # The likely causes, output_fields off in Falco (json_include_output_fields_property) too.
        return (
            "alert names no pod (no k8s.ns.name/k8s.pod.name: a host event, or Falco sends no output_fields)"
        )
    if verification.status is VerificationStatus.NOT_LISTED_YET:
        # Without the alert's id (the verification says it): the same words for every id on the
        # pod, so that Slack tells the channel once, not once for each made-up id.
        return (
            "not verified yet: a container of the pod is starting or restarting and its id is not listed yet"
        )
    return f"pod lookup failed: {verification.reason}"
