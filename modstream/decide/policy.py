"""The decision policy: one pure function from evidence to verdict, with a version string.

Each piece of evidence already says which action it alone calls for; the verdict is the most
severe of them. Bump ``POLICY_VERSION`` whenever the mapping changes: decision ids include
it, so a re-decision under a new policy is a new decision, while a redelivery is not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from modstream.contracts import Evidence, Verdict

POLICY_VERSION = "2026.11.3"  # human precedence, negative banks
SEVERITY: dict[Verdict, int] = {"allow": 0, "review": 1, "takedown": 2}


@dataclass(frozen=True)
class PolicyConfig:
    text_review_score: float = 0.5
    text_takedown_score: float = 0.995
    on_media_error: Verdict = "review"
    repeat_strikes: int = 3


def verdict_for(evidence: Sequence[Evidence]) -> Verdict:
    """The most severe action any evidence asks for; ``allow`` when there is none."""
    return max((e.action for e in evidence), key=SEVERITY.__getitem__, default="allow")


def text_action(score: float, config: PolicyConfig) -> Verdict:
    """Text alone is reviewed; only a very high score takes down by itself."""
    if score >= config.text_takedown_score:
        return "takedown"
    return "review" if score >= config.text_review_score else "allow"


def hash_action(distance: int, takedown: float, review: float, action_hint: Verdict) -> Verdict:
    """Within the takedown distance the bank's hint applies; within review distance, review.
    An allowlist entry (hint ``allow``) never asks for anything."""
    if distance <= takedown or action_hint == "allow":
        return action_hint
    return "review" if distance <= review else "allow"


def repeat_action(prior_strikes: int, config: PolicyConfig) -> Verdict:
    """An uploader with many recent matches gets every post reviewed."""
    return (
        "review"
        if config.repeat_strikes > 0 and prior_strikes >= config.repeat_strikes
        else "allow"
    )


#: What a match across media does: an uploaded image that is a still of a banked video, or a
#: banked image seen in frames of an uploaded video. Review, not takedown: a single frame is
#: weaker evidence than the whole (stills of a banned video are also what news reports show,
#: and a banned image may be quoted inside a longer commentary video), so a person decides.
CROSS_MEDIA_ACTION: Verdict = "review"
