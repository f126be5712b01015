"""Judge the alerts of each capture against rules/examples.yaml and render the detection matrix.

An attack action passes when every expected rule fired on it and no rule outside `expect` and
`also` did; a benign action, or any part of a benign capture, passes only with zero alerts; an
alert that belongs to no listed action fails; an undetectable action passes only if nothing fired.
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
    unattributed: tuple[Alert, ...]
    failures: tuple[str, ...]

    @property
    def benign_alerts(self) -> list[Alert]:
        """Alerts on benign parts: benign actions, or anywhere in a benign capture."""
        if self.expectations is None:
            return []
        if self.expectations.benign:
            return list(self.run.alerts)
        benign_ids = {a.id for a in self.expectations.actions if a.benign}
        return [alert for alert in self.run.alerts if alert.action in benign_ids]


@dataclass
class CaptureReport:
    sysdig_version: str
    rules: list[str]
    stand_ins: dict[str, tuple[StandIn, ...]]
    captures: list[CaptureVerdict] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # not tied to one capture

    @property
    def all_failures(self) -> list[str]:
        return self.failures + [f for capture in self.captures for f in capture.failures]

    @property
    def ok(self) -> bool:
        return not self.all_failures

    @property
    def sysdig_runs(self) -> int:
        return sum(capture.run.sysdig_runs for capture in self.captures)


def judge(expectations: CaptureExpectations | None, run: CaptureRun) -> CaptureVerdict:
    if expectations is None:
        return CaptureVerdict(run.capture, None, run, (), (), ())
    failures: list[str] = []
    verdicts = []
    for action in expectations.actions:
        fired = Counter(alert.rule for alert in run.alerts if alert.action == action.id)
        problems = []
        if action.expect:
            allowed = set(action.expect) | set(action.also)
            problems += [
                f"{action.id}: expected rule did not fire: {rule}"
                for rule in action.expect
                if not fired[rule]
            ]
            problems += [
                f"{action.id}: unexpected rule fired {count}x: {rule}"
                for rule, count in sorted(fired.items())
                if rule not in allowed
            ]
        elif fired:
            kind = "benign action" if action.benign else "undetectable action"
            problems += [
                f"{action.id}: {kind}, but {rule} fired {count}x" for rule, count in sorted(fired.items())
            ]
        verdicts.append(ActionVerdict(action, dict(fired), tuple(f"{run.capture} {p}" for p in problems)))
        failures += [f"{run.capture} {p}" for p in problems]
    unattributed = tuple(alert for alert in run.alerts if alert.action is None)
    if expectations.benign:
        failures += [
            f"{run.capture}: benign capture, but {a.rule} fired: {a.describe()}" for a in unattributed
        ]
    else:
        failures += [
            f"{run.capture}: alert outside every listed action: {a.rule}: {a.describe()}"
            for a in unattributed
        ]
    return CaptureVerdict(run.capture, expectations, run, tuple(verdicts), unattributed, tuple(failures))


# --- rendering -------------------------------------------------------------------------------------
def _cell(action: CaptureAction, rule: str, count: int) -> str:
    if rule in action.expect:
        return f"[{count}]"
    if not count:
        return "."
    if rule in action.also:
        return f"({count})"
    return f"!{count}"


def render_table(report: CaptureReport, accepted: Collection[str] = frozenset()) -> str:
    """``accepted``: failure lines the user accepted (`rules test --accept`), said as such."""
    ids = {rule: f"R{index}" for index, rule in enumerate(report.rules, 1)}
    lines = [
        f"Detection matrix: {len(report.rules)} rules x {len(report.captures)} captures "
        f"(sysdig {report.sysdig_version}, {report.sysdig_runs} sysdig passes)",
        "",
    ]
    lines += [f"  {ids[rule]}  {rule}" for rule in report.rules]
    lines += [
        "",
        "  cell: [n] expected rule fired n times ([0]: missed), (n) allowed overlap, !n unexpected, . none",
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
                f"{_cell(verdict.action, rule, verdict.fired.get(rule, 0)):>4}" for rule in report.rules
            )
            status = verdict.status
            if verdict.failures and all(f in accepted for f in verdict.failures):
                status = "accepted"
            lines.append(
                f"  {capture.capture:<{capture_width}}  {verdict.action.id:<{action_width}}  {cells}  "
                f"{status:<19}  {verdict.action.what}"
            )
    lines += ["", "Alerts on benign parts (benign actions; every part of a benign capture):"]
    benign = [(c.capture, a) for c in report.captures for a in c.benign_alerts]
    lines += [f"  {capture}: {alert.rule}: {alert.describe()}" for capture, alert in benign] or ["  none"]
    lines += ["", "Alerts outside every listed action:"]
    outside = [(c.capture, a) for c in report.captures if c.expectations for a in c.unattributed]
    lines += [f"  {capture}: {alert.rule}: {alert.describe()}" for capture, alert in outside] or ["  none"]
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
                    }
                    for verdict in capture.actions
                ],
                "alerts": [_alert_json(alert) for alert in capture.run.alerts],
                "benign_alerts": [_alert_json(alert) for alert in capture.benign_alerts],
                "unattributed": [_alert_json(alert) for alert in capture.unattributed],
                "failures": list(capture.failures),
            }
            for capture in report.captures
        ],
        "failures": report.all_failures,
    }
