"""The hash stage (``uploads``) and the video stage (``uploads.video``): validate each event,
get and hash its media in the process pool, score its text there too, and hand the batch to
the decide stage as one size-bounded record per uploader partition.

One item's failure is that item's error; a record that is not a valid event, or that came
from a topic that may not speak for its platform, is dead-lettered whole. Events with a video
are diverted from the hash stage to the video stage, so that a long video never holds up
images and text.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from modstream.contracts import (
    HASHED_TOPIC,
    VIDEO_TOPIC,
    ContractError,
    HashedBatch,
    HashedUpload,
    MediaRef,
    MediaSignals,
    TextScore,
    UploadEvent,
    parse_time,
)
from modstream.engine import failed_media, hash_media, media_failure, score_texts
from modstream.hashing.ocr import OcrPolicy
from modstream.hashing.video import VideoSampling
from modstream.ingest.fetch import Fetcher
from modstream.ingest.sources import load_media, platform_root, video_file
from modstream.ingest.trust import PlatformBinding
from modstream.settings import Settings
from modstream.stages.metrics import PipelineMetrics
from modstream.stages.ports import Output, Record, Runner, watch

log = logging.getLogger("modstream.stages")


@dataclass(frozen=True)
class HashingLimits:
    """What the hash stage needs to know of the settings."""

    max_image_pixels: int
    video: VideoSampling
    text_model: Path | None
    text_lexicon: Path | None
    ocr: OcrPolicy | None
    text_chunks: int  # split a batch's texts over this many pool tasks (one per process)
    max_record_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> HashingLimits:
        return cls(
            max_image_pixels=settings.max_image_pixels,
            video=settings.video_sampling,
            text_model=settings.text_model,
            text_lexicon=settings.text_lexicon,
            ocr=settings.ocr_policy,
            text_chunks=settings.hash_workers,
            max_record_bytes=settings.max_record_bytes,
        )


class MediaSource:
    """Where media come from: inline bytes, URLs (SSRF-safe), files under the media root
    (``per_platform``: each platform's under its own sub-root). A video comes as a file:
    downloads stream to ``scratch`` and are removed once hashed."""

    def __init__(
        self, fetcher: Fetcher, media_root: Path | None, scratch: Path, per_platform: bool = False
    ) -> None:
        self.fetcher = fetcher
        self.media_root = media_root
        self.scratch = scratch
        self.per_platform = per_platform

    async def image(self, ref: MediaRef, platform: str) -> bytes:
        root = platform_root(self.media_root, platform, self.per_platform)
        return await load_media(ref, self.fetcher, root)

    def video(self, ref: MediaRef, platform: str) -> contextlib.AbstractAsyncContextManager[Path]:
        root = platform_root(self.media_root, platform, self.per_platform)
        return video_file(ref, self.fetcher, root, self.scratch)


class HashStage:
    """One hashing stage; ``name`` is ``hash`` (diverts video events) or ``video``."""

    def __init__(
        self,
        *,
        name: str,
        runner: Runner,
        media: MediaSource,
        out: Output,
        metrics: PipelineMetrics,
        limits: HashingLimits,
        binding: PlatformBinding,
        hashed_partition: Callable[[str], int],
        video_slots: asyncio.Semaphore,
    ) -> None:
        self.name = name
        self.runner = runner
        self.media = media
        self.out = out
        self.metrics = metrics
        self.limits = limits
        self.binding = binding
        self.hashed_partition = hashed_partition
        self.video_slots = video_slots

    def renamed(self, name: str) -> HashStage:
        """The same stage under another name, sharing everything (the video slots too)."""
        twin = copy.copy(self)
        twin.name = name
        return twin

    async def process(self, records: Sequence[Record]) -> None:
        started = time.perf_counter()
        valid: list[tuple[Record, UploadEvent]] = []
        diverted = []
        for record in records:
            try:
                upload = UploadEvent.parse(record.value or b"")
            except ContractError as exc:
                await self._refuse(record, str(exc), "invalid_event")
                continue
            if self.name == "hash":
                refused = self.binding.refusal(record.topic, upload.platform)
                if refused is not None:
                    await self._refuse(record, refused[1], refused[0])
                    continue
                if any(m.kind == "video" for m in upload.media):
                    diverted.append(
                        await self.out.send(VIDEO_TOPIC, record.key, record.value or b"")
                    )
                    continue
            valid.append((record, upload))
        watch(diverted)
        uploads = [upload for _, upload in valid]
        media, scores = await asyncio.gather(
            asyncio.gather(*(self._signals(u) for u in uploads if u.media)),
            self._text_scores(uploads),
        )
        media_of = iter(media)
        by_partition: dict[int, list[bytes]] = {}
        for position, (record, upload) in enumerate(valid):
            normalized, score = scores.get(position, (None, None))
            handed_off = HashedUpload(
                event=replace(upload, media=()) if upload.media else upload,  # signals suffice
                media=tuple(next(media_of) if upload.media else ()),
                received_at=record.timestamp,
                text_score=score,
                normalized_text=normalized,
                created=parse_time(upload.created_at),
            )
            by_partition.setdefault(self.hashed_partition(upload.uploader_key), []).append(
                handed_off.to_json(self.limits.max_record_bytes)
            )
        deliveries = [
            await self.out.send(HASHED_TOPIC, None, batch, partition)
            for partition, serialized in by_partition.items()
            for batch in HashedBatch.records(serialized, self.limits.max_record_bytes)
        ]
        watch(deliveries)
        self.metrics.count_hashed(
            self.name, [upload.platform for upload in uploads], time.perf_counter() - started
        )

    async def _refuse(self, record: Record, error: str, reason: str) -> None:
        await self.out.dead_letter(record, error, reason, "ingest")

    async def _signals(self, upload: UploadEvent) -> list[MediaSignals]:
        items = (self._item(ref, upload.platform) for ref in upload.media)
        return list(await asyncio.gather(*items))

    async def _item(self, ref: MediaRef, platform: str) -> MediaSignals:
        """One media item's signals, or its error: never an exception."""
        try:
            if ref.kind == "video":
                # Downloads wait for no slot; hashing does (the slot is taken second).
                async with self.media.video(ref, platform) as path, self.video_slots:
                    result = await self._hash(ref, path)
            else:
                result = await self._hash(ref, await self.media.image(ref, platform))
        except Exception as exc:
            error = media_failure(exc)
            if error.reason == "internal_error":
                log.error("media item failed unexpectedly", exc_info=exc)
            self.metrics.media_failures.labels(source=ref.source, reason=error.reason).inc()
            return failed_media(ref.media_id, ref.kind, error)
        if result.error_reason:
            self.metrics.media_failures.labels(source="decode", reason=result.error_reason).inc()
        return result

    async def _hash(self, ref: MediaRef, content: bytes | Path) -> MediaSignals:
        limits = self.limits
        return await self.runner.run(
            hash_media,
            ref.media_id,
            ref.kind,
            content,
            limits.max_image_pixels,
            limits.video,
            limits.ocr,
        )

    async def _text_scores(self, uploads: list[UploadEvent]) -> dict[int, tuple[str, TextScore]]:
        """The batch's posts normalised and scored off the event loop, split over the pool's
        processes, by position in ``uploads`` (an event id is unique only per platform); none
        if scoring fails (the decide stage does it instead)."""
        texted = [(i, u.text) for i, u in enumerate(uploads) if u.text]
        if not texted:
            return {}
        share = -(-len(texted) // self.limits.text_chunks)
        chunks = [texted[i : i + share] for i in range(0, len(texted), share)]
        model, lexicon = self.limits.text_model, self.limits.text_lexicon
        try:
            scored = await asyncio.gather(
                *(
                    self.runner.run(score_texts, model, [text for _, text in c], lexicon)
                    for c in chunks
                )
            )
        except Exception as exc:
            log.error("scoring texts failed", exc_info=exc)
            return {}
        return {
            position: result
            for chunk, results in zip(chunks, scored, strict=True)
            for (position, _), result in zip(chunk, results, strict=True)
        }
