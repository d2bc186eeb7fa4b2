"""How well image matching survives everyday edits, and what it matches by mistake.

    .venv/bin/python bench/robustness.py [--unrelated 10000]      (make bench-robustness)

Banks the photos scikit-image ships (PDQ and pHash, the way the demo and the review loop bank
images: with the picture inside any plain border as a second entry), then decides an edited
copy of each photo per transform, twice: with the hash as it came only ("before": what the
pipeline did until issue 15) and with its variants (the seven other orientations, the
picture inside bars or padding). Recall is the share of copies taken down, and sent to
review or taken down. False matches: generated images (random shapes, gradients, noise and
text, none drawn from the photos), half of them banked too, the other half decided against
the whole bank; every match of one is a false match. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import random
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from modstream.bank.bank import Bank
from modstream.contracts import BankEntry, MediaSignals, UploadEvent
from modstream.demo import captioned, encode, sample
from modstream.engine import Engine, hash_media
from modstream.settings import Settings

PHOTOS = ["astronaut", "camera", "chelsea", "clock", "coffee", "coins", "hubble_deep_field",
          "immunohistochemistry", "moon", "retina", "rocket", "page"]  # fmt: skip
EVENT = UploadEvent(
    "e", "bench", "c", "u", "2026-11-30T00:00:00Z", None, (), 1
)  # decisions need an event; its fields do not matter here


def letterbox(image: Image.Image) -> Image.Image:
    """Bars above and below: a 4:3 or square photo in a 16:9-ish frame."""
    framed = Image.new("RGB", (image.width, int(image.height * 1.5)), "black")
    framed.paste(image, (0, image.height // 4))
    return framed


def pad(share: float):
    return lambda image: ImageOps.expand(image, border=int(image.width * share), fill="white")


def crop(share: float):
    def edit(image: Image.Image) -> Image.Image:
        dx, dy = int(image.width * share / 2), int(image.height * share / 2)
        return image.crop((dx, dy, image.width - dx, image.height - dy))

    return edit


def rotate(degrees: float):
    return lambda image: image.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=True)


def jpeg(quality: int):
    def edit(image: Image.Image) -> Image.Image:
        return Image.open(io.BytesIO(encode(image, quality=quality))).convert("RGB")

    return edit


TRANSFORMS = {
    "mirror": lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    "flip": lambda im: im.transpose(Image.Transpose.FLIP_TOP_BOTTOM),
    "rot90": lambda im: im.transpose(Image.Transpose.ROTATE_270),
    "rot180": lambda im: im.transpose(Image.Transpose.ROTATE_180),
    "rot270": lambda im: im.transpose(Image.Transpose.ROTATE_90),
    "transpose": lambda im: im.transpose(Image.Transpose.TRANSPOSE),
    "letterbox": letterbox,
    "pad 5%": pad(0.05),
    "pad 10%": pad(0.10),
    "pad 20%": pad(0.20),
    "crop 2%": crop(0.02),
    "crop 5%": crop(0.05),
    "crop 10%": crop(0.10),
    "rotate 2°": rotate(2),
    "rotate 5°": rotate(5),
    "JPEG q30": jpeg(30),
    "resize 0.3x": lambda im: im.resize((max(1, im.width * 3 // 10), max(1, im.height * 3 // 10))),
    "grayscale": lambda im: im.convert("L").convert("RGB"),
    "caption": captioned,
}


def signals_of(image: Image.Image) -> MediaSignals:
    return hash_media("m", "image", encode(image, quality=90), 10**8)


def without_variants(media: MediaSignals) -> MediaSignals:
    plain = {k: {f: v for f, v in s.items() if f != "variants"} for k, s in media.signals.items()}
    return MediaSignals(media.media_id, media.kind, plain, media.error, media.error_reason)  # type: ignore[arg-type]


def bank_entries(name: str, media: MediaSignals) -> list[BankEntry]:
    entries = []
    for signal_type in ("pdq", "phash"):
        computed = media.signals[signal_type]
        entries.append(BankEntry("bench", name, signal_type, computed["value"]))
        inner = computed.get("variants", {}).get("trimmed")
        if inner is not None:
            entries.append(BankEntry("bench", f"{name}.trimmed", signal_type, inner))
    return entries


def generated(seed: int) -> Image.Image:
    """An image unlike the photos: shapes, gradients, noise, a word, at a random size."""
    rng = random.Random(seed)
    width, height = rng.randint(200, 640), rng.randint(200, 640)
    top = np.array([rng.randint(0, 255) for _ in range(3)], dtype=np.float32)
    bottom = np.array([rng.randint(0, 255) for _ in range(3)], dtype=np.float32)
    ramp = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    pixels = top * (1 - ramp) + bottom * ramp + np.zeros((height, width, 3), np.float32)
    image = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(5, 60)):
        x0, y0 = rng.randint(-50, width), rng.randint(-50, height)
        x1, y1 = x0 + rng.randint(5, width), y0 + rng.randint(5, height)
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        shape = rng.choice(["rectangle", "ellipse", "line", "polygon"])
        if shape == "polygon":
            points = [(rng.randint(0, width), rng.randint(0, height)) for _ in range(5)]
            draw.polygon(points, fill=colour)
        elif shape == "line":
            draw.line((x0, y0, x1, y1), fill=colour, width=rng.randint(1, 12))
        else:
            getattr(draw, shape)((x0, y0, x1, y1), fill=colour)
    draw.text((rng.randint(0, width // 2), rng.randint(0, height // 2)), f"n{seed}", fill="white")
    noise = np.random.default_rng(seed).normal(0, rng.uniform(0, 20), (height, width, 3))
    noisy = np.clip(np.asarray(image, np.float32) + noise, 0, 255).astype(np.uint8)
    out = Image.fromarray(noisy)
    return out.filter(ImageFilter.GaussianBlur(rng.uniform(0, 2))) if rng.random() < 0.5 else out


def generated_signals(seed: int) -> MediaSignals:
    return signals_of(generated(seed))


def verdicts(engine: Engine, media: MediaSignals) -> tuple[str, set[str]]:
    decision = engine.decide(EVENT, (media,), 1.0)
    variants = {p["variant"] for e in decision.evidence for p in e.parts if "variant" in p}
    return decision.verdict, variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unrelated", type=int, default=10_000)
    parser.add_argument("--cost-entries", type=int, default=1_000_000)
    args = parser.parse_args()
    started = time.perf_counter()
    originals = {name: sample(name) for name in PHOTOS}
    bank = Bank()
    for name, image in originals.items():
        for entry in bank_entries(name, signals_of(image)):
            bank.apply(entry.key, entry)
    engine = Engine.from_settings(Settings(), bank)

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"{len(PHOTOS)} photos banked (scikit-image's); one edited copy each per transform\n")
    print("| transform | before: takedown | before: takedown or review | now: takedown | "
          "now: takedown or review | matched as |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for transform, edit in TRANSFORMS.items():
        counts: Counter[str] = Counter()
        how: Counter[str] = Counter()
        for image in originals.values():
            media = signals_of(edit(image))
            before, _ = verdicts(engine, without_variants(media))
            now, variants = verdicts(engine, media)
            counts["before_takedown"] += before == "takedown"
            counts["before_any"] += before != "allow"
            counts["now_takedown"] += now == "takedown"
            counts["now_any"] += now != "allow"
            how.update(variants or ({"as it came"} if now != "allow" else set()))
        n = len(originals)
        cells = [f"{counts[k]}/{n}" for k in ("before_takedown", "before_any", "now_takedown",
                                                  "now_any")]  # fmt: skip
        print(f"| {transform} | {' | '.join(cells)} | {', '.join(sorted(how)) or '-'} |")

    half = args.unrelated // 2
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        unrelated = list(pool.map(generated_signals, range(args.unrelated), chunksize=64))
    for seed, media in enumerate(unrelated[:half]):
        for entry in bank_entries(f"generated-{seed}", media):
            bank.apply(entry.key, entry)
    false: Counter[str] = Counter()
    for media in unrelated[half:]:
        before, _ = verdicts(engine, without_variants(media))
        now, variants = verdicts(engine, media)
        false["before_takedown"] += before == "takedown"
        false["before_any"] += before != "allow"
        false["now_takedown"] += now == "takedown"
        false["now_any"] += now != "allow"
        false.update(f"variant {v}" for v in variants)
    print(f"\nfalse matches: {len(unrelated) - half:,} generated images decided against "
          f"{len(PHOTOS)} photos and {half:,} other generated images (banked)\n")  # fmt: skip
    print("| | before | now |")
    print("|---|---|---|")
    print(f"| taken down | {false['before_takedown']} | {false['now_takedown']} |")
    print(f"| sent to review or taken down | {false['before_any']} | {false['now_any']} |")
    extra = ", ".join(f"{k}: {v}" for k, v in sorted(false.items()) if k.startswith("variant"))
    print(f"\nvariants behind the false matches now: {extra or 'none'}")
    central_crops(originals, unrelated[half:])
    cost(args.cost_entries)
    print(f"\n({time.perf_counter() - started:.0f} s)")


SCALES = (1.0, 0.9, 0.8)


def central_pdqs(image: Image.Image) -> list[str]:
    """PDQ of the central 100%, 90% and 80% of a picture."""
    from modstream.hashing.pdq import pdq_of_rgb

    out = []
    for scale in SCALES:
        dx, dy = int(image.width * (1 - scale) / 2), int(image.height * (1 - scale) / 2)
        box = image.crop((dx, dy, image.width - dx, image.height - dy))
        out.append(pdq_of_rgb(np.asarray(box.convert("RGB")))[0])
    return out


def central_crops(originals: dict[str, Image.Image], unrelated: list[MediaSignals]) -> None:
    """Not in the pipeline: would PDQ of fixed central crops, on both sides, catch crops
    and small rotations? Bank and query each hash the central 100/90/80%; a copy counts as
    found when any pair is within 31 bits. False matches: generated images against the
    photos' crops (their full-picture hashes are in ``unrelated``; the crops are hashed
    again here from regenerated images)."""
    from modstream.signals import get

    distance = get("pdq").distance
    banked = {name: central_pdqs(image) for name, image in originals.items()}
    print("\nexperiment (not in the pipeline): PDQ of central 100/90/80% crops on both sides\n")
    print("| transform | found (<= 31) now | found with central crops |")
    print("|---|---|---|")
    for transform in ("crop 5%", "crop 10%", "rotate 2°", "rotate 5°", "caption"):
        plain = crops = 0
        for name, image in originals.items():
            copy = TRANSFORMS[transform](image)
            queries = central_pdqs(copy)
            plain += distance(queries[0], banked[name][0]) <= 31
            crops += any(distance(q, b) <= 31 for q in queries for b in banked[name])
        print(f"| {transform} | {plain}/{len(originals)} | {crops}/{len(originals)} |")
    false = 0
    for seed in range(len(unrelated)):
        queries = central_pdqs(generated(10**6 + seed))
        false += any(distance(q, b) <= 31 for q in queries for bs in banked.values() for b in bs)
    print(f"\nfalse matches with central crops: {false} of {len(unrelated):,} generated images")


def cost(entries: int) -> None:
    """What the variants cost: hashing an image (PDQ in eight orientations vs one, pHash
    likewise, the bordered picture), and the index lookups per image in a bank of
    ``entries`` random PDQ hashes: the hash at the review radius (45) alone, and with its
    eight variants at the takedown radius (31), as the engine looks them up."""
    from modstream.formats.hexcodes import hex_to_codes
    from modstream.hashing.pdq import pdq_dihedral_of_rgb, pdq_of_rgb
    from modstream.hashing.phash import phash_dihedral_of, small_grey
    from modstream.matching.hamming import HammingIndex

    photos = [np.asarray(sample(name).resize((640, 480))) for name in PHOTOS]
    rounds = 20

    def per_image(fn) -> float:
        began = time.perf_counter()
        for _ in range(rounds):
            for pixels in photos:
                fn(pixels)
        return (time.perf_counter() - began) / (rounds * len(photos)) * 1000

    import imagehash

    pdq, pdq8 = per_image(pdq_of_rgb), per_image(pdq_dihedral_of_rgb)

    def phash_before(pixels: np.ndarray) -> str:  # what hashing/phash.py did until issue 15
        grey = Image.fromarray(pixels).convert("L")
        return str(imagehash.phash(grey.reduce(max(1, min(grey.size) // 128))))

    phash = per_image(phash_before)
    phash8 = per_image(lambda px: phash_dihedral_of(small_grey(Image.fromarray(px))))
    print(f"\nhashing a 640x480 image, ms: PDQ {pdq:.2f}, PDQ in 8 orientations {pdq8:.2f}; "
          f"pHash {phash:.2f}, pHash in 8 orientations {phash8:.2f}")  # fmt: skip
    rng = np.random.default_rng(7)
    index = HammingIndex(256)
    index.add_many(np.arange(entries), rng.integers(0, 2**64, (entries, 4), dtype=np.uint64))
    index.wait_for_merges()
    queries = [pdq_dihedral_of_rgb(px)[0] for px in photos] * 20
    originals = hex_to_codes([q["original"] for q in queries], 256)
    variants = hex_to_codes([v for q in queries for k, v in q.items() if k != "original"], 256)
    for label, codes, radius in (("as it came, radius 45", originals, 45),
                                 ("7 orientations, radius 31", variants, 31)):  # fmt: skip
        index.search(codes[:10], radius)  # warm
        began = time.perf_counter()
        index.search(codes, radius)
        spent = (time.perf_counter() - began) / len(queries) * 1000
        print(f"lookup per image in {entries:,} PDQ entries, {label}: {spent:.3f} ms")
    index.close()


if __name__ == "__main__":
    main()
