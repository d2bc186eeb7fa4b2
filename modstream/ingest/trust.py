"""Which producers may speak for which platform.

Kafka records do not carry the identity of whoever wrote them, so a platform is bound to a
topic instead: with ``MODSTREAM_PLATFORMS`` set, platform ``p`` publishes to
``uploads.platform.p``, Kafka's ACLs let only p's principal write there, and an event on that
topic that names another platform is refused. The shared ``uploads`` topic is then still read,
so that nothing published there is silently lost, but every record on it is refused. Without
bound platforms every producer that may write ``uploads`` is trusted for every platform
(docs/security.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

PLATFORM_TOPIC_PREFIX = "uploads.platform."
# Kafka topic characters, less the dot (no platform name can reach into another's topics).
_PLATFORM_NAME = re.compile(r"^[A-Za-z0-9_-]{1,200}$")


def platform_topic(platform: str) -> str:
    """The topic a bound platform publishes its uploads to (before the topic prefix)."""
    if not _PLATFORM_NAME.match(platform):
        raise ValueError(f"platform {platform!r}: use letters, digits, '_' and '-' only")
    return f"{PLATFORM_TOPIC_PREFIX}{platform}"


@dataclass(frozen=True)
class PlatformBinding:
    """Topic name (as on the broker) -> the platform whose producers alone may write it."""

    by_topic: dict[str, str]

    @classmethod
    def of(cls, platforms: Iterable[str], topic_name=lambda name: name) -> PlatformBinding:
        return cls({topic_name(platform_topic(p)): p for p in platforms})

    @property
    def enabled(self) -> bool:
        return bool(self.by_topic)

    def refusal(self, topic: str, platform: str) -> tuple[str, str] | None:
        """(reason, message) if an event naming ``platform`` may not come from ``topic``."""
        if not self.by_topic:
            return None
        bound = self.by_topic.get(topic)
        if bound is None:
            return (
                "unbound_topic",
                f"platforms are bound to topics: publish to {PLATFORM_TOPIC_PREFIX}<platform>",
            )
        if platform != bound:
            return ("platform_mismatch", f"{topic} speaks for {bound!r}, not {platform!r}")
        return None
