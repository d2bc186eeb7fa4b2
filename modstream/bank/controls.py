"""Controls over banks and platforms, from the compacted ``bank.config`` topic that every
worker replicates: which banks are negative (allowlists) and whom they protect, and each
platform's review policy (the bank its confirmed reviews feed).

Keys: ``bank/<name>`` and ``platform/<name>``; a tombstone restores the defaults. A record
that does not parse is ignored with a warning by the replica, never half applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from modstream.contracts import BankConfig, ContractError, PlatformPolicy


@dataclass
class BankControls:
    """The replicated state of ``bank.config``: read on every decision, so plain dicts."""

    banks: dict[str, BankConfig] = field(default_factory=dict)
    platforms: dict[str, PlatformPolicy] = field(default_factory=dict)

    def apply(self, key: str, value: bytes | None) -> None:
        """One record of ``bank.config``; raises ContractError (and changes nothing) if bad."""
        kind, _, name = key.partition("/")
        if kind not in ("bank", "platform") or not name or "/" in name:
            raise ContractError(f"bank.config key {key!r}: expected bank/NAME or platform/NAME")
        if kind == "bank":
            if value is None:
                self.banks.pop(name, None)
            else:
                self.banks[name] = BankConfig.parse(value)
        elif value is None:
            self.platforms.pop(name, None)
        else:
            self.platforms[name] = PlatformPolicy.parse(value)

    def bank(self, name: str) -> BankConfig:
        return self.banks.get(name) or DEFAULT_BANK

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


DEFAULT_BANK, DEFAULT_PLATFORM = BankConfig(), PlatformPolicy()
