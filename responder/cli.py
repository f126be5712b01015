"""`serving-guard` command line: one table of commands, each implemented in its own module.

A command module exposes ``configure(parser)`` and ``run(args) -> int``. Only the chosen
command's module is imported, so `serving-guard rules check` does not pay for the
Kubernetes client and `--help` stays instant.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import select
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO, cast

from responder import __version__
from responder.errors import UserError


@dataclass(frozen=True)
class Command:
    words: tuple[str, ...]
    module: str
    help: str


COMMANDS: tuple[Command, ...] = (
    Command(("serve",), "responder.commands.serve", "run the responder (HTTP and gRPC inputs)"),
    Command(("ingest",), "responder.commands.ingest", "feed Falco JSON lines from a file or stdin"),
    Command(
        ("quarantine",), "responder.commands.quarantine", "quarantine pods by hand and record who and why"
    ),
    Command(("block",), "responder.commands.block", "block one destination for pods by hand, recorded"),
    Command(("release",), "responder.commands.release", "lift pods' quarantine and record who and why"),
    Command(("audit",), "responder.commands.audit", "print the trail: alert, decision, actions, notices"),
    Command(("config", "check"), "responder.commands.config_check", "validate a config, print the policy"),
    Command(
        ("config", "explain"), "responder.commands.config_explain", "which policy an alert meets, and why"
    ),
    Command(("rules", "check"), "responder.rulespack.check_command", "check and compile Falco rules files"),
    Command(("rules", "test"), "responder.rulespack.test_command", "run the rules on recorded captures"),
    Command(("simulate",), "simulators.simulate_command", "perform a scenario's harmless attack actions"),
    Command(("replay",), "simulators.replay_command", "send a scenario's recorded alerts to a responder"),
    Command(("verify",), "simulators.verify_command", "check a responder's audit trail for a run"),
    Command(("demo",), "simulators.demo_command", "the whole chain on one machine, with a report"),
)

PROG = "serving-guard"


def _listing(commands: Sequence[Command]) -> list[str]:
    width = max(len(" ".join(c.words)) for c in commands)
    return [f"  {' '.join(c.words):<{width}}  {c.help}" for c in commands]


def _overview() -> str:
    lines = [f"usage: {PROG} COMMAND [ARGS...]", "", "commands:", *_listing(COMMANDS)]
    lines += ["", f"Run '{PROG} COMMAND --help' for a command's options."]
    return "\n".join(lines)


def _group(word: str) -> list[Command]:
    """The commands whose first word is ``word`` when it names a group (`config`, `rules`)."""
    return [c for c in COMMANDS if len(c.words) > 1 and c.words[0] == word]


def _group_overview(word: str, members: list[Command]) -> str:
    lines = [f"usage: {PROG} {word} SUBCOMMAND [ARGS...]", "", f"{word} commands:", *_listing(members)]
    lines += ["", f"Run '{PROG} {word} SUBCOMMAND --help' for a subcommand's options."]
    return "\n".join(lines)


def _not_a_command(args: list[str]) -> int:
    """A group's word alone or with --help lists its subcommands (exit 0, as the bare program
    does); anything else is an unknown command (exit 2)."""
    members = _group(args[0])
    if members and args[1:] in ([], ["-h"], ["--help"], ["help"]):
        print(_group_overview(args[0], members))
        return 0
    overview = _group_overview(args[0], members) if members else _overview()
    print(f"{PROG}: unknown command {' '.join(args[:2])!r}\n\n{overview}", file=sys.stderr)
    return 2


def _find(argv: Sequence[str]) -> tuple[Command, list[str]] | None:
    for command in sorted(COMMANDS, key=lambda c: -len(c.words)):
        size = len(command.words)
        if tuple(argv[:size]) == command.words:
            return command, list(argv[size:])
    return None


# The exit status when the reader of our output went away (`| head`): a process killed by
# SIGPIPE has it in the shell's eyes (128 + 13), so pipelines see what they would of any tool.
EXIT_BROKEN_PIPE = 141
# The exit status when our output could not be written for another reason (a full disk, a closed
# stdout): sysexits' EX_IOERR, distinct from every status a command gives of its own work.
EXIT_OUTPUT_LOST = 74


class OutputLost(OSError):
    """stdout or stderr could not be written, other than by its reader going away (that stays
    BrokenPipeError: exit 141); main says it in one line and exits EXIT_OUTPUT_LOST. An OSError
    still, so what already copes with a failed write does so as before (logging drops the record,
    and never stops the responder)."""


class _WatchedStream:
    """sys.stdout or sys.stderr while a command runs: a write or flush that fails becomes
    OutputLost naming the stream (and the stream is noted, to be silenced before the exit)."""

    def __init__(self, stream: TextIO, name: str) -> None:
        self.stream = stream
        self.name = name
        self.failed = False

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except BrokenPipeError:
            raise
        except OutputLost:
            self.failed = True
            raise
        except OSError as exc:
            raise self._lost(exc) from exc

    def flush(self) -> None:
        try:
            self.stream.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise self._lost(exc) from exc

    def _lost(self, error: OSError) -> OutputLost:
        self.failed = True
        return OutputLost(f"{self.name}: {error.strerror or error}")

    def __getattr__(self, name: str) -> Any:  # the rest (fileno, isatty, buffer) is the stream's
        return getattr(self.stream, name)


class _ClosedStdout(io.TextIOBase):
    """sys.stdout when fd 1 was closed as the command started (`>&-`): Python then has none, and
    print() would write nowhere, the command reporting success. What is written here is OutputLost."""

    @property
    def buffer(self) -> _ClosedStdout:  # for bytes (replay --file -) as for text
        return self

    def writable(self) -> bool:
        return True

    def write(self, text: Any) -> int:
        if text:
            raise OutputLost("stdout is closed")
        return 0


def _hold_closed_stdout() -> None:
    """fd 1, if closed, is given /dev/null: a file opened later (the journal, an alert file) would
    get it, and a child process would take that file for its stdout and write into it."""
    try:
        os.fstat(1)
    except OSError:
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            if devnull != 1:  # 1 is the lowest free descriptor unless 0 is closed too
                os.dup2(devnull, 1)
                os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    stdout, stderr = sys.stdout, sys.stderr
    if stdout is None:
        _hold_closed_stdout()
        sys.stdout = cast(TextIO, _ClosedStdout())
    watched = [
        _WatchedStream(stream, name)
        for stream, name in ((sys.stdout, "stdout"), (stderr, "stderr"))
        if stream
    ]
    for stream in watched:
        setattr(sys, stream.name, cast(TextIO, stream))
    try:
        return _main_written(argv, watched)
    finally:
        sys.stdout, sys.stderr = stdout, stderr


def _main_written(argv: Sequence[str] | None, watched: list[_WatchedStream]) -> int:
    """_main, its output written before it returns; output that cannot be written is a status of
    its own (141 or EXIT_OUTPUT_LOST), unless the command's own status already says it failed."""
    code: int | None = None
    try:
        try:
            code = _main(argv)
        finally:
            # Written now (also before argparse's exit), so a reader that went away is noticed
            # here, not by the interpreter's flush at exit, which would print a traceback.
            for stream in watched:
                stream.flush()
    except BrokenPipeError:
        if not _readers_gone():
            raise  # another pipe or socket: not the reader of our output
        return code or EXIT_BROKEN_PIPE
    except OutputLost as exc:
        for stream in watched:
            if stream.failed:
                # What is still buffered for it would fail again at exit (a traceback, status 120).
                _discard_output(stream.stream)
        with contextlib.suppress(OSError):  # stderr may be the one that failed: nothing to tell
            print(f"{PROG}: cannot write output: {exc}", file=sys.stderr, flush=True)
        return code or EXIT_OUTPUT_LOST
    return code


def _discard_output(stream: TextIO) -> None:
    with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):  # no descriptor: in-memory
        _point_at_devnull(stream.fileno())


def _readers_gone() -> bool:
    """Whether stdout's or stderr's reader went away; each such stream is pointed at /dev/null so
    what is still buffered for it (flushed at exit) goes nowhere instead of raising again."""
    gone = False
    for stream, fd in ((sys.stdout, 1), (sys.stderr, 2)):
        if stream is None or not _reader_gone(fd):
            continue
        gone = True
        _point_at_devnull(fd)
    return gone


def _point_at_devnull(fd: int) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _reader_gone(fd: int) -> bool:
    """A pipe or socket whose reading end is closed polls as an error (POLLERR, or POLLHUP)."""
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    events = dict(poller.poll(0)).get(fd, 0)
    return bool(events & (select.POLLERR | select.POLLHUP))


def _main(argv: Sequence[str] | None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_overview())
        return 0
    if args[0] == "--version":
        print(f"{PROG} {__version__}")
        return 0
    found = _find(args)
    if found is None:
        return _not_a_command(args)
    command, rest = found
    module = importlib.import_module(command.module)
    parser = argparse.ArgumentParser(prog=f"{PROG} {' '.join(command.words)}", description=command.help)
    module.configure(parser)
    options = parser.parse_args(rest)
    try:
        code = module.run(options)
    except UserError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
