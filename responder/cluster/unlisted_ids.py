"""Since when each container id the responder had alerts of has gone unlisted on its pod.

The kubelet lists a container's run in the pod's status within seconds of its start, so an id a
pod has not listed for longer than that is not explained by the lag (verify.LISTING_LAG_SECONDS),
however freshly its alerts are dated: a forger dating each alert "now" on a pod with a container
restarting must not stay "not verified yet" for as long as the restarts go on.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

# Enough for every starting container of a large cluster at once; beyond it the oldest is
# forgotten (a made-up id sprayed afresh gets a window of its own, then is a possible forgery).
MAX_UNLISTED_IDS = 4096


class UnlistedKey(NamedTuple):
    namespace: str
    pod: str
    container_id: str


class UnlistedIds:
    """When each (pod, container id) was first found not listed on its pod, by the time its first
    such alert came. Bounded: the least recently noted is forgotten first."""

    def __init__(self, limit: int = MAX_UNLISTED_IDS) -> None:
        self._limit = limit
        self._since: OrderedDict[UnlistedKey, int] = OrderedDict()

    def since(self, key: UnlistedKey) -> int | None:
        """When ``key``'s id was first found unlisted (when that alert came), or None: not yet."""
        return self._since.get(key)

    def note(self, key: UnlistedKey, since_ns: int) -> None:
        self._since[key] = since_ns
        self._since.move_to_end(key)
        while len(self._since) > self._limit:
            self._since.popitem(last=False)

    def forget(self, key: UnlistedKey) -> None:
        """The id is listed (verified): a later restart's unlisted run starts afresh."""
        self._since.pop(key, None)

    def __len__(self) -> int:
        return len(self._since)
