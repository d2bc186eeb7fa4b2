"""Decode untrusted image bytes into a normalized RGB picture, safely.

Refuses decompression bombs before any pixel is decoded, applies EXIF orientation (a phone
photo and its rotated re-upload must hash alike), and flattens every PIL mode (palette,
alpha, 16-bit, CMYK, ...) to 8-bit RGB so that the hashers see one format.
"""

from __future__ import annotations

import contextlib
import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from modstream.contracts import MediaError

_ORIENTATION = 0x0112  # the EXIF tag


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """Return an RGB image or raise MediaError (reasons: not_an_image, too_large, corrupt)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise MediaError(
                    "too_large", f"image is {width}x{height}, over the {max_pixels}-pixel limit"
                )
            if image.format == "JPEG" and not jpeg_complete(data):
                # libjpeg fills a truncated JPEG with grey and only warns: a few KB would
                # decode as a huge flat picture that hashes as nothing.
                raise MediaError("corrupt", "premature end of JPEG data")
            image.load()
    except MediaError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise MediaError("too_large", f"decompression bomb refused: {exc}") from None
    except UnidentifiedImageError:
        raise MediaError("not_an_image", "bytes are not a recognised image format") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise MediaError("corrupt", f"image could not be decoded: {exc}") from None
    with contextlib.suppress(Exception):
        if image.getexif().get(_ORIENTATION, 1) != 1:  # transposing copies: only when needed
            image = ImageOps.exif_transpose(image) or image
    return to_rgb(image)


def jpeg_complete(data: bytes) -> bool:
    """Whether the last scan of a JPEG ends with its end-of-image marker. Inside a scan 0xFF
    is always followed by 0x00 or a restart marker, so an EOI after the last start-of-scan is
    the real end (an EXIF thumbnail's EOI comes before the first scan)."""
    last_scan = data.rfind(b"\xff\xda")
    return last_scan >= 0 and data.find(b"\xff\xd9", last_scan) >= 0


def to_rgb(image: Image.Image) -> Image.Image:
    """Flatten any PIL mode to 8-bit RGB; transparent areas become white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _wide_grey_to_rgb(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("LA", "PA", "La"):
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "RGBa"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB")


def _wide_grey_to_rgb(image: Image.Image) -> Image.Image:
    """16-bit and float greyscale: scale the real range to 0..255 instead of clipping."""
    import numpy as np

    pixels = np.asarray(image.convert("F") if image.mode.startswith("I;16") else image)
    pixels = pixels.astype(np.float64)
    low, high = float(pixels.min()), float(pixels.max())
    scale = 255.0 / (high - low) if high > low else 0.0
    grey = ((pixels - low) * scale).clip(0, 255).astype(np.uint8)
    return Image.fromarray(grey, mode="L").convert("RGB")
