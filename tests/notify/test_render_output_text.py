"""The alert's output text is the sender's free text, checked against nothing: Slack says so, and
flags where it names the pod, namespace or container otherwise than the fields that were verified
and acted on (review 77, item 7: a sender could show on-call a made-up pod in that line)."""

from __future__ import annotations

from responder.notify.alert_lines import output_disagreements
from responder.notify.render import render_incident
from tests.notify.slack_fixtures import BASE_FIELDS, CONTAINER_ID, make_alert, make_report, visible_text

# As the pack's rules write it (ns=%k8s.ns.name pod=%k8s.pod.name container=%container.id).
HONEST = (
    "10:00:00.123: Critical Shell started in serving pod (shell=/bin/bash ns=ml pod=triton-0"
    f" container={CONTAINER_ID} proc=bash cmdline=bash -i user=root)"
)
DECOY = HONEST.replace("pod=triton-0", "pod=payments-api-0")


def output_section(text: str) -> str:
    blocks = render_incident(make_report(alert=make_alert(output=text))).blocks_json()
    shown = visible_text(blocks)
    return shown[shown.index("*Falco output*") :]


def test_the_output_is_shown_as_the_senders_unchecked_text() -> None:
    section = output_section(HONEST)
    assert section.startswith(
        "*Falco output*, as the sender wrote it (free text, not checked against the fields)"
    )
    assert "disagrees" not in section


def test_an_output_naming_another_pod_than_the_fields_is_flagged_before_it() -> None:
    section = output_section(DECOY)
    warning, block = section.split("```", 1)
    assert (
        ":warning: *The output text disagrees with the alert's fields:* it says `pod=payments-api-0`, but"
        " `k8s.pod.name` (what was verified and acted on) is `triton-0`."
    ) in warning
    assert "payments-api-0" in block  # still shown, as the sender wrote it


def test_labels_falco_writes_and_missing_values() -> None:
    pk = f"... k8s.ns=ml k8s.pod=triton-0 container={CONTAINER_ID}"  # Falco's -pk append_output
    assert output_disagreements(make_alert(output=pk)) == []
    pc = "... container=triton (id=0123456789ab)"  # -pc names the container
    fields = {**BASE_FIELDS, "container.name": "triton"}
    assert output_disagreements(make_alert(fields, output=pc)) == []
    no_pod = {key: value for key, value in BASE_FIELDS.items() if key != "k8s.pod.name"}
    assert output_disagreements(make_alert(no_pod, output="... k8s.pod.name=<NA>")) == []
    assert output_disagreements(make_alert(no_pod, output="... pod=vllm-0")) == [
        ("pod", "vllm-0", "k8s.pod.name", None)
    ]
    assert output_disagreements(make_alert(output=f"k8s.ns.name=prod container.id={CONTAINER_ID}")) == [
        ("k8s.ns.name", "prod", "k8s.ns.name", "ml")
    ]


def test_a_command_lines_own_arguments_are_not_taken_for_labels() -> None:
    cmdline = "kubectl get pods --namespace=kube-system -l pod=x"
    alert = make_alert({**BASE_FIELDS, "proc.cmdline": cmdline}, output=f"{HONEST[:-1]} cmdline={cmdline})")
    assert output_disagreements(alert) == []
