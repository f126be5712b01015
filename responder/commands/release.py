"""`serving-guard release --namespace NS POD [POD...] --reason WHY [--incident ID]`: lift quarantines,
undo our policy patches and record who and why (on each pod, as an Event, and in the journal when
reachable, under the incident with --incident, which the running responder then tells in Slack)."""

from __future__ import annotations

import argparse
import contextlib
import sys

from responder.actions.outcome import ActionOutcome, OutcomeStatus
from responder.actions.quarantine import ClusterActions
from responder.cluster.api import KubeGateway
from responder.commands.by_hand import (
    BY_HELP,
    add_incident_option,
    checked_incident,
    checked_pods,
    cluster_settings,
    incident_report,
    live_uid,
    open_journal,
    record,
    refuse_a_pod_made_again,
    say_told,
    stated_reason,
    who_acts,
)
from responder.config import Config, load_config


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "pods", nargs="+", metavar="POD", help="the quarantined pods' names (released in this order)"
    )
    parser.add_argument("--namespace", "-n", required=True, help="the pods' namespace")
    parser.add_argument("--reason", required=True, help="why it is safe to release (recorded)")
    parser.add_argument("--by", help=BY_HELP)
    add_incident_option(parser, "release")
    parser.add_argument("--config", help="the responder's config (label, policy names, cluster, journal)")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster or ~/.kube/config)")
    parser.add_argument("--context", help="kubeconfig context")


def run(args: argparse.Namespace) -> int:
    # Everything that can be refused is checked before the cluster is touched.
    pods = checked_pods(args.namespace, args.pods)
    reason = stated_reason(args.reason)
    by = who_acts(args.by)
    incident_id = checked_incident(args.incident)
    config = load_config(args.config) if args.config else Config()
    cluster, names = cluster_settings(args, config.cluster)
    released = 0
    with contextlib.ExitStack() as stack:
        journal = open_journal(args, config, stack)
        report = incident_report(journal, incident_id)
        gateway = KubeGateway.from_config(cluster, names)
        actions = ClusterActions.of_config(gateway, config)
        for index, pod in enumerate(pods):
            if report is not None:
                refuse_a_pod_made_again(
                    report, incident_id, f"{args.namespace}/{pod}", live_uid(gateway, args.namespace, pod)
                )
            outcome = actions.release(
                args.namespace, pod, by=by, reason=reason, labels_known=bool(args.config)
            )
            print(f"{args.namespace}/{pod}: {_said(outcome)}", flush=True)
            released += outcome.status is OutcomeStatus.RELEASED
            told = record(
                journal,
                outcome,
                (args.namespace, pod),
                by,
                reason=reason,
                incident_id=incident_id,
                not_done=("released", pods[index + 1 :]),
            )
            say_told(told, f"{args.namespace}/{pod}", incident_id, config.slack.mode)
    if released < len(pods):  # one pod too, as quarantine and block close
        print(f"{len(pods) - released} of {len(pods)} pods not released", file=sys.stderr)
    return 0 if released == len(pods) else 1


def _said(outcome: ActionOutcome) -> str:
    """The release's outcome for the terminal: a pod the API does not know is "not found", as the
    other commands by hand say it (the API's own words would say it twice)."""
    return "not found" if outcome.status is OutcomeStatus.POD_GONE else outcome.describe()
