"""Only a verified incident's post goes before the other incidents' posts in Slack: a storm of
alerts that name no pod, or name pods the responder may not read (403), is as easy to send as a
storm of forged ones, and must not queue on-call's genuine post behind it either. The journal's
order of due posts for every verification status; then through the running responder, with the
cluster emulator and the local Slack recorder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from responder.alert import Alert
from responder.alert_json import alert_from_mapping
from responder.cluster.verify import Verification, VerificationStatus
from responder.ingest.sink import InputName
from responder.journal.store import IncidentRow, Journal
from responder.policy import Decision
from responder.records import decision_to_json, verification_to_json
from simulators.cluster_emulator import Fault as KubeFault
from simulators.falco_json import falco_alert
from simulators.seed import SeededPod
from simulators.slack_sink import Fault, SlackSink
from tests.helpers import SHELL_RULE
from tests.responder.test_journal import alert, open_journal
from tests.responder.test_notifications import Seeded, settle, shell, sink, start

__all__ = ["sink"]  # the fixture, used by name

STORM = 20


# -- the journal's order ------------------------------------------------------------------------


def decided_incident(journal: Journal, number: int, status: VerificationStatus, due_ns: int) -> str:
    """An incident decided with ``status``, its post due at ``due_ns``; its id."""
    incident_id = f"inc-{status.value}"
    first = alert(number)
    journal.run_sync(Journal.op_append_alert(first, "http", due_ns))
    opened = (first.alert_id, due_ns, due_ns, 1, False, first.time_ns)
    row = IncidentRow(incident_id, incident_id, "r", "ml", "p1", "c", "h", *opened)
    journal.run_sync(Journal.op_open_incident(row))
    unverified = status is VerificationStatus.UNVERIFIED  # as the policy decides it
    decision = Decision(policy="p", actions=(), requested=(), unverified=unverified)
    journal.run_sync(
        Journal.op_record_decision(
            incident_id,
            due_ns,
            verification_to_json(Verification(status, "as the test says")),
            decision_to_json(decision),
            None,
        )
    )
    journal.run_sync(Journal.op_schedule_notification(incident_id, "incident", None, due_ns, due_ns))
    return incident_id


def test_only_a_verified_incidents_post_goes_before_the_other_incidents_posts(tmp_path: Path) -> None:
    journal = open_journal(tmp_path)
    try:
        # Every other status's post is due first (the longest due goes first within a rank), then
        # a repeat count, then the verified incident's post and a reply saying what a person did.
        others = [status for status in VerificationStatus if status is not VerificationStatus.VERIFIED]
        unverified_ids = [decided_incident(journal, n, status, 10 + n) for n, status in enumerate(others)]
        journal.run_sync(Journal.op_schedule_notification(unverified_ids[0], "repeat", None, 20, 20))
        verified_id = decided_incident(journal, 30, VerificationStatus.VERIFIED, 30)
        journal.run_sync(Journal.op_schedule_notification(unverified_ids[0], "by_hand", None, 31, 31))

        due = [(row.kind, row.incident_id) for row in journal.due_notifications(100)]
        assert due == [
            ("incident", verified_id),
            ("by_hand", unverified_ids[0]),
            *(("incident", incident_id) for incident_id in unverified_ids),
            ("repeat", unverified_ids[0]),
        ]
    finally:
        journal.close()


# -- through the running responder ---------------------------------------------------------------


def podless(pod: SeededPod, n: int) -> Alert:
    """A shell alert that names no pod (a host event, or Falco without Kubernetes metadata); its own
    incident by its tag."""
    fields = {"proc.name": "sh", "proc.cmdline": f"sh {n}", "k8s.ns.name": None, "k8s.pod.name": None}
    return alert_from_mapping(
        falco_alert(pod, SHELL_RULE, "Critical", "shell", {**fields, "container.id": "host"}, tags=[f"t{n}"])
    )


def unreadable(pod: SeededPod, n: int) -> Alert:
    """A shell alert naming a made-up pod the API refuses to show (403, as under namespaced RBAC)."""
    return shell(pod, n, **{"k8s.pod.name": f"ghost-{n}", "container.id": f"{n:04x}deadbeef"})


def forbid_ghost_pods(seeded: Seeded) -> None:
    for n in range(STORM):
        seeded[0].emulator.inject(KubeFault(403, method="GET", plural="pods", name=f"ghost-{n}", times=100))


@pytest.mark.parametrize(
    ("storm", "prepare", "status"),
    [
        (podless, None, "no_pod_identity"),
        (unreadable, forbid_ghost_pods, "lookup_failed"),
    ],
    ids=["no pod named", "pod unreadable"],
)
async def test_a_genuine_post_goes_before_a_storm_of_alerts_that_cannot_be_verified(
    tmp_path: Path,
    seeded: Seeded,
    sink: SlackSink,
    storm: Callable[[SeededPod, int], Alert],
    prepare: Callable[[Seeded], None] | None,
    status: str,
) -> None:
    if prepare is not None:
        prepare(seeded)
    # The first post is slow: the storm, then the genuine alert, queue up behind it meanwhile.
    # (Under the Slack client's 10 s timeout: a post timed out would be looked for and sent again.)
    sink.inject(Fault(status=200, delay_seconds=9.0, times=1, method="chat.postMessage"))
    responder = await start(tmp_path, seeded, sink)
    try:
        assert responder.pipeline is not None
        pods = seeded[1]
        for n in range(STORM):
            await responder.pipeline.submit(storm(pods["triton"], n), InputName.HTTP)

        def queued() -> int:
            with responder.journal.reader() as conn:
                return int(
                    conn.execute(
                        "SELECT COUNT(*) FROM notifications n JOIN incidents i USING (incident_id)"
                        " WHERE n.kind = 'incident' AND json_extract(i.verification, '$.status') = ?",
                        (status,),
                    ).fetchone()[0]
                )

        await settle(responder, lambda: queued() == STORM and bool(sink.requests("chat.postMessage")))
        await responder.pipeline.submit(shell(pods["vllm"], 99), InputName.HTTP)

        def posts_queued() -> int:
            with responder.journal.reader() as conn:
                return int(
                    conn.execute("SELECT COUNT(*) FROM notifications WHERE kind = 'incident'").fetchone()[0]
                )

        # The genuine alert's post is journaled while the slow post is still on its way (what the
        # order is about: checked, not timed).
        await settle(responder, lambda: posts_queued() == STORM + 1)
        assert sink.requests("chat.postMessage")[0].status is None
        await settle(responder, lambda: len(sink.requests("chat.postMessage")) >= 3, timeout=30)
        genuine = [pods["vllm"].name in str(r.json or r.form) for r in sink.requests("chat.postMessage")]
        # Right after the slow one: not after the rest of the storm.
        assert genuine[:2] == [False, True], genuine
    finally:
        await responder.stop()
