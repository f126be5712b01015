"""Judge the alerts of each capture against rules/examples.yaml and render the detection matrix.

An attack action passes when every expected rule fired on it and no rule outside `expect` and
`also` did; a benign action, or any part of a benign capture, passes only with zero alerts; an
alert that belongs to no listed action fails; an undetectable action passes only if nothing fired.
A rule of the user's own (defined by an --override file) is judged by none of these: where it fires
is said as information ("your rule X also fires here"), since the expectations are the pack's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from responder.rulespack.captures import Alert, CaptureRun
from responder.rulespack.examples import CaptureAction, CaptureExpectations
from responder.rulespack.sysdig_compat import StandIn


@dataclass(frozen=True)
class ActionVerdict:
    action: CaptureAction
    fired: dict[str, int]
    failures: tuple[str, ...]
    notes: tuple[str, ...] = ()  # where a rule of the user's own fired on it (information)

    @property
    def status(self) -> str:
        if self.failures:
            return "FAIL"
        if self.action.benign:
            return "ok (benign)"
        if self.action.undetectable is not None:
            return "ok (not detectable)"
        return "ok"


@dataclass(frozen=True)
class CaptureVerdict:
    capture: str
    expectations: CaptureExpectations | None
    run: CaptureRun
    actions: tuple[ActionVerdict, ...]
    unattributed: tuple[Alert, ...]  # of the pack's rules
    failures: tuple[str, ...]
    notes: tuple[str, ...] = ()  # where rules of the user's own fired (information, not failures)
    yours: frozenset[str] = frozenset()  # the rules of the user's own

    @property
    def benign_alerts(self) -> list[Alert]:
        """The pack's alerts on benign parts: benign actions, or anywhere in a benign capture."""
        if self.expectations is None:
            return []
        alerts = [alert for alert in self.run.alerts if alert.rule not in self.yours]
        if self.expectations.benign:
            return alerts
        benign_ids = {a.id for a in self.expectations.actions if a.benign}
        return [alert for alert in alerts if alert.action in benign_ids]


@dataclass
class CaptureReport:
    sysdig_version: str
    rules: list[str]
    stand_ins: dict[str, tuple[StandIn, ...]]
    captures: list[CaptureVerdict] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # not tied to one capture
    yours: frozenset[str] = frozenset()  # rules the user's --override files define (not judged)
    # The syscall rules disabled by the files (not run): name -> FILE:LINE of their `enabled: false`.
    # Numbered in their place among ``rules`` (``numbered``), so every table of one output says the
    # same R number for a rule whether or not a tuning disables one before it.
    disabled: dict[str, str] = field(default_factory=dict)
    numbered: list[str] = field(default_factory=list)

    def rule_ids(self) -> dict[str, str]:
        """R1, R2, ... by the rules' order in the files, disabled ones included."""
        return {rule: f"R{index}" for index, rule in enumerate(self.numbered or self.rules, 1)}

    @property
    def all_failures(self) -> list[str]:
        return self.failures + [f for capture in self.captures for f in capture.failures]

    @property
    def ok(self) -> bool:
        return not self.all_failures

    @property
    def sysdig_runs(self) -> int:
        return sum(capture.run.sysdig_runs for capture in self.captures)

    @property
    def notes(self) -> list[str]:
        return [note for capture in self.captures for note in capture.notes]


def judge(
    expectations: CaptureExpectations | None, run: CaptureRun, yours: Collection[str] = frozenset()
) -> CaptureVerdict:
    """``yours``: the rules of the user's own, said where they fire and judged by no expectation."""
    yours = frozenset(yours)
    # A capture sysdig reads no event from (truncated, or not a capture of this sysdig's) passes
    # every "no alert" expectation vacuously: it proves nothing, so it fails.
    empty = (
        [
            f"{run.capture}: sysdig read 0 events from it (a truncated or unreadable capture?):"
            " nothing in it was tested, so its expectations prove nothing; record it again"
        ]
        if run.events == 0
        else []
    )
    if expectations is None:
        return CaptureVerdict(run.capture, None, run, (), (), tuple(empty), yours=yours)
    failures: list[str] = [*empty]
    verdicts = []
    for action in expectations.actions:
        fired = Counter(alert.rule for alert in run.alerts if alert.action == action.id)
        pack_fired = Counter({rule: count for rule, count in fired.items() if rule not in yours})
        problems = [f"{run.capture} {p}" for p in _action_problems(action, pack_fired)]
        notes = [
            f"{run.capture} {action.id}: your rule {rule} also fires here {count}x"
            for rule, count in sorted(fired.items())
            if rule in yours
        ]
        verdicts.append(ActionVerdict(action, dict(fired), tuple(problems), tuple(notes)))
        failures += problems
    outside = [alert for alert in run.alerts if alert.action is None]
    unattributed = tuple(alert for alert in outside if alert.rule not in yours)
    if expectations.benign:
        failures += [
            f"{run.capture}: benign capture, but {a.rule} fired: {a.describe()}" for a in unattributed
        ]
    else:
        failures += [
            f"{run.capture}: alert outside every listed action: {a.rule}: {a.describe()}"
            for a in unattributed
        ]
    notes = [note for verdict in verdicts for note in verdict.notes]
    notes += [
        f"{run.capture}: your rule {a.rule} also fires outside the listed actions: {a.describe()}"
        for a in outside
        if a.rule in yours
    ]
    return CaptureVerdict(
        run.capture, expectations, run, tuple(verdicts), unattributed, tuple(failures), tuple(notes), yours
    )


def _action_problems(action: CaptureAction, fired: Counter[str]) -> list[str]:
    """What is wrong with the pack's rules that fired on an action (``fired``: rule -> alerts)."""
    if action.expect:
        allowed = set(action.expect) | set(action.also)
        missed = [
            f"{action.id}: expected rule did not fire: {rule}" for rule in action.expect if not fired[rule]
        ]
        return missed + [
            f"{action.id}: unexpected rule fired {count}x: {rule}"
            for rule, count in sorted(fired.items())
            if rule not in allowed
        ]
    kind = "benign action" if action.benign else "undetectable action"
    return [f"{action.id}: {kind}, but {rule} fired {count}x" for rule, count in sorted(fired.items())]


# --- rendering -------------------------------------------------------------------------------------
def _cell(action: CaptureAction, rule: str, count: int, yours: Collection[str]) -> str:
    if rule in yours:
        return f"+{count}" if count else "."
    if rule in action.expect:
        return f"[{count}]"
    if not count:
        return "."
    if rule in action.also:
        return f"({count})"
    return f"!{count}"


def render_table(report: CaptureReport, accepted: Collection[str] = frozenset()) -> str:
    """``accepted``: failure lines the user accepted (`rules test --accept`), said as such."""
    ids = report.rule_ids()
    lines = [
        f"Detection matrix: {len(report.rules)} rules"
        + (f" ({len(report.disabled)} more disabled)" if report.disabled else "")
        + f" x {len(report.captures)} captures "
        f"(sysdig {report.sysdig_version}, {report.sysdig_runs} sysdig passes)",
        "",
    ]
    lines += [
        f"  {ids[rule]}  {rule}"
        + (f"  (disabled at {report.disabled[rule]}: not run, no column)" if rule in report.disabled else "")
        for rule in report.numbered or report.rules
    ]
    lines += [
        "",
        "  cell: [n] expected rule fired n times ([0]: missed), (n) allowed overlap, !n unexpected, . none",
        *(
            ["        +n your rule (--override) fired n times: information, not judged"]
            if report.yours
            else []
        ),
        "",
    ]
    capture_width = max([len(c.capture) for c in report.captures] + [7])
    action_width = max([len(v.action.id) for c in report.captures for v in c.actions] + [6])
    header = f"  {'capture':<{capture_width}}  {'action':<{action_width}}  "
    header += " ".join(f"{ids[rule]:>4}" for rule in report.rules) + "  result               what"
    lines.append(header)
    for capture in report.captures:
        if capture.expectations is None:
            lines.append(
                f"  {capture.capture:<{capture_width}}  (no expectations: {len(capture.run.alerts)} alerts)"
            )
            continue
        for verdict in capture.actions:
            cells = " ".join(
                f"{_cell(verdict.action, rule, verdict.fired.get(rule, 0), report.yours):>4}"
                for rule in report.rules
            )
            status = verdict.status
            if verdict.failures and all(f in accepted for f in verdict.failures):
                status = "accepted"
            lines.append(
                f"  {capture.capture:<{capture_width}}  {verdict.action.id:<{action_width}}  {cells}  "
                f"{status:<19}  {verdict.action.what}"
            )
    counted = [c for c in report.captures if c.run.events is not None]
    if counted:
        lines += ["", "Events read per capture:"]
        lines += [
            f"  {c.capture:<{capture_width}}  {c.run.events} events" + ("" if c.run.events else "  FAILED")
            for c in counted
        ]
    lines += ["", "Alerts on benign parts (benign actions; every part of a benign capture):"]
    benign = [(c.capture, a) for c in report.captures for a in c.benign_alerts]
    lines += [f"  {capture}: {alert.rule}: {alert.describe()}" for capture, alert in benign] or ["  none"]
    lines += ["", "Alerts outside every listed action:"]
    outside = [(c.capture, a) for c in report.captures if c.expectations for a in c.unattributed]
    lines += [f"  {capture}: {alert.rule}: {alert.describe()}" for capture, alert in outside] or ["  none"]
    if report.notes:
        lines += ["", "Your rules (from --override files; information: the expectations are the pack's):"]
        lines += [f"  {note}" for note in report.notes]
    unjudged = [(c.capture, a) for c in report.captures if c.expectations is None for a in c.run.alerts]
    if unjudged:
        lines += ["", "Alerts in captures without expectations (not judged):"]
        lines += [f"  {capture}: {alert.rule}: {alert.describe()}" for capture, alert in unjudged]
    lines += [
        "",
        "Clauses 2022 libsinsp cannot evaluate (replaced as shown; the rest of each rule is evaluated):",
    ]
    gaps = [(rule, s) for rule in report.rules for s in report.stand_ins.get(rule, ())]
    lines += [f"  {ids[rule]}: {s.clause} -> {s.replacement}: {s.reason}" for rule, s in gaps] or ["  none"]
    undetectable = [
        (c.capture, v.action) for c in report.captures for v in c.actions if v.action.undetectable is not None
    ]
    if undetectable:
        lines += ["", "Actions no rule can detect, by design:"]
        lines += [
            f"  {capture} {action.id}: {' '.join(action.undetectable.split())}"
            for capture, action in undetectable
            if action.undetectable
        ]
    lines.append("")
    failed = [failure for failure in report.all_failures if failure not in accepted]
    if not failed:
        lines.append(
            "captures: ok: every attack action detected by its intended rule, no alert on benign parts"
            + (", but what you accepted" if report.all_failures else "")
        )
    else:
        lines.append(f"captures: FAILED ({len(failed)})")
        lines += [f"  {failure}" for failure in failed]
    lines += [f"  accepted: {failure}" for failure in report.all_failures if failure in accepted]
    return "\n".join(lines)


def _alert_json(alert: Alert) -> dict[str, Any]:
    return {
        "rule": alert.rule,
        "evt.num": alert.evt_num,
        "evt.type": alert.evt_type,
        "proc.pid": alert.pid,
        "proc.name": alert.proc_name,
        "proc.exepath": alert.exepath,
        "proc.cmdline": alert.cmdline,
        "proc.pcmdline": alert.pcmdline,
        "fd.name": alert.fd_name,
        "action": alert.action,
    }


def render_json(report: CaptureReport) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "sysdig": report.sysdig_version,
        "sysdig_passes": report.sysdig_runs,
        "rules": report.rules,
        "unevaluable_clauses": {
            rule: [{"clause": s.clause, "replacement": s.replacement, "reason": s.reason} for s in stand_ins]
            for rule, stand_ins in report.stand_ins.items()
            if stand_ins
        },
        "captures": [
            {
                "file": capture.capture,
                "scenario": capture.expectations.scenario if capture.expectations else None,
                "benign": capture.expectations.benign if capture.expectations else None,
                "judged": capture.expectations is not None,
                "events": capture.run.events,
                "actions": [
                    {
                        "id": verdict.action.id,
                        "what": verdict.action.what,
                        "expect": verdict.action.expect,
                        "also": verdict.action.also,
                        "benign": verdict.action.benign,
                        "undetectable": verdict.action.undetectable,
                        "fired": verdict.fired,
                        "status": verdict.status,
                        "failures": list(verdict.failures),
                        "notes": list(verdict.notes),
                    }
                    for verdict in capture.actions
                ],
                "alerts": [_alert_json(alert) for alert in capture.run.alerts],
                "benign_alerts": [_alert_json(alert) for alert in capture.benign_alerts],
                "unattributed": [_alert_json(alert) for alert in capture.unattributed],
                "failures": list(capture.failures),
                "notes": list(capture.notes),
            }
            for capture in report.captures
        ],
        "failures": report.all_failures,
        "your_rules": sorted(report.yours),
        "notes": report.notes,
    }
