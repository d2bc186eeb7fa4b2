"""A linear classifier that tells propaganda from text about it, with its reasons.

Features are words, word pairs, character n-grams (spelling games, other languages) and
*context cues*: attribution and reporting verbs, quotation, hedging, condemnation and third
person point to news and analysis; second-person calls to action, imperatives, first person
plural and glorifying epithets point to propaganda. Each feature has one weight, so a score
explains itself: the reasons are the present features that moved it most.

Inference is plain Python over a JSON model (no model download, no ML library at run time);
``train`` fits it with scikit-learn (the ``train`` extra).
"""

from __future__ import annotations

import functools
import heapq
import itertools
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import orjson

from modstream.contracts import TextScore
from modstream.formats.text import normalize_text
from modstream.text.lexicon import Lexicon

#: The feature carrying the lexicon's summed term weights; its weight scales every term.
LEXICON_FEATURE = "lexicon"

MODEL_VERSION = 1

# Context cues: single words, phrases (matched on the normalized text), and two that need
# the raw text (quotation marks; an imperative at the start of a sentence).
CUE_WORDS = {
    # English, then French, German, Spanish and Arabic (in normalized form: ta marbuta as
    # ha, alef without hamza), so that reporting in any of them reads as reporting.
    "attribution": "said says reported spokesperson spokesman spokeswoman official officials "
    "police prosecutor prosecutors authorities court jury "
    "selon déclaré parquet tribunal autorités enquêteurs "
    "laut sagte polizei staatsanwaltschaft gericht behörden ermittler "
    "según dijo policía fiscalía autoridades "
    "قال قالت بحسب وفق الشرطه المحكمه السلطات افادت ذكرت النيابه",
    "hedging": "allegedly reportedly claimed claim claims présumé mutmaßlich presunto المزعوم",
    "condemnation": "condemn condemns condemned condemnation victim victims grieving mourn "
    "mourning murderers killers condamnons victimes verurteilen opfer condenamos víctimas "
    "ندين الضحايا",
    "research": "researcher researchers analysis analyst analysts expert experts study "
    "chercheurs étude analyse forscher studie experten investigadores estudio análisis "
    "باحثون دراسه تقرير الباحثين",
    "third_person": "he she they suspect attacker defendant",
    "second_person": "you your yourselves",
    "first_plural": "we our us ours",
    "in_group": "brother brothers sister sisters believer believers mujahideen lion lions "
    "knight knights",
    "glorifying": "martyr martyrs martyrdom glory glorious blessed hero heroes ascended "
    "paradise honour honor",
}
CUE_PHRASES = {
    "attribution": ("according to", "told reporters", "the report"),
    "hedging": (
        "so called",
        "could not be verified",
        "could not be independently verified",
        "attributed to",
    ),
    "condemnation": ("thoughts are with",),
    "research": ("report by", "reports by", "found that"),
    "third_person": ("the group",),
    "in_group": ("soldiers of",),
}
_CUE_WORDS = {name: frozenset(words.split()) for name, words in CUE_WORDS.items()}
_QUOTATION = re.compile(r"[\"“”«»]|'[^']{3,}'")
_IMPERATIVE = re.compile(
    r"(?:^|[.!?:]\s+)(rise|join|come|leave|pack|share|abandon|prove|stand|fight|know|support"
    r"|answer|follow)\b",
    re.IGNORECASE,
)


def cues(text: str, words: Sequence[str] | None = None) -> set[str]:
    """The context cues in a text; ``words``: its normalized words, if already split."""
    words = normalize_text(text).split() if words is None else words
    present = set(words)
    found = {name for name, cue_words in _CUE_WORDS.items() if present & cue_words}
    joined = f" {' '.join(words)} "
    found.update(
        name
        for name, phrases in CUE_PHRASES.items()
        if name not in found and any(f" {p} " in joined for p in phrases)
    )
    if _QUOTATION.search(text):
        found.add("quotation")
    if _IMPERATIVE.search(text):
        found.add("imperative")
    return found


def _word_features(word: str) -> list[str]:
    """The features one word yields: itself and its character 3- to 5-grams."""
    padded = f" {word} "
    out = [f"w:{word}"]
    for n in (3, 4, 5):
        out.extend(f"c:{padded[i : i + n]}" for i in range(len(padded) - n + 1))
    return out


def feature_counts(text: str, lexicon: Lexicon | None = None) -> dict[str, float]:
    """The features of a text: words and character n-grams counted once per distinct word
    that has them, word pairs and context cues once. Counting per word (not per text) makes
    a word's share of the score its own sum, so scoring is a few lookups per word. With a
    ``lexicon``, the sum of the coded terms' weights is one more feature (``lexicon``)."""
    words = normalize_text(text).split()
    found: dict[str, float] = {}
    for word in set(words):
        for feature in set(_word_features(word)):
            found[feature] = found.get(feature, 0) + 1
    for a, b in itertools.pairwise(words):
        found[f"w:{a} {b}"] = 1
    for name in cues(text, words):
        found[f"cue:{name}"] = 1
    if lexicon is not None:
        found[LEXICON_FEATURE] = sum(term.weight for term in lexicon.found(words))
    return found


@dataclass
class LinearTextClassifier:
    """``score(text)`` is the probability that the text is propaganda."""

    weights: dict[str, float]
    bias: float
    metrics: dict | None = None
    #: Coded terms whose weights add to the logit and show in the reasons with their meaning.
    lexicon: Lexicon | None = None

    @classmethod
    def load(cls, path: Path | None = None, lexicon: Lexicon | None = None) -> LinearTextClassifier:
        """A model written by ``save``; the packaged default when ``path`` is None."""
        if path is None:
            raw = resources.files("modstream.text").joinpath("default_model.json").read_bytes()
        else:
            raw = Path(path).read_bytes()
        data = orjson.loads(raw)
        if data.get("version") != MODEL_VERSION:
            raise ValueError(f"text model version {data.get('version')}, expected {MODEL_VERSION}")
        return cls(data["weights"], float(data["bias"]), data.get("metrics"), lexicon)

    def save(self, path: Path) -> None:
        body = {"version": MODEL_VERSION, "bias": self.bias, "metrics": self.metrics,
                "weights": dict(sorted(self.weights.items()))}  # fmt: skip
        Path(path).write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2))

    def __post_init__(self) -> None:
        # Words repeat across posts: each word's weight is summed once.
        self._word_weight = functools.lru_cache(maxsize=200_000)(self._sum_word_weight)
        self._pair_weight = {
            tuple(name[2:].split(" ")): weight
            for name, weight in self.weights.items()
            if name.startswith("w:") and " " in name
        }

    def _sum_word_weight(self, word: str) -> float:
        return sum(self.weights.get(f, 0.0) for f in set(_word_features(word)))

    def score(self, text: str, normalized: str | None = None, reasons: int = 6) -> TextScore:
        """The probability, and the words and cues that moved it most; the parts add up to
        the score's logit (a word pair's weight is split between its two words). ``normalized``:
        ``normalize_text(text)``, if the caller has it already."""
        words = (normalize_text(text) if normalized is None else normalized).split()
        contributions = {word: self._word_weight(word) for word in words}
        pair_weight = self._pair_weight.get
        for a, b in dict.fromkeys(itertools.pairwise(words)):  # each pair once, in order
            weight = pair_weight((a, b))
            if weight is not None:
                contributions[a] += weight / 2
                contributions[b] += weight / 2
        for name in cues(text, words):
            weight = self.weights.get(f"cue:{name}")
            if weight is not None:
                contributions[f"[{name}]"] = weight
        meanings = {}
        if self.lexicon is not None:
            # How far a coded term counts was learned with the words around it (the news
            # and games that quote the code): the lexicon's weights scaled by it.
            scale = self.weights.get(LEXICON_FEATURE, 1.0)
            for term in self.lexicon.found(words):
                name = f"[coded: {term.phrase}]"
                contributions[name] = scale * term.weight
                meanings[name] = f"{term.movement}: {term.meaning}"
        logit = self.bias + sum(contributions.values())
        probability = 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, logit))))
        # The strongest by absolute weight, earlier first among equals, compared as tuples
        # (no Python key call per term: this is a fifth of a post's scoring otherwise).
        terms, values = list(contributions), list(contributions.values())
        order = range(0, -len(terms), -1)
        strongest = [
            -at for _, at in heapq.nlargest(reasons, zip(map(abs, values), order, strict=True))
        ]
        shown = [terms[i] for i in strongest]
        shown += [name for name in meanings if name not in shown]  # never hide a code
        parts = tuple(_reason(name, contributions[name], meanings.get(name)) for name in shown)
        return TextScore(score=round(probability, 4), parts=parts)


def _reason(term: str, weight: float, meaning: str | None) -> dict[str, str | float]:
    reason: dict[str, str | float] = {"term": term, "weight": round(weight, 3)}
    if meaning is not None:
        reason["meaning"] = meaning
    return reason


# -- training and evaluation (scikit-learn is needed only here) --------------------------------


def train(
    texts: Sequence[str], labels: Sequence[int], c: float = 16.0, lexicon: Lexicon | None = None
) -> LinearTextClassifier:
    """Logistic regression on ``feature_counts``; weights below 1e-4 are dropped. With a
    ``lexicon``, its terms' summed weight is a feature: the model learns how far to trust
    the lexicon against the context, and scores with it attached."""
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = DictVectorizer()
    matrix = vectorizer.fit_transform([feature_counts(t, lexicon) for t in texts])
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=5000)
    model.fit(matrix, list(labels))
    names = vectorizer.get_feature_names_out()
    weights = {
        str(name): round(float(w), 5)
        for name, w in zip(names, model.coef_[0], strict=True)
        if abs(w) >= 1e-4
    }
    return LinearTextClassifier(weights, round(float(model.intercept_[0]), 5), lexicon=lexicon)


def split_by_family(rows: Sequence[dict], test_share: float, seed: int = 7) -> tuple[list, list]:
    """Hold out whole template families, per label: no test text shares a family with a
    training text, so the held-out score is not inflated by near-copies."""
    import random

    rng = random.Random(seed)
    train_rows: list[dict] = []
    test_rows: list[dict] = []
    for label in sorted({r["label"] for r in rows}):
        families = sorted({r.get("family", r["text"]) for r in rows if r["label"] == label})
        rng.shuffle(families)
        held = set(families[: max(1, round(len(families) * test_share))])
        for r in rows:
            if r["label"] == label:
                (test_rows if r.get("family", r["text"]) in held else train_rows).append(r)
    return train_rows, test_rows


def evaluate(model: LinearTextClassifier, rows: Iterable[dict], threshold: float) -> dict:
    """Precision, recall and F1 on propaganda, the confusion matrix, a threshold table, and the
    share of each other category that would be sent to review."""
    rows = list(rows)
    return report([model.score(r["text"]).score for r in rows], rows, threshold)


def evaluate_splits(
    rows: Sequence[dict],
    splits: int,
    test_share: float,
    c: float,
    threshold: float,
    lexicon: Lexicon | None = None,
) -> dict:
    """Train and test on ``splits`` different family splits, each model scoring as it will in
    production (with ``lexicon``); the report pools every held-out prediction (a text held
    out twice counts twice) and lists each split's F1."""
    scores, tested, f1s = [], [], []
    for seed in range(splits):
        train_rows, test_rows = split_by_family(rows, test_share, seed=seed)
        labels = [int(r["label"] == "propaganda") for r in train_rows]
        model = train([r["text"] for r in train_rows], labels, c, lexicon)
        split_scores = [model.score(r["text"]).score for r in test_rows]
        f1s.append(report(split_scores, test_rows, threshold)["f1"])
        scores += split_scores
        tested += test_rows
    return {**report(scores, tested, threshold), "splits": splits, "f1_per_split": f1s}


def report(scores: Sequence[float], rows: Sequence[dict], threshold: float) -> dict:
    truth = [r["label"] == "propaganda" for r in rows]

    def at(t: float) -> dict:
        tp = sum(s >= t and y for s, y in zip(scores, truth, strict=True))
        fp = sum(s >= t and not y for s, y in zip(scores, truth, strict=True))
        fn = sum(s < t and y for s, y in zip(scores, truth, strict=True))
        tn = len(rows) - tp - fp - fn
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / (tp + fn) if tp + fn else 1.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"threshold": t, "precision": round(precision, 4), "recall": round(recall, 4),
                "f1": round(f1, 4), "tp": tp, "fp": fp, "fn": fn, "tn": tn}  # fmt: skip

    flagged: dict[str, list[int]] = {}
    families: dict[tuple[str, str], list[int]] = {}
    for r, s in zip(rows, scores, strict=True):
        if r["label"] != "propaganda":
            flagged.setdefault(r.get("category", "other"), []).append(int(s >= threshold))
        family = str(r.get("family", r.get("category", "-"))).split("/")[0]
        families.setdefault((r["label"], family), []).append(int(s >= threshold))
    return {
        "texts": len(rows),
        **at(threshold),
        "thresholds": [at(t) for t in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)],
        "flagged_share_by_category": {
            category: round(sum(hits) / len(hits), 4) for category, hits in sorted(flagged.items())
        },
        # Per family (its name before "/"): the share sent to review, which is the recall
        # of a propaganda family and the false-positive share of any other.
        "flagged_share_by_family": [
            {
                "label": label,
                "family": family,
                "texts": len(hits),
                "flagged": round(sum(hits) / len(hits), 4),
            }
            for (label, family), hits in sorted(families.items())
        ],
    }


def format_report(report: dict) -> str:
    """The evaluation as a reviewer reads it."""
    lines = [
        f"texts: {report['texts']}   threshold: {report['threshold']}",
        *(
            [f"F1 per split: {' '.join(f'{f:.3f}' for f in report['f1_per_split'])}"]
            if "f1_per_split" in report
            else []
        ),
        f"propaganda  precision {report['precision']:.3f}  recall {report['recall']:.3f}  "
        f"F1 {report['f1']:.3f}",
        "confusion matrix (rows: truth, columns: prediction)",
        "                  propaganda    other",
        f"  propaganda    {report['tp']:>10} {report['fn']:>8}",
        f"  other         {report['fp']:>10} {report['tn']:>8}",
        "threshold table",
        "  threshold  precision  recall     F1",
    ]
    lines += [
        f"  {row['threshold']:>9}  {row['precision']:>9.3f}  {row['recall']:>6.3f}  {row['f1']:.3f}"
        for row in report["thresholds"]
    ]
    lines.append("share of non-propaganda texts sent to review, by category")
    lines += [f"  {k:<16} {v:.3f}" for k, v in report["flagged_share_by_category"].items()]
    lines.append("share sent to review, by family (propaganda: recall; other: false positives)")
    lines += [
        f"  {row['label']:<10} {row['family']:<24} {row['flagged']:>6.3f}  of {row['texts']}"
        for row in report.get("flagged_share_by_family", [])
    ]
    return "\n".join(lines)


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        row = orjson.loads(line)
        if (
            not isinstance(row, dict)
            or "text" not in row
            or row.get("label")
            not in (
                "propaganda",
                "other",
            )
        ):
            raise ValueError(f"{path}:{number}: need text and label propaganda|other")
        rows.append(row)
    return rows
