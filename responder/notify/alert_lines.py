"""The lines that say what the alert shows (pure): its process and command lines, the file or
connection the event touched, its other fields, and its output text (with a warning first where it
names the pod, namespace or container otherwise than the fields). Every value is escaped and sized
as :mod:`responder.notify.render` says."""

from __future__ import annotations

import re
from collections.abc import Sequence

from responder.alert import (
    FIELD_CMDLINE,
    FIELD_CONTAINER_ID,
    FIELD_FD_NAME,
    FIELD_IMAGE,
    FIELD_IMAGE_TAG,
    FIELD_NAMESPACE,
    FIELD_PARENT,
    FIELD_POD,
    FIELD_PROC_NAME,
    FIELD_USER,
    Alert,
)
from responder.notify.blocks import (
    CMDLINE_LIMIT,
    NAME_LIMIT,
    OTHER_FIELDS_LIMIT,
    OUTPUT_LIMIT,
    SECTION_LIMIT,
    TRUNCATED_NOTE,
    SizedLines,
    code_or_unknown,
)
from responder.notify.escape import code, code_block_ends, code_block_lines, escape

# The least an "Other fields" line is cut to (its name and the start of its value).
OTHER_FIELD_LINE_MIN = 60

FIELD_EXEPATH = "proc.exepath"
FIELD_PCMDLINE = "proc.pcmdline"
FIELD_UID = "user.uid"
FIELD_EVT_TYPE = "evt.type"
FIELD_FD_TYPE = "fd.type"
FIELD_PROTO = "fd.l4proto"
FIELD_SERVER_IP = "fd.sip"
FIELD_SERVER_PORT = "fd.sport"
FIELD_SERVER_NAME = "fd.sip.name"
FIELD_CLIENT_IP = "fd.cip"
FIELD_CLIENT_PORT = "fd.cport"
FIELD_REMOTE_IP = "fd.rip"
FIELD_REMOTE_PORT = "fd.rport"
FIELD_IMAGE_DIGEST = "container.image.digest"
_CONNECTION_FIELDS = (FIELD_SERVER_IP, FIELD_CLIENT_IP, FIELD_REMOTE_IP)
# Fields shown in their own place; the rest go to "Other fields".
_SHOWN_FIELDS = frozenset(
    {
        FIELD_NAMESPACE,
        FIELD_POD,
        FIELD_CONTAINER_ID,
        FIELD_IMAGE,
        FIELD_IMAGE_TAG,
        FIELD_IMAGE_DIGEST,
        FIELD_PROC_NAME,
        FIELD_CMDLINE,
        FIELD_PARENT,
        FIELD_USER,
        FIELD_UID,
        FIELD_EXEPATH,
        FIELD_PCMDLINE,
        FIELD_FD_NAME,
        FIELD_FD_TYPE,
        FIELD_EVT_TYPE,
        FIELD_PROTO,
        FIELD_SERVER_IP,
        FIELD_SERVER_PORT,
        FIELD_SERVER_NAME,
        FIELD_CLIENT_IP,
        FIELD_CLIENT_PORT,
        FIELD_REMOTE_IP,
        FIELD_REMOTE_PORT,
        "evt.time",
        "evt.time.iso8601",
        "container.name",
        "k8s.pod.uid",
    }
)


def alert_process_lines(alert: Alert) -> SizedLines:
    lines = SizedLines()
    parts = [f"*Process* {code_or_unknown(alert.text(FIELD_PROC_NAME))}"]
    if alert.text(FIELD_PARENT):
        parts.append(f"parent {code_or_unknown(alert.text(FIELD_PARENT))}")
    user = alert.text(FIELD_USER)
    uid = alert.text(FIELD_UID)
    if user or uid:
        parts.append(
            f"user {code_or_unknown(user or uid)}" + (f" (uid {code(uid, 40)})" if user and uid else "")
        )
    head = [" · ".join(parts)]
    if alert.text(FIELD_EXEPATH):
        head.append(f"*Executable* {code_or_unknown(alert.text(FIELD_EXEPATH), 600)}")
    lines.extend(head)
    parent = alert.text(FIELD_PCMDLINE)
    # The blocks share what the lines above leave of the section (with their labels, cut or not,
    # and the newlines), so that neither is left out whole: the command line two thirds of it.
    labels = len("*Command line*") + len("*Parent command line*") + 2 * len(f" _({TRUNCATED_NOTE})_") + 4
    room = SECTION_LIMIT - sum(map(len, head)) - len(head) - labels
    command_limit = max(_BLOCK_MIN, min(CMDLINE_LIMIT, room * 2 // 3 if parent else room))
    label, block = _long_value(
        "*Command line*", alert.text(FIELD_CMDLINE) or "(not in the alert)", command_limit
    )
    lines.add_labelled(label, block)
    if parent:
        parent_limit = max(_BLOCK_MIN, min(CMDLINE_LIMIT // 2, room - len(block)))
        lines.add_labelled(*_long_value("*Parent command line*", parent, parent_limit))
    return lines


# The least a command line's block keeps: its head and tail still say what ran.
_BLOCK_MIN = 200


def _long_value(label: str, text: str, limit: int) -> tuple[str, str]:
    """``label``, then a block holding ``text``: when it is too long, its head and its tail (what a
    padded command line ends with stays in view), and the label says it is cut and where the
    whole is."""
    block, left_out = code_block_ends(text, limit)
    return (f"{label} _({TRUNCATED_NOTE})_" if left_out else label), block


def _endpoint(alert: Alert, ip_field: str, port_field: str) -> str | None:
    ip = alert.text(ip_field)
    if not ip:
        return None
    port = alert.text(port_field)
    return f"{ip}:{port}" if port else ip


def alert_target_lines(alert: Alert) -> SizedLines:
    """The file or connection the event touched, when the rule's output names one."""
    lines = SizedLines()
    fd_type = alert.text(FIELD_FD_TYPE)
    is_connection = fd_type in ("ipv4", "ipv6") or any(alert.text(f) for f in _CONNECTION_FIELDS)
    fd_name = alert.text(FIELD_FD_NAME)
    if is_connection:
        if fd_name:
            lines.add(f"*Connection* {code(fd_name, 600)}")
        endpoints = [
            ("server", _endpoint(alert, FIELD_SERVER_IP, FIELD_SERVER_PORT)),
            ("client", _endpoint(alert, FIELD_CLIENT_IP, FIELD_CLIENT_PORT)),
            ("remote", _endpoint(alert, FIELD_REMOTE_IP, FIELD_REMOTE_PORT)),
            ("server name", alert.text(FIELD_SERVER_NAME)),
            ("protocol", alert.text(FIELD_PROTO)),
        ]
        shown = [f"{label} {code(value, NAME_LIMIT)}" for label, value in endpoints if value]
        if shown:
            lines.add(" · ".join(shown))
    elif fd_name:
        lines.add(f"*File* {code(fd_name, 1000)}")
    if alert.text(FIELD_EVT_TYPE):
        lines.add(f"*Event* {code_or_unknown(alert.text(FIELD_EVT_TYPE))}")
    return lines


def alert_other_fields(alert: Alert) -> SizedLines:
    lines = SizedLines()
    rest = sorted((name, alert.text(name) or "") for name in alert.fields if name not in _SHOWN_FIELDS)
    if rest:
        lines.add("*Other fields*")
        shown = [f"{name}={value}" for name, value in rest]
        lines.add(code_block_lines(shown, OTHER_FIELDS_LIMIT, line_limit=_line_share(shown)))
    return lines


# How an output text labels the alert's pod, namespace and container: the pack's rules, Falco's
# own rules and its Kubernetes append_output (-pk), and field names as written. The value may be
# any of the fields named (Falco's -pc writes the container's name as container=).
_CONTAINER_NAME = "container.name"
_OUTPUT_LABELS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("pod", "k8s.pod", "k8s.pod.name", "k8s_pod", "k8s_pod_name"), (FIELD_POD,)),
    **dict.fromkeys(
        ("ns", "namespace", "k8s.ns", "k8s.ns.name", "k8s_ns", "k8s_ns_name"), (FIELD_NAMESPACE,)
    ),
    "container": (FIELD_CONTAINER_ID, _CONTAINER_NAME),
    **dict.fromkeys(("container.id", "container_id"), (FIELD_CONTAINER_ID,)),
}
# label=value, the label a word of its own (not proc.pod=, nor a command line's --namespace=).
_LABELLED_VALUE = re.compile(r"(?<![^\s(,])([\w.]+)=(\S*)")
# What Falco writes in its output for a field with no value (the field itself is then missing).
_NO_VALUE = "<NA>"


def output_disagreements(alert: Alert) -> list[tuple[str, str, str, str | None]]:
    """Where the alert's output text names its pod, namespace or container otherwise than its
    fields (what was verified and acted on): (label, the text's value, the field, its value or
    None). Falco writes both from one event: a difference is the sender's doing (a decoy)."""
    found: dict[tuple[str, str], tuple[str, str | None]] = {}
    for match in _LABELLED_VALUE.finditer(_without_other_values(alert)):
        label, said = match.group(1), match.group(2).rstrip(",;)")
        fields = _OUTPUT_LABELS.get(label, ())
        values = [alert.text(field) for field in fields]
        if fields and said not in [_NO_VALUE if value is None else value for value in values]:
            found.setdefault((label, said), (fields[0], values[0]))
    return [(label, said, field, value) for (label, said), (field, value) in found.items()]


def _without_other_values(alert: Alert) -> str:
    """The output text with the values of the alert's other fields blanked out: a command line's
    own ``ns=...`` is the process's argument, not the output's label (those fields are shown
    for what they are above)."""
    text = alert.output
    identity = {field for fields in _OUTPUT_LABELS.values() for field in fields}
    for name in alert.fields:
        value = alert.text(name) or ""
        if name not in identity and "=" in value:
            text = text.replace(value, " " * len(value))
    return text


def alert_output_lines(alert: Alert) -> SizedLines:
    """The alert's output text, said to be the sender's words (free text, checked against
    nothing); where it names the pod, namespace or container otherwise than the fields, said first."""
    lines = SizedLines()
    title, block = _long_value(
        "*Falco output*, as the sender wrote it (free text, not checked against the fields)",
        alert.output,
        OUTPUT_LIMIT,
    )
    lines.add(title)
    for label, said, field, value in output_disagreements(alert)[:3]:
        lines.add(
            f":warning: *The output text disagrees with the alert's fields:* it says"
            f" {code(f'{label}={said}', 120)}, but {code(field, 40)} (what was verified and acted on)"
            f" is {code(value, 100) if value is not None else '_missing_'}."
        )
    lines.add(block)
    return lines


def _line_share(shown: Sequence[str]) -> int | None:
    """What each "Other fields" line may use of the block, so that one long value does not push
    the lines after it out: an equal share, and what shorter lines leave of theirs goes to the
    longer (None: all fit whole). Never below OTHER_FIELD_LINE_MIN: then whole lines are left out,
    and the block says how many."""
    # The block's fences, the newlines, and room for its "… N more" line.
    left = OTHER_FIELDS_LIMIT - 6 - len(shown) - len(f"{len(shown)} more") - 2
    # Escaped (what the block holds), no further than the block: a longer line is cut anyway.
    lengths = sorted(len(escape(line or " ", OTHER_FIELDS_LIMIT)) for line in shown)
    for index, length in enumerate(lengths):
        fair = left // (len(lengths) - index)
        if length > fair:
            return max(OTHER_FIELD_LINE_MIN, fair)
        left -= length
    return None


__all__ = [
    "FIELD_CLIENT_IP",
    "FIELD_CLIENT_PORT",
    "FIELD_EVT_TYPE",
    "FIELD_EXEPATH",
    "FIELD_FD_TYPE",
    "FIELD_IMAGE_DIGEST",
    "FIELD_PCMDLINE",
    "FIELD_PROTO",
    "FIELD_REMOTE_IP",
    "FIELD_REMOTE_PORT",
    "FIELD_SERVER_IP",
    "FIELD_SERVER_NAME",
    "FIELD_SERVER_PORT",
    "FIELD_UID",
    "OTHER_FIELD_LINE_MIN",
    "alert_other_fields",
    "alert_output_lines",
    "alert_process_lines",
    "alert_target_lines",
    "output_disagreements",
]
