"""Text inside images (MODSTREAM_OCR): read by a real Tesseract, judged like a post's text."""

from __future__ import annotations

import logging

import orjson
from PIL import Image, ImageDraw, ImageFont

from modstream.bank.bank import Bank
from modstream.contracts import BankEntry, UploadEvent
from modstream.demo import encode
from modstream.engine import Engine, hash_media
from modstream.hashing.ocr import OcrPolicy
from modstream.settings import Settings

EVENT = UploadEvent.parse(
    orjson.dumps({"schema": 1, "event_id": "e", "platform": "p", "content_id": "c",
                  "uploader_id": "u", "created_at": "2026-11-30T00:00:00Z", "text": "look"})
)  # fmt: skip


def poster(*lines: str) -> bytes:
    image = Image.new("RGB", (1000, 120 + 80 * len(lines)), "white")
    draw, font = ImageDraw.Draw(image), ImageFont.load_default(size=44)
    for n, line in enumerate(lines):
        draw.text((30, 40 + 80 * n), line, fill="black", font=font)
    return encode(image, quality=90)


def test_text_in_an_image_is_scored_and_matched_like_a_post():
    image = poster("Glory to our martyrs!", "Rise up, brothers, and join the ranks.")
    assert "ocr" not in hash_media("m1", "image", image, 10**8).signals  # off by default
    media = hash_media("m1", "image", image, 10**8, None, OcrPolicy())
    assert (
        media.signals["ocr"]["value"] == "glory to our martyrs rise up brothers and join the ranks"
    )
    bank = Bank()
    known = BankEntry("tve", "s1", "text", "rise up brothers and join the ranks")
    bank.apply(known.key, known)
    engine = Engine.from_settings(Settings(), bank)
    for lookups in (None, engine.lookup([(media,)])):
        decision = engine.decide(EVENT, (media,), 1.0, lookups=lookups)
        read = [e for e in decision.evidence if e.media_id == "m1"]
        assert {e.kind for e in read} == {"text_match", "text_score"}
        assert all(e.parts[-1] == {"source": "ocr"} for e in read)
        assert decision.verdict == "takedown"  # the known text, read from the picture


def test_ocr_is_bounded_and_its_failure_is_not_the_images(caplog):
    image = poster("a calm day at the lake")
    assert "ocr" in hash_media("m1", "image", image, 10**8, None, OcrPolicy()).signals
    with caplog.at_level(logging.WARNING, logger="modstream.ocr"):
        media = hash_media("m1", "image", image, 10**8, None, OcrPolicy(timeout_s=0.001))
    # Tesseract was stopped at its timeout (the bound), and the image is hashed regardless.
    assert [r.error for r in caplog.records] == ["TimeoutExpired"]
    assert media.error is None and "ocr" not in media.signals and "pdq" in media.signals
    missing = hash_media("m1", "image", image, 10**8, None, OcrPolicy(languages="xx-none"))
    assert missing.error is None and "ocr" not in missing.signals
