"""Which pods a quarantine or destination block is on, as the journal tells it: of each pod, the
latest incident that put one on, until something ends it (a release, the recheck's lapse, the pod
gone). Read incrementally from the journal's action records (IsolationRecord), so that the check of
incidents no longer open (Pipeline.recheck_closed) costs one pass over the records at start and a
few new ones a minute after. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

PodRef = tuple[str, str]  # namespace, name


@dataclass(frozen=True, slots=True)
class IsolationRecord:
    """One journaled action that puts something on a pod or ends it, in the journal's order."""

    row_id: int
    incident_id: str | None
    namespace: str
    pod: str
    # True: a quarantine left the pod isolated or LEAKY, or a block labelled it. False: a release,
    # a lapse the recheck found (said once: nothing more to prove), or the pod found gone.
    puts_on: bool


class IsolatedPods:
    """The latest incident of each pod whose quarantine or block may still be on it."""

    def __init__(self) -> None:
        self._after = 0  # the last record read
        self._by_pod: dict[PodRef, str] = {}

    @property
    def after(self) -> int:
        """The journal's records after this one are the ones not read yet."""
        return self._after

    def read(self, records: Iterable[IsolationRecord]) -> None:
        """Take in ``records`` (those after ``after``, in order)."""
        for record in records:
            self._after = max(self._after, record.row_id)
            pod = (record.namespace, record.pod)
            if record.puts_on and record.incident_id is not None:
                self._by_pod[pod] = record.incident_id
            elif not record.puts_on:
                self._by_pod.pop(pod, None)

    def incidents(self) -> dict[PodRef, str]:
        """Of each pod, the incident whose quarantine or block may still be on it."""
        return dict(self._by_pod)

    def forget(self, pod: PodRef) -> None:
        """No longer list ``pod`` (its incident's record is gone, or nothing of it is on the pod)."""
        self._by_pod.pop(pod, None)
