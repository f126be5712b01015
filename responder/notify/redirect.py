"""A message posted somewhere other than where it was meant to go says so (pure).

When a policy's channel refuses the bot (deleted, archived, the bot not invited), an incident goes
to the default channel instead of being lost; when the thread it was to join was deleted, it is
posted at the top level. Either way the readers are told why, and what to fix.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from responder.notify.blocks import MAX_BLOCKS
from responder.notify.escape import code, escape
from responder.notify.render import SlackMessage

_NAME_LIMIT = 80
_REASON_LIMIT = 300


def _note(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text, "verbatim": True}]}


def _with_note(message: SlackMessage, note: str) -> SlackMessage:
    """``message`` with ``note`` after its header (first when it has none), within Slack's 50 blocks."""
    blocks = list(message.blocks)
    at = 1 if blocks and blocks[0].get("type") == "header" else 0
    blocks.insert(at, _note(note))
    return dataclasses.replace(message, blocks=tuple(blocks[:MAX_BLOCKS]))


def redirected(message: SlackMessage, meant_for: str, reason: str) -> SlackMessage:
    """``message`` for another channel than ``meant_for``, which Slack refused (``reason``)."""
    return _with_note(
        message,
        f":leftwards_arrow_with_hook: Meant for {code(meant_for, _NAME_LIMIT)}, but Slack refused it"
        f" there ({escape(reason, _REASON_LIMIT)}). Invite the bot to that channel, or change the"
        " channel in the responder's config.",
    )


def out_of_thread(message: SlackMessage) -> SlackMessage:
    """``message`` posted at the top level because the thread it was to join was deleted."""
    return _with_note(
        message,
        ":leftwards_arrow_with_hook: Posted here, not as a reply: the thread it belonged in was deleted.",
    )


def posted_again(message: SlackMessage) -> SlackMessage:
    """``message`` (an incident) posted again because its first post was deleted in Slack while
    its alerts still come: the next repeats are counted in this one's thread."""
    return _with_note(
        message,
        ":leftwards_arrow_with_hook: Posted again: this incident's message was deleted in Slack while"
        " its alerts still come. Later repeats are counted in this message's thread.",
    )


def followed_up(message: SlackMessage) -> SlackMessage:
    """``message`` (an incident as it is now) posted anew where the first cannot be edited (an
    incoming webhook): what was done since is in it."""
    return _with_note(
        message,
        ":arrows_counterclockwise: Follow-up: this incident's message as it is now (what was done"
        " since its first message is in it).",
    )


__all__ = ["followed_up", "out_of_thread", "posted_again", "redirected"]
