"""Signals of real photos: edited copies stay close, unrelated photos stay far."""

import numpy as np
import pytest
from PIL import Image

from modstream.contracts import MediaError
from modstream.demo import captioned, cropped, encode, resized, sample
from modstream.engine import hash_media
from modstream.hashing.decode import decode_image
from modstream.hashing.pdq import pdq_of_rgb
from modstream.signals import get, registry

LIMIT = 50_000_000


def signals(data: bytes) -> dict:
    result = hash_media("m", "image", data, LIMIT)
    assert result.error is None, result.error
    return {name: value["value"] for name, value in result.signals.items()}


def distance(kind: str, a: str, b: str) -> int:
    return get(kind).distance(a, b)


def test_registry_lists_every_plugin():
    assert {"pdq", "phash", "md5", "sha256", "text"} <= set(registry())


@pytest.mark.parametrize("name", ["astronaut", "coffee", "rocket"])
def test_edited_copies_stay_within_pdq_match_distance(name):
    original = signals(encode(sample(name), quality=95))
    for edited in (
        encode(resized(sample(name)), quality=50),
        encode(captioned(sample(name)), quality=85),
        encode(cropped(sample(name)), quality=80),
        encode(sample(name), "PNG"),
    ):
        copy = signals(edited)
        assert distance("pdq", original["pdq"], copy["pdq"]) <= 31
        assert copy["md5"] != original["md5"]


def test_unrelated_photos_are_far_apart():
    names = ["astronaut", "coffee", "rocket", "camera", "chelsea", "coins"]
    hashes = [signals(encode(sample(n)))["pdq"] for n in names]
    for i in range(len(hashes)):
        for j in range(i + 1, len(hashes)):
            assert distance("pdq", hashes[i], hashes[j]) > 70


def test_pdq_quality_is_reported_and_flat_images_are_not_usable():
    flat = hash_media("m", "image", encode(Image.new("RGB", (200, 200), (90, 90, 90))), LIMIT)
    assert flat.signals["pdq"]["quality"] < 50
    assert not get("pdq").usable(flat.signals["pdq"], 50)
    photo = hash_media("m", "image", encode(sample("astronaut")), LIMIT)
    assert get("pdq").usable(photo.signals["pdq"], 50)


@pytest.mark.parametrize("mode", ["P", "P-transparent", "RGBA", "LA", "L", "CMYK", "I;16", "1"])
def test_every_pil_mode_decodes_to_rgb_and_hashes_close(mode):
    base = sample("astronaut")
    if mode == "I;16":
        grey = np.asarray(base.convert("L")).astype(np.uint16) * 257
        image = Image.fromarray(grey)
    elif mode == "P-transparent":
        image = base.convert("P")
        image.info["transparency"] = 0
    else:
        image = base.convert(mode)
    fmt = "TIFF" if mode in ("CMYK", "I;16") else "PNG"
    decoded = decode_image(encode(image, fmt), LIMIT)
    assert decoded.mode == "RGB"
    assert decoded.size == base.size
    if mode == "P-transparent":  # transparent pixels become white, the rest keep colour
        transparent = np.asarray(image) == 0
        assert (np.asarray(decoded)[transparent] == 255).all()
        assert not (np.asarray(decoded)[~transparent] == 255).all()
    elif mode != "1":
        ref = signals(encode(base.convert("L").convert("RGB"), "PNG"))["pdq"]
        assert distance("pdq", ref, signals(encode(image, fmt))["pdq"]) <= 31


def test_exif_orientation_is_applied():
    base = sample("coffee")
    rotated = base.rotate(90, expand=True)  # stored sideways, EXIF says rotate back
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    data = encode(rotated, quality=95, exif=exif.tobytes())
    assert decode_image(data, LIMIT).size == base.size
    assert distance("pdq", signals(encode(base, quality=95))["pdq"], signals(data)["pdq"]) <= 31


def test_decompression_bomb_is_refused_before_decoding():
    huge = encode(Image.new("L", (5000, 5000)), "PNG")  # tiny file, 25 Mpx
    with pytest.raises(MediaError) as error:
        decode_image(huge, max_pixels=10_000_000)
    assert error.value.reason == "too_large"


def test_broken_images_report_a_reason_and_keep_byte_signals():
    truncated = encode(sample("camera"), quality=90)[:2000]
    result = hash_media("m", "image", truncated, LIMIT)
    assert result.error_reason == "corrupt"
    assert set(result.signals) == {"md5", "sha256"}
    garbage = hash_media("m", "image", b"definitely not an image", LIMIT)
    assert garbage.error_reason == "not_an_image"


@pytest.mark.parametrize("name", ["astronaut", "coffee", "camera", "coins", "rocket"])
@pytest.mark.parametrize("size", [None, (640, 480), (33, 17), (1, 1)])
def test_pdq_is_bit_identical_to_pdqhash_in_threatexchange_format(name, size):
    """Our luma loop plus the wheel's C++ hasher give exactly ``pdqhash.compute``'s hash and
    quality, written as ThreatExchange writes PDQ (first bit most significant)."""
    import pdqhash

    image = sample(name).convert("RGB")
    pixels = np.asarray(image if size is None else image.resize(size))
    vector, quality = pdqhash.compute(pixels)
    bits = "".join(str(int(b)) for b in vector)
    assert pdq_of_rgb(pixels) == (f"{int(bits, 2):064x}", int(quality))
