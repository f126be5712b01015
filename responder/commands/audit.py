"""`serving-guard audit`: the trail (alert -> decision -> actions -> notifications) from the
journal file, or from a running responder over its authenticated HTTP API."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
from typing import Any

from responder.audit import AuditQuery, format_table, load_trail
from responder.client import ResponderClient
from responder.commands.common import add_responder_options, client_auth
from responder.config import load_config
from responder.errors import UserError
from responder.journal_schema import connect
from responder.service import parse_since


def configure(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", help="read the journal named in this config")
    where.add_argument("--journal", help="read this journal file")
    where.add_argument("--responder", metavar="URL", help="ask a running responder (GET /v1/audit)")
    parser.add_argument("--since", help="15m, 2h, 3d or an RFC 3339 time (default: everything)")
    parser.add_argument("--pod", help="only this pod, as NAMESPACE/NAME")
    parser.add_argument("--run-id", help="only alerts that mention this simulator run id")
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--format", choices=("table", "json"), default="table")
    add_responder_options(parser)


def _query(args: argparse.Namespace) -> AuditQuery:
    try:
        since = parse_since(args.since) if args.since else 0
        namespace, pod = AuditQuery.parse_pod(args.pod) if args.pod else (None, None)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return AuditQuery(since_ns=since, namespace=namespace, pod=pod, run_id=args.run_id, limit=args.limit)


def _local(path: str, query: AuditQuery) -> list[dict[str, Any]]:
    if not os.path.exists(path):
        raise UserError(f"journal {path} does not exist")
    try:
        conn = connect(path, readonly=True)
        try:
            return load_trail(conn, query)
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise UserError(f"journal {path}: not a readable Serving Guard journal ({exc})") from None


async def _remote(args: argparse.Namespace) -> list[dict[str, Any]]:
    params = {
        "since": args.since or "",
        "pod": args.pod or "",
        "run_id": args.run_id or "",
        "limit": str(args.limit),
    }
    async with ResponderClient(args.responder, client_auth(args)) as client:
        return await client.audit(**params)


def run(args: argparse.Namespace) -> int:
    if args.responder:
        entries = asyncio.run(_remote(args))
    else:
        path = args.journal or load_config(args.config).journal.path
        entries = _local(path, _query(args))
    if args.format == "json":
        print(json.dumps(entries, indent=2))
    else:
        print(format_table(entries))
    return 0
