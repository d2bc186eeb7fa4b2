"""The engine in-process, with a bank from a file: what ``modstream scan`` and tests use."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from modstream.bank.bank import Bank
from modstream.contracts import BankEntry, MediaRef, MediaSignals, UploadEvent
from modstream.engine import Engine, hash_media
from modstream.settings import Settings

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts"}


def media_kind(path: Path) -> str:
    """``video`` or ``image``, by the file's suffix."""
    return "video" if path.suffix.lower() in VIDEO_SUFFIXES else "image"


def hash_file(media_id: str, path: Path, settings: Settings) -> MediaSignals:
    """Signals of a local image or video (by suffix); a video is read as it is hashed,
    never loaded whole."""
    kind = media_kind(path)
    content = path if kind == "video" else path.read_bytes()
    return hash_media(
        media_id,
        kind,
        content,
        settings.max_image_pixels,
        settings.video_sampling,
        settings.ocr_policy,
    )


def local_engine(settings: Settings, entries: list[BankEntry]) -> Engine:
    bank = Bank(settings.thresholds, settings.index_layout)
    for entry in entries:
        bank.apply(entry.key, entry)
    return Engine.from_settings(settings, bank)


def local_event(name: str, text: str | None, media_count: int) -> UploadEvent:
    """A synthetic upload for a local file or text, so it can be decided like a real one."""
    return UploadEvent(
        event_id=name,
        platform="local",
        content_id=name,
        uploader_id="local",
        created_at=datetime.now(UTC).isoformat(),
        text=text,
        media=tuple(
            MediaRef(media_id=str(i), kind=media_kind(Path(name)), path=name)
            for i in range(media_count)
        ),
    )
