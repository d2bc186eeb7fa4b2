"""Per-uploader history kept in a table: recent matches (strikes) and decision times.

Pure functions over a small JSON-able dict, so the table holds plain data and the rules stay
testable. Strikes count only events created before the one being decided, which keeps a
redelivered event's decision identical to the first one.
"""

from __future__ import annotations

from typing import Any

MAX_REMEMBERED = 64


def empty() -> dict[str, Any]:
    return {"strikes": [], "decided": {}}


def prior_strikes(history: dict[str, Any], event_id: str, created: float, window_s: int) -> int:
    """Strikes by other events created in the window before this one."""
    return sum(
        1
        for other_id, at in history["strikes"]
        if other_id != event_id and created - window_s <= at < created
    )


def record(
    history: dict[str, Any], event_id: str, created: float, struck: bool, decided_at: float
) -> dict[str, Any]:
    """A new history with this event remembered (bounded; oldest forgotten first)."""
    strikes = [s for s in history["strikes"] if s[0] != event_id]
    if struck:
        strikes.append([event_id, created])
    strikes = sorted(strikes, key=lambda s: s[1])[-MAX_REMEMBERED:]
    decided = dict(history["decided"])
    decided[event_id] = decided_at
    if len(decided) > MAX_REMEMBERED:
        decided = dict(sorted(decided.items(), key=lambda item: item[1])[-MAX_REMEMBERED:])
    return {"strikes": strikes, "decided": decided}
