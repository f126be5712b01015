"""Words shared by the responder's messages, whatever their reader (terminal, Slack, audit)."""

from __future__ import annotations

from collections.abc import Sequence


def first_few(items: Sequence[str], shown: int, total: int | None = None) -> str:
    """``items`` joined with commas, the first ``shown`` only and how many more: one long list must
    not crowd out the rest of its message. ``total``: how many there are, when ``items`` holds
    only the first ones (a count kept instead of every item)."""
    more = (len(items) if total is None else total) - shown
    return ", ".join(items[:shown]) + (f" and {more} more" if more > 0 else "")
