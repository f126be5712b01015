"""The demo's person in the loop: a quarantine that a policy on trial only predicted, run by hand
with the very command its Slack message gives, as a separate process against the responder's
journal, and told back in the incident's Slack thread by the running responder.

It checks that what was done matches what was predicted (the same leaking policies, or none),
that the incident's thread got the reply, and that the incident's message was rendered again
with who did it.
"""

from __future__ import annotations

import asyncio
import html
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulators.slack_sink import SinkMessage, SlackSink

# Who the demo's person is, and why they act.
DEMO_PERSON = "demo-oncall"
DEMO_REASON = "confirmed by hand after the trial predicted it"
_COMMAND = re.compile(r"```(serving-guard quarantine [^`]*)```")


@dataclass(frozen=True)
class ByHandStep:
    """What the demo did by hand, and what it found."""

    case: str
    command: tuple[str, ...]
    exit_code: int | None
    printed: str
    reply: str
    problems: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.problems

    @property
    def command_line(self) -> str:
        return shlex.join(self.command)


def trial_incident(
    cases: Sequence[tuple[str, Mapping[str, Any] | None]],
) -> tuple[str, Mapping[str, Any]] | None:
    """The first case whose incident's quarantine was only predicted (a policy on trial), with that
    incident; None when no case has one."""
    for name, incident in cases:
        if incident is None or _predicted(incident) is None:
            continue
        # Not a drill's prediction: a drill's pod is not under attack (quarantine --incident refuses it).
        if (incident.get("decision") or {}).get("dry_run_by") != "drill":
            return name, incident
    return None


def _predicted(incident: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The incident's quarantine that was only predicted (its dry-run action), if any."""
    actions = incident.get("actions") or []
    return next(
        (a for a in actions if a.get("action") == "quarantine" and a.get("status") == "dry_run"), None
    )


def command_from(message: SinkMessage, config_path: Path) -> list[str] | None:
    """The quarantine command the incident's message offers, its placeholders filled in with the
    demo person's reason and name (and the responder's config, if it lacks it): as a person would
    copy and complete it (a placeholder the message lacks stays missing, so that the check sees
    what it would do)."""
    found = _COMMAND.findall(str(message.blocks))
    if not found:
        return None
    argv = shlex.split(html.unescape(found[0]))
    for option, value in (("--reason", DEMO_REASON), ("--by", DEMO_PERSON)):
        if option in argv:
            argv[argv.index(option) + 1] = value
    # The message names the responder's config (it runs with one); a person adds it only if not.
    return argv if "--config" in argv else [*argv, "--config", str(config_path)]


def _told(sink: SlackSink, post: SinkMessage, incident_id: str) -> tuple[str, bool]:
    """The by-hand reply's text in the incident's thread ('' if none yet), and whether the incident's
    own message now says who acted."""
    reply = next(
        (
            str(r.blocks)
            for r in sink.replies(post.channel, post.ts)
            if ((r.metadata or {}).get("event_payload") or {}).get("kind") == "by_hand"
        ),
        "",
    )
    current = next((m for m in sink.messages(post.channel) if m.ts == post.ts), post)
    return reply, f"By hand, by *{DEMO_PERSON}*" in str(current.blocks) and incident_id in str(current.blocks)


async def confirm_by_hand(
    case: str,
    incident: Mapping[str, Any],
    post: SinkMessage,
    config_path: Path,
    sink: SlackSink,
    wake: Any,
    timeout: float,
) -> ByHandStep:
    """Run the trial's predicted quarantine by hand and check what the responder tells of it."""
    incident_id = str(incident.get("incident_id"))
    argv = command_from(post, config_path)
    if argv is None:
        return ByHandStep(
            case, (), None, "", "", ("the incident's Slack message offers no quarantine command",)
        )
    completed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "responder", *argv[1:]],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    printed = (completed.stdout + completed.stderr).strip()
    problems: list[str] = []
    leaks = [str(name) for name in (_predicted(incident) or {}).get("leaky_policies") or []]
    if completed.returncode != (1 if leaks else 0):
        problems.append(f"the command exited {completed.returncode}: {printed[-300:]}")
    if wake is not None:
        wake()  # the notifier looks at the journal now, not at its next idle poll
    deadline = time.monotonic() + timeout
    reply, updated = _told(sink, post, incident_id)
    while not (reply and updated) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        reply, updated = _told(sink, post, incident_id)
    if not reply:
        problems.append("no reply in the incident's Slack thread")
    elif leaks and not all(name in reply for name in leaks):
        problems.append(f"the reply does not name the predicted leaks ({', '.join(leaks)})")
    elif not leaks and "quarantined by hand: quarantined" not in reply:
        problems.append("the reply does not say the pod was quarantined")
    if not updated:
        problems.append("the incident's Slack message was not rendered again with who acted")
    return ByHandStep(case, tuple(argv), completed.returncode, printed, reply, tuple(problems))
