"""Policies as versions before exclusions by cut patched them, for the tests that check they are
still recognised, reported and released."""

from __future__ import annotations

import copy
from typing import Any

from responder.actions import netpol


def legacy_patched(policy: dict[str, Any], label: str) -> dict[str, Any]:
    """``policy`` with an earlier version's exclusion: `label DoesNotExist` (every quarantined pod,
    whatever its cut), marked as patched by us."""
    patched = copy.deepcopy(policy)
    selector = patched.setdefault("spec", {}).setdefault("podSelector", {})
    selector.setdefault("matchExpressions", []).append({"key": label, "operator": "DoesNotExist"})
    patched.setdefault("metadata", {}).setdefault("annotations", {})[netpol.PATCHED_ANNOTATION] = label
    return patched
