"""The Kafka topics modstream reads and writes, and their creation with the right settings."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from modstream.contracts import (
    BANK_CONFIG_TOPIC,
    DECISIONS_TOPIC,
    DLQ_TOPIC,
    ENTRY_OUTCOMES_TOPIC,
    EXCHANGE_CONFIG_TOPIC,
    EXCHANGE_STATE_TOPIC,
    HASHBANK_TOPIC,
    HASHED_TOPIC,
    HUMAN_VERDICTS_TOPIC,
    REINSTATEMENTS_TOPIC,
    REVIEW_CASES_TOPIC,
    REVIEW_OUTCOMES_TOPIC,
    REVIEW_ROUTED_TOPIC,
    REVIEWS_TOPIC,
    TAKEDOWNS_TOPIC,
    UPLOADS_TOPIC,
    VIDEO_TOPIC,
)
from modstream.ingest.trust import outcomes_topic, platform_topic, reviews_topic
from modstream.settings import Settings

# A dead letter holds a refused record (up to Kafka's 1 MB default) in base64, and its reason.
MAX_DEAD_LETTER_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]


#: How long a decision stays reviewable (its case kept), and an entry's outcome counts after
#: its last outcome.
REVIEW_CASE_DAYS = 90


def topic_specs(settings: Settings) -> list[TopicSpec]:
    n = settings.partitions
    week = str(7 * 24 * 3600 * 1000)
    month = str(30 * 24 * 3600 * 1000)
    compacted = {
        "cleanup.policy": "compact",
        "min.compaction.lag.ms": "60000",
        "delete.retention.ms": str(24 * 3600 * 1000),
    }
    return [
        TopicSpec(settings.topic(UPLOADS_TOPIC), n, {"retention.ms": week}),
        *(
            TopicSpec(settings.topic(platform_topic(p)), n, {"retention.ms": week})
            for p in settings.platforms
        ),
        TopicSpec(settings.topic(VIDEO_TOPIC), n, {"retention.ms": week}),
        TopicSpec(settings.topic(HASHED_TOPIC), n, {"retention.ms": week}),
        TopicSpec(settings.topic(DECISIONS_TOPIC), n, {"retention.ms": str(30 * 24 * 3600 * 1000)}),
        TopicSpec(settings.topic(TAKEDOWNS_TOPIC), n, {"retention.ms": str(30 * 24 * 3600 * 1000)}),
        TopicSpec(settings.topic(REVIEWS_TOPIC), n, {"retention.ms": str(30 * 24 * 3600 * 1000)}),
        *(
            TopicSpec(settings.topic(reviews_topic(p)), n, {"retention.ms": month})
            for p in settings.platforms
        ),
        TopicSpec(
            settings.topic(DLQ_TOPIC),
            1,
            {
                "retention.ms": str(30 * 24 * 3600 * 1000),
                "max.message.bytes": str(MAX_DEAD_LETTER_BYTES),
            },
        ),
        # Per-uploader strikes, partitioned like uploads.hashed (see history_store).
        TopicSpec(
            f"{settings.app_id}-uploader_history-changelog",
            n,
            {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"},
        ),
        # Compacted: the latest entry per key forever, tombstones remove entries.
        TopicSpec(settings.topic(HASHBANK_TOPIC), 1, compacted),
        TopicSpec(settings.topic(BANK_CONFIG_TOPIC), 1, compacted),
        TopicSpec(settings.topic(HUMAN_VERDICTS_TOPIC), 1, compacted),
        # One partition: its assignment is the exchange sync service's lease.
        TopicSpec(settings.topic(EXCHANGE_CONFIG_TOPIC), 1, compacted),
        TopicSpec(settings.topic(EXCHANGE_STATE_TOPIC), 1, compacted),
        # Review: outcomes in (public), moved beside their cases (both by decision id).
        TopicSpec(settings.topic(REVIEW_OUTCOMES_TOPIC), n, {"retention.ms": month}),
        *(
            TopicSpec(settings.topic(outcomes_topic(p)), n, {"retention.ms": month})
            for p in settings.platforms
        ),
        TopicSpec(settings.topic(REVIEW_ROUTED_TOPIC), n, {"retention.ms": week}),
        TopicSpec(
            settings.topic(REVIEW_CASES_TOPIC),
            n,
            {
                "cleanup.policy": "compact,delete",
                "retention.ms": str(REVIEW_CASE_DAYS * 24 * 3600 * 1000),
                "min.compaction.lag.ms": "60000",
            },
        ),
        TopicSpec(settings.topic(REINSTATEMENTS_TOPIC), n, {"retention.ms": month}),
        TopicSpec(settings.topic(ENTRY_OUTCOMES_TOPIC), n, {"retention.ms": month}),
    ]


async def ensure_topics(settings: Settings) -> list[str]:
    """Create missing topics; existing ones are left as they are. Returns the names created."""
    admin = AIOKafkaAdminClient(**settings.kafka.options(), request_timeout_ms=15000)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [s for s in topic_specs(settings) if s.name not in existing]
        if missing:
            # Another process may create them at the same time: that is fine.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [NewTopic(s.name, s.partitions, 1, topic_configs=s.config) for s in missing]
                )
        return [s.name for s in missing]
    finally:
        await admin.close()


async def delete_topics(settings: Settings) -> None:
    """Delete the topics of ``settings`` (a test's or a benchmark's own, by their prefix), so
    that a long-lived broker does not pile up thousands of partitions, which slow it down."""
    admin = AIOKafkaAdminClient(**settings.kafka.options(), request_timeout_ms=30000)
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        names = [s.name for s in topic_specs(settings) if s.name in existing]
        if names:
            await admin.delete_topics(names, timeout_ms=30000)
    finally:
        await admin.close()
