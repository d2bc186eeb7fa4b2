"""What one request may cost ``modstream serve`` and who may send it, in memory: bodies
counted as they stream, vPDQ signals bounded and compared off the event loop, Host and
cross-site checks, bank configs the replicas accept, each caller's share of hashing, the
decisions tail supervised. The same against a real server: test_http_api_limits_kafka.py."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError
from test_http_api import PDQ, ROCKET, memory_backend

from modstream.engine import hash_media
from modstream.serve import backend as backend_module
from modstream.serve.access import Gate, KeyRing, RateLimit, key_record
from modstream.serve.app import build_api
from modstream.serve.backend import MAX_VPDQ_FRAMES, ApiError
from modstream.serve.limits import MAX_BODY_BYTES, MAX_UPLOAD_BODY_BYTES
from modstream.serve.server import DecisionTail, decision_of
from modstream.serve.sites import SitePolicy
from modstream.serve.v1 import RecentDecisions

BASE = "http://localhost"


def vpdq(frames: int, seed: int = 1) -> str:
    """A vPDQ signal in HMA's JSON form, of ``frames`` random (distinct) frames."""
    rng = random.Random(seed)
    return orjson.dumps(
        [f"{rng.getrandbits(256):064x},100,{n:.3f}" for n in range(frames)]
    ).decode()


def client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE, timeout=60)


# ---- finding 2: vPDQ frames capped, compares off the loop within a budget ---------------


async def test_vpdq_signals_are_capped_on_every_route_that_takes_one() -> None:
    backend = memory_backend()
    async with client(build_api(backend)) as api:
        await api.post("/c/banks", json={"name": "VIDEOS"})
        over = vpdq(MAX_VPDQ_FRAMES + 1)
        compared = await api.post("/m/compare", json={"vpdq": [over, over]})
        assert compared.status_code == 400, compared.text
        assert f"over {MAX_VPDQ_FRAMES} frames" in compared.json()["message"]
        banked = await api.post("/c/bank/VIDEOS/signal", json={"vpdq": over})
        assert banked.status_code == 400 and backend.bank.keys("VIDEOS") == []
        # A URL that long is refused by every client and server (64 kB): the backend too.
        for look in (backend.lookup, backend.raw_matches):
            with pytest.raises(ApiError, match="frames"):
                look("vpdq", over)
        at_cap = vpdq(MAX_VPDQ_FRAMES)
        same = await api.post("/m/compare", json={"vpdq": [at_cap, at_cap]})
        assert same.json() == {"vpdq": [True, {"distance": 0}]}


async def test_a_video_compare_leaves_the_event_loop_free_and_has_a_time_budget(
    monkeypatch,
) -> None:
    """/status requests sent after a big compare started are answered before it ends."""
    backend = memory_backend()
    begun = threading.Event()
    distance = backend_module.video_distance

    def noted(query: str, bank: str) -> int:
        begun.set()
        return distance(query, bank)

    monkeypatch.setattr(backend_module, "video_distance", noted)
    async with client(build_api(backend)) as api:
        left, right = vpdq(MAX_VPDQ_FRAMES, 1), vpdq(MAX_VPDQ_FRAMES, 2)
        order: list[str] = []

        async def compare() -> None:
            answer = await api.post("/m/compare", json={"vpdq": [left, right]})
            assert answer.json()["vpdq"][1]["distance"] == 100
            order.append("compare")

        task = asyncio.create_task(compare())
        while not begun.is_set() and not task.done():  # until the comparing has begun
            await asyncio.sleep(0.001)
        while not task.done():
            assert (await api.get("/status")).status_code == 200
            order.append("status")
        await task
        assert order.index("compare") > 0, order  # answered while it ran

        monkeypatch.setattr(backend_module, "COMPARE_BUDGET_S", 0.0)
        over_budget = await api.post("/m/compare", json={"vpdq": [left, right]})
        assert over_budget.status_code == 400 and "takes over" in over_budget.json()["message"]


# ---- finding 3: bodies counted as they arrive -------------------------------------------


class Chunks:
    """A chunked body (no Content-Length) of ``total`` bytes, counting what was pulled."""

    def __init__(self, head: bytes, total: int, chunk: int = 64 * 1024) -> None:
        self.head, self.total, self.chunk, self.sent = head, total, chunk, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.head
        self.sent += len(self.head)
        while self.sent < self.total:
            yield b" " * self.chunk
            self.sent += self.chunk


async def test_a_chunked_body_is_refused_at_its_limit_without_reading_the_rest() -> None:
    async with client(build_api(memory_backend())) as api:
        body = Chunks(b'{"pdq": ["', 100 * 1024 * 1024)
        refused = await api.post("/m/compare", content=body.__aiter__(),
                                 headers={"content-type": "application/json"})  # fmt: skip
        assert refused.status_code == 413, refused.text
        assert refused.headers["connection"] == "close"
        assert body.sent <= MAX_BODY_BYTES + body.chunk

        boundary = "b0undary"
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="photo"; '
                'filename="x.jpg"\r\nContent-Type: image/jpeg\r\n\r\n').encode()  # fmt: skip
        upload = Chunks(head, 300 * 1024 * 1024, chunk=1024 * 1024)
        kind = {"content-type": f"multipart/form-data; boundary={boundary}"}
        refused = await api.post("/h/hash", content=upload.__aiter__(), headers=kind)
        assert refused.status_code == 413, refused.text
        assert upload.sent <= MAX_UPLOAD_BODY_BYTES + upload.chunk


async def test_each_multipart_part_is_bounded_while_it_streams() -> None:
    recorder = RecentDecisions()

    class Refuses:
        async def upload(self, event, raw) -> None:
            raise AssertionError("not published")

        async def review_outcome(self, outcome, raw) -> None:
            raise AssertionError("not published")

    async with client(build_api(memory_backend(), v1=(Refuses(), recorder))) as api:
        event = {"schema": 1, "event_id": "e1", "platform": "forum", "content_id": "c1",
                 "uploader_id": "u1", "created_at": "2026-11-30T00:00Z"}  # fmt: skip
        files = [("video", ("big.mp4", b"\0" * 1_500_000, "video/mp4"))]
        refused = await api.post("/v1/uploads", data={"event": orjson.dumps(event).decode()},
                                 files=files)  # fmt: skip
        assert refused.status_code == 413
        assert refused.json() == {"message": "a file part larger than 1000000 bytes"}


# ---- finding 4: Host and cross-site requests ---------------------------------------------


def test_the_site_policy_answers_only_for_this_servers_names() -> None:
    loopback = SitePolicy.for_server("127.0.0.1")
    for host in ("localhost", "localhost:5100", "127.0.0.1:5100", "[::1]:5100", "app.localhost"):
        assert loopback.host_allowed(host), host
    for host in ("attacker.example", "attacker.example:5100", "10.0.0.5:5100", ""):
        assert not loopback.host_allowed(host), host
    compose = SitePolicy.for_server("0.0.0.0", ["api", "mod.example.org"])
    for host in ("api:5100", "172.18.0.5:5100", "MOD.example.org", "localhost:5100"):
        assert compose.host_allowed(host), host
    assert not compose.host_allowed("attacker.example")
    bound = SitePolicy.for_server("mod.internal")
    assert bound.host_allowed("mod.internal:5100") and not bound.host_allowed("other.internal")

    own = {"host": "localhost:5100"}
    assert loopback.refusal("POST", own) is None
    assert loopback.refusal("POST", own | {"origin": "http://localhost:5100"}) is None
    assert loopback.refusal("POST", own | {"sec-fetch-site": "same-origin"}) is None
    assert loopback.refusal("GET", own | {"origin": "https://attacker.example"}) is None
    for foreign in ({"origin": "https://attacker.example"}, {"origin": "null"},
                    {"origin": "http://localhost:3000"}, {"sec-fetch-site": "cross-site"},
                    {"sec-fetch-site": "same-site"}):  # fmt: skip
        assert loopback.refusal("DELETE", own | foreign) == (
            403, "requests from another site may not change anything here"), foreign  # fmt: skip
    proxied = {"host": "api:5100", "origin": "https://mod.example.org"}
    assert compose.refusal("POST", proxied) is None


async def test_other_sites_cannot_change_banks_even_without_keys() -> None:
    backend = memory_backend()
    async with client(build_api(backend)) as api:
        rebound = {"host": "attacker.example"}
        made = await api.post("/c/banks", json={"name": "EVIL"}, headers=rebound)
        assert made.status_code == 400 and backend.banks() == []
        assert (await api.get("/c/banks", headers=rebound)).status_code == 400
        assert (await api.post("/c/banks", json={"name": "OURS"})).status_code == 201
        assert (await api.delete("/c/bank/OURS", headers=rebound)).status_code == 400
        form = {"photo": ("r.jpg", ROCKET, "image/jpeg")}
        cross = {"origin": "https://attacker.example", "sec-fetch-site": "cross-site"}
        posted = await api.post("/c/bank/OURS/content", files=form, headers=cross)
        assert posted.status_code == 403 and backend.bank.keys("OURS") == []
        own = {"origin": BASE, "sec-fetch-site": "same-origin"}
        assert (await api.post("/c/bank/OURS/content", files=form, headers=own)).status_code == 200
        assert (await api.get("/c/banks", headers=cross)).status_code == 200  # reads stay open


# ---- finding 13: bank configs the replicas would refuse ----------------------------------


async def test_bank_configs_the_replicas_would_refuse_are_refused_here() -> None:
    backend = memory_backend()
    async with client(build_api(backend)) as api:
        for ratio in (7, -0.5, "inf"):
            made = await api.post("/c/banks", json={"name": "RATIO", "enabled_ratio": ratio})
            assert made.status_code == 400, (ratio, made.text)
        assert backend.banks() == []
        assert (await api.post("/c/banks", json={"name": "RATIO"})).status_code == 201
        for change in ({"enabled_ratio": 7}, {"enabled_ratio": True}, {"enabled": "no"}):
            changed = await api.put("/c/bank/RATIO", json=change)
            assert changed.status_code == 400, (change, changed.text)
        assert (await api.get("/c/bank/RATIO")).json()["matching_enabled_ratio"] == 1.0


# ---- finding 16: each caller's share of hashing; ?wait cleaned up -----------------------


async def test_each_caller_has_a_bounded_share_of_hashing(tmp_path) -> None:
    release = asyncio.Event()
    started = 0

    async def slow_hasher(kind: str, data: bytes):
        nonlocal started
        started += 1
        await release.wait()
        return await asyncio.to_thread(hash_media, "m", kind, data, 10**8)

    async def fetch(url: str) -> bytes:
        return ROCKET

    keys = tmp_path / "keys.jsonl"
    keys.write_bytes(key_record("a", "k-a", ["lookup"], []) + b"\n"
                     + key_record("b", "k-b", ["lookup"], []) + b"\n")  # fmt: skip
    backend = memory_backend(slow_hasher, fetch, hash_jobs_per_caller=1, hash_waiting_per_caller=1)
    gate = Gate(KeyRing(keys), RateLimit(rate=100.0, burst=100))
    async with client(build_api(backend, gate)) as api:
        photo = {"photo": ("r.jpg", ROCKET, "image/jpeg")}
        first = asyncio.create_task(api.post("/h/hash", files=photo, headers={"x-api-key": "k-a"}))
        other = asyncio.create_task(api.post("/h/hash", files=photo, headers={"x-api-key": "k-b"}))
        while started < 2:
            await asyncio.sleep(0.01)
        queued = asyncio.create_task(api.post("/h/hash", files=photo, headers={"x-api-key": "k-a"}))
        async with asyncio.timeout(30):
            while backend.shares.held("key:a") < 2:  # one running, one waiting its turn
                await asyncio.sleep(0.01)
            again = await api.post("/h/hash", files=photo, headers={"x-api-key": "k-a"})
        assert again.status_code == 429 and again.headers["retry-after"] == "1"
        by_url = await api.get("/h/hash", params={"url": "http://x/r.jpg"},
                               headers={"x-api-key": "k-a"})  # fmt: skip
        assert by_url.status_code == 429
        assert started == 2  # the waiting one has not started
        release.set()
        assert [(await t).status_code for t in (first, other, queued)] == [200, 200, 200]
        assert (await api.get("/h/hash", params={"url": "http://x/r.jpg"},
                              headers={"x-api-key": "k-a"})).json()["pdq"] == PDQ  # fmt: skip
        assert backend.shares.callers() == 0  # nothing held once the jobs are done


async def test_a_burst_of_one_callers_hashes_waits_its_turn_instead_of_429() -> None:
    """Coop sends a batch's 40 images at once as one caller: with the default share (2
    running) they wait their turn and all are hashed; none is refused (a refused hash is
    a lost match in Coop)."""
    backend = memory_backend()
    async with client(build_api(backend)) as api:
        photo = {"photo": ("r.jpg", ROCKET, "image/jpeg")}
        answers = await asyncio.gather(*(api.post("/h/hash", files=photo) for _ in range(40)))
    assert [a.status_code for a in answers] == [200] * 40
    assert all(a.json()["pdq"] == PDQ for a in answers)
    assert backend.shares.callers() == 0


async def test_a_failed_publish_leaves_no_wait_behind() -> None:
    decisions = RecentDecisions()

    class Down:
        async def upload(self, event, raw) -> None:
            raise ApiError(503, "not connected to Kafka yet")

        async def review_outcome(self, outcome, raw) -> None:
            raise ApiError(503, "not connected to Kafka yet")

    async with client(build_api(memory_backend(), v1=(Down(), decisions))) as api:
        event = {"schema": 1, "event_id": "e1", "platform": "forum", "content_id": "c1",
                 "uploader_id": "u1", "created_at": "2026-11-30T00:00Z", "text": "hi"}  # fmt: skip
        failed = await api.post("/v1/uploads", json=event, params={"wait": "30"})
        assert failed.status_code == 503
        assert decisions.waiting() == 0


# ---- finding 12: the decisions tail supervised ------------------------------------------


class Record:
    def __init__(self, offset: int, value: bytes) -> None:
        self.offset, self.value = offset, value


class FakeReader:
    """A consumer of one partition: ``batches`` are what successive polls return, an
    exception in them is raised; after them, nothing comes."""

    def __init__(self, batches: list) -> None:
        self.batches = batches
        self.seeks: list[tuple[int, int]] = []
        self.stopped = False

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0}

    def assign(self, partitions) -> None:
        self.partitions = partitions

    async def seek_to_end(self, *partitions) -> None:
        self.seeks.extend((p.partition, -1) for p in partitions)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.seeks.append((partition.partition, offset))

    async def getmany(self, timeout_ms: int):
        if not self.batches:
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        batch = self.batches.pop(0)
        if isinstance(batch, Exception):
            raise batch
        return {TopicPartition("decisions", 0): batch}

    async def stop(self) -> None:
        self.stopped = True


async def test_the_decisions_tail_skips_non_decisions_and_restarts_after_kafka_errors() -> None:
    decisions = RecentDecisions()
    good = orjson.dumps({"platform": "p", "event_id": "e1", "verdict": "allow"})
    later = orjson.dumps({"platform": "p", "event_id": "e2", "verdict": "allow"})
    readers = [
        FakeReader([[Record(0, b"[1, 2]"), Record(1, b"7"), Record(2, b"{"), Record(3, good)],
                    KafkaConnectionError()]),
        FakeReader([[Record(4, later)]]),
    ]  # fmt: skip
    handed: list[FakeReader] = []

    async def connect():
        handed.append(readers[len(handed)])
        return handed[-1]

    tail = DecisionTail(connect, "decisions", decisions, first_backoff_s=0.01)
    running = asyncio.create_task(tail.run())
    try:
        for _ in range(500):
            if decisions.get("p", "e2") is not None:
                break
            await asyncio.sleep(0.01)
        assert decisions.get("p", "e1") is not None and decisions.get("p", "e2") is not None
        assert (tail.skipped, tail.restarts, tail.running) == (3, 1, True)
        assert handed[0].stopped and handed[1].seeks == [(0, 4)]  # on from where it was
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert not tail.running
    assert decision_of(b"null") is None and decision_of(good) == orjson.loads(good)


async def test_ready_names_each_check_and_fails_when_one_does() -> None:
    down = {"decisions": lambda: False}
    async with client(build_api(memory_backend(), checks=down)) as api:
        answer = await api.get("/ready")
        assert answer.status_code == 503
        assert answer.json() == {"ready": False, "bank": True, "decisions": False}
