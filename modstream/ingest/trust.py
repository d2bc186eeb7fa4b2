"""Which producers may speak for which platform.

Kafka records do not carry the identity of whoever wrote them, so a platform is bound to a
topic instead: with ``MODSTREAM_PLATFORMS`` set, platform ``p`` publishes to
``uploads.platform.p``, Kafka's ACLs let only p's principal write there, and an event on that
topic that names another platform is refused. The shared ``uploads`` topic is then still read,
so that nothing published there is silently lost, but every record on it is refused. Without
bound platforms every producer that may write ``uploads`` is trusted for every platform
(docs/security.md).

Review is bound the same way: p's review tool reads ``reviews.platform.p`` (its decisions
to review, and no other platform's) and writes ``review.outcomes.platform.p``; an outcome
there that names another platform, or any outcome on the shared ``review.outcomes``, is
refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

PLATFORM_TOPIC_PREFIX = "uploads.platform."
OUTCOMES_TOPIC_PREFIX = "review.outcomes.platform."
REVIEWS_TOPIC_PREFIX = "reviews.platform."
# Kafka topic characters, less the dot (no platform name can reach into another's topics).
_PLATFORM_NAME = re.compile(r"^[A-Za-z0-9_-]{1,200}$")


def is_platform_name(name: str) -> bool:
    """Whether ``name`` may be a bound platform's (its topics', its media sub-root's)."""
    return bool(_PLATFORM_NAME.match(name))


def platform_topic(platform: str, prefix: str = PLATFORM_TOPIC_PREFIX) -> str:
    """The topic a bound platform publishes its uploads to (before the topic prefix); with
    another ``prefix``, its topic of that kind."""
    if not _PLATFORM_NAME.match(platform):
        raise ValueError(f"platform {platform!r}: use letters, digits, '_' and '-' only")
    return f"{prefix}{platform}"


def outcomes_topic(platform: str) -> str:
    """Where a bound platform's review tool publishes its outcomes."""
    return platform_topic(platform, OUTCOMES_TOPIC_PREFIX)


def reviews_topic(platform: str) -> str:
    """Where a bound platform's decisions to review go (its review tool reads it)."""
    return platform_topic(platform, REVIEWS_TOPIC_PREFIX)


def topic_for(platform: str, shared: str, bound: Iterable[str], prefix: str) -> str:
    """``platform``'s own topic of a kind if it is bound, else the ``shared`` one."""
    return platform_topic(platform, prefix) if platform in bound else shared


@dataclass(frozen=True)
class PlatformBinding:
    """Topic name (as on the broker) -> the platform whose producers alone may write it."""

    by_topic: dict[str, str]
    prefix: str = PLATFORM_TOPIC_PREFIX

    @classmethod
    def of(
        cls,
        platforms: Iterable[str],
        topic_name: Callable[[str], str] = lambda name: name,
        prefix: str = PLATFORM_TOPIC_PREFIX,
    ) -> PlatformBinding:
        """The binding of ``platforms`` to their topics of one kind (``prefix``)."""
        return cls({topic_name(platform_topic(p, prefix)): p for p in platforms}, prefix)

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
                f"platforms are bound to topics: publish to {self.prefix}<platform>",
            )
        if platform != bound:
            return ("platform_mismatch", f"{topic} speaks for {bound!r}, not {platform!r}")
        return None
