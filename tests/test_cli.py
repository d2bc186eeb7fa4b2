"""The CLI without a broker: hash, scan, and one-line errors."""

import subprocess
import sys

import orjson

from modstream.demo import encode, resized, sample
from modstream.engine import hash_media


def run(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "modstream.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_hash_prints_signals_as_json_lines(tmp_path):
    photo = tmp_path / "a.jpg"
    photo.write_bytes(encode(sample("astronaut")))
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"nope")
    result = run("hash", str(photo), str(junk))
    assert result.returncode == 0, result.stderr
    first, second = (orjson.loads(line) for line in result.stdout.splitlines())
    assert first["signals"]["pdq"]["quality"] >= 50 and first["error"] is None
    assert second["error_reason"] == "not_an_image" and "md5" in second["signals"]


def test_scan_decides_files_and_texts_against_a_bank_file(tmp_path):
    original = encode(sample("coffee"), quality=95)
    pdq = hash_media("o", "image", original, 10**8).signals["pdq"]["value"]
    bank = tmp_path / "bank.csv"
    bank.write_text(
        f"signal_type,signal,entry_id,labels\npdq,{pdq},coffee,demo;tve\n"
        "text,join the caravan now brothers,stmt-1,statement\n"
    )
    copy = tmp_path / "copy.jpg"
    copy.write_bytes(encode(resized(sample("coffee"), 0.5), quality=60))
    other = tmp_path / "other.jpg"
    other.write_bytes(encode(sample("camera")))
    result = run(
        "scan",
        str(copy),
        str(other),
        "--bank",
        str(bank),
        "--bank-name",
        "tve",
        "--text",
        "Join the caravan NOW, brothers!",
    )
    assert result.returncode == 0, result.stderr
    copy_d, other_d, text_d = (orjson.loads(line) for line in result.stdout.splitlines())
    assert copy_d["verdict"] == "takedown"
    assert copy_d["evidence"][0]["entry_id"] == "coffee"
    assert copy_d["evidence"][0]["labels"] == ["demo", "tve"]
    assert other_d["verdict"] == "allow"
    assert text_d["verdict"] == "takedown" and text_d["evidence"][0]["kind"] == "text_match"


def test_errors_are_one_clear_line(tmp_path):
    bank = tmp_path / "bank.csv"
    bank.write_text("signal_type,signal\npdq,not-hex\n")
    result = run("scan", "--bank", str(bank), "--text", "x")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "bank.csv:2" in result.stderr and "pdq" in result.stderr
    bad_env = run("hash", "x", env={"MODSTREAM_PARTITIONS": "many", "PATH": ""})
    assert bad_env.returncode == 2 and "MODSTREAM_PARTITIONS" in bad_env.stderr


def test_video_hashes_export_as_vpdq_files_that_import_as_a_bank(tmp_path):
    """`hash --vpdq` writes Meta's vPDQ format; a .vpdq file is a bank of one video, and
    `scan` takes down a logo-stamped copy of that video."""
    import videos

    scenes = ["astronaut", "coffee", "immunohistochemistry", "chelsea"]
    original = videos.clip(tmp_path / "original.mp4", scenes, fps=15, crf=23)
    copy = videos.clip(tmp_path / "copy.mp4", scenes, fps=15, crf=28, edit=videos.logo)
    exported = run("hash", str(original), "--vpdq", str(tmp_path / "bank"))
    assert exported.returncode == 0, exported.stderr
    [line] = exported.stdout.splitlines()
    assert orjson.loads(line)["signals"]["vpdq"]["frames"] >= 6
    vpdq_file = tmp_path / "bank" / "original.vpdq"
    first = vpdq_file.read_text().splitlines()[0].split(",")
    assert len(first) == 4 and len(first[2]) == 64
    result = run("scan", str(copy), "--bank", str(vpdq_file), "--bank-name", "tve")
    assert result.returncode == 0, result.stderr
    decision = orjson.loads(result.stdout)
    assert decision["verdict"] == "takedown"
    assert decision["evidence"][0]["signal_type"] == "vpdq"
    assert decision["evidence"][0]["entry_id"] == "original"
