"""What an exchange's fetched records become in a bank, and what one exchange has published.

Each fetched record (python-threatexchange's update key and value) becomes the bank entries
of the signals modstream can use; types it cannot use are counted and skipped. The entry id
is ``<exchange>.<record digest>.<signal digest>``: stable, so a record fetched again replaces
its entries, and the ``Ledger`` (what this exchange has in the bank, per record, rebuilt
from ``hashbank`` when the sync service starts) turns a record's deletion or change into
tombstones and leaves unchanged entries unpublished.

Opinions: an exchange's negative opinion (false positive, test data) removes the entry; a
disputed one (some members positive, some negative) makes it review-only; its tags become
labels. Scalar facts of the record (TCAP's ideology, file type and id) go into provenance.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from threatexchange.exchanges.collab_config import CollaborationConfigBase
from threatexchange.exchanges.fetch_state import (
    AggregateSignalOpinionCategory,
    FetchedSignalMetadata,
)
from threatexchange.exchanges.signal_exchange_api import (
    AnySignalExchangeAPI,
    SignalExchangeAPIWithSimpleUpdates,
)

from modstream.contracts import BankEntry, ExchangeConfig, Verdict, dumps
from modstream.exchanges.catalog import TX_SIGNAL_TYPES
from modstream.signals import for_exchange_name

MAX_LABELS = 16
MAX_PROVENANCE = 16


def record_digest(key: Any) -> str:
    """A short stable digest of an update key (a ``(type, signal)`` pair, an id)."""
    text = "\x1f".join(map(str, key)) if isinstance(key, tuple) else str(key)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fingerprint(*fields: Any) -> bytes:
    """What makes two publications of an entry the same (its fields but the time it was
    added); entries carry it in their provenance, so a restarted sync reads it back."""
    return hashlib.sha256(orjson.dumps(fields)).digest()[:8]


def published(value: bytes) -> tuple[str, str, bytes] | None:
    """``(exchange, record digest, fingerprint)`` of a ``hashbank`` value an exchange sync
    published, else None. Read without the full contract check: rebuilding the ledger of a
    10M-entry exchange parses every one of them."""
    try:
        provenance = orjson.loads(value).get("provenance") or {}
        return (
            provenance["exchange"],
            provenance["record"],
            bytes.fromhex(provenance["fingerprint"]),
        )
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
        return None


@dataclass
class Page:
    """The bank records one fetched page (or a full sync's sweep) writes, and its counts."""

    writes: dict[str, bytes | None] = field(default_factory=dict)
    #: The ledger after the page: record digest -> {bank key: fingerprint} (empty: gone).
    records: dict[str, dict[str, bytes]] = field(default_factory=dict)
    fetched: int = 0
    published: int = 0
    deleted: int = 0
    unchanged: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    #: The digest of every record the page fetched (a full fetch sweeps the others).
    seen: set[str] = field(default_factory=set)


class Ledger:
    """The bank entries one exchange has published, by the record that produced them.

    Compact, because it holds every entry of an exchange (NCMEC's list runs to millions):
    a bank key and an 8-byte fingerprint per entry, and each record's key (or keys)."""

    def __init__(self) -> None:
        self._prints: dict[str, bytes] = {}  # bank key -> fingerprint
        self._keys: dict[str, str | tuple[str, ...]] = {}  # record digest -> bank key(s)

    def __len__(self) -> int:
        return len(self._prints)

    def __contains__(self, bank_key: str) -> bool:
        return bank_key in self._prints

    def know(self, bank_key: str, record: str, print_: bytes) -> None:
        """An entry this exchange published, found in ``hashbank`` (see ``published``)."""
        current = self._printed(record)
        current[bank_key] = print_
        self._set(record, current)

    def forget(self, bank_key: str) -> None:
        """A tombstone found in ``hashbank`` for one of this exchange's entries (its id,
        ``<exchange>.<record>.<signal>``, names its record)."""
        record = bank_key.rsplit(".", 2)[-2]
        printed = self._printed(record)
        if printed.pop(bank_key, None) is not None:
            self._set(record, printed)

    def plan(
        self,
        config: ExchangeConfig,
        api_cls: type[AnySignalExchangeAPI],
        collab: CollaborationConfigBase,
        updates: Mapping[Any, Any],
        added_at: str,
    ) -> Page:
        """The writes that bring the bank in line with a page of fetched updates."""
        page = Page()
        for key, value in updates.items():
            page.fetched += 1
            digest = record_digest(key)
            page.seen.add(digest)
            entries = _entries(config, api_cls, collab, key, value, digest, added_at, page.skipped)
            self._replace(page, digest, {e.key: e for e in entries})
        return page

    def sweep(self, seen: Iterable[str]) -> Page:
        """A full fetch ended: every record it did not return is gone from the exchange."""
        page = Page()
        for digest in set(self._keys) - set(seen):
            self._replace(page, digest, {})
        return page

    def commit(self, page: Page) -> None:
        """The page's writes are in Kafka: remember them."""
        for digest, printed in page.records.items():
            self._set(digest, printed)

    def _printed(self, digest: str) -> dict[str, bytes]:
        keys = self._keys.get(digest, ())
        return {key: self._prints[key] for key in ((keys,) if isinstance(keys, str) else keys)}

    def _set(self, digest: str, printed: dict[str, bytes]) -> None:
        for gone in set(self._printed(digest)) - set(printed):
            del self._prints[gone]
        self._prints.update(printed)
        if not printed:
            self._keys.pop(digest, None)
        else:
            keys = tuple(printed)
            self._keys[digest] = keys[0] if len(keys) == 1 else keys

    def _replace(self, page: Page, digest: str, entries: dict[str, BankEntry]) -> None:
        before = page.records[digest] if digest in page.records else self._printed(digest)
        after: dict[str, bytes] = {}
        for key, entry in entries.items():
            after[key] = print_ = bytes.fromhex((entry.provenance or {})["fingerprint"])
            if before.get(key) == print_:
                page.unchanged += 1
            else:
                page.writes[key] = dumps(entry)
                page.published += 1
        for key in set(before) - set(after):
            page.writes[key] = None
            page.deleted += 1
        if after or before:
            page.records[digest] = after


def _entries(
    config: ExchangeConfig,
    api_cls: type[AnySignalExchangeAPI],
    collab: CollaborationConfigBase,
    key: Any,
    value: Any,
    digest: str,
    added_at: str,
    skipped: Counter[str],
) -> list[BankEntry]:
    if value is None:
        return []
    if issubclass(api_cls, SignalExchangeAPIWithSimpleUpdates) and isinstance(key, tuple):
        signals = {key[0]: {key[1]: value}}  # the key is the signal: no conversion needed
    else:
        converted = api_cls.naive_convert_to_signal_type(TX_SIGNAL_TYPES, collab, {key: value})
        signals = {tx_type.get_name(): found for tx_type, found in converted.items()}
    entries = []
    for type_name, found in signals.items():
        ours = for_exchange_name(type_name)
        if ours is None:
            skipped[type_name] += len(found)
            continue
        for signal, metadata in found.items():
            try:
                normalized = ours.normalize(signal)
            except ValueError:
                skipped[f"invalid {type_name}"] += 1
                continue
            opinion = metadata.get_as_aggregate_opinion()
            hint = _hint(opinion.category, config.action_hint)
            if hint is None:
                skipped["negative opinion"] += 1
                continue
            signal_digest = hashlib.sha256(f"{ours.name}\x1f{normalized}".encode()).hexdigest()
            entry_id = f"{config.name}.{digest}.{signal_digest[:8]}"
            labels = tuple(sorted(str(tag)[:64] for tag in opinion.tags))[:MAX_LABELS]
            provenance = _provenance(config, key, digest, metadata)
            print_ = fingerprint(config.bank, entry_id, ours.name, normalized, labels, hint,
                                 provenance)  # fmt: skip
            provenance["fingerprint"] = print_.hex()
            entries.append(
                BankEntry(
                    config.bank, entry_id, ours.name, normalized, labels, hint, added_at, provenance
                )
            )
    return entries


def _hint(category: AggregateSignalOpinionCategory, default: Verdict) -> Verdict | None:
    if category == AggregateSignalOpinionCategory.NEGATIVE_CLASS:
        return None
    if category == AggregateSignalOpinionCategory.DISPUTED:
        return "review"
    return default


def _provenance(
    config: ExchangeConfig, key: Any, digest: str, metadata: FetchedSignalMetadata
) -> dict[str, str]:
    found = {
        "exchange": config.name,
        "api": config.api,
        "record": digest,
        "exchange_key": (":".join(map(str, key)) if isinstance(key, tuple) else str(key))[:512],
    }
    if dataclasses.is_dataclass(metadata):
        for f in dataclasses.fields(metadata):
            value = getattr(metadata, f.name)
            if isinstance(value, str | int | float | bool) and len(found) < MAX_PROVENANCE - 1:
                found[f.name[:64]] = str(value)[:512]
    return found
