"""Exchange sync throughput beside a plain ``bank import`` of the same hashes, in one run.

    .venv/bin/python bench/exchange_sync.py [--entries 200000]

One python-threatexchange ``local_file`` list of random PDQ hashes, on the local broker, on
topics of its own:

* ``bank import`` of the list: the floor (parse, validate, publish);
* the first sync of the same list by a real ``modstream exchange-sync`` process: fetched by
  python-threatexchange, mapped, written in transactions of 5,000 with the checkpoint;
* a second sync of the unchanged list: everything fetched and compared, nothing written;
* the time a restarted service takes to become active, most of it rebuilding its ledger
  from ``hashbank``, and its resident memory after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import orjson

from modstream.contracts import ExchangeState
from modstream.settings import Settings
from modstream.stream.client import read_table
from modstream.stream.topics import delete_topics, ensure_topics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=200_000)
    args = parser.parse_args()
    run = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "MODSTREAM_TOPIC_PREFIX": f"xb{run}.",
        "MODSTREAM_APP_ID": f"xbench-{run}",
        "MODSTREAM_EXCHANGE_SYNC_PORT": "6179",
        "MODSTREAM_LOG_FORMAT": "json",
    }
    settings = Settings.from_env({k: v for k, v in env.items() if k.startswith("MODSTREAM_")})
    asyncio.run(ensure_topics(settings))
    tmp = Path(tempfile.mkdtemp(prefix="xbench-"))
    hashes = tmp / "list.txt"
    rng = random.Random(1)
    hashes.write_text("".join(f"pdq {rng.getrandbits(256):064x}\n" for _ in range(args.entries)))
    service = None
    try:
        imported = timed(lambda: cli(env, "bank", "import", str(hashes), "--bank", "imported"))
        cli(env, "exchange", "add", "list", "--api", "local_file", "--bank", "synced",
            "--set", f"path={hashes}", "--interval", "86400")  # fmt: skip
        service = start(env, tmp)  # an exchange never synced syncs at once
        first = sync_seconds(settings, lambda state: state.last_success_at is not None)
        cli(env, "exchange", "sync-now", "list", "--wait", "3600")
        again = sync_seconds(settings, lambda state: state.unchanged >= args.entries)
        service.kill()
        service.wait()
        started = time.perf_counter()
        service = start(env, tmp)
        restart = time.perf_counter() - started
        rss_mb = (
            int(Path(f"/proc/{service.pid}/status").read_text().split("VmRSS:")[1].split()[0])
            / 1024
        )
        n = args.entries
        print(f"{n:,} PDQ hashes ({os.cpu_count()} cores)")
        print(f"bank import          {imported:6.1f} s  {n / imported:9,.0f}/s  1.00x")
        print(f"exchange first sync  {first:6.1f} s  {n / first:9,.0f}/s  {imported / first:.2f}x")
        print(f"exchange resync      {again:6.1f} s  {n / again:9,.0f}/s  {imported / again:.2f}x")
        ledger_s = [
            orjson.loads(line)["ledger_s"]
            for line in (tmp / "sync.log").read_text().splitlines()
            if '"ledger_s"' in line
        ][-1]
        print(f"restart to active    {restart:6.1f} s  (a dead member's session ends first)")
        print(
            f"  ledger rebuilt     {ledger_s:6.1f} s  {n / ledger_s:9,.0f}/s  RSS {rss_mb:.0f} MB"
        )
    finally:
        if service is not None:
            service.kill()
        asyncio.run(delete_topics(settings))


def cli(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, "-m", "modstream.cli", *args], env=env, check=True,
                   capture_output=True)  # fmt: skip


def sync_seconds(settings: Settings, done) -> float:
    """How long the sync that ``done`` recognizes took, from its own state record."""
    while True:
        table = asyncio.run(read_table(settings.kafka, settings.topic("exchange.state")))
        raw = table.get((0, b"exchange/list"))
        state = ExchangeState.parse(raw) if raw else None
        if state is not None and done(state) and not state.syncing:
            assert state.last_success_at and state.last_attempt_at and not state.error
            return state.last_success_at - state.last_attempt_at
        time.sleep(0.5)


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def start(env: dict[str, str], tmp: Path) -> subprocess.Popen:
    log = open(tmp / "sync.log", "ab")  # noqa: SIM115 - lives with the process
    proc = subprocess.Popen([sys.executable, "-m", "modstream.cli", "exchange-sync"], env=env,
                            stdout=log, stderr=log)  # fmt: skip
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen("http://127.0.0.1:6179/ready", timeout=2) as answer:
                if orjson.loads(answer.read())["role"] == "active":
                    return proc
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the sync service did not become active")


if __name__ == "__main__":
    main()
