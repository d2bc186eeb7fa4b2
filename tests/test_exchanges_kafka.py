"""Exchange sync on a real broker: the ``exchange-sync`` service as a real process syncing
python-threatexchange's ``local_file``, ``sample`` and TCAP (a loopback server) into banks
that two real workers match against; deletions, restarts, failures and a standby taking
over."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter

import orjson
import pytest
from conftest import add_local_exchange, cli
from streaming import collect, eventually, inline, send, upload
from tcap_server import TCAPList, TCAPServer
from test_review_kafka import PDQ, ROCKET, uploaders_on_each_partition

from modstream.contracts import ExchangeState
from modstream.stream.client import read_table, read_topic

pytestmark = pytest.mark.kafka


async def states(workers) -> dict[str, ExchangeState]:
    table = await read_table(workers.settings.kafka, workers.settings.topic("exchange.state"))
    return {key.decode()[9:]: ExchangeState.parse(v) for (_, key), v in table.items()}


async def wait_state(workers, name: str, done, timeout: float = 60) -> ExchangeState:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = (await states(workers)).get(name)
        if state is not None and done(state):
            return state
        await asyncio.sleep(0.5)
    raise AssertionError(f"{name}: {state}")


async def bank_writes(workers) -> Counter[bytes]:
    """How many times each hashbank key was written (tombstones included)."""
    found: Counter[bytes] = Counter()
    async for key, _ in read_topic(
        workers.settings.kafka, workers.settings.topic("hashbank"), timeout_s=2
    ):
        found[key] += 1
    return found


async def decide_on_each_worker(workers, tag: str) -> list[dict]:
    uploaders = uploaders_on_each_partition(workers.settings.partitions)
    events = [upload(f"{tag}-{u}", media=inline(ROCKET), uploader=u) for u in uploaders]
    await send(workers, "uploads", events)
    want = {f"{tag}-{u}" for u in uploaders}
    found = await collect(workers, "decisions", want)
    return [found[i][0] for i in sorted(want)]


async def test_local_file_and_sample_sync_into_banks_two_workers_match(
    workers, sync_services, tmp_path
):
    signals = tmp_path / "partner.txt"
    other_md5 = hashlib.md5(b"another file").hexdigest()
    signals.write_text(f"pdq {PDQ}\nvideo_md5 {other_md5}\n")
    add_local_exchange(workers, signals)
    cli(workers, "exchange", "add", "demo", "--api", "sample", "--bank", "samples")
    port = sync_services.start()
    sync_services.wait_active()
    state = await wait_state(workers, "partner", lambda s: s.last_success_at is not None)
    assert (state.fetched, state.published, state.deleted) == (2, 2, 0)
    sample = await wait_state(workers, "demo", lambda s: s.last_success_at is not None)
    assert sample.published > 5  # python-threatexchange's examples of each type

    workers.start()
    workers.start()
    await workers.wait_split(workers.settings.topic("uploads.hashed"))
    for decision in await decide_on_each_worker(workers, "before"):
        assert decision["verdict"] == "takedown", decision
        match = next(e for e in decision["evidence"] if e["kind"] == "hash_match")
        assert match["bank"] == "shared" and match["entry_id"].startswith("partner.")

    banked = {port: workers.status(port)["bank_entries"] for _, port in workers.procs}
    signals.write_text(f"video_md5 {other_md5}\n")  # the partner withdrew the photo
    done = cli(workers, "exchange", "sync-now", "partner", "--wait", "60")
    assert "synced 'partner'" in done.stdout
    state = (await states(workers))["partner"]
    assert state.deleted == 1 and state.published == 2
    await eventually(
        lambda: all(workers.status(p).get("bank_entries") == n - 1 for p, n in banked.items()),
        timeout=60,
        what="the tombstone on both workers' replicas",
    )
    for decision in await decide_on_each_worker(workers, "after"):
        assert decision["verdict"] == "allow", decision

    # A crash of the sync service: the restarted one rebuilds what it published from the
    # bank and publishes nothing twice.
    before = await bank_writes(workers)
    sync_services.kill(port)
    sync_services.start()
    sync_services.wait_active()
    cli(workers, "exchange", "sync-now", "partner", "--wait", "60")
    cli(workers, "exchange", "sync-now", "demo", "--wait", "60")
    after = await bank_writes(workers)
    assert after == before
    assert all(count <= 2 for count in after.values())  # an entry, then its tombstone
    state = (await states(workers))["partner"]
    assert (state.published, state.deleted, state.unchanged) == (2, 1, 1 + 1)
    status = cli(workers, "exchange", "status").stdout
    assert "partner  api=local_file  bank=shared" in status and "ERROR" not in status


async def test_tcap_syncs_end_to_end_and_failures_keep_the_checkpoint(
    workers, sync_services, tmp_path
):
    hashes = TCAPList(page_size=2)
    md5s = [hashlib.md5(f"video {n}".encode()).hexdigest() for n in range(5)]
    for n, digest in enumerate(md5s):
        hashes.add(digest, "MD5", ideology="far-right" if n % 2 else "islamist")
    secret = tmp_path / "tcap-credentials"
    secret.write_text("analyst:pw")
    with TCAPServer(hashes) as server:
        hashes.expired = True
        cli(workers, "exchange", "add", "tcap", "--api", "tat", "--bank", "tcap",
            "--credentials", str(secret), "--set", f"base_url={server.url}")  # fmt: skip
        port = sync_services.start()
        sync_services.wait_active()
        state = await wait_state(workers, "tcap", lambda s: s.failures >= 2)
        assert "HTTP 401" in state.error and state.checkpoint is None
        assert 'modstream_exchange_errors_total{exchange="tcap"}' in sync_services.metrics(port)
        assert "HTTP 401" in cli(workers, "exchange", "status").stdout

        hashes.expired = False  # retried with backoff, without anyone asking
        state = await wait_state(workers, "tcap", lambda s: s.last_success_at is not None)
        assert state.published == 5 and state.error == "" and state.failures == 0
        first_checkpoint = state.checkpoint

        for n in range(5, 10):
            hashes.add(hashlib.md5(f"video {n}".encode()).hexdigest(), "MD5")
        hashes.broken_digest = hashes.records[7]["hash_digest"]  # on the new records' 2nd page
        failed = cli(workers, "exchange", "sync-now", "tcap", "--wait", "60", check=False)
        assert failed.returncode == 2 and "failed" in failed.stderr
        state = (await states(workers))["tcap"]
        # The page before the broken one stands, retried or not; the broken one never lands.
        assert state.published == 7 and state.checkpoint != first_checkpoint

        hashes.broken_digest = None
        state = await wait_state(workers, "tcap", lambda s: s.error == "" and s.published == 10)
        writes = await bank_writes(workers)
        assert len(writes) == 10 and set(writes.values()) == {1}  # no entry twice
        table = await read_table(workers.settings.kafka, workers.settings.topic("hashbank"))
        entries = [orjson.loads(v) for v in table.values()]
        assert {e["signal_type"] for e in entries} == {"md5"}
        assert {"ideology:far-right", "ideology:islamist"} == {e["labels"][0] for e in entries}
        assert all(e["provenance"]["api"] == "tat" and e["provenance"]["tat_id"] for e in entries)


async def test_a_standby_takes_over_when_the_active_service_dies(workers, sync_services, tmp_path):
    signals = tmp_path / "partner.txt"
    signals.write_text(f"pdq {PDQ}\n")
    add_local_exchange(workers, signals)
    first = sync_services.start()
    second = sync_services.start()
    # The lease may move while the second joins (the group rebalances); then it stays.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        roles = {port: sync_services.role(port) for port in (first, second)}
        if sorted(roles.values()) == ["active", "standby"]:
            break
        await asyncio.sleep(0.5)
    active = next(port for port, role in roles.items() if role == "active")
    standby = second if active == first else first
    await wait_state(workers, "partner", lambda s: s.last_success_at is not None)
    assert sync_services.role(standby) == "standby"

    sync_services.kill(active)
    assert sync_services.wait_active(timeout=60) == standby
    signals.write_text(f"pdq {PDQ}\nvideo_md5 {hashlib.md5(b'x').hexdigest()}\n")
    cli(workers, "exchange", "sync-now", "partner", "--wait", "60")
    state = (await states(workers))["partner"]
    assert (state.published, state.unchanged) == (2, 1)  # the first entry not published again


async def reports(workers) -> dict[str, dict]:
    table = await read_table(workers.settings.kafka, workers.settings.topic("exchange.state"))
    return {
        key.decode(): orjson.loads(value)
        for (_, key), value in table.items()
        if key.startswith(b"report/")
    }


async def wait_reports(workers, done, timeout: float = 60) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await reports(workers)
        if done(found):
            return found
        await asyncio.sleep(0.5)
    raise AssertionError(found)


async def test_reviewers_outcomes_on_exchange_matches_go_back_once(
    workers, sync_services, tmp_path
):
    signals = tmp_path / "partner.txt"
    signals.write_text(f"pdq {PDQ}\n")
    add_local_exchange(workers, signals)
    port = sync_services.start()
    sync_services.wait_active()
    await wait_state(workers, "partner", lambda s: s.last_success_at is not None)
    workers.start()
    events = [upload(f"wb-{n}", media=inline(ROCKET), uploader=f"u{n}") for n in range(3)]
    await send(workers, "uploads", events)
    found = await collect(workers, "decisions", {"wb-0", "wb-1", "wb-2"})
    decisions = [found[f"wb-{n}"][0] for n in range(3)]
    assert {d["verdict"] for d in decisions} == {"takedown"}

    def review(decision: dict, outcome: str) -> None:
        path = tmp_path / f"{decision['event_id']}.json"
        path.write_bytes(orjson.dumps(decision))
        cli(workers, "review", "submit", outcome, "--decision", str(path), "--reviewer", "r1")

    review(decisions[0], "confirm")  # a true positive: local_file appends it to the file
    sent = await wait_reports(workers, lambda r: [x["status"] for x in r.values()] == ["sent"])
    (report,) = sent.values()
    assert (
        report["opinion"] == "true_positive"
        and report["decision_id"] == decisions[0]["decision_id"]
    )
    assert signals.read_text().count(PDQ) == 2

    review(decisions[1], "confirm")  # the same entry again: not reported twice
    review(decisions[2], "overturn")  # python-threatexchange's local_file takes no negatives
    after = await wait_reports(
        workers, lambda r: len(r) == 2 and all(x["status"] != "sending" for x in r.values())
    )
    unsupported = next(r for r in after.values() if r["opinion"] == "false_positive")
    assert (
        unsupported["status"] == "unsupported" and "takes no false_positive" in unsupported["error"]
    )
    deadline = time.monotonic() + 30
    while 'status="repeated"' not in sync_services.metrics(port) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    assert 'opinion="true_positive",status="repeated"} 1.0' in sync_services.metrics(port)

    sync_services.kill(port)  # a restart re-reads nothing it has reported
    port = sync_services.start()
    sync_services.wait_active()
    await asyncio.sleep(3)
    assert await reports(workers) == after and signals.read_text().count(PDQ) == 2
    status = cli(workers, "exchange", "status").stdout
    assert "reports: false_positive unsupported 1, true_positive sent 1" in status
