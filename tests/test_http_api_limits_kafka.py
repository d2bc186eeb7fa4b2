"""The bounds of tests/test_http_api_limits.py against a real ``modstream serve`` on a real
broker, over real sockets: a chunked body refused before it is all sent, big video
compares refused or run off the event loop, other sites refused, and a decisions tail that
survives records it cannot read."""

from __future__ import annotations

import asyncio
import select
import socket
import time
from urllib.parse import urlsplit

import aiohttp
import orjson
import pytest
from conftest import start_server
from streaming import send
from test_http_api_kafka import call, photo
from test_http_api_limits import vpdq
from test_review_kafka import ROCKET

from modstream.serve.backend import MAX_VPDQ_FRAMES
from modstream.serve.limits import MAX_BODY_BYTES, MAX_UPLOAD_BODY_BYTES

pytestmark = pytest.mark.kafka


@pytest.fixture
def server(workers, tmp_path):
    url, proc = start_server(workers, tmp_path, MODSTREAM_API_ALLOWED_HOSTS="api.internal")
    yield url
    proc.terminate()
    proc.wait(timeout=20)


def chunked_post(url: str, path: str, content_type: str, head: bytes, total: int) -> tuple:
    """POST a chunked body of up to ``total`` bytes, a MiB a chunk, stopping as soon as the
    server answers; its status line and the bytes sent by then."""
    address = urlsplit(url)
    chunk = b" " * (1024 * 1024)
    sent = 0
    with socket.create_connection((address.hostname, address.port), timeout=30) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {address.netloc}\r\nContent-Type: {content_type}"
            "\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        piece = head
        while sent < total:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
            piece = chunk
        answer = b""
        try:
            while b"\r\n" not in answer:
                got = sock.recv(65536)
                if not got:
                    break
                answer += got
        except ConnectionResetError:
            pass
    return answer.split(b"\r\n", 1)[0].decode(), sent


def test_chunked_bodies_are_refused_before_they_are_all_sent(server):
    status, sent = chunked_post(server, "/m/compare", "application/json", b'{"pdq": ["',
                                100 * 1024 * 1024)  # fmt: skip
    assert status == "HTTP/1.1 413 Request Entity Too Large", status
    slack = 16 * 1024 * 1024  # what the sockets' buffers hold before the server reads
    assert sent <= MAX_BODY_BYTES + slack, sent
    boundary = "b0undary"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="photo"; '
            'filename="x.jpg"\r\nContent-Type: image/jpeg\r\n\r\n').encode()  # fmt: skip
    status, sent = chunked_post(server, "/h/hash", f"multipart/form-data; boundary={boundary}",
                                head, 300 * 1024 * 1024)  # fmt: skip
    assert status == "HTTP/1.1 413 Request Entity Too Large", status
    assert sent <= MAX_UPLOAD_BODY_BYTES + slack, sent


async def test_big_video_compares_are_refused_and_others_leave_the_server_answering(server):
    async with aiohttp.ClientSession(server) as s:
        over = vpdq(MAX_VPDQ_FRAMES + 1)
        status, refused = await call(s, "POST", "/m/compare", json={"vpdq": [over, over]})
        assert status == 400 and f"over {MAX_VPDQ_FRAMES} frames" in refused["message"]

        left, right = vpdq(MAX_VPDQ_FRAMES, 1), vpdq(MAX_VPDQ_FRAMES, 2)
        order: list[str] = []

        async def compare() -> None:
            status, found = await call(s, "POST", "/m/compare", json={"vpdq": [left, right]})
            assert (status, found) == (200, {"vpdq": [False, {"distance": 100}]})
            order.append("compare")

        running = asyncio.create_task(compare())
        deadline = time.monotonic() + 30
        while not running.done() and time.monotonic() < deadline:  # until it is comparing
            _, metrics = await call(s, "GET", "/metrics")
            if "modstream_http_video_compares_running 1.0" in metrics:
                assert await call(s, "GET", "/status") == (200, "I-AM-ALIVE")
                order.append("status")
                break
        await running
        assert order == ["status", "compare"], order  # answered while the compare ran


async def test_other_sites_are_refused_by_a_server_without_keys(server):
    port = urlsplit(server).port
    async with aiohttp.ClientSession(server) as s:
        rebound = {"Host": f"attacker.example:{port}"}
        status, _ = await call(s, "POST", "/c/banks", json={"name": "EVIL"}, headers=rebound)
        assert status == 400
        assert (await call(s, "GET", "/c/bank/EVIL"))[0] == 404
        named = {"Host": f"api.internal:{port}"}  # MODSTREAM_API_ALLOWED_HOSTS
        assert (await call(s, "POST", "/c/banks", json={"name": "OURS"}, headers=named))[0] == 201
        cross = {"Origin": "https://attacker.example"}
        assert (await call(s, "DELETE", "/c/bank/OURS", headers=cross))[0] == 403
        status, _ = await call(s, "POST", "/c/bank/OURS/content", data=photo(ROCKET),
                               headers={"Sec-Fetch-Site": "cross-site", **cross})  # fmt: skip
        assert status == 403
        assert (await call(s, "GET", "/c/bank/OURS/content/1"))[0] == 404
        status, banks = await call(s, "GET", "/c/banks", headers=cross)  # reads stay open
        assert status == 200 and [b["name"] for b in banks] == ["OURS"]


async def test_the_decisions_tail_survives_records_that_are_not_decisions(server, workers):
    decision = {"schema": 1, "event_id": "after-junk", "platform": "test", "verdict": "allow"}
    async with aiohttp.ClientSession(server) as s:  # the tail reads from when it started
        deadline = time.monotonic() + 30
        while (await call(s, "GET", "/ready"))[0] != 200 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
    await send(workers, "decisions", [(b"j1", b"[1, 2]"), (b"j2", b"7"), (b"j3", b"{"),
                                      (b"after-junk", orjson.dumps(decision))])  # fmt: skip
    async with aiohttp.ClientSession(server) as s:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status, found = await call(s, "GET", "/v1/decisions/test/after-junk")
            if status == 200:
                break
            await asyncio.sleep(0.2)
        assert (status, found) == (200, decision)
        assert await call(s, "GET", "/ready") == (
            200, {"ready": True, "bank": True, "decisions": True})  # fmt: skip
