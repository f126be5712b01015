"""`serving-guard release --namespace NS POD [POD...] --reason WHY`: lift quarantines, undo our
policy patches and record who and why (on each pod, as an Event, and in the journal when reachable)."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import socket
import sqlite3
import sys
import unicodedata

from responder.actions.events import EventRecorder
from responder.actions.outcome import OutcomeStatus
from responder.actions.quarantine import ClusterActions
from responder.cluster.api import KubeGateway
from responder.cluster.enrich import valid_name
from responder.cluster.kubeconfig import CONFIG_KEYS, FLAGS, SettingNames
from responder.config import Cluster, Config, load_config
from responder.errors import UserError
from responder.journal import Journal


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "pods", nargs="+", metavar="POD", help="the quarantined pods' names (released in this order)"
    )
    parser.add_argument("--namespace", "-n", required=True)
    parser.add_argument("--reason", required=True, help="why it is safe to release (recorded)")
    parser.add_argument("--by", help="who releases (default: USER@host)")
    parser.add_argument("--config", help="the responder's config (label, policy names, cluster, journal)")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster or ~/.kube/config)")
    parser.add_argument("--context", help="kubeconfig context")


def recorded_text(what: str, value: str) -> str:
    """Text the release records (on the pod, in an Event, in the journal): not blank, without
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


def run(args: argparse.Namespace) -> int:
    # Everything that can be refused is checked before the cluster is touched.
    for what, value in (("--namespace", args.namespace), *(("pod", pod) for pod in args.pods)):
        if not valid_name(value):
            raise UserError(f"{what}: {value!r} is not a Kubernetes object name")
    pods = list(dict.fromkeys(args.pods))  # a name given twice is released once
    reason = recorded_text("--reason", args.reason)
    if args.by is not None:
        by = recorded_text("--by", args.by)
    else:
        by = recorded_text(
            "the default --by (USER@host; set --by)", f"{getpass.getuser()}@{socket.gethostname()}"
        )
    config = load_config(args.config) if args.config else Config()
    cluster, names = cluster_settings(args, config.cluster)
    with contextlib.ExitStack() as stack:
        journal: Journal | None = None
        if args.config and os.path.exists(config.journal.path):
            # Opened before the release: when it cannot record it, nothing is changed.
            journal = stack.enter_context(
                Journal(
                    config.journal.path,
                    max_bytes=config.journal.max_bytes,
                    retention_seconds=config.journal.retention_days * 86400,
                )
            )
        gateway = KubeGateway.from_config(cluster, names)
        actions = ClusterActions(gateway, config.quarantine, EventRecorder(gateway))
        released = 0
        for pod in pods:
            outcome = actions.release(args.namespace, pod, by=by, reason=reason)
            print(f"{args.namespace}/{pod}: {outcome.describe()}", flush=True)
            released += outcome.status is OutcomeStatus.RELEASED
            if journal is not None:
                try:
                    journal.run_sync(
                        Journal.op_record_action(None, None, args.namespace, pod, outcome, actor=by)
                    )
                except (sqlite3.Error, OSError) as exc:
                    # Stop here: every release this command makes is one the journal records.
                    left = pods[pods.index(pod) + 1 :]
                    raise UserError(
                        f"journal {config.journal.path}: the {outcome.action} above is done in the cluster,"
                        f" but recording it failed: {exc}"
                        + (f"; not released: {', '.join(left)}" if left else "")
                    ) from None
    if len(pods) > 1 and released < len(pods):
        print(f"{len(pods) - released} of {len(pods)} pods not released", file=sys.stderr)
    return 0 if released == len(pods) else 1
