"""Options several commands share: the config file and how to reach a running responder."""

from __future__ import annotations

import argparse
import math
import re
from datetime import UTC, datetime
from pathlib import Path

from responder.audit import MAX_SINCE_NS
from responder.client import ClientAuth, check_base_url
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
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"--token-file: cannot read {path}: {exc.strerror}") from None
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


SINCE_FORMS = "15m, 2h, 3d, epoch nanoseconds or an RFC 3339 time"


def since_ns(text: str, *, flag: str = "--since", now_ns: int | None = None) -> int:
    """``--since`` in epoch nanoseconds, as the responder's own parser reads it; a UserError naming
    ``flag`` when it is malformed or out of the range the journal's times can take (1970 to
    2262-04-11). Commands that pass the text on to a responder check it with this first."""
    from responder.service import parse_since

    out_of_range = UserError(f"{flag} {text}: out of range (1970-01-01T00:00:00Z to 2262-04-11T23:47:16Z)")
    try:
        value = parse_since(text, now_ns)
    except OverflowError:
        raise out_of_range from None
    except ValueError:
        # A well-formed amount or time the parser refused all the same: it is out of range.
        stripped = text.strip()
        if _AMOUNT.fullmatch(stripped) or _iso_time_out_of_range(stripped):
            raise out_of_range from None
        raise UserError(f"{flag} must be like {SINCE_FORMS}, got {text!r}") from None
    if not 0 <= value <= MAX_SINCE_NS:
        raise out_of_range
    return value


# What parse_since reads as an amount of time ago (15m, 1.5h) or as epoch nanoseconds.
_AMOUNT = re.compile(r"([0-9]+\.?[0-9]*|\.[0-9]+)[smhd]|[0-9]+")


def _iso_time_out_of_range(text: str) -> bool:
    """Whether ``text`` is a well-formed time with a zone, outside 1970..2262 (the shared parser
    refuses those, or lets them through to overflow the journal's integers)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return False
    if moment.tzinfo is None:
        return False
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return not 0 <= (moment - epoch).total_seconds() * 1e9 <= MAX_SINCE_NS


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
