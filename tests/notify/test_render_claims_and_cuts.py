"""Rendering: an alert naming a pod the cluster does not have reads as a possible forgery; one
over-long line never wipes out the lines after it; a message Slack refuses the blocks of still
says what on-call needs as text alone."""

from __future__ import annotations

import dataclasses

from responder.actions.outcome import OutcomeStatus
from responder.cluster.verify import Verification, VerificationStatus
from responder.config import ActionName
from responder.incident import CommandForm, IncidentReport
from responder.notify.blocks import SECTION_LIMIT
from responder.notify.render import render_incident
from responder.sender import Proof, Sender
from tests.notify.slack_fixtures import (
    BASE_FIELDS,
    make_alert,
    make_decision,
    make_report,
    quarantined,
    visible_text,
)

_MORE = "(truncated"


def _pod_not_found_report() -> IncidentReport:
    fields = {**BASE_FIELDS, "k8s.pod.name": "triton-7f9c-x2"}
    sender = Sender(address="10.0.3.7:51234", proof=Proof.CERTIFICATE, names=("falco-node-3",))
    alert = dataclasses.replace(make_alert(fields), sender=sender)
    return make_report(
        alert=alert,
        no_pod=True,
        verification=Verification(VerificationStatus.POD_NOT_FOUND),
        decision=make_decision(actions=(ActionName.NOTIFY,), withheld=("pod not found (already gone?)",)),
    )


def test_an_alert_naming_a_pod_that_does_not_exist_reads_as_a_possible_forgery() -> None:
    message = render_incident(_pod_not_found_report())
    header = message.blocks[0]["text"]["text"]
    text = visible_text(message.blocks_json())
    assert header.startswith(":no_entry: UNVERIFIED")
    assert "may be forged" in text and "cannot be verified" in text
    assert "*Pod (as the alert claims)*" in text
    assert "falco-node-3" in text and "10.0.3.7" in text  # the sender is named
    assert message.text.startswith("UNVERIFIED alert")


def test_a_leaky_line_listing_many_policies_keeps_its_status_and_the_lines_after_it() -> None:
    policies = tuple(f"allow-from-team-{i:02d}-monitoring-and-ingress-gateway-traffic" for i in range(45))
    report = make_report(outcomes=(quarantined(status=OutcomeStatus.LEAKY, leaky_policies=policies),))
    headline = render_incident(report).blocks[1]["text"]["text"]
    assert len(headline) <= SECTION_LIMIT
    assert "*LEAKY quarantine*" in headline
    assert "allow-from-team-00-" in headline and "and 35 more" in headline
    assert "Fix them" in headline  # the advice after the list
    assert _MORE not in headline


def test_an_over_long_line_is_cut_inside_and_later_lines_stay() -> None:
    # A withheld reason (alert-supplied words) far over the section: cut, not dropped with all after it.
    reasons = ("word " * 700, "second reason")
    report = make_report(
        decision=make_decision(actions=(ActionName.NOTIFY,), withheld=reasons),
        outcomes=tuple(quarantined(status=OutcomeStatus.LEAKY, detail=f"leak {i} " * 60) for i in range(8)),
    )
    headline = render_incident(report).blocks[1]["text"]["text"]
    assert len(headline) <= SECTION_LIMIT
    assert headline.count("*LEAKY quarantine*") == 8  # every line keeps its status word
    assert "second reason" in headline
    assert " …" in headline


def test_the_text_alone_says_what_on_call_needs() -> None:
    report = make_report(outcomes=(quarantined(),))
    alone = render_incident(report, form=CommandForm("/etc/sg/config.yaml")).without_blocks()
    assert alone.blocks == ()
    text = alone.text
    assert "Shell in serving pod" in text and "`triton-0`" in text and "namespace `ml`" in text
    assert "quarantined" in text.lower()
    assert "serving-guard release --namespace ml triton-0" in text and "--config /etc/sg/config.yaml" in text
    assert alone.metadata() == render_incident(report).metadata()  # found again after a crash
    # The whole record: a command that runs as given (`audit --incident` alone is refused: no config).
    assert (
        f"```serving-guard audit --incident {report.incident_id} --format incidents"
        " --config /etc/sg/config.yaml```"
    ) in text


def test_the_text_alone_of_a_possible_forgery_says_so() -> None:
    alone = render_incident(_pod_not_found_report()).without_blocks()
    assert (
        "UNVERIFIED" in alone.text and "may be forged" in alone.text and "as the alert claims" in alone.text
    )
