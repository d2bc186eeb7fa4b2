"""One typed settings object, read from ``MODSTREAM_*`` environment variables.

Every knob of the pipeline lives here so that the README can document them in one table.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from pipeline.hashing.video import VideoSampling

_PREFIX = "MODSTREAM_"


def _default_workers() -> int:
    return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Settings:
    """Runtime configuration. Field ``foo_bar`` is read from ``MODSTREAM_FOO_BAR``."""

    broker: str = "127.0.0.1:9092"
    app_id: str = "modstream"
    topic_prefix: str = ""
    partitions: int = 4
    hash_workers: int = field(default_factory=_default_workers)
    batch_size: int = 256
    batch_within_s: float = 0.005
    web_port: int = 6066
    web_host: str = "127.0.0.1"
    log_format: str = "json"
    log_level: str = "INFO"
    data_dir: Path = Path(".modstream")
    # Media
    media_root: Path | None = None
    fetch_allow: tuple[str, ...] = ()
    fetch_max_bytes: int = 20 * 1024 * 1024
    fetch_timeout_s: float = 10.0
    fetch_max_redirects: int = 3
    max_image_pixels: int = 64_000_000
    video_max_bytes: int = 1024 * 1024 * 1024
    video_fetch_timeout_s: float = 300.0
    video_seconds_per_frame: float = 1.0
    video_max_seconds: float = 1800.0
    # Matching and policy
    pdq_min_quality: int = 50
    index_layout: str = "fast"
    bank_snapshot_interval_s: float = 300.0
    thresholds: dict[str, dict[str, int]] = field(default_factory=dict)
    text_model: Path | None = None
    text_review_score: float = 0.5
    text_takedown_score: float = 0.995
    on_media_error: str = "review"
    repeat_window_s: int = 24 * 3600
    repeat_strikes: int = 3

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``MODSTREAM_*`` variables; ``overrides`` win over the environment."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(_PREFIX + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _parse(f.name, str(f.type), raw)
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.on_media_error not in ("review", "allow", "takedown"):
            raise ValueError("MODSTREAM_ON_MEDIA_ERROR must be review, allow or takedown")
        if self.index_layout not in ("fast", "compact"):
            raise ValueError("MODSTREAM_INDEX_LAYOUT must be fast or compact")
        if self.log_format not in ("json", "text"):
            raise ValueError("MODSTREAM_LOG_FORMAT must be json or text")
        if self.video_seconds_per_frame <= 0 or self.video_max_seconds <= 0:
            raise ValueError("MODSTREAM_VIDEO_SECONDS_PER_FRAME and _MAX_SECONDS must be > 0")
        if self.partitions < 1 or self.hash_workers < 1 or self.batch_size < 1:
            raise ValueError("partitions, hash_workers and batch_size must be >= 1")

    @property
    def video_sampling(self) -> VideoSampling:
        from pipeline.hashing.video import VideoSampling

        return VideoSampling(
            seconds_per_frame=self.video_seconds_per_frame,
            max_seconds=self.video_max_seconds,
            min_quality=self.pdq_min_quality,
        )

    def topic(self, name: str) -> str:
        """The Kafka topic name for a logical topic, with the configured prefix."""
        return f"{self.topic_prefix}{name}"

    @property
    def kafka_url(self) -> str:
        return self.broker if "://" in self.broker else f"kafka://{self.broker}"

    @property
    def bootstrap(self) -> str:
        return self.broker.split("://", 1)[-1]


def _parse(name: str, type_name: str, raw: str) -> Any:
    try:
        if type_name == "int":
            return int(raw)
        if type_name == "float":
            return float(raw)
        if type_name.startswith("tuple"):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        if type_name.startswith("dict"):
            value = orjson.loads(raw)
            if not isinstance(value, dict):
                raise ValueError("expected a JSON object")
            return value
        if "Path" in type_name:
            return Path(raw)
        return raw
    except ValueError as exc:
        raise ValueError(f"{_PREFIX}{name.upper()}={raw!r}: {exc}") from exc
