"""Real video files for tests, encoded with PyAV from scikit-image's photos.

A clip shows a few photos in turn, each for a couple of seconds with a slow zoom, so its
frames change over time as footage does. Variants are made the ways copies are made:
re-encoded with another codec and bitrate, resized, trimmed, turned grey, logo-stamped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageOps

from modstream.demo import sample

Frame = Image.Image


def scenes(
    names: list[str], seconds_each: float, fps: int, size: tuple[int, int]
) -> Iterator[Frame]:
    """Frames of a slideshow with a slow zoom into each photo."""
    per_scene = round(seconds_each * fps)
    for name in names:
        photo = sample(name).convert("RGB")
        for i in range(per_scene):
            zoom = 1.0 + 0.15 * i / per_scene
            w, h = photo.size
            cw, ch = int(w / zoom), int(h / zoom)
            box = ((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch)
            yield photo.crop(box).resize(size)


def write(path: Path, frames: Iterator[Frame], fps: int, codec: str = "libx264", **options) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.pix_fmt = "yuv420p"
        stream.options = {k: str(v) for k, v in options.items()}
        first = True
        for image in frames:
            if first:
                stream.width, stream.height = image.size
                first = False
            frame = av.VideoFrame.from_ndarray(np.asarray(image), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def clip(path: Path, names: list[str], seconds_each: float = 2.0, fps: int = 25,
         size: tuple[int, int] = (640, 360), edit: Callable[[Frame], Frame] | None = None,
         skip_seconds: float = 0.0, **options) -> Path:  # fmt: skip
    frames = scenes(names, seconds_each, fps, size)
    skip = round(skip_seconds * fps)
    edited = (edit(f) if edit else f for n, f in enumerate(frames) if n >= skip)
    return write(path, edited, fps, **options)


def reencoded(source: Path, path: Path) -> Path:
    """The source decoded and encoded again with another codec at a low bitrate."""
    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        fps = int(Fraction(stream.average_rate))
        images = [f.to_image() for f in container.decode(stream)]
    return write(path, iter(images), fps, codec="mpeg4", b=300_000)


def grey(frame: Frame) -> Frame:
    return ImageOps.grayscale(frame).convert("RGB")


def logo(frame: Frame) -> Frame:
    """A channel's bug in the corner: a half-opaque white box with its name."""
    w, h = frame.size
    box = (w - w // 8 - 10, h - h // 12 - 10, w - 10, h - 10)
    layer = Image.new("RGBA", frame.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    draw.rectangle(box, fill=(255, 255, 255, 150))
    draw.text((box[0] + 4, box[1] + 4), "REUP", fill=(200, 0, 0, 255))
    return Image.alpha_composite(frame.convert("RGBA"), layer).convert("RGB")
