"""Hostile media: bounded cost, and every failure is the item's error, never an exception."""

from __future__ import annotations

import asyncio
import io
import multiprocessing
import os
import resource
import signal
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from videos import write

from modstream.contracts import MediaError
from modstream.engine import hash_media
from modstream.hashing.decode import decode_image
from modstream.hashing.video import VideoSampling, hash_video
from modstream.stages.pool import HashingPool, process_started

LIMIT = 64_000_000


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def photo(size=(96, 64), fmt="JPEG") -> bytes:
    rng = np.random.default_rng(7)
    pixels = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, fmt)
    return out.getvalue()


def test_a_picture_at_the_pixel_limit_that_exhausts_memory_is_an_item_error():
    """1 x 64,000,000 pixels: allowed by the pixel limit, but pHash runs out of memory. The
    item keeps the signals computed before, and says what failed."""
    result = hash_media("m", "image", png(Image.new("L", (LIMIT, 1), 7)), LIMIT)
    assert result.error_reason == "too_costly"
    assert {"md5", "sha256"} <= set(result.signals)


def test_a_truncated_jpeg_is_corrupt_not_a_grey_picture():
    out = io.BytesIO()
    Image.new("L", (8000, 8000), 128).save(out, "JPEG", quality=10)
    with pytest.raises(MediaError) as error:
        decode_image(out.getvalue()[:3000], LIMIT)
    assert error.value.reason == "corrupt"
    assert decode_image(photo(), LIMIT).size == (96, 64)  # complete JPEGs still decode


def tiny_frames(count: int, size=(64, 48)):
    rng = np.random.default_rng(3)
    for _ in range(count):
        yield Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype(np.uint8))


def test_video_frames_over_the_pixel_limit_are_refused(tmp_path):
    path = write(tmp_path / "v.mp4", tiny_frames(10, (320, 240)), fps=10)
    with pytest.raises(MediaError) as error:
        hash_video(path, VideoSampling(max_pixels=320 * 240 - 1))
    assert error.value.reason == "too_large"


def test_thousands_of_frames_in_one_second_are_refused(tmp_path):
    """Decoded frames are capped whatever their timestamps: 600 frames in one second of media
    time would all be decoded to sample one of them."""
    path = write(tmp_path / "dense.mp4", tiny_frames(600), fps=600)
    with pytest.raises(MediaError) as error:
        hash_video(path, VideoSampling(max_frames=200))
    assert error.value.reason == "too_costly"
    assert hash_video(path, VideoSampling()).hashed_seconds >= 0  # within the cap it decodes


def test_video_decoding_stops_at_the_cpu_budget(tmp_path):
    path = write(tmp_path / "v.mp4", tiny_frames(200), fps=25)
    with pytest.raises(MediaError) as error:
        hash_video(path, VideoSampling(max_cpu_s=1e-6))
    assert error.value.reason == "too_costly"


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer would


def _address_space_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_AS)[0]


async def wait_for(condition, timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def test_a_dead_hashing_process_is_replaced_and_the_item_decided():
    pool = HashingPool(1, 1024 * 1024 * 1024)
    try:
        await pool.start()
        assert pool.healthy
        assert await pool.run(_address_space_limit) == 1024 * 1024 * 1024
        # An item that kills its process every time: retried once, then an item error.
        with pytest.raises(MediaError) as error:
            await pool.run(_die)
        assert error.value.reason == "hashing_crashed"
        assert pool.replacements == 2
        # The pool works again for everything else.
        assert await pool.run(process_started) is True
        await wait_for(lambda: pool.healthy)
        # A process that dies while idle is noticed by the periodic check.
        for child in multiprocessing.active_children():
            os.kill(child.pid, signal.SIGKILL)
        await wait_for(lambda: (pool.check(), pool.replacements == 3)[1])
        await wait_for(lambda: pool.healthy)
        result = await pool.run(hash_media, "m", "image", photo(), LIMIT)
        assert result.error is None and "pdq" in result.signals
    finally:
        pool.shutdown()


def _mutations(data: bytes):
    return st.lists(
        st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)), min_size=1, max_size=12
    ).map(lambda edits: _apply(data, edits))


def _apply(data: bytes, edits) -> bytes:
    out = bytearray(data)
    for at, value in edits:
        out[at] = value
    return bytes(out)


SEEDS = [photo(fmt="JPEG"), photo(fmt="PNG"), photo(fmt="GIF"), photo(fmt="WEBP")]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(range(len(SEEDS))).flatmap(lambda i: _mutations(SEEDS[i])),
    st.integers(0, 4000),
)
def test_mangled_images_are_signals_or_item_errors(data, cut):
    data = data[: max(1, len(data) - cut)]
    result = hash_media("m", "image", data, LIMIT)
    assert (result.error is None) == (result.error_reason is None)
    assert {"md5", "sha256"} <= set(result.signals)


@pytest.fixture(scope="module")
def seed_video(tmp_path_factory) -> bytes:
    path = write(tmp_path_factory.mktemp("v") / "seed.mp4", tiny_frames(30), fps=10)
    return path.read_bytes()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])  # fmt: skip
@given(data=st.data())
def test_mangled_videos_are_signals_or_item_errors(seed_video, tmp_path, data):
    mangled = data.draw(_mutations(seed_video))
    mangled = mangled[: data.draw(st.integers(1, len(mangled)))]
    path = Path(tmp_path / "mangled.mp4")
    path.write_bytes(mangled)
    sampling = VideoSampling(max_cpu_s=5.0, max_frames=1000)
    result = hash_media("m", "video", path, LIMIT, sampling)
    assert (result.error is None) == (result.error_reason is None)
    assert {"md5", "sha256"} <= set(result.signals)
