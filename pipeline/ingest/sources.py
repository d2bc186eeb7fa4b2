"""Get the bytes of a media reference: inline base64, a URL, or a file under the media root."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

from pipeline.contracts import MediaRef
from pipeline.hashing.decode import MediaError
from pipeline.ingest.fetch import Fetcher


def read_local(path: str, root: Path | None, max_bytes: int) -> bytes:
    """Read a file only if it resolves inside ``root`` (no ``..`` or symlink escapes)."""
    if root is None:
        raise MediaError("path_disabled", "path media is disabled (set MODSTREAM_MEDIA_ROOT)")
    base = root.resolve()
    target = (base / path).resolve()
    if not target.is_relative_to(base):
        raise MediaError("path_outside_root", f"{path!r} is outside the media root")
    try:
        size = target.stat().st_size
        if size > max_bytes:
            raise MediaError("too_large", f"file is {size} bytes, over {max_bytes}")
        return target.read_bytes()
    except FileNotFoundError:
        raise MediaError("not_found", f"no such file under the media root: {path!r}") from None
    except IsADirectoryError:
        raise MediaError("not_found", f"{path!r} is a directory") from None
    except PermissionError:
        raise MediaError("unreadable", f"permission denied: {path!r}") from None


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
