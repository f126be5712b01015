"""An incident's key takes a container id as the pod check does (scheme and case aside, never cut
shorter), and a pod or namespace name with a trailing newline is no valid name."""

from __future__ import annotations

import pytest

from responder.alert_json import alert_from_mapping
from responder.cluster.enrich import valid_name
from responder.incident import IncidentKey
from simulators.falco_json import falco_alert
from simulators.seed import SeededPod

POD = SeededPod(
    namespace="ml-serving",
    name="vllm-0",
    node="worker-3",
    container="vllm",
    image="vllm/vllm-openai:v0.5.0",
    container_id="0123456789ab" + "c" * 52,
    labels={"app": "vllm"},
)


def key_with_container(container_id: str) -> IncidentKey:
    alert = falco_alert(POD, "Shell in serving pod", "Notice", "shell", {"proc.name": "sh"})
    alert["output_fields"]["container.id"] = container_id
    return IncidentKey.of(alert_from_mapping(alert))


@pytest.mark.parametrize(
    "spelling",
    [
        "0123456789AB",
        "containerd://0123456789ab",
        "CRI-O://0123456789AB",
    ],
)
def test_the_spellings_of_one_container_id_key_one_incident(spelling: str) -> None:
    assert key_with_container(spelling) == key_with_container("0123456789ab")
    assert key_with_container(spelling).digest() == key_with_container("0123456789ab").digest()


@pytest.mark.parametrize("longer", ["0123456789ab0", "0123456789ab" + "c" * 52, "0123456789abzz"])
def test_an_id_longer_than_twelve_keys_its_own_incident(longer: str) -> None:
    # The pod check compares every character given: a forged id of the real 12 plus more must not
    # key the incident the genuine 12-character alert folds into.
    assert key_with_container(longer) != key_with_container("0123456789ab")
    assert key_with_container("containerd://" + longer.upper()) == key_with_container(longer)


def test_another_container_keys_another_incident() -> None:
    assert key_with_container("0123456789ac") != key_with_container("0123456789ab")


@pytest.mark.parametrize("name", ["vllm-0\n", "vllm-0\r\n", "\nvllm-0", "Vllm-0", ""])
def test_a_name_with_a_newline_or_capitals_is_not_valid(name: str) -> None:
    assert not valid_name(name)
    assert valid_name("vllm-0")
