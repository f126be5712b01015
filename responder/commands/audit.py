"""`serving-guard audit`: the trail (alert -> decision -> actions -> notifications) from the
journal file, or from a running responder over its authenticated HTTP API."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sqlite3
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from responder.audit.answer import AuditEntry
from responder.audit.query import MAX_LIMIT, AuditQuery
from responder.audit.text import format_incidents, format_summary, format_table, truncated_note
from responder.audit.trail import load_trail
from responder.client import ResponderClient
from responder.commands.common import SINCE_FORMS, add_responder_options, client_auth, responder_url, since_ns
from responder.config import Config, load_config
from responder.errors import UserError
from responder.journal.schema import check_readable, connect, unreadable_journal
from responder.journal.store import check_journal_path
from responder.policy import DEFAULT_POLICY
from simulators.scenario import check_run_id


def configure(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", help="read the journal named in this config")
    where.add_argument("--journal", help="read this journal file")
    where.add_argument(
        "--responder", metavar="URL", type=responder_url, help="ask a running responder (GET /v1/audit)"
    )
    parser.add_argument("--since", help=f"{SINCE_FORMS} (default: everything)")
    # `--since -5m` would be argparse's "expected one argument": a value like a negative number
    # ('-' then a digit, as Python 3.13 reads it) is taken as --since's, and refused with its form.
    # No option of this command starts with '-' and a digit.
    parser._negative_number_matcher = _DASH_THEN_DIGIT
    parser.add_argument("--pod", metavar="NAMESPACE/NAME", help="only this pod")
    parser.add_argument(
        "--run-id",
        help="only alerts that mention this simulator run id (as simulate, replay, verify take it)",
    )
    parser.add_argument(
        "--policy",
        metavar="NAME",
        help="only incidents this response policy decided (e.g. one on trial: what it would have done)",
    )
    parser.add_argument(
        "--incident",
        metavar="ID",
        help="only this incident's alerts (inc-..., as Slack names it): what was decided, done and posted",
    )
    parser.add_argument(
        "--limit", type=limit, default=500, help=f"at most this many alerts, 1 to {MAX_LIMIT} (default: 500)"
    )
    parser.add_argument(
        "--format",
        choices=("table", "json", "summary", "incidents"),
        default="table",
        help="table: one line per alert; summary: one line per incident, then how many ended each way;"
        " incidents: each incident's story (decision, actions with who and why, Slack posts)",
    )
    add_responder_options(parser)


_DASH_THEN_DIGIT = re.compile(r"-\.?\d")
# A time ago (15m, 2h) with a minus sign.
_MINUS_AGO = re.compile(r"-(?:\d+\.?\d*|\.\d+)[smhd]")


def _since_ns(text: str) -> int:
    """``--since`` in epoch nanoseconds (:func:`since_ns`); a time ago written with a minus sign
    (``-5m``) is refused saying to drop it."""
    try:
        return since_ns(text)
    except UserError as exc:
        ago = text.strip()
        if _MINUS_AGO.fullmatch(ago) and _parses_as_since(ago[1:]):
            raise UserError(
                f"{exc}: how far back is written without a minus sign (--since {ago[1:]})"
            ) from None
        raise


def _parses_as_since(text: str) -> bool:
    try:
        since_ns(text)
    except UserError:
        return False
    return True


def limit(text: str) -> int:
    """An argparse ``type`` for ``--limit``: what the HTTP API accepts too (1 to MAX_LIMIT)."""
    wrong = argparse.ArgumentTypeError(f"must be a whole number between 1 and {MAX_LIMIT}, got {text!r}")
    try:
        value = int(text)
    except ValueError:
        raise wrong from None
    if not 1 <= value <= MAX_LIMIT:
        raise wrong
    return value


def _query(args: argparse.Namespace, limit: int) -> AuditQuery:
    """The query the flags ask for, each checked (a UserError naming the flag): also before a
    remote query, so a responder is only asked what it can answer."""
    since = _since_ns(args.since) if args.since is not None else 0
    if args.run_id is not None:
        check_run_id(args.run_id)  # verify's check: '' would be no filter at all, the whole trail
    try:
        namespace, pod = AuditQuery.parse_pod(args.pod, "--pod") if args.pod is not None else (None, None)
        if args.policy is not None:
            AuditQuery.check_policy(args.policy, "--policy")
        if args.incident is not None:
            AuditQuery.check_incident(args.incident, "--incident")
        return AuditQuery(
            since_ns=since,
            namespace=namespace,
            pod=pod,
            run_id=args.run_id,
            policy=args.policy,
            incident=args.incident,
            limit=limit,
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None


def read_journal_trail(path: str, query: AuditQuery) -> list[dict[str, Any]]:
    """The trail ``query`` asks for, read from the journal file at ``path`` (read-only: a running
    responder may hold it); a UserError naming the journal if it cannot be read. `verify --config`
    and `--journal` read it this way too."""
    if not os.path.exists(path):
        raise UserError(f"journal {path} does not exist")
    check_journal_path(path)  # a directory: SQLite would say "disk I/O error"
    try:
        conn = connect(path, readonly=True)
        try:
            check_readable(conn, path)
            return load_trail(conn, query)
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        directory = os.path.dirname(os.path.abspath(path))
        if getattr(exc, "sqlite_errorname", "").startswith("SQLITE_READONLY") and not os.access(
            directory, os.W_OK
        ):
            # Reading a journal in WAL mode makes SQLite create its side files (-wal, -shm) beside it.
            raise UserError(
                f"journal {path}: cannot be read from here: its directory {directory} is not writable,"
                " and SQLite creates the journal's -wal and -shm files there even to read it (run as the"
                " journal's owner, or copy the journal with its -wal file to a writable directory)"
            ) from None
        if (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF == sqlite3.SQLITE_CORRUPT:
            raise unreadable_journal(path, exc, "damaged where the trail asked for was read") from None
        raise UserError(f"journal {path}: not a readable Serving Guard journal ({exc})") from None


async def _remote(args: argparse.Namespace, limit: int) -> list[AuditEntry]:
    params = {
        "since": args.since or "",
        "pod": args.pod or "",
        "run_id": args.run_id or "",
        "policy": args.policy or "",
        "incident": args.incident or "",
        "limit": str(limit),
    }
    async with ResponderClient(args.responder, client_auth(args), flag="--responder") as client:
        return await client.audit(**params)


def _say_unknown_policy(policy: str | None, config: Config, *, found: bool) -> None:
    """A --policy the config does not name, with nothing found: most likely a typo, which an empty
    answer would pass off as "it decided nothing". (A policy renamed since still finds its past.)"""
    if policy is None or found:
        return
    names = [p.name for p in config.policies]
    if policy not in (*names, DEFAULT_POLICY):
        known = ", ".join(names) or "(none)"
        print(
            f"--policy {policy}: no incidents, and the config names no such policy (its policies: {known})",
            file=sys.stderr,
        )


def run(args: argparse.Namespace) -> int:
    # One entry more than asked for tells a trail cut by --limit from one exactly that long (at
    # MAX_LIMIT, which a responder will not exceed, a full page may have been cut).
    asked = args.limit
    query = _query(args, min(asked + 1, MAX_LIMIT))
    entries: Sequence[Mapping[str, Any]]
    if args.responder is not None:
        entries = asyncio.run(_remote(args, query.limit))
    elif args.journal is not None:
        entries = read_journal_trail(args.journal, query)
    else:
        config = load_config(args.config)
        entries = read_journal_trail(config.journal.path, query)
        _say_unknown_policy(args.policy, config, found=bool(entries))
    cut = len(entries) > asked or len(entries) >= MAX_LIMIT
    entries = entries[len(entries) - asked :] if len(entries) > asked else entries  # oldest first
    if args.format == "json":
        print(json.dumps(entries, indent=2))
    elif args.format == "summary":
        print(format_summary(entries, cut_at=asked if cut else None))  # says so itself
    elif args.format == "incidents":
        print(format_incidents(entries))
    else:
        print(format_table(entries))
    if args.format != "summary" and cut:
        print(truncated_note(asked), file=sys.stderr)  # beside the output: json stays JSON
    if args.incident is not None and not entries:
        print(
            f"--incident {args.incident}: nothing in the trail (mistyped, or pruned since"
            + (", or all before --since)" if args.since is not None else ")"),
            file=sys.stderr,
        )
        return 1
    return 0
