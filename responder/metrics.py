"""Prometheus metrics with bounded labels only: inputs, sources, reasons, policies, actions and
rule names come from fixed sets or the loaded config, never from alert text or pod names."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# The rules shipped in rules/serving_guard_rules.yaml (a test keeps this list in step with the pack).
SHIPPED_RULES = (
    "Unexpected model file load in serving pod",
    "Model artifact tampering in serving pod",
    "Shell in serving pod",
    "Reverse shell or interpreter one-liner in serving pod",
    "Anomalous egress from serving pod",
    "Runtime download or package install in serving pod",
    "Drift: new executable in serving pod",
    "Credential access in serving pod",
)
KNOWN_SOURCES = ("syscall", "k8s_audit", "internal")
OTHER = "other"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self, *, policies: Iterable[str] = (), rules: Iterable[str] = ()) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._policies = {*policies, "default"}
        self._rules = {*SHIPPED_RULES, *rules}
        r = self.registry
        self.received = Counter(
            "serving_guard_alerts_received",
            "Alerts accepted into the journal",
            ["input", "source"],
            registry=r,
        )
        self.drills = Counter(
            "serving_guard_drill_alerts_received",
            "Alerts accepted into the journal as drills (the drill token, ingest --drill): counted in"
            " alerts_received too, decided in dry-run unless guardrails.enforce_drills",
            ["input"],
            registry=r,
        )
        self.redelivered = Counter(
            "serving_guard_alerts_redelivered",
            "Alerts delivered again (same content id), not new work",
            ["input"],
            registry=r,
        )
        self.rejected = Counter(
            "serving_guard_alerts_rejected",
            "Payloads, requests and connections refused, by input and reason (HTTP: every refusal)",
            ["input", "reason"],
            registry=r,
        )
        self.overloaded = Counter(
            "serving_guard_alerts_pushed_back", "Alerts refused with 503/backpressure", ["input"], registry=r
        )
        self.deferred = Counter(
            "serving_guard_alerts_deferred",
            "Alerts journaled while the pipeline was full, processed once it had room (instead of a 503)",
            ["input"],
            registry=r,
        )
        self.journal_stalls = Counter(
            "serving_guard_input_journal_stalls",
            "Times an input stopped taking alerts because the journal refused a write (once per outage)",
            ["input"],
            registry=r,
        )
        self.lost = Counter(
            "serving_guard_alerts_lost",
            "Alerts taken from a sender that were never journaled (each logged with its id); those lost"
            " as the responder stopped are counted by its next start",
            ["input"],
            registry=r,
        )
        self.incidents = Counter("serving_guard_incidents", "Incidents opened, by rule", ["rule"], registry=r)
        self.duplicates = Counter(
            "serving_guard_alerts_deduplicated", "Alerts folded into an open incident", ["rule"], registry=r
        )
        self.decisions = Counter(
            "serving_guard_decisions", "Decisions, by policy and action", ["policy", "action"], registry=r
        )
        self.verifications = Counter(
            "serving_guard_verifications", "Alert verification results", ["status"], registry=r
        )
        self.outcomes = Counter(
            "serving_guard_action_outcomes", "Action outcomes", ["action", "status"], registry=r
        )
        self.notifications = Counter(
            "serving_guard_notifications", "Notification delivery results", ["kind", "result"], registry=r
        )
        self.retries = Counter(
            "serving_guard_withheld_retries",
            "Isolations withheld for a passing reason, tried again without a repeat"
            " (dedupe.retry_withheld_seconds), by result: acted, withheld (still: tried again later),"
            " nothing_to_do (the pod or decision no longer asks for it: left to a repeat), unverified"
            " (the alert's container still not listed past the kubelet's lag: a possible forgery),"
            " failed (the action failed again, or the try did), not_scheduled (too many waiting: a"
            " repeat tries it again)",
            ["result"],
            registry=r,
        )
        self.journal_deferred = Gauge(
            "serving_guard_journal_deferred",
            "Alerts journaled while the pipeline was full, not taken up yet (part of journal_pending)",
            registry=r,
        )
        self.journal_deferred_age = Gauge(
            "serving_guard_journal_deferred_oldest_seconds",
            "How long the oldest deferred alert has waited (0: none): a backlog that does not move grows it",
            registry=r,
        )
        self.journal_pending = Gauge(
            "serving_guard_journal_pending", "Accepted alerts without a final outcome", registry=r
        )
        # The file never shrinks (SQLite reuses pruned pages): for sizing the volume, not the bound.
        self.journal_bytes = Gauge(
            "serving_guard_journal_bytes",
            "The journal's files on disk (database and write-ahead log): they do not shrink when pruned",
            registry=r,
        )
        self.journal_used_bytes = Gauge(
            "serving_guard_journal_used_bytes",
            "Bytes the journal's live records take, as last measured: what journal.max_bytes bounds"
            " (falls when pruned)",
            registry=r,
        )
        self.journal_max_bytes = Gauge(
            "serving_guard_journal_max_bytes",
            "journal.max_bytes: the bound on serving_guard_journal_used_bytes",
            registry=r,
        )
        self.incidents_open_bytes = Gauge(
            "serving_guard_incidents_open_bytes",
            "About the memory the open incidents hold (bounded by dedupe.max_open_bytes)",
            registry=r,
        )
        self.incidents_forgotten = Counter(
            "serving_guard_incidents_forgotten",
            "Open incidents forgotten before their window ended, the table being at its bound"
            " (dedupe.max_open_bytes): a repeat of one opens a new incident",
            registry=r,
        )
        self.breaker_open = Gauge(
            "serving_guard_circuit_breaker_open",
            "1 while quarantines are suspended by the breaker",
            registry=r,
        )
        self.block_breaker_open = Gauge(
            "serving_guard_block_circuit_breaker_open",
            "1 while destination blocks are suspended by their breaker (guardrails.max_blocks)",
            registry=r,
        )
        self.http_connections_refused = Counter(
            "serving_guard_http_connections_refused",
            "HTTP input connections closed unread because inputs.http.max_connections were open",
            registry=r,
        )
        # Set to a function of the running input (read at scrape time, not per connection).
        self.http_connections_open = Gauge(
            "serving_guard_http_connections_open", "Connections the HTTP input holds open", registry=r
        )
        self.grpc_connected = Gauge(
            "serving_guard_grpc_connected", "1 while the Falco gRPC stream is up", registry=r
        )
        self.kubernetes_reachable = Gauge(
            "serving_guard_kubernetes_reachable",
            "1 when the API server answered the last readiness check (alerts are taken either way)",
            registry=r,
        )
        self.alert_to_decision = Histogram(
            "serving_guard_alert_to_decision_seconds",
            "From receipt to decision",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # The per-alert counters' children, by label values: ``labels()`` takes a lock and builds
        # a key each call, a visible share of a storm's CPU. Label sets are bounded (see above).
        self._received_by: dict[tuple[str, str], Any] = {}
        self._duplicates_by: dict[str, Any] = {}
        self.alert_to_quarantine = Histogram(
            "serving_guard_alert_to_quarantine_seconds",
            "From receipt to a finished quarantine",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def count_received(self, input_name: str, source: str, *, drill: bool) -> None:
        """One alert accepted into the journal (a drill's counted apart too)."""
        key = (input_name, self.source_label(source))
        child = self._received_by.get(key)
        if child is None:
            child = self._received_by[key] = self.received.labels(*key)
        child.inc()
        if drill:
            self.drills.labels(input_name).inc()

    def count_duplicate(self, rule: str) -> None:
        """One alert folded into an open incident."""
        child = self._duplicates_by.get(rule)
        if child is None:
            child = self.duplicates.labels(self.rule_label(rule))
            if len(self._duplicates_by) < 10_000:  # rule names are the sender's: keep the cache bounded
                self._duplicates_by[rule] = child
        child.inc()

    def rule_label(self, rule: str) -> str:
        return rule if rule in self._rules else OTHER

    def outcome_counts(self) -> dict[tuple[str, str], int]:
        """Action outcomes counted since start, by (action, status), those seen only."""
        counts: dict[tuple[str, str], int] = {}
        for metric in self.outcomes.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total") and sample.value:
                    counts[(sample.labels["action"], sample.labels["status"])] = int(sample.value)
        return counts

    def policy_label(self, policy: str) -> str:
        return policy if policy in self._policies else OTHER

    @staticmethod
    def source_label(source: str) -> str:
        return source if source in KNOWN_SOURCES else OTHER

    def render(self) -> bytes:
        return generate_latest(self.registry)
