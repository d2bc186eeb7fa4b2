"""What reading text inside images costs, and what it reads, over a set of images.

    .venv/bin/python bench/ocr.py [--repeat 2]

Three kinds of image, ten of each: photos shipped with scikit-image (no text: OCR's cost on
the common case), posters (a corpus text on a plain background, 1000 px wide) and memes (a
photo with the corpus text in a caption bar). Half the texts are propaganda, half news or
other posts, from ``data/text/corpus.jsonl``. For each image: ``hash_media`` without and
with OCR (the best of ``--repeat``), the share of the rendered words OCR gives back, and
whether the text model scores the OCR text on the same side of the review threshold (0.5)
as the text that was rendered.
"""

from __future__ import annotations

import argparse
import re
import statistics
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import orjson
from PIL import Image, ImageDraw, ImageFont

from modstream.demo import encode, sample
from modstream.engine import hash_media
from modstream.hashing.ocr import OcrPolicy
from modstream.text.classifier import LinearTextClassifier

CORPUS = Path(__file__).resolve().parent.parent / "data" / "text" / "corpus.jsonl"
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "moon", "coins", "brick",
          "immunohistochemistry", "hubble_deep_field")  # fmt: skip
FONT = ImageFont.load_default(size=40)


def texts(count: int) -> list[tuple[str, str]]:
    """``count`` (label, text) pairs, half propaganda, of a length a poster carries."""
    rows = [orjson.loads(line) for line in CORPUS.read_text().splitlines()]
    chosen: list[tuple[str, str]] = []
    for label in ("propaganda", "other"):
        fitting = [r["text"] for r in rows if r["label"] == label and 60 <= len(r["text"]) <= 200]
        step = max(1, len(fitting) // (count // 2))
        chosen += [(label, t) for t in fitting[::step][: count // 2]]
    return chosen


def poster(text: str) -> Image.Image:
    lines = textwrap.wrap(text, 40)
    image = Image.new("RGB", (1000, 80 + 56 * len(lines)), (245, 240, 225))
    draw = ImageDraw.Draw(image)
    for n, line in enumerate(lines):
        draw.text((40, 40 + 56 * n), line, fill=(20, 20, 20), font=FONT)
    return image


def meme(photo: Image.Image, text: str) -> Image.Image:
    lines = textwrap.wrap(text, 36)
    framed = photo.resize((900, 900 * photo.height // photo.width))
    bar = 30 + 52 * len(lines)
    image = Image.new("RGB", (framed.width, framed.height + bar), "black")
    image.paste(framed, (0, bar))
    draw = ImageDraw.Draw(image)
    for n, line in enumerate(lines):
        draw.text((24, 15 + 52 * n), line, fill="white", font=FONT)
    return image


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def best_ms(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    model = LinearTextClassifier.load()
    policy = OcrPolicy()
    photos = [sample(name) for name in PHOTOS]
    chosen = texts(10)
    sets: dict[str, list[tuple[bytes, str | None]]] = {
        "photos, no text": [(encode(p, quality=90), None) for p in photos],
        "posters": [(encode(poster(t), quality=90), t) for _, t in chosen],
        "memes": [(encode(meme(photos[n], t), quality=90), t) for n, (_, t) in enumerate(chosen)],
    }
    hash_media("warm", "image", sets["posters"][0][0], 10**8, None, policy)  # first call
    print(f"{'images':16} {'n':>3} {'no OCR ms':>10} {'OCR ms':>8} {'OCR p90':>8} "
          f"{'words back':>11} {'same verdict':>13}")  # fmt: skip
    for name, images in sets.items():
        plain, read, recall, agree = [], [], [], []
        for data, text in images:
            plain.append(best_ms(lambda d=data: hash_media("m", "image", d, 10**8), args.repeat))
            started = time.perf_counter()  # once: OCR is the slow side, and its text is kept
            media = hash_media("m", "image", data, 10**8, None, policy)
            read.append((time.perf_counter() - started) * 1000)
            found = media.signals.get("ocr", {}).get("value", "")
            if text is None:
                continue
            wanted = words(text)
            got = set(words(found))
            recall.append(sum(w in got for w in wanted) / len(wanted))
            rendered = model.score(text).score >= 0.5
            agree.append(rendered == (model.score(found).score >= 0.5 if found else False))
        p90 = statistics.quantiles(read, n=10)[-1]
        back = f"{statistics.mean(recall):.0%}" if recall else "-"
        same = f"{sum(agree)}/{len(agree)}" if agree else "-"
        print(f"{name:16} {len(images):3d} {statistics.mean(plain):10.1f} "
              f"{statistics.mean(read):8.0f} {p90:8.0f} {back:>11} {same:>13}")  # fmt: skip


if __name__ == "__main__":
    main()
