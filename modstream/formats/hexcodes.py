"""Fixed-width bit strings written as hex (PDQ, pHash): validation, distance, packed codes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def normalize_hex(signal: str, bits: int, name: str) -> str:
    """Lower-case hex of exactly ``bits`` bits; raises ValueError naming ``name`` otherwise."""
    value = signal.strip().lower()
    if len(value) != bits // 4:
        raise ValueError(f"{name}: expected {bits // 4} hex digits, got {len(value)}")
    try:
        int(value, 16)
    except ValueError:
        raise ValueError(f"{name}: not a hex string") from None
    return value


def hamming_distance(a: str, b: str) -> int:
    """Bits that differ between two hex strings of the same width."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


def hex_to_codes(signals: Sequence[str], bits: int) -> np.ndarray:
    """Hex bit strings as an ``(n, bits // 64)`` array of big-endian uint64 words."""
    raw = bytes.fromhex("".join(signals))
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64).reshape(len(signals), bits // 64)
