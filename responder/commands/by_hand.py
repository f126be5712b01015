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
import time
import unicodedata

from responder.actions.outcome import BY_HAND, REASON, ActionOutcome
from responder.audit import AuditQuery
from responder.cluster.enrich import valid_name
from responder.cluster.kubeconfig import CONFIG_KEYS, FLAGS, SettingNames
from responder.config import Cluster, Config
from responder.errors import UserError
from responder.journal import Journal


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


def who_acts(by: str | None) -> str:
    """--by as recorded, or USER@host when not given (checked as --by would be)."""
    if by is not None:
        return recorded_text("--by", by)
    return recorded_text(
        "the default --by (USER@host; set --by)", f"{getpass.getuser()}@{socket.gethostname()}"
    )


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


def open_journal(args: argparse.Namespace, config: Config, stack: contextlib.ExitStack) -> Journal | None:
    """The journal named by --config, when it exists; opened before anything is changed, so that
    when it cannot record an action, nothing is done. --incident must name one of its incidents, in
    --namespace: a mistyped id would file the action under no incident, and tell no one."""
    if not args.config or not os.path.exists(config.journal.path):
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
    return journal


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
    told = dataclasses.replace(outcome, extra={**outcome.extra, BY_HAND: by, REASON: reason})
    try:
        queued = journal.run_sync(
            Journal.op_record_action_by_hand(incident_id, namespace, pod, told, by, time.time_ns())
        )
    except (sqlite3.Error, OSError) as exc:
        word, left = not_done
        raise UserError(
            f"journal {journal.path}: the {outcome.action} above is done in the cluster,"
            f" but recording it failed: {exc}" + (f"; not {word}: {', '.join(left)}" if left else "")
        ) from None
    return queued is not None


def say_told(told: bool, where: str, incident_id: str | None) -> None:
    """Say that the running responder will tell the incident's Slack thread of the action."""
    if told:
        print(f"{where}: the responder tells incident {incident_id}'s Slack thread", flush=True)
