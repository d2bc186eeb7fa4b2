"""The signal-type plugin contract and its registry.

A signal type knows how to compute itself from content, how to canonicalize a bank's copy of
it, how far apart two values are, and which index finds near values. The pipeline looks
signal types up here by name; nothing else in the code lists them.
"""

from __future__ import annotations

import functools
import hashlib
import io
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar

if TYPE_CHECKING:
    from PIL import Image

    from modstream.hashing.video import VideoSampling
    from modstream.matching.index import MatchIndex


@dataclass(frozen=True)
class Thresholds:
    """Distances at or under ``takedown`` act; up to ``review`` go to a human. A signal type
    that measures how much of the query matched (vPDQ) also needs ``min_query_share`` of it."""

    takedown: int
    review: int
    min_query_share: float = 0.0


@dataclass(frozen=True)
class Assessment:
    """What a signal type can say about one match beyond its distance, for the reviewer."""

    detail: str | None = None
    #: Structured facts for review tools (shares, matching time ranges, ...).
    parts: tuple[dict[str, Any], ...] = ()
    #: The share of the query that matched, where the signal type measures one.
    query_share: float | None = None


class Content:
    """Media to compute signals from: bytes, or a file (a video too big for memory), with a
    lazily decoded image, so bytes-only signals never decode, and how to sample a video."""

    def __init__(
        self,
        data: bytes | Path,
        kind: str,
        max_pixels: int,
        video: VideoSampling | None = None,
    ) -> None:
        self.path = data if isinstance(data, Path) else None
        self._data = None if isinstance(data, Path) else data
        self.kind = kind
        self.max_pixels = max_pixels
        self.video = video

    @property
    def data(self) -> bytes:
        return self._data if self._data is not None else self.path.read_bytes()  # type: ignore[union-attr]

    def digest(self, algorithm: str) -> str:
        """A hashlib digest of the content, streamed from the file if it is one."""
        if self.path is None:
            return hashlib.new(algorithm, self.data).hexdigest()
        with self.path.open("rb") as file:
            return hashlib.file_digest(file, algorithm).hexdigest()

    def open(self) -> BinaryIO:
        """The content as a binary file object (for decoders that read files)."""
        return self.path.open("rb") if self.path is not None else io.BytesIO(self.data)

    @cached_property
    def image(self) -> Image.Image:
        from modstream.hashing.decode import decode_image

        return decode_image(self.data, self.max_pixels)


class SignalType(ABC):
    """One kind of signal (``pdq``, ``md5``, ``text`` ...); register with ``@register``."""

    name: ClassVar[str]
    #: What the signal is computed from: "bytes" (any media), "image", "video" or "text".
    source: ClassVar[str]
    #: The signal type whose index also holds this one's entries (vPDQ frames live in the
    #: PDQ index, beside the images); the bank ``attach``-es the new index to it.
    shares_index_of: ClassVar[str | None] = None
    thresholds: ClassVar[Thresholds] = Thresholds(takedown=0, review=0)

    @abstractmethod
    def compute(self, content: Any) -> dict[str, Any] | None:
        """The signal of ``content`` as ``{"value": str, ...extras}``, or None if not applicable."""

    @abstractmethod
    def normalize(self, signal: str) -> str:
        """Canonical form of a bank signal; raises ValueError if malformed."""

    @abstractmethod
    def distance(self, a: str, b: str) -> int:
        """Distance between two canonical values (0 means identical)."""

    @abstractmethod
    def new_index(self, layout: str = "fast") -> MatchIndex:
        """An empty index that finds values within a distance of a query; ``layout`` picks
        the memory/speed trade-off where an index has one."""

    def assess(self, query: str, bank_signal: str, distance: int) -> Assessment:
        """A reviewer's account of a match beyond its distance, if there is one."""
        return Assessment()

    def usable(self, computed: dict[str, Any], min_quality: int) -> bool:
        """Whether a computed signal is good enough to match on (PDQ quality, for one)."""
        return True


_REGISTRY: dict[str, SignalType] = {}


def register(cls: type[SignalType]) -> type[SignalType]:
    """Class decorator: make a signal type available by its ``name``."""
    if cls.name in _REGISTRY:
        raise ValueError(f"signal type {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls()
    return cls


def registry() -> dict[str, SignalType]:
    _load_plugins()
    return _REGISTRY


def get(name: str) -> SignalType:
    types = registry()
    if name not in types:
        raise KeyError(f"unknown signal type {name!r} (known: {', '.join(sorted(types))})")
    return types[name]


def for_source(source: str) -> list[SignalType]:
    return [t for t in registry().values() if t.source == source]


@functools.cache
def _load_plugins() -> None:
    """Import every module in this package once; each registers its own signal type."""
    import importlib
    import pkgutil

    from modstream.hashing import signals

    for module in pkgutil.iter_modules(signals.__path__):
        if module.name != "base":
            importlib.import_module(f"{signals.__name__}.{module.name}")


class HammingSignal(SignalType):
    """A fixed-width bit string in hex, compared by Hamming distance (PDQ, pHash)."""

    bits: ClassVar[int]

    def normalize(self, signal: str) -> str:
        value = signal.strip().lower()
        if len(value) != self.bits // 4:
            raise ValueError(f"{self.name}: expected {self.bits // 4} hex digits, got {len(value)}")
        try:
            int(value, 16)
        except ValueError:
            raise ValueError(f"{self.name}: not a hex string") from None
        return value

    def distance(self, a: str, b: str) -> int:
        return (int(a, 16) ^ int(b, 16)).bit_count()

    def new_index(self, layout: str = "fast") -> MatchIndex:
        from modstream.matching.hamming import HammingIndex

        return HammingIndex(self.bits, layout=layout)


class ExactSignal(SignalType):
    """A value that matches only when equal (cryptographic hashes, normalized text)."""

    def distance(self, a: str, b: str) -> int:
        return 0 if a == b else 1

    def new_index(self, layout: str = "fast") -> MatchIndex:
        from modstream.matching.index import ExactIndex

        return ExactIndex()
