"""Get a media reference's content: inline base64, a URL, or a file under the media root
(with bound platforms, under the platform's own sub-root: ``platform_root``).

Images come as bytes. Videos come as a file (too big for memory): the media-root file
itself, or a download or inline copy in a scratch folder that is removed once hashed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from modstream.contracts import MediaError, MediaRef
from modstream.ingest.fetch import Fetcher
from modstream.ingest.trust import is_platform_name


def platform_root(root: Path | None, platform: str, per_platform: bool) -> Path | None:
    """Where ``platform``'s path media are: ``root/<platform>`` when platforms are bound
    (``MODSTREAM_PLATFORMS``), so one platform's events cannot read, or probe for, another's
    files; the whole root otherwise (every producer is trusted for every platform then). A
    platform name that cannot be a directory of its own has no root (``..``, ``a/b``)."""
    if root is None or not per_platform:
        return root
    return root / platform if is_platform_name(platform) else None


def read_local(path: str, root: Path | None, max_bytes: int) -> bytes:
    """Read a file only if it resolves inside ``root`` (no ``..`` or symlink escapes)."""
    target = local_path(path, root, max_bytes)
    try:
        return target.read_bytes()
    except PermissionError:
        raise MediaError("unreadable", f"permission denied: {path!r}") from None


def local_path(path: str, root: Path | None, max_bytes: int) -> Path:
    """The file ``path`` names if it resolves inside ``root`` and is at most ``max_bytes``."""
    if root is None:
        raise MediaError("path_disabled", "path media is disabled (set MODSTREAM_MEDIA_ROOT)")
    base = root.resolve()
    try:
        target = (base / path).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # symlink loops, NUL, long names
        raise MediaError("bad_path", f"{path[:300]!r} cannot be resolved: {exc}") from None
    if not target.is_relative_to(base):
        raise MediaError("path_outside_root", f"{path[:300]!r} is outside the media root")
    try:
        size = target.stat().st_size
    except FileNotFoundError:
        raise MediaError(
            "not_found", f"no such file under the media root: {path[:300]!r}"
        ) from None
    except OSError as exc:  # a name too long, a loop below the root, ...
        raise MediaError("bad_path", f"{path[:300]!r}: {exc.strerror}") from None
    if not target.is_file():
        raise MediaError("not_found", f"no such file under the media root: {path[:300]!r}")
    if size > max_bytes:  # not its size: the decision goes back to the platform
        raise MediaError("too_large", f"file is over {max_bytes} bytes")
    return target


async def load_media(ref: MediaRef, fetcher: Fetcher, root: Path | None) -> bytes:
    if ref.data_b64 is not None:
        data = base64.b64decode(ref.data_b64)
        if len(data) > fetcher.policy.max_bytes:
            raise MediaError("too_large", f"inline media is over {fetcher.policy.max_bytes} bytes")
        return data
    if ref.url is not None:
        return await fetcher.fetch(ref.url)
    assert ref.path is not None
    return await asyncio.to_thread(read_local, ref.path, root, fetcher.policy.max_bytes)


@contextlib.asynccontextmanager
async def video_file(
    ref: MediaRef, fetcher: Fetcher, root: Path | None, scratch: Path
) -> AsyncIterator[Path]:
    """The video as a file for as long as the ``async with`` lasts; a copy made in
    ``scratch`` (a download, inline bytes) is removed afterwards, whatever happens."""
    limit = fetcher.policy.video_max_bytes
    if ref.path is not None:
        yield await asyncio.to_thread(local_path, ref.path, root, limit)
        return
    handle, name = tempfile.mkstemp(prefix=SCRATCH_PREFIX, suffix=".video", dir=scratch)
    os.close(handle)
    path = Path(name)
    try:
        if ref.url is not None:
            await fetcher.fetch_to_file(ref.url, path)
        else:
            data = base64.b64decode(ref.data_b64 or "")
            if len(data) > fetcher.policy.max_bytes:
                raise MediaError(
                    "too_large", f"inline media is over {fetcher.policy.max_bytes} bytes"
                )
            await asyncio.to_thread(path.write_bytes, data)
        yield path
    finally:
        path.unlink(missing_ok=True)


SCRATCH_PREFIX = "modstream-video-"


def clear_scratch(scratch: Path) -> None:
    """Remove copies a killed worker left behind (run at start, before any download)."""
    scratch.mkdir(parents=True, exist_ok=True)
    for leftover in scratch.glob(f"{SCRATCH_PREFIX}*"):
        leftover.unlink(missing_ok=True)
