"""vPDQ: a video as the PDQ hashes of frames sampled through it, in Meta's vPDQ format.

A video is decoded with PyAV (FFmpeg inside the wheel) and one frame is taken per sampling
interval (one second by default) by presentation time. Each taken frame is PDQ-hashed;
frames below the quality floor are dropped (flat or dark frames say nothing), and a frame
within a small distance of the last kept one is collapsed into it (a static scene is one
frame). Only what the sampling needs is decoded: frames nothing else refers to (B-frames)
are skipped by the decoder, which is most of a modern stream.

Work per video is bounded: at most ``max_seconds`` of it is hashed, and the result says when
the rest was cut. A hostile file is refused (``too_large``, ``too_costly``) rather than cut:
frames over the pixel limit (checked in the header and on every frame), more decoded frames
than ``max_frames`` (thousands of frames packed into a second of media time), or more CPU
time than ``max_cpu_s``. A cut would let padding in front of banned footage hide it.

The result is a list of ``FrameHash`` lines in Meta's vPDQ format (``modstream.formats.vpdq``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from modstream.contracts import MediaError
from modstream.formats.hexcodes import hamming_distance
from modstream.formats.vpdq import FrameHash
from modstream.hashing.pdq import pdq_of_rgb


@dataclass(frozen=True)
class VideoSampling:
    seconds_per_frame: float = 1.0
    #: Hash at most this much of a video; the decision says when the rest was cut.
    max_seconds: float = 1800.0
    min_quality: int = 50
    #: A sampled frame this close to the last kept one is the same scene: not kept again.
    collapse_distance: int = 2
    #: Refuse frames larger than this (the image decompression-bomb limit).
    max_pixels: int = 64_000_000
    #: Refuse a video once this many frames were decoded, or this much CPU time spent.
    max_frames: int = 100_000
    max_cpu_s: float = 300.0


@dataclass(frozen=True)
class VideoHash:
    frames: tuple[FrameHash, ...]
    duration: float  # of the whole video, as its container says
    hashed_seconds: float  # how far into the video the hashing went

    @property
    def truncated(self) -> bool:
        return self.hashed_seconds + 1.0 < self.duration


def hash_video(source: Path | BinaryIO, sampling: VideoSampling = VideoSampling()) -> VideoHash:
    """vPDQ of a video file (a path or an open binary file). CPU-bound: run it in a process
    pool. Raises MediaError with reason ``not_a_video`` or ``corrupt``."""
    import av

    try:
        container = av.open(str(source) if isinstance(source, Path) else source, mode="r")
    except (av.FFmpegError, UnicodeDecodeError) as exc:
        raise MediaError("not_a_video", f"not a readable video: {_reason(exc)}") from None
    with container:
        if not container.streams.video or container.format.name in _STILL_IMAGE_FORMATS:
            raise MediaError("not_a_video", f"no video stream ({container.format.name})")
        stream = container.streams.video[0]
        context = stream.codec_context
        _check_pixels(context.width, context.height, sampling.max_pixels)
        # FFmpeg refuses larger frames itself, before it allocates them.
        context.options = {**context.options, "max_pixels": str(sampling.max_pixels)}
        context.skip_frame = "NONREF"
        stream.thread_type = "SLICE"  # one process per core already: no frame threads
        duration = _duration(container, stream)
        fps = float(stream.average_rate or stream.guessed_rate or 0) or None
        frames: list[FrameHash] = []
        next_sample, hashed_to, last_kept = 0.0, 0.0, None
        cpu_deadline = time.process_time() + sampling.max_cpu_s
        try:
            for decoded, frame in enumerate(container.decode(stream), 1):
                _check_pixels(frame.width, frame.height, sampling.max_pixels)
                if decoded > sampling.max_frames:
                    raise MediaError(
                        "too_costly", f"more than {sampling.max_frames} frames to decode"
                    )
                if time.process_time() > cpu_deadline:
                    raise MediaError(
                        "too_costly", f"decoding took over {sampling.max_cpu_s:g} CPU seconds"
                    )
                at = frame.time
                if at is None or at + 1e-6 < next_sample:
                    continue
                if at >= sampling.max_seconds:
                    break
                hashed_to = at
                next_sample = (
                    int(at / sampling.seconds_per_frame) + 1
                ) * sampling.seconds_per_frame
                pdq_hex, quality = pdq_of_rgb(frame.to_ndarray(format="rgb24"))
                if quality < sampling.min_quality:
                    continue
                if (
                    last_kept is not None
                    and hamming_distance(pdq_hex, last_kept) <= sampling.collapse_distance
                ):
                    continue
                last_kept = pdq_hex
                number = round(at * fps) if fps else len(frames)
                frames.append(FrameHash(number, quality, pdq_hex, round(at, 3)))
        except av.FFmpegError as exc:
            if not frames:
                raise MediaError("corrupt", f"video could not be decoded: {_reason(exc)}") from None
            # A truncated file: keep what was hashed; the cut shows in hashed_seconds.
        if not frames and hashed_to == 0.0 and duration == 0.0:
            raise MediaError("corrupt", "no frame could be decoded")
        return VideoHash(tuple(frames), max(duration, hashed_to), hashed_to)


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise MediaError(
            "too_large", f"video frames are {width}x{height}, over the {max_pixels}-pixel limit"
        )


# Demuxers FFmpeg opens a single picture with: a photo is not a video (animated GIF is).
_STILL_IMAGE_FORMATS = {"image2", "jpeg_pipe", "png_pipe", "webp_pipe", "bmp_pipe", "tiff_pipe"}


def _duration(container, stream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # av.time_base
    return 0.0


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc)
