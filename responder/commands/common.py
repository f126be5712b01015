"""Options several commands share: the config file and how to reach a running responder."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from responder.client import ClientAuth
from responder.errors import UserError


def add_responder_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("reaching a running responder")
    group.add_argument("--ca", dest="ca_file", help="CA that signed the responder's certificate")
    group.add_argument("--cert", dest="cert_file", help="client certificate (mutual TLS)")
    group.add_argument("--key", dest="key_file", help="client key (mutual TLS)")
    group.add_argument(
        "--token-file",
        help="file holding the bearer token: the senders' to send alerts, the audit token to read the trail",
    )


def client_auth(args: argparse.Namespace) -> ClientAuth:
    token = None
    if getattr(args, "token_file", None):
        try:
            token = Path(args.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UserError(f"--token-file: cannot read {args.token_file}: {exc.strerror}") from None
    if bool(args.cert_file) != bool(args.key_file):
        raise UserError("--cert and --key go together")
    return ClientAuth(ca_file=args.ca_file, cert_file=args.cert_file, key_file=args.key_file, token=token)


def positive_seconds(text: str) -> float:
    """An argparse ``type`` for a duration: a finite number of seconds above 0 (not nan, inf, -1)."""
    return _seconds(text, allow_zero=False)


def non_negative_seconds(text: str) -> float:
    """An argparse ``type`` for a duration that may be 0: finite and not negative."""
    return _seconds(text, allow_zero=True)


def _seconds(text: str, *, allow_zero: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = "0 or more" if allow_zero else "more than 0"
        raise argparse.ArgumentTypeError(f"{text!r}: seconds must be finite and {bound}")
    return value
