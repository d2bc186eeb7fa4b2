"""vPDQ: Meta's video hash, PDQ of frames sampled through the video (``modstream.hashing.video``).

The signal's value is the vPDQ text itself, one ``frame_number,quality,pdq_hex,timestamp``
line per kept frame; bank videos are matched by the share of their unique frames found
(``modstream.matching.video``).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from modstream.contracts import ComputedSignal
from modstream.formats.vpdq import format_vpdq, parse_vpdq
from modstream.hashing.content import Content
from modstream.signals.base import Assessment, SignalType, Thresholds

if TYPE_CHECKING:
    from modstream.matching.index import MatchIndex


class VPDQSignal(SignalType):
    name = "vpdq"
    exchange_names = ("vpdq",)
    source = "video"
    shares_index_of = "pdq"
    # Distances are 100 x (1 - share of the bank video's unique frames found): 20 is 80%.
    thresholds = Thresholds(takedown=20, review=40)

    def compute(self, content: Content) -> ComputedSignal | None:
        from modstream.hashing.video import VideoSampling, hash_video

        with content.open() as file:
            video = hash_video(file, content.video or VideoSampling())
        if not video.frames:
            return None
        return {
            "value": format_vpdq(video.frames),
            "frames": len(video.frames),
            "duration": round(video.duration, 3),
            "hashed_seconds": round(video.hashed_seconds, 3),
            "truncated": video.truncated,
        }

    def normalize(self, signal: str) -> str:
        return format_vpdq(parse_vpdq(signal))

    def distance(self, a: str, b: str) -> int:
        """How much of bank video ``b`` is missing from query video ``a``, in percent."""
        from modstream.matching.video import compare

        return compare(_parsed(a), _parsed(b)).distance

    def assess(self, query: str, bank_signal: str, distance: int) -> Assessment:
        """Both shares and where the copies match, so a reviewer can jump to the segment."""
        from modstream.matching.video import compare

        found = compare(_parsed(query), _parsed(bank_signal))
        where = "; ".join(
            f"{q0:.0f}-{q1:.0f} s here = {b0:.0f}-{b1:.0f} s in the bank video"
            for q0, q1, b0, b1 in found.ranges
        )
        return Assessment(
            detail=f"{found.bank_share:.0%} of the bank video's frames found, "
            f"{found.query_share:.0%} of this video's frames match: {where}",
            parts=(
                {
                    "bank_share": round(found.bank_share, 4),
                    "query_share": round(found.query_share, 4),
                },
                *(
                    {"query_from": q0, "query_to": q1, "bank_from": b0, "bank_to": b1}
                    for q0, q1, b0, b1 in found.ranges
                ),
            ),
            query_share=found.query_share,
        )

    def new_index(self, layout: str = "fast") -> MatchIndex:
        from modstream.matching.video import VideoIndex

        return VideoIndex(layout=layout)


#: A query video is assessed against every bank video it matched: parse its text once. The
#: cache is small and holds parsed frames only (a 30-minute video is ~1,800 lines).
_parsed = functools.lru_cache(maxsize=64)(parse_vpdq)
