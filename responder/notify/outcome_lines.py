"""The lines that say what was done about the pod (pure): each action's outcome, the history a
later action replaced, what was withheld and why, and the latest outcome in a few words.
Every value is escaped and sized as :mod:`responder.notify.render` says."""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from responder.actions.netpol import HOST_NETWORK, uncut
from responder.actions.outcome import (
    BLOCK_DESTINATION,
    BLOCKED_ADDRESS,
    HOST_NETWORK_NOT_ISOLATED,
    NOT_PATCHED,
    ON_HOST_NETWORK,
    RECHECK,
    WIDENED,
    ActionOutcome,
    KeptOut,
    OutcomeStatus,
    release_note,
)
from responder.cluster.network_escape import NETWORK_ESCAPE
from responder.config import ActionName
from responder.incident import TRIES_OVER, IncidentReport
from responder.notify.blocks import NAME_LIMIT, REASON_LIMIT, SHORT_LIMIT, format_utc
from responder.notify.escape import code, defuse, escape
from responder.policy import DRY_RUN_BY_DRILL, DRY_RUN_BY_POLICY, ISOLATING, Decision, Reopened
from responder.wording import first_few

# The most names a list in a line shows (the rest counted): one over-long line must not crowd out
# the lines after it.
NAMES_SHOWN = 10


def _join_codes(names: Iterable[str], limit: int = NAME_LIMIT) -> str:
    listed = list(names)
    shown = [code(name, limit) for name in listed[:NAMES_SHOWN]]
    return first_few(shown, NAMES_SHOWN, total=len(listed)) or "_none named_"


def _leak_words(outcome: ActionOutcome) -> str:
    """What a LEAKY quarantine still leaves open and what it did cut, in plain words, before the
    names of the policies that leave it open: "still allow its traffic" read as nothing cut."""
    leaking = outcome.leaking_directions
    if leaking is None:
        return "these NetworkPolicies still allow its traffic: "
    cut = {outcome.cut_only} if outcome.cut_only else {"ingress", "egress"}
    held = [d for d in ("egress", "ingress") if d in cut and d not in leaking]
    said = {
        "egress": "its egress (exfiltration, a reverse shell, downloads)",
        "ingress": "its ingress (requests to it)",
    }
    still = " and ".join(said[d] for d in ("egress", "ingress") if d in leaking)
    # "Allowed by", not "open": what those policies allow (their detail says it), not to all.
    if not held:
        return f"{still} {'are' if len(leaking) > 1 else 'is'} still allowed by: "
    return f"only {' and '.join(held)} is cut; {still} is still allowed by: "


# By the direction cut alone (quarantine.isolate, or the policy's isolate), None: both.
# NetworkPolicy leaves it to the network plugin whether a connection open before the policy (a
# reverse shell's) is cut: the lines say what the policy refuses, and that.
_OPEN_ONES = "connections already open end only where the network plugin cuts them"
_QUARANTINED_LINE = {
    None: ":lock: *Quarantined*: the deny-all NetworkPolicy refuses the pod's traffic both ways"
    f" ({_OPEN_ONES}).",
    "egress": ":lock: *Quarantined (egress)*: the pod can no longer open connections out (an egress-only"
    f" deny-all NetworkPolicy; {_OPEN_ONES}); it still receives requests.",
    "ingress": ":lock: *Quarantined (ingress)*: the pod can no longer be reached (an ingress-only deny-all"
    f" NetworkPolicy; {_OPEN_ONES}); it can still send.",
}


def _excluded_beyond_advice(outcome: ActionOutcome) -> str:
    """For a one-way cut where policies exclude this pod beyond its cut: patched by an earlier
    version (`DoesNotExist` excluded every quarantined pod), or given another direction since they
    were patched. What that opens, and how to undo it."""
    if not outcome.excluded_beyond or outcome.cut_only is None:
        return ""
    left_alone = "+".join(uncut((outcome.cut_only,)))
    return (
        f" :warning: Its {left_alone} may be open to all: "
        + _join_codes(outcome.excluded_beyond)
        + f" exclude this pod though its quarantine leaves its {left_alone} alone (an exclusion made by"
        " an earlier version, which excluded every quarantined pod, or a policy given that direction"
        " since it was patched). Release the pods quarantined in the namespace (its last release"
        " removes the exclusion), or remove it by hand."
    )


def _dry_run_cause(decision: Decision) -> str:
    """What put the decision in dry-run, for "nothing was changed" lines."""
    if decision.dry_run_by == DRY_RUN_BY_POLICY:
        return f"policy {code(decision.policy, NAME_LIMIT)} is in dry-run"
    if decision.dry_run_by == DRY_RUN_BY_DRILL:
        return "it is a drill (guardrails.enforce_drills is off)"
    return "guardrails.dry_run is on"


def outcome_line(
    outcome: ActionOutcome,
    decision: Decision,
    *,
    command: str = "below",
    failed: _Failures | None = None,
    tries_by_itself: bool = True,
) -> str:
    """``command``: where the message that shows this line has the command to act by hand;
    ``failed``: the failures in a row this one (the latest) stands for; ``tries_by_itself``: the
    responder tries a failed quarantine again on its own (dedupe.retry_withheld_seconds)."""
    said = failed.said() if failed is not None else ""
    line = _outcome_text(outcome, decision, command, said, tries_by_itself=tries_by_itself)
    who = outcome.by_hand
    if who is None:
        return line
    why = f": {escape(outcome.reason, REASON_LIMIT)}" if outcome.reason else ""
    return f"{line} :raised_hand: By hand, by *{escape(who, SHORT_LIMIT)}*{why}."


def _outcome_text(
    outcome: ActionOutcome,
    decision: Decision,
    command: str = "below",
    times: str = "",
    *,
    tries_by_itself: bool = True,
) -> str:
    """``times``: how often a failure came in a row ("" once), said after its FAILED."""
    action = escape(outcome.action, SHORT_LIMIT)
    detail = escape(outcome.detail, REASON_LIMIT) if outcome.detail else ""
    status = outcome.status
    lapse = outcome.lapse
    if lapse is not None:
        return (
            f":warning: *The {escape(lapse.what, SHORT_LIMIT)} no longer holds*: {detail or 'undone'}."
            f" Checked at {format_utc(outcome.finished_ns)}; {_NEXT_ALERT}"
        )
    if outcome.action == BLOCK_DESTINATION and status in (OutcomeStatus.BLOCKED, OutcomeStatus.LEAKY):
        return _block_text(outcome, detail)
    if status is OutcomeStatus.QUARANTINED:
        line = _QUARANTINED_LINE[outcome.cut_only]
        if outcome.patched_policies:
            patched = _join_codes(outcome.patched_policies)
            line += f" Other policies were patched to exclude it: {patched}."
        return line + (f" Details: {detail}." if detail else "") + _excluded_beyond_advice(outcome)
    if status is OutcomeStatus.LEAKY and outcome.not_isolated == ON_HOST_NETWORK:
        # No NetworkPolicy holds it: not "not proven" but certainly not isolated, and what to do.
        rest = outcome.detail.removeprefix(HOST_NETWORK_NOT_ISOLATED).lstrip("; ")
        return (
            ":rotating_light: *NOT isolated*: NetworkPolicies cannot hold a host-network pod (it shares its"
            " node's network), so the deny-all does nothing for it"
            + (f". {_capitalized(escape(rest, REASON_LIMIT))}" if rest else "")
            + ". The quarantine label stays on as the record; `serving-guard release` lifts it."
        )
    if status is OutcomeStatus.LEAKY and not outcome.leaky_policies:
        return (
            ":warning: *LEAKY quarantine*: the pod is labelled into the deny-all policy, but its isolation "
            "is not proven" + (f" ({detail})" if detail else "") + ". Check the pod's traffic yourself."
        )
    if status is OutcomeStatus.LEAKY:
        not_patched = outcome.extra.get(NOT_PATCHED)
        if isinstance(not_patched, list) and not_patched:
            advice = (
                ". Fix them by hand: "
                + _join_codes(str(name) for name in not_patched)
                + " also restrict the traffic this quarantine leaves open, so they were not patched"
                " (excluding quarantined pods from them could open it to all)."
            )
        else:
            advice = (
                ". Fix them, or set `quarantine.patch_other_policies: true`"
                " (Helm: `quarantine.patchOtherPolicies`)."
            )
        return (
            ":warning: *LEAKY quarantine*: the pod is labelled and the deny-all policy is in place, but "
            + _leak_words(outcome)
            + _join_codes(outcome.leaky_policies)
            + (f" ({detail})" if detail else "")
            + advice
            + _excluded_beyond_advice(outcome)
        )
    if status is OutcomeStatus.DRY_RUN:
        return f":test_tube: *Dry-run*: would {action} ({_dry_run_cause(decision)}; nothing was changed)" + (
            f": {detail}." if detail else "."
        )
    if status is OutcomeStatus.WITHHELD:
        return f":pause_button: *{action} withheld*" + (f": {detail}" if detail else ".")
    if status is OutcomeStatus.POD_GONE and outcome.action == RECHECK:
        return f":ghost: *Pod gone*: {detail or 'the pod was deleted since'}."
    if status is OutcomeStatus.POD_GONE:
        return f":ghost: *Pod gone*: nothing left to {action}" + (f" ({detail})." if detail else ".")
    if status is OutcomeStatus.FAILED and outcome.labelled:
        # The label went on, the deny-all policy did not: the label isolates nothing yet.
        again = _after_failure(outcome, f"run the quarantine command {command}", tries_by_itself)
        return (
            f":x: *{action} FAILED*{times}: {detail}. The pod is *not* isolated until that policy exists;"
            f" {again}."
        )
    if status is OutcomeStatus.FAILED and outcome.action == ActionName.QUARANTINE.value:
        again = _after_failure(outcome, f"quarantine it by hand with the command {command}", tries_by_itself)
        reason = detail or "no reason given"
        return f":x: *{action} FAILED*{times}: {reason}. The pod is *not* isolated; {again}."
    if status is OutcomeStatus.FAILED:
        return f":x: *{action} FAILED*{times}: " + (detail or "no reason given") + "."
    if status is OutcomeStatus.ANNOTATED:
        return ":memo: *Annotated* the pod (its network is unchanged)."
    if status is OutcomeStatus.RELEASED:
        rest = escape(beyond_who_and_why(outcome, outcome.by_hand), REASON_LIMIT)
        return ":unlock: *Released*" + (f": {rest}." if rest else ".")
    return f"*{action}*: {escape(status.value, SHORT_LIMIT)}"  # pragma: no cover - every status is above


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


def _after_failure(outcome: ActionOutcome, by_hand: str, tries_by_itself: bool) -> str:
    """What comes after a failed quarantine: a person runs their command again; the responder's
    own tries (``tries_by_itself``: dedupe.retry_withheld_seconds has waits), until the last of
    them failed too; a repeat of the alert; or ``by_hand``, the command offered."""
    if outcome.by_hand:
        return "run the command again"
    tries = outcome.extra.get(TRIES_OVER)
    if isinstance(tries, int) and not isinstance(tries, bool):
        times = "once" if tries == 1 else f"{tries} times"
        return (
            f"the responder tried it again by itself {times}: *nothing more is tried* unless this alert"
            f" repeats; {by_hand}"
        )
    if tries_by_itself:
        return (
            "the responder tries it again by itself over the next minutes, and a repeat of this alert"
            f" does too; or {by_hand}"
        )
    return f"the next repeat of this alert tries again, or {by_hand}"


def beyond_who_and_why(outcome: ActionOutcome, who: str | None) -> str:
    """A release's detail without the "released by WHO: WHY" it opens with, where the message
    says who and why apart (an action by hand); any other detail as it is."""
    reason = outcome.reason
    if outcome.status is not OutcomeStatus.RELEASED or who is None or reason is None:
        return outcome.detail
    note = release_note(who, reason)
    if not outcome.detail.startswith(note):
        return outcome.detail
    return outcome.detail[len(note) :].lstrip("; ")


def _kept_out_text(outcome: ActionOutcome, kept_out: KeptOut, address: str) -> str:
    """A block that made nothing: its address was out of the pod's reach already."""
    policies = _join_codes(outcome.kept_out_by)
    if kept_out is KeptOut.QUARANTINE:
        why = f"a quarantine cuts all of the pod's egress ({policies})"
    else:
        why = f"the pod's egress is restricted by {policies}, none of which allows it"
    return f":no_entry: *No block made*: {address} is already out of the pod's reach: {why}."


def _block_text(outcome: ActionOutcome, detail: str) -> str:
    address = code(str(outcome.extra.get(BLOCKED_ADDRESS, "?")), SHORT_LIMIT)
    kept_out = outcome.kept_out
    if outcome.status is OutcomeStatus.BLOCKED and kept_out is not None:
        return _kept_out_text(outcome, kept_out, address)
    if outcome.status is OutcomeStatus.BLOCKED:
        # Made and proven: a block policy of its own, which leaves the pod's other egress alone.
        return f":no_entry: *Blocked* egress to {address}: the pod's other egress is unchanged" + (
            f" ({detail})." if detail else "."
        )
    widened = outcome.extra.get(WIDENED)
    if isinstance(widened, list) and widened:
        return (
            f":warning: *Blocked* egress to {address}, but the block policy *widens*"
            f" {_join_codes(str(name) for name in widened)}: they restrict the pod's egress, and it"
            " allows what they deny" + (f" ({detail})." if detail else ".")
        )
    still = f" still allowed by {_join_codes(outcome.leaky_policies)}" if outcome.leaky_policies else ""
    if HOST_NETWORK in outcome.detail:
        advice = " No NetworkPolicy reaches a host-network pod: only stopping the pod cuts it."
    elif NETWORK_ESCAPE in outcome.detail:
        advice = " No NetworkPolicy holds a pod that can leave its network namespace: only stopping it does."
    else:
        advice = " Check the pod's traffic; quarantining its egress cuts it whatever other policies allow."
    return (
        f":warning: *Block of {address} NOT in force*:{still}" + (f" ({detail})." if detail else ".") + advice
    )


# The actions that set or lift the pod's network state: a later one taken by hand replaces the
# earlier word on it (an annotation stays true).
_NETWORK_ACTIONS = frozenset({"quarantine", BLOCK_DESTINATION, "release"})
# What follows a lapse, said where it is told.
_NEXT_ALERT = "the next alert on the pod opens a new incident, which acts again."


def _changed_the_pod(outcome: ActionOutcome) -> bool:
    """The action came out as meant, or left its label on: its word on the pod is the latest (a
    failure that labelled nothing left the pod as it was)."""
    return outcome.ok or outcome.labelled or outcome.block_labelled


def _replaces(by_hand: ActionOutcome, earlier: ActionOutcome) -> bool:
    """``by_hand`` (a later action a person took) makes ``earlier`` history: a release ends every
    quarantine and block before it; a quarantine, or a block of the same address, replaces the
    earlier word on it (a prediction, a hold, a leak) and an earlier release; a release, or the
    action again, replaces a lapse of it (what the recheck found no longer holding)."""
    lapse = earlier.lapse
    if lapse is not None:
        return by_hand.action in ("release", lapse.action)
    if by_hand.action not in _NETWORK_ACTIONS or earlier.action not in _NETWORK_ACTIONS:
        return False
    if "release" in (by_hand.action, earlier.action):
        return True
    if by_hand.action != earlier.action:
        return False
    return by_hand.action != BLOCK_DESTINATION or (
        by_hand.extra.get(BLOCKED_ADDRESS) == earlier.extra.get(BLOCKED_ADDRESS)
    )


def _withheld_again(outcome: ActionOutcome, after: ActionOutcome) -> bool:
    """A retry withheld ``outcome``'s action again, for the reason it gives now (a container not
    listed yet, then not listed past the kubelet's lag: a possible forgery)."""
    return (
        outcome.status is OutcomeStatus.WITHHELD
        and after.status is OutcomeStatus.WITHHELD
        and after.action == outcome.action
        and after.extra.get(TRIES_OVER) is not None
    )


def _replaced(outcome: ActionOutcome, later: Sequence[ActionOutcome]) -> bool:
    """A later outcome made ``outcome`` history: an action by hand, what it replaces; whatever
    quarantined or blocked the pod after a release, the release; the same action done since (tried
    again), one withheld or failed; and a lapse the recheck found, the action whose effect no longer
    holds; the pod gone, all that was on it."""
    for after in later:
        if after.action == RECHECK and after.status is OutcomeStatus.POD_GONE:
            if outcome.action in _NETWORK_ACTIONS or outcome.lapse is not None:
                return True
            continue
        lapse = after.lapse
        if lapse is not None:
            if outcome.action == lapse.action:
                return True
            continue
        if _withheld_again(outcome, after):
            return True
        if not _changed_the_pod(after):
            continue
        if after.by_hand is not None and _replaces(after, outcome):
            return True
        if outcome.action == "release" and after.action in ("quarantine", BLOCK_DESTINATION):
            return True
        if outcome.status in (OutcomeStatus.WITHHELD, OutcomeStatus.FAILED) and _done_since(after, outcome):
            return True
    return False


def _done_since(later: ActionOutcome, earlier: ActionOutcome) -> bool:
    """``later`` did what ``earlier`` (withheld, or failed) did not: the same action, a retry of the
    incident's own (a block held or failed before its address was known names none), or a block
    of the same address."""
    if later.action != earlier.action:
        return False
    address = earlier.extra.get(BLOCKED_ADDRESS)
    return later.action != BLOCK_DESTINATION or later.retried or address == later.extra.get(BLOCKED_ADDRESS)


def _withheld_taken_by_hand(asked: Sequence[str], outcomes: Sequence[ActionOutcome]) -> bool:
    """Every action the decision held back was taken by hand since, or the pod was released."""
    done = {o.action for o in outcomes if o.by_hand is not None and _changed_the_pod(o)}
    return "release" in done or (bool(asked) and set(asked) <= done)


@dataclass(frozen=True, slots=True)
class _Failures:
    """An action's failures one after another (no other outcome of that action between them),
    said once: how many, since when."""

    count: int = 1
    first_ns: int = 0

    def said(self) -> str:
        if self.count == 1:
            return ""
        return f" {self.count} times in a row (first at {format_utc(self.first_ns)}); the last"


def _failures_in_a_row(outcomes: Sequence[ActionOutcome]) -> dict[int, _Failures]:
    """Which outcomes (by index) get a line of their own: all but a responder's failure that the
    next outcome of its action, failed too, says again (the last of a run stands for it, with the
    run's count and first time)."""
    shown: dict[int, _Failures] = {}
    running: dict[str, _Failures] = {}  # by action: the failures in a row so far
    for index, outcome in enumerate(outcomes):
        if outcome.status is not OutcomeStatus.FAILED or outcome.by_hand is not None:
            running.pop(outcome.action, None)
            shown[index] = _Failures()
            continue
        earlier = running.get(outcome.action)
        run = (
            _Failures(earlier.count + 1, earlier.first_ns)
            if earlier is not None
            else _Failures(1, outcome.finished_ns)
        )
        if earlier is not None:
            # The earlier failure is said by this one.
            del shown[next(i for i in reversed(shown) if outcomes[i].action == outcome.action)]
        running[outcome.action] = run
        shown[index] = run
    return shown


def _history_line(outcome: ActionOutcome, failures: _Failures | None = None) -> str:
    described = outcome.describe()
    if outcome.status in (OutcomeStatus.WITHHELD, OutcomeStatus.FAILED):
        described = f"{outcome.action} {described}"  # "withheld: ..." alone does not say of what
    if failures is not None and failures.count > 1:
        described += f" ({failures.count} times)"
    said = "• " + escape(described, REASON_LIMIT)
    who = outcome.by_hand
    if who is None or outcome.status is OutcomeStatus.RELEASED:  # a release's words name who
        return said
    return f"{said} (by hand, by *{escape(who, SHORT_LIMIT)}*)"


def action_lines(report: IncidentReport, tries_by_itself: bool) -> list[str]:
    """What was done about the pod, its latest state first: what a later action by hand replaced
    (a release, a quarantine or a block taken by hand), or a lapse the recheck found undid (which
    leads), follows, under "Before that". An incident opened after an earlier one's lapse says so
    in one line, before that history."""
    decision = report.decision
    outcomes = report.outcomes
    leading: list[str] = []
    lines: list[str] = []
    before: list[str] = []
    withheld = set(decision.withheld)
    failures = _failures_in_a_row(outcomes)
    for index, outcome in enumerate(outcomes):
        if outcome.status is OutcomeStatus.WITHHELD and outcome.detail in withheld:
            continue  # said below, with the decision's reasons
        run = failures.get(index)
        if run is None:
            continue  # a failure the next one of its action says, counted
        if _replaced(outcome, outcomes[index + 1 :]):
            before.append(_history_line(outcome, run))
        elif outcome.lapse is not None:
            leading.append(outcome_line(outcome, decision))
        else:
            lines.append(outcome_line(outcome, decision, failed=run, tries_by_itself=tries_by_itself))
    if leading and report.reopened_by is not None:
        leading.append(f":arrows_counterclockwise: *Reopened* as incident {code(report.reopened_by, 80)}.")
    lines = leading + lines
    if decision.withheld:
        # What was held back (a block may be, beside a quarantine that went ahead).
        asked = [
            a.value for a in decision.requested if a is not ActionName.NOTIFY and a not in decision.actions
        ]
        what = escape(" and ".join(asked) or "action", SHORT_LIMIT)
        if _withheld_taken_by_hand(asked, outcomes):
            reasons = escape(defuse("; ".join(decision.withheld)), REASON_LIMIT)
            before.append(f"• {what} withheld: {reasons}")
        else:
            lines.append(f":pause_button: *{what} withheld*, because:")
            # A reason may quote the alert (the host name or container id that did not match).
            lines.extend("• " + escape(defuse(reason), REASON_LIMIT) for reason in decision.withheld)
            if report.withheld_for_now:
                lines.append(_tried_again_line(report.tries_over, tries_by_itself))
            elif decision.opt_in_missing:
                lines.append(_not_opted_in_line(report.key.namespace, decision.opt_in_missing))
    acted = {o.action for o in outcomes}
    pending = [a for a in decision.actions if a is not ActionName.NOTIFY and a.value not in acted]
    for action in pending:
        if decision.dry_run and action in ISOLATING:
            lines.append(f":test_tube: *Dry-run*: would {action.value} (in progress).")
        else:
            lines.append(f":hourglass: *{action.value}* in progress.")
    if not lines:
        lines.append(
            f":bell: *Notified only*: policy {code(decision.policy, NAME_LIMIT)} takes no action on the pod."
        )
    if decision.reopens is not None:
        lines.append(reopens_line(decision.reopens))
    return lines + (["_Before that:_", *before] if before else [])


def _tried_again_line(tries_over: int | None, tries_by_itself: bool) -> str:
    """What comes of a quarantine withheld for a passing reason: the responder's own tries (or
    that they are over, or that there are none: ``tries_by_itself`` False), a repeat, or a
    person's command."""
    if tries_over is None and not tries_by_itself:
        return (
            ":arrows_counterclockwise: A repeat of this alert decides it again (the responder does not try"
            " it by itself: `dedupe.retry_withheld_seconds` is empty, as it is for `serving-guard ingest`);"
            " or quarantine it by hand with the command below."
        )
    if tries_over is None:
        return (
            ":arrows_counterclockwise: The responder tries it again by itself over the next minutes"
            " (`dedupe.retry_withheld_seconds`), and a repeat of this alert does too; or quarantine it by"
            " hand with the command below."
        )
    times = "once" if tries_over == 1 else f"{tries_over} times"
    return (
        f":arrows_counterclockwise: The responder tried it again by itself {times}, still withheld:"
        " *nothing more is tried* unless this alert repeats. Quarantine it by hand with the command below."
    )


def _not_opted_in_line(namespace: str, label: str) -> str:
    """What on-call can do about a pod in a namespace that has not opted in: the responder (and
    its quarantine command) acts only where the namespace carries the label."""
    command = f"kubectl label namespace {shlex.quote(namespace)} {shlex.quote(label)}=true"
    return (
        ":information_source: The responder acts only in namespaces labelled"
        f" {code(label + '=true', NAME_LIMIT)}, and `serving-guard quarantine` refuses this one too:"
        " isolate the pod by your own means, or, if the namespace should be guarded, opt it in with"
        f" {code(command, 300)}"
    )


def reopens_line(reopened: Reopened) -> str:
    """One line: this incident was opened because what an earlier one put on the pod no longer held."""
    lapse = reopened.lapse
    detail = escape(lapse.detail or "undone", REASON_LIMIT)
    return (
        f":arrows_counterclockwise: *Reopens* incident {code(reopened.incident_id, 80)}: its"
        f" {escape(lapse.what, SHORT_LIMIT)} no longer held ({detail};"
        f" checked at {format_utc(reopened.checked_ns)})."
    )


def outcome_words(report: IncidentReport) -> str:
    """short_outcome for mrkdwn outside a code span: a reason may quote the alert (its host name),
    whose marks must not format the line (review-52a L1). Its colons stay: an address or a time in
    it is copied as it is."""
    return escape(defuse(short_outcome(report)), REASON_LIMIT)


def short_outcome(report: IncidentReport) -> str:
    """The latest thing done to the pod, in a few words (fallback text, repeat replies)."""
    for outcome in reversed(report.outcomes):
        if outcome.action != ActionName.NOTIFY.value:
            return outcome.describe()
    if report.decision.withheld:
        return "quarantine withheld"
    changes = [a.value for a in report.decision.actions if a in ISOLATING]
    if changes:
        return f"dry-run: would {changes[0]}" if report.decision.dry_run else f"{changes[0]} in progress"
    return "notified only"


__all__ = [
    "NAMES_SHOWN",
    "action_lines",
    "beyond_who_and_why",
    "outcome_line",
    "outcome_words",
    "reopens_line",
    "short_outcome",
]
