"""The quarantine record's labels (serving-guard.io/quarantine-labels): what a quarantine writes, and
whether a record still holds the pod (a record whose labels were all taken off by hand is a lapse)."""

from __future__ import annotations

from typing import Any

import pytest

from responder.actions.pod_records import (
    A_QUARANTINE_LABELS,
    A_QUARANTINED_AT,
    A_RELEASED_LABELS,
    CLEAR_RELEASE_RECORD,
    clear_release_record_of,
    quarantine_record_holds,
    recorded_labels,
    release_record_in,
    with_recorded_label,
)

AT = "2026-12-01T10:00:00Z"


def _record(labels: str) -> dict[str, str]:
    return {A_QUARANTINED_AT: AT, A_QUARANTINE_LABELS: labels}


def test_a_quarantine_records_its_label_beside_other_keys_and_replaces_its_own_keys_value() -> None:
    assert with_recorded_label({}, "serving-guard.io/quarantine", "true-egress") == (
        "serving-guard.io/quarantine=true-egress"
    )
    widened = {
        "labels": {"acme.io/isolated": "true", "serving-guard.io/quarantine": "true-egress"},
        "annotations": _record("acme.io/isolated=true,serving-guard.io/quarantine=true-egress"),
    }
    assert with_recorded_label(widened, "serving-guard.io/quarantine", "true") == (
        "acme.io/isolated=true,serving-guard.io/quarantine=true"
    )


def test_a_quarantine_drops_entries_whose_labels_are_gone_or_whose_record_was_cleared() -> None:
    """A label taken off by hand, or an entry an earlier version's release left (it clears
    quarantined-at only), would otherwise hold again once someone put that label back by hand."""
    lapsed = {"labels": {}, "annotations": _record("b=true")}
    assert with_recorded_label(lapsed, "a", "true") == "a=true"
    released_by_an_earlier_version = {"labels": {"b": "true"}, "annotations": {A_QUARANTINE_LABELS: "b=true"}}
    assert with_recorded_label(released_by_an_earlier_version, "a", "true") == "a=true"


@pytest.mark.parametrize(
    ("text", "labels"),
    [
        ("a=1", {"a": "1"}),
        ("a=1, b.io/c=x-egress", {"a": "1", "b.io/c": "x-egress"}),
        ("garbage,=v,a=1", {"a": "1"}),  # edited by hand: what is not key=value is skipped
        # Nothing readable: names no label (as an earlier version's record), never a lapse.
        ("", None),
        ("acme.io/isolated", None),
        ("acme.io/isolated:true", None),
    ],
)
def test_recorded_labels_are_read_back(text: str, labels: dict[str, str] | None) -> None:
    assert recorded_labels({A_QUARANTINE_LABELS: text}) == labels


def test_a_record_naming_no_labels_is_told_from_one_naming_none() -> None:
    assert recorded_labels({A_QUARANTINED_AT: AT}) is None


@pytest.mark.parametrize(
    ("metadata", "holds"),
    [
        ({"labels": {"q": "true"}}, False),  # no record: labelled by hand
        ({"annotations": {A_QUARANTINED_AT: AT}}, True),  # an earlier version's record names no label
        (
            {"labels": {"q": "true"}, "annotations": _record("q=true")},
            True,
        ),
        ({"labels": {}, "annotations": _record("q=true")}, False),
        # The cut changed by hand (or by an earlier version): the key holds, whatever its value.
        ({"labels": {"q": "true"}, "annotations": _record("q=true-egress")}, True),
        ({"labels": {}, "annotations": _record("")}, True),  # unreadable: names no label
        # Two configs' quarantines; one label taken off: the other still holds it.
        (
            {
                "labels": {"b": "true"},
                "annotations": _record("a=true,b=true"),
            },
            True,
        ),
        # Labels without a record (released, or never quarantined): no record holds it.
        ({"labels": {"q": "true"}, "annotations": {A_QUARANTINE_LABELS: "q=true"}}, False),
    ],
)
def test_a_record_holds_while_the_pod_carries_a_label_it_names(metadata: dict[str, Any], holds: bool) -> None:
    assert quarantine_record_holds(metadata) is holds


RELEASED = {"serving-guard.io/released-at": AT, "serving-guard.io/released-by": "bob"}


@pytest.mark.parametrize(
    ("annotations", "of_q"),
    [
        (RELEASED, True),  # an earlier version's release: the quarantine record cleared
        ({**RELEASED, A_QUARANTINED_AT: AT}, False),  # ... and a quarantine since, by an earlier version
        ({**RELEASED, A_RELEASED_LABELS: "q"}, True),
        ({**RELEASED, A_RELEASED_LABELS: "acme,q", A_QUARANTINED_AT: AT}, True),  # q released, acme's stands
        ({**RELEASED, A_RELEASED_LABELS: "acme", A_QUARANTINED_AT: AT}, False),  # acme's release, q's stands
        ({**RELEASED, A_RELEASED_LABELS: "acme"}, False),
    ],
)
def test_a_release_record_is_read_only_by_the_configs_it_names(
    annotations: dict[str, str], of_q: bool
) -> None:
    record = release_record_in(annotations, "q")
    assert (record is not None) is of_q
    if record is not None:
        assert record.by == "bob"


@pytest.mark.parametrize(
    ("annotations", "patched"),
    [
        ({}, CLEAR_RELEASE_RECORD),
        (RELEASED, CLEAR_RELEASE_RECORD),  # an earlier version's record: whichever config's, it goes
        ({**RELEASED, A_RELEASED_LABELS: "q"}, CLEAR_RELEASE_RECORD),
        # Another config's release stays: only this config's name comes off it.
        ({**RELEASED, A_RELEASED_LABELS: "acme,q"}, {A_RELEASED_LABELS: "acme"}),
        ({**RELEASED, A_RELEASED_LABELS: "acme"}, {A_RELEASED_LABELS: "acme"}),
    ],
)
def test_a_quarantine_clears_only_its_own_configs_release(
    annotations: dict[str, str], patched: dict[str, str | None]
) -> None:
    assert clear_release_record_of(annotations, "q") == patched
