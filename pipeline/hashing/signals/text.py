"""Known text: statements and posts that circulate as copies, matched after normalization."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from pipeline.hashing.signals.base import ExactSignal, register

_INVISIBLE = dict.fromkeys(
    map(ord, "\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063\u2064\ufeff\u00ad"), None
)
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def normalize_text(text: str) -> str:
    """NFKC, case-fold, drop zero-width characters, punctuation and repeated whitespace."""
    folded = unicodedata.normalize("NFKC", text).translate(_INVISIBLE).casefold()
    return " ".join(_NON_WORD.sub(" ", folded).split())


@register
class TextSignal(ExactSignal):
    name = "text"
    source = "text"

    def compute(self, content: str) -> dict[str, Any] | None:
        value = normalize_text(content)
        return {"value": value} if value else None

    def normalize(self, signal: str) -> str:
        value = normalize_text(signal)
        if not value:
            raise ValueError("text: nothing left after normalization")
        return value
