"""Which records of one partition are done, when they may finish out of order.

A slow item (a media server that hangs) must not hold up the records behind it, but Kafka
keeps one committed offset per partition. So the committed offset moves only over records
that are all done, and the records done beyond it travel with the commit, in its metadata,
as a bitmap; a worker that takes the partition over skips them. This is how Confluent's
parallel consumer commits out-of-order work. Under transactions the bitmap is committed
atomically with the outputs of the records it marks, so nothing is redone and nothing lost.
"""

from __future__ import annotations

import base64

#: Records taken beyond the committed offset, at most: bounds memory, and the bitmap
#: (MAX_SPAN / 8 bytes in base64) stays well under Kafka's 4 KB offset metadata limit.
MAX_SPAN = 8192
_FORMAT = "ms1:"


class PartitionProgress:
    """``committed`` is the next offset a restart would read; ``skip`` are offsets beyond it
    already done (from the metadata of the last commit)."""

    def __init__(self, committed: int, skip: frozenset[int] = frozenset()) -> None:
        self.committed = committed
        self._done: set[int] = {o for o in skip if o > committed}
        self._pending: set[int] = set()
        self._next = max(self._done, default=committed - 1) + 1  # past everything known

    def wanted(self, offset: int) -> bool:
        """Whether a consumed record still needs processing (not done, not in flight)."""
        return offset >= self.committed and offset not in self._done and offset not in self._pending

    def has_room(self) -> bool:
        return self._next - self.committed < MAX_SPAN

    def taken(self, offsets: list[int]) -> None:
        self._pending.update(offsets)
        if offsets:
            self._next = max(self._next, max(offsets) + 1)

    def finished(self, offsets: list[int]) -> None:
        """Mark records done and move the committed offset over the done prefix."""
        self._pending.difference_update(offsets)
        self._done.update(offsets)
        low = min(self._pending, default=self._next)
        # Offsets with no record (transaction markers, compacted away) are never pending:
        # the committed offset moves over them too.
        self.committed = max(self.committed, low)
        self._done = {o for o in self._done if o >= self.committed}

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def metadata(self) -> str:
        """The done offsets beyond ``committed``, for the commit's metadata."""
        if not self._done:
            return ""
        span = max(self._done) - self.committed + 1
        bits = bytearray((span + 7) // 8)
        for offset in self._done:
            relative = offset - self.committed
            bits[relative // 8] |= 1 << (relative % 8)
        return _FORMAT + base64.b64encode(bytes(bits)).decode()

    @staticmethod
    def skipped(committed: int, metadata: str) -> frozenset[int]:
        """The offsets ``metadata`` marks done beyond ``committed``; none if it is not ours."""
        if not metadata.startswith(_FORMAT):
            return frozenset()
        try:
            bits = base64.b64decode(metadata[len(_FORMAT) :], validate=True)
        except ValueError:
            return frozenset()
        return frozenset(
            committed + i * 8 + b for i, byte in enumerate(bits) for b in range(8) if byte >> b & 1
        )
