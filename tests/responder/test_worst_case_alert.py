"""The HTTP input takes the largest alert the shipped rules can make (an attacker in the pod must not be
able to make its own alert too large to be taken), and a larger body is refused loudly."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from responder.cluster.api import KubeGateway
from responder.config import HttpInput
from responder.rulespack.alert_size import (
    FIELD_BOUNDS,
    HOSTNAME_BYTES,
    output_fields,
    worst_case_alert_bytes,
)
from responder.rulespack.expand import load_paths
from responder.rulespack.rulesfile import RuleItem, read_rules_file
from responder.service import Responder
from simulators.cluster_emulator import RunningCluster
from simulators.seed import SeededPod
from tests.helpers import Records, responder_config

Seeded = tuple[RunningCluster, dict[str, SeededPod], str]
PACK = Path(__file__).parents[2] / "rules" / "serving_guard_rules.yaml"
DEFAULT_LIMIT: int = HttpInput.model_fields["max_body_bytes"].default
# The largest, as config.example.yaml, the chart and config.py say (Model artifact tampering).
DOCUMENTED_WORST_CASE = 302_237
# Where it is said, each as "302,237 bytes".
DOCUMENTS = (
    "README.md",
    "responder/config.example.yaml",
    "responder/config.py",
    "deploy/chart/serving-guard/values.yaml",
    "deploy/chart/serving-guard/values.schema.json",
)


def shipped_rules() -> list[RuleItem]:
    return [item for item in read_rules_file(str(PACK)).items if isinstance(item, RuleItem)]


def worst_value(field: str) -> str | int:
    """A value of the field at its cap: control bytes where the attacker chooses them."""
    bound = FIELD_BOUNDS[field]
    if field in ("proc.tty", "fd.sport"):
        return int("9" * bound.max_bytes)
    return ("\x01" if bound.chosen_by_attacker else "a") * bound.max_bytes


def worst_alert(rule: RuleItem) -> bytes:
    """The rule's alert as Falco's JSON output would carry it, every field at its cap."""
    fields = {field: worst_value(field) for field in output_fields(rule.get("output"))}
    output = rule.get("output")
    for field in sorted(fields, key=len, reverse=True):  # proc.pcmdline before proc.cmdline's prefix
        output = output.replace(f"%{field}", str(fields[field]))
    payload: dict[str, Any] = {
        "hostname": "h" * HOSTNAME_BYTES,
        "output": f"2025-01-28T10:00:00.123456789+0000: Informational {output}",
        "output_fields": {**fields, "evt.time": 1738058400123456789},
        "priority": "Informational",
        "rule": rule.name,
        "source": "syscall",
        "tags": sorted(rule.get("tags") or ()),
        "time": "2025-01-28T10:00:00.123456789Z",
    }
    return json.dumps(payload, ensure_ascii=False).encode()  # control bytes as \u00XX, as Falco


def test_the_documented_worst_case_is_what_config_check_computes() -> None:
    """The pack as Falco loads it (an output's trailing newline, from a folded `>` block, trimmed),
    as `config check --rules` reports it: 302,237 bytes, and every document says that number."""
    ruleset = load_paths([str(PACK)])
    computed = max(
        worst_case_alert_bytes(rule.name, rule.output, rule.tags) for rule in ruleset.rules.values()
    )
    assert computed == DOCUMENTED_WORST_CASE
    said = f"{DOCUMENTED_WORST_CASE:,} bytes"
    root = PACK.parents[1]
    for document in DOCUMENTS:
        text = " ".join((root / document).read_text(encoding="utf-8").replace("#", " ").split())
        assert said in text, document
        assert not re.search(r"30\d,\d{3} bytes", text.replace(said, "")), document


def test_the_default_body_limit_holds_the_worst_case_alert_of_every_shipped_rule() -> None:
    worst = {
        rule.name: worst_case_alert_bytes(rule.name, rule.get("output"), rule.get("tags") or ())
        for rule in shipped_rules()
    }
    # The outputs as written (a folded block's newline kept): a byte over the pack as loaded at most.
    assert DOCUMENTED_WORST_CASE <= max(worst.values()) <= DOCUMENTED_WORST_CASE + 1
    assert DOCUMENTED_WORST_CASE <= DEFAULT_LIMIT
    # The bound bounds: a body built that way is no larger than it says, and not far under it.
    for rule in shipped_rules():
        size = len(worst_alert(rule))
        assert worst[rule.name] - 2048 <= size <= worst[rule.name], rule.name


async def post(url: str, body: bytes) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.post(f"{url}/v1/alerts", data=body) as response:
        return response.status, await response.json(content_type=None)


@pytest.fixture
async def responder(tmp_path: Path, seeded: Seeded) -> Any:
    config = responder_config(tmp_path, seeded[2])  # the HTTP input with its default body limit
    assert config.inputs.http.max_body_bytes == DEFAULT_LIMIT
    running = Responder(config, KubeGateway.from_config(config.cluster))
    await running.start()
    yield running
    await running.stop()


async def test_the_worst_case_alert_of_every_shipped_rule_is_taken(responder: Responder) -> None:
    for rule in shipped_rules():
        status, answer = await post(responder.http_url or "", worst_alert(rule))
        assert (status, answer.get("status")) == (202, "accepted"), rule.name


async def test_a_body_over_the_limit_is_refused_logged_with_its_size_and_sender_and_counted(
    responder: Responder,
) -> None:
    body = json.dumps({"rule": "r", "output": "x" * DEFAULT_LIMIT}).encode()
    with Records("serving_guard.http", logging.WARNING) as records:
        status, answer = await post(responder.http_url or "", body)
    assert status == 413 and answer["limit_bytes"] == DEFAULT_LIMIT
    assert f"a body of {len(body)} bytes or more" in answer["reason"]
    said = [message for message in records.messages if "413" in message]
    assert len(said) == 1 and "127.0.0.1" in said[0] and f"{len(body)} bytes" in said[0]
    text = responder.metrics.render().decode()
    assert 'serving_guard_alerts_rejected_total{input="http",reason="too_large"} 1.0' in text
