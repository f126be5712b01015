"""The PrometheusRule alerting on the responder itself (values prometheusRule, deploy/README.md "Alerting
on the responder"): rendered only when asked; every expression, parsed with promql-parser, selects the
ServiceMonitor's job and only series and label values the responder produces; promtool accepts the rules,
and its unit tests show each alert firing on the series that should fire it and silent on healthy ones."""

from __future__ import annotations

import argparse
import ast
import asyncio
import importlib
import logging
import re
import shlex
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python
import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from responder.actions.outcome import OutcomeStatus
from responder.cli import COMMANDS
from responder.cluster.verify import VerificationStatus
from responder.config import ActionName
from responder.ingest.http import count_rejected
from responder.ingest.httpserver import REFUSAL_REASONS
from responder.ingest.lost_record import LostRecord
from responder.ingest.refusals import RefusalLog
from responder.ingest.sink import InputName
from responder.metrics import Metrics
from responder.notify.slack import FailureKind
from responder.notify.worker import JOURNAL_FULL_RESULT
from responder.service import count_lost_at_last_stop
from tests.deploy.deploy_support import (
    DEPLOY,
    NAMESPACE,
    RELEASE,
    REPO,
    Case,
    Rendered,
    Values,
    deep_merge,
    released_values,
    render,
    render_reusing,
    with_test_image,
)
from tests.deploy.promtool import Promtool, promtool_or_skip
from tests.deploy.test_falco_values import _snippet

RULE_ON: Values = {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}
GRPC_ADDRESS = "falco-grpc.falco.svc:5060"
GRPC_ON: Values = {"inputs": {"grpc": {"enabled": True, "address": GRPC_ADDRESS}}}
GRPC_ONLY: Values = {
    "inputs": {"http": {"enabled": False}, "grpc": {"enabled": True, "address": GRPC_ADDRESS}}
}
GRPC_ALERT = "ServingGuardGrpcDisconnected"
# Each alert and the severity it carries (the gRPC one beside the HTTP input; alone it is critical).
SEVERITY = {
    "ServingGuardResponderDown": "critical",
    "ServingGuardAlertsLost": "critical",
    "ServingGuardKubernetesUnreachable": "critical",
    "ServingGuardQuarantineBreakerOpen": "warning",
    "ServingGuardBlockBreakerOpen": "warning",
    "ServingGuardQuarantineLeaky": "critical",
    "ServingGuardActionsFailing": "warning",
    "ServingGuardUnverifiedAlerts": "warning",
    "ServingGuardSendersRefused": "warning",
    "ServingGuardSlackPostsGivenUp": "warning",
    "ServingGuardSlackDeliveryFailing": "warning",
    "ServingGuardAlertsPushedBack": "warning",
    "ServingGuardJournalBacklog": "warning",
    "ServingGuardJournalNearlyFull": "warning",
    GRPC_ALERT: "warning",
    "ServingGuardIncidentsForgotten": "warning",
}
README = (DEPLOY / "README.md").read_text(encoding="utf-8")
README_SECTION = "Alerting on the responder"
IN_POD_CONFIG = "/etc/serving-guard/config.yaml"
DEFAULT_MAX_BYTES = 1073741824

Rule = dict[str, Any]


# -- rendering --------------------------------------------------------------------------------------


def _prometheus_rules(rendered: Rendered) -> list[dict[str, Any]]:
    return rendered.of_kind("PrometheusRule")


def _alert_rules(rendered: Rendered) -> list[Rule]:
    [prometheus_rule] = _prometheus_rules(rendered)
    return [rule for group in prometheus_rule["spec"]["groups"] for rule in group["rules"]]


def _alert(rules: list[Rule], name: str) -> Rule:
    [rule] = [rule for rule in rules if rule["alert"] == name]
    return rule


@pytest.fixture(scope="module")
def with_grpc(chart: helm_python.Chart) -> list[Rule]:
    """Every alert: the gRPC input's too."""
    return _alert_rules(render(chart, Case("rule-grpc", deep_merge(RULE_ON, GRPC_ON))))


@pytest.fixture(scope="module")
def http_only(chart: helm_python.Chart) -> list[Rule]:
    return _alert_rules(render(chart, Case("rule-http", RULE_ON)))


def test_no_prometheus_rule_unless_asked(renders: dict[str, Rendered], chart: helm_python.Chart) -> None:
    asked = {name for name, rendered in renders.items() if _prometheus_rules(rendered)}
    assert asked == {"production"}  # the only value set that enables it
    # Off with the gRPC input too, and with the ServiceMonitor alone.
    for values in (
        GRPC_ONLY,
        {"serviceMonitor": {"enabled": True}},
        deep_merge(GRPC_ON, {"prometheusRule": {}}),
    ):
        assert _prometheus_rules(render(chart, Case("off", values))) == []


def test_enabled_one_rule_beside_the_service_monitor(renders: dict[str, Rendered]) -> None:
    rendered = renders["production"]
    [prometheus_rule] = _prometheus_rules(rendered)
    monitor = rendered.one("ServiceMonitor")
    assert prometheus_rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert prometheus_rule["metadata"]["name"] == monitor["metadata"]["name"] == RELEASE
    assert prometheus_rule["metadata"]["namespace"] == NAMESPACE
    # Its labels are what Prometheus' ruleSelector matches, beside the chart's own.
    labels = prometheus_rule["metadata"]["labels"]
    assert labels["release"] == "prometheus" and labels["app.kubernetes.io/instance"] == RELEASE


def test_the_grpc_alert_only_with_the_grpc_input(http_only: list[Rule], with_grpc: list[Rule]) -> None:
    assert [rule["alert"] for rule in with_grpc] == list(SEVERITY)
    assert [rule["alert"] for rule in http_only] == [name for name in SEVERITY if name != GRPC_ALERT]


def test_the_grpc_alert_is_critical_when_grpc_is_the_only_input(chart: helm_python.Chart) -> None:
    rules = _alert_rules(render(chart, Case("rule-grpc-only", deep_merge(RULE_ON, GRPC_ONLY))))
    grpc = _alert(rules, GRPC_ALERT)
    assert grpc["labels"] == {"severity": "critical"}
    assert "only input" in grpc["annotations"]["description"]


def test_every_alert_has_its_severity_and_explains_itself(with_grpc: list[Rule]) -> None:
    for rule in with_grpc:
        assert rule["labels"] == {"severity": SEVERITY[rule["alert"]]}, rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description"}, rule["alert"]
        assert len(rule["annotations"]["summary"]) >= 30, rule["alert"]
        assert len(rule["annotations"]["description"]) >= 200, rule["alert"]


@pytest.mark.parametrize(
    ("values", "labels"),
    [
        # Helm's null deletes the key: the chart's defaults (off; no more labels).
        ({"prometheusRule": None}, None),
        ({"prometheusRule": {"enabled": None}, "serviceMonitor": {"enabled": True}}, None),
        (deep_merge(RULE_ON, {"prometheusRule": {"labels": None}}), {}),
        (deep_merge(RULE_ON, {"prometheusRule": {"labels": {"team": "platform"}}}), {"team": "platform"}),
    ],
    ids=["rule-null", "enabled-null", "labels-null", "labels"],
)
def test_nulls_render_the_defaults(
    chart: helm_python.Chart, values: Values, labels: dict[str, str] | None
) -> None:
    rules = _prometheus_rules(render(chart, Case("nulls", values)))
    if labels is None:
        assert rules == []
        return
    [prometheus_rule] = rules
    chart_labels = {"helm.sh/chart", "app.kubernetes.io/version", "app.kubernetes.io/managed-by"}
    chart_labels |= {f"app.kubernetes.io/{name}" for name in ("name", "instance", "part-of")}
    assert set(prometheus_rule["metadata"]["labels"]) == chart_labels | set(labels)


def test_reuse_values_from_the_first_release_renders_every_alert(tmp_path: Path) -> None:
    """The first release's values have neither prometheusRule nor guardrails.maxBlocks."""
    first = released_values()[0]
    assert "prometheusRule" not in first.values and "maxBlocks" not in first.values["guardrails"]
    rules = _alert_rules(render_reusing(first.values, with_test_image(RULE_ON), tmp_path))
    assert [rule["alert"] for rule in rules] == [name for name in SEVERITY if name != GRPC_ALERT]
    assert (
        "guardrails.maxBlocks (20 per 300 s)"
        in _alert(rules, "ServingGuardBlockBreakerOpen")["annotations"]["description"]
    )


@pytest.mark.parametrize(
    ("values", "error", "message"),
    [
        (
            {"prometheusRule": {"enabled": True}},
            helm_python.HelmRenderError,
            "prometheusRule.enabled: its alerts select the series of the ServiceMonitor's job",
        ),
        (
            deep_merge(RULE_ON, {"prometheusRule": {"labels": {"app.kubernetes.io/name": "x"}}}),
            helm_python.HelmRenderError,
            'prometheusRule.labels: "app.kubernetes.io/name" is one of the chart\'s own labels',
        ),
        (
            {"prometheusRule": {"additionalRules": []}},
            helm_python.HelmValuesError,
            "'additionalRules' not allowed",
        ),
        ({"prometheusRule": {"enabled": "yes"}}, helm_python.HelmValuesError, "want boolean"),
        ({"prometheusRule": {"labels": {"release": 1}}}, helm_python.HelmValuesError, "want string"),
    ],
    ids=["without-service-monitor", "chart-label", "unknown-key", "enabled-string", "label-number"],
)
def test_refused_values(
    chart: helm_python.Chart, values: Values, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as caught:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert message in str(caught.value), str(caught.value)


# -- the expressions, parsed ------------------------------------------------------------------------


def _selectors(expr: str) -> list[promql_parser.VectorSelector]:
    found: list[promql_parser.VectorSelector] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def _equal(selector: promql_parser.VectorSelector, label: str) -> str | None:
    values = [
        m.value for m in selector.matchers.matchers if m.name == label and m.op == promql_parser.MatchOp.Equal
    ]
    return values[0] if len(values) == 1 else None


def test_every_selector_picks_the_service_monitors_job(chart: helm_python.Chart) -> None:
    """prometheus-operator gives a ServiceMonitor's targets the job of the Service it selects (its name:
    no jobLabel) and that Service's namespace; a release and namespace other than the defaults show it."""
    rendered = render(chart, Case("elsewhere", deep_merge(RULE_ON, GRPC_ON), namespace="security"))
    monitor = rendered.one("ServiceMonitor")
    assert "jobLabel" not in monitor["spec"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    [port] = [endpoint["port"] for endpoint in monitor["spec"]["endpoints"]]
    [service] = [
        s
        for s in rendered.of_kind("Service")
        if selector.items() <= s["metadata"]["labels"].items()
        and port in {p["name"] for p in s["spec"]["ports"]}
    ]
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [service["metadata"]["namespace"]]
    job, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
    assert (job, namespace) == (RELEASE, "security")
    for rule in _alert_rules(rendered):
        selectors = _selectors(rule["expr"])
        assert selectors, rule["alert"]
        for picked in selectors:
            assert (_equal(picked, "job"), _equal(picked, "namespace")) == (job, namespace), (
                rule["alert"],
                str(picked),
            )


def test_the_journal_alert_is_on_the_live_records_against_the_responders_bound(
    chart: helm_python.Chart,
) -> None:
    """Records over 90% of the bound the responder runs with, not the file (which never shrinks when
    pruned): the same expression whatever journal.maxBytes, named in the description."""
    exprs = set()
    for max_bytes in (DEFAULT_MAX_BYTES, 536870912):
        values = deep_merge(RULE_ON, {"journal": {"maxBytes": max_bytes}})
        rule = _alert(_alert_rules(render(chart, Case("journal", values))), "ServingGuardJournalNearlyFull")
        assert f"({max_bytes} bytes)" in rule["annotations"]["description"]
        exprs.add(rule["expr"])
        expr = promql_parser.parse(rule["expr"])
        assert isinstance(expr, promql_parser.BinaryExpr) and str(expr.op) == ">"
        used, threshold = expr.lhs, expr.rhs
        assert isinstance(used, promql_parser.VectorSelector)
        assert used.name == "serving_guard_journal_used_bytes"
        assert isinstance(threshold, promql_parser.BinaryExpr) and str(threshold.op) == "*"
        share, bound = threshold.lhs, threshold.rhs
        assert isinstance(share, promql_parser.NumberLiteral) and share.val == 0.9
        assert isinstance(bound, promql_parser.VectorSelector)
        assert bound.name == "serving_guard_journal_max_bytes"
    assert len(exprs) == 1


# -- what the responder produces --------------------------------------------------------------------

# Label values the rules may match, by (metric, label), from the responder's own enums.
NOTIFICATION_RESULTS = {"sent", "failed", JOURNAL_FULL_RESULT, *(kind.value for kind in FailureKind)}


def _receiver(call: ast.Call) -> str:
    """The name a method is called on: `refusals` of `refusals.record(...)` and of
    `self._server.refusals.record(...)`."""
    owner = call.func.value if isinstance(call.func, ast.Attribute) else None
    if isinstance(owner, ast.Name):
        return owner.id
    return owner.attr if isinstance(owner, ast.Attribute) else ""


def _recorded_refusal_reasons() -> set[str]:
    """The reasons responder/ingest/ hands to a RefusalLog (`refusals.record("tls_handshake", ...)`), read
    from its source with Python's own parser: the HTTP input counts each under
    serving_guard_alerts_rejected_total{reason}."""
    reasons = set()
    for path in sorted((REPO / "responder" / "ingest").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "record"
                and _receiver(node) == "refusals"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                reasons.add(str(node.args[0].value))
    return reasons


REJECTION_REASONS = {*REFUSAL_REASONS.values(), *_recorded_refusal_reasons()}
LABEL_VALUES: dict[tuple[str, str], set[str]] = {
    ("serving_guard_action_outcomes", "action"): {action.value for action in ActionName},
    ("serving_guard_action_outcomes", "status"): {status.value for status in OutcomeStatus},
    ("serving_guard_verifications", "status"): {status.value for status in VerificationStatus},
    ("serving_guard_notifications", "result"): NOTIFICATION_RESULTS,
    ("serving_guard_alerts_rejected", "reason"): REJECTION_REASONS,
    ("serving_guard_alerts_lost", "input"): {name.value for name in InputName},
    ("serving_guard_alerts_pushed_back", "input"): {name.value for name in InputName},
}
# Prometheus' own series, and the labels it gives every scraped series.
PROMETHEUS_SERIES = {"up"}
TARGET_LABELS = {"namespace", "job"}


@dataclass(frozen=True)
class Exposed:
    name: str
    labels: Mapping[str, str]


def _refuse_as_the_http_input(metrics: Metrics, reasons: list[str]) -> None:
    """Refusals recorded the way the HTTP input records them: a RefusalLog counting into the metrics."""

    async def refuse() -> None:
        refusals = RefusalLog("HTTP input", logging.getLogger("test.refusals"), count_rejected(metrics))
        for reason in reasons:
            refusals.record(reason, "10.0.0.9", "refused in a test")
        refusals.end_window()

    asyncio.run(refuse())


def _counted_metrics() -> Metrics:
    """The responder's metrics after counting every label value the rules may match, as its code counts."""
    metrics = Metrics(policies=["shells"])
    for input_name in InputName:
        metrics.lost.labels(input_name.value).inc()
        metrics.overloaded.labels(input_name.value).inc()
    for action in ActionName:
        for status in OutcomeStatus:
            metrics.outcomes.labels(action.value, status.value).inc()
    for verification in VerificationStatus:
        metrics.verifications.labels(verification.value).inc()
    for result in sorted(NOTIFICATION_RESULTS):
        metrics.notifications.labels("incident", result).inc()
    _refuse_as_the_http_input(metrics, sorted(REJECTION_REASONS))
    metrics.incidents_forgotten.inc(2)
    metrics.alert_to_decision.observe(0.03)
    metrics.count_received("http", "syscall", drill=True)
    return metrics


def _exposed(metrics: Metrics) -> list[Exposed]:
    text = metrics.render().decode()
    return [
        Exposed(s.name, s.labels) for family in text_string_to_metric_families(text) for s in family.samples
    ]


def _family(name: str) -> str:
    return re.sub(r"_(total|created)$", "", name)


def _alternatives(matcher: promql_parser.Matcher) -> set[str]:
    if matcher.op == promql_parser.MatchOp.Equal:
        return {matcher.value}
    assert matcher.op == promql_parser.MatchOp.Re, f"{matcher}: only = and =~ are used"
    assert re.fullmatch(r"[a-z_]+(\|[a-z_]+)*", matcher.value), f"{matcher}: an alternation of label values"
    return set(matcher.value.split("|"))


def test_the_http_input_counts_the_refusals_the_senders_alert_matches() -> None:
    metrics = Metrics()
    _refuse_as_the_http_input(metrics, ["tls_handshake", "unauthenticated", "too_large"])
    counted = {
        (e.labels["input"], e.labels["reason"])
        for e in _exposed(metrics)
        if e.name == "serving_guard_alerts_rejected_total"
    }
    assert counted == {("http", "tls_handshake"), ("http", "unauthenticated"), ("http", "too_large")}
    # Both are reasons the inputs really record: 401/403, and a failed handshake.
    assert "unauthenticated" in REFUSAL_REASONS.values() and "tls_handshake" in _recorded_refusal_reasons()


def test_every_series_and_label_value_is_one_the_responder_produces(with_grpc: list[Rule]) -> None:
    exposed = _exposed(_counted_metrics())
    exposed_names = {e.name for e in exposed}
    for rule in with_grpc:
        for selector in _selectors(rule["expr"]):
            where = f"{rule['alert']}: {selector}"
            assert selector.name in exposed_names | PROMETHEUS_SERIES, where
            matchers = [m for m in selector.matchers.matchers if m.name not in TARGET_LABELS]
            if selector.name in PROMETHEUS_SERIES:
                assert matchers == [], where
                continue
            for matcher in matchers:
                known = LABEL_VALUES.get((_family(selector.name), matcher.name))
                assert known is not None, f"{where}: no enum of the responder's for {matcher.name}"
                alternatives = _alternatives(matcher)
                assert alternatives <= known, (
                    f"{where}: {alternatives - known} are no values the responder gives"
                )
                # The regex, as Prometheus anchors it, takes exactly the values it lists.
                assert {v for v in known if re.fullmatch(matcher.value, v)} == alternatives, where
                for value in alternatives:
                    assert any(
                        e.name == selector.name
                        and e.labels.get(matcher.name) == value
                        and all(e.labels.get(m.name) in _alternatives(m) for m in matchers)
                        for e in exposed
                    ), f"{where}: no series with {matcher.name}={value}"


def test_the_slack_alerts_split_the_results_as_the_notifier_counts_them(with_grpc: list[Rule]) -> None:
    """Given up: failed (the worker's _fail) and journal_full (pruned for room). A try that failed: every
    FailureKind but rate_limited, which the worker waits out without counting it. Neither is sent."""

    def results(alert: str) -> list[set[str]]:
        return [
            _alternatives(m)
            for s in _selectors(_alert(with_grpc, alert)["expr"])
            for m in s.matchers.matchers
            if m.name == "result"
        ]

    given_up = results("ServingGuardSlackPostsGivenUp")
    assert given_up and all(r == {"failed", JOURNAL_FULL_RESULT} for r in given_up)
    tries, sent = results("ServingGuardSlackDeliveryFailing")
    assert tries == {kind.value for kind in FailureKind} - {FailureKind.RATE_LIMITED.value}
    assert sent == {"sent"}


# -- what on-call reads -----------------------------------------------------------------------------


def _readme_section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end]


def _commands(text: str) -> Iterator[list[str]]:
    for span in re.findall(r"`([^`]+)`", text):
        yield shlex.split(span)


def _parse_cli(words: list[str]) -> None:
    """Parse a `serving-guard ...` command line with the CLI's own parser for that command."""
    command = next((c for c in COMMANDS if tuple(words[: len(c.words)]) == c.words), None)
    assert command is not None, f"serving-guard has no command {' '.join(words)}"
    rest = words[len(command.words) :]
    if not rest:
        return  # named, not given whole (its Slack message gives the rest)
    parser = argparse.ArgumentParser(prog=f"serving-guard {' '.join(command.words)}", exit_on_error=False)
    importlib.import_module(command.module).configure(parser)
    try:
        parser.parse_args(rest)
    except (argparse.ArgumentError, SystemExit) as exc:
        pytest.fail(f"serving-guard {' '.join(words)}: {exc}")


def test_descriptions_give_commands_that_work_for_the_release(chart: helm_python.Chart) -> None:
    rendered = render(chart, Case("elsewhere", deep_merge(RULE_ON, GRPC_ON), namespace="security"))
    audit_named = set()
    for rule in _alert_rules(rendered):
        commands = list(_commands(rule["annotations"]["description"]))
        assert any(words[0] == "kubectl" for words in commands), rule["alert"]
        for words in commands:
            if words[0] == "kubectl":
                assert words[1:3] == ["-n", "security"], (rule["alert"], words)
                assert any(
                    w in {f"deploy/{RELEASE}", f"app.kubernetes.io/instance={RELEASE}"} for w in words
                ), words
            if "serving-guard" in words:
                cli = words[words.index("serving-guard") + 1 :]
                _parse_cli(cli)
                if cli[:1] == ["audit"]:
                    assert cli[cli.index("--config") + 1] == IN_POD_CONFIG, words
                    audit_named.add(rule["alert"])
    # The trail is where on-call reads what happened, wherever the responder still runs.
    assert audit_named >= set(SEVERITY) - {
        "ServingGuardResponderDown",
        "ServingGuardKubernetesUnreachable",
        "ServingGuardSendersRefused",
        GRPC_ALERT,
    }


def test_each_alert_has_its_readme_section(with_grpc: list[Rule]) -> None:
    section = _readme_section(README_SECTION)
    documented = re.findall(r"^### (\S+)$", section, re.M)
    assert documented == [rule["alert"] for rule in with_grpc]
    for rule in with_grpc:
        alert = rule["alert"]
        assert f'deploy/README.md, "{README_SECTION}": {alert}' in rule["annotations"]["description"], alert
        body = section.split(f"### {alert}\n", 1)[1].split("\n### ", 1)[0]
        severity = "critical where gRPC is the only input" if alert == GRPC_ALERT else SEVERITY[alert]
        assert severity in body, alert
        for selector in _selectors(rule["expr"]):
            name = selector.name
            assert name is not None, (alert, str(selector))
            if name not in PROMETHEUS_SERIES and not name.endswith("_created"):
                assert f"`{_family(name)}" in body, (alert, name)


def test_the_readme_values_render_the_rule_and_its_scrape(chart: helm_python.Chart) -> None:
    rendered = render(chart, Case("readme", _snippet("chart-values-prometheus-rule")))
    [prometheus_rule] = _prometheus_rules(rendered)
    assert prometheus_rule["metadata"]["labels"]["release"] == "prometheus"
    assert rendered.one("ServiceMonitor")["metadata"]["labels"]["release"] == "prometheus"


# -- promtool ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> Promtool:
    return promtool_or_skip()


def _rules_file(rules: list[Rule], directory: Path) -> Path:
    path = directory / "serving-guard-rules.yaml"
    path.write_text(
        yaml.safe_dump({"groups": [{"name": "serving-guard-responder", "rules": rules}]}), encoding="utf-8"
    )
    return path


def test_promtool_checks_the_rules(
    promtool: Promtool, with_grpc: list[Rule], http_only: list[Rule], tmp_path: Path
) -> None:
    for rules in (with_grpc, http_only):
        done = promtool.run("check", "rules", _rules_file(rules, tmp_path))
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"SUCCESS: {len(rules)} rules found" in done.stdout, done.stdout


def test_promtool_finds_the_responders_metrics_clean(promtool: Promtool) -> None:
    exposition = _counted_metrics().render().decode()
    assert "serving_guard_action_outcomes_created{" in exposition  # what the counting alerts read too
    done = promtool.run("check", "metrics", stdin=exposition)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


# Labels Prometheus gives the series of a ServiceMonitor's target.
TARGET = {
    "namespace": NAMESPACE,
    "job": RELEASE,
    "service": RELEASE,
    "endpoint": "metrics",
    "instance": "10.244.1.7:9090",
    "pod": "serving-guard-6f7c9d-x2x4q",
    "container": "serving-guard",
}
JOB = {"namespace": NAMESPACE, "job": RELEASE}


@dataclass(frozen=True)
class Series:
    name: str
    labels: Mapping[str, str]
    values: str  # promtool's expanding notation, one sample a minute

    def entry(self) -> dict[str, str]:
        labels = ",".join(f'{key}="{value}"' for key, value in self.labels.items())
        return {"series": f"{self.name}{{{labels}}}", "values": self.values}


@dataclass(frozen=True)
class Scenario:
    """Series over time, and at eval_minutes the alerts expected: each one's labels but alertname and
    severity (none: the alert stays silent)."""

    what: str
    series: tuple[Series, ...]
    eval_minutes: int
    fires: tuple[Mapping[str, str], ...] = ()


def _gauge(name: str, values: str) -> tuple[Series, ...]:
    return (Series(name, TARGET, values),)


def _counter(metric: str, labels: Mapping[str, str], total: str, created: str) -> tuple[Series, ...]:
    """A counter as prometheus_client exposes it: <metric>_total, and <metric>_created (its creation time)."""
    series_labels = {**TARGET, **labels}
    return Series(f"{metric}_total", series_labels, total), Series(
        f"{metric}_created", series_labels, created
    )


# A counted series in three shapes: GROWS is counted at the start and again at minute 31 (increase() sees
# it grow); APPEARS is first counted at minute 20, with its count (no earlier sample for increase(): its
# _created says it is new); STEADY was counted at the start and not since.
GROWS, GREW_AT = ("1+0x30 2+0x120", "0+0x150"), 31
APPEARS, APPEARED_AT = ("_x20 1+0x120", "_x20 1200+0x120"), 20
STEADY, LONG_AFTER = ("3+0x120", "0+0x120"), 100


def _counting(
    metric: str, fired: Mapping[str, str], *, window: int = 15, **labels: str
) -> tuple[Scenario, ...]:
    """A counting alert fires on its series grown or new within `window` minutes; not before or after."""
    fires = ({**JOB, **fired},)
    return (
        Scenario("grows", _counter(metric, labels, *GROWS), GREW_AT + 4, fires),
        Scenario("appears with a count", _counter(metric, labels, *APPEARS), APPEARED_AT + 5, fires),
        Scenario("grew before the window", _counter(metric, labels, *GROWS), GREW_AT + window + 5),
        Scenario("appeared before the window", _counter(metric, labels, *APPEARS), APPEARED_AT + window + 5),
        Scenario("steady", _counter(metric, labels, *STEADY), LONG_AFTER),
    )


def _others_grow(metric: str, *label_sets: Mapping[str, str]) -> Scenario:
    """Series of the metric the alert does not select, growing: silent."""
    return Scenario(
        "others grow",
        tuple(s for labels in label_sets for s in _counter(metric, labels, *GROWS)),
        GREW_AT + 4,
    )


def _down_for_a_while(name: str, healthy: str, down: str, brief: int) -> tuple[Scenario, ...]:
    """A gauge at `down` for 10 minutes fires; healthy it does not, nor `brief` minutes after it went
    down (still pending: its `for` is longer)."""
    return (
        Scenario("down", _gauge(name, f"{healthy}+0x5 {down}+0x10"), 15, (TARGET,)),
        Scenario("healthy", _gauge(name, f"{healthy}+0x15"), 15),
        Scenario("down briefly", _gauge(name, f"{healthy}+0x5 {down}+0x10"), 6 + brief),
    )


OUTCOMES, NOTIFICATIONS = "serving_guard_action_outcomes", "serving_guard_notifications"


def _refused(reason: str, values: str) -> Series:
    return Series(
        "serving_guard_alerts_rejected_total", {**TARGET, "input": "http", "reason": reason}, values
    )


def _refusal(reason: str) -> dict[str, str]:
    return {**JOB, "input": "http", "reason": reason}


def _posts(result: str, values: str) -> Series:
    return Series(f"{NOTIFICATIONS}_total", {**TARGET, "kind": "incident", "result": result}, values)


NEARLY_FULL, HALF_FULL = int(DEFAULT_MAX_BYTES * 0.95), DEFAULT_MAX_BYTES // 2


def _journal(used: str, max_bytes: float = DEFAULT_MAX_BYTES) -> tuple[Series, ...]:
    """The journal's gauges: its live records (``used``), its bound, and its file, full all along
    (the file does not shrink when pruned)."""
    return (
        *_gauge("serving_guard_journal_used_bytes", used),
        *_gauge("serving_guard_journal_max_bytes", f"{int(max_bytes)}+0x40"),
        *_gauge("serving_guard_journal_bytes", f"{DEFAULT_MAX_BYTES}+0x40"),
    )


SCENARIOS: dict[str, tuple[Scenario, ...]] = {
    "ServingGuardResponderDown": (
        Scenario("scrapes fail", (Series("up", TARGET, "1+0x5 0+0x10"),), 15, (TARGET,)),
        Scenario("never scraped", (Series("up", {**JOB, "job": "other"}, "1+0x15"),), 15, (JOB,)),
        Scenario("scraped", (Series("up", TARGET, "1+0x15"),), 15),
        Scenario("failing for 3 minutes", (Series("up", TARGET, "1+0x5 0+0x10"),), 9),
    ),
    "ServingGuardAlertsLost": _counting("serving_guard_alerts_lost", {"input": "grpc"}, input="grpc"),
    "ServingGuardKubernetesUnreachable": _down_for_a_while(
        "serving_guard_kubernetes_reachable", "1", "0", brief=4
    ),
    "ServingGuardQuarantineBreakerOpen": _down_for_a_while(
        "serving_guard_circuit_breaker_open", "0", "1", brief=0
    ),
    "ServingGuardBlockBreakerOpen": _down_for_a_while(
        "serving_guard_block_circuit_breaker_open", "0", "1", brief=0
    ),
    "ServingGuardQuarantineLeaky": (
        *_counting(OUTCOMES, {}, action="quarantine", status="leaky"),
        _others_grow(
            OUTCOMES,
            {"action": "quarantine", "status": "quarantined"},
            {"action": "block_destination", "status": "leaky"},
        ),
    ),
    "ServingGuardActionsFailing": (
        *_counting(OUTCOMES, {"action": "block_destination"}, action="block_destination", status="failed"),
        _others_grow(
            OUTCOMES,
            {"action": "quarantine", "status": "quarantined"},
            {"action": "quarantine", "status": "withheld"},
        ),
    ),
    "ServingGuardUnverifiedAlerts": (
        *_counting("serving_guard_verifications", {}, status="unverified"),
        _others_grow("serving_guard_verifications", {"status": "verified"}, {"status": "pod_not_found"}),
    ),
    "ServingGuardSendersRefused": (
        Scenario(
            "refused all along", (_refused("tls_handshake", "0+1x30"),), 20, (_refusal("tls_handshake"),)
        ),
        Scenario("refused for 8 minutes", (_refused("unauthenticated", "0+1x30"),), 9),
        Scenario("too large all along", (_refused("too_large", "0+1x30"),), 20),
    ),
    "ServingGuardSlackPostsGivenUp": (
        *_counting(NOTIFICATIONS, {"result": "journal_full"}, kind="repeat", result="journal_full"),
        Scenario(
            "failed",
            _counter(NOTIFICATIONS, {"kind": "incident", "result": "failed"}, *GROWS),
            GREW_AT + 4,
            ({**JOB, "result": "failed"},),
        ),
        _others_grow(
            NOTIFICATIONS, {"kind": "incident", "result": "sent"}, {"kind": "incident", "result": "transport"}
        ),
    ),
    "ServingGuardSlackDeliveryFailing": (
        Scenario("Slack unreachable", (_posts("transport", "0+1x60"), _posts("sent", "5+0x60")), 40, (JOB,)),
        Scenario("token refused, nothing ever sent", (_posts("rejected", "0+1x60"),), 40, (JOB,)),
        Scenario("some fail, others are sent", (_posts("transport", "0+1x60"), _posts("sent", "0+1x60")), 40),
        Scenario("rate limited", (_posts("rate_limited", "0+1x60"), _posts("sent", "5+0x60")), 40),
        Scenario("failing for 8 minutes", (_posts("transport", "0+1x60"),), 9),
    ),
    "ServingGuardAlertsPushedBack": (
        *_counting("serving_guard_alerts_pushed_back", {"input": "http"}, input="http"),
        # The gRPC input offers a refused alert again (each offer counted) and Falco keeps what it
        # did not take: none is lost, so none is alerted on.
        _others_grow("serving_guard_alerts_pushed_back", {"input": "grpc"}),
    ),
    "ServingGuardJournalBacklog": (
        Scenario(
            "a backlog that does not move",
            _gauge("serving_guard_journal_deferred_oldest_seconds", "0+0x5 400+60x10"),
            15,
            (TARGET,),
        ),
        Scenario("short waits", _gauge("serving_guard_journal_deferred_oldest_seconds", "250+0x15"), 15),
        Scenario(
            "a backlog for 3 minutes",
            _gauge("serving_guard_journal_deferred_oldest_seconds", "0+0x5 400+60x10"),
            9,
        ),
    ),
    "ServingGuardJournalNearlyFull": (
        Scenario("95%", _journal(f"{NEARLY_FULL}+0x40"), 20, (TARGET,)),
        Scenario("half", _journal(f"{HALF_FULL}+0x40"), 20),
        Scenario("95% for 9 minutes", _journal(f"{HALF_FULL}+0x5 {NEARLY_FULL}+0x40"), 15),
        # The file stays at its size (pages are reused); the records fell: the alert clears.
        Scenario("95%, before the prune", _journal(f"{NEARLY_FULL}+0x20 {HALF_FULL}+0x20"), 20, (TARGET,)),
        Scenario("95%, then pruned", _journal(f"{NEARLY_FULL}+0x20 {HALF_FULL}+0x20"), 22),
        Scenario(
            "a smaller bound, 95% of it", _journal(f"{HALF_FULL}+0x40", HALF_FULL * 1.05), 20, (TARGET,)
        ),
    ),
    GRPC_ALERT: _down_for_a_while("serving_guard_grpc_connected", "1", "0", brief=4),
    "ServingGuardIncidentsForgotten": _counting("serving_guard_incidents_forgotten", {}, window=60),
}


def _expanded(template: str, labels: Mapping[str, str]) -> str:
    """An annotation as Prometheus renders it: the rules use {{ $labels.NAME }} only."""
    text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], template)
    assert "{{" not in text, template
    return text


def _promtool_test(rule: Rule, scenario: Scenario) -> dict[str, Any]:
    severity = rule["labels"]["severity"]
    expected = [
        {
            "exp_labels": {**labels, "severity": severity},
            "exp_annotations": {key: _expanded(text, labels) for key, text in rule["annotations"].items()},
        }
        for labels in scenario.fires
    ]
    return {
        "name": f"{rule['alert']}: {scenario.what}",
        "interval": "1m",
        "input_series": [series.entry() for series in scenario.series],
        "alert_rule_test": [
            {"eval_time": f"{scenario.eval_minutes}m", "alertname": rule["alert"], "exp_alerts": expected}
        ],
    }


def _run_unit_tests(
    promtool: Promtool,
    rules: list[Rule],
    alert: str,
    directory: Path,
    scenarios: tuple[Scenario, ...] | None = None,
) -> tuple[int, str]:
    rules_file = _rules_file(rules, directory)
    tests = [_promtool_test(_alert(rules, alert), scenario) for scenario in scenarios or SCENARIOS[alert]]
    tests_file = directory / f"{alert}.test.yaml"
    tests_file.write_text(
        yaml.safe_dump({"rule_files": [rules_file.name], "evaluation_interval": "1m", "tests": tests}),
        encoding="utf-8",
    )
    done = promtool.run("test", "rules", tests_file)
    return done.returncode, done.stdout + done.stderr


def test_every_alert_has_scenarios_that_fire_it_and_keep_it_silent() -> None:
    assert list(SCENARIOS) == list(SEVERITY)
    for alert, scenarios in SCENARIOS.items():
        assert any(s.fires for s in scenarios) and any(not s.fires for s in scenarios), alert


@pytest.mark.parametrize("alert", list(SCENARIOS))
def test_promtool_unit_tests(promtool: Promtool, with_grpc: list[Rule], alert: str, tmp_path: Path) -> None:
    status, output = _run_unit_tests(promtool, with_grpc, alert, tmp_path)
    assert status == 0, output
    assert "SUCCESS" in output, output


def test_the_unit_tests_catch_a_rule_that_selects_the_wrong_series(
    promtool: Promtool, with_grpc: list[Rule], tmp_path: Path
) -> None:
    """Guards the guard: a LEAKY alert reading another status fails its unit tests."""
    broken = [
        {**rule, "expr": rule["expr"].replace('status="leaky"', 'status="quarantined"')}
        if rule["alert"] == "ServingGuardQuarantineLeaky"
        else rule
        for rule in with_grpc
    ]
    assert broken != with_grpc
    status, output = _run_unit_tests(promtool, broken, "ServingGuardQuarantineLeaky", tmp_path)
    assert status != 0 and "ServingGuardQuarantineLeaky" in output, output


def _sample_values(metrics: Metrics, name: str) -> list[float]:
    text = metrics.render().decode()
    return [
        s.value for family in text_string_to_metric_families(text) for s in family.samples if s.name == name
    ]


def test_a_stops_losses_are_counted_by_the_next_start_and_fire_the_alert(
    promtool: Promtool, with_grpc: list[Rule], tmp_path: Path
) -> None:
    """The gRPC input knows its lost alerts only as it stops, its metrics endpoint closed: no scrape
    sees that count. The stop records it beside the journal; the next start exposes it, a new series
    whose _created fires ServingGuardAlertsLost from that start, for 15 minutes."""
    journal = str(tmp_path / "journal.db")
    LostRecord(journal).add(InputName.GRPC, ["a1", "a2", "a3"])  # as the stopping responder does
    started = time.time()
    metrics = Metrics()  # the next start's
    count_lost_at_last_stop(LostRecord(journal), metrics)
    [total] = _sample_values(metrics, "serving_guard_alerts_lost_total")
    [created] = _sample_values(metrics, "serving_guard_alerts_lost_created")
    assert total == 3 and created >= started
    again = Metrics()  # a later start: counted once
    count_lost_at_last_stop(LostRecord(journal), again)
    assert _sample_values(again, "serving_guard_alerts_lost_total") == []
    # Those series in Prometheus: none from the run that stopped, then the next start's from minute 20.
    series = _counter(
        "serving_guard_alerts_lost", {"input": "grpc"}, f"_x20 {int(total)}+0x30", "_x20 1200+0x30"
    )
    fires = ({**JOB, "input": "grpc"},)
    scenarios = (
        Scenario("the next start counts the stop's losses", series, 25, fires),
        Scenario("15 minutes after that start", series, 40),
    )
    status, output = _run_unit_tests(promtool, with_grpc, "ServingGuardAlertsLost", tmp_path, scenarios)
    assert status == 0, output
