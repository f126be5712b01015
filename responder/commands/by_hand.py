"""What the commands a person acts with (`quarantine`, `release`) share: the text they record,
who acts, how they reach the cluster, and the journal that records each action before the next."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import getpass
import os
import socket
import sqlite3
import sys
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from responder.actions.outcome import BY_HAND, REASON, RECORDED_RELEASE, ActionOutcome, OutcomeStatus
from responder.actions.pod_records import RELEASED_AT
from responder.actions.quarantine import ClusterActions
from responder.alert import Alert, Priority
from responder.audit.query import AuditQuery
from responder.cluster.api import KubeError, KubeGateway
from responder.cluster.context import PodContext
from responder.cluster.enrich import LookupStatus, PodDirectory, valid_name
from responder.cluster.kubeconfig import CONFIG_KEYS, FLAGS, SettingNames
from responder.cluster.verify import VerificationStatus, verify_alert
from responder.config import Cluster, Config, SlackMode, load_config
from responder.errors import UserError
from responder.incident import BY_PLACEHOLDER, REASON_PLACEHOLDERS, IncidentReport
from responder.journal.store import UNREADABLE_RECORD, Journal, report_from_record
from responder.sender import is_drill


def checked_pods(namespace: str, pods: list[str]) -> list[str]:
    """The pods' names, each a Kubernetes name (as the namespace), a name given twice once."""
    for what, value in (("--namespace", namespace), *(("pod", pod) for pod in pods)):
        if not valid_name(value):
            raise UserError(f"{what}: {value!r} is not a Kubernetes object name")
    return list(dict.fromkeys(pods))


def checked_incident(incident_id: str | None) -> str | None:
    """--incident, when given: an incident's id (the journal records the action under it)."""
    if incident_id is None:
        return None
    try:
        return AuditQuery.check_incident(incident_id, "--incident")
    except ValueError as exc:
        raise UserError(str(exc)) from None


def add_incident_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--incident",
        help=f"the incident this {what} answers (inc-..., as Slack names it): journaled under it and, with"
        " --config, told in the incident's Slack thread by the running responder",
    )


def recorded_text(what: str, value: str) -> str:
    """Text the command records (on the pod, in an Event, in the journal): not blank, without
    control characters (an escape sequence would act on every terminal that shows the record, this
    command's own output first), and text that can be stored (bytes that are not UTF-8 reach Python
    as lone surrogates, which cannot)."""
    if not value.strip():
        raise UserError(f"{what}: must not be empty")
    for index, char in enumerate(value):
        if unicodedata.category(char) == "Cc":
            raise UserError(
                f"{what}: control characters are not allowed (U+{ord(char):04X} at character {index + 1})"
            )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        char = value[exc.start]
        # A byte that is not UTF-8 arrives as U+DC80..U+DCFF (Python's surrogateescape): name the byte.
        byte = f" (byte 0x{ord(char) - 0xDC00:02x})" if "\udc80" <= char <= "\udcff" else ""
        raise UserError(f"{what}: not UTF-8 text at character {exc.start + 1}{byte}") from None
    return value


# Set in every container of a Kubernetes pod: there USER@host names the pod's account (nonroot@
# the responder's pod, when run with kubectl exec as Slack says), not the person who acts.
IN_POD_ENV = "KUBERNETES_SERVICE_HOST"
BY_HELP = "who acts, recorded as who (required inside a Kubernetes pod; elsewhere default: USER@host)"


def who_acts(by: str | None) -> str:
    """--by as recorded, or USER@host when not given (checked as --by would be). Refused: a --by
    that still holds Slack's placeholder, and no --by inside a pod (USER@host is no person there)."""
    if by is not None:
        if BY_PLACEHOLDER in by:
            raise UserError(
                f"--by {by!r}: replace {BY_PLACEHOLDER} with your own name (it is recorded as who acted);"
                " nothing was done"
            )
        return recorded_text("--by", by)
    if os.environ.get(IN_POD_ENV):
        raise UserError(
            "--by is required inside a Kubernetes pod: USER@host here names the pod's account, not you;"
            " pass --by 'your name' (with kubectl exec: --by \"$USER\"); nothing was done"
        )
    return recorded_text(
        "the default --by (USER@host; set --by)", f"{getpass.getuser()}@{socket.gethostname()}"
    )


def stated_reason(reason: str) -> str:
    """--reason as recorded; refused while it still holds Slack's placeholder."""
    for placeholder in REASON_PLACEHOLDERS:
        if placeholder in reason:
            raise UserError(
                f"--reason {reason!r}: replace {placeholder} with the reason (it is recorded on the pod,"
                " in the Event and the journal); nothing was done"
            )
    return recorded_text("--reason", reason)


def cluster_settings(args: argparse.Namespace, configured: Cluster) -> tuple[Cluster, SettingNames]:
    """The config's cluster settings with --kubeconfig and --context over them, and what a message
    calls each: the flag when the value came from it, or when there is no --config to set it in;
    else the config's key. (An empty flag is taken as given: it is refused, not passed over.)"""
    updates = {
        key: value
        for key, value in (("kubeconfig", args.kubeconfig), ("context", args.context))
        if value is not None
    }
    names = SettingNames(
        kubeconfig=FLAGS.kubeconfig if "kubeconfig" in updates or not args.config else CONFIG_KEYS.kubeconfig,
        context=FLAGS.context if "context" in updates or not args.config else CONFIG_KEYS.context,
    )
    return configured.model_copy(update=updates), names


def open_journal(
    args: argparse.Namespace, config: Config, stack: contextlib.ExitStack, *, cuts: bool = False
) -> Journal | None:
    """The journal named by --config, when it exists; opened before anything is changed, so that
    when it cannot record an action, nothing is done. --incident must name one of its incidents, in
    --namespace: a mistyped id would file the action under no incident, and tell no one; with
    ``cuts`` (quarantine, block), not a drill's."""
    if not args.config or not os.path.exists(config.journal.path):
        if args.incident is not None:
            # Else the action is done, recorded nowhere and told to no one, as if it were.
            where = (
                f"the journal {config.journal.path} is not here (run where the responder runs)"
                if args.config
                else "give the responder's --config, where its journal is"
            )
            raise UserError(
                f"--incident {args.incident}: it is recorded in the responder's journal, and {where};"
                " nothing was done (or leave --incident out: then nothing is journaled or told in Slack)"
            )
        return None
    journal = stack.enter_context(
        Journal(
            config.journal.path,
            max_bytes=config.journal.max_bytes,
            retention_seconds=config.journal.retention_days * 86400,
        )
    )
    if args.incident is not None:
        record = journal.incident_record(args.incident)
        if record is None:
            raise UserError(
                f"--incident {args.incident}: not in the journal {journal.path} (mistyped, or pruned"
                " since); nothing was done: give the id the Slack message shows, or leave --incident out"
            )
        if record["namespace"] != args.namespace:
            raise UserError(
                f"--incident {args.incident}: an incident in namespace {record['namespace']!r}, not"
                f" {args.namespace!r}; nothing was done"
            )
        others = sorted({pod for pod in args.pods if pod != record["pod"]})
        if others:
            # Recorded under it, the action would pass for one on the incident's own pod (its
            # story, its Slack post, and what the responder proves again while alerts come).
            raise UserError(
                f"--incident {args.incident}: an incident about pod {record['pod']!r}, not"
                f" {', '.join(repr(pod) for pod in others)}; nothing was done (act on other pods without"
                " --incident, or under their own incidents)"
            )
        if cuts:
            _refuse_a_drills_incident(args.incident, record.get("first_alert"))
    return journal


def _refuse_a_drills_incident(incident_id: str, first: Alert | None) -> None:
    """Refuse (UserError, before anything is done) to cut a pod under a drill's incident, or under
    one whose opening alert (``first``: None when the journal cannot read it) cannot tell."""
    if first is None:
        raise UserError(
            f"--incident {incident_id}: its opening alert cannot be read from the journal, so whether"
            " it is a drill's cannot be told; nothing was done (leave --incident out to act all the same)"
        )
    if is_drill(first.sender):
        # A drill's post gives no by-hand command: one pasted from elsewhere would cut a pod that
        # is not under attack and file it as the drill's answer.
        raise UserError(
            f"--incident {incident_id}: a drill's incident (its alerts came with the drill token or"
            " ingest --drill), not an attack's; nothing was done (to cut the pod all the same, leave"
            " --incident out)"
        )


def record(
    journal: Journal | None,
    outcome: ActionOutcome,
    where: tuple[str, str],
    by: str,
    *,
    reason: str,
    incident_id: str | None = None,
    not_done: tuple[str, list[str]] = ("", []),
) -> bool:
    """Journal ``outcome`` (on pod ``where``, by ``by``, for ``reason``), or stop the command: every
    action it takes is one the journal records. Under an incident posted to Slack, the running
    responder then tells the incident's thread; True when it will. ``not_done``: the word for the
    pods left, and those pods."""
    if journal is None:
        return False
    namespace, pod = where
    recorded = bool(outcome.extra.get(RECORDED_RELEASE))
    if recorded:  # a rerun: the release the pod records, by its person, told once as if found
        by, reason = str(outcome.extra[BY_HAND]), str(outcome.extra[REASON])
    told = dataclasses.replace(outcome, extra={**outcome.extra, BY_HAND: by, REASON: reason})
    now = time.time_ns()
    op = (
        Journal.op_record_release_found(
            incident_id, namespace, pod, told, by, now, tell=True, released_at=str(outcome.extra[RELEASED_AT])
        )
        if recorded and incident_id is not None
        else Journal.op_record_action_by_hand(incident_id, namespace, pod, told, by, now)
    )
    try:
        queued = journal.run_sync(op)
    except (sqlite3.Error, OSError) as exc:
        word, left = not_done
        raise UserError(
            f"journal {journal.path}: the {outcome.action} above is done in the cluster,"
            f" but recording it failed: {exc}" + (f"; not {word}: {', '.join(left)}" if left else "")
        ) from None
    return queued is not None


def incident_report(journal: Journal | None, incident_id: str | None) -> IncidentReport | None:
    """The incident's report as journaled, for the refusals below; None without --incident, or when
    its record cannot be read (open_journal's checks on the record are all there are then)."""
    if journal is None or incident_id is None:
        return None
    try:
        record = journal.incident_record(incident_id)
        return report_from_record(record) if record is not None else None
    except UNREADABLE_RECORD:
        return None


def refuse_a_pod_made_again(
    report: IncidentReport | None, incident_id: str | None, where: str, live_uid: str | None
) -> None:
    """Refuse (UserError, before anything is done) to act under ``incident_id`` (its ``report``)
    on a pod made again under its name since the incident (a StatefulSet's: another uid): what the
    incident put on its pod went with that pod, and recorded under it, the action would pass for
    one on it."""
    if report is None or not live_uid:
        return
    uid = report.pod.uid if report.pod is not None else ""
    if uid and uid != live_uid:
        raise UserError(
            f"--incident {incident_id}: {where} was made again since the incident (its pod had uid"
            f" {uid}, this one has {live_uid}): what the incident put on its pod went with that pod;"
            " nothing was done (act on this pod without --incident, or under its own incident)"
        )


def refuse_an_alert_the_pod_does_not_verify(
    report: IncidentReport | None, incident_id: str | None, where: str, pod: PodContext, *, check_node: bool
) -> None:
    """Refuse (UserError, before anything is done) to cut ``pod`` under an incident (its ``report``)
    whose alert was never verified (the pod unread, or its container not listed yet, when it came)
    and does not match the pod now: a possible forgery, whose Slack post may have offered the
    command before a check could tell (review-52a M1). An incident verified when it came stands:
    its container may have restarted since (the attacker's `kill 1`), which must not hold back its
    quarantine."""
    if report is None or report.verification.verified:
        return
    check = verify_alert(report.alert, pod, check_node=check_node)
    if check.status is VerificationStatus.UNVERIFIED:
        raise UserError(
            f"--incident {incident_id}: its alert was never verified against the pod, and {where} does"
            f" not match it now ({check.reason}): a possible forgery; nothing was done (to cut the pod"
            " all the same, on your own judgement, leave --incident out)"
        )


def live_uid(gateway: KubeGateway, namespace: str, name: str) -> str | None:
    """The uid of the pod of that name now; None when it cannot be read (the action says why)."""
    try:
        uid = (gateway.get_pod(namespace, name).get("metadata") or {}).get("uid")
    except KubeError:
        return None
    return uid if isinstance(uid, str) else None


def say_told(told: bool, where: str, incident_id: str | None, slack: SlackMode) -> None:
    """Say that the running responder will tell Slack of the action: in the incident's thread, or
    (an incoming webhook has no threads, nor edits its post) in the channel."""
    if not told:
        return
    if slack is SlackMode.WEBHOOK:
        said = f"tells the channel of incident {incident_id} (an incoming webhook has no threads)"
    else:
        said = f"tells incident {incident_id}'s Slack thread"
    print(f"{where}: the responder {said}", flush=True)


@dataclass(frozen=True)
class PodAction:
    """An action a person takes on pods by hand (``quarantine``, ``block``)."""

    # What done is called ("quarantined"), and the outcome status that means it.
    done_word: str
    done: OutcomeStatus
    # What the closing tally calls the pods not done ("N of M pods not isolated").
    tally_word: str
    # The rule a pod annotation or Event names for an action by hand.
    rule: str
    # (actions, pod, the alert standing for the person's request, "by WHO: WHY") -> outcome
    act: Callable[[ClusterActions, PodContext, Alert, str], ActionOutcome]
    # What the action's own options need of the config, refused (UserError) before the cluster is touched.
    check: Callable[[Config], None] | None = None


def act_on_pods(args: argparse.Namespace, action: PodAction) -> int:
    """Take ``action`` on each of --namespace's pods in turn, printing and journaling each outcome.
    Protected namespaces and the opt-in label still hold (the platform's contract); the circuit
    breaker and dry-run do not (they govern what the responder does on its own). Exit 1 unless
    every pod ended ``action.done``."""
    config = load_config(args.config) if args.config else Config()
    pods = checked_pods(args.namespace, args.pods)
    checked_incident(args.incident)
    if args.namespace in config.guardrails.protected_namespaces:
        raise UserError(
            f"--namespace {args.namespace}: protected (guardrails.protected_namespaces):"
            f" never {action.done_word}"
        )
    if action.check is not None:
        action.check(config)
    reason, by = stated_reason(args.reason), who_acts(args.by)
    cluster, names = cluster_settings(args, config.cluster)
    opt_in = config.guardrails.enforce_namespace_label
    done = 0
    with contextlib.ExitStack() as stack:
        journal = open_journal(args, config, stack, cuts=True)
        report = incident_report(journal, args.incident)
        gateway = KubeGateway.from_config(cluster, names)
        directory = PodDirectory(gateway, ttl_seconds=0)
        actions = ClusterActions.of_config(gateway, config)
        for index, name in enumerate(pods):
            where = f"{args.namespace}/{name}"
            lookup = directory.lookup(args.namespace, name, fresh=True)
            if lookup.status is LookupStatus.NOT_FOUND or lookup.pod is None:
                found = (
                    "not found"
                    if lookup.status is LookupStatus.NOT_FOUND
                    else f"lookup failed: {lookup.error}"
                )
                print(f"{where}: {found}", flush=True)
                continue
            pod = lookup.pod
            refuse_a_pod_made_again(report, args.incident, where, pod.uid)
            refuse_an_alert_the_pod_does_not_verify(
                report, args.incident, where, pod, check_node=config.cluster.verify_node
            )
            if opt_in and pod.namespace_labels_error is not None:
                print(
                    f"{where}: not {action.done_word}: whether namespace {args.namespace} opted in"
                    f" ({opt_in}=true) is unknown: {pod.namespace_labels_error}",
                    flush=True,
                )
                continue
            if opt_in and pod.namespace_labels.get(opt_in) != "true":
                print(
                    f"{where}: not {action.done_word}: namespace {args.namespace} is not opted in"
                    f" ({opt_in}=true)",
                    flush=True,
                )
                continue
            alert = Alert(
                rule=action.rule,
                priority=Priority.NOTICE,
                time_ns=time.time_ns(),
                source="serving-guard",
                output=f"{action.rule} by {by}: {reason}",
                alert_id="",
            )
            outcome = action.act(actions, pod, alert, f"by {by}: {reason}")
            print(
                f"{where}: {outcome.describe()}" + (f" ({outcome.detail})" if outcome.detail else ""),
                flush=True,
            )
            done += outcome.status is action.done
            told = record(
                journal,
                outcome,
                (args.namespace, name),
                by,
                reason=reason,
                incident_id=args.incident,
                not_done=(action.done_word, pods[index + 1 :]),
            )
            say_told(told, where, args.incident, config.slack.mode)
    if done < len(pods):
        print(f"{len(pods) - done} of {len(pods)} pods not {action.tally_word}", file=sys.stderr)
    return 0 if done == len(pods) else 1
