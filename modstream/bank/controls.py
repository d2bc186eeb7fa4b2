"""Controls over banks, entries and platforms, from the compacted ``bank.config`` topic that
every worker replicates: how each bank acts (enabled, share of content, action cap,
thresholds, negative), which entries are disabled or quarantined, and each platform's review
policy (the bank its confirmed reviews feed).

Keys: ``bank/<name>``, ``entry/<bank>/<signal type>/<entry id>`` and ``platform/<name>``; a
tombstone restores the defaults. A record that does not parse is ignored with a warning by
the replica, never half applied.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from modstream.contracts import (
    BankConfig,
    ContractError,
    EntryControl,
    PlatformPolicy,
    parse_bank_key,
)


@dataclass
class BankControls:
    """The replicated state of ``bank.config``: read on every match, so plain dicts."""

    banks: dict[str, BankConfig] = field(default_factory=dict)
    entries: dict[str, EntryControl] = field(default_factory=dict)
    platforms: dict[str, PlatformPolicy] = field(default_factory=dict)

    def apply(self, key: str, value: bytes | None) -> None:
        """One record of ``bank.config``; raises ContractError (and changes nothing) if bad."""
        kind, _, name = key.partition("/")
        if kind == "entry":
            parse_bank_key(name)  # bank/signal_type/entry_id
            _put(self.entries, name, None if value is None else EntryControl.parse(value))
            return
        if kind not in ("bank", "platform") or not name or "/" in name:
            raise ContractError(
                f"bank.config key {key!r}: expected bank/NAME, entry/BANK/TYPE/ID or platform/NAME"
            )
        if kind == "bank":
            _put(self.banks, name, None if value is None else BankConfig.parse(value))
        else:
            _put(self.platforms, name, None if value is None else PlatformPolicy.parse(value))

    def bank(self, name: str) -> BankConfig:
        return self.banks.get(name) or DEFAULT_BANK

    def configured_banks(self) -> list[str]:
        """Banks with a config record (created through the API or ``bank config``)."""
        return list(self.banks)

    def entry(self, bank_key: str) -> EntryControl:
        return self.entries.get(bank_key) or DEFAULT_ENTRY

    def platform(self, name: str) -> PlatformPolicy:
        return self.platforms.get(name) or DEFAULT_PLATFORM

    def negative_for(self, bank: str, platform: str) -> BankConfig | None:
        """The bank's config if it is a negative bank that applies to ``platform``."""
        config = self.banks.get(bank)
        if config is None or not config.negative:
            return None
        return config if not config.platforms or platform in config.platforms else None

    def is_negative(self, bank: str) -> bool:
        config = self.banks.get(bank)
        return config is not None and config.negative

    def applies(self, bank: str, signal: str) -> bool:
        """Whether the bank looks at content with this signal: enabled, and the content in
        its ``enabled_ratio`` share (by a hash of the bank and the signal: the same content
        is always in, or always out, and each bank's share is a different slice)."""
        config = self.banks.get(bank)
        if config is None:
            return True
        if not config.enabled:
            return False
        return config.enabled_ratio >= 1.0 or share_of(bank, signal) < config.enabled_ratio

    def quarantined(self) -> list[str]:
        """Bank keys of the entries in quarantine now."""
        return [key for key, c in self.entries.items() if c.quarantined_at is not None]


def share_of(bank: str, signal: str) -> float:
    """A stable number in [0, 1) for this bank and content."""
    digest = hashlib.blake2b(f"{bank}\x00{signal}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _put(table: dict, name: str, value: object) -> None:
    if value is None:
        table.pop(name, None)
    else:
        table[name] = value


DEFAULT_BANK, DEFAULT_ENTRY, DEFAULT_PLATFORM = BankConfig(), EntryControl(), PlatformPolicy()
