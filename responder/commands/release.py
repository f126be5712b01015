"""`serving-guard release --namespace NS POD --reason WHY`: lift a quarantine, undo our policy
patches and record who and why (on the pod, as an Event, and in the journal when reachable)."""

from __future__ import annotations

import argparse
import getpass
import os
import socket

from responder.actions.events import EventRecorder
from responder.actions.outcome import OutcomeStatus
from responder.actions.quarantine import ClusterActions
from responder.cluster.api import KubeGateway
from responder.cluster.enrich import valid_name
from responder.config import Cluster, Config, load_config
from responder.errors import UserError
from responder.journal import Journal


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pod", help="the quarantined pod's name")
    parser.add_argument("--namespace", "-n", required=True)
    parser.add_argument("--reason", required=True, help="why it is safe to release (recorded)")
    parser.add_argument("--by", help="who releases (default: USER@host)")
    parser.add_argument("--config", help="the responder's config (label, policy names, cluster, journal)")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster or ~/.kube/config)")
    parser.add_argument("--context", help="kubeconfig context")


def run(args: argparse.Namespace) -> int:
    for what, value in (("--namespace", args.namespace), ("pod", args.pod)):
        if not valid_name(value):
            raise UserError(f"{what}: {value!r} is not a Kubernetes object name")
    config = load_config(args.config) if args.config else Config()
    cluster: Cluster = config.cluster
    if args.kubeconfig or args.context:
        cluster = cluster.model_copy(
            update={
                "kubeconfig": args.kubeconfig or cluster.kubeconfig,
                "context": args.context or cluster.context,
            }
        )
    gateway = KubeGateway.from_config(cluster)
    by = args.by or f"{getpass.getuser()}@{socket.gethostname()}"
    actions = ClusterActions(gateway, config.quarantine, EventRecorder(gateway))
    outcome = actions.release(args.namespace, args.pod, by=by, reason=args.reason)
    if args.config and os.path.exists(config.journal.path):
        with Journal(
            config.journal.path,
            max_bytes=config.journal.max_bytes,
            retention_seconds=config.journal.retention_days * 86400,
        ) as journal:
            journal.run_sync(
                Journal.op_record_action(None, None, args.namespace, args.pod, outcome, actor=by)
            )
    print(f"{args.namespace}/{args.pod}: {outcome.describe()}")
    return 0 if outcome.status is OutcomeStatus.RELEASED else 1
