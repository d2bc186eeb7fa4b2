"""Everyday evasions on the real broker: a mirrored and a letterboxed copy of a banked photo
are taken down, and a still of a banked video is matched to it."""

from __future__ import annotations

import base64

import pytest
from PIL import Image
from streaming import collect, send, upload
from videos import clip

from modstream.contracts import BankEntry, dumps
from modstream.demo import encode, sample
from modstream.engine import hash_media
from modstream.hashing.video import VideoSampling

pytestmark = pytest.mark.kafka


def inline(image: Image.Image) -> list[dict]:
    data = base64.b64encode(encode(image, quality=85)).decode()
    return [{"media_id": "m1", "kind": "image", "data_b64": data}]


async def test_mirrored_letterboxed_and_still_copies_on_the_broker(workers, tmp_path):
    photo = sample("chelsea")
    film = clip(tmp_path / "film.mp4", ["astronaut", "coffee"], seconds_each=2.0)
    entries = [
        BankEntry("tve", "cat", "pdq", hash_media("m", "image", encode(photo), 10**8)
                  .signals["pdq"]["value"]),
        BankEntry("tve", "film", "vpdq", hash_media("m", "video", film, 10**8, VideoSampling())
                  .signals["vpdq"]["value"]),
    ]  # fmt: skip
    await send(workers, "hashbank", [(e.key.encode(), dumps(e)) for e in entries])
    workers.start()
    letterboxed = Image.new("RGB", (photo.width, photo.height * 3 // 2), "black")
    letterboxed.paste(photo, (0, photo.height // 4))
    await send(
        workers,
        "uploads",
        [
            upload("mirrored", media=inline(photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT))),
            upload("letterboxed", media=inline(letterboxed)),
            upload("still", media=inline(sample("coffee").resize((640, 360)))),
        ],
    )
    decided = await collect(workers, "decisions", {"mirrored", "letterboxed", "still"})
    found = {event_id: records[0] for event_id, records in decided.items()}
    for event_id, variant in (("mirrored", "mirror"), ("letterboxed", "trimmed")):
        assert found[event_id]["verdict"] == "takedown"
        pdq = next(e for e in found[event_id]["evidence"] if e["signal_type"] == "pdq")
        assert pdq["parts"][-1] == {"variant": variant}
    still = found["still"]
    assert still["verdict"] == "review"
    assert [(e["kind"], e["entry_id"]) for e in still["evidence"]] == [("still_of_video", "film")]
