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

import itertools
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import orjson

from pipeline.hashing.signals.text import normalize_text
from pipeline.text.scorer import TextScore

MODEL_VERSION = 1

CUES = {
    "attribution": r"\b(said|says|according to|told reporters|reported|spokes(?:person|man|woman)"
    r"|officials?|police|prosecutors?|authorities|the court|the jury|the report)\b",
    "hedging": r"\b(allegedly|reportedly|so-called|claimed|claims?|could not be (?:independently )?"
    r"verified|attributed to)\b",
    "quotation": r"[\"“”«»]|'[^']{3,}'",
    "condemnation": r"\b(condemn\w*|victims?|grieving|mourn\w*|thoughts are with|murderers|"
    r"killers)\b",
    "research": r"\b(researchers?|analysis|analysts?|experts?|study|report(?:s)? by|found that)\b",
    "third_person": r"\b(he|she|they|the group|the suspect|the attacker|the defendant)\b",
    "second_person": r"\b(you|your|yourselves)\b",
    "imperative": r"(?:^|[.!?:]\s+)(rise|join|come|leave|pack|share|abandon|prove|stand|fight|"
    r"know|support|answer|follow)\b",
    "first_plural": r"\b(we|our|us|ours)\b",
    "in_group": r"\b(brothers?|sisters?|believers?|mujahideen|soldiers of|lions?|knights?)\b",
    "glorifying": r"\b(martyr\w*|glory|glorious|blessed|heroes?|ascended|paradise|honou?r)\b",
}
_CUES = {name: re.compile(pattern, re.IGNORECASE) for name, pattern in CUES.items()}


def feature_words(text: str) -> dict[str, set[str]]:
    """Every feature present in a text (presence, not counts), with the words it comes from
    (none for context cues)."""
    words = normalize_text(text).split()
    found: dict[str, set[str]] = {}
    for word in words:
        found.setdefault(f"w:{word}", set()).add(word)
        padded = f" {word} "
        for n in (3, 4, 5):
            for i in range(len(padded) - n + 1):
                found.setdefault(f"c:{padded[i : i + n]}", set()).add(word)
    for a, b in itertools.pairwise(words):
        found.setdefault(f"w:{a} {b}", set()).update((a, b))
    for name, pattern in _CUES.items():
        if pattern.search(text):
            found[f"cue:{name}"] = set()
    return found


def features(text: str) -> set[str]:
    return set(feature_words(text))


@dataclass
class LinearTextClassifier:
    """``score(text)`` is the probability that the text is propaganda."""

    weights: dict[str, float]
    bias: float
    metrics: dict | None = None

    @classmethod
    def load(cls, path: Path | None = None) -> LinearTextClassifier:
        """A model written by ``save``; the packaged default when ``path`` is None."""
        if path is None:
            raw = resources.files("pipeline.text").joinpath("default_model.json").read_bytes()
        else:
            raw = Path(path).read_bytes()
        data = orjson.loads(raw)
        if data.get("version") != MODEL_VERSION:
            raise ValueError(f"text model version {data.get('version')}, expected {MODEL_VERSION}")
        return cls(data["weights"], float(data["bias"]), data.get("metrics"))

    def save(self, path: Path) -> None:
        body = {"version": MODEL_VERSION, "bias": self.bias, "metrics": self.metrics,
                "weights": dict(sorted(self.weights.items()))}  # fmt: skip
        Path(path).write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2))

    def score(self, text: str, reasons: int = 6) -> TextScore:
        """The probability, and the words and cues that moved it most: each feature's weight
        is shared among the words it comes from, so the parts add up to the score's logit."""
        contributions: dict[str, float] = {}
        logit = self.bias
        for feature, words in feature_words(text).items():
            weight = self.weights.get(feature)
            if weight is None:
                continue
            logit += weight
            if not words:  # a context cue
                name = f"[{feature.removeprefix('cue:')}]"
                contributions[name] = contributions.get(name, 0.0) + weight
            for word in words:
                contributions[word] = contributions.get(word, 0.0) + weight / len(words)
        probability = 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, logit))))
        strongest = sorted(contributions.items(), key=lambda item: -abs(item[1]))[:reasons]
        parts = tuple({"term": term, "weight": round(w, 3)} for term, w in strongest)
        return TextScore(score=round(probability, 4), parts=parts)


# -- training and evaluation (scikit-learn is needed only here) --------------------------------


def train(texts: Sequence[str], labels: Sequence[int], c: float = 4.0) -> LinearTextClassifier:
    """Logistic regression on binary features; weights below 1e-4 are dropped."""
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = DictVectorizer()
    matrix = vectorizer.fit_transform([dict.fromkeys(features(t), 1) for t in texts])
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=5000)
    model.fit(matrix, list(labels))
    names = vectorizer.get_feature_names_out()
    weights = {
        str(name): round(float(w), 5)
        for name, w in zip(names, model.coef_[0], strict=True)
        if abs(w) >= 1e-4
    }
    return LinearTextClassifier(weights, round(float(model.intercept_[0]), 5))


def split_by_family(rows: Sequence[dict], test_share: float, seed: int = 7) -> tuple[list, list]:
    """Hold out whole template families, per label: no test text shares a family with a
    training text, so the held-out score is not inflated by near-copies."""
    import random

    rng = random.Random(seed)
    train_rows, test_rows = [], []
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
    scores = [model.score(r["text"]).score for r in rows]
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
    for r, s in zip(rows, scores, strict=True):
        if r["label"] != "propaganda":
            flagged.setdefault(r.get("category", "other"), []).append(int(s >= threshold))
    return {
        "texts": len(rows),
        **at(threshold),
        "thresholds": [at(t) for t in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)],
        "flagged_share_by_category": {
            category: round(sum(hits) / len(hits), 4) for category, hits in sorted(flagged.items())
        },
    }


def format_report(report: dict) -> str:
    """The evaluation as a reviewer reads it."""
    lines = [
        f"texts: {report['texts']}   threshold: {report['threshold']}",
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
