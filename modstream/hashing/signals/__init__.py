"""Signal-type plugins. Each module here registers one type; adding one is adding a module."""

from modstream.hashing.signals.base import (
    Assessment,
    Content,
    SignalType,
    Thresholds,
    get,
    registry,
)

__all__ = ["Assessment", "Content", "SignalType", "Thresholds", "get", "registry"]
