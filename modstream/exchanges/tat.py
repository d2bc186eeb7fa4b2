"""Tech Against Terrorism's hash list (TCAP) through python-threatexchange's client, keeping
what its exchange adapter drops.

python-threatexchange's ``TATSignalExchangeAPI`` keeps only PDQ and the MD5 of videos and
returns empty metadata. modstream's MD5 and SHA-256 match any media, and reviewers and bank
controls need the ideology and the list's own id, so this subclass fetches with the same
client and checkpoint (``ts,id`` of the last record) and keeps them. ``base_url`` points the
client at another host (a staging list, or a test server on loopback).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from threatexchange.exchanges import fetch_state as state
from threatexchange.exchanges.clients.techagainstterrorism import api
from threatexchange.exchanges.impl.techagainstterrorism_api import (
    TATCheckpoint,
    TATSignalExchangeAPI,
)
from threatexchange.signal_type.signal_base import SignalType

#: TCAP algorithm -> python-threatexchange signal type name.
ALGORITHMS = {"PDQ": "pdq", "MD5": "video_md5", "SHA256": "video_sha256"}


@dataclass
class TATSignalMetadata(state.FetchedSignalMetadata):
    """One hash-list record's facts: the list classifies every hash as terrorist content of
    an ideology, so the opinion is positive, tagged with it."""

    ideology: str
    file_type: str
    tat_id: int

    def get_as_opinions(self) -> Sequence[state.SignalOpinion]:
        tags = {f"ideology:{self.ideology}".lower()} if self.ideology else set()
        return [state.SignalOpinion(False, state.SignalOpinionCategory.POSITIVE_CLASS, tags)]


class TCAPExchange(TATSignalExchangeAPI):
    def __init__(self, username: str, password: str, base_url: str | None = None) -> None:
        super().__init__(username, password)
        self.base_url = base_url

    @staticmethod
    def get_record_cls() -> type[TATSignalMetadata]:
        return TATSignalMetadata

    def get_client(self) -> api.TATHashListAPI:
        client = api.TATHashListAPI(username=self.username, password=self.password)
        if self.base_url:
            client.BASE_URL = self.base_url.rstrip("/") + "/"  # type: ignore[misc]
        return client

    def fetch_iter(
        self, _supported_signal_types: Sequence[type[SignalType]], checkpoint: Any
    ) -> Iterator[state.FetchDelta]:
        after = checkpoint.checkpoint if checkpoint is not None else ""
        for page in self.get_client().fetch_hashes_iter(after):
            updates: dict[tuple[str, str], TATSignalMetadata | None] = {}
            for record in page.results:
                algorithm = str(record.algorithm)
                # An algorithm modstream cannot use keeps its name: counted, then skipped.
                type_name = ALGORITHMS.get(algorithm.upper(), algorithm.lower())
                updates[(type_name, record.hash_digest)] = (
                    None
                    if record.deleted
                    else TATSignalMetadata(
                        ideology=str(getattr(record.ideology, "value", record.ideology)),
                        file_type=str(record.file_type),
                        tat_id=int(record.id),
                    )
                )
            yield state.FetchDelta(
                updates, TATCheckpoint(page.checkpoint) if page.checkpoint else checkpoint
            )
