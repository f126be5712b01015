"""A value set to null (Helm's way to drop a default) is deleted before the schema runs, so a key the
schema does not require is then absent. The chart must render what the responder takes for it, or
refuse: never a config the responder refuses at start (a crash loop after a green install), nor a
container without a memory limit."""

from __future__ import annotations

from typing import Any

import helm_python
import pytest

from responder.config import ActionName, Isolation, load_config_text
from tests.deploy.deploy_support import NAMESPACE, RELEASE, Case, Rendered, Values, render


def _container(rendered: Rendered) -> dict[str, Any]:
    container: dict[str, Any] = rendered.one("Deployment", RELEASE)["spec"]["template"]["spec"]["containers"][
        0
    ]
    return container


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"policies": None}, lambda c: c.policies == ()),
        ({"defaultActions": None}, lambda c: c.default_actions == (ActionName.NOTIFY,)),
        ({"quarantine": {"isolate": None}}, lambda c: c.quarantine.isolate is Isolation.BOTH),
        # Keys the schema no longer requires, for --reuse-values from releases without them.
        (
            {"journal": {"synchronous": None, "writer": None}},
            lambda c: (c.journal.synchronous, c.journal.writer) == ("full", "process"),
        ),
        ({"guardrails": {"maxBlocks": None}}, lambda c: c.guardrails.max_blocks.count == 20),
        (
            {"blockDestination": {"maxPerPod": None, "ignoreOtherPolicyApis": None}},
            lambda c: c.block_destination.max_per_pod == 32,
        ),
        ({"slack": {"threadByWorkload": None}}, lambda c: c.slack.thread_by_workload is True),
        ({"inputs": {"http": {"maxConnections": None}}}, lambda c: c.inputs.http.max_connections == 1024),
        ({"inputs": {"http": {"auditToken": None}}}, lambda c: c.inputs.http.audit_token is None),
        ({"inputs": {"http": {"drillToken": None}}}, lambda c: c.inputs.http.drill_token is None),
        ({"guardrails": {"enforceDrills": None}}, lambda c: c.guardrails.enforce_drills is False),
    ],
    ids=[
        "policies",
        "defaultActions",
        "quarantine.isolate",
        "journal.synchronous+writer",
        "guardrails.maxBlocks",
        "blockDestination.maxPerPod+ignoreOtherPolicyApis",
        "slack.threadByWorkload",
        "inputs.http.maxConnections",
        "inputs.http.auditToken",
        "inputs.http.drillToken",
        "guardrails.enforceDrills",
    ],
)
def test_a_null_renders_the_default_the_responder_takes(
    chart: helm_python.Chart, values: Values, expected: Any
) -> None:
    rendered = render(chart, Case("null", values))
    config = load_config_text(rendered.config_text(), name="<null>")
    assert expected(config)


def test_the_explicit_empty_default_actions_stay_empty(chart: helm_python.Chart) -> None:
    # Only null takes the default: [] is a choice (alerts no policy matches are journaled only).
    rendered = render(chart, Case("no-default-actions", {"defaultActions": []}))
    assert load_config_text(rendered.config_text()).default_actions == ()


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"resources": None}, "at '': missing property 'resources'"),
        ({"resources": {"limits": None}}, "at '/resources': missing property 'limits'"),
        ({"resources": {"limits": {"memory": None}}}, "at '/resources/limits': missing property 'memory'"),
    ],
)
def test_no_container_without_a_memory_limit(chart: helm_python.Chart, values: Values, where: str) -> None:
    with pytest.raises(helm_python.HelmValuesError) as caught:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert where in str(caught.value), str(caught.value)


def test_the_cpu_limit_may_be_left_out(chart: helm_python.Chart) -> None:
    # Many platforms forbid CPU limits (throttling); the memory limit is what the memory budget needs.
    rendered = render(chart, Case("no-cpu-limit", {"resources": {"limits": {"cpu": None}}}))
    assert _container(rendered)["resources"] == {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"memory": "1536Mi"},
    }
