"""`serving-guard ingest FILE|-`: feed Falco JSON lines (file_output, stdout, a replay) through the
same pipeline as the live inputs. A bad line is reported with its line number and skipped."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterator
from typing import TextIO

from responder.alert import AlertError, rejection_code
from responder.alert_json import parse_falco_json
from responder.commands.common import non_negative_seconds
from responder.config import Inputs, load_config
from responder.errors import UserError
from responder.ingest.sink import InputName
from responder.logs import setup_logging


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="a file of JSON lines, or - for stdin")
    parser.add_argument("--config", required=True, help="the responder's YAML config")
    parser.add_argument(
        "--settle-seconds",
        type=non_negative_seconds,
        metavar="SECONDS",
        default=30.0,
        help="how long to wait for notifications to go out at the end; 0: do not wait (default: %(default)g)",
    )


def _lines(stream: TextIO) -> Iterator[tuple[int, str]]:
    yield from enumerate(stream, 1)


async def ingest(args: argparse.Namespace) -> int:
    from responder.commands.serve import build_responder

    config = load_config(args.config)
    setup_logging(config.logging.level, config.logging.format)
    # Only this command's input: no listeners.
    config = config.model_copy(
        update={"inputs": Inputs(), "server": config.server.model_copy(update={"metrics_listen": None})}
    )
    name = "<stdin>" if args.source == "-" else args.source
    responder = build_responder(config)
    accepted = again = rejected = 0
    await responder.start()
    pipeline = responder.pipeline
    assert pipeline is not None
    try:
        stream: TextIO
        if args.source == "-":
            stream = sys.stdin
        else:
            try:
                stream = open(args.source, encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
            except OSError as exc:
                raise UserError(f"{name}: cannot read: {exc.strerror}") from None
        with stream:
            for number, line in _lines(stream):
                if not line.strip():
                    continue
                raw = line.rstrip("\r\n").encode("utf-8", "surrogateescape")
                try:
                    alert = parse_falco_json(raw)
                except AlertError as exc:
                    rejected += 1
                    pipeline.reject(InputName.JSONL, rejection_code(exc), f"{name}:{number}: {exc}")
                    print(f"{name}:{number}: {exc}", file=sys.stderr)
                    continue
                result = await pipeline.submit(alert, InputName.JSONL, raw=raw)
                if result.new:
                    accepted += 1
                else:
                    again += 1
        await pipeline.drain()
        if responder.notifier is not None:
            await responder.notifier.settle(args.settle_seconds)
    finally:
        await responder.stop()
    print(
        f"{name}: {accepted} accepted, {again} already in the journal, {rejected} rejected", file=sys.stderr
    )
    return 1 if rejected else 0


def run(args: argparse.Namespace) -> int:
    return asyncio.run(ingest(args))
