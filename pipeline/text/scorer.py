"""Text scoring behind one interface, with a transparent weighted-phrase baseline.

The baseline adds the weights of phrases found in the normalized text. Positive weights are
propaganda markers (glorification, calls to join or act); negative weights are context that
points to reporting, analysis or condemnation, so news about an attack scores low. It is the
seam for a trained classifier: anything with ``score(text) -> TextScore`` plugs in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Protocol

import orjson

from pipeline.hashing.signals.text import normalize_text


@dataclass(frozen=True)
class TextScore:
    score: float
    #: The phrases that moved the score, strongest first: ``{"term": ..., "weight": ...}``.
    parts: tuple[dict[str, float | str], ...]


class TextScorer(Protocol):
    def score(self, text: str) -> TextScore: ...


class WeightedTermScorer:
    """Sum of the weights of the phrases present (each phrase counted once)."""

    def __init__(self, weights: dict[str, float]) -> None:
        self.weights = {normalize_text(term): float(w) for term, w in weights.items()}
        self.weights.pop("", None)
        alternatives = sorted(self.weights, key=len, reverse=True)
        pattern = "|".join(re.escape(term) for term in alternatives) or r"(?!x)x"
        self._pattern = re.compile(rf"(?<!\w)(?:{pattern})(?!\w)")

    @classmethod
    def from_file(cls, path: Path | None = None) -> WeightedTermScorer:
        """Load ``{"phrase": weight}`` JSON; the packaged default list when ``path`` is None."""
        if path is None:
            raw = resources.files("pipeline.text").joinpath("default_terms.json").read_bytes()
        else:
            raw = Path(path).read_bytes()
        data = orjson.loads(raw)
        return cls({k: v for k, v in data.items() if not k.startswith("_")})

    def score(self, text: str) -> TextScore:
        found = set(self._pattern.findall(normalize_text(text)))
        parts = sorted(
            ({"term": term, "weight": self.weights[term]} for term in found),
            key=lambda part: -abs(float(part["weight"])),
        )
        total = round(sum(float(p["weight"]) for p in parts), 4)
        return TextScore(score=max(0.0, total), parts=tuple(parts))
