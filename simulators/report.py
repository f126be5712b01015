"""The demo's results: the console table, and a self-contained HTML report (the same table, a
timeline of every alert through the responder, and each Slack message rendered from its Block
Kit JSON). No external CSS, scripts or fonts: it reads the same offline.

The report's header says what the demo did not prove, from what the console lines are built from:
the alerts are scenario alert templates (they prove the responder, not that a rule still detects
the attack), the rule-conditions stage's result (ok, not evaluated, or failed: then the report
says the demo stopped there), and each scenario the demo left out, by name and why."""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from responder.alert import parse_time_ns
from responder.errors import UserError
from responder.records import DECIDED_AGAIN
from simulators.demo import LEFT_OUT_WHY, DemoCheck, DemoResult, replay_command
from simulators.demo_by_hand import ByHandStep
from simulators.demo_captures import CaptureStage
from simulators.scenario import Scenario
from simulators.slack_html import message_to_html

HEADERS = ("SCENARIO", "INPUT", "RULE", "VERIFIED", "DECISION", "OUTCOME", "SLACK", "ALERT→ACTION", "RESULT")
HTML_HEADERS = (
    "Scenario",
    "Input",
    "Pod",
    "Rule",
    "Verified",
    "Decision",
    "Action outcome",
    "Slack",
    "Alert→action",
    "Expected",
    "Result",
)


@dataclass(frozen=True)
class Row:
    scenario: str
    input: str
    pod: str
    rule: str
    verified: str
    decision: str
    outcome: str
    slack: str
    latency: str
    passed: bool
    expected: str
    reason: str

    def cells(self) -> tuple[str, ...]:
        result = "PASS" if self.passed else "FAIL"
        return (
            self.scenario,
            self.input,
            self.rule,
            self.verified,
            self.decision,
            self.outcome,
            self.slack,
            self.latency,
            result,
        )


def _actions(check: DemoCheck) -> str:
    decision = (check.verdict.incident or {}).get("decision") or {}
    if not decision:
        return "-"
    return ", ".join(decision.get("actions") or []) or "nothing"


def row_of(check: DemoCheck) -> Row:
    verdict = check.verdict
    latency = f"{verdict.latency_ms:.0f} ms" if verdict.latency_ms is not None else "-"
    slack = "-"
    if check.slack_messages:
        slack = "sent"
    elif verdict.slack not in ("-", "none"):
        slack = verdict.slack
    return Row(
        scenario=check.case.name,
        input=check.case.input,
        pod=f"{check.case.pod.namespace}/{check.case.pod.name}",
        rule=verdict.rule,
        verified=verdict.verified,
        decision=_actions(check),
        outcome=verdict.outcome,
        slack=slack,
        latency=latency,
        passed=check.passed,
        expected=check.case.expect.outcome.value + (" + Slack" if check.case.expect.slack else ""),
        reason=check.reason,
    )


def format_table(rows: Sequence[Row]) -> str:
    table = [HEADERS, *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADERS))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in table
    ]
    return "\n".join(lines)


def format_by_hand(step: ByHandStep) -> str:
    """The by-hand step for the console: the command as run, what it printed, and the verdict."""
    lines = [f"BY HAND  {step.case}: what the policy on trial predicted, run with the command Slack gives:"]
    lines.append(f"  $ {step.command_line or '(no command)'}")
    lines += [f"  {line}" for line in step.printed.splitlines()]
    verdict = "told in the incident's Slack thread, its message rendered again with who acted"
    lines.append(
        f"  {verdict if step.passed else '; '.join(step.problems)}  {'PASS' if step.passed else 'FAIL'}"
    )
    return "\n".join(lines)


def _by_hand_html(step: ByHandStep | None) -> str:
    if step is None:
        return ""
    result = (
        '<p class="pass">PASS</p>' if step.passed else f'<p class="reason">{_e("; ".join(step.problems))}</p>'
    )
    return (
        '<section id="by-hand"><h2>By hand</h2>'
        f"<p>{_e(step.case)}: the quarantine its policy on trial only predicted, run by a person with the"
        " command the Slack message gives (journaled under the incident), and told back in the"
        " incident's thread by the running responder.</p>"
        f"<pre>$ {_e(step.command_line)}\n{_e(step.printed)}</pre>{result}</section>"
    )


# -- HTML ------------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 -apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:24px auto;
  max-width:1280px;color:#1d1c1d;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:18px;margin:32px 0 10px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#616061;margin:0 0 16px}
.banner{padding:10px 14px;border-radius:6px;font-weight:600;margin:12px 0}
.ok{background:#e3f4e8;color:#135c2c}.bad{background:#fde8e8;color:#8a1c1c}
.warn{background:#fff4d6;color:#6b4a00}
.scope{border:1px solid #e1e1e1;border-radius:6px;padding:4px 14px;margin:12px 0}
.scope h2{font-size:15px;border:0;margin:10px 0 4px;padding:0}
.stage{padding:6px 10px;border-radius:4px;margin:6px 0;white-space:pre-wrap;font-family:SFMono-Regular,
  Menlo,Consolas,monospace;font-size:12px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{border-bottom:1px solid #e4e4e4;padding:6px 8px;text-align:left;vertical-align:top}
th{background:#f6f6f6;font-weight:600}
td.pass{color:#135c2c;font-weight:700}td.fail{color:#8a1c1c;font-weight:700}
.reason{color:#8a1c1c;font-size:12px}.muted{color:#616061;font-size:12px}
code,pre{font-family:SFMono-Regular,Menlo,Consolas,monospace;font-size:12px}
code{overflow-wrap:anywhere;background:#f3f3f3;border:1px solid #e1e1e1;border-radius:3px;
  padding:0 3px;color:#c01343}
pre{background:#f8f8f8;border:1px solid #e1e1e1;border-radius:4px;padding:8px;white-space:pre-wrap;
  word-break:break-all;margin:6px 0}
.events code{color:inherit;background:none;border:0;white-space:pre}
.track{position:relative;height:22px;background:#f6f6f6;border-radius:4px}
.ev{position:absolute;top:3px;width:14px;height:14px;border-radius:50%;margin-left:-7px;border:2px solid #fff}
.e-alert{background:#616061}.e-received{background:#1264a3}.e-decided{background:#8e44ad}
.e-action{background:#c0392b}.e-slack{background:#2eb67d}
.legend span{display:inline-block;margin-right:14px}
.legend i{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:4px;
  vertical-align:middle}
.msgs{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:16px}
.slack{border:1px solid #ddd;border-radius:8px;padding:12px 14px;background:#fff;box-shadow:0 1px 2px #0001}
.slack .who{font-weight:700}.slack .who span{color:#616061;font-weight:400;font-size:12px;margin-left:6px}
.sk-header{font-size:17px;font-weight:700;margin:6px 0}
.sk-field{min-width:0;overflow-wrap:anywhere}
.sk-section{margin:6px 0}.sk-fields{display:grid;grid-template-columns:1fr 1fr;gap:6px 16px;margin-top:4px}
.sk-context{color:#616061;font-size:12px;margin:6px 0}.sk-divider{border:0;border-top:1px solid #ddd}
.emoji{font-weight:700;margin-right:3px}
.quote{border-left:4px solid #ddd;padding-left:8px;display:inline-block}
.reply{margin:8px 0 0 18px;border-left:3px solid #eee;padding-left:10px}
details summary{cursor:pointer;color:#1264a3}
"""


def _e(text: object) -> str:
    return html.escape(str(text))


def _table_html(rows: Sequence[Row]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in HTML_HEADERS)
    body = []
    for row in rows:
        result = "PASS" if row.passed else "FAIL"
        reason = "" if row.passed else f'<div class="reason">{_e(row.reason)}</div>'
        cells = (
            row.scenario,
            row.input,
            row.pod,
            row.rule,
            row.verified,
            row.decision,
            row.outcome,
            row.slack,
            row.latency,
            row.expected,
        )
        tds = "".join(f"<td>{_e(c)}</td>" for c in cells)
        body.append(f'<tr>{tds}<td class="{result.lower()}">{result}{reason}</td></tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


@dataclass(frozen=True)
class _Event:
    at_ns: int
    kind: str  # alert | received | decided | action | slack
    label: str


def _events(check: DemoCheck) -> list[_Event]:
    events = []
    for item in check.case.alerts:
        events.append(
            _Event(parse_time_ns(str(item.alert["time"])), "alert", f"alert sent ({check.case.input})")
        )
    incident: dict[str, Any] = dict(check.verdict.incident or {})
    for entry in check.verdict.entries:
        if entry.get("received_ns"):
            events.append(
                _Event(int(entry["received_ns"]), "received", f"received: {entry.get('outcome', '?')}")
            )
    if incident.get("decided_ns"):
        decision = incident.get("decision") or {}
        summary = ", ".join(decision.get("actions") or []) or "nothing"
        again = decision.get(DECIDED_AGAIN)
        if isinstance(again, int):  # the first decision withheld it: its actions say what it was
            events.append(_Event(int(incident["decided_ns"]), "decided", "decided: withheld"))
            events.append(_Event(again, "decided", f"decided again: {summary}"))
        else:
            events.append(_Event(int(incident["decided_ns"]), "decided", f"decided: {summary}"))
    for action in incident.get("actions") or []:
        if action.get("finished_ns"):
            events.append(
                _Event(int(action["finished_ns"]), "action", f"{action['action']}: {action['status']}")
            )
    for note in incident.get("notifications") or []:
        if note.get("sent_ns"):
            events.append(_Event(int(note["sent_ns"]), "slack", f"Slack {note['kind']} sent"))
    return sorted(events, key=lambda e: e.at_ns)


def _timeline_html(checks: Sequence[DemoCheck]) -> str:
    per_case = [(check, _events(check)) for check in checks]
    stamps = [e.at_ns for _, events in per_case for e in events]
    if not stamps:
        return '<p class="muted">No events.</p>'
    start, end = min(stamps), max(stamps)
    span = max(end - start, 1)
    legend = "".join(
        f'<span><i class="e-{k}"></i>{label}</span>'
        for k, label in (
            ("alert", "alert sent"),
            ("received", "received"),
            ("decided", "decided"),
            ("action", "action done"),
            ("slack", "Slack sent"),
        )
    )
    rows = []
    for check, events in per_case:
        marks = "".join(
            f'<span class="ev e-{e.kind}" style="left:{(e.at_ns - start) / span * 100:.2f}%" '
            f'title="+{(e.at_ns - start) / 1e6:.1f} ms {_e(e.label)}"></span>'
            for e in events
        )
        listing = (
            "<br>".join(f"+{(e.at_ns - start) / 1e6:8.1f} ms  {_e(e.label)}" for e in events) or "(nothing)"
        )
        rows.append(
            f"<tr><td>{_e(check.case.name)}</td><td style='width:55%'><div class='track'>{marks}</div></td>"
            f"<td class='muted events'><code>{listing}</code></td></tr>"
        )
    return (
        f'<p class="legend">{legend}<span class="muted">0 = the first alert; '
        f"whole span {span / 1e6:.1f} ms</span></p>"
        f"<table><tbody>{''.join(rows)}</tbody></table>"
    )


def _messages_html(checks: Sequence[DemoCheck], channel_names: dict[str, str]) -> str:
    cards = []
    for check in checks:
        for message in check.slack_messages:
            when = time.strftime("%H:%M:%S", time.gmtime(float(message.ts)))
            replies = "".join(
                f'<div class="reply">{message_to_html(reply.blocks, reply.text)}</div>'
                for reply in message.replies
            )
            channel = channel_names.get(message.channel, message.channel)
            who = f"Serving Guard<span>{when} UTC · {_e(channel)} · {_e(check.case.name)}</span>"
            body = message_to_html(message.blocks, message.text)
            cards.append(f'<div class="slack"><div class="who">{who}</div>{body}{replies}</div>')
    if not cards:
        return '<p class="muted">No Slack messages.</p>'
    return f'<div class="msgs">{"".join(cards)}</div>'


# What the demo's alerts are, and so what it proves and what not (the report's header).
TEMPLATES_SAID = (
    "The alerts are scenario alert templates (each scenario file's alerts, filled in for a seeded pod),"
    " not alerts Falco raised: they prove the responder (verification, policy, actions, Slack), not"
    " that a rule still detects the attack. Whether the rules' conditions still match the recorded"
    " attacks is the rule-conditions result below (<code>serving-guard rules test</code>)."
)


def _stage_html(stage: CaptureStage) -> str:
    kind = ("ok" if stage.evaluated else "warn") if stage.passed else "bad"
    text = "\n".join(stage.lines)
    return f'<div class="stage {kind}" id="rule-conditions">{_e(text)}</div>'


def _left_out_html(omitted: Sequence[Scenario]) -> str:
    if not omitted:
        return "<p>Left out: none (every scenario has a demo part and was sent).</p>"
    items = "".join(
        f"<li><code>{_e(s.name)}</code>: {_e(s.summary.rstrip('.'))}. It {_e(LEFT_OUT_WHY)}: left out, so"
        f" nothing here shows how the responder handles it; send its alerts with"
        f" <code>{_e(replay_command(s))}</code>.</li>"
        for s in omitted
    )
    return f'<p>Left out of the demo ({len(omitted)}, not sent):</p><ul id="left-out">{items}</ul>'


def _scope_html(stage: CaptureStage, omitted: Sequence[Scenario]) -> str:
    return (
        '<section class="scope" id="not-proven"><h2>What this demo proves, and what not</h2>'
        f"<p>{TEMPLATES_SAID}</p>{_stage_html(stage)}{_left_out_html(omitted)}</section>"
    )


def _page(title: str, sub: str, body: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>
<body>
<h1>Serving Guard demo</h1>
<p class="sub">{sub}</p>
{body}
</body></html>
"""


def render_html(result: DemoResult, stage: CaptureStage, omitted: Sequence[Scenario]) -> str:
    rows = [row_of(check) for check in result.checks]
    passed = sum(1 for row in rows if row.passed) + (result.by_hand is not None and result.by_hand.passed)
    banner_class = "ok" if result.ok else "bad"
    total = result.expectations
    verdict = (
        f"All {total} expectations held."
        if result.ok
        else f"{total - passed} of {total} expectations FAILED."
    )
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(result.started_ns / 1e9))
    duration = (result.finished_ns - result.started_ns) / 1e9
    sub = f"""Run <code>{_e(result.run_id)}</code> · {started} · {duration:.1f} s · Scenario alert templates
replayed into the real responder (HTTP input over mutual TLS, gRPC input from a Falco outputs server),
against an emulated Kubernetes API with a seeded serving namespace, notifying a local Slack."""
    body = f"""{_scope_html(stage, omitted)}
<div class="banner {banner_class}">{verdict}</div>
<section id="scenarios"><h2>Scenarios</h2>
{_table_html(rows)}</section>
<section id="timeline"><h2>Timeline</h2>
{_timeline_html(result.checks)}</section>
{_by_hand_html(result.by_hand)}
<section id="slack"><h2>Slack messages</h2>
{_messages_html(result.checks, result.channel_names)}</section>
<section id="config"><h2>Responder configuration</h2>
<details><summary>config.yaml the demo ran with</summary>
<pre>{_e(result.config_text)}</pre></details></section>"""
    return _page("Serving Guard demo report", sub, body)


def render_stopped_html(stage: CaptureStage, omitted: Sequence[Scenario]) -> str:
    """The report of a demo the rule-conditions stage stopped: no alert was sent (and a report an
    earlier run left at the path is replaced, not left saying every expectation held)."""
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    sub = f"{started} · stopped at the rule conditions: no alert was sent to the responder."
    banner = (
        '<div class="banner bad">The rule-conditions stage FAILED: the demo stopped there, so no'
        " scenario was sent and no expectation of the responder was checked.</div>"
    )
    return _page("Serving Guard demo report (stopped)", sub, f"{_scope_html(stage, omitted)}\n{banner}")


def _write(text: str, path: str) -> None:
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"--report {path}: {exc.strerror or exc}") from None


def write_report(result: DemoResult, path: str, stage: CaptureStage, omitted: Sequence[Scenario]) -> None:
    _write(render_html(result, stage, omitted), path)


def write_stopped_report(path: str, stage: CaptureStage, omitted: Sequence[Scenario]) -> None:
    _write(render_stopped_html(stage, omitted), path)
