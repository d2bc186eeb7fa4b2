"""Hostile events through a real worker on the real broker: every bad input gets a clear
error (a decision that says what failed, or a dead letter with the original bytes), and the
good event sent after each one is decided."""

from __future__ import annotations

import base64
import io
import os
import signal
import time
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from PIL import Image
from streaming import collect, dead_letters, http_server, send, upload

from modstream.contracts import BankEntry, dumps
from modstream.demo import encode, sample
from modstream.engine import hash_media
from modstream.stream.client import end_offsets

pytestmark = pytest.mark.kafka


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket listening on ``port`` (IPv4, from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(".".join(str(b) for b in reversed(bytes.fromhex(address))))
    return found


async def test_hostile_events_never_sink_their_neighbours(workers):
    banned = encode(sample("rocket"), quality=90)
    pdq = hash_media("m", "image", banned, 10**8).signals["pdq"]["value"]
    entry = BankEntry("tve", "rocket", "pdq", pdq, (), "takedown", "")
    await send(workers, "hashbank", [(entry.key.encode(), dumps(entry))])
    root = workers.settings.media_root
    (root / "loop").symlink_to(root / "loop")
    wide = io.BytesIO()
    Image.new("L", (64_000_000, 1), 7).save(wide, "PNG")

    hits = []

    async def served(request):
        hits.append(request.path)
        raise web.HTTPNotFound()

    # Only 127.0.0.2 is allowlisted: 127.0.0.1, however it is spelled, is not.
    proc, port = workers.start(MODSTREAM_FETCH_ALLOW="127.0.0.2/32")
    assert listening_addresses(port) == {"127.0.0.1"}  # MODSTREAM_WEB_HOST, not 0.0.0.0

    async with (
        http_server({"/x.jpg": served}, "127.0.0.1") as loopback,
        http_server({"/secret.jpg": served}, "127.0.0.2") as allowed,
    ):
        loop_port = loopback.rsplit(":", 1)[1]
        bad_items = [
            {
                "media_id": "ssrf",
                "kind": "image",
                "url": f"http://１２７.０.０.１:{loop_port}/x.jpg",
            },
            {"media_id": "legacy", "kind": "image", "url": f"http://2130706433:{loop_port}/x.jpg"},
            {"media_id": "v6", "kind": "image", "url": f"http://[::ffff:127.0.0.1]:{loop_port}/"},
            {"media_id": "brackets", "kind": "image", "url": "http://[127.0.0.6]:1/"},
            {"media_id": "label", "kind": "image", "url": f"http://{'a' * 64}.example/x.jpg"},
            {"media_id": "loop", "kind": "image", "path": "loop"},
            {"media_id": "long", "kind": "image", "path": "a" * 300 + ".jpg"},
            {"media_id": "wide", "kind": "image", "data_b64": b64(wide.getvalue())},
            {
                "media_id": "secret",
                "kind": "image",
                "url": allowed.replace("://", "://alice:hunter2@") + "/secret.jpg?token=t0k3n",
            },
        ]
        banned_item = {"media_id": "banned", "kind": "image", "data_b64": b64(banned)}
        records, expected = [], {}
        for n, item in enumerate(bad_items):
            records.append(upload(f"bad-{n}", media=[item, banned_item], uploader=f"u{n}"))
            records.append(upload(f"good-{n}", text="lovely weather at the lake", uploader="g"))
            expected[f"bad-{n}"] = "takedown"  # the banned image beside the bad item
            expected[f"good-{n}"] = "allow"
        long_text = "lorem ipsum dolor " * 5_555  # ~100,000 characters
        for n in range(12):
            records.append(upload(f"long-{n}", text=long_text, uploader="prolific"))
        records.append(upload("short", text="hi there", uploader="prolific"))
        expected |= {f"long-{n}": None for n in range(12)} | {"short": "allow"}
        for platform in ("alpha", "beta"):
            body = orjson.loads(upload("same-id", text="hello")[1])
            records.append((b"same", orjson.dumps({**body, "platform": platform})))
        expected["same-id"] = "allow"
        refused = [
            upload("dup", text="x")[1].replace(b'"text":"x"', b'"text":"x","text":"y"'),
            upload("bidi\u202egpj.exe", text="x")[1],
        ]
        records += [(b"refused", raw) for raw in refused]
        records.append(upload("after-refused", text="a quiet day"))
        expected["after-refused"] = "allow"
        await send(workers, "uploads", records)
        decisions = await collect(
            workers, "decisions", set(expected), timeout=120, copies={"same-id": 2}
        )
    assert set(decisions) >= set(expected)
    for event_id, verdict in expected.items():
        if verdict is not None:
            assert decisions[event_id][0]["verdict"] == verdict, event_id
    assert hits == ["/secret.jpg"]  # nothing reached 127.0.0.1

    reasons = {
        n: {e["media_id"]: e["reason"] for e in decisions[f"bad-{n}"][0]["media_errors"]}
        for n in range(len(bad_items))
    }
    assert [reasons[n][item["media_id"]] for n, item in enumerate(bad_items)] == [
        "blocked_address",
        "bad_url",
        "blocked_address",
        "bad_url",
        "bad_url",
        "bad_path",
        "bad_path",
        "too_costly",
        "http_status",
    ]
    decided = orjson.dumps(decisions).decode()
    assert "hunter2" not in decided and "t0k3n" not in decided and "alice" not in decided
    assert "hunter2" not in workers.log(port)

    same = decisions["same-id"]
    assert {d["platform"] for d in same} == {"alpha", "beta"}
    assert len({d["decision_id"] for d in same}) == 2

    letters = await dead_letters(workers, 2, timeout=10)
    assert sorted(base64.b64decode(x["original_b64"]) for x in letters) == sorted(refused)
    errors = " ".join(x["error"] for x in letters)
    assert "duplicate key 'text'" in errors and "upload.event_id: control" in errors

    # A hashing process killed as the out-of-memory killer would: the pool is replaced,
    # readiness says so meanwhile, and later media events are decided, not dead-lettered.
    pool = children_of(proc.pid)
    assert pool
    for pid in pool:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while workers.status(port).get("hashing_pool") != "healthy":
        assert time.monotonic() < deadline, "the hashing pool was not replaced"
        time.sleep(0.2)
    start = await end_offsets(workers.settings.kafka, workers.settings.topic("decisions"))
    after = {f"after-kill-{n}" for n in range(4)}
    await send(
        workers,
        "uploads",
        [upload(i, media=[banned_item], text="look", uploader=i) for i in sorted(after)],
    )
    later = await collect(workers, "decisions", after, start=start, timeout=60)
    assert {later[i][0]["verdict"] for i in after} == {"takedown"}
    assert not set(children_of(proc.pid)) & set(pool)
