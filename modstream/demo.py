"""The end-to-end demo: a real broker, a worker, a bank of real photos, edited re-uploads.

scikit-image's bundled sample photos stand in for known content. Edited copies (resized,
re-compressed, captioned, slightly cropped, re-encoded) must be taken down; unrelated photos
and ordinary posts must be allowed; a broken image and a malformed event must be reported.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
from PIL import Image, ImageDraw

from modstream.contracts import BankEntry, dumps
from modstream.engine import hash_media
from modstream.settings import Settings

DEMO_BANK = "demo-tve"
#: Kafka's default record limit is 1 MB; bigger media travel by path or URL, not inline.
INLINE_LIMIT = 512 * 1024
KNOWN_STATEMENT = (
    "Statement number seven from the media office: the soldiers of the caliphate will "
    "remain, and the brothers must answer the call."
)


def sample(name: str) -> Image.Image:
    """A photo shipped inside scikit-image's wheel, as RGB."""
    from skimage import data

    pixels = getattr(data, name)()
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, axis=-1)
    return Image.fromarray(pixels).convert("RGB")


def encode(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def resized(image: Image.Image, scale: float = 0.6) -> Image.Image:
    size = (int(image.width * scale), int(image.height * scale))
    return image.resize(size, Image.Resampling.LANCZOS)


def captioned(image: Image.Image, caption: str = "SHARE BEFORE THEY DELETE IT") -> Image.Image:
    """A re-uploader's caption stamped in a corner, the way channel watermarks are."""
    edited = image.copy()
    draw = ImageDraw.Draw(edited)
    left, top, right, bottom = draw.textbbox((10, 10), caption)
    draw.rectangle((left - 4, top - 4, right + 4, bottom + 4), fill=(0, 0, 0))
    draw.text((10, 10), caption, fill=(255, 255, 255))
    return edited


def cropped(image: Image.Image, fraction: float = 0.01) -> Image.Image:
    dx, dy = int(image.width * fraction), int(image.height * fraction)
    return image.crop((dx, dy, image.width - dx, image.height - dy))


BANKED = ("astronaut", "rocket", "coffee", "hubble_deep_field")
EDITS: dict[str, tuple[str, Callable[[], bytes]]] = {
    "astronaut-resized-recompressed": (
        "astronaut",
        lambda: encode(resized(sample("astronaut")), quality=55),
    ),
    "rocket-captioned": ("rocket", lambda: encode(captioned(sample("rocket")), quality=85)),
    "coffee-cropped": ("coffee", lambda: encode(cropped(sample("coffee")), quality=80)),
    "hubble-as-png": ("hubble_deep_field", lambda: encode(sample("hubble_deep_field"), "PNG")),
}
UNRELATED = ("camera", "chelsea", "coins", "immunohistochemistry")


def bank_entries() -> list[BankEntry]:
    """PDQ, pHash and MD5 of the banked originals, plus one known text."""
    added = datetime.now(UTC).isoformat(timespec="seconds")
    entries = []
    for name in BANKED:
        signals = hash_media(name, "image", encode(sample(name), quality=95), 10**8).signals
        for signal_type in ("pdq", "phash", "md5"):
            values = {name: signals[signal_type]["value"]}
            inner = signals[signal_type].get("variants", {}).get("trimmed")
            if inner is not None:  # the picture without its plain borders (the rocket's sky)
                values[f"{name}.trimmed"] = inner
            entries += [
                BankEntry(DEMO_BANK, entry_id, signal_type, value, ("demo", "violent_extremism"),
                          "takedown", added)
                for entry_id, value in values.items()
            ]  # fmt: skip
    entries.append(
        BankEntry(
            DEMO_BANK,
            "statement-7",
            "text",
            KNOWN_STATEMENT,
            ("demo", "propaganda_statement"),
            "takedown",
            added,
        )
    )
    return entries


def demo_uploads(run: str, media_root: Path) -> list[tuple[str, dict]]:
    """(expected verdict, upload event) pairs. Large media go by path under ``media_root``."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds")

    def event(
        name: str, *, text: str | None = None, image: bytes | None = None, uploader: str = "u1"
    ) -> dict:
        body: dict = {
            "schema": 1,
            "event_id": f"{run}-{name}",
            "platform": "demo",
            "content_id": f"post-{name}",
            "uploader_id": uploader,
            "created_at": now,
        }
        if text is not None:
            body["text"] = text
        if image is not None and len(image) > INLINE_LIMIT:
            media_root.mkdir(parents=True, exist_ok=True)
            (media_root / f"{name}.bin").write_bytes(image)
            body["media"] = [{"media_id": "m1", "kind": "image", "path": f"{name}.bin"}]
        elif image is not None:
            body["media"] = [
                {"media_id": "m1", "kind": "image", "data_b64": base64.b64encode(image).decode()}
            ]
        return body

    uploads = [("takedown", event(name, image=make())) for name, (_, make) in EDITS.items()]
    uploads += [
        ("allow", event(f"{name}-original", image=encode(sample(name), quality=85), uploader="u2"))
        for name in UNRELATED
    ]
    broken = encode(sample("camera"), quality=85)[:1500]
    uploads += [
        ("review", event("broken-image", image=broken, uploader="u3")),
        (
            "takedown",
            event(
                "known-statement-copy",
                text="STATEMENT number seven from the media-office: The soldiers"
                " of the Caliphate will remain, and the brothers must answer the call!!",
            ),
        ),
        (
            "review",
            event(
                "glorifying-post",
                text="Glory to the martyrs of the blessed operation. "
                "Do not sit idle, join the caravan.",
                uploader="u4",
            ),
        ),
        (
            "allow",
            event(
                "news-report",
                text="Police said the group claimed responsibility for the attack; "
                "officials condemned it and an investigation is under way, according to reporters.",
                uploader="u5",
            ),
        ),
        (
            "allow",
            event(
                "sports-post",
                text="We absolutely destroyed them in the final, what a shot!",
                uploader="u5",
            ),
        ),
    ]
    return uploads


def run_demo(settings: Settings, external: bool = False) -> int:
    """The demo end to end. ``external``: use the broker and workers already running (the
    docker-compose ``demo`` profile) instead of starting a local broker and a worker."""
    from modstream.localkafka import LocalKafka
    from modstream.stream.client import end_offsets, publish, read_topic
    from modstream.stream.topics import ensure_topics

    if not external:
        print(LocalKafka.from_env(settings.bootstrap).start())
    asyncio.run(ensure_topics(settings))
    print("building the demo bank from scikit-image photos ...")
    entries = bank_entries()
    asyncio.run(
        publish(
            settings.kafka,
            settings.topic("hashbank"),
            [(e.key.encode(), dumps(e)) for e in entries],
        )
    )
    print(f"bank {DEMO_BANK!r}: {len(entries)} entries published to {settings.topic('hashbank')}")
    asyncio.run(_forget_earlier_reviews(settings))

    media_root = settings.media_root or (settings.data_dir / "demo-media").resolve()
    worker = None if external else _start_worker(settings, media_root)
    try:
        run = uuid.uuid4().hex[:8]
        uploads = demo_uploads(run, media_root)
        expected = {body["event_id"]: verdict for verdict, body in uploads}
        start = {
            topic: asyncio.run(end_offsets(settings.kafka, settings.topic(topic)))
            for topic in ("decisions", "uploads.dlq")
        }
        records = [(body["content_id"].encode(), orjson.dumps(body)) for _, body in uploads]
        records.append((b"malformed", b'{"schema": 1, "event_id": "oops", "media": "not a list"'))
        asyncio.run(publish(settings.kafka, settings.topic("uploads"), records))
        print(
            f"published {len(records)} uploads (one of them malformed); decisions as they arrive:\n"
        )

        decided: dict[str, dict] = {}

        async def collect() -> int:
            wrong = await _show(settings, start["decisions"], expected, decided, timeout_s=60)
            async for _, value in read_topic(
                settings.kafka,
                settings.topic("uploads.dlq"),
                start=start["uploads.dlq"],
                max_records=1,
                timeout_s=15,
            ):
                if value is None:
                    continue
                letter = orjson.loads(value)
                print(f"\n  dead letter ({letter['stage']}): {letter['error']}")
            return wrong

        problems = asyncio.run(collect())
        reviewed, wrong = asyncio.run(_review_loop(settings, run, decided, uploads))
        problems += wrong
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
    total = len(expected) + reviewed
    print(f"\n{total - problems}/{total} decisions as expected.")
    if not external:
        print(
            f"Metrics were on http://127.0.0.1:{settings.web_port}/metrics; "
            "the broker is still running (`modstream kafka stop`)."
        )
    return 0 if problems == 0 else 1


async def _review_loop(
    settings: Settings, run: str, decided: dict[str, dict], uploads: list[tuple[str, dict]]
) -> tuple[int, int]:
    """A reviewer confirms the glorifying post and overturns the captioned rocket photo;
    then both are posted again. Returns (decisions expected, how many were not as expected)."""
    from modstream.contracts import PlatformPolicy
    from modstream.stream.client import end_offsets, publish

    confirm, overturn = (
        decided.get(f"{run}-glorifying-post"),
        decided.get(f"{run}-rocket-captioned"),
    )
    if confirm is None or overturn is None:
        return 0, 0
    policy = PlatformPolicy(auto_bank="demo-reviewed").to_json()
    await publish(settings.kafka, settings.topic("bank.config"), [(b"platform/demo", policy)])
    start = await end_offsets(settings.kafka, settings.topic("decisions"))
    outcomes = [_outcome(confirm, "confirm"), _outcome(overturn, "overturn")]
    await publish(settings.kafka, settings.topic("review.outcomes"), outcomes)
    print("\n  a reviewer confirms post-glorifying-post and overturns post-rocket-captioned:\n")
    wrong = await _show(settings, start, {confirm["event_id"]: "takedown",
                                          overturn["event_id"]: "allow"})  # fmt: skip
    await asyncio.sleep(1.0)  # the workers' replicas take the reviews' effects (~0.2 s)
    bodies = {body["event_id"]: body for _, body in uploads}
    reposts = {}
    for event_id, want in ((confirm["event_id"], "takedown"), (overturn["event_id"], "allow")):
        body = dict(bodies[event_id], uploader_id="u9")
        body["event_id"], body["content_id"] = f"{event_id}-again", f"{body['content_id']}-again"
        reposts[body["event_id"]] = (want, body)
    start = await end_offsets(settings.kafka, settings.topic("decisions"))
    records = [(b["content_id"].encode(), orjson.dumps(b)) for _, b in reposts.values()]
    await publish(settings.kafka, settings.topic("uploads"), records)
    print("\n  both posted again by another user:\n")
    wrong += await _show(settings, start, {k: want for k, (want, _) in reposts.items()})
    return 4, wrong


async def _forget_earlier_reviews(settings: Settings) -> None:
    """Remove what an earlier demo's reviews left (standing verdicts on the demo platform,
    the banks they fed), so that every run starts from the same state."""
    from modstream.stream.client import publish, read_table

    prefixes = {"review.verdicts": (b"demo/",), "hashbank": (b"fp-demo/", b"demo-reviewed/")}
    for topic, starts in prefixes.items():
        table = await read_table(settings.kafka, settings.topic(topic))
        stale = [(key, None) for _, key in table if key.startswith(starts)]
        if stale:
            await publish(settings.kafka, settings.topic(topic), stale)


def _outcome(decision: dict, outcome: str) -> tuple[bytes, bytes]:
    ids = {k: decision[k] for k in ("decision_id", "event_id", "platform", "content_id")}
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    body = {"schema": 1, **ids, "outcome": outcome, "reviewer": "demo-reviewer",
            "decided_at": now}  # fmt: skip
    return decision["decision_id"].encode(), orjson.dumps(body)


async def _show(
    settings: Settings,
    start: dict[int, int],
    expected: dict[str, str],
    decided: dict[str, dict] | None = None,
    timeout_s: float = 30,
) -> int:
    """Print the first decision on each of ``expected``'s events from ``start`` (kept in
    ``decided``), and a line for each missing; how many were wrong or missing."""
    from modstream.stream.client import read_topic

    seen: dict[str, bool] = {}
    async for _, value in read_topic(
        settings.kafka, settings.topic("decisions"), start=start, timeout_s=timeout_s
    ):
        decision = orjson.loads(value or b"{}")
        want = expected.get(decision.get("event_id", ""))
        if want is None or decision["event_id"] in seen:
            continue
        seen[decision["event_id"]] = decision["verdict"] == want
        if decided is not None:
            decided[decision["event_id"]] = decision
        print(_describe(decision, seen[decision["event_id"]], want))
        if len(seen) == len(expected):
            break
    for event_id in sorted(set(expected) - set(seen)):
        print(f"  MISSING  no decision for {event_id}")
    return len(expected) - sum(seen.values())


def _describe(decision: dict, ok: bool, want: str) -> str:
    mark = "ok " if ok else f"UNEXPECTED (wanted {want})"
    evidence = decision["evidence"][:2]
    reasons = []
    for e in evidence:
        if e["kind"] == "hash_match":
            reasons.append(
                f"{e['signal_type']} match {e['bank']}/{e['entry_id']} "
                f"distance {e['distance']} (<= {e['threshold']})"
            )
        elif e["kind"] == "text_match":
            reasons.append(f"known text {e['bank']}/{e['entry_id']}")
        elif e["kind"] == "text_score":
            terms = ", ".join(p["term"] for p in e["parts"][:3])
            reasons.append(f"text score {e['score']} [{terms}]")
        else:
            reasons.append(f"{e['kind']}: {(e.get('detail') or '')[:100]}")
    verdict, content = decision["verdict"].upper(), decision["content_id"]
    return f"  {verdict:<9}{content:<42}{mark}  {'; '.join(reasons)}"


def _start_worker(settings: Settings, media_root: Path) -> subprocess.Popen:
    with socket.socket() as probe:  # else another worker's /ready would answer for this one
        # As the worker's web server binds: only a listener, not a closed connection's
        # TIME_WAIT (a worker that just stopped), makes the port unusable.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((settings.web_host, settings.web_port))
        except OSError as exc:
            raise OSError(
                f"port {settings.web_port} is in use (another worker?): "
                "stop it, or set MODSTREAM_WEB_PORT"
            ) from exc
    log_path = settings.data_dir / "demo-worker.log"
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, MODSTREAM_MEDIA_ROOT=str(media_root))
    with open(log_path, "ab") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "modstream.cli", "worker"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{settings.web_port}/ready"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise RuntimeError(f"worker exited with {worker.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    print(f"worker ready (pid {worker.pid}, log {log_path})")
                    return worker
        except OSError:
            pass
        time.sleep(0.5)
    worker.kill()
    raise RuntimeError(f"worker did not become ready in 90 s; see {log_path}")
