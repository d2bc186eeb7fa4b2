"""Text read inside an image (``hashing.ocr``, when ``MODSTREAM_OCR`` is on), normalized like
posts: the engine matches it against known texts and scores it with the text model, as it
does a post's text. It is never matched as a hash of its own."""

from __future__ import annotations

from typing import TYPE_CHECKING

from modstream.contracts import ComputedSignal
from modstream.formats.text import normalize_text
from modstream.hashing.content import Content
from modstream.signals.base import SignalType

if TYPE_CHECKING:
    from modstream.matching.index import MatchIndex


class OCRTextSignal(SignalType):
    name = "ocr"
    source = "image"

    def compute(self, content: Content) -> ComputedSignal | None:
        if content.ocr is None:
            return None
        from modstream.hashing.ocr import read_text

        value = normalize_text(read_text(content.image, content.ocr) or "")
        return {"value": value} if value else None

    def normalize(self, signal: str) -> str:
        return normalize_text(signal)

    def distance(self, a: str, b: str) -> int:
        return 0 if a == b else 1

    def new_index(self, layout: str = "fast") -> MatchIndex:
        from modstream.matching.index import ExactIndex

        return ExactIndex()

    def usable(self, computed: ComputedSignal, min_quality: int) -> bool:
        return False  # looked up as text, not as a hash of its own
