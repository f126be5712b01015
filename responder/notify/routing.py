"""Whether and where an incident goes to Slack (pure).

The policy layer already folded the priority threshold (``slack.min_priority`` or the
policy's own) and the "always tell a human about withheld actions and possible forgeries"
rule into ``Decision.notify``, and the policy's channel (else the default) into
``Decision.slack_channel``; this module only adds the Slack settings on top.
"""

from __future__ import annotations

from dataclasses import dataclass

from responder.config import Slack, SlackMode
from responder.policy import Decision


@dataclass(frozen=True, slots=True)
class SlackRoute:
    # The channel to post to; None in webhook mode (an incoming webhook has its own channel).
    channel: str | None


def slack_route(decision: Decision, settings: Slack) -> SlackRoute | None:
    """The route for this decision, or None when nothing goes to Slack."""
    if settings.mode is SlackMode.DISABLED or not decision.notify:
        return None
    if settings.mode is SlackMode.WEBHOOK:
        return SlackRoute(channel=None)
    channel = decision.slack_channel or settings.default_channel
    if not channel:
        return None  # unreachable with a valid config: bot mode requires default_channel
    return SlackRoute(channel=channel)


# An incoming webhook cannot update a message: each repeat count is a new post in the channel, so
# the wait between them doubles with each one sent, up to this (the first waits the interval).
WEBHOOK_REPEAT_LONGEST_SECONDS = 3600.0
# ...doubling from at least this: with update_interval_seconds 0 (no wait), a storm would otherwise
# post a new message for every repeat.
WEBHOOK_REPEAT_SHORTEST_SECONDS = 1.0


def repeat_interval_ns(settings: Slack, repeats_sent: int) -> int:
    """How long after the last repeat count sent the next may go, with ``repeats_sent`` already
    sent: slack.update_interval_seconds, and for an incoming webhook doubling with each one (a
    storm's incidents would post a new message each interval, for as long as it lasts)."""
    interval = settings.update_interval_seconds
    if settings.mode is SlackMode.WEBHOOK and repeats_sent > 0:
        base = max(interval, WEBHOOK_REPEAT_SHORTEST_SECONDS)
        interval = min(base * 2.0 ** min(repeats_sent, 32), max(base, WEBHOOK_REPEAT_LONGEST_SECONDS))
    return int(interval * 1e9)


__all__ = [
    "WEBHOOK_REPEAT_LONGEST_SECONDS",
    "WEBHOOK_REPEAT_SHORTEST_SECONDS",
    "SlackRoute",
    "repeat_interval_ns",
    "slack_route",
]
