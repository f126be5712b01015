"""The journal's writer in a process of its own (``journal.writer: process``, the default).

Why: the writer's SQLite work, in the responder's process, needs the GIL for each step of each
commit, and gets it back only when the event loop lets go. While the loop reads a burst of alerts,
a commit of ten rows took 5 to 7 ms instead of 0.6 (bench/README.md, round 6). In its own process
the writer commits while the loop reads: the loop only pickles each turn's ops into one frame.

The responder and its writer talk over a private socket pair, in length-prefixed frames:

- responder → writer: two pickles back to back, the op ids and then the ops to commit in that
  order; or ``None`` to stop. The ids come first so that a frame whose ops the writer cannot load
  (a class it cannot import) is answered, op by op, with why, instead of ending the writer;
- writer → responder: ``("ready",)`` or ``("error", message)`` once, after opening the journal;
  then ``("settled", [(op id, value, error)...], commits, ops committed)`` per synced group,
  ``("log", level, message, fields)`` for its log records, and ``("closed",)`` last.

Frames are pickles. They come only from the child this process started, over a socket pair no one
else holds, so nothing untrusted is unpickled. The writer stops when the responder stops it or its
end of the socket closes (the responder died): it commits what it has and exits.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import asdict
from multiprocessing.connection import Connection
from typing import Any

from responder.errors import UserError
from responder.journal.walsync import WriterFailed
from responder.journal.writer import Op, Result, ThreadWriter, WriterOptions

log = logging.getLogger("serving_guard.journal")

# The writer process's log records that carry these fields keep them when the responder logs them.
_LOG_FIELDS = ("error", "batch")


class JournalUnavailable(OSError):
    """The journal's writer process is gone: writes cannot be made durable."""


class ProcessWriter:
    """The responder's end: ``start``, ``put``, ``stop``, ``commits`` and ``ops_committed`` as
    :class:`~responder.journal.writer.ThreadWriter`; each waiter is settled on the thread that
    receives the writer's frames, as the thread writer settles on its own threads."""

    def __init__(
        self, options: WriterOptions, settle: Callable[[list[Result[Any]]], None], lock_fd: int | None = None
    ) -> None:
        self._options = options
        # The journal's lock (responder/journal/lock.py), if held: inherited, it is held until the
        # writer exits too, so that a responder killed (SIGKILL) while its writer still commits
        # what it had does not let another start on the journal meanwhile.
        self._lock_fd = lock_fd
        self._settle = settle
        self._process: subprocess.Popen[bytes] | None = None
        self._link: Connection | None = None
        self._receiver: threading.Thread | None = None
        # Sends and the waiting table change together: an op is in the table before its frame
        # leaves, so its answer always finds it.
        self._lock = threading.Lock()
        self._waiting: dict[int, Any] = {}
        self._ids = itertools.count()
        self._loadable: set[type] = set()  # op classes the writer process can import
        # Set for good when the writer process is gone or reports a failure fatal to it (its fsync
        # failed, the journal is damaged: walsync.WriterFailed).
        self._failure: OSError | None = None
        self._stopping = False
        self.commits = 0
        self.ops_committed = 0

    @property
    def failure(self) -> str | None:
        """Why writes fail now and until a restart (the writer process is gone, or its fsync
        failed, or the journal is damaged), or None."""
        if self._failure is None:
            return None
        if isinstance(self._failure, WriterFailed):
            return self._failure.refusal
        return str(self._failure)

    def start(self) -> None:
        ours, theirs = socket.socketpair()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "responder.journal.process", str(theirs.fileno())],
                stdin=subprocess.PIPE,
                pass_fds=(theirs.fileno(),) if self._lock_fd is None else (theirs.fileno(), self._lock_fd),
            )
            assert self._process.stdin is not None
            # The options go on stdin, not argv: paths may hold anything.
            self._process.stdin.write(json.dumps(asdict(self._options)).encode())
            self._process.stdin.close()
        except OSError as exc:
            ours.close()
            raise UserError(f"journal {self._options.path}: cannot start its writer process: {exc}") from None
        finally:
            theirs.close()
        self._link = Connection(ours.detach())
        first = self._receive_frame()
        while first is not None and first[0] == "log":  # opening logs, e.g. a schema upgrade
            self._log(first)
            first = self._receive_frame()
        if first is None or first[0] != "ready":
            code = self._process.wait(timeout=30)
            self._link.close()
            if first is not None and first[0] == "error":
                raise UserError(str(first[1]))
            raise UserError(f"journal {self._options.path}: its writer process exited with code {code}")
        self._receiver = threading.Thread(target=self._receive, name="journal-link", daemon=True)
        self._receiver.start()

    def put(self, group: list[tuple[Op, Any]]) -> None:
        with self._lock:
            failed: list[Result[Any]]
            if self._failure is not None:
                failed = [(waiter, None, self._failure) for _, waiter in group]
            else:
                failed = self._send(group)
        if failed:
            self._settle(failed)

    def _send(self, group: list[tuple[Op, Any]]) -> list[Result[Any]]:
        """Send the group; returns the ops that cannot be sent, with why. Called under the lock."""
        assert self._link is not None
        framed = [(next(self._ids), op, waiter) for op, waiter in group]
        if not all(type(op) in self._loadable for _, op, _ in framed):
            return self._send_one_by_one(framed)
        try:
            data = _frame(framed)
        except Exception:
            return self._send_one_by_one(framed)
        return self._send_frame(data, framed)

    def _send_one_by_one(self, framed: list[tuple[int, Op, Any]]) -> list[Result[Any]]:
        failed: list[Result[Any]] = []
        sendable: list[tuple[int, Op, Any]] = []
        for op_id, op, waiter in framed:
            why = self._why_not_sendable(op)
            if why is not None:
                error = TypeError(f"journal op {op!r} cannot go to the writer process: {why}")
                failed.append((waiter, None, error))
                continue
            sendable.append((op_id, op, waiter))
        if sendable:
            failed.extend(self._send_frame(_frame(sendable), sendable))
        return failed

    def _why_not_sendable(self, op: Op) -> str | None:
        op_class = type(op)
        if op_class.__module__ == "__main__":
            # Pickled by reference to the responder's __main__, which the writer process does not
            # have: loading it there would fail. Said here, for this op alone.
            return f"its class {op_class.__qualname__} is defined in __main__; define it in a module"
        try:
            pickle.dumps(op, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            return str(exc)
        self._loadable.add(op_class)
        return None

    def _send_frame(self, data: bytes, framed: list[tuple[int, Op, Any]]) -> list[Result[Any]]:
        assert self._link is not None
        for op_id, _, waiter in framed:
            self._waiting[op_id] = waiter
        try:
            self._link.send_bytes(data)
        except OSError as exc:
            for op_id, _, _ in framed:
                self._waiting.pop(op_id, None)
            self._failure = self._failure or JournalUnavailable(
                f"journal writer process unreachable: {exc.strerror or exc}"
            )
            return [(waiter, None, self._failure) for _, _, waiter in framed]
        return []

    def stop(self, timeout: float = 30.0) -> None:
        """Let the writer commit and sync what it has, settle it, and exit."""
        if self._process is None or self._link is None:
            return
        with self._lock:
            self._stopping = True
            if not isinstance(self._failure, JournalUnavailable):
                # (Gone already otherwise: the receiver fails what was waiting.) After a failed
                # fsync it is still there, refusing writes: it is told to stop as ever.
                with contextlib.suppress(OSError):
                    self._link.send_bytes(pickle.dumps(None))  # no op ids: stop
        if self._receiver is not None:
            self._receiver.join(timeout)
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("journal: the writer process did not stop; killing it")
            self._process.kill()
            self._process.wait()
        self._link.close()
        self._process = None

    def _receive_frame(self) -> tuple[Any, ...] | None:
        assert self._link is not None
        try:
            # The writer process this one started, over a private socket pair (see the module's doc).
            message: tuple[Any, ...] = pickle.loads(self._link.recv_bytes())  # noqa: S301
        except (EOFError, OSError):
            return None
        return message

    def _receive(self) -> None:
        try:
            self._receive_until_closed()
        except Exception:  # a bug here would strand every waiter: fail them all instead
            log.exception("journal: reading the writer process's answers failed")
            assert self._process is not None
            self._process.kill()
        self._fail_waiting()

    def _receive_until_closed(self) -> None:
        while True:
            message = self._receive_frame()
            if message is None or message[0] == "closed":
                return
            kind = message[0]
            if kind == "settled":
                _, settled, self.commits, self.ops_committed = message
                with self._lock:
                    results = [
                        (self._waiting.pop(op_id, None), value, error) for op_id, value, error in settled
                    ]
                    final = next((e for _, _, e in settled if isinstance(e, WriterFailed)), None)
                    if final is not None and self._failure is None:
                        # Fatal to the writer (a failed fsync, a damaged journal): refused here from
                        # now on too, and /healthz fails so that a restart resumes what reached the disk.
                        self._failure = final
                self._settle([result for result in results if result[0] is not None])
            elif kind == "log":
                self._log(message)

    @staticmethod
    def _log(message: tuple[Any, ...]) -> None:
        _, level, text, fields = message
        log.log(level, text, extra=fields)

    def _fail_waiting(self) -> None:
        assert self._process is not None
        code = self._process.wait()
        with self._lock:
            if self._failure is None:
                self._failure = JournalUnavailable(f"journal writer process exited with code {code}")
            waiting, self._waiting = self._waiting, {}
            stopping = self._stopping
        if waiting or not stopping:
            log.critical(
                "journal: the writer process is gone; writes fail until the responder restarts",
                extra={"error": str(self._failure), "batch": len(waiting)},
            )
        self._settle([(waiter, None, self._failure) for waiter in waiting.values()])


def _frame(framed: list[tuple[int, Op, Any]]) -> bytes:
    """The op ids, then the ops: two pickles back to back (see the module's doc)."""
    op_ids = pickle.dumps([op_id for op_id, _, _ in framed], protocol=pickle.HIGHEST_PROTOCOL)
    return op_ids + pickle.dumps([op for _, op, _ in framed], protocol=pickle.HIGHEST_PROTOCOL)


# -- the writer process ---------------------------------------------------------------------------


class _LinkLogHandler(logging.Handler):
    """Sends the writer's log records to the responder, which logs them in its own format."""

    def __init__(self, send: Callable[[tuple[Any, ...]], None]) -> None:
        super().__init__()
        self._send = send

    def emit(self, record: logging.LogRecord) -> None:
        fields = {name: getattr(record, name) for name in _LOG_FIELDS if hasattr(record, name)}
        if record.exc_info and record.exc_info[1] is not None:
            fields["error"] = "".join(traceback.format_exception_only(record.exc_info[1])).strip()
        with contextlib.suppress(OSError):  # the responder is gone
            self._send(("log", record.levelno, record.getMessage(), fields))


def _picklable(results: list[Result[int]]) -> list[Result[int]]:
    """Errors the responder can unpickle: an exception that does not round-trip (one whose
    constructor wants other arguments than it keeps, say) becomes a RuntimeError with its text."""
    checked: list[Result[int]] = []
    for op_id, value, error in results:
        sent = error
        if error is not None:
            try:
                pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes, just made
            except Exception:
                sent = RuntimeError(f"{type(error).__name__}: {error}")
        checked.append((op_id, value, sent))
    return checked


def serve(link: Connection, options: WriterOptions) -> int:
    send_lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        with send_lock:
            link.send_bytes(data)

    writer: ThreadWriter[int]

    def settled(results: list[Result[int]]) -> None:
        # Errors are rare; each is checked, since one the responder could not unpickle would stop
        # it reading every answer after it.
        if any(error is not None for _, _, error in results):
            results = _picklable(results)
        data = pickle.dumps(
            ("settled", results, writer.commits, writer.ops_committed), protocol=pickle.HIGHEST_PROTOCOL
        )
        with contextlib.suppress(OSError), send_lock:  # the responder is gone; nobody waits
            link.send_bytes(data)

    journal_log = logging.getLogger("serving_guard")
    journal_log.handlers[:] = [_LinkLogHandler(send)]
    journal_log.setLevel(logging.INFO)
    journal_log.propagate = False

    writer = ThreadWriter(options, settled)
    try:
        writer.start()
    except UserError as exc:
        send(("error", str(exc)))
        return 2
    send(("ready",))
    while True:
        try:
            frame = io.BytesIO(link.recv_bytes())
        except (EOFError, OSError):
            break  # the responder is gone: commit what is queued, then stop
        # The responder that started this process, over a private socket pair.
        op_ids: list[int] | None = pickle.load(frame)  # noqa: S301
        if op_ids is None:
            break
        try:
            ops: list[Op] = pickle.load(frame)  # noqa: S301
        except Exception as exc:
            # An op whose class (or a value in it) this process cannot import. Its write fails, with
            # the others of its frame (one pickle: they cannot be told apart); the writer goes on.
            why = TypeError(f"journal writer process cannot load these writes: {type(exc).__name__}: {exc}")
            log.error("journal: writes the writer process cannot load failed", extra={"error": str(why)})
            settled([(op_id, None, why) for op_id in op_ids])
            continue
        writer.put(list(zip(ops, op_ids, strict=True)))
    writer.stop()
    with contextlib.suppress(OSError):
        send(("closed",))
    return 0


def main(argv: list[str]) -> int:
    # Ctrl-C and a hang-up (a closed terminal or session) reach the whole process group; the writer
    # stops when the responder tells it to (or goes away), so that what it has is committed first.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    usage = "usage: python -m responder.journal.process FD < OPTIONS.json  (started by the responder)"
    if len(argv) != 2 or not (argv[1].isascii() and argv[1].isdigit()):
        print(usage, file=sys.stderr)
        return 2
    try:
        options = WriterOptions(**json.loads(sys.stdin.buffer.read()))
    except (ValueError, TypeError) as exc:  # not JSON, not an object, or not WriterOptions' fields
        print(f"journal writer: bad options on stdin: {exc}\n{usage}", file=sys.stderr)
        return 2
    try:
        os.fstat(int(argv[1]))
    except OSError as exc:
        print(f"journal writer: file descriptor {argv[1]}: {exc.strerror}\n{usage}", file=sys.stderr)
        return 2
    link = Connection(int(argv[1]))
    try:
        return serve(link, options)
    finally:
        link.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
