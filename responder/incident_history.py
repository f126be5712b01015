"""What an incident's journaled outcomes say: what it put on the pod, what it did, what it held
back and is still to do, and whether a release or a lapse came after (pure: a retry, a recheck and
a restart read them alike)."""

from __future__ import annotations

from collections.abc import Sequence

from responder.actions.outcome import (
    BLOCK_DESTINATION,
    BLOCKED_ADDRESS,
    BY_HAND,
    REASON,
    ActionOutcome,
    OutcomeStatus,
)
from responder.actions.pod_records import RELEASED_AT, ReleaseRecord
from responder.alert import format_time_ns
from responder.cluster.verify import UNREACHED, Verification
from responder.config import ActionName, Isolation, widest
from responder.incident import IncidentReport
from responder.policy import ISOLATING, Decision, Reopened


def said_held(report: IncidentReport | None, outcome: ActionOutcome) -> bool:
    """An outcome held back for the same address, by the same action, is among the incident's."""
    address = outcome.extra.get(BLOCKED_ADDRESS)
    return report is not None and any(
        o.status is OutcomeStatus.WITHHELD
        and o.action == outcome.action
        and o.extra.get(BLOCKED_ADDRESS) == address
        for o in report.outcomes
    )


def names_address(outcome: ActionOutcome, address: str) -> bool:
    return outcome.action == BLOCK_DESTINATION and outcome.extra.get(BLOCKED_ADDRESS) == address


def lapsed_in(incident_id: str, report: IncidentReport) -> Reopened | None:
    """The lapse the recheck journaled under the incident (its latest), or None."""
    for outcome in reversed(report.outcomes):
        lapse = outcome.lapse
        if lapse is not None:
            return Reopened(incident_id, lapse, outcome.finished_ns)
    return None


def released_in(report: IncidentReport) -> ReleaseRecord | None:
    """The release journaled under the incident after the last quarantine or block it holds (by
    hand or found on the pod), or None."""
    for outcome in reversed(report.outcomes):
        if outcome.action == "release" and outcome.status is OutcomeStatus.RELEASED:
            by, reason = outcome.extra.get(BY_HAND), outcome.extra.get(REASON)
            at = outcome.extra.get(RELEASED_AT) or format_time_ns(outcome.finished_ns)
            return ReleaseRecord(str(by or "?"), str(reason or "?"), str(at), outcome.finished_ns)
        if outcome.action in ("quarantine", BLOCK_DESTINATION) and put_on_pod(outcome):
            return None
    return None


def withheld_for_passing_reason(
    verification: Verification, decision: Decision, outcomes: Sequence[ActionOutcome]
) -> bool:
    """Whether an isolation the decision asked for did not happen for a reason that passes: the
    pod could not be read, was not found or did not list the alert's container yet, its namespace's
    opt-in could not be read, the breaker was open, or an action failed."""
    wanted = any(action in ISOLATING for action in decision.requested)
    unreachable = verification.status in UNREACHED
    failed = any(o.status is OutcomeStatus.FAILED for o in outcomes)
    return (wanted and (unreachable or decision.opt_in_unknown)) or decision.breaker_open or failed


def still_withheld(report: IncidentReport, address: str, cut: Isolation) -> bool:
    """An incident whose isolation was withheld for a passing reason (or its block by the block
    breaker), with an action it asked for that is not done since (by a retry, or by hand).
    ``address``: its alert's (a block's); ``cut``: its quarantine's (Pipeline._cut_asked)."""
    decision = report.decision
    if decision.dry_run or not (
        withheld_for_passing_reason(report.verification, decision, report.outcomes)
        or decision.block_breaker_open
    ):
        return False
    done = done_actions(report.outcomes, address, cut)
    return any(a in ISOLATING and a.value not in done for a in report.decision.requested)


def done_actions(outcomes: Sequence[ActionOutcome], address: str, cut: Isolation) -> set[str]:
    """The actions the outcomes did (as asked, or left on the pod: a LEAKY quarantine is on it, and
    the recheck proves it); a quarantine only when its cut covers ``cut`` (one cut egress only by
    hand leaves a both-ways quarantine to do); a block only as the block of ``address``, the
    alert's (a follow-up block of another address is not the alert's own)."""
    return {
        o.action
        for o in outcomes
        if (o.ok or put_on_pod(o))
        and o.status is not OutcomeStatus.DRY_RUN
        and (o.action != BLOCK_DESTINATION or not address or names_address(o, address))
        and (o.action != ActionName.QUARANTINE.value or widest(cut_made(o), cut) is cut_made(o))
    }


def cut_made(outcome: ActionOutcome) -> Isolation:
    """The cut a quarantine's outcome made (both ways unless it says one direction)."""
    return Isolation(outcome.cut_only) if outcome.cut_only else Isolation.BOTH


def put_on_pod(outcome: ActionOutcome) -> bool:
    """The outcome left the pod quarantined (isolated or LEAKY) or in its destination block."""
    if outcome.block_labelled:
        return True
    return outcome.action == "quarantine" and outcome.status in (
        OutcomeStatus.QUARANTINED,
        OutcomeStatus.LEAKY,
    )
