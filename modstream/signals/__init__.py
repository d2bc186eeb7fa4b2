"""Signal types: one module each, listed explicitly below (as python-threatexchange maps its
``signal_type`` modules). Adding a signal type is adding a module and a line here."""

from __future__ import annotations

from modstream.signals.base import SignalType
from modstream.signals.cryptographic import MD5Signal, SHA256Signal
from modstream.signals.ocr import OCRTextSignal
from modstream.signals.pdq import PDQSignal
from modstream.signals.phash import PHashSignal
from modstream.signals.text import TextSignal
from modstream.signals.vpdq import VPDQSignal

_SIGNAL_TYPES: dict[str, SignalType] = {
    kind.name: kind
    for kind in (
        PDQSignal(),
        PHashSignal(),
        MD5Signal(),
        SHA256Signal(),
        TextSignal(),
        VPDQSignal(),
        OCRTextSignal(),
    )
}


def registry() -> dict[str, SignalType]:
    """Every signal type by name."""
    return _SIGNAL_TYPES


_BY_EXCHANGE_NAME: dict[str, SignalType] = {
    alias: kind for kind in _SIGNAL_TYPES.values() for alias in kind.exchange_names
}


def for_exchange_name(name: str) -> SignalType | None:
    """The signal type python-threatexchange's ``name`` is read as (``video_md5`` is
    ``md5``), or one of ours by its own name; None if modstream has no such type."""
    return _SIGNAL_TYPES.get(name) or _BY_EXCHANGE_NAME.get(name)


def get(name: str) -> SignalType:
    if name not in _SIGNAL_TYPES:
        known = ", ".join(sorted(_SIGNAL_TYPES))
        raise KeyError(f"unknown signal type {name!r} (known: {known})")
    return _SIGNAL_TYPES[name]
