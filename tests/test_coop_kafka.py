"""Issue 25 against a real ``modstream serve`` on the broker: Coop's own calls
(tests/coop_client.py), with its trailing-slash base URL and no API key, at default settings:
a batch of 40 banked images in one burst all match; the banks survive; and a restart with a
large bank never answers a lookup for a banked hash with "no match"."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import aiohttp
import pytest
from aiohttp import web
from conftest import free_port, start_server
from coop_client import HmaService, matched
from streaming import http_server, send
from test_review_kafka import PDQ, ROCKET

from modstream.contracts import BankEntry, dumps
from modstream.demo import encode, sample

pytestmark = pytest.mark.kafka


@pytest.fixture
def server(workers, tmp_path):
    url, proc = start_server(workers, tmp_path)  # default rate and hash settings
    yield url
    proc.terminate()
    proc.wait(timeout=20)


async def test_a_batch_of_40_banked_images_all_match_with_coops_own_calls(server):
    copies = [encode(sample("rocket"), quality=q) for q in range(55, 95)]  # 40 near-copies

    async def image(request: web.Request) -> web.Response:
        return web.Response(body=copies[int(request.match_info["n"])], content_type="image/jpeg")

    async with http_server({"/i/{n}.jpg": image}) as media, aiohttp.ClientSession() as session:
        hma = HmaService(session, f"{server}/")  # Coop's default form: a trailing slash
        assert (await hma.create_bank("COOP_BANK"))["matching_enabled_ratio"] == 1.0
        await hma.create_bank("COOP_OTHER", 0.5)
        added = await hma.add_content("COOP_BANK", ROCKET)
        assert added["signals"]["pdq"] == PDQ
        assert await hma.get_bank("COOP_BANK") == {"matching_enabled_ratio": 1.0,
                                                   "name": "COOP_BANK"}  # fmt: skip

        started = time.perf_counter()
        urls = [f"{media}/i/{n}.jpg" for n in range(len(copies))]
        results = await hma.match_batch(["COOP_BANK", "COOP_OTHER"], urls)
        seconds = time.perf_counter() - started
        lookups = sum(len(r.matches) for r in results)
        print(f"coop batch: 40 items, {lookups} lookups in {seconds:.2f} s")  # (a report)
        assert [r.errors for r in results] == [[]] * 40
        assert sum(matched(r, "COOP_BANK") for r in results) == 40
        # What a photo bank added through the HMA routes holds: PDQ and its byte digests.
        assert all(set(r.hashes) == {"pdq", "md5", "sha256"} for r in results)

        # Right after the burst, Coop's bank changes still go through.
        assert (await hma.update_bank("COOP_OTHER", 0.25))["matching_enabled_ratio"] == 0.25
        assert await hma.delete_bank("COOP_OTHER") == {"message": "Done"}
        gone = await session.get(f"{server}//c/bank/COOP_OTHER")
        assert gone.status == 404
        assert (await session.get(f"{server}//c/bank/COOP_BANK")).status == 200


async def test_a_restart_with_a_large_bank_never_answers_no_match_for_a_banked_hash(
    workers, tmp_path
):
    entries = [BankEntry("LARGE", f"b{i}", "pdq", f"{i:064x}", (), "review", "")
               for i in range(1, 100_001)]  # fmt: skip
    entries.append(BankEntry("LARGE", "rocket", "pdq", PDQ, (), "takedown", ""))
    await send(workers, "hashbank", [(e.key.encode(), dumps(e)) for e in entries])
    _, proc = start_server(workers, tmp_path)  # loads once (and snapshots the bank)
    proc.terminate()
    proc.wait(timeout=30)

    port = free_port()
    log = open(tmp_path / "serve-restart.log", "ab")  # noqa: SIM115 - lives with the process
    restarted = subprocess.Popen(
        [sys.executable, "-m", "modstream.cli", "serve", "--port", str(port)],
        env=workers.worker_env(MODSTREAM_HASH_WORKERS="1"), stdout=log, stderr=log,
    )  # fmt: skip
    seen = {"refused": 0, "loading": 0, "empty": 0, "matched": 0}
    missing_retry_after = 0
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
            deadline = time.monotonic() + 120
            lookup = {"signal_type": "pdq", "signal": PDQ}
            while seen["matched"] < 20 and time.monotonic() < deadline:
                assert restarted.poll() is None, (tmp_path / "serve-restart.log").read_text()
                try:
                    async with session.get("/m/lookup", params=lookup) as answer:
                        body = await answer.json(content_type=None)
                        if answer.status == 503:
                            seen["loading"] += 1
                            missing_retry_after += "Retry-After" not in answer.headers
                        elif answer.status == 200 and "LARGE" in body:
                            seen["matched"] += 1
                        else:
                            seen["empty"] += 1
                except aiohttp.ClientConnectionError:
                    seen["refused"] += 1
                    await asyncio.sleep(0.05)
    finally:
        restarted.terminate()
        restarted.wait(timeout=30)
    print(f"lookups during the restart: {seen}")  # (a report)
    assert seen["matched"] == 20  # it came up and matched
    assert seen["empty"] == 0  # and never said "no match" (nor anything else) before
    assert missing_retry_after == 0
