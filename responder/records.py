"""JSON forms of the decision-side records, for the journal and the audit trail."""

from __future__ import annotations

from typing import Any

from responder.actions.outcome import Lapse
from responder.cluster.context import ContainerInfo, OwnerRef, PodContext
from responder.cluster.verify import Verification, VerificationStatus
from responder.config import ActionName
from responder.policy import DRY_RUN_BY_GUARDRAILS, Decision, Reopened


def pod_to_json(pod: PodContext) -> dict[str, Any]:
    return {
        "namespace": pod.namespace,
        "name": pod.name,
        "uid": pod.uid,
        "node": pod.node,
        "phase": pod.phase,
        "labels": dict(pod.labels),
        "annotations": dict(pod.annotations),
        "service_account": pod.service_account,
        "containers": [
            {
                "name": c.name,
                "image": c.image,
                "image_id": c.image_id,
                "container_id": c.container_id,
                "init": c.init,
                **({"previous_container_id": c.previous_container_id} if c.previous_container_id else {}),
                **({"awaiting_run": True} if c.awaiting_run else {}),
            }
            for c in pod.containers
        ],
        "owners": [{"kind": o.kind, "name": o.name, "api_version": o.api_version} for o in pod.owners],
        "namespace_labels": dict(pod.namespace_labels),
        **({"namespace_labels_error": pod.namespace_labels_error} if pod.namespace_labels_error else {}),
        "resource_version": pod.resource_version,
        **({"host_network": True} if pod.host_network else {}),
        **({"network_escape": pod.network_escape} if pod.network_escape else {}),
        **({"created_ns": pod.created_ns} if pod.created_ns is not None else {}),
    }


def pod_from_json(data: dict[str, Any]) -> PodContext:
    return PodContext(
        namespace=data["namespace"],
        name=data["name"],
        uid=data.get("uid", ""),
        node=data.get("node"),
        phase=data.get("phase"),
        labels=dict(data.get("labels") or {}),
        annotations=dict(data.get("annotations") or {}),
        service_account=data.get("service_account"),
        containers=tuple(
            ContainerInfo(
                name=c["name"],
                image=c.get("image", ""),
                image_id=c.get("image_id"),
                container_id=c.get("container_id"),
                init=bool(c.get("init", False)),
                previous_container_id=c.get("previous_container_id"),
                awaiting_run=bool(c.get("awaiting_run", False)),
            )
            for c in data.get("containers") or []
        ),
        owners=tuple(
            OwnerRef(o["kind"], o["name"], o.get("api_version", "")) for o in data.get("owners") or []
        ),
        namespace_labels=dict(data.get("namespace_labels") or {}),
        namespace_labels_error=data.get("namespace_labels_error") or None,
        resource_version=data.get("resource_version"),
        host_network=data.get("host_network") is True,
        network_escape=data.get("network_escape") or None,
        created_ns=created if isinstance(created := data.get("created_ns"), int) else None,
    )


def verification_to_json(verification: Verification) -> dict[str, Any]:
    return {
        "status": verification.status.value,
        "reason": verification.reason,
        "container_name": verification.container_name,
    }


def verification_from_json(data: dict[str, Any]) -> Verification:
    return Verification(
        status=VerificationStatus(data["status"]),
        reason=data.get("reason", ""),
        container_name=data.get("container_name"),
    )


# A decision's record key: when it was made again (a retry of a withheld isolation), the
# incident's decided_ns staying its first decision's time.
DECIDED_AGAIN = "decided_again_ns"


def decision_to_json(decision: Decision) -> dict[str, Any]:
    return {
        "policy": decision.policy,
        "actions": [a.value for a in decision.actions],
        "requested": [a.value for a in decision.requested],
        "dry_run": decision.dry_run,
        "dry_run_by": decision.dry_run_by,
        "withheld": list(decision.withheld),
        "slack_channel": decision.slack_channel,
        "notify": decision.notify,
        "unverified": decision.unverified,
        "breaker_open": decision.breaker_open,
        **({"block_breaker_open": True} if decision.block_breaker_open else {}),
        **({"opt_in_unknown": True} if decision.opt_in_unknown else {}),
        **({"opt_in_missing": decision.opt_in_missing} if decision.opt_in_missing else {}),
        **({"isolate": decision.isolate} if decision.isolate else {}),
        **({"escalated": decision.escalated} if decision.escalated else {}),
        **({"reopens": reopened_to_json(decision.reopens)} if decision.reopens is not None else {}),
    }


def reopened_to_json(reopened: Reopened) -> dict[str, Any]:
    return {
        "incident_id": reopened.incident_id,
        "lapsed": reopened.lapse.action,
        "detail": reopened.lapse.detail,
        "checked_ns": reopened.checked_ns,
    }


def reopened_from_json(data: object) -> Reopened | None:
    """None for a record without one (or one this version cannot read: the incident is shown
    without it, never refused)."""
    if not isinstance(data, dict):
        return None
    incident_id, lapsed, detail, checked = (
        data.get("incident_id"),
        data.get("lapsed"),
        data.get("detail"),
        data.get("checked_ns"),
    )
    if not (isinstance(incident_id, str) and isinstance(lapsed, str) and isinstance(detail, str)):
        return None
    if not isinstance(checked, int) or isinstance(checked, bool):
        return None
    return Reopened(incident_id, Lapse(lapsed, detail), checked)


def decision_from_json(data: dict[str, Any]) -> Decision:
    return Decision(
        policy=data["policy"],
        actions=tuple(ActionName(a) for a in data.get("actions", ())),
        requested=tuple(ActionName(a) for a in data.get("requested", ())),
        # Records from before per-policy dry-run knew only the global one.
        dry_run_by=data.get("dry_run_by", DRY_RUN_BY_GUARDRAILS if data.get("dry_run") else ""),
        withheld=tuple(data.get("withheld", ())),
        slack_channel=data.get("slack_channel"),
        notify=bool(data.get("notify", True)),
        unverified=bool(data.get("unverified", False)),
        breaker_open=bool(data.get("breaker_open", False)),
        block_breaker_open=bool(data.get("block_breaker_open", False)),
        opt_in_unknown=data.get("opt_in_unknown") is True,
        opt_in_missing=str(data.get("opt_in_missing", "")),
        isolate=str(data.get("isolate", "")),
        escalated=str(data.get("escalated", "")),
        reopens=reopened_from_json(data.get("reopens")),
    )
