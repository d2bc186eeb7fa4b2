"""Everyday evasions: other orientations and borders. Hashes of real photos, and decisions
against a bank of the originals."""

from __future__ import annotations

import imagehash
import numpy as np
import pdqhash
import pytest
from PIL import Image, ImageFilter, ImageOps

from modstream.bank.bank import Bank
from modstream.contracts import BankEntry, MediaSignals, UploadEvent, dumps
from modstream.demo import encode, sample
from modstream.engine import Engine, hash_media
from modstream.hashing.borders import content_box
from modstream.hashing.pdq import DIHEDRAL, pdq_dihedral_of_rgb, pdq_of_rgb
from modstream.hashing.phash import phash_dihedral_of, small_grey
from modstream.settings import Settings
from modstream.signals import get

EDITS = {
    "mirror": Image.Transpose.FLIP_LEFT_RIGHT,
    "flip": Image.Transpose.FLIP_TOP_BOTTOM,
    "rot180": Image.Transpose.ROTATE_180,
    "rot90cw": Image.Transpose.ROTATE_270,  # PIL turns counter-clockwise
    "rot90ccw": Image.Transpose.ROTATE_90,
    "transpose": Image.Transpose.TRANSPOSE,
    "transverse": Image.Transpose.TRANSVERSE,
}
PHOTOS = ["astronaut", "coffee", "rocket", "chelsea"]
EVENT = {
    "schema": 1,
    "event_id": "e",
    "platform": "p",
    "content_id": "c",
    "uploader_id": "u",
    "created_at": "2026-11-30T00:00:00Z",
    "media": [{"media_id": "m1", "kind": "image", "url": "https://x.test/a.jpg"}],
}


def letterboxed(image: Image.Image, share: float = 0.2) -> Image.Image:
    framed = Image.new("RGB", (image.width, int(image.height * (1 + 2 * share))), "black")
    framed.paste(image, (0, int(image.height * share)))
    return framed


def test_the_dihedral_hashes_are_pdqhash_s_and_the_original_is_the_plain_hash():
    pixels = np.asarray(sample("rocket").convert("RGB"))
    hashes, quality = pdq_dihedral_of_rgb(pixels)
    vectors, expected_quality = pdqhash.compute_dihedral(pixels)
    expected = [np.packbits(np.asarray(v).astype(np.uint8)).tobytes().hex() for v in vectors]
    assert list(hashes) == list(DIHEDRAL) and list(hashes.values()) == expected
    assert (hashes["original"], quality) == pdq_of_rgb(pixels) and quality == expected_quality


@pytest.mark.parametrize("name", PHOTOS)
def test_each_edit_is_undone_by_the_variant_of_its_name(name):
    photo = sample(name).convert("RGB")
    pdq = pdq_dihedral_of_rgb(np.asarray(photo))[0]["original"]
    phash = phash_dihedral_of(small_grey(photo))
    assert phash["original"] == str(
        imagehash.phash(photo.convert("L").reduce(max(1, min(photo.size) // 128)))
    )
    for edit, transpose in EDITS.items():
        copy = photo.transpose(transpose)
        assert get("pdq").distance(pdq_dihedral_of_rgb(np.asarray(copy))[0][edit], pdq) <= 31
        assert (
            get("phash").distance(phash_dihedral_of(small_grey(copy))[edit], phash["original"]) <= 6
        )


def test_bars_padding_and_blurred_frames_are_found_and_plain_photos_left_alone():
    photo = sample("coffee").convert("RGB")
    w, h = photo.size
    assert content_box(photo) is None
    assert content_box(letterboxed(photo)) == (0, int(h * 0.2), w, int(h * 0.2) + h)
    padded = ImageOps.expand(photo, border=60, fill="white")
    assert content_box(padded) == pytest.approx((60, 60, 60 + w, 60 + h), abs=3)
    blurred = photo.resize((w * 3 // 2, h * 3 // 2)).filter(ImageFilter.GaussianBlur(25))
    blurred.paste(photo, (w // 4, h // 4))
    # within a few pixels of the 256-pixel probe (3.5 pixels each here)
    assert content_box(blurred) == pytest.approx((w // 4, h // 4, w // 4 + w, h // 4 + h), abs=12)


@pytest.mark.parametrize("edit", [*EDITS, "letterbox", "padding"])
def test_an_edited_copy_of_a_banked_photo_is_taken_down_and_the_evidence_says_how(edit):
    photo = sample("chelsea").convert("RGB")
    original = hash_media("m", "image", encode(photo, quality=95), 10**8).signals
    bank = Bank()
    for signal_type in ("pdq", "phash"):
        entry = BankEntry("tve", "cat", signal_type, original[signal_type]["value"])
        bank.apply(entry.key, entry)
    if edit == "letterbox":
        copy, variant = letterboxed(photo), "trimmed"
    elif edit == "padding":
        copy, variant = ImageOps.expand(photo, border=50, fill="white"), "trimmed"
    else:
        copy, variant = photo.transpose(EDITS[edit]), edit
    media = (hash_media("m1", "image", encode(copy, quality=85), 10**8),)
    event = UploadEvent.parse(dumps(EVENT))
    decision = Engine.from_settings(Settings(), bank).decide(event, media, 1.0)
    assert decision.verdict == "takedown"
    pdq = next(e for e in decision.evidence if e.signal_type == "pdq")
    assert pdq.parts[-1] == {"variant": variant}
    assert "matched" in (pdq.detail or "")


def test_an_unrelated_photo_matches_in_no_orientation():
    bank = Bank()
    for name in ("astronaut", "coffee", "rocket"):
        value = hash_media("m", "image", encode(sample(name)), 10**8).signals["pdq"]["value"]
        bank.apply(f"tve/pdq/{name}", BankEntry("tve", name, "pdq", value))
    for name in ("camera", "chelsea", "coins"):
        computed = hash_media("m", "image", encode(sample(name)), 10**8).signals["pdq"]
        for value in [computed["value"], *computed["variants"].values()]:
            assert bank.match("pdq", value) == []


def test_a_still_of_a_banked_video_and_a_banked_image_inside_a_video(tmp_path):
    from videos import clip

    from modstream.hashing.video import VideoSampling

    def hashed(kind: str, data) -> MediaSignals:
        return hash_media("m1", kind, data, 10**8, VideoSampling())

    film = clip(tmp_path / "film.mp4", ["astronaut", "coffee"], seconds_each=2.0)
    bank = Bank()
    video = BankEntry("tve", "film", "vpdq", hashed("video", film).signals["vpdq"]["value"])
    photo = BankEntry("tve", "rocket", "pdq", hashed("image", encode(sample("rocket")))
                      .signals["pdq"]["value"])  # fmt: skip
    for entry in (video, photo):
        bank.apply(entry.key, entry)
    engine = Engine.from_settings(Settings(), bank)
    event = UploadEvent.parse(dumps(EVENT))

    still = hashed("image", encode(sample("coffee").resize((640, 360)), quality=85))
    found = {e.kind: e for e in engine.decide(event, (still,), 1.0).evidence}
    assert (found["still_of_video"].entry_id, found["still_of_video"].action) == ("film", "review")

    upload = clip(tmp_path / "upload.mp4", ["camera", "rocket"], seconds_each=2.0)
    inside = hashed("video", upload)
    for lookups in ({}, engine.lookup([(inside,)])):  # searched now, or with the batch's
        found = {e.kind: e for e in engine.decide(event, (inside,), 1.0, lookups=lookups).evidence}
        seen = found["image_in_video"]
        assert (seen.entry_id, seen.action) == ("rocket", "review")
        assert 2.0 <= seen.parts[0]["at"] < 4.0  # the rocket's scene is the second
    unrelated = hashed("image", encode(sample("chelsea")))
    kinds = {e.kind for e in engine.decide(event, (unrelated,), 1.0).evidence}
    assert not kinds & {"still_of_video", "image_in_video"}
