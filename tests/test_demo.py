"""`make run`'s demo on the real broker, as a user runs it, twice (the second run must not
be changed by the first one's reviews)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

import pytest
from conftest import free_port

from modstream.settings import Settings
from modstream.stream.topics import delete_topics

pytestmark = pytest.mark.kafka


def test_the_demo_decides_everything_as_expected_twice(kafka, tmp_path):
    run = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "MODSTREAM_BROKER": kafka,
        "MODSTREAM_TOPIC_PREFIX": f"d{run}.",
        "MODSTREAM_APP_ID": f"modstream-demo-{run}",
        "MODSTREAM_DATA_DIR": str(tmp_path / "data"),
        "MODSTREAM_WEB_PORT": str(free_port()),
        "MODSTREAM_HASH_WORKERS": "1",
    }
    try:
        for _ in range(2):
            demo = subprocess.run(
                [sys.executable, "-m", "modstream.cli", "demo"],
                env=env, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
            assert "17/17 decisions as expected." in demo.stdout
            assert "TAKEDOWN post-glorifying-post-again" in demo.stdout
    finally:
        asyncio.run(delete_topics(Settings.from_env(env)))
