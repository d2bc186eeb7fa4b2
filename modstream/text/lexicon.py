"""A curated lexicon of coded terms: what movements say instead of saying it.

Propaganda written in a movement's own register ("another saint", "beat his score", "the
day of the rope", "baqiya wa tatamaddad") carries few of the words the classifier learned
from, so it scores low. Each term here adds its weight to the score's logit and shows in
the evidence with what it means, so a reviewer learns the code as they go. The terms are
phrases matched on normalized words (the same normal form as the classifier's), so
spelling games that ``normalize_text`` undoes are undone here too.

The packaged list (``lexicon.json``) is a starting point, not an authority: a platform
edits its own copy (``MODSTREAM_TEXT_LEXICON``: a file in the same format, merged over the
packaged one; a term with weight 0 removes it) without retraining anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import orjson

from modstream.formats.text import normalize_text

LEXICON_VERSION = 1
MAX_WEIGHT = 3.0  # one term alone never takes a post from nothing to takedown


@dataclass(frozen=True)
class Term:
    phrase: str  # normalized words
    weight: float
    movement: str
    meaning: str


class Lexicon:
    def __init__(self, terms: list[Term]) -> None:
        self.terms = {t.phrase: t for t in terms}
        self._by_first: dict[str, list[Term]] = {}
        for term in self.terms.values():
            self._by_first.setdefault(term.phrase.split(" ", 1)[0], []).append(term)
        self._longest = max((len(t.phrase.split()) for t in terms), default=0)

    @classmethod
    def load(cls, extra: Path | None = None) -> Lexicon:
        """The packaged lexicon, with a platform's file merged over it."""
        raw = resources.files("modstream.text").joinpath("lexicon.json").read_bytes()
        terms = {t.phrase: t for t in _parse(raw, "packaged lexicon")}
        if extra is not None:
            for term in _parse(Path(extra).read_bytes(), str(extra)):
                terms[term.phrase] = term
        return cls([t for t in terms.values() if t.weight != 0])

    def found(self, words: list[str]) -> list[Term]:
        """The terms present in these normalized words, each once, in order of appearance."""
        seen: dict[str, Term] = {}
        for i, word in enumerate(words):
            for term in self._by_first.get(word, ()):
                length = term.phrase.count(" ") + 1
                if term.phrase not in seen and " ".join(words[i : i + length]) == term.phrase:
                    seen[term.phrase] = term
        return list(seen.values())


def _parse(raw: bytes, where: str) -> list[Term]:
    data = orjson.loads(raw)
    if not isinstance(data, dict) or data.get("version") != LEXICON_VERSION:
        raise ValueError(f"{where}: expected a lexicon of version {LEXICON_VERSION}")
    terms = []
    for n, item in enumerate(data.get("terms", [])):
        try:
            phrase = normalize_text(str(item["phrase"]))
            weight = float(item.get("weight", 1.0))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{where}: term {n}: needs a phrase and a numeric weight") from None
        if not phrase or not 0 <= weight <= MAX_WEIGHT:
            raise ValueError(f"{where}: term {n}: empty phrase or weight outside 0..{MAX_WEIGHT}")
        terms.append(Term(phrase, weight, str(item.get("movement", "")),
                          str(item.get("meaning", ""))))  # fmt: skip
    return terms
