"""Text inside images, read by Tesseract (Debian's ``tesseract-ocr``), when a platform turns
it on (``MODSTREAM_OCR``): propaganda is often a picture of words, which no image hash of a
new design and no text model sees.

Bounded like the rest of hashing: the picture goes to Tesseract in grey, no larger than
``max_side`` pixels; Tesseract runs as a child process under a timeout, and its output is cut
to ``MAX_CHARS``. A failure is not the media's failure: the image is still matched by its
hashes, and the item only lacks the text.
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
from dataclasses import dataclass

from PIL import Image

MAX_CHARS = 20_000
log = logging.getLogger("modstream.ocr")
#: Tesseract's environment: one OpenMP thread (the hashing pool runs images in parallel, and
#: its threads spin-wait: 4x slower per image on two cores, bench/ocr.py), and nothing of
#: the worker's own environment beyond what finds the program and its language data.
_TESSERACT_ENV = {
    "OMP_THREAD_LIMIT": "1",
    **{k: v for k, v in os.environ.items() if k in ("PATH", "TESSDATA_PREFIX", "LANG")},
}


@dataclass(frozen=True)
class OcrPolicy:
    languages: str = "eng"  # Tesseract's language codes, joined by '+'
    timeout_s: float = 10.0
    max_side: int = 2000


def read_text(image: Image.Image, policy: OcrPolicy) -> str | None:
    """The text Tesseract reads in the picture ('' if none); None if it could not run."""
    grey = image.convert("L")
    if max(grey.size) > policy.max_side:
        grey.thumbnail((policy.max_side, policy.max_side))
    png = io.BytesIO()
    grey.save(png, "PNG")
    command = ["tesseract", "stdin", "stdout", "-l", policy.languages, "--psm", "3"]
    try:
        run = subprocess.run(
            command,
            input=png.getvalue(),
            capture_output=True,
            timeout=policy.timeout_s,
            env=_TESSERACT_ENV,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("OCR did not run", extra={"error": type(exc).__name__})
        return None
    if run.returncode != 0:
        log.warning("OCR failed", extra={"error": run.stderr.decode(errors="replace")[:200]})
        return None
    return run.stdout.decode("utf-8", errors="replace")[:MAX_CHARS]
