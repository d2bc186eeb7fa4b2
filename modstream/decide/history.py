"""Per-uploader history kept in a table: the uploader's recent strikes (takedown matches).

Pure functions over a small JSON-able dict, so the table holds plain data and the rules stay
testable. The table is written only when an upload strikes, which is rare, so the common
case costs a read. Strikes count only events created before the one being decided, which
keeps a redelivered event's decision identical to the first one.
"""

from __future__ import annotations

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
