"""pHash (imagehash's DCT hash) of a picture: 64 bits in hex, in eight orientations.

The bits are the signs, against their median, of the 8x8 lowest frequencies of the DCT of a
32x32 grey thumbnail. Mirroring the thumbnail multiplies coefficient (u, v) by (-1)^v,
flipping it by (-1)^u, and transposing it swaps u and v: so one DCT gives all eight
orientations (each with its own median), and the original is bit for bit ``imagehash.phash``.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

#: pHash looks at a 32x32 thumbnail; box-reducing large greys to >= this side first gives the
#: same bits at a fraction of the cost of a Lanczos resize from full resolution.
_REDUCE_TO = 128
_SIGNS = (-1.0) ** np.arange(8)  # (-1)^k for k = 0..7


def phash_of(image: Image.Image) -> str:
    return phash_dihedral_of(small_grey(image))["original"]


def small_grey(image: Image.Image) -> Image.Image:
    """The picture in grey, box-reduced to no less than 128 pixels a side: what pHash (and
    the border finder) look at."""
    grey = image.convert("L")
    factor = min(grey.size) // _REDUCE_TO
    return grey.reduce(factor) if factor >= 2 else grey


def phash_dihedral_of(grey: Image.Image) -> dict[str, str]:
    """pHash of a picture (``small_grey`` of it) and of its seven other orientations, named
    as ``hashing.pdq.DIHEDRAL`` names them (by the upload's edit that each one undoes)."""
    import scipy.fftpack

    pixels = np.asarray(grey.convert("L").resize((32, 32), Image.Resampling.LANCZOS))
    low = scipy.fftpack.dct(scipy.fftpack.dct(pixels, axis=0), axis=1)[:8, :8]
    mirrored = low * _SIGNS[np.newaxis, :]  # columns reversed
    flipped = low * _SIGNS[:, np.newaxis]  # rows reversed
    turned = low * _SIGNS[:, np.newaxis] * _SIGNS[np.newaxis, :]  # both: 180 degrees
    blocks = {
        "original": low,
        "mirror": mirrored,
        "flip": flipped,
        "rot180": turned,
        "transpose": low.T,
        "transverse": turned.T,
        # Turning the query back 90 degrees counter-clockwise undoes a clockwise turn:
        # rot90(ccw) = transpose then flip rows, i.e. the transpose's rows reversed.
        "rot90cw": low.T * _SIGNS[:, np.newaxis],
        "rot90ccw": low.T * _SIGNS[np.newaxis, :],
    }
    return {name: _bits_hex(block) for name, block in blocks.items()}


def _bits_hex(block: np.ndarray) -> str:
    """Row by row, most significant bit first: imagehash's hex."""
    return np.packbits(block > np.median(block)).tobytes().hex()
