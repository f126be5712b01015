"""Options several commands share: the config file and how to reach a running responder."""

from __future__ import annotations

import argparse
import math

from responder.audit import query as audit_query
from responder.client import ClientAuth, check_base_url
from responder.config import MAX_SECRET_BYTES
from responder.errors import UserError
from responder.yamlsource import FileTooLarge, read_bounded, size_text


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
    """The responder options as a ClientAuth, every file checked now (read, parsed): a problem is
    a UserError naming its flag before any other work is done."""
    token = None
    if getattr(args, "token_file", None):
        token = _read_token(args.token_file)
    if bool(args.cert_file) != bool(args.key_file):
        raise UserError("--cert and --key go together")
    auth = ClientAuth(ca_file=args.ca_file, cert_file=args.cert_file, key_file=args.key_file, token=token)
    auth.ssl_context()
    return auth


def _read_token(path: str) -> str:
    # Bounded as the config's secret files are (SecretRef.read): /dev/zero or a FIFO that never
    # ends is refused after MAX_SECRET_BYTES, never read into memory whole.
    try:
        data = read_bounded(path, MAX_SECRET_BYTES)
    except FileTooLarge:
        raise UserError(
            f"--token-file {path}: larger than {size_text(MAX_SECRET_BYTES)}, far more than a token"
            " (is that the token's file?)"
        ) from None
    except IsADirectoryError:
        raise UserError(f"--token-file {path}: is a directory, not a file") from None
    except OSError as exc:
        raise UserError(f"--token-file: cannot read {path}: {exc.strerror or exc}") from None
    try:
        token = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise UserError(f"--token-file {path}: not UTF-8 text") from None
    if not token:
        raise UserError(f"--token-file {path}: empty (no token in it)")
    if any(not char.isprintable() for char in token):
        raise UserError(f"--token-file {path}: the token must be one line without control characters")
    return token


def responder_url(text: str) -> str:
    """An argparse ``type`` for a responder's URL (``--responder``, ``--to``): http(s)://HOST[:PORT]."""
    try:
        return check_base_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# What --since takes, for the commands' help: what the shared parser reads.
SINCE_FORMS = audit_query.SINCE_FORMS


def since_ns(text: str, *, flag: str = "--since", now_ns: int | None = None) -> int:
    """``--since`` in epoch nanoseconds, read by the responder's own parser, so a problem is worded
    as GET /v1/audit words it: a UserError naming ``flag`` when it is malformed or out of the
    range the journal's times can take (1970 to 2262-04-11). Commands that pass the text on to a
    responder check it with this first."""
    try:
        return audit_query.parse_since(text, now_ns, name=flag)
    except ValueError as exc:
        raise UserError(str(exc)) from None


# The longest duration any command waits: a week. Far beyond any real wait, and well inside what
# the standard library's timeouts accept (selectors and locks overflow on 1e7 or 1e12 seconds).
MAX_SECONDS = 7 * 24 * 3600


def positive_seconds(text: str) -> float:
    """An argparse ``type`` for a duration: a finite number of seconds above 0 (not nan, inf, -1)
    and at most MAX_SECONDS."""
    return _seconds(text, allow_zero=False)


def non_negative_seconds(text: str) -> float:
    """An argparse ``type`` for a duration that may be 0: finite, not negative, at most MAX_SECONDS."""
    return _seconds(text, allow_zero=True)


def _seconds(text: str, *, allow_zero: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    bound = "0 or more" if allow_zero else "more than 0"
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise argparse.ArgumentTypeError(f"{text!r}: seconds must be finite and {bound}")
    if value > MAX_SECONDS:
        raise argparse.ArgumentTypeError(
            f"{text!r}: seconds must be finite, {bound} and at most {MAX_SECONDS} (7 days)"
        )
    return value
