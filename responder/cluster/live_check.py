"""An alert checked against its pod as the API has it now: the cached pod, read afresh before an
alert is refused, and, for a young alert whose container the kubelet has not listed yet, read again
a few times until it is (each read shared by the pod's waiting alerts, so a storm of them costs the
API one read a second)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from responder.alert import Alert
from responder.cluster.context import PodContext
from responder.cluster.enrich import LookupStatus, PodDirectory, PodLookup
from responder.cluster.pool import in_pool
from responder.cluster.unlisted_ids import UnlistedIds, UnlistedKey
from responder.cluster.verify import (
    LISTING_LAG_NS,
    Verification,
    VerificationStatus,
    listing_lag_may_explain,
    pod_named,
    unlisted_on_its_node,
    verify_alert,
)

# An alert about a container the pod's status does not list yet (the kubelet reports a run about a
# second after it starts; Falco is faster) waits for it: the pod is read again this many times, this
# far apart. (Only a young alert: verify.LISTING_LAG_SECONDS.)
LISTING_READS = 3
LISTING_PAUSE_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class ReadBeforeLock:
    """What LivePodCheck.wait_until_listed read before the pod's lock, for the check under it."""

    # The read failed (not found, the API): decided on as it is, not asked for again.
    failed: PodLookup | None = None
    # The cache holds a read made since the alert came: a failed check is not read again.
    fresh: bool = False


class LivePodCheck:
    """Checks alerts against their pods (``directory``'s cache and reads, on ``executor``);
    remembers how long each container id has gone unlisted on its pod."""

    def __init__(
        self,
        directory: PodDirectory,
        executor: ThreadPoolExecutor,
        verify_node: bool,
        clock_ns: Callable[[], int],
    ) -> None:
        self._directory = directory
        self._executor = executor
        self._verify_node = verify_node
        self._clock_ns = clock_ns
        # The pod reads alerts waiting for their container to be listed share (_shared_read).
        self._listing_reads: dict[tuple[str, str, float], asyncio.Task[PodLookup]] = {}
        self._unlisted = UnlistedIds()

    async def verify(
        self,
        alert: Alert,
        *,
        fresh: bool = False,
        read: PodLookup | None = None,
        recheck: bool = True,
        received_ns: int | None = None,
        again: bool = False,
    ) -> tuple[Verification, PodContext | None]:
        """The alert checked against its pod (as cached, or read ``fresh``; ``read``: a read of it
        made just now, which failed), and the pod. ``recheck``: a cached pod that fails the check
        is read afresh (False: the cache holds a read made since the alert came). ``received_ns``:
        when the alert came, which says whether the kubelet's lag may explain it (see check);
        ``again``: a retry's check (its alert was checked when it came)."""
        named = pod_named(alert)
        if isinstance(named, Verification):
            return named, None
        namespace, name = named
        if read is None:
            lookup = await in_pool(self._executor, self._directory.lookup, namespace, name, fresh=fresh)
        else:
            lookup = read
        if lookup.status is LookupStatus.FOUND and lookup.pod is not None:
            verification = self.check(alert, lookup.pod, received_ns, again=again)
            if verification.verified or fresh or not recheck:
                return verification, lookup.pod
            # The cached pod may predate a container restart: read it fresh once before refusing,
            # and refuse on the fresh read alone (a failed one leaves us not knowing, not a forgery).
            return await self.verify(alert, fresh=True, received_ns=received_ns, again=again)
        if lookup.status is LookupStatus.NOT_FOUND:
            return Verification(VerificationStatus.POD_NOT_FOUND, lookup.error), None
        return Verification(VerificationStatus.LOOKUP_FAILED, lookup.error), None

    def check(
        self, alert: Alert, pod: PodContext, received_ns: int | None, *, again: bool = False
    ) -> Verification:
        """verify_alert, the alert's age taken once, as it came (None: not looked at: only a
        VERIFIED answer counts there), and how long its id has gone unlisted on the pod since its
        first alert came (the same id's repeats, retries and later incidents count from there;
        ``again``, a retry's, from when its alert came if nothing was noted: a restart, the bound)."""
        check_node = self._verify_node
        if received_ns is None:
            return verify_alert(alert, pod, check_node=check_node)
        key = UnlistedKey(pod.namespace, pod.name, alert.container_id or "")
        noted = self._unlisted.since(key)
        if noted is None and again:
            noted = received_ns
        # Counted from an earlier check's finding only: a first one waits its reads whatever the
        # clock says meanwhile (a step forward must not skip them).
        unlisted_for = 0 if noted is None else self._clock_ns() - min(noted, received_ns)
        verification = verify_alert(
            alert, pod, check_node=check_node, now_ns=received_ns, unlisted_for_ns=unlisted_for
        )
        if verification.status is VerificationStatus.NOT_LISTED_YET:
            self._unlisted.note(key, received_ns if noted is None else min(noted, received_ns))
        elif verification.verified:
            self._unlisted.forget(key)
        return verification

    def lag_may_explain(self, alert: Alert, received_ns: int) -> bool:
        """Whether waiting for the kubelet to list the alert's container may help: the alert was
        young when it came, and its id has not gone unlisted on the pod for longer than the lag."""
        key = UnlistedKey(alert.namespace or "", alert.pod or "", alert.container_id or "")
        noted = self._unlisted.since(key)
        unlisted_for = 0 if noted is None else self._clock_ns() - min(noted, received_ns)
        return listing_lag_may_explain(alert, received_ns) and unlisted_for <= LISTING_LAG_NS

    async def wait_until_listed(self, alert: Alert, received_ns: int) -> ReadBeforeLock:
        """A young alert whose container the pod's status does not list yet (NOT_LISTED_YET: one of
        its containers is starting or restarting; or a restart the status still shows as the old
        run) waits until it is, or LISTING_READS reads later, so that an attack in a container's
        first second is decided on, not left undecided or called a forgery. The pod's waiting
        alerts share each read: a storm of them costs the API one read a second.

        A cached pod that fails the check is read afresh here (one read shared by the pod's alerts
        that ask meanwhile, as the API reads under the pod's lock used to be one at a time), not
        under the lock again; a failed first read is handed on (a failure is not cached) rather
        than asked for twice. A read made here is kept for the check under the lock only if no
        action changed the pod meanwhile (PodDirectory drops such a read)."""
        named = pod_named(alert)
        if isinstance(named, Verification):
            return ReadBeforeLock()
        namespace, name = named
        if not self.lag_may_explain(alert, received_ns):
            return ReadBeforeLock()  # checked as any alert
        lookup: PodLookup = await in_pool(self._executor, self._directory.lookup, namespace, name)
        if lookup.pod is None:
            return ReadBeforeLock(failed=lookup)
        if self.check(alert, lookup.pod, received_ns).verified:
            return ReadBeforeLock()
        try:
            # The cached pod may predate a container's start or restart.
            lookup = await self._shared_read(namespace, name, pause=0.0)
            reads = 0
            while (
                reads < LISTING_READS
                and lookup.pod is not None
                and unlisted_on_its_node(alert, lookup.pod, check_node=self._verify_node)
            ):
                lookup = await self._shared_read(namespace, name, pause=LISTING_PAUSE_SECONDS)
                reads += 1
        except Exception:  # the check under the pod's lock reads it again, and says what failed
            return ReadBeforeLock()
        if lookup.pod is None:
            return ReadBeforeLock(failed=lookup)
        # Cached unless its namespace could not be read (then read again under the lock).
        return ReadBeforeLock(fresh=lookup.pod.namespace_labels_error is None)

    def _shared_read(self, namespace: str, name: str, *, pause: float) -> asyncio.Future[PodLookup]:
        """The pod read afresh after ``pause`` seconds, by one read for all who ask meanwhile (a
        read already done is not shared: its result is older than asked for)."""
        key = (namespace, name, pause)
        read = self._listing_reads.get(key)
        if read is None or read.done():
            read = asyncio.get_running_loop().create_task(self._read_after_pause(namespace, name, pause))
            self._listing_reads[key] = read
            read.add_done_callback(lambda done: self._forget_read(key, done))
        # One waiter cancelled (a shutdown) does not cancel the others' read.
        return asyncio.shield(read)

    def _forget_read(self, key: tuple[str, str, float], read: asyncio.Task[PodLookup]) -> None:
        if self._listing_reads.get(key) is read:  # not a newer read taken since
            del self._listing_reads[key]

    async def _read_after_pause(self, namespace: str, name: str, pause: float) -> PodLookup:
        if pause > 0:
            await asyncio.sleep(pause)
        lookup: PodLookup = await in_pool(self._executor, self._directory.lookup, namespace, name, fresh=True)
        return lookup
