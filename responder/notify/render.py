"""IncidentReport -> one Slack Block Kit message (pure: no I/O, no clock).

Every value that comes from an alert goes through :mod:`responder.notify.escape`; the markup
we add ourselves is only ``*bold*``, code spans/blocks, emoji codes and bullets, never
``<...>`` (no links, no mentions), so a rendered message contains no raw ``<`` or ``>`` at all.
Alert values are shown in code spans, or, inside our sentences (reasons that quote them, the
fallback text), with mrkdwn's ``*``, ``_`` and ``~`` as look-alikes (``defuse``): an alert
cannot format the message. The header is ``plain_text``, shown as it is: no entities (``plain``).
All text objects are sized to Slack's limits (header 150, section 3000, field 2000,
context element 3000, 50 blocks), so Slack never rejects a message for its size.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from responder.actions.netpol import HOST_NETWORK, uncut
from responder.actions.outcome import (
    BLOCK_DESTINATION,
    BLOCKED_ADDRESS,
    HOST_NETWORK_NOT_ISOLATED,
    NOT_PATCHED,
    ON_HOST_NETWORK,
    RECHECK,
    THREAD_KEPT_OUT,
    WIDENED,
    ActionOutcome,
    KeptOut,
    OutcomeStatus,
    release_note,
)
from responder.alert import (
    FIELD_CMDLINE,
    FIELD_CONTAINER_ID,
    FIELD_FD_NAME,
    FIELD_IMAGE,
    FIELD_IMAGE_TAG,
    FIELD_NAMESPACE,
    FIELD_PARENT,
    FIELD_POD,
    FIELD_PROC_NAME,
    FIELD_USER,
    Alert,
    Priority,
)
from responder.cluster.context import ContainerInfo
from responder.cluster.network_escape import NETWORK_ESCAPE
from responder.cluster.verify import VerificationStatus
from responder.config import ActionName
from responder.incident import PLAIN_COMMANDS, TRIES_OVER, CommandForm, IncidentReport
from responder.notify.escape import (
    code,
    code_block,
    code_block_ends,
    code_block_lines,
    defuse,
    escape,
    plain,
)
from responder.policy import DRY_RUN_BY_DRILL, DRY_RUN_BY_POLICY, ISOLATING, Decision, Reopened
from responder.sender import Proof, Sender
from responder.wording import first_few

# Message metadata that marks our posts, so a restarted responder can find what it posted.
EVENT_TYPE = "serving_guard_incident"

# Slack's Block Kit limits.
HEADER_LIMIT = 150
SECTION_LIMIT = 3000
FIELD_LIMIT = 2000
CONTEXT_TEXT_LIMIT = 3000
MAX_BLOCKS = 50
MAX_SECTION_FIELDS = 10
MAX_CONTEXT_ELEMENTS = 10
# The notification/fallback text: Slack truncates past 4000; keep it short and readable.
FALLBACK_LIMIT = 1000

# Budgets for single values (output characters after escaping, markup included).
NAME_LIMIT = 300
SHORT_LIMIT = 200
CMDLINE_LIMIT = 1200
REASON_LIMIT = 500
OUTPUT_LIMIT = 1200
OTHER_FIELDS_LIMIT = 1200
# The least an "Other fields" line is cut to (its name and the start of its value).
OTHER_FIELD_LINE_MIN = 60
# The most actions the context line says the finishing time of (the latest; the rest counted).
FINISHED_SHOWN = 5

# What a message that leaves something out says: where the whole of it is.
_TRUNCATED = "truncated; the full record is in `serving-guard audit`"
_MORE = f"_… ({_TRUNCATED})_"

FIELD_EXEPATH = "proc.exepath"
FIELD_PCMDLINE = "proc.pcmdline"
FIELD_UID = "user.uid"
FIELD_EVT_TYPE = "evt.type"
FIELD_FD_TYPE = "fd.type"
FIELD_PROTO = "fd.l4proto"
FIELD_SERVER_IP = "fd.sip"
FIELD_SERVER_PORT = "fd.sport"
FIELD_SERVER_NAME = "fd.sip.name"
FIELD_CLIENT_IP = "fd.cip"
FIELD_CLIENT_PORT = "fd.cport"
FIELD_REMOTE_IP = "fd.rip"
FIELD_REMOTE_PORT = "fd.rport"
FIELD_IMAGE_DIGEST = "container.image.digest"
_CONNECTION_FIELDS = (FIELD_SERVER_IP, FIELD_CLIENT_IP, FIELD_REMOTE_IP)
# Fields shown in their own place; the rest go to "Other fields".
_SHOWN_FIELDS = frozenset(
    {
        FIELD_NAMESPACE,
        FIELD_POD,
        FIELD_CONTAINER_ID,
        FIELD_IMAGE,
        FIELD_IMAGE_TAG,
        FIELD_IMAGE_DIGEST,
        FIELD_PROC_NAME,
        FIELD_CMDLINE,
        FIELD_PARENT,
        FIELD_USER,
        FIELD_UID,
        FIELD_EXEPATH,
        FIELD_PCMDLINE,
        FIELD_FD_NAME,
        FIELD_FD_TYPE,
        FIELD_EVT_TYPE,
        FIELD_PROTO,
        FIELD_SERVER_IP,
        FIELD_SERVER_PORT,
        FIELD_SERVER_NAME,
        FIELD_CLIENT_IP,
        FIELD_CLIENT_PORT,
        FIELD_REMOTE_IP,
        FIELD_REMOTE_PORT,
        "evt.time",
        "evt.time.iso8601",
        "container.name",
        "k8s.pod.uid",
    }
)

_PRIORITY_ICON = {
    Priority.EMERGENCY: ":rotating_light:",
    Priority.ALERT: ":rotating_light:",
    Priority.CRITICAL: ":rotating_light:",
    Priority.ERROR: ":red_circle:",
    Priority.WARNING: ":warning:",
    Priority.NOTICE: ":large_blue_circle:",
    Priority.INFORMATIONAL: ":information_source:",
    Priority.DEBUG: ":information_source:",
}


class MessageKind(StrEnum):
    INCIDENT = "incident"  # the top-level message, one per incident
    REPEAT = "repeat"  # a thread reply counting repeats
    BY_HAND = "by_hand"  # a thread reply: what a person did about the incident
    LAPSE = "lapse"  # a thread reply: what the incident put on the pod no longer holds
    RETRY = "retry"  # a thread reply: what an isolation withheld for a passing reason did when tried again


@dataclass(frozen=True, slots=True)
class SlackMessage:
    """A rendered message: the fallback ``text`` (notifications, screen readers) and blocks."""

    text: str
    blocks: tuple[Mapping[str, Any], ...]
    incident_id: str
    kind: MessageKind
    # A BY_HAND, LAPSE or RETRY message's action (the journal's actions.id): found again by it after a crash.
    action_id: int | None = None
    # The message as text alone (mrkdwn), for when Slack refuses its blocks; empty: ``text`` is it.
    text_alone: str = ""

    def blocks_json(self) -> list[dict[str, Any]]:
        return [dict(block) for block in self.blocks]

    def without_blocks(self) -> SlackMessage:
        """The message as text alone: what still goes out when Slack refuses its blocks."""
        return dataclasses.replace(self, text=self.text_alone or self.text, blocks=(), text_alone="")

    def metadata(self) -> dict[str, Any]:
        """Slack message metadata naming the incident (no alert content: metadata is readable
        by every app in the channel)."""
        payload: dict[str, Any] = {"incident_id": self.incident_id, "kind": self.kind.value}
        if self.action_id is not None:
            payload["action_id"] = self.action_id
        return {"event_type": EVENT_TYPE, "event_payload": payload}


def format_utc(time_ns: int) -> str:
    """``2025-01-28 10:00:00 UTC``: what on-call reads; the audit trail has the nanoseconds."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(time_ns // 1_000_000_000))


class _Lines:
    """mrkdwn lines that never exceed ``limit``. Over it, the longest lines are cut at a space
    outside code (never inside an entity or a code span), each keeping its start (its status
    word), then lines are left out from the end only if cutting is not enough; a note says so."""

    def __init__(self, limit: int = SECTION_LIMIT) -> None:
        self._limit = limit
        self._lines: list[str] = []
        self._labels: set[int] = set()  # the lines that name the line after them (a block's label)

    def add(self, line: str) -> None:
        self._lines.append(line)

    def add_labelled(self, label: str, block: str) -> None:
        """``label``, then ``block`` (a code block it names): never left without it."""
        self._labels.add(len(self._lines))
        self._lines.extend((label, block))

    def extend(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.add(line)

    def __bool__(self) -> bool:
        return bool(self._lines)

    def text(self) -> str:
        whole = "\n".join(self._lines)
        if len(whole) <= self._limit:
            return whole
        lines = list(self._lines)
        # What the lines may use: the limit less the note and every newline.
        room = self._limit - len(_MORE) - len(lines)
        while sum(map(len, lines)) > room:
            longest = max(range(len(lines)), key=lambda index: len(lines[index]))
            excess = sum(map(len, lines)) - room
            cut = _cut_line(lines[longest], len(lines[longest]) - excess)
            if len(cut) >= len(lines[longest]):
                break  # nothing left to cut safely
            lines[longest] = cut
        while lines and sum(map(len, lines)) > room:
            room += 1  # the newline of the line left out
            lines.pop()
            if len(lines) - 1 in self._labels:  # its block is out: so is the label naming it
                room += 1
                lines.pop()
        return "\n".join([*lines, _MORE])


# The least a cut line keeps (its status word and the start of what it says).
_CUT_LINE_MIN = 80
_CUT_MARK = " …"


def _cut_line(line: str, length: int) -> str:
    """``line`` cut to at most ``length`` (not below _CUT_LINE_MIN) at a space outside any code
    span or block, marked with an ellipsis; ``line`` itself when it cannot be cut there."""
    end = max(length, _CUT_LINE_MIN) - len(_CUT_MARK)
    if end >= len(line) or end <= 0:
        return line
    at = line.rfind(" ", 0, end + 1)
    while at > 0 and line.count("`", 0, at) % 2:
        at = line.rfind(" ", 0, at)
    if at <= 0:
        return line
    return line[:at].rstrip(",;:") + _CUT_MARK


def _mrkdwn(text: str) -> dict[str, Any]:
    # verbatim: Slack must not auto-link URLs, channel names or mentions in the text.
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def _section(lines: _Lines) -> dict[str, Any]:
    return {"type": "section", "text": _mrkdwn(lines.text())}


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": text, "emoji": True}}


def _context(elements: Iterable[str]) -> dict[str, Any]:
    items = [_mrkdwn(text[:CONTEXT_TEXT_LIMIT]) for text in elements if text]
    return {"type": "context", "elements": items[:MAX_CONTEXT_ELEMENTS]}


def _field(label: str, value: str) -> dict[str, Any]:
    return _mrkdwn(f"*{label}*\n{value}")


def _value(text: str | None, limit: int = NAME_LIMIT) -> str:
    """A code span for a known value, an italic dash for a missing one."""
    return code(text, limit) if text else "_unknown_"


def _pod_ref(report: IncidentReport) -> str:
    if report.pod is not None:
        return f"{report.pod.namespace}/{report.pod.name}"
    return report.key.pod_ref


def _container(report: IncidentReport) -> ContainerInfo | None:
    pod = report.pod
    if pod is None:
        return None
    container_id = report.alert.container_id
    if container_id:
        found = pod.container_by_id(container_id)
        if found is not None:
            return found
    name = report.verification.container_name
    return next((c for c in pod.containers if name and c.name == name), None)


def _claimed_only(report: IncidentReport) -> bool:
    """The alert could not be checked against its pod: it does not match the live pod, or names a
    pod that does not exist (or no longer does). Either may be a forgery: said so, sender named."""
    return report.decision.unverified or report.verification.status is VerificationStatus.POD_NOT_FOUND


def _header_text(report: IncidentReport) -> str:
    alert = report.alert
    if _claimed_only(report):
        prefix = f":no_entry: UNVERIFIED {alert.priority.label} alert: "
    else:
        prefix = f"{_PRIORITY_ICON[alert.priority]} {alert.priority.label}: "
    if report.key.drill:
        prefix = _DRILL_PREFIX + prefix
    # plain_text: Slack shows it as it is (an entity would show as typed), on one line. Its emoji
    # are ours: a colon of the rule (a forged one's `:white_check_mark: resolved`) is shown as a
    # look-alike, so that no shortcode in it becomes an emoji.
    return prefix + plain(without_shortcodes(alert.rule), HEADER_LIMIT - len(prefix))


# A drill (the drill token's alert) is said first, in the header and the fallback text: a
# person replays it, and on-call must not take it for Falco's, nor Falco's for it.
_DRILL_PREFIX = "DRILL: "


_DRILL_NO_COMMAND = (
    "*No command to cut the pod*: this is a drill, and the pod is not under attack"
    " (`serving-guard quarantine --incident` refuses a drill's incident)."
)


def _drill_line(report: IncidentReport) -> str:
    """Who sent the drill and whether it acted. Only the drill token's alerts (or ingest --drill's)
    are drills: the text inside an alert (a command line naming the simulator) is the sender's to write."""
    sender = report.alert.sender
    sent_by = code(sender.text(), REASON_LIMIT) if sender is not None else "-"
    how = (
        f"ingested with --drill ({sent_by})"
        if sender is not None and sender.proof is Proof.FILE
        else f"a replay sent with the drill token ({sent_by})"
    )
    said = f":test_tube: *Drill*: {how}, not an alert from Falco."
    if report.decision.dry_run_by == DRY_RUN_BY_DRILL:
        return said + " Decided in dry-run (guardrails.enforce_drills is off): nothing was done to the pod."
    if report.decision.dry_run:
        return said
    return said + " Drills are enforced (guardrails.enforce_drills): what it did to the pod is real."


def plain_words(text: str) -> str:
    """Alert text shown outside a code span: its formatting marks and shortcodes as look-alikes
    (escape the result)."""
    return defuse(without_shortcodes(text))


def without_shortcodes(text: str) -> str:
    """``text`` (the alert's rule) with each colon that opens a `:name:` as a look-alike: where
    Slack turns one into an emoji (a header, a notification's text) a forged rule's shortcodes stay
    words. Other colons stay (`Drift: new executable`): the name on-call copies into a rule
    exception or a search matches."""
    return _SHORTCODE_OPENING.sub("\ua789", text)


# A colon followed by a shortcode's name and its closing colon (Slack's names: letters, digits,
# `_`, `+`, `-`, `'`).
_SHORTCODE_OPENING = re.compile(r":(?=[\w+'-]+:)")


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


def _outcome_line(
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
        rest = escape(_beyond_who_and_why(outcome, outcome.by_hand), REASON_LIMIT)
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


def _beyond_who_and_why(outcome: ActionOutcome, who: str | None) -> str:
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


def _action_lines(report: IncidentReport, tries_by_itself: bool) -> list[str]:
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
            leading.append(_outcome_line(outcome, decision))
        else:
            lines.append(_outcome_line(outcome, decision, failed=run, tries_by_itself=tries_by_itself))
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


def _unverified_lines(report: IncidentReport) -> list[str]:
    alert = report.alert
    if report.verification.status is VerificationStatus.POD_NOT_FOUND:
        return [
            ":no_entry: *Unverified alert: the pod it names was not found, so it cannot be verified;"
            " it may be forged.*",
            f"This alert names pod {code(report.key.pod_ref, NAME_LIMIT)}, which the cluster does not"
            " have (never did, or no longer does): nothing it says could be checked.",
            _forger_hint(alert.sender) + f", and the Falco on node {_value(alert.hostname)}.",
        ]
    reason = report.verification.reason or "the alert does not match the live pod"
    return [
        ":no_entry: *Unverified alert: someone may be forging alerts.*",
        # The reason quotes the alert's own ids and host name: a code span, so that made-up ones
        # cannot format the warning (Slack's *, _ and ~ have no escape outside code).
        f"This alert names pod {code(report.key.pod_ref, NAME_LIMIT)}, but it does not match the live pod: "
        + code(reason, REASON_LIMIT)
        + ".",
        "Nothing was done to the pod. " + _forger_hint(alert.sender) + f", and the Falco on node"
        f" {_value(alert.hostname)}.",
    ]


def _forger_hint(sender: Sender | None) -> str:
    """Where to look first for whoever sent an alert that does not match its pod."""
    if sender is None:  # journaled before alerts named their sender
        return "Check who can reach the responder's alert inputs"
    said = f"It was sent by {code(sender.text(), REASON_LIMIT)}: "
    match sender.proof:
        case Proof.CERTIFICATE:
            return said + "check who holds that client certificate"
        case Proof.TOKEN:
            return said + "check who holds that token (its line in the token file)"
        case Proof.DRILL_TOKEN:
            return said + "check who holds the drill token (inputs.http.drill_token)"
        case Proof.SERVER_CERTIFICATE:
            return said + "check who holds a server certificate for that name from inputs.grpc.tls.ca_file"
        case Proof.SOCKET:
            return said + "check who can create that socket (its directory's owner and mode)"
        case Proof.FILE:
            return said + "check who wrote what `serving-guard ingest` read"
        case Proof.NONE:
            return (
                said + "the alert input takes alerts from anyone (inputs.http.allow_unauthenticated);"
                " check who can reach it"
            )


def _verification_text(report: IncidentReport) -> str:
    verification = report.verification
    # A lookup's error may quote the alert's namespace and pod.
    reason = escape(defuse(verification.reason), REASON_LIMIT) if verification.reason else ""
    status = verification.status
    if status is VerificationStatus.VERIFIED:
        # A reason here says how it matched (the container restarted since the alert).
        name = verification.container_name
        said = [f"container {code(name, NAME_LIMIT)}"] if name else []
        said += [reason] if reason else []
        return ":white_check_mark: Verified against the live pod" + (f" ({'; '.join(said)})" if said else "")
    if status is VerificationStatus.UNVERIFIED:
        quoted = (
            code(verification.reason, REASON_LIMIT) if verification.reason else "does not match the live pod"
        )
        return ":no_entry: UNVERIFIED: " + quoted
    if status is VerificationStatus.POD_NOT_FOUND:
        return ":grey_question: Not verified: pod not found (already gone?)"
    # Not checked against a pod: who sent it is said, as for a possible forgery (review-52a M1).
    sent_by = _sent_by(report.alert.sender)
    if status is VerificationStatus.NO_POD_IDENTITY:
        return ":grey_question: Not verified: the alert names no pod" + sent_by
    if status is VerificationStatus.NOT_LISTED_YET:
        return ":hourglass: Not verified yet" + (f": {reason}" if reason else "") + sent_by
    return ":grey_question: Not verified: pod lookup failed" + (f": {reason}" if reason else "") + sent_by


def _sent_by(sender: Sender | None) -> str:
    return f"; sent by {code(sender.text(), REASON_LIMIT)}" if sender is not None else ""


def _pod_fields(report: IncidentReport) -> dict[str, Any]:
    alert = report.alert
    pod = report.pod
    container = _container(report)
    workload = pod.workload if pod is not None else None
    image = container.image if container is not None else alert.text(FIELD_IMAGE)
    if container is None and image and alert.text(FIELD_IMAGE_TAG):
        image = f"{image}:{alert.text(FIELD_IMAGE_TAG)}"
    digest = container.digest if container is not None else alert.text(FIELD_IMAGE_DIGEST)
    node = pod.node if pod is not None and pod.node else alert.hostname
    container_text = _value(container.name if container is not None else None)
    if alert.container_id:
        container_text += " " + code(alert.container_id, 80)
    pod_label = "Pod (as the alert claims)" if _claimed_only(report) else "Pod"
    fields = [
        _field(pod_label, _value(_pod_ref(report))),
        _field("Workload", _value(f"{workload.kind}/{workload.name}" if workload else None)),
        _field("Node", _value(node)),
        _field("Container", container_text),
        _field("Image", _value(image, 600)),
        _field("Digest", _value(digest, 200)),
    ]
    return {"type": "section", "fields": fields[:MAX_SECTION_FIELDS]}


def _process_lines(alert: Alert) -> _Lines:
    lines = _Lines()
    parts = [f"*Process* {_value(alert.text(FIELD_PROC_NAME))}"]
    if alert.text(FIELD_PARENT):
        parts.append(f"parent {_value(alert.text(FIELD_PARENT))}")
    user = alert.text(FIELD_USER)
    uid = alert.text(FIELD_UID)
    if user or uid:
        parts.append(f"user {_value(user or uid)}" + (f" (uid {code(uid, 40)})" if user and uid else ""))
    head = [" · ".join(parts)]
    if alert.text(FIELD_EXEPATH):
        head.append(f"*Executable* {_value(alert.text(FIELD_EXEPATH), 600)}")
    lines.extend(head)
    parent = alert.text(FIELD_PCMDLINE)
    # The blocks share what the lines above leave of the section (with their labels, cut or not,
    # and the newlines), so that neither is left out whole: the command line two thirds of it.
    labels = len("*Command line*") + len("*Parent command line*") + 2 * len(f" _({_TRUNCATED})_") + 4
    room = SECTION_LIMIT - sum(map(len, head)) - len(head) - labels
    command_limit = max(_BLOCK_MIN, min(CMDLINE_LIMIT, room * 2 // 3 if parent else room))
    label, block = _long_value(
        "*Command line*", alert.text(FIELD_CMDLINE) or "(not in the alert)", command_limit
    )
    lines.add_labelled(label, block)
    if parent:
        parent_limit = max(_BLOCK_MIN, min(CMDLINE_LIMIT // 2, room - len(block)))
        lines.add_labelled(*_long_value("*Parent command line*", parent, parent_limit))
    return lines


# The least a command line's block keeps: its head and tail still say what ran.
_BLOCK_MIN = 200


def _long_value(label: str, text: str, limit: int) -> tuple[str, str]:
    """``label``, then a block holding ``text``: when it is too long, its head and its tail (what a
    padded command line ends with stays in view), and the label says it is cut and where the
    whole is."""
    block, left_out = code_block_ends(text, limit)
    return (f"{label} _({_TRUNCATED})_" if left_out else label), block


def _endpoint(alert: Alert, ip_field: str, port_field: str) -> str | None:
    ip = alert.text(ip_field)
    if not ip:
        return None
    port = alert.text(port_field)
    return f"{ip}:{port}" if port else ip


def _target_lines(alert: Alert) -> _Lines:
    """The file or connection the event touched, when the rule's output names one."""
    lines = _Lines()
    fd_type = alert.text(FIELD_FD_TYPE)
    is_connection = fd_type in ("ipv4", "ipv6") or any(alert.text(f) for f in _CONNECTION_FIELDS)
    fd_name = alert.text(FIELD_FD_NAME)
    if is_connection:
        if fd_name:
            lines.add(f"*Connection* {code(fd_name, 600)}")
        endpoints = [
            ("server", _endpoint(alert, FIELD_SERVER_IP, FIELD_SERVER_PORT)),
            ("client", _endpoint(alert, FIELD_CLIENT_IP, FIELD_CLIENT_PORT)),
            ("remote", _endpoint(alert, FIELD_REMOTE_IP, FIELD_REMOTE_PORT)),
            ("server name", alert.text(FIELD_SERVER_NAME)),
            ("protocol", alert.text(FIELD_PROTO)),
        ]
        shown = [f"{label} {code(value, NAME_LIMIT)}" for label, value in endpoints if value]
        if shown:
            lines.add(" · ".join(shown))
    elif fd_name:
        lines.add(f"*File* {code(fd_name, 1000)}")
    if alert.text(FIELD_EVT_TYPE):
        lines.add(f"*Event* {_value(alert.text(FIELD_EVT_TYPE))}")
    return lines


def _other_fields(alert: Alert) -> _Lines:
    lines = _Lines()
    rest = sorted((name, alert.text(name) or "") for name in alert.fields if name not in _SHOWN_FIELDS)
    if rest:
        lines.add("*Other fields*")
        shown = [f"{name}={value}" for name, value in rest]
        lines.add(code_block_lines(shown, OTHER_FIELDS_LIMIT, line_limit=_line_share(shown)))
    return lines


# How an output text labels the alert's pod, namespace and container: the pack's rules, Falco's
# own rules and its Kubernetes append_output (-pk), and field names as written. The value may be
# any of the fields named (Falco's -pc writes the container's name as container=).
_CONTAINER_NAME = "container.name"
_OUTPUT_LABELS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("pod", "k8s.pod", "k8s.pod.name", "k8s_pod", "k8s_pod_name"), (FIELD_POD,)),
    **dict.fromkeys(
        ("ns", "namespace", "k8s.ns", "k8s.ns.name", "k8s_ns", "k8s_ns_name"), (FIELD_NAMESPACE,)
    ),
    "container": (FIELD_CONTAINER_ID, _CONTAINER_NAME),
    **dict.fromkeys(("container.id", "container_id"), (FIELD_CONTAINER_ID,)),
}
# label=value, the label a word of its own (not proc.pod=, nor a command line's --namespace=).
_LABELLED_VALUE = re.compile(r"(?<![^\s(,])([\w.]+)=(\S*)")
# What Falco writes in its output for a field with no value (the field itself is then missing).
_NO_VALUE = "<NA>"


def output_disagreements(alert: Alert) -> list[tuple[str, str, str, str | None]]:
    """Where the alert's output text names its pod, namespace or container otherwise than its
    fields (what was verified and acted on): (label, the text's value, the field, its value or
    None). Falco writes both from one event: a difference is the sender's doing (a decoy)."""
    found: dict[tuple[str, str], tuple[str, str | None]] = {}
    for match in _LABELLED_VALUE.finditer(_without_other_values(alert)):
        label, said = match.group(1), match.group(2).rstrip(",;)")
        fields = _OUTPUT_LABELS.get(label, ())
        values = [alert.text(field) for field in fields]
        if fields and said not in [_NO_VALUE if value is None else value for value in values]:
            found.setdefault((label, said), (fields[0], values[0]))
    return [(label, said, field, value) for (label, said), (field, value) in found.items()]


def _without_other_values(alert: Alert) -> str:
    """The output text with the values of the alert's other fields blanked out: a command line's
    own ``ns=...`` is the process's argument, not the output's label (those fields are shown
    for what they are above)."""
    text = alert.output
    identity = {field for fields in _OUTPUT_LABELS.values() for field in fields}
    for name in alert.fields:
        value = alert.text(name) or ""
        if name not in identity and "=" in value:
            text = text.replace(value, " " * len(value))
    return text


def _output_lines(alert: Alert) -> _Lines:
    """The alert's output text, said to be the sender's words (free text, checked against
    nothing); where it names the pod, namespace or container otherwise than the fields, said first."""
    lines = _Lines()
    title, block = _long_value(
        "*Falco output*, as the sender wrote it (free text, not checked against the fields)",
        alert.output,
        OUTPUT_LIMIT,
    )
    lines.add(title)
    for label, said, field, value in output_disagreements(alert)[:3]:
        lines.add(
            f":warning: *The output text disagrees with the alert's fields:* it says"
            f" {code(f'{label}={said}', 120)}, but {code(field, 40)} (what was verified and acted on)"
            f" is {code(value, 100) if value is not None else '_missing_'}."
        )
    lines.add(block)
    return lines


def _line_share(shown: Sequence[str]) -> int | None:
    """What each "Other fields" line may use of the block, so that one long value does not push
    the lines after it out: an equal share, and what shorter lines leave of theirs goes to the
    longer (None: all fit whole). Never below OTHER_FIELD_LINE_MIN: then whole lines are left out,
    and the block says how many."""
    # The block's fences, the newlines, and room for its "… N more" line.
    left = OTHER_FIELDS_LIMIT - 6 - len(shown) - len(f"{len(shown)} more") - 2
    # Escaped (what the block holds), no further than the block: a longer line is cut anyway.
    lengths = sorted(len(escape(line or " ", OTHER_FIELDS_LIMIT)) for line in shown)
    for index, length in enumerate(lengths):
        fair = left // (len(lengths) - index)
        if length > fair:
            return max(OTHER_FIELD_LINE_MIN, fair)
        left -= length
    return None


def _finished_text(report: IncidentReport) -> str:
    """When each action on the pod finished, the latest few ("quarantine 10:00:02 UTC"; the date
    too when it is not the alert's day). Predictions, holds and failures did nothing: not named
    (a failure's time is in its own line)."""
    done = [
        o
        for o in report.outcomes
        if o.finished_ns
        and o.action not in (ActionName.NOTIFY.value, RECHECK)
        and o.status not in (OutcomeStatus.DRY_RUN, OutcomeStatus.WITHHELD, OutcomeStatus.FAILED)
    ]
    if not done:
        return ""
    day = format_utc(report.first_seen_ns)[:10]
    said = []
    for outcome in done[-FINISHED_SHOWN:]:
        when = format_utc(outcome.finished_ns)
        said.append(f"{escape(outcome.action, SHORT_LIMIT)} {when[11:] if when[:10] == day else when}")
    earlier = len(done) - len(said)
    return " · actions finished: " + ", ".join(([f"{earlier} earlier"] if earlier else []) + said)


def _context_texts(report: IncidentReport, *, count_kept: bool, repeats_in_thread: bool) -> list[str]:
    alert = report.alert
    texts = [
        _verification_text(report),
        f"Policy {code(report.decision.policy, NAME_LIMIT)}",
        f"Incident {code(report.incident_id, 80)} · alert {code(alert.alert_id[:16] or '?', 40)}",
    ]
    first = format_utc(report.first_seen_ns)
    if report.count > 1 and count_kept:
        seen = f"Seen {report.count} times · first {first} · last {format_utc(report.last_seen_ns)}"
    elif report.count > 1:
        # Not rendered again on every repeat: the count says when it was true.
        seen = f"Seen {report.count} times as of {format_utc(report.last_seen_ns)} (first {first})"
    else:
        seen = f"At {first}"
    # When it happened, if that is not when it arrived (a late alert: deferred, replayed, a node's
    # Falco catching up), and when the responder's (or a person's) actions on the pod finished.
    if abs(alert.time_ns - report.first_seen_ns) >= 1_000_000_000:
        seen += f" · event at {format_utc(alert.time_ns)}"
    seen += _finished_text(report)
    if not count_kept:
        # Where the count goes on: the repeat reply in its thread (updated, not this post), or
        # without threads (an incoming webhook) a message for each.
        seen += (
            " · later repeats are counted in the thread"
            if repeats_in_thread
            else " · later repeats are posted on their own"
        )
    texts.append(seen)
    source = f"Falco on {_value(alert.hostname)} · source {code(alert.source, 80)}"
    if alert.tags:
        source += " · tags " + code(", ".join(alert.tags), 400)
    texts.append(source)
    return texts


def _fallback_text(report: IncidentReport) -> str:
    alert = report.alert
    # mrkdwn, and no code spans in it: the alert's words as look-alikes.
    rule, where = plain_words(alert.rule), defuse(report.key.pod_ref)
    if report.decision.unverified:
        said = f"UNVERIFIED alert (someone may be forging alerts): {rule} naming {where}"
    elif _claimed_only(report):
        said = f"UNVERIFIED alert (pod not found; it may be forged): {rule} naming {where}"
    else:
        said = f"[{alert.priority.label}] {rule} in {where}: {defuse(_short_outcome(report))}"
    reopens = report.decision.reopens
    if reopens is not None:
        said += f" (reopens {reopens.incident_id}: its {reopens.lapse.what} no longer held)"
    if report.key.drill:
        said = _DRILL_PREFIX + said
    return escape(said, FALLBACK_LIMIT)


def _outcome_words(report: IncidentReport) -> str:
    """_short_outcome for mrkdwn outside a code span: a reason may quote the alert (its host name),
    whose marks must not format the line (review-52a L1). Its colons stay: an address or a time in
    it is copied as it is."""
    return escape(defuse(_short_outcome(report)), REASON_LIMIT)


def _short_outcome(report: IncidentReport) -> str:
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


# How a workload thread's root message counts its replies' outcomes (None: notified only).
_THREAD_OUTCOMES: dict[str | None, str] = {
    OutcomeStatus.QUARANTINED: "quarantined",
    OutcomeStatus.LEAKY: "LEAKY",
    OutcomeStatus.FAILED: "FAILED",
    OutcomeStatus.WITHHELD: "withheld",
    OutcomeStatus.DRY_RUN: "dry-run",
    OutcomeStatus.ANNOTATED: "annotated",
    OutcomeStatus.POD_GONE: "gone",
    OutcomeStatus.RELEASED: "released",
    OutcomeStatus.BLOCKED: "blocked",
    OutcomeStatus.LAPSED: "no longer held",
    THREAD_KEPT_OUT: "no block made",
    None: "notified only",
}


def _thread_summary(workload: str, replies: Sequence[str | None]) -> str:
    counts: dict[str, int] = {}
    for status in replies:
        word = _THREAD_OUTCOMES.get(status, str(status))
        counts[word] = counts.get(word, 0) + 1
    pods = "pod" if len(replies) == 1 else "pods"
    outcomes = ", ".join(f"{count} {word}" for word, count in counts.items())
    where = code(workload, NAME_LIMIT)
    return (
        f":busts_in_silhouette: The same rule on *{len(replies)} more {pods}* of {where}, in this thread:"
        f" {escape(outcomes, REASON_LIMIT)}."
    )


def render_incident(
    report: IncidentReport,
    *,
    in_workload_thread: bool = False,
    thread_replies: Sequence[str | None] = (),
    form: CommandForm = PLAIN_COMMANDS,
    repeats_in_thread: bool = True,
    tries_by_itself: bool = True,
) -> SlackMessage:
    """The one message for an incident: top level, or with ``in_workload_thread`` a reply in the
    thread of another pod of its workload (slack.thread_by_workload), or for a possible forgery in
    the thread of the first. ``thread_replies``: for the root of such a thread, its replies'
    outcomes, counted. Re-rendered for updates.

    Such a reply is updated in place on every repeat: its count is current. A top-level post is
    rendered when the incident opens and when it is updated, its repeats counted in its thread's
    repeat reply (``repeats_in_thread``; without threads, a message each): it says its count as of
    the last repeat it knows, and where the later ones are."""
    blocks: list[dict[str, Any]] = [_header(_header_text(report))]
    headline = _Lines()
    group = report.workload_group
    forgery = _claimed_only(report)
    if in_workload_thread and forgery:
        headline.add(
            ":link: Another alert that does not match its live pod, in this thread of possible forgeries."
        )
    elif in_workload_thread and group is not None:
        headline.add(f":link: The same rule on another pod of {code(group.workload, NAME_LIMIT)}.")
    if thread_replies and forgery:
        several = len(thread_replies) > 1
        more = f"{len(thread_replies)} more alert" + ("s" if several else "")
        match = "do not match their live pods" if several else "does not match its live pod"
        headline.add(
            f":no_entry: *{more}* that {match}, in this thread: the same"
            " forger, or the same broken Falco, is likely."
        )
    elif thread_replies and group is not None:
        headline.add(_thread_summary(group.workload, thread_replies))
    if report.key.drill:
        headline.add(_drill_line(report))
    if forgery:
        headline.extend(_unverified_lines(report))
    headline.extend(_action_lines(report, tries_by_itself))
    blocks.append(_section(headline))
    blocks.append(_pod_fields(report))
    blocks.append(_section(_process_lines(report.alert)))
    for lines in (_target_lines(report.alert), _other_fields(report.alert)):
        if lines:
            blocks.append(_section(lines))
    if report.alert.output:
        blocks.append(_section(_output_lines(report.alert)))
    where = _where_run(form)
    release = report.release_command(form)
    if release:
        undo = _Lines()
        if report.labelled:
            undo.add(_STILL_RUNS)
        undo.add(f"*To release the pod* once it is safe{where}:")
        undo.add(code_block(release, 1000))
        undo.add(_RELEASES_ALL)
        blocks.append(_section(undo))
    blocks.extend(_by_hand_sections(report, form, where))
    blocks.append(
        _context(_context_texts(report, count_kept=in_workload_thread, repeats_in_thread=repeats_in_thread))
    )
    return SlackMessage(
        text=_fallback_text(report),
        blocks=tuple(blocks[:MAX_BLOCKS]),
        incident_id=report.incident_id,
        kind=MessageKind.INCIDENT,
        text_alone=_text_alone(report, form),
    )


# A release gives the pod back all of its traffic (review-operator M4: a person releasing a
# false-positive shell did not know it also lifted a block someone made by hand).
_RELEASES_ALL = (
    "It lifts every cut of this responder on the pod, whichever incident or person made it: its"
    " quarantine and its destination block."
)


def _by_hand_sections(report: IncidentReport, form: CommandForm, where: str) -> list[dict[str, Any]]:
    """The commands to quarantine or block the pod by hand (a withheld action, a dry-run's), ``where``
    they run; for a drill, none."""
    offered = [
        (what, by_hand)
        for what, by_hand in (
            ("quarantine it", report.quarantine_command(form)),
            ("block it", report.block_command(form)),
        )
        if by_hand
    ]
    if offered and report.key.drill:
        # A drill's pod is not under attack: no command to cut it (quarantine --incident refuses).
        instead = _Lines()
        instead.add(_DRILL_NO_COMMAND)
        return [_section(instead)]
    sections = []
    for what, by_hand in offered:
        act = _Lines()
        if what == "quarantine it" and report.predicted_in_cut:
            act.add(
                "*The pod is in this cut already* (another incident's quarantine, or a person's):"
                f" nothing more to do. To record this incident's quarantine all the same{where}:"
            )
        else:
            act.add(f"*To {what} by hand* once you have looked{where}:")
        act.add(code_block(by_hand, 1000))
        sections.append(_section(act))
    return sections


# A quarantine cuts the pod's network, nothing more: what is left for on-call to do.
_STILL_RUNS = (
    ":information_source: *The pod still runs*, its processes too (a shell, a miner): the quarantine"
    " cuts its network only. Take what you need first (its logs, what it wrote), then delete the pod"
    " or scale its owner down; releasing it reconnects whatever still runs in it."
)


def _where_run(form: CommandForm) -> str:
    """Where the commands run: beside the responder's config and journal (its pod), so that they
    use its labels and are recorded under the incident: through the prefix that reaches its pod
    (slack.command_prefix), else said in words."""
    if form.prefix:
        return (
            " (paste it where kubectl reaches the cluster: it runs in the responder's pod, is recorded"
            " under this incident, and a reply here says what it did)"
        )
    if form.config_path:
        return (
            " (run where the responder runs, e.g. `kubectl exec` into its pod: it is recorded under this"
            " incident, and a reply here says what it did)"
        )
    return (
        " (run with the responder's `--config`, where its journal is: it is recorded under this"
        " incident, and a reply here says what it did)"
    )


def _text_alone(report: IncidentReport, form: CommandForm) -> str:
    """The incident in a few lines of text, no blocks: what on-call needs to act on it (rule, pod,
    namespace, what was done, the release command), for when Slack refuses the blocks."""
    alert = report.alert
    if _claimed_only(report):
        head = f":no_entry: *UNVERIFIED {alert.priority.label} alert* (it may be forged)"
    else:
        head = f"{_PRIORITY_ICON[alert.priority]} *{alert.priority.label}*"
    if report.key.drill:
        head = _DRILL_PREFIX + head
    lines = _Lines()
    lines.add(f"{head}: {code(alert.rule, NAME_LIMIT)}")
    lines.add(
        f"*Pod* {_value(report.key.pod or None)} in namespace {_value(report.key.namespace or None)}"
        + (" (as the alert claims)" if _claimed_only(report) else "")
    )
    lines.add("*Outcome*: " + _outcome_words(report))
    release = report.release_command(form)
    if release:
        lines.add("*To release the pod* once it is safe:")
        lines.add(code_block(release, 1000))
    audit = form.written(f"serving-guard audit --incident {report.incident_id} --format incidents")
    lines.add(f"Incident {code(report.incident_id, 80)}: Slack refused this message's layout; all of it:")
    lines.add(code_block(audit, 1000))
    return lines.text()


def render_repeat(
    report: IncidentReport,
    form: CommandForm = PLAIN_COMMANDS,
    *,
    top_level: bool = False,
    counted_here: bool = True,
) -> SlackMessage:
    """The thread reply for repeats: "seen N times, last at T" (post once, then ``update`` it).
    After a release, the first repeat's (posted anew, shown in the channel) leads with that.
    ``top_level``: posted in the channel, not under the incident's post (an incoming webhook has no
    threads), so it names the rule and the pod itself. ``counted_here``: the later repeats update
    this message (not so in a workload's thread, where the incident's own reply counts them, nor
    from a webhook)."""
    times = "once" if report.count == 1 else f"{report.count} times"
    seen = (
        f":repeat: Seen *{times}*, last at {format_utc(report.last_seen_ns)}"
        f" (first at {format_utc(report.first_seen_ns)})."
    )
    if report.alerting_after_release is not None:  # names the rule and the pod itself
        return _after_release_reply(report, seen, form, counted_here=counted_here)
    lines = _Lines()
    drill = _DRILL_PREFIX if report.key.drill else ""
    if top_level:
        lines.add(f"{drill}{code(report.alert.rule, NAME_LIMIT)} on {code(report.key.pod_ref, NAME_LIMIT)}:")
    lines.add(seen)
    lines.add("Now: " + _outcome_words(report))
    last = format_utc(report.last_seen_ns)
    rule = plain_words(report.alert.rule)
    summary = f"{drill}{rule} in {defuse(report.key.pod_ref)}: seen {times}, last at {last}"
    text = escape(summary, FALLBACK_LIMIT)
    blocks = (
        _section(lines),
        _context([f"Incident {code(report.incident_id, 80)}"]),
    )
    return SlackMessage(text=text, blocks=blocks, incident_id=report.incident_id, kind=MessageKind.REPEAT)


def _after_release_reply(
    report: IncidentReport, seen: str, form: CommandForm, *, counted_here: bool
) -> SlackMessage:
    """The repeat reply once the pod still alerts after a person released it: when, what the first
    repeat since ran (its process and command lines, escaped and bounded as the post's are), the
    command to quarantine it again, and the count. Not quarantined again by itself: the person
    judged it safe, and is told so they can judge again."""
    after = report.alerting_after_release
    assert after is not None, "rendered for a repeat after a release"
    where = code(report.key.pod_ref, NAME_LIMIT)
    lines = _Lines()
    lines.add(
        f":rotating_light: *Still alerting after its release*: {where} was released by"
        f" *{escape(plain_words(after.released_by), SHORT_LIMIT)}* at {format_utc(after.released_at_ns)}, and"
        f" {code(after.alert.rule, NAME_LIMIT)} fired again at {format_utc(after.seen_ns)}. It is *not*"
        " quarantined again by itself" + (": later repeats are counted here." if counted_here else ".")
    )
    command = report.requarantine_command(form)
    if command:
        lines.add(f"*To quarantine it again by hand*{_where_run(form)}:")
        lines.add(code_block(command, 1000))
    lines.add(seen)
    alert_id = code(after.alert.alert_id[:16] or "?", 40)
    blocks = (
        _section(lines),
        _section(_process_lines(after.alert)),
        _context([f"Incident {code(report.incident_id, 80)} · first alert since the release {alert_id}"]),
    )
    plain = (
        f"{defuse(report.key.pod_ref)}: still alerting after its release by {plain_words(after.released_by)}:"
        f" {plain_words(after.alert.rule)}"
    )
    return SlackMessage(
        text=escape(plain, FALLBACK_LIMIT),
        blocks=blocks,
        incident_id=report.incident_id,
        kind=MessageKind.REPEAT,
    )


# What a person did, in a by-hand reply's words: the action's verb.
_BY_HAND_VERBS = {"quarantine": "quarantined", "release": "released", BLOCK_DESTINATION: "blocked egress for"}
_BY_HAND_TRIED = {BLOCK_DESTINATION: "block a destination for"}
# ...and for a block that found its address out of reach already (nothing was blocked).
_KEPT_OUT_VERB = "asked to block egress for"


def render_by_hand(
    incident_id: str, actor: str, namespace: str, pod: str, outcome: ActionOutcome, action_id: int
) -> SlackMessage:
    """The thread reply telling what a person did about the incident by hand (``serving-guard
    quarantine`` or ``release`` with ``--incident``): who, to which pod, with what result, and why."""
    verb = _BY_HAND_VERBS.get(outcome.action, outcome.action)
    if outcome.kept_out is not None:
        verb = _KEPT_OUT_VERB  # nothing was blocked: say what was asked, not that it was done
    who = escape(actor, SHORT_LIMIT)
    where = code(f"{namespace}/{pod}", NAME_LIMIT)
    icon = ":raised_hand:" if outcome.ok else ":warning:"
    lines = _Lines()
    if outcome.ok:
        # A release's detail opens with who and why, said here apart.
        done = (
            outcome.describe()
            if outcome.status is not OutcomeStatus.RELEASED
            else _beyond_who_and_why(outcome, actor)
        )
        lines.add(
            f"{icon} *{who}* {verb} {where} by hand" + (f": {escape(done, REASON_LIMIT)}." if done else ".")
        )
    else:
        # The person meant to act; say plainly that it did not come out as meant.
        tried = _BY_HAND_TRIED.get(outcome.action, outcome.action)
        lines.add(
            f"{icon} *{who}* tried to {escape(tried, SHORT_LIMIT)} {where} by hand:"
            f" *{escape(outcome.describe(), REASON_LIMIT)}*."
        )
        if outcome.status is OutcomeStatus.LEAKY and outcome.action == "quarantine":
            lines.add("The pod is labelled, but *not* proven isolated: check its traffic yourself.")
    if outcome.reason:
        lines.add("Reason: " + escape(outcome.reason, REASON_LIMIT))
    plain = f"{actor} {verb} {namespace}/{pod} by hand: {outcome.describe()}"
    return _action_reply(
        lines, plain, incident_id, format_utc(outcome.finished_ns), MessageKind.BY_HAND, action_id
    )


def render_lapse(
    incident_id: str,
    namespace: str,
    pod: str,
    outcome: ActionOutcome,
    action_id: int,
    *,
    command: str | None = None,
    form: CommandForm = PLAIN_COMMANDS,
) -> SlackMessage:
    """The thread reply (shown in the channel too) telling that what the incident put on the pod
    no longer holds, as the recheck found it (``outcome``: RECHECK, LAPSED), when, what comes next
    (the next alert on the pod opens a new incident, but a one-off attack sends none), and
    ``command``, the quarantine to run by hand now. What undid it comes from the cluster (policy
    names): escaped, and bounded. The recheck's record of the pod gone (POD_GONE) is told here too."""
    where = code(f"{namespace}/{pod}", NAME_LIMIT)
    checked = format_utc(outcome.finished_ns)
    if outcome.status is OutcomeStatus.POD_GONE:
        gone = _Lines()
        gone.add(f":ghost: *Pod gone*: {where}: {escape(outcome.detail or 'deleted since', REASON_LIMIT)}.")
        gone.add(
            f"Checked at {checked}. Nothing of this incident is left to release; a pod made again under"
            " its name runs new containers, whose alerts open incidents of their own."
        )
        plain = f"{namespace}/{pod}: the pod of incident {incident_id} is gone ({outcome.detail})"
        return _action_reply(gone, plain, incident_id, checked, MessageKind.LAPSE, action_id)
    lapse = outcome.lapse
    what = lapse.what if lapse is not None else "isolation"
    detail = outcome.detail or "undone"
    lines = _Lines()
    lines.add(
        f":warning: *The {escape(what, SHORT_LIMIT)} no longer holds* on {where}:"
        f" {escape(detail, REASON_LIMIT)}."
    )
    lines.add(f"Checked at {checked}.")
    lines.add(
        "If the attack goes on, its next alert on the pod opens a new incident, which acts again; a"
        " one-off attack (a reverse shell alerts once) sends none, so do not wait for it."
    )
    if command:
        lines.add(f"*To quarantine it again now*{_where_run(form)}:")
        lines.add(code_block(command, 1000))
    plain = (
        f"{namespace}/{pod}: the {what} of incident {incident_id} no longer holds ({detail});"
        " the next alert opens a new incident"
    )
    return _action_reply(lines, plain, incident_id, checked, MessageKind.LAPSE, action_id)


def render_retry(
    incident_id: str,
    namespace: str,
    pod: str,
    outcome: ActionOutcome,
    action_id: int,
    decision: Decision,
    *,
    before: Sequence[ActionOutcome] = (),
    command: str | None = None,
    form: CommandForm = PLAIN_COMMANDS,
    tries_by_itself: bool = True,
) -> SlackMessage:
    """The thread reply (shown in the channel too) telling what an isolation the incident withheld
    for a passing reason (the API could not be read, the container was not listed yet, the breaker
    was open, the action failed) did when the responder tried it again by itself: its outcome
    line, as the incident's post shows it, and when. ``decision``: the decision it was tried on;
    ``before``: the incident's outcomes before this one (whether it had failed or was withheld);
    ``command``: the command to quarantine the pod by hand, given when the last try found it
    still withheld (the tries are over); ``tries_by_itself``: as render_incident's."""
    where = code(f"{namespace}/{pod}", NAME_LIMIT)
    tried = format_utc(outcome.finished_ns)
    lines = _Lines()
    tries = outcome.extra.get(TRIES_OVER)
    if outcome.status is OutcomeStatus.WITHHELD and isinstance(tries, int):
        detail = escape(defuse(outcome.detail), REASON_LIMIT) if outcome.detail else "no reason given"
        times = "once" if tries == 1 else f"{tries} times"
        if decision.unverified:
            # Found so by the try (the container still not listed past the kubelet's lag).
            lines.add(
                f":warning: *Possible forgery* on {where}, found on its automatic try {tries}: {detail}."
            )
            lines.add("*Nothing more is tried* unless the alert repeats: the pod is *not* isolated.")
            plain = (
                f"{namespace}/{pod}: incident {incident_id} not verified when tried again: possible forgery"
            )
        else:
            lines.add(
                f":pause_button: *Still withheld* on {where} after it was tried again automatically"
                f" {times}: {detail}."
            )
            lines.add("*Nothing more is tried* unless the alert repeats: the pod is *not* isolated.")
            plain = (
                f"{namespace}/{pod}: incident {incident_id} still withheld, tried again automatically"
                f" {times}; nothing more is tried"
            )
        if command:
            lines.add(f"*To quarantine it by hand* once you have looked{_where_run(form)}:")
            lines.add(code_block(command, 1000))
        return _action_reply(lines, plain, incident_id, tried, MessageKind.RETRY, action_id)
    after = "after it failed" if _failed_before(outcome, before) else "after it was withheld"
    lines.add(f":arrows_counterclockwise: *Tried again* on {where}, {after}:")
    lines.add(
        _outcome_line(outcome, decision, command="in the incident's message", tries_by_itself=tries_by_itself)
    )
    plain = f"{namespace}/{pod}: incident {incident_id} tried again: {outcome.describe()}"
    return _action_reply(lines, plain, incident_id, tried, MessageKind.RETRY, action_id)


def _failed_before(outcome: ActionOutcome, outcomes: Sequence[ActionOutcome]) -> bool:
    """The latest outcome of ``outcome``'s action before it (``outcomes``: the incident's, up to it
    or with it) was a failure, not a hold."""
    earlier = list(outcomes)
    if outcome in earlier:
        earlier = earlier[: earlier.index(outcome)]
    for previous in reversed(earlier):
        if previous.action == outcome.action and previous.status in (
            OutcomeStatus.FAILED,
            OutcomeStatus.WITHHELD,
        ):
            return previous.status is OutcomeStatus.FAILED
    return False


def _action_reply(
    lines: _Lines, plain: str, incident_id: str, when: str, kind: MessageKind, action_id: int
) -> SlackMessage:
    """A thread reply telling an action journaled under the incident (``action_id``: found again
    by it): ``lines``, then the incident and when; ``plain`` its fallback text."""
    blocks = (_section(lines), _context([f"Incident {code(incident_id, 80)} · {when}"]))
    return SlackMessage(
        text=escape(plain, FALLBACK_LIMIT),
        blocks=blocks,
        incident_id=incident_id,
        kind=kind,
        action_id=action_id,
    )


__all__ = [
    "EVENT_TYPE",
    "MessageKind",
    "SlackMessage",
    "format_utc",
    "output_disagreements",
    "render_by_hand",
    "render_incident",
    "render_lapse",
    "render_repeat",
    "render_retry",
    "reopens_line",
]
