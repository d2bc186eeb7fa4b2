"""Every command, used wrongly, answers with one line on stderr and exit status 2: bad
arguments, missing files, a broker that is down, a topic that does not exist."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import free_port

MISSING = "/nonexistent/modstream-test-file"

BAD_ARGUMENTS = [
    [],
    ["nocommand"],
    ["kafka", "bogus"],
    ["worker", "--web-port", "abc"],
    ["bank"],
    ["bank", "import", "x.csv"],
    ["bank", "import", "x.csv", "--bank", "b", "--action-hint", "delete"],
    ["bank", "remove", "--bank", "b"],
    ["produce"],
    ["tail"],
    ["tail", "decisions", "--max", "many"],
    ["hash"],
    ["scan", "a.jpg"],
    ["demo", "--nope"],
    ["topics", "extra"],
    ["text", "train", "data.jsonl"],
    ["text", "eval"],
]

MISSING_FILES = [
    ["bank", "import", MISSING, "--bank", "b"],
    ["produce", MISSING],
    ["hash", MISSING],
    ["scan", "--bank", MISSING, "--text", "hi"],
    ["text", "train", MISSING, "--out", "/tmp/model.json"],
    ["text", "eval", MISSING],
]

NEEDS_THE_BROKER = [
    ["worker"],
    ["topics"],
    ["tail", "decisions", "--max", "1"],
    ["bank", "remove", "--bank", "b", "--signal-type", "pdq", "x"],
    ["demo", "--external"],
]


def run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "modstream.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def assert_one_line_error(done: subprocess.CompletedProcess) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("modstream") and ": error: " in lines[0]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("args", BAD_ARGUMENTS, ids=" ".join)
def test_bad_arguments(args):
    assert_one_line_error(run(args))


@pytest.mark.parametrize("args", MISSING_FILES, ids=" ".join)
def test_missing_files(args):
    done = run(args)
    assert_one_line_error(done)
    assert "No such file" in done.stderr


@pytest.mark.parametrize("args", NEEDS_THE_BROKER, ids=" ".join)
def test_a_broker_that_is_down(args):
    done = run(args, MODSTREAM_BROKER=f"127.0.0.1:{free_port()}")
    assert_one_line_error(done)
    assert "Kafka" in done.stderr


@pytest.mark.kafka
def test_a_topic_that_does_not_exist(kafka):
    done = run(["tail", "no-such-topic-here", "--max", "1"], MODSTREAM_BROKER=kafka)
    assert_one_line_error(done)
    assert "topic 'no-such-topic-here' does not exist" in done.stderr


def test_settings_errors_are_one_line_too():
    done = run(["topics"], MODSTREAM_PARTITIONS="many")
    assert_one_line_error(done)
    assert "MODSTREAM_PARTITIONS" in done.stderr
