"""On-call notification: render an incident as one Slack message (pure) and deliver it.

- :mod:`responder.notify.render`: IncidentReport -> SlackMessage (Block Kit, escaped, sized).
- :mod:`responder.notify.blocks`, :mod:`responder.notify.alert_lines`,
  :mod:`responder.notify.outcome_lines`: its Block Kit primitives and Slack's size limits, the
  lines that say what the alert shows, and those that say what was done.
- :mod:`responder.notify.slack`: SlackDelivery (slack-sdk, one attempt per call, typed errors).
- :mod:`responder.notify.worker`: the worker that sends the posts the pipeline queued in the
  journal, and retries them from there.
- :mod:`responder.notify.redirect`: a post sent somewhere other than where it was meant says so.
- :mod:`responder.notify.routing`: whether and where a decision goes to Slack.
- :mod:`responder.notify.escape`: making attacker-controlled text literal in Slack.
"""

from responder.notify.render import EVENT_TYPE, MessageKind, SlackMessage, render_incident, render_repeat
from responder.notify.routing import SlackRoute, slack_route
from responder.notify.slack import DeliveryError, FailureKind, SlackDelivery, SlackRef

__all__ = [
    "EVENT_TYPE",
    "DeliveryError",
    "FailureKind",
    "MessageKind",
    "SlackDelivery",
    "SlackMessage",
    "SlackRef",
    "SlackRoute",
    "render_incident",
    "render_repeat",
    "slack_route",
]
