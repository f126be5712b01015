"""Run derived cases on loaded rules: write each derived capture, judge it with sysdig, in parallel.

The captures are written to a temporary directory removed afterwards, also when the run is stopped
(Ctrl-C, or SIGTERM from a CI timeout or timeout(1)); each is read by one sysdig per expectation
(about 25 ms each), so the cases run on every CPU.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
from collections.abc import Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import FrameType

from responder.rulespack.check import tuning_errors
from responder.rulespack.derived import CaseVerdict, Conditions, DerivedCase, judge, write_derived
from responder.rulespack.derived_blame import Batch, Rejudge, blame_failures, left_open
from responder.rulespack.derived_report import DerivedReport, build_report
from responder.rulespack.evasion_cases import evasion_cases
from responder.rulespack.example_cases import example_cases
from responder.rulespack.examples import ExamplesFile
from responder.rulespack.expand import RuleSet
from responder.rulespack.matrix import CaptureReport
from responder.rulespack.paths import default_captures
from responder.rulespack.recorded import CaptureLibrary, Recorded
from responder.rulespack.suite import user_rules
from responder.rulespack.sysdig import Sysdig
from responder.rulespack.sysdig_compat import to_sysdig


def conditions_of(ruleset: RuleSet, user_files: Collection[str] = ()) -> Conditions:
    """The enabled syscall rules as sysdig evaluates them, why each other rule is absent, and which
    rules ``user_files`` (the user's tuning) add to the pack."""
    enabled = {
        name: to_sysdig(rule.ast).text
        for name, rule in ruleset.expanded.items()
        if rule.enabled and rule.source == "syscall"
    }
    absent = {}
    for name, state in ruleset.rules.items():
        if name in enabled:
            continue
        if state.disabled_at is not None:
            absent[name] = f"disabled at {state.disabled_at}"
        elif state.source != "syscall":
            absent[name] = f"a {state.source} rule"
    return Conditions(enabled, absent, user_rules(ruleset, user_files))


def _recorded_programs(cases: Sequence[DerivedCase]) -> list[Recorded]:
    """Every recorded program the cases name (their own, and those their expectations judge)."""
    programs = [case.recorded for case in cases]
    programs += [e.thread_of for case in cases for e in case.expect if e.thread_of is not None]
    return list(dict.fromkeys(programs))


def _workers() -> int:
    # sysdig is single-threaded and short-lived: one per CPU, and a few more to overlap its start.
    return max(2, (os.cpu_count() or 1) + 2)


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def _sigterm_exits() -> Iterator[None]:
    """SIGTERM raises SystemExit while the cases run, so their temporary directory is removed (the
    default action kills the process, leaving it). Only the main thread can set a handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def run_cases(
    sysdig: Sysdig,
    library: CaptureLibrary,
    cases: Sequence[DerivedCase],
    conditions: Conditions,
    *,
    check_witness: bool = False,
) -> list[CaseVerdict]:
    return run_judged(sysdig, library, [(case, conditions) for case in cases], check_witness=check_witness)


def run_judged(
    sysdig: Sysdig,
    library: CaptureLibrary,
    judged: Sequence[tuple[DerivedCase, Conditions]],
    *,
    check_witness: bool = False,
) -> list[CaseVerdict]:
    """Each case judged on its own rules (ablation judges cases on several loadings at once)."""
    # The recordings are parsed before the threads start: the library's cache is filled once.
    library.load(_recorded_programs([case for case, _ in judged]))
    with _sigterm_exits(), tempfile.TemporaryDirectory(prefix="sg-derived-") as workdir:

        def one(indexed: tuple[int, tuple[DerivedCase, Conditions]]) -> CaseVerdict:
            index, (case, conditions) = indexed
            capture = write_derived(library, case, Path(workdir) / f"{index}-{case.recorded.capture}")
            try:
                return judge(sysdig, library, case, conditions, capture, check_witness=check_witness)
            finally:
                capture.unlink(missing_ok=True)

        pool = ThreadPoolExecutor(max_workers=_workers())
        try:
            return list(pool.map(one, enumerate(judged)))
        finally:
            # Stopped: the cases not started are dropped, the running ones end (a sysdig each).
            pool.shutdown(wait=True, cancel_futures=True)


def rejudge_on(sysdig: Sysdig, library: CaptureLibrary, user_files: Collection[str]) -> Rejudge:
    """derived_blame's runner: every batch of cases on its own loaded rules, in one parallel run."""

    def rejudge(batches: Sequence[Batch]) -> list[list[CaseVerdict]]:
        judged: list[tuple[DerivedCase, Conditions]] = []
        for rules, cases in batches:
            conditions = conditions_of(rules, user_files)
            judged += [(case, conditions) for case in cases]
        verdicts = iter(run_judged(sysdig, library, judged))
        return [[next(verdicts) for _ in cases] for _, cases in batches]

    return rejudge


def run_examples_and_evasions(
    sysdig: Sysdig,
    ruleset: RuleSet,
    user_files: Sequence[str],
    examples: ExamplesFile,
    captures: CaptureReport,
    accepted: Collection[str] = (),
) -> DerivedReport:
    """The examples file's rule examples and every evasion case, on the loaded rules. The derived
    captures start from this checkout's recordings, whatever --captures names: the cases were
    written for them. ``accepted``: the --accept names (their failures are not ablated)."""
    library = CaptureLibrary(default_captures())
    conditions = conditions_of(ruleset, user_files)
    cases = example_cases(examples)
    derived = [case.derived for case in cases if case.derived is not None]
    evasions = evasion_cases(ruleset)  # with a case for each model dir the user's files add
    verdicts = run_cases(sysdig, library, [*derived, *evasions], conditions)
    report = build_report(
        ruleset, user_files, captures, cases, verdicts[: len(derived)], verdicts[len(derived) :]
    )
    # Blamed after what is accepted or not judged is known: those failures are not ablated.
    unsettled = _unsettled(report, verdicts[: len(derived)], accepted)
    blame = blame_failures(ruleset, user_files, unsettled, rejudge_on(sysdig, library, user_files))
    # Not "not your tuning" where rules check finds the user's files leave the case open.
    blame = left_open(blame, unsettled, tuning_errors(ruleset, user_files))
    return replace(report, blame=blame)


def _unsettled(
    report: DerivedReport,
    example_verdicts: Sequence[CaseVerdict],
    accepted: Collection[str],
) -> list[CaseVerdict]:
    """The failed derived cases, each with only the problems that are judged and not accepted (by
    the --accept names the report gives their failures)."""
    examples = {v.case.derived.id: v.case for v in report.examples if v.case.derived is not None}
    wanted = set(accepted)
    unsettled = []
    for verdict in [*example_verdicts, *report.evasions]:
        if verdict.ok or not report.judged(verdict):
            continue
        example = examples.get(verdict.case.id)
        problems = tuple(
            problem
            for problem in verdict.problems
            if not wanted.intersection(
                report.example_names(example)
                if example is not None
                else report.evasion_names(verdict, problem)
            )
        )
        if problems:
            unsettled.append(replace(verdict, problems=problems))
    return unsettled
