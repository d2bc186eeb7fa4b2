"""Flood detection: an entry whose matches jump far above its own baseline stops acting.

A bad entry pushed to a shared bank (a meme, a logo, a flat image's hash) can take down
thousands of posts before anyone notices. Each worker counts the acting matches of each
entry in one-second buckets; an entry floods when, in the last ``window_s``, it matched at
least ``min_matches`` times *and* at a rate over ``factor`` times its own trailing rate
(the ``baseline_s`` before the window). An entry this worker has seen for less than one
window has no rate to compare with (new to the bank, or the worker just started): it floods
only at ``factor`` times ``min_matches`` in its first window, so a restart does not
quarantine every popular entry. The decide stage then quarantines a flooding entry for
every worker (``bank.config``), and a person releases it.

Counts are per worker: with uploads spread over N workers, each sees about 1/N of an entry's
matches, so set ``min_matches`` for one worker's share. Memory is bounded: at most
``max_tracked`` entries (least recently matched forgotten first), each with at most one
bucket per second of ``baseline_s + window_s``.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass


@dataclass(frozen=True)
class FloodPolicy:
    """``min_matches`` 0 turns flood detection off."""

    window_s: float = 60.0
    min_matches: int = 50
    factor: float = 10.0
    baseline_s: float = 3600.0
    max_tracked: int = 10_000


class _Entry:
    __slots__ = ("buckets", "first_seen")

    def __init__(self, at: float) -> None:
        self.buckets: deque[list[float]] = deque()  # [second, count], oldest first
        self.first_seen = at


class FloodWatch:
    def __init__(self, policy: FloodPolicy) -> None:
        self.policy = policy
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def observe(self, key: str, at: float) -> str | None:
        """Count one acting match of entry ``key`` at time ``at`` (epoch seconds); returns
        why it floods when it does (each time, until the caller quarantines it)."""
        policy = self.policy
        if policy.min_matches <= 0:
            return None
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry(at)
            if len(self._entries) > policy.max_tracked:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
        second = float(int(at))
        buckets = entry.buckets
        if buckets and buckets[-1][0] >= second:  # this second (or out of order: the newest)
            buckets[-1][1] += 1
        else:
            buckets.append([second, 1])
        horizon = second - policy.baseline_s - policy.window_s
        while buckets and buckets[0][0] <= horizon:
            buckets.popleft()
        window_start = second - policy.window_s
        recent = sum(count for when, count in buckets if when > window_start)
        if recent < policy.min_matches:
            return None
        history_s = min(policy.baseline_s, window_start - entry.first_seen)
        if history_s < policy.window_s:  # no rate of its own to compare with yet
            if recent < policy.min_matches * max(policy.factor, 1.0):
                return None
            trailing = 0.0
        else:
            before = sum(count for when, count in buckets if when <= window_start)
            trailing = before / history_s
        rate = recent / policy.window_s
        if rate <= policy.factor * trailing:
            return None
        return (
            f"{recent} matches in {policy.window_s:g} s, {rate:.2f}/s against a trailing "
            f"{trailing:.3f}/s (limits: {policy.min_matches} matches, {policy.factor:g}x)"
        )

    def forget(self, key: str) -> None:
        """Start the entry's count afresh (after a person released it)."""
        self._entries.pop(key, None)
