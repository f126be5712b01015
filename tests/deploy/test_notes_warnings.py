"""The chart's NOTES warn of what the rendered objects give away, exactly when they do: cluster-wide pod
`patch` that no admission policy narrows (rbac.admissionPolicy.enabled false with enforcement.scope
cluster), and bearer tokens sent over plain HTTP (inputs.http.tls.mode disabled). And step 2's heading
says what the namespace opt-in does, with it and without it (guardrails.enforceNamespaceLabel empty)."""

from __future__ import annotations

from typing import Any

import helm_python
import pytest
import yaml

from tests.deploy.deploy_support import CASE_IDS, CASES, NAMESPACE, Case, Rendered, render

UNCONFINED = "WARNING: NOTHING NARROWS THE RESPONDER'S CLUSTER-WIDE RIGHTS"
CLEARTEXT = "WARNING: BEARER TOKENS CROSS THE POD NETWORK IN CLEARTEXT (inputs.http.tls.mode=disabled):"
OPT_IN = "2. Opt namespaces in (nothing is quarantined elsewhere):"
NO_OPT_IN = (
    "2. No opt-in (guardrails.enforceNamespaceLabel is empty): every namespace the RBAC reaches is enforced,"
)

NO_ADMISSION = {"rbac": {"admissionPolicy": {"enabled": False}}}
NAMESPACED = {"enforcement": {"scope": "namespaced", "namespaces": ["models"]}}
PLAIN = {"mode": "disabled"}
SIDEKICK = {"falcosidekick": {"allowIngress": True}}


def _render(chart: helm_python.Chart, values: dict[str, Any]) -> Rendered:
    return render(chart, Case("notes", values))


def _flat(notes: str) -> str:
    return " ".join(notes.split())


def _patches_pods_cluster_wide_unconfined(rendered: Rendered) -> bool:
    """What the rendered objects grant: a ClusterRole bound cluster-wide with `patch` on pods, and no
    ValidatingAdmissionPolicy to hold that patch to the quarantine and block labels."""
    if rendered.of_kind("ValidatingAdmissionPolicy"):
        return False
    bound = {b["roleRef"]["name"] for b in rendered.of_kind("ClusterRoleBinding")}
    return any(
        "pods" in rule.get("resources", []) and "patch" in rule.get("verbs", [])
        for role in rendered.of_kind("ClusterRole")
        if role["metadata"]["name"] in bound
        for rule in role.get("rules", [])
    )


def _bearer_tokens_over_plain_http(rendered: Rendered) -> list[str]:
    """The tokens the responder's config takes on an HTTP input that serves no TLS."""
    http = yaml.safe_load(rendered.config_text())["inputs"]["http"]
    if not http["enabled"] or "tls" in http:
        return []
    return [key for key in ("token", "audit_token", "drill_token") if key in http]


# --- Cluster-wide rights with no admission policy -------------------------------------------------


def test_no_admission_policy_with_cluster_scope_warns(chart: helm_python.Chart) -> None:
    rendered = _render(chart, NO_ADMISSION)
    notes = rendered.notes()
    assert _patches_pods_cluster_wide_unconfined(rendered)
    assert UNCONFINED in notes
    flat = _flat(notes)
    assert "patch ANY pod in EVERY namespace (kube-system included), its image and command too" in flat
    assert "create or update any NetworkPolicy there" in flat
    assert "Set enforcement.scope=namespaced with enforcement.namespaces" in flat
    # With the other warnings, before the steps.
    assert notes.index(UNCONFINED) < notes.index("1. Point Falco at it")


@pytest.mark.parametrize(
    "values",
    [
        {},
        NAMESPACED,
        {**NO_ADMISSION, **NAMESPACED},
        {"rbac": {"admissionPolicy": {"enabled": True}}, "enforcement": {"scope": "cluster"}},
    ],
    ids=["defaults", "namespaced", "no-admission-namespaced", "admission-cluster"],
)
def test_no_warning_while_the_admission_policy_or_namespaced_scope_narrows_it(
    chart: helm_python.Chart, values: dict[str, Any]
) -> None:
    rendered = _render(chart, values)
    assert UNCONFINED not in rendered.notes()
    assert not _patches_pods_cluster_wide_unconfined(rendered)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_the_unconfined_warning_matches_the_rendered_rbac(chart: helm_python.Chart, case: Case) -> None:
    for values in (case.values, {**case.values, **NO_ADMISSION}):
        rendered = render(chart, Case(case.name, values, case.namespace))
        assert (UNCONFINED in rendered.notes()) == _patches_pods_cluster_wide_unconfined(rendered), values


# --- Bearer tokens over plain HTTP -----------------------------------------------------------------


def test_plain_http_with_the_senders_token_warns(renders: dict[str, Rendered]) -> None:
    rendered = renders["tls-disabled-token"]
    notes = rendered.notes()
    assert _bearer_tokens_over_plain_http(rendered) == ["token"]
    assert CLEARTEXT in notes
    flat = _flat(notes)
    assert "inputs.http.token: whoever captures the traffic between pods" in flat
    assert "post forged alerts, which quarantine pods" in flat
    assert "inputs.http.auditToken:" not in flat
    assert "fine only where a service mesh encrypts pod-to-pod traffic" in flat
    assert "set inputs.http.tls.mode to certManager or secret" in flat
    assert notes.index(CLEARTEXT) < notes.index("1. Point Falco at it")


def test_plain_http_with_only_the_audit_token_warns_of_it(chart: helm_python.Chart) -> None:
    values = {
        "inputs": {
            "http": {"tls": PLAIN, "allowUnauthenticated": True, "auditToken": {"secretName": "sg-audit"}}
        }
    }
    rendered = _render(chart, values)
    assert _bearer_tokens_over_plain_http(rendered) == ["audit_token"]
    flat = _flat(rendered.notes())
    assert CLEARTEXT in flat
    assert (
        "inputs.http.auditToken: whoever captures the traffic between pods can replay it"
        " and read the audit trail" in flat
    )
    assert "inputs.http.token:" not in flat


@pytest.mark.parametrize("enforced", [False, True])
def test_plain_http_with_the_drill_token_warns_of_it(chart: helm_python.Chart, enforced: bool) -> None:
    """review-drills L8: a sniffed drill token sends drills (which quarantine pods where enforced)."""
    http = {"tls": PLAIN, "allowUnauthenticated": True, "drillToken": {"secretName": "sg-drills"}}
    rendered = _render(chart, {"inputs": {"http": http}, "guardrails": {"enforceDrills": enforced}})
    assert _bearer_tokens_over_plain_http(rendered) == ["drill_token"]
    flat = _flat(rendered.notes())
    assert CLEARTEXT in flat
    said = "inputs.http.drillToken: whoever captures the traffic between pods can replay it and send drills"
    assert (
        said
        + (", which quarantine pods (guardrails.enforceDrills)." if enforced else " (decided in dry-run).")
        in flat
    ), flat


def test_plain_http_with_both_tokens_names_both(chart: helm_python.Chart) -> None:
    http = {"tls": PLAIN, "token": {"secretName": "sg-http-token"}, "auditToken": {"secretName": "sg-audit"}}
    flat = _flat(_render(chart, {"inputs": {"http": http}, **SIDEKICK}).notes())
    assert flat.count(CLEARTEXT) == 1
    assert "inputs.http.token: whoever" in flat and "inputs.http.auditToken: whoever" in flat


@pytest.mark.parametrize(
    "values",
    [
        {},
        # Plain HTTP without a token: nothing to replay (the chart's own refusal covers authentication).
        {"inputs": {"http": {"tls": PLAIN, "allowUnauthenticated": True}}},
        # A token over TLS.
        {
            "inputs": {
                "http": {
                    "tls": {"mode": "secret", "secretName": "sg-server-tls", "requireClientCert": False},
                    "token": {"secretName": "sg-http-token"},
                    "auditToken": {"secretName": "sg-audit"},
                }
            },
            **SIDEKICK,
        },
        # The HTTP input off: its tokens are not served.
        {
            "inputs": {
                "http": {"enabled": False, "tls": PLAIN, "token": {"secretName": "sg-http-token"}},
                "grpc": {
                    "enabled": True,
                    "address": "falco-grpc.falco.svc:5060",
                    "tls": {"secretName": "sg-grpc-client"},
                },
            }
        },
    ],
    ids=["defaults", "plain-no-token", "token-over-tls", "http-off"],
)
def test_no_cleartext_warning_without_a_token_on_plain_http(
    chart: helm_python.Chart, values: dict[str, Any]
) -> None:
    rendered = _render(chart, values)
    assert CLEARTEXT not in rendered.notes()
    assert _bearer_tokens_over_plain_http(rendered) == []


@pytest.mark.parametrize("case", CASE_IDS)
def test_the_cleartext_warning_matches_the_rendered_config(renders: dict[str, Rendered], case: str) -> None:
    rendered = renders[case]
    assert (CLEARTEXT in rendered.notes()) == bool(_bearer_tokens_over_plain_http(rendered))


# --- Step 2: the namespace opt-in ------------------------------------------------------------------


def test_step_2_with_the_opt_in_label(renders: dict[str, Rendered]) -> None:
    notes = renders["defaults"].notes()
    assert (
        OPT_IN in notes
        and "kubectl label namespace <serving-namespace> serving-guard.io/enforce=true" in notes
    )
    assert "No opt-in" not in notes


def test_step_2_without_the_opt_in_label_does_not_promise_one(chart: helm_python.Chart) -> None:
    notes = _render(chart, {"guardrails": {"enforceNamespaceLabel": ""}}).notes()
    assert "nothing is quarantined elsewhere" not in notes and "kubectl label namespace <" not in notes
    assert NO_OPT_IN in notes
    flat = _flat(notes)
    assert f"but the protected ones (kube-system, kube-public, kube-node-lease, {NAMESPACE})." in flat
    # Still a step of its own, after step 1.
    assert f"\n\n{NO_OPT_IN}\n" in notes
