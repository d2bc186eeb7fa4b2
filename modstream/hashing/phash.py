"""pHash (imagehash's DCT hash) of a picture: 64 bits in hex."""

from __future__ import annotations

from PIL import Image

#: pHash looks at a 32x32 thumbnail; box-reducing large greys to >= this side first gives the
#: same bits at a fraction of the cost of a Lanczos resize from full resolution.
_REDUCE_TO = 128


def phash_of(image: Image.Image) -> str:
    import imagehash

    grey = image.convert("L")
    factor = min(grey.size) // _REDUCE_TO
    if factor >= 2:
        grey = grey.reduce(factor)
    return str(imagehash.phash(grey))
