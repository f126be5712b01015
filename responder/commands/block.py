"""`serving-guard block --namespace NS POD [POD...] --address IP --reason WHY`: block one destination
for pods by hand.

For a destination block the responder only predicted (a policy on trial, dry-run), once a person has
looked; or for an address a person found. The same pod's own block policy, checks and proof as the
responder's block_destination, recorded who and why (an Event, and the journal when reachable, under
the incident it answers with --incident). Protected namespaces and the opt-in label still hold.
"""

from __future__ import annotations

import argparse

from responder.actions import destination
from responder.actions.outcome import OutcomeStatus
from responder.commands import by_hand
from responder.config import Config
from responder.errors import UserError

# What an Event says of a block made by hand.
MANUAL_RULE = "destination blocked by hand"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pods", nargs="+", metavar="POD", help="the pods' names (blocked in this order)")
    parser.add_argument("--namespace", "-n", required=True, help="the pods' namespace")
    parser.add_argument(
        "--address",
        required=True,
        help="the public IP address the pods may no longer reach (Slack gives the alert's)",
    )
    parser.add_argument("--reason", required=True, help="why (recorded in the Event and the journal)")
    parser.add_argument("--by", help=by_hand.BY_HELP)
    by_hand.add_incident_option(parser, "block")
    parser.add_argument(
        "--config",
        required=True,
        help="the responder's config: its block settings and quarantine labels, which the block"
        " policy must know (a pod in an egress quarantine is left out of it), guardrails, cluster, journal",
    )
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster or ~/.kube/config)")
    parser.add_argument("--context", help="kubeconfig context")


def run(args: argparse.Namespace) -> int:
    address = by_hand.recorded_text("--address", args.address)

    def blockable(config: Config) -> None:
        target = destination.target_from_text("--address", address, config.block_destination.never_block)
        if isinstance(target, str):
            raise UserError(f"{target}; nothing was done")
        # As the config check says it where a policy blocks: the API server would refuse the block.
        too_long = config.cut_values_problem("a block")
        if too_long is not None:
            raise UserError(f"quarantine.label_value: {too_long}; nothing was done")

    return by_hand.act_on_pods(
        args,
        by_hand.PodAction(
            done_word="blocked",
            done=OutcomeStatus.BLOCKED,
            tally_word="blocked",
            rule=MANUAL_RULE,
            act=lambda actions, pod, alert, _reason: actions.block_destination(
                pod, alert, dry_run=False, address=address
            ),
            check=blockable,
        ),
    )
