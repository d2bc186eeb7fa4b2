"""A record nested a thousand levels deep passes the JSON parser and then broke whatever walked
it recursively: it must be that record's own error, never its batch's, its replica's or its
server's (issue 24, finding 1)."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from stages import MemoryOutput, records
from streaming import collect, dead_letters, inline, send, upload

from modstream.bank.bank import Bank
from modstream.bank.controls import BankControls
from modstream.contracts import MAX_JSON_DEPTH, BankEntry, ContractError, UploadEvent, dumps
from modstream.demo import encode, sample
from modstream.engine import hash_media
from modstream.serve.access import Gate, RateLimit
from modstream.serve.app import build_api
from modstream.serve.backend import Backend
from modstream.serve.v1 import RecentDecisions
from modstream.settings import KafkaAccess
from modstream.stages.metrics import PipelineMetrics
from modstream.stages.ports import guarded
from modstream.stream.replica import StateReplica

#: Deeper than any limit of ours, shallower than orjson's 1,024: it parses.
DEPTH = 1_000


def deep_event(event_id: str) -> bytes:
    body = orjson.loads(upload(event_id, text="hello")[1])
    raw = orjson.dumps(body)[:-1] + b',"metadata":' + b"[" * DEPTH + b"]" * DEPTH + b"}"
    assert orjson.loads(raw)  # orjson takes it: the old code failed after this
    return raw


def test_a_deep_record_is_a_contract_error_naming_where() -> None:
    with pytest.raises(ContractError, match=r"upload: metadata(\[0\])+: nested deeper than"):
        UploadEvent.parse(deep_event("deep"))
    with pytest.raises(ContractError, match=r"bank entry: x\.y(\[0\])+: nested deeper"):
        BankEntry.parse(b'{"schema":1,"x":{"y":' + b"[" * 40 + b"]" * 40 + b"}}")
    # As deep as the limit is still read (and refused only for what it is).
    nested = b"[" * (MAX_JSON_DEPTH - 1) + b"]" * (MAX_JSON_DEPTH - 1)
    with pytest.raises(ContractError, match="unknown field"):
        UploadEvent.parse(b'{"schema":1,"x":' + nested + b"}")


async def test_a_batch_that_fails_is_retried_record_by_record() -> None:
    out = MemoryOutput()
    seen: list[list[int]] = []

    async def stage(batch) -> None:
        """Fails on a batch that holds offset 2, as a bug on one record would."""
        seen.append([r.offset for r in batch])
        if any(r.offset == 2 for r in batch):
            raise RecursionError("maximum recursion depth exceeded")
        for record in batch:
            await out.send("decisions", record.key, record.value or b"")

    batch = records("uploads", [(f"k{i}".encode(), b"{}") for i in range(4)])
    await guarded("hash", stage, batch, out)
    assert seen == [[0, 1, 2, 3], [0], [1], [2], [3]]
    assert [key for key, _, _ in out.sent["decisions"]] == [b"k0", b"k1", b"k3"]
    assert [(r.offset, reason, stage) for r, _, reason, stage in out.dead] == [
        (2, "internal_error", "hash")
    ]
    assert "RecursionError" in out.dead[0][1]


def test_a_replica_skips_a_record_that_raises_anything() -> None:
    class Fragile:
        applied: list[str] = []

        def apply(self, key: str, value: bytes | None) -> None:
            if key == "bad":
                raise RecursionError("maximum recursion depth exceeded")
            self.applied.append(key)

    metrics = PipelineMetrics(CollectorRegistry())
    loop = asyncio.new_event_loop()
    try:
        replica = StateReplica(
            Fragile(), KafkaAccess(bootstrap="127.0.0.1:1"), "t", metrics, loop=loop
        )
        for key in ("a", "bad", "b"):
            replica.apply_record(key.encode(), b"{}")
    finally:
        loop.close()
    assert Fragile.applied == ["a", "b"] and replica.applied == 2
    labels = {"stage": "replica", "reason": "invalid_record"}
    assert metrics.registry.get_sample_value("modstream_dead_letters_total", labels) == 1


def test_the_http_api_answers_a_deep_upload_with_400() -> None:
    class Recorder:
        async def upload(self, event, raw) -> None:
            raise AssertionError("a refused event is not submitted")

        async def review_outcome(self, outcome, raw) -> None:
            raise AssertionError("not sent here")

    controls = BankControls()
    bank = Bank(controls=controls)
    backend = Backend(bank, controls, None, None, None)  # type: ignore[arg-type]
    gate = Gate(None, RateLimit(rate=100.0, burst=100))
    app = build_api(backend, gate, v1=(Recorder(), RecentDecisions()))
    api = TestClient(app, base_url="http://localhost")
    answer = api.post(
        "/v1/uploads", content=deep_event("deep"), headers={"content-type": "application/json"}
    )
    assert answer.status_code == 400, answer.text
    assert "nested deeper than" in answer.json()["message"]


@pytest.mark.kafka
async def test_a_deep_record_sinks_neither_its_batch_nor_a_replica(workers) -> None:
    """On a real worker: a deep record on ``hashbank`` and on ``bank.config`` leaves both
    replicas loading what follows it; on ``uploads``, between three good events, it is the
    only dead letter, and the banned photo beside it is taken down."""
    banned = encode(sample("rocket"), quality=90)
    pdq = hash_media("m", "image", banned, 10**8).signals["pdq"]["value"]
    entry = BankEntry("tve", "rocket", "pdq", pdq, (), "takedown", "")
    deep = b"[" * DEPTH + b"]" * DEPTH
    await send(workers, "hashbank", [(b"tve/pdq/deep", deep), (entry.key.encode(), dumps(entry))])
    await send(workers, "bank.config", [(b"bank/deep", deep)])
    workers.start()
    batch = [
        upload("ok-1", text="hello there"),
        upload("ok-2", media=inline(banned)),
        (b"deep", deep_event("deep")),
        upload("ok-3", text="see you"),
    ]
    await send(workers, "uploads", batch)
    seen = await collect(workers, "decisions", {"ok-1", "ok-2", "ok-3"})
    assert {i: len(v) for i, v in seen.items()} == {"ok-1": 1, "ok-2": 1, "ok-3": 1}
    assert seen["ok-2"][0]["verdict"] == "takedown"
    (letter,) = await dead_letters(workers, 1)
    assert "nested deeper than" in letter["error"] and letter["stage"] == "ingest"
