"""Incidents: one per (rule, pod, container, node) within the dedupe window, and the report
that Slack renders and the audit trail shows."""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from responder.actions.outcome import (
    ALREADY_IN_CUT,
    BLOCK_DESTINATION,
    BLOCKED_ADDRESS,
    HELD_ESCALATION,
    RECHECK,
    WOULD_BLOCK,
    ActionOutcome,
    OutcomeStatus,
)
from responder.alert import Alert
from responder.cluster.context import PodContext, container_key
from responder.cluster.verify import UNREACHED, Verification, VerificationStatus
from responder.config import ActionName
from responder.policy import Decision
from responder.sender import is_drill

# What the by-hand commands Slack gives leave for the person to fill in: who acts (the commands
# refuse it unfilled: it would be recorded as who) and why.
BY_PLACEHOLDER = "<you>"
# What Slack's commands ask to be filled in as --reason.
REASON_PLACEHOLDERS = ("<why>", "<why it is safe>")
_WHY_OPTION = f" --reason {shlex.quote(REASON_PLACEHOLDERS[0])}"
_WHY_SAFE_OPTION = f" --reason {shlex.quote(REASON_PLACEHOLDERS[1])}"
_BY_OPTION = f" --by {shlex.quote(BY_PLACEHOLDER)}"
# In a withheld outcome's extra: the last automatic try of the withheld isolation came out withheld
# too, after this many tries; only a repeat of the alert (or a person) tries it again.
TRIES_OVER = "tries_over"
# What withholds an isolation for now, of a pod that is there: the API will answer again (a pod
# not found is not tried again, it may be made up).
_PASSING_STATUSES = UNREACHED - {VerificationStatus.POD_NOT_FOUND}


@dataclass(frozen=True, slots=True)
class CommandForm:
    """How the by-hand commands Slack gives are written: with the responder's config
    (``config_path``: its labels and journal, so the command is recorded under the incident), after
    ``prefix``, which runs them in the responder's pod from a workstation (slack.command_prefix,
    e.g. `kubectl -n falco exec deploy/serving-guard --`)."""

    config_path: str | None = None
    prefix: str = ""

    def written(self, command: str) -> str:
        head = f"{self.prefix} " if self.prefix else ""
        tail = f" --config {shlex.quote(self.config_path)}" if self.config_path else ""
        return head + command + tail


# Commands as they are, with no config and no prefix.
PLAIN_COMMANDS = CommandForm()


class IncidentKey(NamedTuple):
    """Alerts fold into one incident only when they agree on everything the decision depends on.

    Container id and node are in the key so a forged alert naming a real pod (another container
    id) cannot fold a genuine alert into its own unverified incident; priority, source and tags
    are in it so a forged alert that matches no policy (say, the same rule at Debug) cannot fold
    the genuine alert into an incident that decided to do nothing. Drill is in it so a drill,
    decided in dry-run, never folds Falco's alert of a real attack on the same pod, nor the reverse.

    A named tuple: hashed and compared in C, once per alert of a storm."""

    rule: str
    namespace: str
    pod: str
    container_id: str
    hostname: str
    priority: int = 0
    source: str = ""
    tags: tuple[str, ...] = ()
    drill: bool = False

    @classmethod
    def of(cls, alert: Alert) -> IncidentKey:
        return cls(
            alert.rule,
            alert.namespace or "",
            alert.pod or "",
            container_key(alert.container_id or ""),
            alert.hostname or "",
            int(alert.priority),
            alert.source,
            alert.tags,
            is_drill(alert.sender),
        )

    @property
    def pod_ref(self) -> str:
        return f"{self.namespace}/{self.pod}" if self.namespace or self.pod else "(no pod)"

    def digest(self) -> str:
        parts = (
            self.rule,
            self.namespace,
            self.pod,
            self.container_id,
            self.hostname,
            str(self.priority),
            self.source,
            ",".join(self.tags),
            # Only a drill's: Falco's alerts keep the ids earlier versions gave them.
            *(("drill",) if self.drill else ()),
        )
        joined = "\x1f".join(parts)
        return hashlib.blake2b(joined.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


@dataclass(frozen=True, slots=True)
class WorkloadGroup:
    """Incidents of one rule on pods of one workload (the top of their owner chain) in a namespace:
    what slack.thread_by_workload gathers into one thread."""

    namespace: str
    rule: str
    kind: str
    name: str

    @property
    def workload(self) -> str:
        return f"{self.kind}/{self.name}"


# Outcomes a person must look at: an action LEAKY, failed or held back, or found no longer holding.
NEEDS_EYES_STATUSES = frozenset(
    {OutcomeStatus.LEAKY, OutcomeStatus.FAILED, OutcomeStatus.WITHHELD, OutcomeStatus.LAPSED}
)


@dataclass(frozen=True, slots=True)
class AlertingAfterRelease:
    """The first repeat of an incident after a person released its pod: the release may have been
    a mistake, so its repeat counter is posted anew, shown in the channel, with what it ran (the
    later ones are counted in that reply, as any repeat)."""

    released_at_ns: int  # the release it follows (ReleaseRecord.at_ns): told once per release
    released_by: str
    alert: Alert
    seen_ns: int  # when it came
    told: bool = False  # its reply is posted: the later repeats update it


@dataclass(frozen=True, slots=True)
class IncidentReport:
    """Everything on-call needs about one incident, as of now."""

    incident_id: str
    key: IncidentKey
    alert: Alert  # the alert that opened the incident
    count: int
    first_seen_ns: int
    last_seen_ns: int
    pod: PodContext | None
    verification: Verification
    decision: Decision
    outcomes: tuple[ActionOutcome, ...] = ()
    # The incident the first alert after this one's lapse opened (it reopens this one), once known.
    reopened_by: str | None = None
    # The first repeat after a release of the pod, once one came (not kept across a restart).
    after_release: AlertingAfterRelease | None = None

    @property
    def labelled(self) -> bool:
        """The pod carries the quarantine label: a quarantine put it on (isolated, LEAKY, or failed
        after labelling: ActionOutcome.labelled) and no release followed it (a quarantine by hand
        after a release labels it again), nor a recheck that found the label gone."""
        return _still_on(self.outcomes, lambda outcome: outcome.labelled, "quarantine")

    @property
    def needs_eyes(self) -> bool:
        """A person must look: an action LEAKY, failed or held back, what it put on the pod found no
        longer holding, or a possible forgery (shown in the channel, not only in a workload's
        thread; logged as a warning)."""
        decision = self.decision
        return (
            decision.unverified
            or bool(decision.withheld)
            or any(o.status in NEEDS_EYES_STATUSES for o in self.outcomes)
        )

    @property
    def alerting_after_release(self) -> AlertingAfterRelease | None:
        """The first repeat after a release of the pod, while the pod stays released (a quarantine
        or block since, by hand, ends it: the repeat reply then counts as any)."""
        if self.after_release is None or self.labelled or self.blocked:
            return None
        return self.after_release

    @property
    def workload_group(self) -> WorkloadGroup | None:
        """The group of this incident, when its pod has a workload (a bare pod has none)."""
        workload = self.pod.workload if self.pod is not None else None
        if workload is None or not self.key.namespace:
            return None
        return WorkloadGroup(self.key.namespace, self.key.rule, workload.kind, workload.name)

    @property
    def blocked(self) -> bool:
        """The pod carries a destination block's label (block_destination put it on) and no release
        followed it, nor a recheck that found the label gone."""
        return _still_on(self.outcomes, lambda outcome: outcome.block_labelled, BLOCK_DESTINATION)

    def release_command(self, form: CommandForm = PLAIN_COMMANDS) -> str | None:
        """The exact command that undoes the quarantine or the destination block, when there is one
        to undo."""
        if not (self.labelled or self.blocked):
            return None
        return form.written(
            "serving-guard release --namespace "
            f"{shlex.quote(self.key.namespace)} {shlex.quote(self.key.pod)}"
            f" --incident {shlex.quote(self.incident_id)}{_WHY_SAFE_OPTION}{_BY_OPTION}"
        )

    def block_command(self, form: CommandForm = PLAIN_COMMANDS) -> str | None:
        """The exact command to block the destination by hand, when the responder only predicted
        its block (dry-run) or the block circuit breaker held it back, the alert was verified, and
        no block of that address followed."""
        if self.decision.unverified:
            return None
        # Addresses held back and not blocked since (a dict: the latest held last).
        held: dict[str, None] = {}
        for outcome in self.outcomes:
            address = outcome.extra.get(BLOCKED_ADDRESS)
            if outcome.action != BLOCK_DESTINATION or address is None:
                continue
            if _held_back(outcome):
                held.pop(str(address), None)
                held[str(address)] = None
            elif outcome.block_labelled or outcome.status is OutcomeStatus.BLOCKED:
                held.pop(str(address), None)
        if not held:
            return None
        latest = next(reversed(held))
        return form.written(
            "serving-guard block --namespace "
            f"{shlex.quote(self.key.namespace)} {shlex.quote(self.key.pod)}"
            f" --address {shlex.quote(latest)}"
            f" --incident {shlex.quote(self.incident_id)}{_WHY_OPTION}{_BY_OPTION}"
        )

    def _quarantine_failed(self) -> bool:
        """The latest quarantine of the pod failed (labelled or not), and no release followed it:
        the pod is not isolated, and a person may want to quarantine it now."""
        for outcome in reversed(self.outcomes):
            if outcome.status is OutcomeStatus.RELEASED:
                return False
            if outcome.action == "quarantine":
                return outcome.status is OutcomeStatus.FAILED
        return False

    @property
    def withheld_for_now(self) -> bool:
        """The quarantine the decision asked for is withheld for a passing reason (the pod or its
        namespace could not be read, the container was not listed yet) and not taken since: the
        responder tries it again by itself, and a person may quarantine the pod by hand meanwhile."""
        decision = self.decision
        if decision.dry_run or decision.unverified or not decision.withheld:
            return False
        asked = ActionName.QUARANTINE in decision.requested and ActionName.QUARANTINE not in decision.actions
        passing = self.verification.status in _PASSING_STATUSES or decision.opt_in_unknown
        return asked and passing and not self.labelled

    @property
    def tries_over(self) -> int | None:
        """How many automatic tries the withheld (or failed) isolation had, once the last of them
        came out withheld or failed too (the latest quarantine outcome says so); None: tries may
        remain (a repeat decided afresh since starts them again), or it is no longer withheld."""
        latest = next((o for o in reversed(self.outcomes) if o.action == ActionName.QUARANTINE.value), None)
        tries = latest.extra.get(TRIES_OVER) if latest is not None else None
        if latest is None or not isinstance(tries, int) or isinstance(tries, bool):
            return None
        return tries if latest.status is OutcomeStatus.FAILED or self.withheld_for_now else None

    def _escalation_held(self) -> bool:
        """The latest quarantine outcome is an escalation of a block that the quarantine breaker
        held back (a repeat's: the decision itself was made with the breaker closed)."""
        for outcome in reversed(self.outcomes):
            if outcome.action == "quarantine":
                return outcome.status is OutcomeStatus.WITHHELD and bool(outcome.extra.get(HELD_ESCALATION))
        return False

    def quarantine_command(self, form: CommandForm = PLAIN_COMMANDS) -> str | None:
        """The exact command to quarantine the pod by hand, when the responder only predicted its
        quarantine (dry-run), the circuit breaker held it back, it failed, or it is withheld for a
        passing reason (the command reads the live pod itself), and the alert was verified."""
        decision = self.decision
        predicted = any(o.action == "quarantine" and o.status is OutcomeStatus.DRY_RUN for o in self.outcomes)
        failed = self._quarantine_failed()
        held_escalation = self._escalation_held()
        offered = predicted or decision.breaker_open or failed or held_escalation or self.withheld_for_now
        if decision.unverified or not offered:
            return None
        if self.labelled and not failed:
            return None
        # The policy's cut, so that the command does what was predicted (an escalation cuts egress).
        return self._quarantine_command(decision.isolate or ("egress" if held_escalation else ""), form)

    @property
    def predicted_in_cut(self) -> bool:
        """The incident's latest quarantine is a prediction (dry-run) that found the pod in its cut
        already, its deny-all as built (another incident's quarantine, or a person's): a quarantine
        by hand would only record this incident's, changing nothing on the pod."""
        latest = next((o for o in reversed(self.outcomes) if o.action == "quarantine"), None)
        return (
            latest is not None
            and latest.status is OutcomeStatus.DRY_RUN
            and bool(latest.extra.get(ALREADY_IN_CUT))
        )

    def requarantine_command(self, form: CommandForm = PLAIN_COMMANDS) -> str | None:
        """The exact command to quarantine the pod by hand again (it was released, and still
        alerts), when the alert was verified and the pod is not labelled."""
        if self.decision.unverified or self.labelled:
            return None
        return self._quarantine_command(self.decision.isolate, form)

    def quarantine_again_command(self, form: CommandForm = PLAIN_COMMANDS) -> str | None:
        """The exact command to quarantine the pod by hand again after what the incident put on it
        lapsed (it labels the pod, makes its deny-all again, and says LEAKY through any policy that
        lets its traffic through), when the alert was verified."""
        if self.decision.unverified:
            return None
        return self._quarantine_command(self.decision.isolate, form)

    def _quarantine_command(self, isolate: str, form: CommandForm) -> str:
        cut = f" --isolate {shlex.quote(isolate)}" if isolate else ""
        return form.written(
            "serving-guard quarantine --namespace "
            f"{shlex.quote(self.key.namespace)} {shlex.quote(self.key.pod)}"
            f" --incident {shlex.quote(self.incident_id)}{cut}{_WHY_OPTION}{_BY_OPTION}"
        )


def _still_on(
    outcomes: tuple[ActionOutcome, ...], put_on: Callable[[ActionOutcome], bool], lapsing: str
) -> bool:
    """The latest of ``outcomes`` that ``put_on`` the pod, or that took its label off (a release, or
    the recheck's lapse of the action ``lapsing`` with its label gone, or the pod gone), is the former."""
    for outcome in reversed(outcomes):
        if outcome.status is OutcomeStatus.RELEASED:
            return False
        if outcome.action == RECHECK and outcome.status is OutcomeStatus.POD_GONE:
            return False  # the pod it was on is gone
        lapse = outcome.lapse
        if lapse is not None and lapse.label_gone and lapse.action == lapsing:
            return False
        if put_on(outcome):
            return True
    return False


def _held_back(outcome: ActionOutcome) -> bool:
    """A destination block only predicted (dry-run, a policy to make) or held back by the block
    circuit breaker: one a person may take by hand."""
    if outcome.status is OutcomeStatus.DRY_RUN:
        return outcome.detail.startswith(WOULD_BLOCK)
    return outcome.held_by_block_breaker
