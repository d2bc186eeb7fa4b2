"""vPDQ on real video: clips encoded in the test, copies made the ways copies are made."""

from __future__ import annotations

from pathlib import Path

import pytest
import videos

from modstream.contracts import BankEntry, MediaError, MediaSignals, UploadEvent
from modstream.demo import encode, sample
from modstream.engine import hash_media
from modstream.formats.vpdq import FrameHash, format_vpdq, parse_vpdq
from modstream.hashing.video import VideoSampling, hash_video
from modstream.matching.video import VideoIndex, compare
from modstream.scan import local_engine
from modstream.settings import Settings

# Photos as scenes. Not the dark ones (rocket, retina): a bright logo in a dark corner moves
# PDQ by 60-70 bits, a known weakness of PDQ on flat dark frames; they serve as unrelated.
SCENES = ["astronaut", "coffee", "immunohistochemistry", "chelsea", "camera"]
OTHER_SCENES = ["retina", "coins", "moon", "hubble_deep_field", "rocket"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    original = videos.clip(folder / "original.mp4", SCENES, crf=23)
    return {
        "original": original,
        "reencoded": videos.reencoded(original, folder / "reencoded.avi"),
        "resized": videos.clip(folder / "resized.mp4", SCENES, size=(320, 180), crf=30),
        "trimmed": videos.clip(folder / "trimmed.mp4", SCENES, skip_seconds=1.0, crf=23),
        "grey": videos.clip(folder / "grey.mp4", SCENES, edit=videos.grey, crf=23),
        "logo": videos.clip(folder / "logo.mp4", SCENES, edit=videos.logo, crf=23),
        "unrelated": videos.clip(folder / "unrelated.mp4", OTHER_SCENES, crf=23),
    }


@pytest.fixture(scope="module")
def hashes(clips) -> dict[str, tuple[FrameHash, ...]]:
    return {name: hash_video(path).frames for name, path in clips.items()}


def test_one_frame_per_second_by_timestamp_in_vpdq_format(clips, hashes):
    frames = hashes["original"]
    assert 8 <= len(frames) <= 10  # a 10 s clip; a static second would collapse
    assert [f.timestamp for f in frames] == sorted(f.timestamp for f in frames)
    assert all(int(f.timestamp) == n for n, f in enumerate(frames))  # one per second
    assert all(f.quality >= 50 and len(f.pdq_hex) == 64 for f in frames)
    text = format_vpdq(frames)
    first = text.splitlines()[0].split(",")
    assert len(first) == 4 and first[0] == "0" and first[3] == "0.000"
    assert parse_vpdq(text) == tuple(
        FrameHash(f.frame_number, f.quality, f.pdq_hex, round(f.timestamp, 3)) for f in frames
    )


def test_vpdq_parse_names_the_bad_line():
    good = f"0,100,{'ab' * 32},0.000\n"
    with pytest.raises(ValueError, match="line 2"):
        parse_vpdq(good + "1,100,nothex,1.0\n")
    with pytest.raises(ValueError, match="no frames"):
        parse_vpdq("\n")


@pytest.mark.parametrize("variant", ["reencoded", "resized", "trimmed", "grey", "logo"])
def test_copies_match_the_original_and_not_an_unrelated_video(hashes, variant):
    index = VideoIndex()
    index.add(1, format_vpdq(hashes["original"]))
    index.add(2, format_vpdq(hashes["unrelated"]))
    found = dict(index.query(format_vpdq(hashes[variant]), 40))
    assert 1 in found and found[1] <= 20, found  # >= 80% of the original's frames
    assert 2 not in found
    comparison = compare(hashes[variant], hashes["original"])
    assert comparison.distance == found[1]
    assert comparison.ranges, "a reviewer needs to know where it matches"


def test_an_unrelated_video_matches_nothing(hashes):
    index = VideoIndex()
    index.add(1, format_vpdq(hashes["original"]))
    assert index.query(format_vpdq(hashes["unrelated"]), 40) == []
    assert compare(hashes["unrelated"], hashes["original"]).bank_share < 0.2


def test_a_short_cut_matches_by_its_own_share_not_the_bank_videos(hashes):
    """Three seconds cut from the original: all of the cut is in the bank video, but most of
    the bank video is not in the cut, so it is not a copy of it at the default 80%."""
    cut = [f for f in hashes["original"] if 3 <= f.timestamp < 6]
    comparison = compare(cut, hashes["original"])
    assert comparison.query_share == 1.0 and comparison.bank_share < 0.5
    ranges = comparison.ranges
    assert len(ranges) == 1 and ranges[0][2] >= 3.0 and ranges[0][3] < 6.0


def test_removing_a_video_stops_it_matching(hashes):
    index = VideoIndex()
    index.add(1, format_vpdq(hashes["original"]))
    index.remove(1)
    assert len(index) == 0
    assert index.query(format_vpdq(hashes["logo"]), 40) == []


def test_hashing_stops_at_the_duration_cap(clips):
    video = hash_video(clips["original"], VideoSampling(max_seconds=4))
    assert max(f.timestamp for f in video.frames) < 4
    assert video.truncated and video.duration >= 9


def test_broken_and_non_video_files_say_so(clips, tmp_path):
    data = clips["original"].read_bytes()
    truncated = hash_media("v", "video", data[: len(data) // 3], 10**8)
    # A cut-off file keeps what could be hashed, or says why not (an MP4 cut before its
    # index, written last, cannot be opened at all).
    assert truncated.error_reason in ("corrupt", "not_a_video") or "vpdq" in truncated.signals
    for junk in (b"definitely not a video", encode(sample("camera"))):
        result = hash_media("v", "video", junk, 10**8)
        assert result.error_reason == "not_a_video", result
        assert set(result.signals) == {"md5", "sha256"}  # byte signals are kept
    with pytest.raises(MediaError):
        hash_video(tmp_path / "missing.mp4")


def test_a_banked_video_takes_down_its_logo_stamped_copy(clips, hashes):
    entry = BankEntry("tve", "video-1", "vpdq", format_vpdq(hashes["original"]), (), "takedown", "")
    engine = local_engine(Settings(), [entry])
    media = hash_media("m1", "video", clips["logo"].read_bytes(), 10**8)
    assert media.error is None and media.signals["vpdq"]["frames"] >= 8
    event = UploadEvent("e1", "p", "c1", "u1", "2026-11-26T10:00:00Z", None, ())
    decision = engine.decide(event, [media], 1.0, lookups=engine.lookup([[media]]))
    assert decision.verdict == "takedown"
    [evidence] = [e for e in decision.evidence if e.signal_type == "vpdq"]
    assert (evidence.bank, evidence.entry_id) == ("tve", "video-1") and evidence.distance <= 20
    assert "of the bank video's frames found" in evidence.detail
    assert "s here = 0-" in evidence.detail  # where it matches, for the reviewer


def test_a_bank_can_require_a_share_of_the_query_too(hashes):
    """A long upload that contains the whole bank video matches it by default (query share
    0); a bank that sets ``min_query_share`` wants that much of the upload to be the video."""
    padded = (*hashes["original"], *hashes["unrelated"], *hashes["unrelated"])
    entry = BankEntry("tve", "video-1", "vpdq", format_vpdq(hashes["original"]), (), "takedown", "")
    signals = {"vpdq": {"value": format_vpdq(padded)}}
    media = MediaSignals("m1", "video", signals)
    event = UploadEvent("e1", "p", "c1", "u1", "2026-11-26T10:00:00Z", None, ())
    lenient = local_engine(Settings(), [entry])
    decision = lenient.decide(event, [media], 1.0, lookups=lenient.lookup([[media]]))
    assert decision.verdict == "takedown"
    [evidence] = [e for e in decision.evidence if e.signal_type == "vpdq"]
    shares = evidence.parts[0]
    assert shares["bank_share"] == 1.0 and 0.3 <= shares["query_share"] <= 0.4
    assert evidence.parts[1]["bank_from"] == 0.0  # where it matches, as numbers
    strict = local_engine(Settings(thresholds={"tve/vpdq": {"min_query_share": 0.5}}), [entry])
    decision = strict.decide(event, [media], 1.0, lookups=strict.lookup([[media]]))
    assert decision.verdict == "allow"


def test_bank_video_frames_live_in_the_pdq_index_beside_images(hashes, tmp_path):
    """One PDQ index holds images and the unique frames of videos (pointing back to their
    video); each query kind finds only its own entries, and a snapshot restores both."""
    from modstream.bank.bank import Bank

    photo = hash_media("p", "image", encode(sample("rocket")), 10**8).signals["pdq"]["value"]
    bank = Bank()
    bank.apply("tve/pdq/rocket", BankEntry("tve", "rocket", "pdq", photo, (), "takedown", ""))
    video = BankEntry("tve", "video-1", "vpdq", format_vpdq(hashes["original"]), (), "takedown", "")
    bank.apply(video.key, video)
    frames = len({f.pdq_hex for f in hashes["original"]})
    assert bank.index_entries("pdq") == 1 + frames  # the image and every unique frame
    logo = format_vpdq(hashes["logo"])

    def found(b: Bank) -> tuple[list[str], list[str]]:
        images = [m.entry.entry_id for m in b.match("pdq", photo)]
        videos = [m.entry.entry_id for m in b.match("vpdq", logo)]
        return images, videos

    assert found(bank) == (["rocket"], ["video-1"])
    bank.snapshot()(tmp_path / "snap")
    restored = Bank()
    restored.restore(tmp_path / "snap")
    assert found(restored) == (["rocket"], ["video-1"])
    assert restored.index_entries("pdq") == 1 + frames  # still one index for both
    restored.apply(video.key, None)  # a tombstone takes its frames out of the shared index
    assert restored.index_entries("pdq") == 1
    assert found(restored) == (["rocket"], [])
    again = BankEntry("tve", "video-2", "vpdq", video.signal, (), "takedown", "")
    restored.apply(again.key, again)  # new frames get refs after every restored one
    assert found(restored) == (["rocket"], ["video-2"])
