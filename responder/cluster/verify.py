"""Is this alert about the pod it names? The check that stops forged alerts from acting.

A forged alert can name any namespace/pod; it cannot easily know the pod's container ids
(random 64-hex runtime ids) nor make the node match unless it already owns that node. A container
restarted since the alert (a crash, an OOM, the attacker's `kill 1`) is matched by its previous id.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from responder.actions.pod_records import CLOCK_SKEW_NS
from responder.alert import Alert
from responder.cluster.context import PodContext, is_runtime_id
from responder.cluster.enrich import valid_name

# Why an alert cannot be checked against any pod, whatever the cluster holds.
NO_POD_IDENTITY_REASON = "alert carries no k8s.ns.name/k8s.pod.name"
INVALID_NAME_REASON = "namespace or pod is not a valid Kubernetes name"
NO_CONTAINER_ID_REASON = "alert has no container.id to match against the pod"
NOT_RUNTIME_ID_REASON = "container.id is not a runtime container id (12 to 64 hex characters)"
# The reason of a verification that matched the container's run before its last restart.
RESTARTED_SINCE = "container restarted since the alert: the alert's container.id is its previous run"
# The kubelet lists a container's run in the pod's status about a second after it starts: an alert
# older than this whose id is not listed is not explained by that lag.
LISTING_LAG_SECONDS = 30.0
LISTING_LAG_NS = int(LISTING_LAG_SECONDS * 1e9)


class VerificationStatus(StrEnum):
    VERIFIED = "verified"
    # The alert's identity disagrees with the live pod: possible forgery, never acted on.
    UNVERIFIED = "unverified"
    POD_NOT_FOUND = "pod_not_found"
    # The alert carries no namespace/pod (host event, or Falco without Kubernetes metadata).
    NO_POD_IDENTITY = "no_pod_identity"
    # The API could not be asked (outage, RBAC): we do not know, so we do not act.
    LOOKUP_FAILED = "lookup_failed"
    # No container of the pod has the alert's id, but the pod's status does not show every
    # container's current run yet (one is starting or restarting): not known yet, not a forgery.
    NOT_LISTED_YET = "not_listed_yet"


# The pod could not be read, was not found, or did not list the alert's container yet: an isolation
# asked for on such an alert is decided again by a repeat (Pipeline._plan_follow_up).
UNREACHED = frozenset(
    {VerificationStatus.LOOKUP_FAILED, VerificationStatus.POD_NOT_FOUND, VerificationStatus.NOT_LISTED_YET}
)


@dataclass(frozen=True, slots=True)
class Verification:
    status: VerificationStatus
    reason: str = ""
    container_name: str | None = None

    @property
    def verified(self) -> bool:
        return self.status is VerificationStatus.VERIFIED


def verify_alert(
    alert: Alert,
    pod: PodContext,
    *,
    check_node: bool,
    now_ns: int | None = None,
    unlisted_for_ns: int = 0,
) -> Verification:
    """Compare the alert's container id and hostname with the live pod (pure). The id may be a
    container's current one or, restarted since, its previous one (the pod's status keeps it): the
    same pod (its uid and node), so the same network identity, volumes and token. An id the pod
    does not list is NOT_LISTED_YET while one of its containers awaits its run, the alert was
    younger than LISTING_LAG_SECONDS at ``now_ns`` (when it came; None: its age is not looked at)
    and the responder has known the id unlisted on the pod for no longer than that
    (``unlisted_for_ns``: since its first such alert came, until this check)."""
    if alert.namespace != pod.namespace or alert.pod != pod.name:
        return Verification(VerificationStatus.UNVERIFIED, "namespace/name differ from the pod read")
    problem = _container_id_problem(alert)
    if problem is not None:
        return Verification(VerificationStatus.UNVERIFIED, problem)
    container_id = alert.container_id or ""
    container = pod.container_by_id(container_id)
    # Reasons quote the alert, never the live pod: they reach the audit trail, and a sender who
    # could read the pod's real ids or node there could forge an alert that passes this check.
    node_problem = _node_problem(alert, pod) if check_node else None
    if container is None:
        lag_may_explain = (
            bool(pod.awaiting_runs)
            and node_problem is None
            and (now_ns is None or listing_lag_may_explain(alert, now_ns))
        )
        waited_too_long = unlisted_for_ns > LISTING_LAG_NS
        if lag_may_explain and not waited_too_long:
            # Container names, not ids: they are in the pod's spec, no secret to a forger.
            return Verification(
                VerificationStatus.NOT_LISTED_YET,
                f"container.id {container_id[:64]} is not listed in the pod's status yet: the status does"
                f" not show the current run of {', '.join(pod.awaiting_runs)} yet (starting or restarting)",
            )
        not_of_pod = f"container.id {container_id[:64]} is not a container of the pod"
        not_of_pod += _ahead_of_clock(alert, now_ns)
        if lag_may_explain:  # but waited too long for
            not_of_pod += (
                f"; still not listed {unlisted_for_ns / 1e9:.0f} s after its first alert came (the"
                " kubelet lists a run within seconds): forged, or a run gone since"
            )
        if pod.created_ns is not None and alert.time_ns < pod.created_ns - CLOCK_SKEW_NS:
            # A StatefulSet's replica re-created under its name: the alert (taken up late, or
            # replayed) is about the pod before it. Said as the alert's age, not the pod's time.
            not_of_pod += (
                ": the alert's event is older than the pod of this name now running, so it may be about"
                " an earlier pod of this name, gone since, or be forged"
            )
        return Verification(VerificationStatus.UNVERIFIED, not_of_pod)
    if node_problem is not None:
        return Verification(VerificationStatus.UNVERIFIED, node_problem)
    # Verified, and said: the container the alert came from has restarted since (its previous id,
    # as the kubelet keeps it, in the same pod).
    restarted = RESTARTED_SINCE if container.restarted_since(container_id) else ""
    return Verification(VerificationStatus.VERIFIED, restarted, container_name=container.name)


def listing_lag_may_explain(alert: Alert, received_ns: int) -> bool:
    """Whether the alert was young enough when it came (LISTING_LAG_SECONDS) for the kubelet's lag
    to explain an id its pod does not list yet. An event dated ahead of the responder's clock by more
    than the clocks may differ (CLOCK_SKEW_NS) is not young: it is forged, or its node's clock is
    wrong, and never excuses an id the pod does not list (a forger would date every alert ahead)."""
    age_ns = received_ns - alert.time_ns
    return -CLOCK_SKEW_NS <= age_ns <= LISTING_LAG_NS


def _ahead_of_clock(alert: Alert, now_ns: int | None) -> str:
    """For an unverified alert's reason: its event dated ahead of the responder's clock, or ''."""
    if now_ns is None or alert.time_ns - now_ns <= CLOCK_SKEW_NS:
        return ""
    return (
        f"; its event is dated {(alert.time_ns - now_ns) / 1e9:.0f} s ahead of the responder's clock"
        " (forged, or the clock of the node it names is wrong)"
    )


def unlisted_on_its_node(alert: Alert, pod: PodContext, *, check_node: bool) -> bool:
    """The alert's container id (a runtime id) is none of the pod's, and it came from the pod's
    node: a run the pod's status may not show yet. That lag is not only a container awaiting its
    run: after a restart (kill 1) the status keeps showing the old run as running until the
    kubelet reports the new one."""
    container_id = alert.container_id
    return (
        bool(container_id)
        and is_runtime_id(container_id or "")
        and pod.container_by_id(container_id or "") is None
        and (not check_node or _node_problem(alert, pod) is None)
    )


def _node_problem(alert: Alert, pod: PodContext) -> str | None:
    """Why the alert's hostname is not the pod's node, or None."""
    if not alert.hostname:
        return "alert has no hostname to match the pod's node"
    if pod.node is None or alert.hostname != pod.node:
        return f"alert came from host {alert.hostname[:253]!r}, not the pod's node"
    return None


def pod_named(alert: Alert) -> tuple[str, str] | Verification:
    """The namespace and name of the pod the alert names, or the check's answer when it names
    none (a host event) or one no pod can have: nothing to read."""
    namespace, name = alert.namespace, alert.pod
    if not namespace or not name:
        return Verification(VerificationStatus.NO_POD_IDENTITY, NO_POD_IDENTITY_REASON)
    if not valid_name(namespace) or not valid_name(name):
        return Verification(VerificationStatus.UNVERIFIED, INVALID_NAME_REASON)
    return namespace, name


def _container_id_problem(alert: Alert) -> str | None:
    """Why the alert's container.id can match no container of any pod (None: it may)."""
    container_id = alert.container_id
    if not container_id or container_id == "host":
        return NO_CONTAINER_ID_REASON
    if not is_runtime_id(container_id):
        return NOT_RUNTIME_ID_REASON
    return None


def never_verifiable(alert: Alert) -> str | None:
    """Why no pod can ever verify this alert, whatever the cluster holds (None: a pod may): what
    the pod check would say of it, for a check of alerts made before any pod is read."""
    named = pod_named(alert)
    return named.reason if isinstance(named, Verification) else _container_id_problem(alert)
