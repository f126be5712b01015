"""Randomized: the real pipeline through refused and held journal writes, redeliveries and
restarts; then, once a last restart has taken every write and drained, the journal's invariants.

Each example is a short sequence of steps (hypothesis draws and shrinks it, and prints the failing
one with what each step did) over two pods and two rules (four incident keys): send new alerts of a
key (through ``Pipeline.submit``, or several in one turn of the loop through ``Pipeline.offer``),
redeliver an alert sent before, move the fake clock (within the dedupe window, past the re-decide
delay, past the window), refuse the next journal write of one kind (for whichever incident or alert
it is: the journal's op builders are wrapped, as in tests/test_pipeline_journal_failure.py, and the
refused op raises inside the writer's transaction like a failing disk), hold an incident's opening
write while repeats of its key arrive (then refuse it), and restart the responder on the same
journal. A refusal still armed at a restart fires during recovery. Everything else is real: the
journal (its thread writer), the pipeline, the notifier (to an in-memory Slack), the Kubernetes API
emulator on loopback.

What is checked, and why it is promised, is written beside each check in :func:`check_invariants`
(at the end) and :meth:`Run.stop` (at every stop). ``SERVING_GUARD_INVARIANT_EXAMPLES`` sets how
many examples run; the same ones every time (derandomized: the suite stays deterministic) unless
``SERVING_GUARD_INVARIANT_SEED`` picks another fixed set.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, example, given, note, seed, settings
from hypothesis import strategies as st

from responder.alert import Alert
from responder.alert_json import alert_from_mapping
from responder.cluster.api import KubeGateway
from responder.dedupe import incident_id_for
from responder.ingest.sink import Accepted, InputName
from responder.journal.ops import Touch
from responder.journal.store import INCIDENTS_WITH_SEEN_SQL, Journal
from responder.journal.writer import Op
from responder.notify.slack import SlackRef
from responder.pipeline import Pipeline
from responder.service import Responder
from simulators.cluster_emulator import RunningCluster
from simulators.falco_json import falco_alert
from simulators.seed import SeededPod, seed_serving_cluster
from tests.helpers import SHELL_RULE, FakeClock, responder_config
from tests.test_pipeline_journal_failure import REFUSAL, Held, Refused, World, pipeline_of

EXAMPLES = int(os.environ.get("SERVING_GUARD_INVARIANT_EXAMPLES", "120"))
SEED = os.environ.get("SERVING_GUARD_INVARIANT_SEED")

# The second rule's policy (flag-downloads in tests/helpers.py) annotates instead of quarantining.
RULES = (SHELL_RULE, "Runtime download in serving pod")
ACTION = {SHELL_RULE: "quarantine", RULES[1]: "annotate"}
PODS = ("vllm", "torchserve")
KEYS = [(pod, rule) for pod in PODS for rule in RULES]
WINDOW_SECONDS = 300.0  # the dedupe window (the default)
# Within the window; past the pipeline's re-decide delay (10 s) and quarantine recheck (15 s); past
# the window.
ADVANCES = (0.5, 4.0, 11.0, 16.0, WINDOW_SECONDS + 1)
# A fixed start for the fake clock: the same alerts (ids, times) every time an example is replayed.
CLOCK_START_NS = 1_800_000_000 * 10**9

# The journal's op builders a step may refuse, by the name the test gives their writes.
BUILDERS = {
    "append_alert": "op_append_alert",  # a new alert's row (pending)
    "append_duplicate": "op_append_duplicate",  # a repeat of a live incident, final at once
    "fold_duplicate": "op_fold_duplicate",  # a repeat folded in after its row was written
    "open_incident": "op_open_incident",
    "reset_actions": "op_reset_actions",  # a resumed incident's earlier action records
    "record_decision": "op_record_decision",
    "record_action": "op_record_action",
    "schedule_notification": "op_schedule_notification",  # an incident's post, or a repeat's
    "finish_alert": "op_finish_alert",  # an opening alert finished "opened"
    "recount_incident": "op_recount_incident",  # a counter set back after a refused repeat
}

# The modules whose journal writes the test refuses.
WRITERS_REFUSED = ("responder.pipeline", "responder.notify.worker")

# Where the builder of a counter's setting back takes its incident.
RECOUNT_INCIDENT_ARG = 0


# -- the steps ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """``count`` new alerts of key ``key``: each submitted and answered in turn, or all offered
    in one turn of the loop. Without ``settle`` the next step starts while they are processed."""

    key: int
    count: int
    offer: bool
    settle: bool


@dataclass(frozen=True)
class Redeliver:
    """An alert sent before (the ``pick``-th, modulo how many), sent again; with ``beside``, offered
    in one turn of the loop with a new alert of that key (whose write counts the redelivery in,
    when both are repeats of one incident)."""

    pick: int
    beside: int | None = None


@dataclass(frozen=True)
class Advance:
    seconds: float


@dataclass(frozen=True)
class Refuse:
    """The next write of kind ``op``, whichever incident or alert it is for, is refused."""

    op: str


@dataclass(frozen=True)
class Hold:
    """A new alert of ``key`` whose incident's opening write is held in the writer while
    ``repeats`` repeats arrive, and then refused."""

    key: int
    repeats: int


@dataclass(frozen=True)
class Restart:
    """Stop the responder and start another on the same journal; without ``settle`` the next step
    starts while the resumed alerts are processed."""

    settle: bool


Step = Send | Redeliver | Advance | Refuse | Hold | Restart

KEY = st.integers(0, len(KEYS) - 1)
STEP: st.SearchStrategy[Step] = st.one_of(
    st.builds(Send, KEY, st.integers(1, 3), st.booleans(), st.booleans()),
    st.builds(Send, KEY, st.integers(1, 3), st.booleans(), st.booleans()),
    st.builds(Redeliver, st.integers(0, 50), st.none() | KEY),
    st.builds(Advance, st.sampled_from(ADVANCES)),
    st.builds(Refuse, st.sampled_from(sorted(BUILDERS))),
    st.builds(Refuse, st.sampled_from(sorted(BUILDERS))),
    st.builds(Hold, KEY, st.integers(1, 3)),
    st.builds(Restart, st.booleans()),
)


# -- faults ---------------------------------------------------------------------------------------


@dataclass
class Faults:
    """What the wrapped op builders hand the writer instead of the real op: one refusal per armed
    kind, and the held opening write."""

    armed: Counter[str] = field(default_factory=Counter)
    hold: Held | None = None
    fired: list[str] = field(default_factory=list)
    # Refused settings back of a counter (after a refused or redelivered repeat), by incident.
    refused_recounts: Counter[str] = field(default_factory=Counter)

    def take(self, kind: str, args: tuple[Any, ...]) -> Op | None:
        if self.armed[kind] > 0:
            self.armed[kind] -= 1
            self.fired.append(kind)
            if kind == "recount_incident":
                self.refused_recounts[args[RECOUNT_INCIDENT_ARG]] += 1
            return Refused(kind)
        if kind == "open_incident" and self.hold is not None:
            held, self.hold = self.hold, None
            self.fired.append("open_incident (held)")
            return held
        return None

    def clear(self) -> None:
        self.armed.clear()
        self.hold = None


@contextmanager
def faults_installed(faults: Faults) -> Iterator[None]:
    """Wrap the builders: the writes the pipeline builds, and the notifier's (it builds
    op_schedule_notification too, to queue one more update of a thread whose count moved on while
    it was sent), may be refused."""
    with pytest.MonkeyPatch.context() as patch:
        for kind, name in BUILDERS.items():
            real = getattr(Journal, name)

            def builder(*args: Any, _kind: str = kind, _real: Callable[..., Op] = real, **kwargs: Any) -> Op:
                if sys._getframe(1).f_globals.get("__name__") not in WRITERS_REFUSED:
                    return _real(*args, **kwargs)
                return faults.take(_kind, args) or _real(*args, **kwargs)

            patch.setattr(Journal, name, staticmethod(builder))
        yield


class ErrorRecords(logging.Handler):
    """The responder's records at ERROR and above (whatever earlier tests did to propagation)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    @contextmanager
    def attached(self) -> Iterator[ErrorRecords]:
        """On the responder's logger, and asyncio's (a write's error that nobody heard: "Future
        exception was never retrieved"; a task's that nobody awaited)."""
        loggers = [logging.getLogger(name) for name in ("serving_guard", "asyncio")]
        levels = [logger.level for logger in loggers]
        for logger in loggers:
            logger.setLevel(logging.WARNING)
            logger.addHandler(self)
        try:
            yield self
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.removeHandler(self)
                logger.setLevel(level)

    def unexpected(self) -> list[str]:
        """The records not explained by a refused write: the refusal logged as a failed write, or
        an alert's processing that failed because of one (it stays pending for a restart)."""
        found = []
        for record in self.records:
            error = str(record.__dict__.get("error", ""))
            if record.exc_info and record.exc_info[1] is not None:
                error += str(record.exc_info[1])
            explained = record.getMessage() in ("journal write failed", "alert processing failed")
            if not (explained and REFUSAL in error):
                fields = {
                    k: record.__dict__[k] for k in ("incident", "kind", "reason") if k in record.__dict__
                }
                found.append(f"{record.name}: {record.getMessage()} {fields} {error}".strip())
        return found


class FakeSlack:
    """An incoming-webhook Slack in memory (posts only, no threads) that takes every post."""

    supports_threads = False

    def use_clock(self, clock_ns: Any) -> None:
        """No rate limits to time here."""

    async def check(self) -> str:
        return "fake webhook"

    async def post(self, message: Any, *, channel: str | None = None) -> SlackRef:
        return SlackRef(channel=channel or "webhook", ts=None)

    async def close(self) -> None:
        pass


async def start_notifying(world: World) -> Responder:
    """A responder over the world's journal and cluster, notifying (to an in-memory Slack)."""
    hook = world.tmp_path / "webhook"
    hook.write_text("https://hooks.slack.invalid/services/T/B/x")
    config = responder_config(
        world.tmp_path,
        world.kubeconfig,
        extra={
            "inputs": {},
            "journal": {"writer": "thread"},
            "slack": {"mode": "webhook", "webhook_url": {"file": str(hook)}, "update_interval_seconds": 0},
        },
    )
    responder = Responder(
        config, KubeGateway.from_config(config.cluster), delivery=FakeSlack(), clock_ns=world.clock
    )
    await responder.start()
    return responder


# -- running an example ---------------------------------------------------------------------------


class Run:
    def __init__(
        self, world: World, faults: Faults, responder: Responder, trace: Callable[[str], None]
    ) -> None:
        self.world = world
        self.faults = faults
        self.responder = responder
        self.trace = trace  # what the example did (hypothesis prints it with a falsifying example)
        self.sent: list[Alert] = []
        # How many times each alert was answered Accepted(new=True).
        self.accepted: Counter[str] = Counter()
        self.refused_answers = 0
        self.stopped = False
        self._n = 0

    @property
    def pipeline(self) -> Pipeline:
        return pipeline_of(self.responder)

    def new_alert(self, key: int) -> Alert:
        pod_name, rule = KEYS[key]
        pod: SeededPod = self.world.pods[pod_name]
        self._n += 1
        alert = alert_from_mapping(
            falco_alert(
                pod,
                rule,
                "Critical",  # at least slack.min_priority: every decision notifies
                "guard",
                {"proc.name": "sh", "proc.cmdline": f"sh -c {self._n}"},
                time_ns=self.world.clock.now + self._n,
            )
        )
        self.sent.append(alert)
        return alert

    def answered(self, alert: Alert, answer: Accepted | BaseException) -> None:
        if isinstance(answer, BaseException):
            # Only a refused write may fail an answer: the alert is not taken (its sender retries).
            assert REFUSAL in str(answer), f"{alert.alert_id}: {answer!r}"
            self.refused_answers += 1
            self.trace(f"  {alert.alert_id[:12]} refused: {answer}")
            return
        assert answer.alert_id == alert.alert_id
        if answer.new:
            self.accepted[alert.alert_id] += 1
        self.trace(f"  {alert.alert_id[:12]} {'accepted' if answer.new else 'redelivered'}")

    async def submit(self, alert: Alert) -> None:
        try:
            answer: Accepted | BaseException = await self.pipeline.submit(alert, InputName.JSONL)
        except sqlite3.OperationalError as exc:
            answer = exc
        self.answered(alert, answer)

    async def offer(self, alerts: list[Alert]) -> list[Accepted | BaseException]:
        """Offer every alert in this turn of the loop; returns once each is answered."""
        answers: list[Accepted | BaseException] = []
        for alert in alerts:
            assert self.pipeline.offer(alert, InputName.JSONL, None, answers.append)
        return answers

    async def answers_for(self, alerts: list[Alert], answers: list[Accepted | BaseException]) -> None:
        deadline = time.monotonic() + 20
        while len(answers) < len(alerts):
            assert time.monotonic() < deadline, "offered alerts not answered"
            await asyncio.sleep(0.002)
        # Answers come in the journal's commit order, which is the offer order.
        for alert, answer in zip(alerts, answers, strict=True):
            self.answered(alert, answer)

    async def settle(self) -> None:
        """Until nothing is in flight and every write so far is settled (failed ones logged)."""
        assert await self.pipeline.drain(timeout=20), "the pipeline did not drain"
        await self.responder.journal.run(Touch())

    async def step(self, step: Step) -> None:
        self.trace(repr(step))
        if isinstance(step, Send):
            alerts = [self.new_alert(step.key) for _ in range(step.count)]
            if step.offer:
                await self.answers_for(alerts, await self.offer(alerts))
            else:
                for alert in alerts:
                    await self.submit(alert)
            if step.settle:
                await self.settle()
        elif isinstance(step, Redeliver):
            if self.sent:
                again = self.sent[step.pick % len(self.sent)]
                if step.beside is None:
                    await self.submit(again)
                else:
                    alerts = [again, self.new_alert(step.beside)]
                    await self.answers_for(alerts, await self.offer(alerts))
                await self.settle()
        elif isinstance(step, Advance):
            self.world.clock.advance(step.seconds)
        elif isinstance(step, Refuse):
            self.faults.armed[step.op] += 1
        elif isinstance(step, Hold):
            await self.hold(step)
        else:
            await self.stop()
            self.responder = await start_notifying(self.world)
            self.stopped = False
            if step.settle:
                await self.settle()

    async def stop(self) -> None:
        """Stop the responder, and check what must hold whenever it stops (whatever was refused):
        every alert answered as accepted is journaled, and every notification queued is about an
        incident whose decision the journal holds (else a restart could not render it)."""
        self.stopped = True
        await self.responder.stop()
        with closing(sqlite3.connect(self.responder.config.journal.path)) as conn:
            journaled = Counter(row[0] for row in conn.execute("SELECT alert_id FROM alerts"))
            undecided = conn.execute(
                "SELECT n.incident_id, n.kind FROM notifications n"
                " LEFT JOIN incidents i ON i.incident_id = n.incident_id WHERE i.decided_ns IS NULL"
            ).fetchall()
        assert [a for a in self.accepted if journaled[a] != 1] == [], "accepted, but not journaled once"
        assert undecided == [], "notifications about incidents the journal holds no decision of"

    async def hold(self, step: Hold) -> None:
        await self.settle()
        entered, gate = threading.Event(), threading.Event()
        self.faults.hold = Held("open_incident", entered, gate)
        repeats: list[Alert] = []
        answers: list[Accepted | BaseException] = []
        try:
            await self.submit(self.new_alert(step.key))
            # The writer is inside the opening write, or the alert opened nothing (it was a repeat,
            # or refused) and nothing is in flight.
            deadline = time.monotonic() + 20
            while not entered.is_set() and self.pipeline.in_flight:
                assert time.monotonic() < deadline, "the held write was never run"
                await asyncio.sleep(0.002)
            self.trace(f"  held: {entered.is_set()}")
            repeats = [self.new_alert(step.key) for _ in range(step.repeats)]
            answers = await self.offer(repeats)
            for _ in range(3):  # their rows are handed to the writer, behind the held write
                await asyncio.sleep(0)
        finally:
            gate.set()  # the held write fails now (if it ran at all)
            self.faults.hold = None
        await self.answers_for(repeats, answers)
        await self.settle()


def _untraced(line: str) -> None:
    pass


async def run_example(
    steps: list[Step],
    tmp_path: Path,
    *,
    exact_counts: bool = False,
    trace: Callable[[str], None] = _untraced,
) -> None:
    with RunningCluster() as cluster:
        pods = cluster.call(seed_serving_cluster, cluster.emulator)
        kubeconfig = cluster.write_kubeconfig(str(tmp_path / "kubeconfig.json"))
        clock = FakeClock()
        clock.now = CLOCK_START_NS
        world = World(tmp_path, cluster, pods, kubeconfig, clock)
        faults = Faults()
        with ErrorRecords().attached() as errors:
            with faults_installed(faults):
                run = Run(world, faults, await start_notifying(world), trace)
                try:
                    for step in steps:
                        await run.step(step)
                except BaseException:
                    faults.clear()
                    if not run.stopped:
                        await run.responder.stop()
                    raise
                faults.clear()  # from here on the journal takes every write
                await run.stop()
            trace(f"refusals that fired: {faults.fired}")
            final = await start_notifying(world)
            try:
                await Run(world, faults, final, trace).settle()
                check_invariants(final, run, errors, exact_counts=exact_counts)
            finally:
                await final.stop()


INCIDENT_COLUMNS = ("incident_id", "rule", "pod", "first_alert_id", "decided_ns", "count", "seen")


def check_invariants(responder: Responder, run: Run, errors: ErrorRecords, *, exact_counts: bool) -> None:
    with responder.journal.reader() as conn:
        alerts = [dict(r) for r in conn.execute("SELECT alert_id, state, outcome, incident_id FROM alerts")]
        incidents = {
            r["incident_id"]: {column: r[column] for column in INCIDENT_COLUMNS}
            for r in conn.execute(INCIDENTS_WITH_SEEN_SQL)
        }
        actions = [tuple(r) for r in conn.execute("SELECT incident_id, action FROM actions")]
        notifications = [tuple(r) for r in conn.execute("SELECT incident_id, kind FROM notifications")]
    sent = {alert.alert_id: alert for alert in run.sent}
    rows_of = Counter(row["alert_id"] for row in alerts)

    # 1. An alert answered Accepted(new=True) is in the journal, once; and it was answered so once
    # (a redelivery of a journaled alert is answered new=False).
    assert {a: n for a, n in run.accepted.items() if n != 1} == {}, "answered new more than once"
    assert [a for a in run.accepted if rows_of[a] != 1] == [], "accepted, but not journaled once"
    assert [a for a, n in rows_of.items() if n != 1 or a not in sent] == []

    # 2. Nothing is left pending: each alert is final, opened or a repeat.
    assert [r for r in alerts if r["state"] != "done" or r["outcome"] not in ("opened", "duplicate")] == []
    assert responder.journal.pending_alerts() == []

    # 3. An opened alert opened its own incident (it is that incident's first alert); a repeat names
    # an incident the journal holds; every incident's first alert is journaled as its opener, and
    # every incident is decided.
    for row in alerts:
        incident = incidents.get(row["incident_id"])
        assert incident is not None, f"{row} names an incident the journal lacks"
        alert = sent[row["alert_id"]]
        assert (incident["rule"], incident["pod"]) == (alert.rule, alert.pod), (row, incident)
        if row["outcome"] == "opened":
            assert row["incident_id"] == incident_id_for(alert), row
            assert incident["first_alert_id"] == row["alert_id"], (row, incident)
    openers = {r["alert_id"]: r["incident_id"] for r in alerts if r["outcome"] == "opened"}
    for incident_id, incident in incidents.items():
        assert openers.get(incident["first_alert_id"]) == incident_id, incident
        assert incident["decided_ns"] is not None, incident

    # 4. An incident's count (the counter the journal keeps, and ``seen``: what recovery and the
    # audit read) is the number of alerts it holds: its opener and the repeats naming it. Exactly,
    # unless the write that sets the counter back after a refused or redelivered repeat was itself
    # refused: then it may count that repeat once more (at most once per such refusal), never
    # fewer. The counter is written as the largest count any write carried, and writes already in
    # flight when the refusal is heard (the incident's opening write, later repeats) carry a count
    # that includes the refused repeat; the repeat, left pending, is counted again when a restart
    # resumes it. So the pipeline uncounts it in memory and queues the counter's setting back
    # after those writes.
    repeats = Counter(r["incident_id"] for r in alerts if r["outcome"] == "duplicate")
    for incident_id, row in incidents.items():
        held = 1 + repeats[incident_id]
        assert row["seen"] == row["count"], row
        slack = 0 if exact_counts else run.faults.refused_recounts[incident_id]
        assert held <= row["count"] <= held + slack, (row, f"{held} alerts", f"{slack} refused repeats")

    # 5. One set of action records per incident, and none of an incident the journal lacks: a
    # resumed run's records replace the interrupted one's. Here a set is one record, of the action
    # the rule's policy takes (quarantine or annotate: done, failed or withheld).
    assert [a for a in actions if a[0] not in incidents] == [], "action records of no incident"
    recorded = {i: sorted(action for incident_id, action in actions if incident_id == i) for i in incidents}
    wanted = {i: [ACTION[row["rule"]]] for i, row in incidents.items()}
    assert {i: a for i, a in recorded.items() if a != wanted[i]} == {}, "action records"

    # 6. The incident's post is queued once for each decided incident (all decisions here notify),
    # and every notification is about an incident the journal holds.
    posts = Counter(i for i, kind in notifications if kind == "incident")
    assert {i: posts[i] for i in incidents if posts[i] != 1} == {}, "incident posts"
    assert [n for n in notifications if n[0] not in incidents] == []

    # 7. Nothing went wrong but the refused writes; the last responder finished everything.
    unexpected = errors.unexpected()
    assert unexpected == [], unexpected
    stats = pipeline_of(responder).stats
    assert (stats.failed, list(stats.stuck), stats.in_flight) == (0, [], 0), stats.last_error


# -- the test -------------------------------------------------------------------------------------


def _settings(test: Callable[..., None]) -> Callable[..., None]:
    configured = settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=SEED is None,
        database=None,
        # No explain phase: it traces every line the responder runs, which is slow.
        phases=(Phase.explicit, Phase.generate, Phase.shrink),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        print_blob=True,
    )(test)
    return seed(int(SEED))(configured) if SEED is not None else configured


class FirstFailure:
    """Prints the first failing sequence at once (shrinking it takes a while: it is printed again,
    shrunk, as hypothesis's falsifying example)."""

    printed = False

    @classmethod
    def show(cls, steps: list[Step], error: BaseException) -> None:
        if not cls.printed:
            cls.printed = True
            print(f"first failing sequence ({type(error).__name__}): {steps!r}", file=sys.stderr)


# Passing, it takes a few seconds per ten examples; failing, shrinking may take minutes.
@pytest.mark.timeout(900)
@_settings
@given(steps=st.lists(STEP, min_size=1, max_size=16))
# Found by this test, and fixed (each failed every time):
# - a resumed opener whose opening write was refused opened its incident again without resetting
#   the action records the interrupted run left: two quarantine records;
@example(steps=[Refuse("open_incident"), Send(0, 1, offer=False, settle=True)])
# - ... or was folded into a later incident of its key, leaving those records naming none;
@example(steps=[Refuse("open_incident"), Send(0, 1, False, True), Send(0, 1, False, True)])
# - a refused incident post was only logged, and the alert finished "opened": lost for good;
@example(steps=[Refuse("schedule_notification"), Send(0, 1, offer=False, settle=True)])
# - the incident post was queued although the decision's write was refused: after a restart the
#   notifier could not render it and failed it for good (when it came before the resumed alert).
@example(steps=[Refuse("record_decision"), Send(2, 1, offer=False, settle=True)])
# (And, seen once in some 2000 random sequences, as it depends on timing: a repeat's thread update
# queued for an incident whose decision's write was then refused, which a restart could not render
# either. The pipeline now sets an incident's report only once its decision is journaled.)
# The cases of 1f87a62 (repeats journaled while a refused opening write was in flight; a resumed
# opener whose incident the journal holds while a later one holds its key).
@example(steps=[Hold(0, 2), Send(0, 1, offer=False, settle=True)])
@example(steps=[Refuse("record_decision"), Send(1, 1, False, True), Advance(0.5), Send(1, 1, False, True)])
# A refused repeat whose counter's setting back is refused too: the one case the count may be high.
@example(
    steps=[
        Send(0, 2, offer=False, settle=True),
        Refuse("append_duplicate"),
        Refuse("recount_incident"),
        Send(0, 2, offer=True, settle=True),
    ]
)
def test_the_journal_keeps_its_invariants_through_refused_writes_and_restarts(steps: list[Step]) -> None:
    with tempfile.TemporaryDirectory(prefix="sg-invariants-") as tmp:
        try:
            asyncio.run(run_example(steps, Path(tmp), trace=note))
        except Exception as error:
            FirstFailure.show(steps, error)
            raise


def test_a_refused_fold_is_uncounted_so_the_next_repeat_puts_the_incident_count_right() -> None:
    """The opening alert and a repeat in one turn: the repeat is folded in after its row is written,
    and that write is refused (it stays pending). The incident's opening write already counted it;
    the next repeat's write carries the count without it (the pipeline uncounted it), so after the
    restart that resumes it the count is exact. (It counted the refused repeat twice.)"""
    steps: list[Step] = [
        Refuse("fold_duplicate"),
        Send(0, 2, offer=True, settle=True),
        Send(0, 1, offer=False, settle=True),
    ]
    with tempfile.TemporaryDirectory(prefix="sg-invariants-") as tmp:
        asyncio.run(run_example(steps, Path(tmp), exact_counts=True))


def test_a_refused_repeat_overtaken_by_the_next_is_taken_back_from_the_journals_count() -> None:
    """Two repeats offered in one turn, the first one's write refused: the second's write carries
    a count with the first in it, and the counter keeps the largest count written. The counter is
    set back after it, so the journal counts the alerts it holds. (It counted one too many until
    the next repeat came, and for good if none did.)"""
    steps: list[Step] = [
        Send(0, 2, offer=False, settle=True),
        Refuse("append_duplicate"),
        Send(0, 2, offer=True, settle=True),
    ]
    with tempfile.TemporaryDirectory(prefix="sg-invariants-") as tmp:
        asyncio.run(run_example(steps, Path(tmp), exact_counts=True))


def test_a_redelivered_repeat_beside_a_new_one_is_taken_back_from_the_journals_count() -> None:
    """A repeat sent again while a new repeat of its incident is written in the same turn: the
    redelivery is counted when it comes, found journaled, and taken back, after the new one's
    write carried it in."""
    steps: list[Step] = [
        Send(0, 2, offer=False, settle=True),
        Redeliver(1, beside=0),
    ]
    with tempfile.TemporaryDirectory(prefix="sg-invariants-") as tmp:
        asyncio.run(run_example(steps, Path(tmp), exact_counts=True))
