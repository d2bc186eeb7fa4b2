"""Media to compute signals from: bytes or a file, with a lazily decoded picture."""

from __future__ import annotations

import hashlib
import io
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from modstream.hashing.decode import decode_image

if TYPE_CHECKING:
    from PIL import Image

    from modstream.hashing.ocr import OcrPolicy
    from modstream.hashing.video import VideoSampling


class Content:
    """Media to compute signals from: bytes, or a file (a video too big for memory), with a
    lazily decoded image, so bytes-only signals never decode, and how to sample a video."""

    def __init__(
        self,
        data: bytes | Path,
        kind: str,
        max_pixels: int,
        video: VideoSampling | None = None,
        ocr: OcrPolicy | None = None,
    ) -> None:
        self.path = data if isinstance(data, Path) else None
        self._data = None if isinstance(data, Path) else data
        self.kind = kind
        self.max_pixels = max_pixels
        self.video = video
        self.ocr = ocr  # read text inside images (None: do not)

    @property
    def data(self) -> bytes:
        return self._data if self._data is not None else self.path.read_bytes()  # type: ignore[union-attr]

    def digest(self, algorithm: str) -> str:
        """A hashlib digest of the content, streamed from the file if it is one."""
        if self.path is None:
            return hashlib.new(algorithm, self.data).hexdigest()
        with self.path.open("rb") as file:
            return hashlib.file_digest(file, algorithm).hexdigest()

    def open(self) -> BinaryIO:
        """The content as a binary file object (for decoders that read files)."""
        return self.path.open("rb") if self.path is not None else io.BytesIO(self.data)

    @cached_property
    def image(self) -> Image.Image:
        return decode_image(self.data, self.max_pixels)

    @cached_property
    def small_grey(self) -> Image.Image:
        """The picture in grey, reduced (pHash's input; the border finder's too)."""
        from modstream.hashing.phash import small_grey

        return small_grey(self.image)

    @cached_property
    def content_box(self) -> tuple[int, int, int, int] | None:
        """Where the picture is inside letterbox bars or padding, None if it has none."""
        from modstream.hashing.borders import content_box

        return content_box(self.image, self.small_grey)
