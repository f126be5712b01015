"""Where an alert's round trip waits: the stages of the HTTP input and the journal, timed in the
running responder (how round 6 of bench/README.md found the writer waiting for the GIL).

    python -m bench.run --only http_ingest --stages      # each HTTP run gets a "stages" summary
    python -m bench.stages serve --config FILE --out EVENTS.json   # what that runs
    python -m bench.stages summary EVENTS.json [--skip-seconds S]  # a summary of an events file

``serve`` here is the responder's own ``serve`` with probes wrapped around six functions, from
outside (the responder has no tracing code of its own). Each probe records
``(stage, start_ns, end_ns, count)``:

=========== ================================================== ==============
stage       function                                           thread
=========== ================================================== ==============
read        ``Connection.data_received`` (parse, validate,     event loop
            decide, schedule the journal ops)
answer      ``Connection._answer`` (encode and send a reply)   event loop
hand_over   ``Journal._hand_over`` (ops to the writer; count)  event loop
commit      ``ThreadWriter._commit_batch`` (one transaction;   journal writer
            count)
fsync       ``WalSyncer._sync`` (the WAL's fsync)              journal sync
resolve     ``journal._resolve_all`` (waiters of a synced      event loop
            group; count)
=========== ================================================== ==============

With ``journal.writer: process`` (the default) the commit and the fsync run in the writer's own
process. ``serve`` starts that process under ``python -m bench.stages writer``, which probes it the
same way (commit, fsync) and adds two stages for the hops between the processes:

=========== ================================================== ==============
stage       function                                           process
=========== ================================================== ==============
frame_in    ``ThreadWriter.put`` in the writer process (a      writer
            frame of ops received and loaded; count)
frame_back  ``ProcessWriter._receive_frame`` (its end: an      responder
            answer arrived; a blocking read, so only the end
            counts)
=========== ================================================== ==============

``CLOCK_MONOTONIC`` is one clock for both processes, so the waits across them are measured as
within one. The writer's events go to a file of their own and are merged into ``--out`` when the
responder stops. The benchmark's thread-writer responder (``journal.writer: thread``) is traced
too.

The summary gives the waits between the stages (hand-over → commit start, commit end → fsync
start, fsync end → resolve; with the writer process also hand-over → frame in, frame in → commit
start, fsync end → frame back, frame back → resolve), which are where a thread waited for the
GIL, a core or the disk, and hand-over → resolve, the journal's whole round trip as the event loop
sees it. The events of the last ``MAX_EVENTS`` calls are kept; the probes cost a few µs per call,
so compare traced runs with traced runs only.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import functools
import json
import sys
import time
import types
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from bench.stats import distribution

MAX_EVENTS = 400_000
LOOP_STAGES = ("read", "answer", "hand_over", "resolve")

Event = tuple[str, int, int, int]


class StageRecorder:
    """A bounded record of probe events, appended to from any thread (deque appends are atomic)."""

    def __init__(self, max_events: int = MAX_EVENTS) -> None:
        self.events: collections.deque[Event] = collections.deque(maxlen=max_events)

    def probe(
        self, stage: str, function: Callable[..., Any], count: Callable[..., int] | None = None
    ) -> Callable[..., Any]:
        record = self.events.append
        clock = time.monotonic_ns  # the benchmark's own clock, so it can say which events to keep

        @functools.wraps(function)
        def probed(*args: Any, **kwargs: Any) -> Any:
            counted = count(*args) if count is not None else 0  # before the call empties it
            start = clock()
            try:
                return function(*args, **kwargs)
            finally:
                record((stage, start, clock(), counted))

        return probed

    def install(self) -> None:
        """Wrap the responder's functions of the tables above."""
        import responder.journal.store as journal_module
        from responder.ingest.httpserver import Connection
        from responder.journal.process import ProcessWriter
        from responder.journal.store import Journal

        Connection.data_received = self.probe("read", Connection.data_received)  # type: ignore[method-assign]
        Connection._answer = self.probe("answer", Connection._answer)  # type: ignore[method-assign]
        Journal._hand_over = self.probe(  # type: ignore[method-assign]
            "hand_over", Journal._hand_over, lambda journal: len(journal._scheduled)
        )
        ProcessWriter._receive_frame = self.probe(  # type: ignore[method-assign]
            "frame_back", ProcessWriter._receive_frame
        )
        # Looked up by name each time the journal settles a group, so the module's name is wrapped.
        journal_module._resolve_all = self.probe("resolve", journal_module._resolve_all, len)
        self.install_writer()

    def install_writer(self) -> None:
        """Wrap the journal writer's functions: the commit and the fsync (in whichever process the
        writer runs)."""
        from responder.journal.walsync import WalSyncer
        from responder.journal.writer import ThreadWriter

        ThreadWriter._commit_batch = self.probe(  # type: ignore[method-assign]
            "commit", ThreadWriter._commit_batch, lambda writer, conn, batch: len(batch)
        )
        WalSyncer._sync = self.probe("fsync", WalSyncer._sync)  # type: ignore[method-assign]

    def install_writer_process(self) -> None:
        """In the writer process: the writer's functions, and each frame of ops it takes."""
        from responder.journal.writer import ThreadWriter

        self.install_writer()
        ThreadWriter.put = self.probe(  # type: ignore[method-assign]
            "frame_in", ThreadWriter.put, lambda writer, group: len(group)
        )

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(list(self.events)))


def _next_start(starts: list[int], after_ns: int) -> int | None:
    index = bisect.bisect_left(starts, after_ns)
    return starts[index] if index < len(starts) else None


def _waits_ms(ends: Iterable[int], starts: list[int]) -> list[float]:
    """For each end, the time until the next start of the other stage (ms)."""
    waits = []
    for end in ends:
        following = _next_start(starts, end)
        if following is not None:
            waits.append((following - end) / 1e6)
    return waits


def _busy_ns(intervals: list[tuple[int, int]]) -> int:
    """Time covered by the union of the intervals."""
    busy = 0
    covered_to = None
    for start, end in sorted(intervals):
        if covered_to is None or start > covered_to:
            busy += end - start
            covered_to = end
        elif end > covered_to:
            busy += end - covered_to
            covered_to = end
    return busy


def summarize(events: Iterable[Sequence[Any]], window_ns: tuple[int, int] | None = None) -> dict[str, Any]:
    """The stage summary of the events that start within ``window_ns`` (monotonic clock; None:
    all of them). Durations and waits are in milliseconds."""
    ordered: list[Event] = sorted(
        ((str(stage), int(start), int(end), int(count)) for stage, start, end, count in events),
        key=lambda event: event[1],
    )
    low, high = window_ns if window_ns is not None else (-(1 << 63), 1 << 63)
    kept = [event for event in ordered if low <= event[1] < high]
    if not kept:
        return {"events": 0}
    by_stage: dict[str, list[Event]] = collections.defaultdict(list)
    for event in kept:
        by_stage[event[0]].append(event)

    def starts(stage: str) -> list[int]:
        return [event[1] for event in by_stage[stage]]

    def ends(stage: str) -> list[int]:
        return [event[2] for event in by_stage[stage]]

    def durations(stage: str) -> list[float]:
        return [(event[2] - event[1]) / 1e6 for event in by_stage[stage]]

    commits = by_stage["commit"]
    ops = sum(event[3] for event in commits)
    span_ns = max(event[2] for event in kept) - kept[0][1]
    loop_intervals = [(event[1], event[2]) for stage in LOOP_STAGES for event in by_stage[stage]]
    return {
        "events": len(kept),
        "window_seconds": round(span_ns / 1e9, 3),
        "commits": len(commits),
        "ops_per_commit": round(ops / len(commits), 1) if commits else None,
        "hand_overs": len(by_stage["hand_over"]),
        "writer_process_frames": len(by_stage["frame_in"]),
        "ms": {
            "hand_over_to_commit_start": distribution(
                _waits_ms((e[2] for e in by_stage["hand_over"] if e[3]), starts("commit"))
            ),
            "commit": distribution(durations("commit")),
            "commit_end_to_fsync_start": distribution(_waits_ms(ends("commit"), starts("fsync"))),
            "fsync": distribution(durations("fsync")),
            "fsync_end_to_resolve": distribution(_waits_ms(ends("fsync"), starts("resolve"))),
            # The hops of the writer process (none with the thread writer): the frame's way there,
            # the commit interval's wait, the answer's way back, and the event loop's wake-up.
            "hand_over_to_frame_in": distribution(
                _waits_ms((e[2] for e in by_stage["hand_over"] if e[3]), starts("frame_in"))
            ),
            "frame_in_to_commit_start": distribution(_waits_ms(ends("frame_in"), starts("commit"))),
            "fsync_end_to_frame_back": distribution(_waits_ms(ends("fsync"), sorted(ends("frame_back")))),
            "frame_back_to_resolve": distribution(_waits_ms(ends("frame_back"), starts("resolve"))),
            # The journal's whole round trip as the event loop sees it, whichever process writes.
            "hand_over_to_resolve": distribution(
                _waits_ms((e[2] for e in by_stage["hand_over"] if e[3]), starts("resolve"))
            ),
            "read": distribution(durations("read")),
            "answer": distribution(durations("answer")),
            "resolve": distribution(durations("resolve")),
        },
        # Share of the window in which the event loop ran one of its traced callbacks: the rest it
        # was idle or doing untraced work (timers, metrics).
        "loop_traced_busy_fraction": round(_busy_ns(loop_intervals) / span_ns, 3) if span_ns else None,
    }


class EventsFileError(Exception):
    """An events file that cannot be read or is not what ``serve`` writes."""


def load_events(path: Path) -> list[Event]:
    """The events ``serve`` wrote to ``path``; EventsFileError names the file and the bad entry."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise EventsFileError(f"{path}: cannot read: {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EventsFileError(f"{path}: not JSON: {exc}") from None
    if not isinstance(raw, list):
        raise EventsFileError(f"{path}: expected a list of events, got {type(raw).__name__}")
    events: list[Event] = []
    for index, entry in enumerate(raw):
        shaped = isinstance(entry, list) and len(entry) == 4 and isinstance(entry[0], str)
        if not shaped or not all(type(value) is int for value in entry[1:]):
            raise EventsFileError(f"{path}: event {index}: expected [stage, start_ns, end_ns, count]")
        events.append((entry[0], entry[1], entry[2], entry[3]))
    return events


def _write_events(recorder: StageRecorder, out: Path) -> None:
    try:
        recorder.write(out)
    except OSError as exc:
        print(f"bench.stages: {out}: cannot write the events: {exc.strerror}", file=sys.stderr)


class _TracedWriterProcesses:
    """Starts the journal's writer processes under ``python -m bench.stages writer``, each writing
    its events to a file of its own, and merges those into the responder's events."""

    def __init__(self, out: Path) -> None:
        self._out = out
        self.files: list[Path] = []

    def install(self) -> None:
        from responder.journal import process as journal_process

        # The module's own view of ``subprocess`` only: a copy whose Popen rewrites that one command.
        names = vars(journal_process)
        real = names["subprocess"]
        traced = types.ModuleType("subprocess")
        vars(traced).update(vars(real))
        vars(traced)["Popen"] = self._popen(real.Popen)
        names["subprocess"] = traced

    def _popen(self, popen: Callable[..., Any]) -> Callable[..., Any]:
        def traced(args: list[str], **kwargs: Any) -> Any:
            if list(args[1:3]) == ["-m", "responder.journal.process"]:
                events = self._out.with_name(f"{self._out.name}.writer-{len(self.files)}")
                self.files.append(events)
                args = [args[0], "-m", "bench.stages", "writer", "--out", str(events), *args[3:]]
            return popen(args, **kwargs)

        return traced

    def merge_into(self, recorder: StageRecorder) -> None:
        for path in self.files:
            try:
                recorder.events.extend(load_events(path))
            except EventsFileError as exc:  # e.g. a writer process that was killed
                print(f"bench.stages: the writer process's events are missing: {exc}", file=sys.stderr)


def serve(config: str, out: Path) -> int:
    from responder.cli import main as responder_main

    recorder = StageRecorder()
    recorder.install()
    writers = _TracedWriterProcesses(out)
    writers.install()
    try:
        return responder_main(["serve", "--config", config])
    finally:
        # The responder has stopped, and with it its writer processes, which wrote their events.
        writers.merge_into(recorder)
        _write_events(recorder, out)


def writer(out: Path, descriptor: str) -> int:
    """The journal's writer process (``python -m responder.journal.process FD``), probed."""
    from responder.journal.process import main as writer_main

    recorder = StageRecorder()
    recorder.install_writer_process()
    try:
        return writer_main(["responder.journal.process", descriptor])
    finally:
        _write_events(recorder, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serving = commands.add_parser("serve", help="run the responder with the stage probes")
    serving.add_argument("--config", required=True, help="the responder's config file")
    serving.add_argument("--out", required=True, help="where to write the events (JSON) when it stops")
    writing = commands.add_parser(
        "writer", help="the journal's writer process with the probes (started by serve)"
    )
    writing.add_argument("--out", required=True, help="where to write the events (JSON) when it stops")
    writing.add_argument("descriptor", help="the socket's file descriptor, as the responder passes it")
    summary = commands.add_parser("summary", help="summarize an events file")
    summary.add_argument("events", help="the events file written by serve")
    summary.add_argument("--skip-seconds", type=float, default=0.0, help="leave out the first seconds")
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args.config, Path(args.out))
    if args.command == "writer":
        return writer(Path(args.out), args.descriptor)
    try:
        events = load_events(Path(args.events))
    except EventsFileError as exc:
        print(f"bench.stages: {exc}", file=sys.stderr)
        return 2
    window = None
    if events:
        first = min(event[1] for event in events)
        window = (first + int(args.skip_seconds * 1e9), 1 << 63)
    json.dump(summarize(events, window), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
