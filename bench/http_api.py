"""The HTTP API's throughput: lookups/s and hash+match/s, with one and with two server
processes, in one run (ratios), on the local broker.

    .venv/bin/python bench/http_api.py [--seconds 10] [--bank 100000] [--concurrency 32]

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
from pathlib import Path

import aiohttp

from modstream.contracts import BankEntry, dumps
from modstream.demo import encode, sample
from modstream.engine import hash_media
from modstream.settings import Settings
from modstream.stream.client import publish
from modstream.stream.topics import delete_topics, ensure_topics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--bank", type=int, default=100_000, help="random PDQ entries banked")
    parser.add_argument("--concurrency", type=int, default=32)
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
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(timeout=30)
        asyncio.run(delete_topics(settings))


def start(env: dict[str, str], tmp: Path, port: int) -> subprocess.Popen:
    log = open(tmp / f"serve-{port}.log", "ab")  # noqa: SIM115 - lives with the process
    # The benchmark's clients share one address: let them all hash at once (one caller's
    # share of the pool is otherwise MODSTREAM_API_HASH_JOBS_PER_CALLER, 2).
    env = {**env, "MODSTREAM_API_HASH_JOBS_PER_CALLER": "64"}
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
