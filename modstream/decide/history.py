"""Per-uploader history kept in a table: the uploader's recent strikes (takedown matches).

Pure functions over a small JSON-able dict, so the table holds plain data and the rules stay
testable. The table is written only when an upload strikes, which is rare, so the common
case costs a read. Strikes count only events created before the one being decided, which
keeps a redelivered event's decision identical to the first one.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

MAX_REMEMBERED = 64


def empty() -> dict[str, Any]:
    return {"strikes": []}


def prior_strikes(history: dict[str, Any], event_id: str, created: float, window_s: int) -> int:
    """Strikes by other events created in the window before this one."""
    if not history["strikes"]:  # most uploaders: nothing to count
        return 0
    return sum(
        1
        for other_id, at in history["strikes"]
        if other_id != event_id and created - window_s <= at < created
    )


def has_strike(history: dict[str, Any], event_id: str) -> bool:
    return any(other_id == event_id for other_id, _ in history["strikes"])


def with_strike(history: dict[str, Any], event_id: str, created: float) -> dict[str, Any]:
    """A new history with this event's strike remembered (bounded; oldest forgotten first)."""
    strikes = [s for s in history["strikes"] if s[0] != event_id] + [[event_id, created]]
    return {"strikes": sorted(strikes, key=lambda s: s[1])[-MAX_REMEMBERED:]}


class RecentStrikes:
    """The histories of uploaders struck within the repeat window, and no others: what a
    worker keeps in memory for its partitions (issue 24). Bounded twice: a history not
    struck again for ``window_s`` (by the clock of the worker that wrote it: an event
    created long ago, a backlog, still finds the strikes of its neighbours) is expired
    (``expire``), and past ``max_strikes`` strikes in all, the histories struck least
    recently go first (``put``). Either way the caller writes a tombstone for each key
    returned, so the changelog agrees. Kept in the order written, so expiring looks only
    at the oldest."""

    def __init__(self, window_s: float, max_strikes: int) -> None:
        self.window_s = window_s
        self.max_strikes = max_strikes
        #: key -> (partition, history, when written), oldest written first
        self._histories: OrderedDict[bytes, tuple[int, dict[str, Any], float]] = OrderedDict()
        self._strikes = 0

    def __len__(self) -> int:
        return len(self._histories)

    @property
    def strikes(self) -> int:
        return self._strikes

    def get(self, key: bytes) -> dict[str, Any] | None:
        found = self._histories.get(key)
        return None if found is None else found[1]

    def put(
        self, key: bytes, partition: int, history: dict[str, Any], at: float
    ) -> list[tuple[bytes, int]]:
        """Remember ``history``, written at ``at``; returns the ``(key, partition)``
        forgotten to stay within ``max_strikes`` (never ``key`` itself)."""
        self._remove(key)
        self._histories[key] = (partition, history, at)
        self._strikes += len(history["strikes"])
        forgotten = []
        while self._strikes > self.max_strikes and len(self._histories) > 1:
            oldest = next(iter(self._histories))
            forgotten.append((oldest, self._remove(oldest)))
        return forgotten

    def expire(self, now: float) -> list[tuple[bytes, int]]:
        """Forget the histories last written more than the window before ``now``."""
        horizon = now - self.window_s
        expired = []
        while self._histories:
            key, (_, _, at) = next(iter(self._histories.items()))
            if at >= horizon:
                break
            expired.append((key, self._remove(key)))
        return expired

    def drop_partition(self, partition: int) -> None:
        for key in [k for k, (p, _, _) in self._histories.items() if p == partition]:
            self._remove(key)

    def _remove(self, key: bytes) -> int:
        partition, history, _ = self._histories.pop(key, (-1, empty(), 0.0))
        self._strikes -= len(history["strikes"])
        return partition
