"""One sync of one exchange: fetch with python-threatexchange from the stored checkpoint,
turn each page into bank writes (``mapping``), and hand them with the new state to a sink
that writes both atomically (the Kafka shell: one transaction).

The library's fetch is blocking (``requests``), so each page is fetched in a thread, with a
time bound. A page is written in slices of ``slice_records`` updates; only the last slice
carries the page's checkpoint, so a crash mid-page refetches the page, and the ledger
(rebuilt from ``hashbank``) finds the slices already written unchanged: nothing twice.

A fetch that starts without a checkpoint returns everything the exchange has (a file, the
sample, an API whose checkpoint went stale): at its end, what it did not return is deleted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import dacite
from threatexchange.exchanges.fetch_state import FetchCheckpointBase

from modstream.contracts import ExchangeConfig, ExchangeState
from modstream.exchanges.catalog import TX_SIGNAL_TYPES, collab_config, open_exchange
from modstream.exchanges.mapping import Ledger, Page


class StateSink(Protocol):
    async def write(
        self, config: ExchangeConfig, writes: dict[str, bytes | None], state: ExchangeState
    ) -> None:
        """Write the bank records and the exchange's state, all or nothing."""


class SyncError(Exception):
    """A sync failed; the message is safe to show (no credentials, no query strings)."""


def resumable(checkpoint_cls: type[FetchCheckpointBase]) -> bool:
    """Whether the API's checkpoint says where to resume (it has fields); APIs without one
    return their whole dataset on every fetch."""
    return (
        bool(dataclasses.fields(checkpoint_cls))
        if dataclasses.is_dataclass(checkpoint_cls)
        else False
    )


def save_checkpoint(checkpoint: FetchCheckpointBase | None) -> dict[str, Any] | None:
    if checkpoint is None or not dataclasses.is_dataclass(checkpoint):
        return None
    return _jsonable(dataclasses.asdict(checkpoint))


def restore_checkpoint(
    checkpoint_cls: type[FetchCheckpointBase], saved: dict[str, Any] | None
) -> FetchCheckpointBase | None:
    """The stored checkpoint, or None (start over) if there is none, the API keeps none,
    it no longer parses (a library upgrade) or the API says it is stale."""
    if saved is None or not resumable(checkpoint_cls):
        return None
    try:
        checkpoint = dacite.from_dict(checkpoint_cls, saved, dacite.Config(cast=[set, tuple]))
    except (dacite.DaciteError, TypeError, ValueError):
        return None
    return None if checkpoint.is_stale() else checkpoint


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if hasattr(value, "value") and not isinstance(value, str | int | float | bool):
        return value.value  # an enum
    return value


_QUERY = re.compile(r"(https?://[^\s?'\"]+)\?[^\s'\"]*")


def describe(exc: BaseException) -> str:
    """One line saying what failed, with URLs' query strings cut (ThreatExchange passes its
    token in one) and bounded in length."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if status is not None:
        url = _QUERY.sub(r"\1", str(getattr(response, "url", "")))
        reason = getattr(response, "reason", "") or ""
        text = f"HTTP {status} {reason} from {url}".strip()
    else:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return _QUERY.sub(r"\1", text).replace("\n", " ")[:500]


@dataclasses.dataclass
class SyncLimits:
    page_timeout_s: float = 300.0
    slice_records: int = 5000


async def sync_exchange(
    config: ExchangeConfig,
    state: ExchangeState | None,
    ledger: Ledger,
    sink: StateSink,
    limits: SyncLimits,
    progress: Callable[[ExchangeState], None] = lambda state: None,
    clock: Callable[[], float] = time.time,
) -> ExchangeState:
    """Run one sync to its end; returns the final state (also written). On failure, the
    last written state stands (its checkpoint is where the next attempt resumes) and
    ``SyncError`` says why."""
    state = state or ExchangeState(api=config.api)
    if state.api != config.api:  # the exchange was re-added with another API: start over
        state = ExchangeState(
            api=config.api,
            fetched=state.fetched,
            published=state.published,
            deleted=state.deleted,
            unchanged=state.unchanged,
        )
    state = dataclasses.replace(state, last_attempt_at=clock(), syncing=True)
    try:
        api = await asyncio.wait_for(
            asyncio.to_thread(open_exchange, config), limits.page_timeout_s
        )
        api_cls = type(api)
        collab = collab_config(config)
        checkpoint = restore_checkpoint(api_cls.get_checkpoint_cls(), state.checkpoint)
        full = checkpoint is None
        updates = api.fetch_iter(TX_SIGNAL_TYPES, checkpoint)
        seen: set[str] = set()
        added_at = datetime.fromtimestamp(clock(), UTC).isoformat(timespec="seconds")
        while True:
            delta = await asyncio.wait_for(
                asyncio.to_thread(next, updates, None), limits.page_timeout_s
            )
            if delta is None:
                break
            slices = _slices(delta.updates, limits.slice_records)
            for number, part in enumerate(slices or [{}], start=1):
                page = ledger.plan(config, api_cls, collab, part, added_at)
                if full:
                    seen |= page.seen
                last = number == max(1, len(slices))
                state = _counted(state, page)
                if last:
                    state = dataclasses.replace(
                        state,
                        checkpoint=save_checkpoint(delta.checkpoint),
                        progress_at=_progress(delta.checkpoint),
                    )
                await sink.write(config, page.writes, state)
                ledger.commit(page)
                progress(state)
        sweep = ledger.sweep(seen) if full else Page()
        state = dataclasses.replace(
            _counted(state, sweep),
            syncing=False,
            last_success_at=clock(),
            error="",
            failures=0,
        )
        await sink.write(config, sweep.writes, state)
        ledger.commit(sweep)
        progress(state)
        return state
    except asyncio.CancelledError:
        raise
    except TimeoutError:
        raise SyncError(f"no answer within {limits.page_timeout_s:g} s") from None
    except Exception as exc:
        raise SyncError(describe(exc)) from exc


def _slices(updates: dict[Any, Any], size: int) -> list[dict[Any, Any]]:
    items = iter(updates.items())
    return list(iter(lambda: dict(itertools.islice(items, size)), {}))


def _progress(checkpoint: FetchCheckpointBase | None) -> float | None:
    stamp = checkpoint.get_progress_timestamp() if checkpoint is not None else None
    return float(stamp) if stamp else None


def _counted(state: ExchangeState, page: Page) -> ExchangeState:
    skipped = dict(state.skipped)
    for reason, count in page.skipped.items():
        skipped[reason] = skipped.get(reason, 0) + count
    return dataclasses.replace(
        state,
        fetched=state.fetched + page.fetched,
        published=state.published + page.published,
        deleted=state.deleted + page.deleted,
        unchanged=state.unchanged + page.unchanged,
        skipped=dict(sorted(skipped.items())[:64]),
    )
