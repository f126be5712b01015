"""The alerts replay sends: Falco's JSON, byte for byte in form, accepted by the responder's own
input validation, following the rules pack's output format, carrying the run's marker."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from responder.alert import parse_time_ns
from responder.alert_json import parse_falco_json
from responder.cli import main
from responder.errors import UserError
from responder.ingest.grpc import alert_from_response
from responder.rulespack.paths import default_pack
from simulators.alerts import (
    TIME_FIELD,
    field_refs,
    load_rule_specs,
    scenario_alerts,
)
from simulators.falco_grpc_server import response_from_falco_json
from simulators.falco_json import falco_bytes
from simulators.identity import (
    forged_identity,
    identity_from_pod,
    image_repository,
    image_tag,
    parse_pod_ref,
)
from simulators.scenario import load_scenarios, marker
from simulators.seed import make_pod, pod_manifest

SCENARIOS = load_scenarios()
SPECS = load_rule_specs(default_pack())
WITH_ALERTS = sorted(s.name for s in SCENARIOS.by_name.values() if s.alerts)
TRITON = make_pod("ml-serving", "triton-0", "worker-1", "triton", "nvcr.io/nvidia/tritonserver:24.05-py3", {})
IDENTITY = identity_from_pod(pod_manifest(TRITON, None))
ISO_PREFIX = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}\+0000: ")


@pytest.mark.parametrize("name", WITH_ALERTS)
def test_alerts_pass_the_responders_input_validation(name: str) -> None:
    scenario = SCENARIOS.by_name[name]
    before = time.time_ns()
    alerts = scenario_alerts(scenario, IDENTITY, "run1234", SPECS)
    assert len(alerts) == len(scenario.alerts)
    times = []
    for item in alerts:
        parsed = parse_falco_json(item.body())
        spec = SPECS[parsed.rule]
        assert parsed.rule == scenario.rule
        assert parsed.priority is spec.priority
        assert parsed.tags == spec.tags
        assert parsed.source == "syscall"
        assert parsed.hostname == "worker-1"
        assert parsed.namespace == "ml-serving" and parsed.pod == "triton-0"
        assert parsed.container_id == TRITON.short_id
        assert parsed.text("container.image.repository") == "nvcr.io/nvidia/tritonserver"
        # Fresh: stamped now, one after the other.
        assert before <= parsed.time_ns <= time.time_ns()
        times.append(parsed.time_ns)
        # The run's marker is in the alert, where the audit trail's run filter looks.
        assert marker("run1234", name) in parsed.output
        assert ISO_PREFIX.match(parsed.output)
        assert parsed.output.split(": ", 1)[1].startswith(f"{spec.priority.label} ")
    assert times == sorted(times) and len(set(times)) == len(times)


@pytest.mark.parametrize("name", WITH_ALERTS)
def test_output_fields_are_exactly_the_rules_fields(name: str) -> None:
    scenario = SCENARIOS.by_name[name]
    for item in scenario_alerts(scenario, IDENTITY, "run1234", SPECS):
        spec = SPECS[item.rule]
        fields: dict[str, Any] = item.alert["output_fields"]
        assert set(fields) == {*field_refs(spec.output), TIME_FIELD}
        assert fields[TIME_FIELD] == item.alert["output"].split(": ", 1)[0]
        # Rendered like Falco: every %field in the output replaced, missing values as <NA>.
        message = item.alert["output"].split(": ", 1)[1]
        assert not re.search(r"%[a-z]", message)
        assert ("<NA>" in message) == any(value is None for value in fields.values())
        assert all(isinstance(value, str | int | bool) or value is None for value in fields.values())


def test_json_bytes_are_falcos_form() -> None:
    scenario = SCENARIOS.by_name["anomalous-egress"]
    item = scenario_alerts(scenario, IDENTITY, "run1234", SPECS)[0]
    body = item.body()
    assert body == falco_bytes(item.alert)
    assert not body.endswith(b"\n") and b": " not in body[:20] and b", " not in body[:40]
    decoded = json.loads(body)
    assert list(decoded) == sorted(decoded)
    assert list(decoded["output_fields"]) == sorted(decoded["output_fields"])
    assert set(decoded) == {
        "hostname",
        "output",
        "output_fields",
        "priority",
        "rule",
        "source",
        "tags",
        "time",
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", decoded["time"])
    assert decoded["output_fields"]["fd.sport"] == 443  # numbers stay numbers
    assert decoded["tags"] == sorted(decoded["tags"])
    # Non-ASCII stays UTF-8, as nlohmann::json dumps it.
    assert falco_bytes({"x": "é"}) == '{"x":"é"}'.encode()


def test_alerts_survive_the_grpc_form() -> None:
    scenario = SCENARIOS.by_name["drift-exec"]
    for item in scenario_alerts(scenario, IDENTITY, "run1234", SPECS):
        via_grpc = alert_from_response(response_from_falco_json(item.alert))
        via_json = parse_falco_json(item.body())
        assert via_grpc.rule == via_json.rule and via_grpc.time_ns == via_json.time_ns
        assert via_grpc.container_id == via_json.container_id
        assert via_grpc.text("proc.cmdline") == via_json.text("proc.cmdline")


def test_without_the_pack_alerts_use_the_scenarios_priority_and_a_generic_output() -> None:
    scenario = SCENARIOS.by_name["shell-in-serving-pod"]
    for item in scenario_alerts(scenario, IDENTITY, "run1234", {}):
        parsed = parse_falco_json(item.body())
        assert parsed.priority is scenario.priority
        assert parsed.tags == tuple(sorted(scenario.tags))
        assert parsed.output.split(": ", 1)[1].startswith("Warning Shell in serving pod (")
        assert "cmdline=sh -c true # sg-run=run1234.shell-in-serving-pod" in parsed.output or (
            "cmdline=bash -c true # sg-run=run1234.shell-in-serving-pod" in parsed.output
        )
        assert parsed.container_id == TRITON.short_id


def test_forged_identity_and_the_tag() -> None:
    forged = forged_identity("ml-serving", "vllm-0", hostname="worker-3")
    again = forged_identity("ml-serving", "vllm-0")
    assert forged.forged and len(forged.container_id) == 12 and forged.container_id != again.container_id
    scenario = SCENARIOS.by_name["shell-in-serving-pod"]
    item = scenario_alerts(scenario, forged, "run1234", SPECS, tag="forged-alert")[0]
    parsed = parse_falco_json(item.body())
    assert parsed.container_id == forged.container_id and parsed.hostname == "worker-3"
    assert "sg-run=run1234.forged-alert" in parsed.output


def test_identity_from_the_api_objects() -> None:
    assert IDENTITY.container_id == TRITON.short_id and IDENTITY.hostname == "worker-1"
    assert image_repository("registry:5000/team/app:1.2@sha256:abc") == "registry:5000/team/app"
    assert image_repository("registry:5000/team/app") == "registry:5000/team/app"
    assert image_repository("vllm/vllm-openai") == "vllm/vllm-openai"
    # The tag as Falco's container.image.tag has it: replayed alerts carry it (review-48b L6).
    assert image_tag("registry:5000/team/app:1.2@sha256:abc") == "1.2"
    assert image_tag("registry:5000/team/app") is None and image_tag("vllm/vllm-openai@sha256:abc") is None
    assert IDENTITY.image_tag == image_tag(TRITON.image) and IDENTITY.image_tag
    shell = SCENARIOS.by_name["shell-in-serving-pod"]
    parsed = parse_falco_json(scenario_alerts(shell, IDENTITY, "run1234", SPECS)[0].body())
    assert parsed.text("container.image.tag") == IDENTITY.image_tag
    assert f"tag={IDENTITY.image_tag} " in parsed.output
    pending = pod_manifest(TRITON, None)
    pending["status"]["containerStatuses"][0].pop("containerID")
    with pytest.raises(UserError, match="triton-0 has no running container with a container id"):
        identity_from_pod(pending)
    with pytest.raises(UserError, match="NAMESPACE/NAME"):
        parse_pod_ref("triton-0")


def test_time_field_is_the_prefix_time() -> None:
    item = scenario_alerts(SCENARIOS.by_name["credential-read"], IDENTITY, "r1234", SPECS)[0]
    stamp = item.alert["output_fields"][TIME_FIELD]
    assert parse_time_ns(stamp.replace("+0000", "Z")) == parse_time_ns(item.alert["time"])


_NOT_RULES = "a rules file must be a YAML sequence of items (- rule: ..., - macro: ...)"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (
            b"- rule: x\n  desc: caf\xe9\n",
            "{path}:2: error: not UTF-8 text: invalid continuation byte (byte 0xe9 at column 12)",
        ),
        (b"- rule: x\n  desc: a\n  desc: b\n", "{path}:3: error: duplicate key 'desc'"),
        (b"# a responder config\njournal:\n  path: /tmp/j.db\n", "{path}:2: error: " + _NOT_RULES),
        (b"rule: x\ndesc: d\n", "{path}:1: error: " + _NOT_RULES),
        (b"- null\n", "{path}:1: error: each item must be a mapping, got null"),
        (
            b"- rule: x\n  desc: d\n  condition: proc.name = sh and (\n  output: o\n  priority: WARNING\n",
            "{path}:3: error: rule 'x': syntax error: expected a '(' token, a field check, or an identifier "
            "(token '<end of condition>')",
        ),
    ],
    ids=["not-utf8", "duplicate-key", "a-config", "top-level-mapping", "null-item", "bad-condition"],
)
def test_a_rules_file_that_does_not_load_is_an_error(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_bytes(content)
    with pytest.raises(UserError) as caught:
        load_rule_specs(path)
    assert str(caught.value) == (
        "the rules do not load (1 error; see `serving-guard rules check`): " + problem.format(path=path)
    )


@pytest.mark.parametrize(
    "command",
    [
        ["replay", "all", "--file", "{out}", "--forge", "--pod", "ml-serving/x-0", "--rules", "{rules}"],
        ["demo", "--rules", "{rules}", "--workdir", "{work}"],
    ],
    ids=["replay", "demo"],
)
def test_replay_and_demo_refuse_a_broken_rules_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rule: x\ndesc: d\n")
    out, work = tmp_path / "out.jsonl", tmp_path / "work"
    argv = [arg.format(out=out, rules=rules, work=work) for arg in command]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err == (
        "serving-guard: error: the rules do not load (1 error; see `serving-guard rules check`): "
        f"{rules}:1: error: {_NOT_RULES}\n"
    )
    assert captured.out == ""
    assert not out.exists()
    assert not work.exists() or not any(work.iterdir())
