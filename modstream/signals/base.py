"""The signal-type contract.

A signal type knows how to compute itself from content, how to canonicalize a bank's copy of
it, how far apart two values are, and which index finds near values. The types are listed
in ``modstream.signals``; the pipeline looks them up there by name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from modstream.contracts import ComputedSignal
from modstream.formats.hexcodes import hamming_distance, normalize_hex

if TYPE_CHECKING:
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


class SignalType(ABC):
    """One kind of signal (``pdq``, ``md5``, ``text`` ...); listed in ``modstream.signals``."""

    name: ClassVar[str]
    #: What the signal is computed from: "bytes" (any media), "image", "video" or "text".
    source: ClassVar[str]
    #: The signal type whose index also holds this one's entries (vPDQ frames live in the
    #: PDQ index, beside the images); the bank ``attach``-es the new index to it.
    shares_index_of: ClassVar[str | None] = None
    thresholds: ClassVar[Thresholds] = Thresholds(takedown=0, review=0)
    #: Whether a match of one of the value's variants (another orientation, the picture
    #: inside borders) may act; if not, it asks for review at most.
    variants_act: ClassVar[bool] = True
    #: What python-threatexchange (and HMA, and the exchanges) call this signal type, where
    #: they have one: their files and exchanges' signals are read as this type.
    exchange_names: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def compute(self, content: Any) -> ComputedSignal | None:
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

    def usable(self, computed: ComputedSignal, min_quality: int) -> bool:
        """Whether a computed signal is good enough to match on (PDQ quality, for one)."""
        return True


class HammingSignal(SignalType):
    """A fixed-width bit string in hex, compared by Hamming distance (PDQ, pHash)."""

    bits: ClassVar[int]

    def normalize(self, signal: str) -> str:
        return normalize_hex(signal, self.bits, self.name)

    def distance(self, a: str, b: str) -> int:
        return hamming_distance(a, b)

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
