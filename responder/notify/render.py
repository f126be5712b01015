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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from responder.actions.outcome import (
    BLOCK_DESTINATION,
    RECHECK,
    THREAD_KEPT_OUT,
    ActionOutcome,
    OutcomeStatus,
)
from responder.alert import FIELD_IMAGE, FIELD_IMAGE_TAG, Priority
from responder.cluster.context import ContainerInfo
from responder.cluster.verify import VerificationStatus
from responder.config import ActionName
from responder.incident import PLAIN_COMMANDS, TRIES_OVER, CommandForm, IncidentReport
from responder.notify.alert_lines import (
    FIELD_IMAGE_DIGEST,
    alert_other_fields,
    alert_output_lines,
    alert_process_lines,
    alert_target_lines,
)
from responder.notify.blocks import (
    FALLBACK_LIMIT,
    HEADER_LIMIT,
    MAX_BLOCKS,
    MAX_SECTION_FIELDS,
    NAME_LIMIT,
    REASON_LIMIT,
    SHORT_LIMIT,
    SizedLines,
    code_or_unknown,
    context_block,
    format_utc,
    header_block,
    section_block,
    section_field,
)
from responder.notify.escape import code, code_block, defuse, escape, plain
from responder.notify.outcome_lines import (
    action_lines,
    beyond_who_and_why,
    outcome_line,
    outcome_words,
    short_outcome,
)
from responder.policy import DRY_RUN_BY_DRILL, Decision
from responder.sender import Proof, Sender

# Message metadata that marks our posts, so a restarted responder can find what it posted.
EVENT_TYPE = "serving_guard_incident"

# The most actions the context line says the finishing time of (the latest; the rest counted).
FINISHED_SHOWN = 5

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


def _unverified_lines(report: IncidentReport) -> list[str]:
    alert = report.alert
    if report.verification.status is VerificationStatus.POD_NOT_FOUND:
        return [
            ":no_entry: *Unverified alert: the pod it names was not found, so it cannot be verified;"
            " it may be forged.*",
            f"This alert names pod {code(report.key.pod_ref, NAME_LIMIT)}, which the cluster does not"
            " have (never did, or no longer does): nothing it says could be checked.",
            _forger_hint(alert.sender) + f", and the Falco on node {code_or_unknown(alert.hostname)}.",
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
        f" {code_or_unknown(alert.hostname)}.",
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
    container_text = code_or_unknown(container.name if container is not None else None)
    if alert.container_id:
        container_text += " " + code(alert.container_id, 80)
    pod_label = "Pod (as the alert claims)" if _claimed_only(report) else "Pod"
    fields = [
        section_field(pod_label, code_or_unknown(_pod_ref(report))),
        section_field("Workload", code_or_unknown(f"{workload.kind}/{workload.name}" if workload else None)),
        section_field("Node", code_or_unknown(node)),
        section_field("Container", container_text),
        section_field("Image", code_or_unknown(image, 600)),
        section_field("Digest", code_or_unknown(digest, 200)),
    ]
    return {"type": "section", "fields": fields[:MAX_SECTION_FIELDS]}


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
    source = f"Falco on {code_or_unknown(alert.hostname)} · source {code(alert.source, 80)}"
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
        said = f"[{alert.priority.label}] {rule} in {where}: {defuse(short_outcome(report))}"
    reopens = report.decision.reopens
    if reopens is not None:
        said += f" (reopens {reopens.incident_id}: its {reopens.lapse.what} no longer held)"
    if report.key.drill:
        said = _DRILL_PREFIX + said
    return escape(said, FALLBACK_LIMIT)


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
    blocks: list[dict[str, Any]] = [header_block(_header_text(report))]
    headline = SizedLines()
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
    headline.extend(action_lines(report, tries_by_itself))
    blocks.append(section_block(headline))
    blocks.append(_pod_fields(report))
    blocks.append(section_block(alert_process_lines(report.alert)))
    for lines in (alert_target_lines(report.alert), alert_other_fields(report.alert)):
        if lines:
            blocks.append(section_block(lines))
    if report.alert.output:
        blocks.append(section_block(alert_output_lines(report.alert)))
    where = _where_run(form)
    release = report.release_command(form)
    if release:
        undo = SizedLines()
        if report.labelled:
            undo.add(_STILL_RUNS)
        undo.add(f"*To release the pod* once it is safe{where}:")
        undo.add(code_block(release, 1000))
        undo.add(_RELEASES_ALL)
        blocks.append(section_block(undo))
    blocks.extend(_by_hand_sections(report, form, where))
    blocks.append(
        context_block(
            _context_texts(report, count_kept=in_workload_thread, repeats_in_thread=repeats_in_thread)
        )
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
        instead = SizedLines()
        instead.add(_DRILL_NO_COMMAND)
        return [section_block(instead)]
    sections = []
    for what, by_hand in offered:
        act = SizedLines()
        if what == "quarantine it" and report.predicted_in_cut:
            act.add(
                "*The pod is in this cut already* (another incident's quarantine, or a person's):"
                f" nothing more to do. To record this incident's quarantine all the same{where}:"
            )
        else:
            act.add(f"*To {what} by hand* once you have looked{where}:")
        act.add(code_block(by_hand, 1000))
        sections.append(section_block(act))
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
    lines = SizedLines()
    lines.add(f"{head}: {code(alert.rule, NAME_LIMIT)}")
    lines.add(
        f"*Pod* {code_or_unknown(report.key.pod or None)}"
        f" in namespace {code_or_unknown(report.key.namespace or None)}"
        + (" (as the alert claims)" if _claimed_only(report) else "")
    )
    lines.add("*Outcome*: " + outcome_words(report))
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
    lines = SizedLines()
    drill = _DRILL_PREFIX if report.key.drill else ""
    if top_level:
        lines.add(f"{drill}{code(report.alert.rule, NAME_LIMIT)} on {code(report.key.pod_ref, NAME_LIMIT)}:")
    lines.add(seen)
    lines.add("Now: " + outcome_words(report))
    last = format_utc(report.last_seen_ns)
    rule = plain_words(report.alert.rule)
    summary = f"{drill}{rule} in {defuse(report.key.pod_ref)}: seen {times}, last at {last}"
    text = escape(summary, FALLBACK_LIMIT)
    blocks = (
        section_block(lines),
        context_block([f"Incident {code(report.incident_id, 80)}"]),
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
    lines = SizedLines()
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
        section_block(lines),
        section_block(alert_process_lines(after.alert)),
        context_block(
            [f"Incident {code(report.incident_id, 80)} · first alert since the release {alert_id}"]
        ),
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
    lines = SizedLines()
    if outcome.ok:
        # A release's detail opens with who and why, said here apart.
        done = (
            outcome.describe()
            if outcome.status is not OutcomeStatus.RELEASED
            else beyond_who_and_why(outcome, actor)
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
        gone = SizedLines()
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
    lines = SizedLines()
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
    lines = SizedLines()
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
        outcome_line(outcome, decision, command="in the incident's message", tries_by_itself=tries_by_itself)
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
    lines: SizedLines, plain: str, incident_id: str, when: str, kind: MessageKind, action_id: int
) -> SlackMessage:
    """A thread reply telling an action journaled under the incident (``action_id``: found again
    by it): ``lines``, then the incident and when; ``plain`` its fallback text."""
    blocks = (section_block(lines), context_block([f"Incident {code(incident_id, 80)} · {when}"]))
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
    "render_by_hand",
    "render_incident",
    "render_lapse",
    "render_repeat",
    "render_retry",
]
