from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from responder.actions.outcome import THREAD_KEPT_OUT, ActionOutcome, OutcomeStatus, release_note
from responder.alert import MAX_FIELD_VALUE_CHARS, MAX_OUTPUT_CHARS, MAX_RULE_CHARS, Priority
from responder.cluster.verify import Verification, VerificationStatus
from responder.config import ActionName
from responder.incident import CommandForm
from responder.notify.blocks import HEADER_LIMIT, MAX_BLOCKS
from responder.notify.escape import BACKTICK_LOOKALIKE
from responder.notify.render import (
    EVENT_TYPE,
    MessageKind,
    SlackMessage,
    render_by_hand,
    render_incident,
    render_repeat,
)
from responder.policy import DRY_RUN_BY_GUARDRAILS, DRY_RUN_BY_POLICY
from responder.sender import Proof, Sender
from simulators.slack_sink import block_problems
from tests.notify.slack_fixtures import (
    BASE_FIELDS,
    make_alert,
    make_decision,
    make_report,
    quarantined,
    visible_text,
)

RAW_AMP = re.compile(r"&(?!(?:amp|lt|gt);)")


def text_of(message: SlackMessage) -> str:
    return visible_text(message.blocks_json())


def header_of(message: SlackMessage) -> str:
    header = message.blocks[0]
    assert header["type"] == "header"
    return str(header["text"]["text"])


def assert_valid(message: SlackMessage) -> None:
    """Slack would accept it: the sink enforces Block Kit's size rules."""
    assert block_problems(message.blocks_json()) == []
    assert len(message.blocks) <= MAX_BLOCKS
    assert 0 < len(message.text) <= 1000


def test_quarantined_incident_names_pod_process_file_and_release_command() -> None:
    report = make_report(outcomes=(quarantined(detail="created NetworkPolicy serving-guard-quarantine"),))
    message = render_incident(report)
    assert_valid(message)
    assert header_of(message) == ":rotating_light: Critical: Shell in serving pod"
    text = text_of(message)
    for expected in (
        "*Pod*\n`ml/triton-0`",
        "*Workload*\n`Deployment/triton`",
        "*Node*\n`node-1`",
        "*Image*\n`nvcr.io/nvidia/tritonserver:24.05-py3`",
        "*Digest*\n`sha256:" + "ab" * 32 + "`",
        "*Container*\n`triton` `0123456789ab`",
        "*Process* `bash` · parent `tritonserver` · user `root`",
        "*Command line*\n```bash -i```",
        "*File* `/etc/shadow`",
        "*Event* `openat`",
        ":lock: *Quarantined*",
        "created NetworkPolicy serving-guard-quarantine",
        # The exact command, with Slack's escaping that Slack undoes on display.
        "```serving-guard release --namespace ml triton-0 --incident inc-0123456789abcdef0123"
        " --reason '&lt;why it is safe&gt;' --by '&lt;you&gt;'```",
        ":white_check_mark: Verified against the live pod (container `triton`)",
        "Policy `shell-or-reverse-shell`",
        "Incident `inc-0123456789abcdef0123`",
        "At 2025-01-28 10:00:00 UTC",
        "Falco on `node-1` · source `syscall` · tags `T1059, serving_guard`",
    ):
        assert expected in text, expected
    assert message.text == "[Critical] Shell in serving pod in ml/triton-0: quarantined"
    assert message.kind is MessageKind.INCIDENT
    assert message.metadata() == {
        "event_type": EVENT_TYPE,
        "event_payload": {"incident_id": "inc-0123456789abcdef0123", "kind": "incident"},
    }


@pytest.mark.parametrize(
    ("outcome", "expected", "fallback"),
    [
        (
            ActionOutcome(
                "quarantine",
                OutcomeStatus.LEAKY,
                "allow-metrics allows ingress (port 8002 from any pod)",
                leaky_policies=("allow-metrics", "allow-grpc"),
            ),
            [
                ":warning: *LEAKY quarantine*",
                "still allow its traffic: `allow-metrics`, `allow-grpc`",
                "allow-metrics allows ingress (port 8002 from any pod)",
                "Fix them, or set `quarantine.patch_other_policies: true`"
                " (Helm: `quarantine.patchOtherPolicies`).",
            ],
            "LEAKY quarantine: still allowed by allow-metrics, allow-grpc",
        ),
        (
            ActionOutcome(
                "quarantine",
                OutcomeStatus.QUARANTINED,
                patched_policies=("allow-metrics",),
            ),
            [":lock: *Quarantined*", "Other policies were patched to exclude it: `allow-metrics`."],
            "quarantined (patched policies to exclude it: allow-metrics)",
        ),
        (
            ActionOutcome(
                "quarantine",
                OutcomeStatus.LEAKY,
                "namespace-baseline allows egress (its podSelector selects the pod; not patched: it also"
                " restricts ingress, which excluding quarantined pods from it could open to all traffic)",
                leaky_policies=("namespace-baseline",),
                extra={"isolated": "egress", "not_patched": ["namespace-baseline"]},
            ),
            [
                "still allow its traffic: `namespace-baseline`",
                ". Fix them by hand: `namespace-baseline` also restrict the traffic this quarantine"
                " leaves open, so they were not patched (excluding quarantined pods from them could open"
                " it to all).",
            ],
            "LEAKY quarantine: still allowed by namespace-baseline",
        ),
        (
            ActionOutcome("quarantine", OutcomeStatus.QUARANTINED, extra={"isolated": "egress"}),
            [
                ":lock: *Quarantined (egress)*: the pod can no longer open connections out (an egress-only"
                " deny-all NetworkPolicy; connections already open end only where the network plugin cuts"
                " them); it still receives requests."
            ],
            "quarantined (egress cut)",
        ),
        (
            ActionOutcome(
                "quarantine",
                OutcomeStatus.QUARANTINED,
                "namespace-baseline still exclude quarantined pods, as patched for an earlier quarantine"
                " that cut both ways: their ingress rules no longer apply to this pod",
                extra={"isolated": "egress", "excluded_beyond": ["namespace-baseline"]},
            ),
            [
                ":lock: *Quarantined (egress)*",
                ":warning: Its ingress may be open to all: `namespace-baseline` exclude this pod though"
                " its quarantine leaves its ingress alone (an exclusion made by an earlier version, which"
                " excluded every quarantined pod, or a policy given that direction since it was patched)."
                " Release the pods quarantined in the namespace (its last release removes the exclusion),"
                " or remove it by hand.",
            ],
            "quarantined (egress cut) (excluded beyond the cut by namespace-baseline)",
        ),
        (
            ActionOutcome(
                "quarantine",
                OutcomeStatus.LEAKY,
                leaky_policies=("egress-anywhere",),
                extra={"isolated": "ingress", "excluded_beyond": ["namespace-baseline"]},
            ),
            [
                "still allow its traffic: `egress-anywhere`",
                ":warning: Its egress may be open to all: `namespace-baseline`",
            ],
            "LEAKY quarantine: still allowed by egress-anywhere"
            " (excluded beyond the cut by namespace-baseline)",
        ),
        (
            ActionOutcome(
                "quarantine", OutcomeStatus.DRY_RUN, "would label the pod into serving-guard-quarantine"
            ),
            [
                ":test_tube: *Dry-run*: would quarantine (guardrails.dry_run is on; nothing was changed)",
                "would label the pod into serving-guard-quarantine",
            ],
            "dry-run: would quarantine",
        ),
        (
            ActionOutcome("quarantine", OutcomeStatus.FAILED, 'HTTP 403: pods "triton-0" is forbidden'),
            [
                ':x: *quarantine FAILED*: HTTP 403: pods "triton-0" is forbidden. The pod is *not* isolated;'
                " the responder tries it again by itself over the next minutes, and a repeat of this alert"
                " does too; or quarantine it by hand with the command below."
            ],
            'failed: HTTP 403: pods "triton-0" is forbidden',
        ),
        (
            ActionOutcome(
                "quarantine",
                OutcomeStatus.FAILED,
                "the pod is labelled, but NetworkPolicy serving-guard-quarantine is not ensured: HTTP 500",
                extra={"labelled": True},
            ),
            [
                ":x: *quarantine FAILED*: the pod is labelled, but NetworkPolicy serving-guard-quarantine"
                " is not ensured: HTTP 500. The pod is *not* isolated until that policy exists; the"
                " responder tries it again by itself over the next minutes, and a repeat of this alert does"
                " too; or run the quarantine command below."
            ],
            "failed: the pod is labelled, but NetworkPolicy serving-guard-quarantine is not ensured:"
            " HTTP 500",
        ),
        (
            ActionOutcome("quarantine", OutcomeStatus.POD_GONE, "pod no longer exists"),
            [":ghost: *Pod gone*: nothing left to quarantine (pod no longer exists)."],
            "pod gone: pod no longer exists",
        ),
        (
            ActionOutcome("quarantine", OutcomeStatus.WITHHELD, "maintenance window"),
            [":pause_button: *quarantine withheld*: maintenance window"],
            "withheld: maintenance window",
        ),
        (
            ActionOutcome("annotate", OutcomeStatus.ANNOTATED),
            [":memo: *Annotated* the pod (its network is unchanged)."],
            "annotated",
        ),
        (
            ActionOutcome("release", OutcomeStatus.RELEASED, "label removed by alice"),
            [":unlock: *Released*: label removed by alice"],
            "released: label removed by alice",
        ),
    ],
    ids=lambda value: (
        (value.status.value + "".join(f"-{key}" for key in value.extra))
        if isinstance(value, ActionOutcome)
        else ""
    ),
)
def test_every_outcome_is_said_in_plain_words(
    outcome: ActionOutcome, expected: list[str], fallback: str
) -> None:
    decision = make_decision(
        actions=(ActionName.NOTIFY, ActionName.ANNOTATE)
        if outcome.action == "annotate"
        else (ActionName.NOTIFY, ActionName.QUARANTINE)
    )
    # A release follows a quarantine; afterwards there is nothing left to release.
    outcomes = (quarantined(), outcome) if outcome.status is OutcomeStatus.RELEASED else (outcome,)
    message = render_incident(make_report(decision=decision, outcomes=outcomes))
    assert_valid(message)
    text = text_of(message)
    for line in expected:
        assert line in text, line
    assert message.text.endswith(": " + fallback)
    release = "serving-guard release --namespace ml triton-0"
    # The release command wherever the pod was left labelled, a failure after the label included.
    assert (release in text) is outcome.labelled


def test_withheld_quarantine_lists_the_guardrail_reasons() -> None:
    decision = make_decision(
        actions=(ActionName.NOTIFY,),
        withheld=(
            "namespace ml is not opted in (label serving-guard.io/enforce=true is missing)",
            "circuit breaker open: 5 quarantines in the last 300s (limit 5); alert-only until the window"
            " passes",
        ),
        breaker_open=True,
    )
    message = render_incident(make_report(decision=decision))
    assert_valid(message)
    text = text_of(message)
    assert ":pause_button: *quarantine withheld*, because:" in text
    assert "• namespace ml is not opted in (label serving-guard.io/enforce=true is missing)" in text
    assert "• circuit breaker open: 5 quarantines" in text
    assert "serving-guard release" not in text
    assert message.text.endswith(": quarantine withheld")


def test_unverified_alert_is_a_distinct_loud_security_message() -> None:
    forged = make_alert({**BASE_FIELDS, "container.id": "fffffffffff0"}, hostname="attacker-box")
    reason = "container.id fffffffffff0 is not a container of the pod (pod has: 0123456789ab)"
    decision = make_decision(
        actions=(ActionName.NOTIFY,),
        unverified=True,
        withheld=(f"alert not verified against the live pod: {reason}",),
    )
    message = render_incident(
        make_report(
            alert=forged,
            verification=Verification(VerificationStatus.UNVERIFIED, reason),
            decision=decision,
        )
    )
    assert_valid(message)
    assert header_of(message) == ":no_entry: UNVERIFIED Critical alert: Shell in serving pod"
    text = text_of(message)
    assert ":no_entry: *Unverified alert: someone may be forging alerts.*" in text
    assert f"This alert names pod `ml/triton-0`, but it does not match the live pod: `{reason}`." in text
    assert "Nothing was done to the pod." in text and "node `attacker-box`" in text
    assert "*Pod (as the alert claims)*" in text
    assert f":no_entry: UNVERIFIED: `{reason}`" in text
    assert "serving-guard release" not in text
    assert message.text == (
        "UNVERIFIED alert (someone may be forging alerts): Shell in serving pod naming ml/triton-0"
    )
    # The normal header is not used: the unverified one cannot be mistaken for a routine alert.
    assert "Critical: Shell" not in header_of(message)


@pytest.mark.parametrize(
    ("sender", "hint"),
    [
        (None, "Check who can reach the responder's alert inputs"),
        (
            Sender("10.0.0.7", Proof.CERTIFICATE, ("falco-node-b",)),
            "It was sent by `certificate falco-node-b from 10.0.0.7`:"
            " check who holds that client certificate",
        ),
        (
            Sender("10.0.0.8", Proof.TOKEN, token=2),
            "It was sent by `token 2 from 10.0.0.8`: check who holds that token (its line in the token file)",
        ),
        (
            Sender("10.0.0.9", Proof.NONE),
            "It was sent by `unauthenticated from 10.0.0.9`: the alert input takes alerts from anyone"
            " (inputs.http.allow_unauthenticated); check who can reach it",
        ),
        (
            Sender("falco.falco:5060", Proof.SERVER_CERTIFICATE, ("falco-grpc",)),
            "It was sent by `Falco gRPC at falco.falco:5060 (server certificate falco-grpc)`:"
            " check who holds a server certificate for that name from inputs.grpc.tls.ca_file",
        ),
        (
            Sender("unix:///run/falco/falco.sock", Proof.SOCKET),
            "It was sent by `Falco gRPC at unix:///run/falco/falco.sock`:"
            " check who can create that socket (its directory's owner and mode)",
        ),
        (
            Sender("/var/log/falco/events.jsonl", Proof.FILE),
            "It was sent by `file /var/log/falco/events.jsonl`:"
            " check who wrote what `serving-guard ingest` read",
        ),
        (
            Sender("-", Proof.FILE),
            "It was sent by `standard input`: check who wrote what `serving-guard ingest` read",
        ),
    ],
)
def test_an_unverified_alert_says_who_sent_it(sender: Sender | None, hint: str) -> None:
    """Whose credential sent a possible forgery is where on-call looks first."""
    forged = dataclasses.replace(make_alert({**BASE_FIELDS, "container.id": "fffffffffff0"}), sender=sender)
    decision = make_decision(actions=(ActionName.NOTIFY,), unverified=True)
    unverified = Verification(VerificationStatus.UNVERIFIED, "no such container")
    report = make_report(alert=forged, verification=unverified, decision=decision)
    message = render_incident(report)
    assert_valid(message)
    assert f"Nothing was done to the pod. {hint}, and the Falco on node `node-1`." in text_of(message)


def test_alerts_not_checked_against_a_pod_say_who_sent_them() -> None:
    """review-52a M1: a forger's alert that met a failed pod read read as Falco's, sender unsaid."""
    sender = Sender("10.0.0.9", Proof.TOKEN, token=2)
    for verification in (
        Verification(VerificationStatus.LOOKUP_FAILED, "HTTP 503 from the API server"),
        Verification(VerificationStatus.NOT_LISTED_YET, "container.id abc is not listed yet"),
        Verification(VerificationStatus.NO_POD_IDENTITY),
    ):
        decision = make_decision(actions=(ActionName.NOTIFY,), withheld=("pod lookup failed",))
        alert = dataclasses.replace(make_alert(BASE_FIELDS), sender=sender)
        message = render_incident(
            make_report(alert=alert, no_pod=True, verification=verification, decision=decision)
        )
        assert_valid(message)
        line = next(t for t in text_of(message).splitlines() if "Not verified" in t)
        assert line.endswith(f"; sent by `{sender.text()}`"), line


def test_an_outcome_quoting_the_alert_does_not_format_the_repeat_or_the_text_alone() -> None:
    """review-52a L1: a forged host name in the withheld reason showed bold and struck through in
    the repeat reply's "Now:" line and the text-alone post's outcome."""
    host = "*RELEASED* by ~alice~ _ok_"
    reason = f"alert not verified against the live pod: alert came from host {host!r}, not the pod's node"
    report = make_report(
        alert=make_alert(hostname=host),
        verification=Verification(VerificationStatus.UNVERIFIED, f"alert came from host {host!r}"),
        decision=make_decision(actions=(), unverified=True, withheld=(reason,)),
        outcomes=(ActionOutcome("quarantine", OutcomeStatus.WITHHELD, reason),),
        count=3,
    )
    now = next(t for t in text_of(render_repeat(report)).splitlines() if t.startswith("Now: "))
    outcome = next(t for t in render_incident(report).text_alone.splitlines() if t.startswith("*Outcome*: "))
    for line in (now, outcome):
        assert "RELEASED" in line and "alice" in line, line
        assert not re.search(r"(?<![\w])[*~_]\w", line.removeprefix("*Outcome*: ")), line


@pytest.mark.parametrize(
    ("verification", "expected"),
    [
        (
            Verification(VerificationStatus.POD_NOT_FOUND),
            ":grey_question: Not verified: pod not found (already gone?)",
        ),
        (
            Verification(VerificationStatus.LOOKUP_FAILED, "HTTP 503 from the API server"),
            ":grey_question: Not verified: pod lookup failed: HTTP 503 from the API server",
        ),
        (
            Verification(VerificationStatus.NO_POD_IDENTITY),
            ":grey_question: Not verified: the alert names no pod",
        ),
    ],
    ids=lambda value: value.status.value if isinstance(value, Verification) else "",
)
def test_unverifiable_alerts_say_why(verification: Verification, expected: str) -> None:
    decision = make_decision(actions=(ActionName.NOTIFY,), withheld=("pod lookup failed",))
    message = render_incident(make_report(no_pod=True, verification=verification, decision=decision))
    assert_valid(message)
    text = text_of(message)
    assert expected in text
    # Without the live pod, what the alert itself says is shown.
    assert "*Workload*\n_unknown_" in text
    assert "*Image*\n`nvcr.io/nvidia/tritonserver`" in text
    assert "*Node*\n`node-1`" in text


def test_connection_alert_shows_both_ends() -> None:
    fields = {
        **BASE_FIELDS,
        "fd.name": "10.0.0.5:41234->203.0.113.9:4444",
        "fd.type": "ipv4",
        "fd.cip": "10.0.0.5",
        "fd.cport": 41234,
        "fd.sip": "203.0.113.9",
        "fd.sport": 4444,
        "fd.l4proto": "tcp",
        "evt.type": "connect",
    }
    message = render_incident(make_report(alert=make_alert(fields, rule="Interpreter reverse shell")))
    assert_valid(message)
    text = text_of(message)
    assert "*Connection* `10.0.0.5:41234-&gt;203.0.113.9:4444`" in text
    assert "server `203.0.113.9:4444` · client `10.0.0.5:41234` · protocol `tcp`" in text
    assert "*File*" not in text


def test_fields_without_a_place_are_listed_under_other_fields() -> None:
    fields = {
        **BASE_FIELDS,
        "proc.tty": 34816,
        "k8s.pod.label.app": "triton",
        "proc.is_exe_upper_layer": True,
        "proc.env": "A=1\nFAKE=line",
    }
    text = text_of(render_incident(make_report(alert=make_alert(fields))))
    # One field per line; a newline inside a value is shown, so it cannot fake another field.
    assert (
        "*Other fields*\n```k8s.pod.label.app=triton\nproc.env=A=1\\nFAKE=line\n"
        "proc.is_exe_upper_layer=true\nproc.tty=34816```" in text
    )


def test_evt_time_in_either_form_is_not_repeated_under_other_fields() -> None:
    fields = {**BASE_FIELDS, "evt.time.iso8601": "2025-01-28T10:00:00.123456789Z"}
    assert "Other fields" not in text_of(render_incident(make_report(alert=make_alert(fields))))


def test_notify_only_and_in_progress_are_said() -> None:
    notify_only = make_decision(
        actions=(ActionName.NOTIFY,), requested=(ActionName.NOTIFY,), policy="model-load"
    )
    text = text_of(render_incident(make_report(decision=notify_only)))
    assert ":bell: *Notified only*: policy `model-load` takes no action on the pod." in text
    pending = render_incident(make_report())
    assert ":hourglass: *quarantine* in progress." in text_of(pending)
    assert pending.text.endswith(": quarantine in progress")
    dry = render_incident(make_report(decision=make_decision(dry_run=True)))
    assert ":test_tube: *Dry-run*: would quarantine (in progress)." in text_of(dry)


def test_a_dry_run_says_whether_the_guardrail_or_the_policy_put_it_there() -> None:
    """On-call must tell "the whole responder is in dry-run" from "this one policy is on trial"."""
    outcome = ActionOutcome(
        "annotate", OutcomeStatus.DRY_RUN, "would record the finding in the pod's annotations"
    )
    trial = make_decision(
        policy="egress-trial",
        actions=(ActionName.NOTIFY, ActionName.ANNOTATE),
        requested=(ActionName.NOTIFY, ActionName.ANNOTATE),
        dry_run=True,
        dry_run_by=DRY_RUN_BY_POLICY,
    )
    message = render_incident(make_report(decision=trial, outcomes=(outcome,)))
    assert_valid(message)
    assert (
        ":test_tube: *Dry-run*: would annotate (policy `egress-trial` is in dry-run; nothing was changed):"
        " would record the finding in the pod's annotations." in text_of(message)
    )
    assert message.text.endswith(": dry-run: would annotate")
    pending = render_incident(make_report(decision=trial))
    assert ":test_tube: *Dry-run*: would annotate (in progress)." in text_of(pending)
    assert pending.text.endswith(": dry-run: would annotate")
    globally = make_decision(dry_run=True, dry_run_by=DRY_RUN_BY_GUARDRAILS)
    quarantine = ActionOutcome("quarantine", OutcomeStatus.DRY_RUN)
    assert "(guardrails.dry_run is on; nothing was changed)." in text_of(
        render_incident(make_report(decision=globally, outcomes=(quarantine,)))
    )


def test_repeat_reply_counts_and_names_the_last_time() -> None:
    report = make_report(count=7, outcomes=(quarantined(),))
    message = render_repeat(report)
    assert_valid(message)
    assert message.kind is MessageKind.REPEAT
    assert message.metadata()["event_payload"] == {"incident_id": report.incident_id, "kind": "repeat"}
    text = text_of(message)
    assert (
        ":repeat: Seen *7 times*, last at 2025-01-28 10:00:30 UTC (first at 2025-01-28 10:00:00 UTC)." in text
    )
    assert "Now: quarantined" in text
    assert (
        message.text == "Shell in serving pod in ml/triton-0: seen 7 times, last at 2025-01-28 10:00:30 UTC"
    )
    # The top-level message shows the count too once there are repeats, as of when it was true.
    assert (
        "Seen 7 times as of 2025-01-28 10:00:30 UTC (first 2025-01-28 10:00:00 UTC)"
        " · later repeats are counted in the thread"
    ) in text_of(render_incident(report))


def test_maximal_alert_stays_within_slack_limits() -> None:
    fields: dict[str, Any] = {
        **{name: "&<" * (MAX_FIELD_VALUE_CHARS // 2) for name in BASE_FIELDS},
        **{f"custom.field{i}": "`" * MAX_FIELD_VALUE_CHARS for i in range(200)},
    }
    alert = make_alert(
        fields,
        rule="&" * MAX_RULE_CHARS,
        output="<" * MAX_OUTPUT_CHARS,
        hostname="h" * 253,
        tags=tuple(f"tag{i}" * 40 for i in range(64)),
    )
    leaky = ActionOutcome(
        "quarantine", OutcomeStatus.LEAKY, "&" * 5000, leaky_policies=tuple("p" * 250 for _ in range(100))
    )
    decision = make_decision(withheld=tuple("<" * 1000 for _ in range(50)), unverified=True)
    message = render_incident(
        make_report(
            alert=alert,
            decision=decision,
            outcomes=(leaky,) * 20,
            verification=Verification(VerificationStatus.UNVERIFIED, "&" * 3000),
        )
    )
    assert_valid(message)
    assert len(header_of(message)) <= HEADER_LIMIT
    assert "(truncated; the full record is in `serving-guard audit`)" in text_of(message)
    assert_valid(render_repeat(make_report(alert=alert, count=10**9)))


# ---- the property: hostile alert text never becomes Slack markup ----------------------------

HOSTILE_PIECES = st.sampled_from(
    [
        "<!channel>",
        "<!here>",
        "<!everyone>",
        "<@U0123ABCD>",
        "<#C0123ABCD>",
        "<!subteam^S123>",
        "<https://evil.example/x|click here>",
        "&amp;",
        "&lt;",
        "&",
        "<",
        ">",
        "`",
        "```",
        "@channel",
        "@here",
        "*bold*",
        "\n",
        "\u202e",
        ":skull:",
    ]
)
HOSTILE_TEXT = st.lists(st.one_of(HOSTILE_PIECES, st.text(max_size=5)), max_size=8).map("".join)
NON_EMPTY_HOSTILE = HOSTILE_TEXT.filter(lambda s: bool(s.strip()) and "\x00" not in s)


def benign_twin(text: str) -> str:
    """Same length, nothing special: renders with exactly our own markup."""
    return "x" * len(text)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rule=NON_EMPTY_HOSTILE,
    values=st.lists(HOSTILE_TEXT, min_size=len(BASE_FIELDS) + 6, max_size=len(BASE_FIELDS) + 6),
    output=HOSTILE_TEXT.filter(lambda s: "\x00" not in s),
    hostname=NON_EMPTY_HOSTILE,
    unverified=st.booleans(),
)
def test_hostile_alert_text_never_becomes_markup(
    rule: str, values: list[str], output: str, hostname: str, unverified: bool
) -> None:
    def render(twin: bool) -> SlackMessage:
        def t(text: str) -> str:
            return benign_twin(text) if twin else text

        names = [*BASE_FIELDS, "fd.sip", "proc.exepath", "custom.a", "user.uid", "fd.l4proto", "fd.cip"]
        fields = {name: t(value) for name, value in zip(names, values, strict=True) if value}
        reason = t(values[0]) or "mismatch"
        outcome = ActionOutcome(
            "quarantine",
            OutcomeStatus.LEAKY,
            t(values[1]),
            leaky_policies=(t(values[2]) or "p",),
        )
        decision = make_decision(
            unverified=unverified, withheld=(t(values[3]) or "w",), policy=t(values[4]) or "policy"
        )
        report = make_report(
            alert=make_alert(fields, rule=t(rule), output=t(output), hostname=t(hostname), tags=(t(rule),)),
            decision=decision,
            outcomes=(outcome,),
            verification=Verification(
                VerificationStatus.UNVERIFIED if unverified else VerificationStatus.VERIFIED, reason
            ),
        )
        return render_incident(report)

    hostile = render(twin=False)
    benign = render(twin=True)
    assert_valid(hostile)
    header = header_of(hostile)
    for text in [hostile.text, header, *visible_text(hostile.blocks_json()[1:]).split("\n")]:
        assert "<" not in text and ">" not in text, text
        assert "@channel" not in text.lower() and "@here" not in text.lower()
        # mrkdwn: every & starts an entity. The header is plain_text, shown as it is: no entities.
        assert text is header or not RAW_AMP.search(text), text
    assert "\n" not in header
    if not header.endswith("…"):
        assert header.count("&") == rule.count("&")  # each as it is, not an entity
    # Code spans and blocks are exactly ours: hostile text adds no backtick anywhere.
    assert visible_text(hostile.blocks_json()).count("`") == visible_text(benign.blocks_json()).count("`")
    assert hostile.text.count("`") == 0
    # And every alert backtick is still visible as its look-alike (unless the header's length cut it).
    if "`" in rule and not header_of(hostile).endswith("…"):
        assert BACKTICK_LOOKALIKE in header_of(hostile)


def test_priority_icons_follow_severity() -> None:
    icons = {
        priority: header_of(render_incident(make_report(alert=make_alert(priority=priority)))).split(" ")[0]
        for priority in Priority
    }
    assert icons[Priority.CRITICAL] == ":rotating_light:"
    assert icons[Priority.WARNING] == ":warning:"
    assert icons[Priority.NOTICE] == ":large_blue_circle:"


def test_a_predicted_or_held_back_quarantine_carries_the_command_to_do_it_by_hand() -> None:
    """On-call acts on the responder's prediction, or past the circuit breaker, with one command
    that records who and why, under this incident."""
    command = (
        "serving-guard quarantine --namespace ml triton-0 --incident inc-0123456789abcdef0123"
        " --reason '&lt;why&gt;' --by '&lt;you&gt;'"
    )
    trial = make_decision(dry_run=True, dry_run_by=DRY_RUN_BY_POLICY)
    predicted = ActionOutcome("quarantine", OutcomeStatus.DRY_RUN, "would label the pod")
    text = text_of(render_incident(make_report(decision=trial, outcomes=(predicted,))))
    assert (
        "*To quarantine it by hand* once you have looked (run with the responder's `--config`, where"
        " its journal is: it is recorded under this incident, and a reply here says what it did):"
        f"\n```{command}```"
    ) in text
    # The running responder names its config file in the command itself.
    report = make_report(decision=trial, outcomes=(predicted,))
    named = text_of(render_incident(report, form=CommandForm("/etc/sg/config.yaml")))
    assert f"```{command} --config /etc/sg/config.yaml```" in named
    assert "run where the responder runs, e.g. `kubectl exec` into its pod" in named
    held = make_decision(actions=(ActionName.NOTIFY,), withheld=("circuit breaker open",), breaker_open=True)
    assert command in text_of(render_incident(make_report(decision=held)))
    # Not where the pod is quarantined already, nor for an alert that failed verification, nor
    # where a guardrail that a person's command would meet too held it back.
    assert command not in text_of(render_incident(make_report(outcomes=(quarantined(),))))
    forged = make_decision(actions=(ActionName.NOTIFY,), unverified=True, breaker_open=True)
    assert command not in text_of(render_incident(make_report(decision=forged)))
    opt_in = make_decision(actions=(ActionName.NOTIFY,), withheld=("namespace ml is not opted in",))
    assert "quarantine it by hand" not in text_of(render_incident(make_report(decision=opt_in)))
    # A policy that cuts one way: the command does what was predicted.
    egress = dataclasses.replace(trial, isolate="egress")
    assert "--incident inc-0123456789abcdef0123 --isolate egress --reason '&lt;why&gt;' --by" in text_of(
        render_incident(make_report(decision=egress, outcomes=(predicted,)))
    )


def test_a_workload_threads_root_counts_its_replies_and_a_reply_names_the_workload() -> None:
    report = make_report(outcomes=(quarantined(),))
    replies: list[str | None] = ["quarantined", "withheld", "quarantined", "leaky", None, "dry_run"]
    replies += ["blocked", THREAD_KEPT_OUT]
    root = render_incident(report, thread_replies=replies)
    assert_valid(root)
    assert (
        ":busts_in_silhouette: The same rule on *8 more pods* of `Deployment/triton`, in this thread:"
        " 2 quarantined, 1 withheld, 1 LEAKY, 1 notified only, 1 dry-run, 1 blocked, 1 no block made."
        in text_of(root)
    )
    one = text_of(render_incident(report, thread_replies=["failed"]))
    assert "*1 more pod* of `Deployment/triton`, in this thread: 1 FAILED." in one
    reply = render_incident(report, in_workload_thread=True)
    assert ":link: The same rule on another pod of `Deployment/triton`." in text_of(reply)
    assert "in this thread" not in text_of(render_incident(report))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actor=NON_EMPTY_HOSTILE, reason=NON_EMPTY_HOSTILE, policy=NON_EMPTY_HOSTILE, leaky=st.booleans())
def test_a_by_hand_reply_says_who_did_what_and_why_and_never_becomes_markup(
    actor: str, reason: str, policy: str, leaky: bool
) -> None:
    """What a person typed (--by, --reason) reaches Slack as text, and the reply fits its limits."""

    def render(twin: bool) -> SlackMessage:
        def t(text: str) -> str:
            return benign_twin(text) if twin else text

        status = OutcomeStatus.LEAKY if leaky else OutcomeStatus.QUARANTINED
        outcome = ActionOutcome(
            "quarantine",
            status,
            leaky_policies=(t(policy),) if leaky else (),
            finished_ns=1_700_000_000_000_000_000,
            extra={"reason": t(reason)},
        )
        return render_by_hand("inc-0123456789abcdef0123", t(actor), "ml-serving", "vllm-0", outcome, 7)

    hostile, benign = render(twin=False), render(twin=True)
    assert_valid(hostile)
    assert hostile.kind is MessageKind.BY_HAND
    assert hostile.metadata() == {
        "event_type": EVENT_TYPE,
        "event_payload": {"incident_id": "inc-0123456789abcdef0123", "kind": "by_hand", "action_id": 7},
    }
    for text in [hostile.text, *visible_text(hostile.blocks_json()).split("\n")]:
        assert "<" not in text and ">" not in text, text
        assert "@channel" not in text.lower() and "@here" not in text.lower()
    assert visible_text(hostile.blocks_json()).count("`") == visible_text(benign.blocks_json()).count("`")
    shown = visible_text(benign.blocks_json())
    if leaky:
        assert ":warning:" in shown and "tried to quarantine `ml-serving/vllm-0` by hand" in shown
        assert "LEAKY quarantine: still allowed by" in shown and "*not* proven isolated" in shown
    else:
        assert ":raised_hand:" in shown and "quarantined `ml-serving/vllm-0` by hand: quarantined." in shown
    assert "Reason: " in shown and "Incident `inc-0123456789abcdef0123` · 2023-11-14 22:13:20 UTC" in shown


def test_an_action_by_hand_is_said_in_the_incidents_message_with_who_and_why() -> None:
    """Once a person acted, the incident's message says so, and offers what is left to do."""
    by_carol = {"by_hand": "carol", "reason": "the trial predicted it"}
    predicted = ActionOutcome("quarantine", OutcomeStatus.DRY_RUN)
    decision = make_decision(dry_run=True)
    by_hand = quarantined(extra=by_carol)
    text = text_of(render_incident(make_report(decision=decision, outcomes=(predicted, by_hand))))
    assert ":raised_hand: By hand, by *carol*: the trial predicted it." in text
    assert "To quarantine it by hand" not in text
    assert "serving-guard release --namespace ml triton-0 --incident" in text
    # Labelled is the latest word on the label: quarantined, released, quarantined again by hand.
    released = ActionOutcome("release", OutcomeStatus.RELEASED, extra={"by_hand": "bob", "reason": "ok"})
    again = render_incident(make_report(outcomes=(quarantined(), released, by_hand)))
    assert "serving-guard release --namespace" in text_of(again)
    assert "serving-guard release --namespace" not in text_of(
        render_incident(make_report(outcomes=(quarantined(), released)))
    )
    # A by-hand quarantine whose policy could not be made is retried by hand, not by a repeat.
    failed = ActionOutcome(
        "quarantine", OutcomeStatus.FAILED, "no policy", extra={"labelled": True, **by_carol}
    )
    assert "run the command again" in text_of(render_incident(make_report(outcomes=(failed,))))


def headline_of(message: SlackMessage) -> str:
    """The section under the header: what was done about the pod, latest state first."""
    return str(message.blocks[1]["text"]["text"])


def test_after_a_release_by_hand_the_message_leads_with_the_release_and_says_why_once() -> None:
    reason = "investigated, image rebuilt"
    blocked = ActionOutcome(
        "block_destination",
        OutcomeStatus.BLOCKED,
        "blocked egress to 203.0.113.10 (fd.sip) with NetworkPolicy serving-guard-block-0a1b; all other"
        " egress kept",
        extra={"address": "203.0.113.10", "network_policy": "serving-guard-block-0a1b", "labelled": True},
    )
    released = ActionOutcome(
        "release",
        OutcomeStatus.RELEASED,
        release_note("root@vm", reason) + "; lifted its destination block",
        extra={"by_hand": "root@vm", "reason": reason},
    )
    message = render_incident(make_report(outcomes=(quarantined(), blocked, released)))
    assert_valid(message)
    assert headline_of(message) == (
        ":unlock: *Released*: lifted its destination block. :raised_hand: By hand, by *root@vm*:"
        f" {reason}.\n_Before that:_\n• quarantined\n• blocked egress to 203.0.113.10"
    )
    text = text_of(message)
    assert text.count(reason) == 1
    assert "cut off" not in text and "other egress is unchanged" not in text
    assert "serving-guard release" not in text  # nothing left to release
    # The thread's reply says who and why once each, and "released" once.
    reply = visible_text(render_by_hand("inc-1", "root@vm", "ml", "triton-0", released, 3).blocks_json())
    assert reply.startswith(
        ":raised_hand: *root@vm* released `ml/triton-0` by hand: lifted its destination block."
        f"\nReason: {reason}\n"
    )
    assert reply.count(reason) == 1 and reply.count("released") == 1


def test_a_quarantine_by_hand_past_the_circuit_breaker_leads_and_the_hold_is_history() -> None:
    breaker = (
        "circuit breaker open: 2 quarantines in the last 300s; no pod is quarantined until the window passes"
    )
    held = make_decision(actions=(ActionName.NOTIFY,), withheld=(breaker,), breaker_open=True)
    by_alice = quarantined(extra={"by_hand": "alice", "reason": "looked at it"})
    message = render_incident(make_report(decision=held, outcomes=(by_alice,)))
    assert_valid(message)
    headline = headline_of(message)
    assert headline == (
        ":lock: *Quarantined*: the deny-all NetworkPolicy refuses the pod's traffic both ways"
        " (connections already open end only where the network plugin cuts them)."
        " :raised_hand: By hand, by *alice*: looked at it.\n_Before that:_\n• quarantine withheld: " + breaker
    )
    assert ":pause_button:" not in text_of(message) and "To quarantine it by hand" not in text_of(message)
    # Until a person acts, the hold is the news.
    assert headline_of(render_incident(make_report(decision=held))).startswith(
        ":pause_button: *quarantine withheld*, because:\n• circuit breaker open"
    )


def test_only_what_an_action_by_hand_replaces_becomes_history() -> None:
    """A block by hand leaves the quarantine in force (it leads still), a failed quarantine by hand
    changed nothing (the earlier one stands), and a re-quarantine after a release leads again."""
    by_carol = {"by_hand": "carol", "reason": "exfil"}
    block = ActionOutcome(
        "block_destination",
        OutcomeStatus.BLOCKED,
        extra={"address": "203.0.113.7", "labelled": True, **by_carol},
    )
    both = headline_of(render_incident(make_report(outcomes=(quarantined(), block))))
    assert both.startswith(":lock: *Quarantined*") and ":no_entry: *Blocked* egress to `203.0.113.7`" in both
    assert "_Before that:_" not in both
    failed = ActionOutcome("quarantine", OutcomeStatus.FAILED, "forbidden by RBAC", extra=by_carol)
    still = headline_of(render_incident(make_report(outcomes=(quarantined(), failed))))
    assert still.startswith(":lock: *Quarantined*") and "_Before that:_" not in still
    released = ActionOutcome(
        "release", OutcomeStatus.RELEASED, release_note("bob", "ok"), extra={"by_hand": "bob", "reason": "ok"}
    )
    again = headline_of(
        render_incident(make_report(outcomes=(quarantined(), released, quarantined(extra=by_carol))))
    )
    assert again == (
        ":lock: *Quarantined*: the deny-all NetworkPolicy refuses the pod's traffic both ways"
        " (connections already open end only where the network plugin cuts them)."
        " :raised_hand: By hand, by *carol*: exfil.\n_Before that:_\n• quarantined\n• released by bob: ok"
    )
    # Whatever blocks the pod after a release ends the release's word, the responder's own too.
    later = ActionOutcome(
        "block_destination", OutcomeStatus.BLOCKED, extra={"address": "203.0.113.8", "labelled": True}
    )
    reblocked = headline_of(render_incident(make_report(outcomes=(quarantined(), released, later))))
    assert reblocked.startswith(":no_entry: *Blocked* egress to `203.0.113.8`")
    assert reblocked.endswith("_Before that:_\n• quarantined\n• released by bob: ok")


def test_a_block_that_found_its_address_kept_out_says_no_block_was_made() -> None:
    """Under a quarantine no block policy is made: Slack says so and why, and never that the pod
    keeps the rest of its traffic (it keeps none of it)."""
    kept_out = ActionOutcome(
        "block_destination",
        OutcomeStatus.BLOCKED,
        "203.0.113.10 (fd.sip) is already out of reach: a quarantine cuts the pod's egress (NetworkPolicy"
        " serving-guard-quarantine); no block policy was made",
        extra={
            "address": "203.0.113.10",
            "network_policy": "serving-guard-block-0a1b",
            "kept_out": "quarantine",
            "kept_out_by": ["serving-guard-quarantine"],
        },
    )
    message = render_incident(make_report(decision=BLOCK_DECISION, outcomes=(quarantined(), kept_out)))
    assert_valid(message)
    assert headline_of(message) == (
        ":lock: *Quarantined*: the deny-all NetworkPolicy refuses the pod's traffic both ways"
        " (connections already open end only where the network plugin cuts them).\n"
        ":no_entry: *No block made*: `203.0.113.10` is already out of the pod's reach: a quarantine cuts"
        " all of the pod's egress (`serving-guard-quarantine`)."
    )
    text = text_of(message)
    assert "*Blocked*" not in text and "keeps the rest" not in text and "egress is unchanged" not in text
    assert message.text.endswith(
        ": no block made: 203.0.113.10 is already out of reach (a quarantine cuts the pod's egress)"
    )
    by_hand = dataclasses.replace(kept_out, extra={**kept_out.extra, "by_hand": "carol", "reason": "exfil"})
    reply = visible_text(render_by_hand("inc-1", "carol", "ml", "triton-0", by_hand, 3).blocks_json())
    assert (
        ":raised_hand: *carol* asked to block egress for `ml/triton-0` by hand: no block made: 203.0.113.10"
        " is already out of reach (a quarantine cuts the pod's egress)." in reply
    )


BLOCK_DECISION = make_decision(
    policy="block-egress-destination",
    actions=(ActionName.NOTIFY, ActionName.BLOCK_DESTINATION),
    requested=(ActionName.NOTIFY, ActionName.BLOCK_DESTINATION),
)


@pytest.mark.parametrize(
    ("outcome", "expected", "fallback", "release"),
    [
        (
            ActionOutcome(
                "block_destination",
                OutcomeStatus.BLOCKED,
                "blocked egress to 203.0.113.7 (fd.sip) with NetworkPolicy serving-guard-block-0a1b2c3d4e5f",
                extra={
                    "address": "203.0.113.7",
                    "network_policy": "serving-guard-block-0a1b2c3d4e5f",
                    "labelled": True,
                },
            ),
            [":no_entry: *Blocked* egress to `203.0.113.7`: the pod's other egress is unchanged"],
            "blocked egress to 203.0.113.7",
            True,
        ),
        (
            ActionOutcome(
                "block_destination",
                OutcomeStatus.BLOCKED,
                "203.0.113.7 (fd.sip) is already out of reach: the pod's egress is restricted by"
                " egress-dns-only, none of which allows it; nothing was changed",
                extra={
                    "address": "203.0.113.7",
                    "network_policy": "serving-guard-block-0a1b2c3d4e5f",
                    "kept_out": "policies",
                    "kept_out_by": ["egress-dns-only"],
                },
            ),
            [
                ":no_entry: *No block made*: `203.0.113.7` is already out of the pod's reach: the pod's"
                " egress is restricted by `egress-dns-only`, none of which allows it."
            ],
            "no block made: 203.0.113.7 is already out of reach (other NetworkPolicies restrict the"
            " pod's egress)",
            False,  # nothing was put on the pod: nothing to release
        ),
        (
            ActionOutcome(
                "block_destination",
                OutcomeStatus.LEAKY,
                "203.0.113.7 (fd.sip) is allowed by allow-https-out, which restrict the pod's egress",
                leaky_policies=("allow-https-out",),
                extra={"address": "203.0.113.7", "network_policy": "serving-guard-block-0a1b2c3d4e5f"},
            ),
            [
                ":warning: *Block of `203.0.113.7` NOT in force*: still allowed by `allow-https-out`",
                "quarantining its egress cuts it whatever other policies allow",
            ],
            "LEAKY block of 203.0.113.7: still allowed by allow-https-out",
            False,
        ),
        (
            ActionOutcome(
                "block_destination",
                OutcomeStatus.WITHHELD,
                "nothing to block: fd.sip 10.96.0.10 is not a public address",
            ),
            [":pause_button: *block_destination withheld*: nothing to block: fd.sip 10.96.0.10"],
            "withheld: nothing to block",
            False,
        ),
    ],
    ids=["blocked", "already-out-of-reach", "leaky", "withheld"],
)
def test_a_destination_block_is_said_with_its_address_and_how_to_lift_it(
    outcome: ActionOutcome, expected: list[str], fallback: str, release: bool
) -> None:
    message = render_incident(make_report(decision=BLOCK_DECISION, outcomes=(outcome,)))
    assert_valid(message)
    text = text_of(message)
    for line in expected:
        assert line in text, line
    assert fallback in message.text
    assert ("serving-guard release --namespace ml triton-0" in text) is release
    # A block is no quarantine: no quarantine command, no "quarantined".
    assert "serving-guard quarantine" not in text and "Quarantined" not in text


def test_a_predicted_block_carries_the_command_to_block_by_hand_until_it_is_done() -> None:
    predicted = ActionOutcome(
        "block_destination",
        OutcomeStatus.DRY_RUN,
        "would block egress to 203.0.113.7 (fd.sip) with NetworkPolicy serving-guard-block-0a1b2c3d4e5f",
        extra={"address": "203.0.113.7", "network_policy": "serving-guard-block-0a1b2c3d4e5f"},
    )
    decision = dataclasses.replace(BLOCK_DECISION, dry_run_by=DRY_RUN_BY_POLICY)
    report = make_report(decision=decision, outcomes=(predicted,))
    text = text_of(render_incident(report))
    command = (
        "serving-guard block --namespace ml triton-0 --address 203.0.113.7"
        f" --incident {report.incident_id} --reason '&lt;why&gt;'"
    )
    assert "*To block it by hand* once you have looked" in text and command in text
    # A prediction that other policies decide either way offers no command.
    decided = dataclasses.replace(
        predicted, detail="203.0.113.7 (fd.sip) is already out of reach: its egress is restricted by x"
    )
    assert make_report(decision=decision, outcomes=(decided,)).block_command() is None
    assert "To quarantine it by hand" not in text and "serving-guard release" not in text
    # Done by hand: the command gives way to the release.
    by_hand = ActionOutcome(
        "block_destination",
        OutcomeStatus.BLOCKED,
        "blocked egress to 203.0.113.7 (--address)",
        extra={"address": "203.0.113.7", "labelled": True, "by_hand": "carol", "reason": "exfil"},
    )
    done = text_of(render_incident(make_report(decision=decision, outcomes=(predicted, by_hand))))
    assert "To block it by hand" not in done and "serving-guard release --namespace ml triton-0" in done
    assert ":raised_hand: By hand, by *carol*: exfil." in done
    # The thread's reply.
    reply = visible_text(
        render_by_hand(report.incident_id, "carol", "ml", "triton-0", by_hand, 3).blocks_json()
    )
    assert (
        ":raised_hand: *carol* blocked egress for `ml/triton-0` by hand: blocked egress to 203.0.113.7."
        in reply
    )
    leaky = dataclasses.replace(by_hand, status=OutcomeStatus.LEAKY, leaky_policies=("allow-https-out",))
    reply = visible_text(
        render_by_hand(report.incident_id, "carol", "ml", "triton-0", leaky, 4).blocks_json()
    )
    assert "tried to block a destination for `ml/triton-0` by hand" in reply
    assert "LEAKY block of 203.0.113.7: still allowed by allow-https-out" in reply
    assert "proven isolated" not in reply


def test_a_host_network_pod_is_said_not_isolated_with_what_to_do() -> None:
    """No NetworkPolicy holds a host-network pod: "not proven" would understate it."""
    outcome = ActionOutcome(
        "quarantine",
        OutcomeStatus.LEAKY,
        "NOT isolated: NetworkPolicies cannot hold a host-network pod; next: cordon its node (kubectl"
        " cordon node-1), then delete or evict the pod (kubectl -n ml delete pod triton-0)",
        extra={"not_isolated": "host_network", "labelled": True},
    )
    headline = headline_of(render_incident(make_report(outcomes=(outcome,))))
    assert headline.startswith(
        ":rotating_light: *NOT isolated*: NetworkPolicies cannot hold a host-network pod (it shares its"
        " node's network), so the deny-all does nothing for it. Next: cordon its node (kubectl cordon"
        " node-1), then delete or evict the pod (kubectl -n ml delete pod triton-0). The quarantine label"
        " stays on as the record; `serving-guard release` lifts it."
    )
    assert "not proven" not in headline
