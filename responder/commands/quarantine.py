"""`serving-guard quarantine --namespace NS POD [POD...] --reason WHY`: quarantine pods by hand.

For what the responder only predicted (a policy on trial, dry-run) or held back (the circuit
breaker), once a person has looked. The same label, deny-all policy and leak check as the
responder's own quarantine, recorded who and why (on the pod, as an Event, and in the journal when
reachable, under the incident it answers with --incident). Protected namespaces and the opt-in
label still hold: they are the platform's contract. The circuit breaker and dry-run do not: they
govern what the responder does on its own.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time

from responder.actions.events import EventRecorder
from responder.actions.outcome import OutcomeStatus
from responder.actions.quarantine import ClusterActions
from responder.alert import Alert, Priority
from responder.cluster.api import KubeGateway
from responder.cluster.enrich import LookupStatus, PodDirectory
from responder.commands import by_hand
from responder.config import Config, Isolation, load_config
from responder.errors import UserError

# What the pod's serving-guard.io/rule annotation says of a quarantine made by hand.
MANUAL_RULE = "quarantined by hand"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pods", nargs="+", metavar="POD", help="the pods' names (quarantined in this order)")
    parser.add_argument("--namespace", "-n", required=True)
    parser.add_argument(
        "--reason", required=True, help="why (recorded on the pod, in the Event and the journal)"
    )
    parser.add_argument("--by", help="who quarantines (default: USER@host)")
    by_hand.add_incident_option(parser, "quarantine")
    parser.add_argument(
        "--isolate",
        choices=[isolation.value for isolation in Isolation],
        help="the cut (default: the config's quarantine.isolate; Slack gives the policy's): egress lets"
        " the pod go on serving; a pod already in another cut is widened, never narrowed",
    )
    parser.add_argument(
        "--config", help="the responder's config (label, policy names, guardrails, cluster, journal)"
    )
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster or ~/.kube/config)")
    parser.add_argument("--context", help="kubeconfig context")


def _checked(args: argparse.Namespace, config: Config) -> tuple[list[str], str, str]:
    """The pods, the reason and who: everything refusable, refused before the cluster is touched."""
    pods = by_hand.checked_pods(args.namespace, args.pods)
    by_hand.checked_incident(args.incident)
    if args.namespace in config.guardrails.protected_namespaces:
        raise UserError(
            f"--namespace {args.namespace}: protected (guardrails.protected_namespaces): never quarantined"
        )
    return pods, by_hand.recorded_text("--reason", args.reason), by_hand.who_acts(args.by)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config) if args.config else Config()
    pods, reason, by = _checked(args, config)
    cluster, names = by_hand.cluster_settings(args, config.cluster)
    opt_in = config.guardrails.enforce_namespace_label
    done = 0
    with contextlib.ExitStack() as stack:
        journal = by_hand.open_journal(args, config, stack)
        gateway = KubeGateway.from_config(cluster, names)
        directory = PodDirectory(gateway, ttl_seconds=0)
        actions = ClusterActions(
            gateway, config.quarantine, EventRecorder(gateway), blocks=config.block_destination
        )
        for name in pods:
            where = f"{args.namespace}/{name}"
            lookup = directory.lookup(args.namespace, name, fresh=True)
            if lookup.status is LookupStatus.NOT_FOUND or lookup.pod is None:
                detail = (
                    "not found"
                    if lookup.status is LookupStatus.NOT_FOUND
                    else f"lookup failed: {lookup.error}"
                )
                print(f"{where}: {detail}", flush=True)
                continue
            pod = lookup.pod
            if opt_in and pod.namespace_labels.get(opt_in) != "true":
                print(
                    f"{where}: not quarantined: namespace {args.namespace} is not opted in ({opt_in}=true)",
                    flush=True,
                )
                continue
            alert = Alert(
                rule=MANUAL_RULE,
                priority=Priority.NOTICE,
                time_ns=time.time_ns(),
                source="serving-guard",
                output=f"{MANUAL_RULE} by {by}: {reason}",
                alert_id="",
            )
            outcome = actions.quarantine(
                pod,
                alert,
                args.incident or "",
                f"by {by}: {reason}",
                dry_run=False,
                isolate=Isolation(args.isolate) if args.isolate else None,
            )
            print(
                f"{where}: {outcome.describe()}" + (f" ({outcome.detail})" if outcome.detail else ""),
                flush=True,
            )
            done += outcome.status is OutcomeStatus.QUARANTINED
            left = pods[pods.index(name) + 1 :]
            told = by_hand.record(
                journal,
                outcome,
                (args.namespace, name),
                by,
                reason=reason,
                incident_id=args.incident,
                not_done=("quarantined", left),
            )
            by_hand.say_told(told, where, args.incident)
    if done < len(pods):
        print(f"{len(pods) - done} of {len(pods)} pods not isolated", file=sys.stderr)
    return 0 if done == len(pods) else 1
