"""Incidents read back from the journal as the incident table holds them: the open ones at a
restart (and a closed one a recheck takes up again), and those the alerts resumed after a crash
would open."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from responder.alert import Alert
from responder.config import Config
from responder.dedupe import IncidentState, incident_id_for
from responder.incident import IncidentKey
from responder.incident_history import lapsed_in, put_on_pod, released_in
from responder.journal.store import (
    UNREADABLE_RECORD,
    IncidentRow,
    Journal,
    JournaledRepeats,
    PendingAlert,
    report_from_record,
)
from responder.policy import dry_run_lifted

log = logging.getLogger("serving_guard.pipeline")


class JournaledIncidents:
    """Reads incidents from the journal into the incident table's state."""

    def __init__(self, journal: Journal, config: Config, clock_ns: Callable[[], int]) -> None:
        self._journal = journal
        self._config = config
        self._clock_ns = clock_ns

    def decision_readable(self, row: IncidentRow) -> IncidentRow:
        """A held incident whose journaled decision cannot be read is resumed as an undecided one:
        its opener is decided again either way, and only that record's reading would fail."""
        if not row.decided:
            return row
        try:
            record = self._journal.incident_record(row.incident_id)
            if record is not None:
                report_from_record(record)
        except UNREADABLE_RECORD as exc:
            log.error(
                "journaled incident unreadable; its alert is decided again",
                extra={"incident": row.incident_id, "error": f"{type(exc).__name__}: {exc}"},
            )
            return dataclasses.replace(row, decided=False)
        return row

    def restored_state(self, row: IncidentRow) -> IncidentState | None:
        """An open incident from the journal, with its report when it was decided; None when the
        journal lacks its opening alert, or its record cannot be read (logged by its id)."""
        try:
            record = self._journal.incident_record(row.incident_id)
            if record is None or record.get("first_alert") is None:
                return None
            report = report_from_record(record)
        except UNREADABLE_RECORD as exc:
            # One damaged record must not stop recovery: the incident is not restored (a repeat
            # opens a new one), as an incident whose opening alert is unreadable.
            log.error(
                "journaled incident unreadable; not restored",
                extra={"incident": row.incident_id, "error": f"{type(exc).__name__}: {exc}"},
            )
            return None
        repeats_sent, last_repeat_ns = self._journal.repeats_sent(row.incident_id)
        reopen_after_ns = None
        if report is not None and dry_run_lifted(report.decision, self._config, drill=report.key.drill):
            # Dry-run was turned off for it (the usual way from trial to enforcement): an attack
            # still going on must not fold into a prediction for the rest of the window.
            reopen_after_ns = row.opened_ns
            log.info(
                "a dry-run incident's policy now acts: its next repeat is decided afresh",
                extra={"incident": row.incident_id, "policy": report.decision.policy},
            )
        # A lapse the recheck journaled still holds after a restart: the next alert opens a new
        # incident, which says it reopens this one.
        lapsed = lapsed_in(row.incident_id, report) if report is not None else None
        if lapsed is not None and reopen_after_ns is None:
            reopen_after_ns = lapsed.checked_ns
        # A release journaled under it still holds: its repeats fold in without acting.
        released = released_in(report) if report is not None else None
        # What it put on the pod is proven again by the first repeat after the restart (the recheck
        # timer is not journaled; what happened while the responder was down is unknown).
        outcomes = report.outcomes if report is not None else ()
        holding = reopen_after_ns is None and any(put_on_pod(o) for o in outcomes)
        return IncidentState(
            incident_id=row.incident_id,
            key=IncidentKey.of(record["first_alert"]),
            first_alert=record["first_alert"],
            opened_ns=row.opened_ns,
            last_seen_ns=row.last_seen_ns,
            count=row.count,
            report=report,
            restored=True,
            # The thread-counter throttle carries on where it was, not from zero.
            last_repeat_ns=last_repeat_ns,
            repeats_sent=repeats_sent,
            reopen_after_ns=reopen_after_ns,
            recheck_after_ns=self._clock_ns() if holding else None,
            lapsed=lapsed,
            reopens=report.decision.reopens if report is not None else None,
            released=released,
        )

    def openings(
        self, pending: list[PendingAlert]
    ) -> tuple[dict[str, IncidentRow], dict[str, JournaledRepeats]]:
        """What the journal holds of the incidents the resumed alerts would open, by incident id:
        the incidents it holds that the alert opened (their later writes were refused, or cut
        short by a crash), and for the incidents it lacks (their opening write was refused), the
        repeats journaled into them (while that write was in flight), if any, or none when only
        action records name them (the writes after the refused one recorded the actions taken).
        A repeat is journaled after its incident's opener, so one pass over the rows after the
        earliest such opener finds them all; action records are found by their incident index."""
        openers = {incident_id_for(item.alert): item for item in pending}
        rows = self._journal.incidents_by_id(openers)
        held = {
            incident_id: row
            for incident_id, row in rows.items()
            if row.first_alert_id == openers[incident_id].alert.alert_id
        }
        lacking = {incident_id: item for incident_id, item in openers.items() if incident_id not in rows}
        if not lacking:
            return held, {}
        named = self._journal.repeats_after(min(item.seq for item in lacking.values()), lacking)
        for incident_id in self._journal.incidents_acted_on(lacking.keys() - named.keys()):
            named[incident_id] = JournaledRepeats(0, lacking[incident_id].received_ns)
        return held, named

    def opened_by(self, alert: Alert, row: IncidentRow) -> IncidentState:
        """The incident ``alert`` opened, as the journal holds it (its decision is made again, and
        says again which incident it reopens, if its journaled one did)."""
        record = self._journal.incident_record(row.incident_id) if row.decided else None
        report = report_from_record(record) if record is not None else None
        repeats_sent, last_repeat_ns = self._journal.repeats_sent(row.incident_id)
        return IncidentState(
            incident_id=row.incident_id,
            key=IncidentKey.of(alert),
            first_alert=alert,
            opened_ns=row.opened_ns,
            last_seen_ns=row.last_seen_ns,
            count=row.count,
            restored=True,
            last_repeat_ns=last_repeat_ns,
            repeats_sent=repeats_sent,
            reopens=report.decision.reopens if report is not None else None,
        )
