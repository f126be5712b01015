"""`serving-guard ingest FILE|-`: feed Falco JSON lines (file_output, stdout, a replay) through the
same pipeline as the live inputs. A bad line is reported with its line number and skipped.

A line may be as long as the HTTP input's largest body (``inputs.http.max_body_bytes``, 320 KiB
unless the config says otherwise): the same alert is refused whichever way it comes. A longer line
is reported and read past without being kept, so memory stays bounded (`ingest /dev/zero`). A
UTF-8 byte-order mark at the very start of the file is skipped, as many editors write one.

A journal that takes no more (full of unfinished alerts, or failing) stops it at the line it
reached, named with the tally so far: every line before it is journaled, none after it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import re
import shlex
import signal
import stat
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO, TextIO

from responder.actions.pod_records import CLOCK_SKEW_NS
from responder.alert import WHOLE_PAYLOAD, Alert, AlertError, rejection_code
from responder.alert_json import parse_falco_json
from responder.cli import EXIT_OUTPUT_LOST, OutputLost
from responder.cluster.verify import never_verifiable
from responder.commands.common import non_negative_seconds
from responder.config import Config, Inputs, load_config
from responder.errors import UserError
from responder.ingest.http import JOURNAL_FAILURES
from responder.ingest.sink import Accepted, InputName, Overloaded
from responder.logs import setup_logging
from responder.sender import Proof, Sender
from responder.wording import first_few

if TYPE_CHECKING:
    from responder.pipeline import Pipeline


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
    parser.add_argument(
        "--check",
        action="store_true",
        help="only read and validate every line, reporting each bad one: nothing is journaled or acted on"
        " (the responder is not started; its journal and cluster are not touched)",
    )
    parser.add_argument(
        "--drill",
        action="store_true",
        help="the lines are a drill (serving-guard replay --file): journaled and shown as one, in incidents"
        " of their own, decided in dry-run unless guardrails.enforce_drills",
    )
    parser.epilog = (
        "exit status: 0 every line ingested (with --check: valid); 1 some lines rejected (each reported on"
        " stderr), or with --check none to take; 2 a bad"
        " config or source, or ingesting stopped (the line to resume from is said); 74 reports or the"
        " tally could not be written to stderr (a full disk, its reader gone): ingesting went on, so the"
        " good lines are journaled all the same"
    )


BOM = b"\xef\xbb\xbf"
# How standard input is named in reports.
STDIN_NAME = "<stdin>"
# Where the longest line comes from, named in the message about a longer one.
LIMIT_KEY = "inputs.http.max_body_bytes"
BOM_INSIDE = "starts with a UTF-8 byte-order mark (one is skipped only at the start of the file)"
# A line that is no JSON object: most often Falco's text output.
NOT_JSON_OUTPUT = "not a JSON object: Falco must run with json_output: true"
# A line of Falco's own log ("Sat Dec  6 11:00:00 2026: Falco version: ..."), which `kubectl logs`
# mixes in with the alerts: not an alert at all, and no sign that json_output is off.
FALCO_LOG_LINE = re.compile(rb"[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2} \d{4}: ")
NOT_AN_ALERT = (
    "not an alert: a line of Falco's own log (`kubectl logs` mixes it in with the alerts); ingest reads"
    " alert lines only: keep those starting with '{' (grep '^{')"
)
# A file whose line 1 is "{" alone: an alert pretty-printed (config explain takes one so).
PRETTY_PRINTED = (
    "ingest reads one JSON object per line, and this file looks pretty-printed (line 1 is '{{' alone):"
    " `jq -c . {name}` puts each alert on one line"
)
# How much of an over-long line is read at a time while skipping it.
_SKIP_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Line:
    number: int
    # The line without its ending (line 1 without the file's byte-order mark); None: longer than
    # the limit, read past and not kept.
    raw: bytes | None
    # raw begins with a UTF-8 byte-order mark: one that is not the file's first bytes.
    bom: bool = False
    # Another piece of the over-long line ``number`` read past (already reported): a chance for the
    # reader to let the event loop run, so one Ctrl-C stops even `ingest /dev/zero`.
    skipping: bool = False


def read_lines(stream: BinaryIO, limit: int) -> Iterator[Line]:
    """The lines of ``stream`` (split at b"\\n"), each at most ``limit`` bytes without its ending
    (\\n or \\r\\n).
    A longer line comes as ``raw=None`` once it is known to be too long, and is then read past to
    its newline piece by piece (each a ``skipping`` Line), never held whole. A byte-order mark
    opening the stream is dropped."""
    number = 0
    while True:
        # Room for the line, its ending (\r\n) and, on line 1, a byte-order mark to drop.
        chunk = stream.readline(limit + 2 + (len(BOM) if number == 0 else 0))
        if not chunk:
            return
        number += 1
        if number == 1 and chunk.startswith(BOM):
            chunk = chunk[len(BOM) :]
        ended = chunk.endswith(b"\n")
        body = chunk.removesuffix(b"\r\n") if chunk.endswith(b"\r\n") else chunk.removesuffix(b"\n")
        if len(body) > limit:
            yield Line(number, None)
            while not ended:  # read past the rest, a piece at a time
                piece = stream.readline(_SKIP_CHUNK)
                ended = not piece or piece.endswith(b"\n")
                if not ended:
                    yield Line(number, None, skipping=True)
            continue
        yield Line(number, body.rstrip(b"\r\n"), bom=body.startswith(BOM))


class LineSource:
    """The lines of a regular file, read on the event loop: its reads never wait for a writer."""

    def __init__(self, lines: Iterator[Line]) -> None:
        self._lines = lines

    async def next(self) -> Line | None:
        """The next line; None at the end. Raises OSError when the stream cannot be read."""
        return next(self._lines, None)


class PipedLineSource(LineSource):
    """The lines of a pipe, a terminal or a socket (`falco | serving-guard ingest -`), read on a
    thread of their own: a read there waits for the writer's next line, and on the event loop it
    would hold back the work on the alerts read so far (an attack's quarantine until some other
    alert came). At most ``ahead`` lines are read before they are taken. The thread is a daemon: a
    read still waiting when the command ends does not keep the process."""

    def __init__(self, lines: Iterator[Line], ahead: int = 64) -> None:
        super().__init__(lines)
        self._loop = asyncio.get_running_loop()
        self._read: asyncio.Queue[Line | OSError | None] = asyncio.Queue()
        self._room = threading.Semaphore(ahead)
        threading.Thread(target=self._reader, name="ingest-lines", daemon=True).start()

    def _reader(self) -> None:
        end: OSError | None = None  # None: the end of the stream
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody reads any more
            try:
                for line in self._lines:
                    self._room.acquire()
                    self._loop.call_soon_threadsafe(self._read.put_nowait, line)
            except OSError as exc:
                end = exc
            self._loop.call_soon_threadsafe(self._read.put_nowait, end)

    async def next(self) -> Line | None:
        item = await self._read.get()
        if isinstance(item, OSError):
            raise item
        if item is not None:
            self._room.release()
        return item


def line_source(stream: BinaryIO, limit: int) -> LineSource:
    """Where `ingest` takes its lines from: on the event loop for a regular file, on a thread of
    their own for anything whose read may wait (stdin from a pipe, a FIFO, a terminal)."""
    lines = read_lines(stream, limit)
    try:
        regular = stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (OSError, ValueError, AttributeError):  # no file descriptor: an in-memory stream
        regular = True
    return LineSource(lines) if regular else PipedLineSource(lines)


def _open_source(source: str, name: str) -> BinaryIO:
    if source == "-":
        # fd 0 closed when the command started (`<&-`): Python then has no sys.stdin at all.
        stdin: TextIO | None = sys.stdin
        if stdin is None:
            raise UserError("ingest: stdin is closed")
        try:
            # A reader of its own over fd 0: a read still waiting on the reading thread when the
            # command ends holds this object's lock, not sys.stdin's, which the interpreter takes as
            # it exits (a daemon thread holding that one aborts the process).
            return os.fdopen(os.dup(stdin.fileno()), "rb")
        except (OSError, ValueError, io.UnsupportedOperation):  # no descriptor: a stdin replaced in-process
            return stdin.buffer
    try:
        return open(source, "rb")
    except OSError as exc:
        raise UserError(f"{name}: cannot read: {exc.strerror}") from None


# Signals that stop `ingest` as Ctrl-C does (`timeout`, `kill`, systemd; a closed terminal or
# `kubectl exec` session): what was read is journaled, and the line to resume from is said.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


async def ingest(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    name = STDIN_NAME if args.source == "-" else args.source
    stream = _open_source(args.source, name)  # before the responder starts: nothing to undo
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    received: list[int] = []

    def stop(signum: int) -> None:
        received.append(signum)
        task.cancel()

    for signum in STOP_SIGNALS:
        # Not on the main thread (ingest called by another program's thread): its signals are not ours.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop, signum)
    try:
        if args.check:
            return await _check(config, stream, name, _file_sender(args.source, drill=args.drill))
        return await _ingest(args, config, stream, name)
    except asyncio.CancelledError:
        if not received:  # Ctrl-C: asyncio.run says so (KeyboardInterrupt, exit 130)
            raise
        return 128 + received[0]  # as the shell gives for a process the signal ended
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
        if args.source != "-":  # stdin is not ours to close
            stream.close()


async def _check(config: Config, stream: BinaryIO, name: str, sender: Sender) -> int:
    """--check: every line read and parsed as ingest would, each bad one reported; nothing submitted."""
    limit = config.inputs.http.max_body_bytes
    tally = _Tally(None, name, sender)
    stopped = await tally.feed(line_source(stream, limit), limit)
    tally.report(
        f"{name}: {tally.accepted} valid, {tally.rejected} rejected (checked only: nothing ingested)"
    )
    for text in tally.valid_notes.said(name):
        tally.report(text)
    empty = tally.report_if_empty()
    if stopped is not None:
        raise UserError(stopped)
    if tally.unreported:
        return EXIT_OUTPUT_LOST
    # A check passes only on alerts: a CI gate must not pass a capture that came out empty.
    return 1 if tally.rejected or empty else 0


async def _ingest(args: argparse.Namespace, config: Config, stream: BinaryIO, name: str) -> int:
    from responder.commands.serve import build_responder

    # The HTTP input's largest alert is this input's longest line too.
    limit = config.inputs.http.max_body_bytes
    setup_logging(config.logging.level, config.logging.format)
    # Only this command's input: no listeners. No withheld isolation tried again by itself: this
    # process exits once its alerts are decided, and a retry scheduled for later would die with it
    # while Slack said it was coming (review-operator M6); Slack says a repeat or a person must.
    config = config.model_copy(
        update={
            "inputs": Inputs(),
            "server": config.server.model_copy(update={"metrics_listen": None}),
            "dedupe": config.dedupe.model_copy(update={"retry_withheld_seconds": ()}),
        }
    )
    responder = build_responder(config, args.config)
    try:
        await responder.start()  # inside: a start that fails still stops (the journal lock goes)
        started_ns = responder.clock_ns()
        pipeline = responder.pipeline
        assert pipeline is not None
        tally = _Tally(pipeline, name, _file_sender(args.source, drill=args.drill))
        try:
            stopped = await tally.feed(line_source(stream, limit), limit)
        except asyncio.CancelledError:  # Ctrl-C, SIGTERM, SIGHUP: say where to take it up again
            tally.report(tally.interrupted())
            raise
        try:
            await pipeline.drain()
            if responder.notifier is not None:
                await responder.notifier.settle(args.settle_seconds)
        except asyncio.CancelledError:  # stopped after the last line: every line is journaled
            tally.report(tally.stopped_after_the_end())
            raise
        outcomes = responder.metrics.outcome_counts()
        unsent = (
            responder.journal.notifications_unsent(started_ns) if responder.notifier is not None else None
        )
    finally:
        await responder.stop()
    tally.report(
        f"{name}: {tally.accepted} accepted, {tally.again} already in the journal, {tally.rejected} rejected"
    )
    tally.report_if_empty()
    if outcomes:
        # What was done, so that a LEAKY or failed action is not read as success from the tally.
        by_action: dict[str, list[str]] = {}
        for (action, status), count in sorted(outcomes.items()):
            by_action.setdefault(action, []).append(f"{count} {status}")
        said = "; ".join(f"{action}: {', '.join(counts)}" for action, counts in by_action.items())
        tally.report(f"{name}: actions {said} (serving-guard audit tells each)")
    # A pod cut off and nobody told must not read as done (review-operator M5; review-session-51
    # M1: nor a post Slack refused for good).
    if unsent is not None and unsent.waiting:
        error = f" (last error: {unsent.waiting_error})" if unsent.waiting_error else ""
        tally.report(
            f"{name}: {unsent.waiting} Slack message(s) not sent yet{error}: they wait in the journal and go"
            " out when serving-guard serve, or the next ingest, runs with it (serving-guard audit --format"
            " incidents shows each)"
        )
    if unsent is not None and unsent.failed:
        error = f" ({unsent.failed_error})" if unsent.failed_error else ""
        tally.report(
            f"{name}: {unsent.failed} Slack message(s) refused by Slack for good{error}: nobody was told"
            " of them (serving-guard audit --format incidents shows each)"
        )
    if stopped is not None:
        raise UserError(stopped)
    if tally.unreported:
        return EXIT_OUTPUT_LOST
    return 1 if tally.rejected else 0


def _file_sender(source: str, *, drill: bool) -> Sender:
    """The alerts' sender: the file, by its absolute path (the journal outlives the directory the
    command ran in), or standard input; a drill's with --drill (whoever runs ingest holds the
    responder's config and credentials: their word is as good as the drill token)."""
    return Sender("-" if source == "-" else os.path.abspath(source), Proof.FILE, drill=drill)


# Lines named per note of `ingest --check`; the rest are counted.
_LINES_NAMED = 5


@dataclass
class _NotedLines:
    """How many lines have a note, and the first _LINES_NAMED of them: a file of millions of
    such lines holds no more than that."""

    count: int = 0
    first: list[int] = field(default_factory=list)

    def add(self, number: int) -> None:
        self.count += 1
        if len(self.first) < _LINES_NAMED:
            self.first.append(number)

    def alerts(self) -> str:
        return "1 valid alert is" if self.count == 1 else f"{self.count} valid alerts are"

    def them(self) -> str:
        return "it" if self.count == 1 else "them"

    def named(self) -> str:
        shown = first_few([str(n) for n in self.first], _LINES_NAMED, total=self.count)
        return f"{'line' if self.count == 1 else 'lines'} {shown}"


@dataclass
class _ValidLineNotes:
    """What `ingest --check` notes of valid lines that ingesting would not act on as they read:
    an alert no pod can verify (never isolated), one dated ahead of this machine's clock (taken as
    dated when it comes). Grouped by reason, with the lines that have it."""

    never_verifiable: dict[str, _NotedLines] = field(default_factory=dict)
    dated_ahead: _NotedLines = field(default_factory=_NotedLines)

    def note(self, number: int, alert: Alert, now_ns: int) -> None:
        reason = never_verifiable(alert)
        if reason is not None:
            self.never_verifiable.setdefault(reason, _NotedLines()).add(number)
        if alert.time_ns > now_ns + CLOCK_SKEW_NS:
            self.dated_ahead.add(number)

    def said(self, name: str) -> list[str]:
        said = [
            f"{name}: {lines.alerts()} never isolated: the pod check cannot verify {lines.them()}"
            f" ({reason}): {lines.named()}"
            for reason, lines in self.never_verifiable.items()
        ]
        ahead = self.dated_ahead
        if ahead.count:
            said.append(
                f"{name}: {ahead.alerts()} dated more than {CLOCK_SKEW_NS // 10**9} s ahead of this"
                " machine's clock: ingest dates each when it comes (a release made since is weighed against"
                f" that): {ahead.named()}"
            )
        return said


@dataclass
class _Tally:
    # None: --check (lines parsed and counted, never submitted).
    pipeline: Pipeline | None
    name: str
    sender: Sender
    accepted: int = 0
    again: int = 0
    rejected: int = 0
    line: int = 0  # the line being read or submitted
    unreported: int = 0  # lines for stderr that could not be written there
    pretty_printed: bool = False  # line 1 is "{" alone: each line's refusal says so
    valid_notes: _ValidLineNotes = field(default_factory=_ValidLineNotes)  # --check: valid lines' notes

    def stopped_after_the_end(self) -> str:
        """Said when a stop comes once every line was read, while their alerts are acted on or
        their Slack posts go out: nothing to resume, what is left is the journal's to finish."""
        return (
            f"{self.name}: stopped after its last line ({self.accepted} accepted, {self.again} already in the"
            f" journal, {self.rejected} rejected): every line is journaled; what was not yet acted on or"
            " posted to Slack is taken up by the next start on this journal (serve, or ingest)"
        )

    def report_if_empty(self) -> bool:
        """Says a source without a single line to take (the wrong file, or a capture that failed);
        whether it was one."""
        empty = not (self.accepted or self.again or self.rejected)
        if empty:
            self.report(f"{self.name}: no alert in it (empty, or blank lines only)")
        return empty

    def interrupted(self) -> str:
        # self.line is the line being read or submitted: once one is done, the next one.
        return (
            f"{self.name}: interrupted at line {self.line} ({self.accepted} accepted, {self.again} already in"
            f" the journal, {self.rejected} rejected): every line before it is journaled; resume from line"
            f" {max(self.line, 1)} (a line journaled already counts as already in the journal)"
        )

    async def feed(self, lines: LineSource, limit: int) -> str | None:
        """Submit each line's alert, report each bad line; a read error, or a journal that takes
        no more, ends it (returned: why, and where)."""
        number = 0
        while True:
            try:
                line = await lines.next()
            except OSError as exc:
                # What was read stays ingested; the rest cannot be read.
                return f"{self.name}: cannot read after line {number}: {exc.strerror or exc}"
            if line is None:
                return None
            number = self.line = line.number
            if line.raw is not None and line.raw.strip() and not line.bom:
                try:
                    await self.submit(number, line.raw)
                except (Overloaded, *JOURNAL_FAILURES) as exc:
                    return self._journal_stopped(number, exc)
                # Done with it: interrupted from here on (waiting for the next line of a pipe),
                # it is the next line that is to be taken up.
                self.line = number + 1
                continue
            if line.skipping:
                pass
            elif line.raw is None:
                self.refuse(number, "too_large", f"line longer than {limit} bytes ({LIMIT_KEY})")
            elif line.bom:
                self.refuse(number, "bad_body", BOM_INSIDE)
            self.line = number + 1
            # No alert submitted (nothing awaited): let the loop run, e.g. to be cancelled.
            await asyncio.sleep(0)

    async def submit(self, number: int, raw: bytes) -> None:
        try:
            alert = parse_falco_json(raw, self.sender)
        except AlertError as exc:
            problem = str(exc)
            self.pretty_printed = self.pretty_printed or (number == 1 and raw.strip() == b"{")
            if exc.field == WHOLE_PAYLOAD and self.pretty_printed:
                file = "FILE" if self.name == STDIN_NAME else shlex.quote(self.name)
                problem += "; " + PRETTY_PRINTED.format(name=file)
            elif exc.field == WHOLE_PAYLOAD and FALCO_LOG_LINE.match(raw.lstrip(BOM)):
                problem = NOT_AN_ALERT
            elif exc.field == WHOLE_PAYLOAD and not raw.lstrip().startswith(b"{") and not _is_json(raw):
                problem += f"; {NOT_JSON_OUTPUT}"
            self.refuse(number, rejection_code(exc), problem)
            return
        if self.pipeline is None:  # --check
            self.accepted += 1
            self.valid_notes.note(number, alert, time.time_ns())
            return
        submitting = asyncio.ensure_future(self.pipeline.submit(alert, InputName.JSONL, raw=raw))
        try:
            result = await asyncio.shield(submitting)
        except asyncio.CancelledError:
            # Stopped (Ctrl-C) while the alert was handed over: once taken, it is journaled all the
            # same. Its answer is awaited, so that the tally and the line to resume from count it.
            with contextlib.suppress(Exception):
                self._count(await submitting)
                self.line = number + 1
            raise
        self._count(result)

    def _count(self, result: Accepted) -> None:
        if result.new:
            self.accepted += 1
        else:
            self.again += 1

    def _journal_stopped(self, number: int, error: Exception) -> str:
        """Why ingesting stops at line ``number``, and where to take it up again: every line
        before it is journaled, and none from it on (resuming from earlier is harmless too: a
        line already journaled counts as "already in the journal")."""
        if isinstance(error, Overloaded):  # ingest waits for room: only a full journal says so
            what = "the journal is full (journal.max_bytes)"
        else:
            what = f"journal write failed ({error})"
        return f"{self.name}:{number}: {what}: not ingested from this line on; resume from line {number}"

    def refuse(self, number: int, code: str, problem: str) -> None:
        self.rejected += 1
        where = f"{self.name}:{number}: {problem}"
        if self.pipeline is not None:
            self.pipeline.reject(InputName.JSONL, code, where, said=True)  # once on stderr, not twice
        self.report(where)

    def report(self, text: str) -> None:
        """``text`` on stderr. One that cannot be written (a full disk, its reader gone) is counted,
        not raised: ingesting goes on, as the lines still to come are worth journaling, and the exit
        status says reports were lost."""
        try:
            if sys.stderr is None:  # closed when the command started (`2>&-`)
                raise OutputLost("stderr is closed")
            print(text, file=sys.stderr)
        except OSError:  # OutputLost too
            self.unreported += 1


def _is_json(raw: bytes) -> bool:
    """Whether the line is JSON at all (an array, a number: JSON, if no alert), as opposed to
    Falco's text output, for which the refusal says how to make Falco write JSON."""
    try:
        json.loads(raw, parse_int=str)  # numbers kept as text: Python's int() refuses 4301 digits
    except RecursionError:  # nested too deeply to read: JSON, of a kind
        return True
    except ValueError:  # not UTF-8, or not JSON
        return False
    return True


def run(args: argparse.Namespace) -> int:
    return asyncio.run(ingest(args))
