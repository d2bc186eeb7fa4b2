"""Text as it is compared: one normal form for posts and known texts alike."""

from __future__ import annotations

import re
import unicodedata

_INVISIBLE = dict.fromkeys(
    map(ord, "\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063\u2064\ufeff\u00ad"), None
)
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)
# Cyrillic and Greek letters that look like Latin ones, as spoofers mix them into Latin words.
_LOOKALIKES = str.maketrans("аеорсухіјѕԁԛԝкмнтвαεορτυνικμ", "aeopcyxijsdqwkmhtbaeoptuvikm")
_LATIN = re.compile(r"[a-z]")
# Arabic: short vowels and other marks (tashkeel), the superscript alef and the tatweel
# (kashida, a stretching stroke) are dropped; the letter variants people type
# interchangeably are folded: alef with hamza or madda, alef wasla -> alef; alef maqsura -> ya;
# ta marbuta -> ha; hamza on waw or ya -> waw, ya.
_ARABIC_MARKS = dict.fromkeys([*range(0x064B, 0x0660), 0x0670, 0x0640], None)
_ARABIC_LETTERS = str.maketrans("أإآٱىةؤئ", "اااايهوي")
_ARABIC = re.compile(r"[\u0600-\u06ff]")


def _unspoof(word: str) -> str:
    """Map lookalike letters to Latin in words that also contain Latin letters."""
    if word.isascii() or not _LATIN.search(word):
        return word
    return word.translate(_LOOKALIKES)


def normalize_text(text: str) -> str:
    """NFKC, case-fold, drop zero-width characters, punctuation and repeated whitespace, undo
    lookalike letters mixed into Latin words, and fold Arabic's marks and letter variants."""
    folded = unicodedata.normalize("NFKC", text).translate(_INVISIBLE).casefold()
    if not folded.isascii() and _ARABIC.search(folded):
        folded = folded.translate(_ARABIC_MARKS).translate(_ARABIC_LETTERS)
    words = _NON_WORD.sub(" ", folded).split()
    return " ".join(words if folded.isascii() else map(_unspoof, words))
