"""Text scoring speed, per core (run by hand: `make bench-text`).

Posts of ~280 and ~2,000 characters, built from the labelled corpus's sentences, go through
the engine's text path in one process (one core): the known-text match against a bank of
100,000 text entries, the classifier, and both together as the pipeline runs them. One post
in ten carries a copy of a banked text, so the match path finds hits too. Every measure is
taken in the same run, so the ratios hold on a noisy machine.
"""

from __future__ import annotations

import os
import platform
import random
import time
from pathlib import Path

from modstream.contracts import BankEntry, UploadEvent
from modstream.scan import local_engine
from modstream.settings import Settings
from modstream.signals import get as signal_type
from modstream.text.classifier import read_jsonl

CORPUS = Path(__file__).resolve().parent.parent / "data" / "text" / "corpus.jsonl"
BANK_TEXTS = int(os.environ.get("BANK_TEXTS", "100000"))
POSTS = 2_000


def known_texts(words: list[str], count: int, rng: random.Random) -> list[str]:
    """Statement-like texts of 30-60 words drawn from the corpus vocabulary."""
    return [" ".join(rng.choices(words, k=rng.randint(30, 60))) for _ in range(count)]


def posts(sentences: list[str], banked: list[str], length: int, rng: random.Random) -> list[str]:
    out = []
    for n in range(POSTS):
        parts: list[str] = []
        if n % 10 == 0:
            parts.append(rng.choice(banked))
        while sum(len(p) + 1 for p in parts) < length:
            parts.append(rng.choice(sentences))
        out.append(" ".join(parts)[:length])
    return out


def rate(function, items: list[str]) -> float:
    """Items per second over the best of five passes."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for item in items:
            function(item)
        best = min(best, time.perf_counter() - started)
    return len(items) / best


def main() -> None:
    rng = random.Random(7)
    corpus = [row["text"] for row in read_jsonl(CORPUS)]
    words = sorted({w for text in corpus for w in text.split()})
    banked = known_texts(words, BANK_TEXTS, rng)
    started = time.perf_counter()
    engine = local_engine(
        Settings(),
        [BankEntry("tve", f"t{i}", "text", t, (), "takedown", "") for i, t in enumerate(banked)],
    )
    load_s = time.perf_counter() - started
    text_signal = signal_type("text")

    def known_text(post: str) -> None:
        computed = text_signal.compute(post)
        if computed:
            engine.bank.match("text", computed["value"])

    def pipeline_path(post: str) -> None:
        engine.evidence(UploadEvent("e", "p", "c", "u", "2026-11-26T00:00:00Z", post, ()), [])

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; one process, one core"
    )
    print(f"bank: {BANK_TEXTS:,} known texts, loaded in {load_s:.1f} s")
    print("| post length | known-text match posts/s | classifier posts/s | both posts/s |")
    print("|---|---|---|---|")
    for length in (280, 2_000):
        items = posts(corpus, banked, length, rng)
        hits = sum(
            1 for p in items[:200] if engine.bank.match("text", text_signal.compute(p)["value"])
        )
        print(
            f"| {length:,} chars | {rate(known_text, items):,.0f} | "
            f"{rate(engine.scorer.score, items):,.0f} | {rate(pipeline_path, items):,.0f} |"
            f"  ({hits} of the first 200 posts match a banked text)"
        )


if __name__ == "__main__":
    main()
