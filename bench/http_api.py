"""The HTTP API's throughput: lookups/s and hash+match/s, with one and with two server
processes, in one run (ratios), on the local broker.

    .venv/bin/python bench/http_api.py [--seconds 10] [--bank 100000] [--concurrency 32]
                                       [--hma http://127.0.0.1:5100]

Then ROOST's Coop's batch (issue 25, tests/coop_client.py: a ``getBank``, a ``/h/hash`` and
one ``/m/lookup`` per signal type per item, 40 items at once, a trailing-slash base URL, no
key) against a server at default settings, and against the HMA at ``--hma`` if one is given:
items matched of 40, lookups made, errors.

HMA's field report: ~450-500 hash+match requests/s on 10 pods (about 45-50 a pod). Each
server here runs one hashing process (``MODSTREAM_HASH_WORKERS=1``), and the client runs in
this process: on a 2-core machine the client, the servers and their hashing processes share
the cores, so the figures are a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import aiohttp
from aiohttp import web

from modstream.contracts import BankEntry, dumps
from modstream.demo import encode, sample
from modstream.engine import hash_media
from modstream.settings import Settings
from modstream.stream.client import publish
from modstream.stream.topics import delete_topics, ensure_topics

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from coop_client import HmaService, matched  # Coop's calls, shared with the tests
from streaming import http_server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--bank", type=int, default=100_000, help="random PDQ entries banked")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--hma", help="an HMA's base URL: Coop's batch against it too")
    args = parser.parse_args()
    run = uuid.uuid4().hex[:8]
    env = {**os.environ, "MODSTREAM_TOPIC_PREFIX": f"hb{run}.", "MODSTREAM_APP_ID": f"hb{run}",
           "MODSTREAM_HASH_WORKERS": "1", "MODSTREAM_LOG_FORMAT": "json",
           "MODSTREAM_API_RATE_PER_S": "1000000", "MODSTREAM_API_BURST": "1000000"}  # fmt: skip
    settings = Settings.from_env({k: v for k, v in env.items() if k.startswith("MODSTREAM_")})
    photo = encode(sample("rocket"), quality=90)
    pdq = hash_media("m", "image", photo, 10**8).signals["pdq"]["value"]
    rng = random.Random(1)
    entries = [BankEntry("BENCH", str(i), "pdq", f"{rng.getrandbits(256):064x}")
               for i in range(args.bank)] + [BankEntry("BENCH", "rocket", "pdq", pdq)]  # fmt: skip
    asyncio.run(ensure_topics(settings))
    asyncio.run(publish(settings.kafka, settings.topic("hashbank"),
                        ((e.key.encode(), dumps(e)) for e in entries)))  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="httpbench-"))
    servers: list[subprocess.Popen] = []
    try:
        rows = []
        for count in (1, 2):
            while len(servers) < count:
                servers.append(start(env, tmp, 5180 + len(servers)))
            urls = [f"http://127.0.0.1:{5180 + i}" for i in range(count)]
            lookup = asyncio.run(load(urls, args, lambda s, u: get_lookup(s, u, pdq)))
            hashed = asyncio.run(load(urls, args, lambda s, u: post_lookup(s, u, photo)))
            rows.append((count, lookup, hashed))
        base_lookup, base_hash = rows[0][1][0], rows[0][2][0]
        print(f"bank of {args.bank + 1:,} PDQ, {args.concurrency} concurrent requests, "
              f"{args.seconds:g} s each, {os.cpu_count()} cores")  # fmt: skip
        print("servers  GET /m/lookup (signal)            POST /m/lookup (hash+match)")
        for count, (lrate, lp50, lp99), (hrate, hp50, hp99) in rows:
            print(f"{count:>7}  {lrate:7,.0f}/s {lrate / base_lookup:4.2f}x "
                  f"p50 {lp50:5.1f} p99 {lp99:6.1f} ms   {hrate:6,.0f}/s {hrate / base_hash:4.2f}x "
                  f"p50 {hp50:6.1f} p99 {hp99:6.1f} ms")  # fmt: skip
        defaults = {k: v for k, v in env.items() if not k.startswith("MODSTREAM_API_")}
        servers.append(start(defaults | {"MODSTREAM_FETCH_ALLOW": "127.0.0.1/32"}, tmp, 5189,
                             hash_jobs=None))  # fmt: skip
        targets = [("modstream (defaults)", "http://127.0.0.1:5189")]
        targets += [("HMA", args.hma.rstrip("/"))] if args.hma else []
        print("Coop batch (40 items at once)   matched  lookups  errors  deleteBank after")
        for name, url in targets:
            found, lookups, errors, deleted = asyncio.run(coop_batch(url, photo, run))
            print(f"{name:<30}  {found:>4}/40  {lookups:>7}  {dict(errors)!s:<6}  {deleted}")
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(timeout=30)
        asyncio.run(delete_topics(settings))


async def coop_batch(base: str, photo: bytes, run: str) -> tuple[int, int, Counter, int]:
    """Coop's flow on ``base``: a bank with ``photo``, then 40 near-copies by URL at once;
    items matched, lookups made, errors by status, and ``deleteBank``'s status after."""
    copies = [encode(sample("rocket"), quality=q) for q in range(55, 95)]

    async def image(request: web.Request) -> web.Response:
        return web.Response(body=copies[int(request.match_info["n"])], content_type="image/jpeg")

    bank = f"COOP_{run.upper()}"
    async with http_server({"/i/{n}.jpg": image}) as media, aiohttp.ClientSession() as session:
        hma = HmaService(session, f"{base}/")  # Coop's default form: a trailing slash
        await hma.create_bank(bank)
        await hma.add_content(bank, photo)
        results = await hma.match_batch([bank], [f"{media}/i/{n}.jpg" for n in range(40)])
        async with session.delete(f"{base}/c/bank/{bank}") as deleted:
            status = deleted.status
    errors = Counter(code for r in results for code in r.errors)
    lookups = sum(len(r.matches) for r in results)
    return sum(matched(r, bank) for r in results), lookups, errors, status


def start(
    env: dict[str, str], tmp: Path, port: int, hash_jobs: str | None = "64"
) -> subprocess.Popen:
    log = open(tmp / f"serve-{port}.log", "ab")  # noqa: SIM115 - lives with the process
    # The benchmark's clients share one address: let them all hash at once (one caller's
    # share of the pool is otherwise MODSTREAM_API_HASH_JOBS_PER_CALLER, 2).
    if hash_jobs is not None:
        env = {**env, "MODSTREAM_API_HASH_JOBS_PER_CALLER": hash_jobs}
    proc = subprocess.Popen([sys.executable, "-m", "modstream.cli", "serve", "--port", str(port)],
                            env=env, stdout=log, stderr=log)  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2):
                return proc
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"server on {port} not ready: {(tmp / f'serve-{port}.log').read_text()}")


async def get_lookup(session: aiohttp.ClientSession, url: str, pdq: str) -> None:
    params = {"signal_type": "pdq", "signal": pdq}
    async with session.get(f"{url}/m/lookup", params=params) as answer:
        assert answer.status == 200 and "BENCH" in await answer.json()


async def post_lookup(session: aiohttp.ClientSession, url: str, photo: bytes) -> None:
    form = aiohttp.FormData()
    form.add_field("photo", photo, filename="p.jpg", content_type="image/jpeg")
    async with session.post(f"{url}/m/lookup", data=form) as answer:
        assert answer.status == 200 and "BENCH" in (await answer.json())["pdq"]


async def load(urls: list[str], args, request) -> tuple[float, float, float]:
    """Requests/s and p50/p99 latency (ms) of ``concurrency`` clients for ``seconds``,
    spread over the servers in turn."""
    latencies: list[float] = []
    stop = time.monotonic() + args.seconds
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client(n: int) -> None:
            turn = n
            while time.monotonic() < stop:
                started = time.perf_counter()
                await request(session, urls[turn % len(urls)])
                latencies.append((time.perf_counter() - started) * 1000)
                turn += 1

        began = time.monotonic()
        await asyncio.gather(*(client(n) for n in range(args.concurrency)))
        elapsed = time.monotonic() - began
    cuts = statistics.quantiles(latencies, n=100)
    return len(latencies) / elapsed, cuts[49], cuts[98]


if __name__ == "__main__":
    main()
