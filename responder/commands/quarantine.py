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

from responder.actions.outcome import OutcomeStatus
from responder.commands import by_hand
from responder.config import Isolation

# What the pod's serving-guard.io/rule annotation says of a quarantine made by hand.
MANUAL_RULE = "quarantined by hand"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pods", nargs="+", metavar="POD", help="the pods' names (quarantined in this order)")
    parser.add_argument("--namespace", "-n", required=True, help="the pods' namespace")
    parser.add_argument(
        "--reason", required=True, help="why (recorded on the pod, in the Event and the journal)"
    )
    parser.add_argument("--by", help=by_hand.BY_HELP)
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


def run(args: argparse.Namespace) -> int:
    isolate = Isolation(args.isolate) if args.isolate else None
    return by_hand.act_on_pods(
        args,
        by_hand.PodAction(
            done_word="quarantined",
            done=OutcomeStatus.QUARANTINED,
            tally_word="isolated",
            rule=MANUAL_RULE,
            act=lambda actions, pod, alert, reason: actions.quarantine(
                pod, alert, args.incident or "", reason, dry_run=False, isolate=isolate
            ),
        ),
    )
