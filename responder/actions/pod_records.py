"""What the responder and `serving-guard release` record on a pod (its serving-guard.io/
annotations), and the release record read back: how the responder tells a person's release
(a lift) from a label removed by hand (a lapse)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from responder.alert import Alert, format_time_ns, parse_time_ns
from responder.cluster.context import PodContext

MAX_ANNOTATION = 1024
ANNOTATION_PREFIX = "serving-guard.io/"
A_QUARANTINED_AT = ANNOTATION_PREFIX + "quarantined-at"
A_RULE = ANNOTATION_PREFIX + "rule"
A_ALERT_ID = ANNOTATION_PREFIX + "alert-id"
A_INCIDENT = ANNOTATION_PREFIX + "incident"
A_REASON = ANNOTATION_PREFIX + "reason"
A_PATCHED = ANNOTATION_PREFIX + "patched-policies"
# The labels the pod was quarantined under, `key=value` by commas, one per label key (a config's
# last cut): a record whose labels are all gone from the pod was lapsed by hand (kubectl label -).
A_QUARANTINE_LABELS = ANNOTATION_PREFIX + "quarantine-labels"
A_FLAGGED_AT = ANNOTATION_PREFIX + "flagged-at"
A_RELEASED_AT = ANNOTATION_PREFIX + "released-at"
A_RELEASED_BY = ANNOTATION_PREFIX + "released-by"
A_RELEASE_REASON = ANNOTATION_PREFIX + "release-reason"
# The quarantine.label of each config whose release the record is, by commas: a pod quarantined by
# two configs and released by one keeps its quarantine record for the other, whose responder must
# not read that release as its own.
A_RELEASED_LABELS = ANNOTATION_PREFIX + "released-labels"
QUARANTINE_ANNOTATIONS = (
    A_QUARANTINED_AT,
    A_QUARANTINE_LABELS,
    A_RULE,
    A_ALERT_ID,
    A_INCIDENT,
    A_REASON,
    A_PATCHED,
)
# The quarantine.label of each config whose destination block the pod is in, by commas: configs
# share the block label (and the pod's block policy) by default, and one config's release must not
# lift a block another config made (its responder would read the block gone as a lapse).
A_BLOCKED_BY = ANNOTATION_PREFIX + "blocked-by"
RELEASE_ANNOTATIONS = (A_RELEASED_AT, A_RELEASED_BY, A_RELEASE_REASON, A_RELEASED_LABELS)
# How far apart the clocks of the machines that write and compare these times may be (the one
# `serving-guard release` ran on, Falco's nodes, the responder's).
CLOCK_SKEW_NS = 120 * 10**9
# A release outcome's extra: the pod's released-at it wrote, or found (one release, told once).
RELEASED_AT = "released_at"
# Merged into the annotations of every quarantine and block patch: the pod's release record is then
# always later than what the responder last put on it.
CLEAR_RELEASE_RECORD: dict[str, str | None] = dict.fromkeys(RELEASE_ANNOTATIONS)


@dataclass(frozen=True, slots=True)
class ReleaseRecord:
    """A release as `serving-guard release` recorded it on the pod: who, why, when (its words)."""

    by: str
    reason: str
    at: str
    at_ns: int  # ``at`` as a time


def release_record(
    pod: PodContext, label: str, since_ns: int = 0, until_ns: int | None = None
) -> ReleaseRecord | None:
    """The pod's release record of the config quarantining under ``label``, when it is the last word
    on the pod and made at ``since_ns`` or later: a quarantine or block since clears it
    (CLEAR_RELEASE_RECORD; an earlier version's block did not: hence the time), and the release
    clears the quarantine record, which a label removed by hand (kubectl label ... -) leaves in
    place, unless another config's quarantine still holds the pod (the record then names the
    configs released: A_RELEASED_LABELS). None: no release since. (Anyone who may patch the pod may
    write one: it is as trustworthy as that right; see README, Releasing.) With ``until_ns``, a
    record dated later than that is not taken: a clock ahead by more than CLOCK_SKEW_NS, or a record
    made up to hold back every alert to come (released-at: 2099-...)."""
    record = release_record_in(pod.annotations, label, since_ns)
    if record is not None and until_ns is not None and record.at_ns > until_ns:
        return None
    return record


def dated_credibly(alert: Alert, received_ns: int) -> Alert:
    """``alert`` as a release is weighed against it: dated no later than when it came
    (``received_ns``, by the responder's clock), for its event happened before. A node's clock
    ahead (or a sender's date) must not make it newer than a person's release made after it came."""
    if alert.time_ns <= received_ns:
        return alert
    return replace(
        alert, time_ns=received_ns, dated_ahead_ns=alert.dated_ahead_ns + alert.time_ns - received_ns
    )


def released_after_alert(released: ReleaseRecord, alert: Alert) -> str:
    """Why an alert's isolation is withheld when a person released the pod after its event (an
    alert taken up late: deferred while the pipeline was full, a slow API, a replayed file), or
    after it came, for one dated ahead of that (dated_credibly)."""
    when = format_time_ns(alert.time_ns)
    if alert.dated_ahead_ns:
        dated = format_time_ns(alert.time_ns + alert.dated_ahead_ns)
        after = f"after this alert came ({when}; its event was dated {dated}, ahead of the responder's clock)"
    else:
        after = f"after this alert's event ({when})"
    return (
        f"the pod was released by {released.by} at {released.at}, {after}: not isolated again on it;"
        " quarantine it by hand if it should be"
    )


def clear_release_record_of(annotations: Mapping[str, str], label: str) -> dict[str, str | None]:
    """What a quarantine or block by the config quarantining under ``label`` patches of the pod's
    release record (``annotations``: the pod's as read): this config's name off it, the record
    cleared only when it names no other config's release (another config's release, kept, must
    not read as a lapse to that config's responder) or names none (an earlier version's)."""
    configs = released_labels(annotations)
    if A_RELEASED_AT not in annotations or configs is None or not configs - {label}:
        return CLEAR_RELEASE_RECORD
    return {A_RELEASED_LABELS: ",".join(sorted(configs - {label}))}


def with_released_label(annotations: Mapping[str, str], label: str) -> str:
    """A_RELEASED_LABELS once a release by the config quarantining under ``label`` is recorded (the
    pod's annotations as read: ``annotations``): this config, and those a release record already
    there is of (a quarantine or block since would have cleared it)."""
    configs = (released_labels(annotations) or set()) if A_RELEASED_AT in annotations else set()
    return ",".join(sorted({*configs, label}))


def released_labels(annotations: Mapping[str, str]) -> set[str] | None:
    """The configs (by quarantine.label) a release record is of; None: it names none (an earlier
    version's record, of whichever config cleared the quarantine record)."""
    text = annotations.get(A_RELEASED_LABELS)
    if text is None:
        return None
    return {name.strip() for name in text.split(",") if name.strip()}


def release_record_in(annotations: Mapping[str, str], label: str, since_ns: int = 0) -> ReleaseRecord | None:
    """release_record of a pod whose annotations are ``annotations`` (as a patch reads them)."""
    released_at = annotations.get(A_RELEASED_AT)
    if released_at is None:
        return None
    configs = released_labels(annotations)
    if configs is None:
        # An earlier version's record: a release once the quarantine record is cleared.
        if A_QUARANTINED_AT in annotations:
            return None
    elif label not in configs:
        return None  # another config's release: the quarantine record stands for this one
    try:
        at_ns = parse_time_ns(released_at)
    except ValueError:
        return None
    if at_ns < since_ns:
        return None
    return ReleaseRecord(
        by=annotations.get(A_RELEASED_BY) or "someone",
        reason=annotations.get(A_RELEASE_REASON) or "",
        at=released_at,
        at_ns=at_ns,
    )


def recorded_labels(annotations: Mapping[str, str]) -> dict[str, str] | None:
    """The labels a quarantine record names (A_QUARANTINE_LABELS), by key. None: the record names
    none it can be read for (an earlier version's record, no record, or one edited into something
    with no `key=value` in it: read as naming none, never as a lapse)."""
    text = annotations.get(A_QUARANTINE_LABELS)
    if text is None:
        return None
    pairs = (entry.partition("=") for entry in text.split(","))
    labels = {key.strip(): value.strip() for key, sep, value in pairs if sep and key.strip()}
    return labels or None


def held_under(metadata: Mapping[str, Any]) -> dict[str, str]:
    """The recorded labels (recorded_labels) the pod still carries, by key with the value it
    carries now: a cut widened or narrowed by hand, or by an earlier version, keeps the key."""
    labels = metadata.get("labels") or {}
    recorded = recorded_labels(metadata.get("annotations") or {}) or {}
    return {key: str(labels[key]) for key in sorted(recorded) if key in labels}


def labels_text(labels: Mapping[str, str]) -> str:
    """Labels as A_QUARANTINE_LABELS writes them: `key=value` by commas, in key order."""
    return ",".join(f"{key}={labels[key]}" for key in sorted(labels))


def with_recorded_label(metadata: Mapping[str, Any], label: str, value: str) -> str:
    """A_QUARANTINE_LABELS once a quarantine of the pod (``metadata`` as read) under ``label=value``
    is recorded: the labels of other keys the pod still carries under a standing record kept (other
    configs' quarantines), this key's value replaced (a pod carries one)."""
    standing = A_QUARANTINED_AT in (metadata.get("annotations") or {})
    return labels_text({**(held_under(metadata) if standing else {}), label: value})


def quarantine_record_holds(metadata: Mapping[str, Any]) -> bool:
    """Whether the pod (``metadata`` as listed) is recorded as quarantined and still carries a label
    it was quarantined under (by key): a record whose labels were all taken off by hand is a lapse,
    and the pod is held by no config's deny-all any more. A record naming no labels (an earlier
    version's) holds while it stands."""
    annotations = metadata.get("annotations") or {}
    if A_QUARANTINED_AT not in annotations:
        return False
    return recorded_labels(annotations) is None or bool(held_under(metadata))


def blocked_by(annotations: Mapping[str, str]) -> set[str] | None:
    """The configs (by quarantine.label) whose destination block the pod is in (A_BLOCKED_BY).
    None: the record names none (a block of an earlier version's, or no record), whose config
    cannot be told."""
    text = annotations.get(A_BLOCKED_BY)
    if text is None:
        return None
    return {name.strip() for name in text.split(",") if name.strip()} or None


def with_blocker(metadata: Mapping[str, Any], block_label: str, label: str) -> str | None:
    """A_BLOCKED_BY once a block of the pod (``metadata`` as read) by the config quarantining under
    ``label`` is recorded: the configs a standing block is recorded as of, and this one. None: the
    pod is in a block no record attributes (an earlier version's), left unattributed (naming this
    config alone would let its release lift another config's block). A record beside no block
    label is stale (the label was taken off by hand): the block starts afresh."""
    if block_label not in (metadata.get("labels") or {}):
        return label
    configs = blocked_by(metadata.get("annotations") or {})
    return None if configs is None else ",".join(sorted({*configs, label}))


def clip_annotation(text: str) -> str:
    """``text`` as the pod records it (a rule, a reason, who released it): at most MAX_ANNOTATION
    characters."""
    return text[:MAX_ANNOTATION]


def now_text() -> str:
    """The time now as the pod's records write it (quarantined-at, flagged-at, released-at)."""
    return format_time_ns(time.time_ns())
