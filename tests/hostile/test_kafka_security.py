"""Kafka over TLS with authentication, on a second real broker started for these tests.

The broker has only encrypted client listeners: SASL_SSL (SCRAM-SHA-512 and PLAIN users) and
SSL with client certificates required; its certificates are made at test time by
deploy/kafka/make-certs.sh. A worker decides events through it, the CLI publishes and reads
through it, and bad credentials are a clear error, not a hang.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from conftest import Workers, free_ports
from streaming import collect, send, upload

from modstream.demo import encode, sample
from modstream.engine import hash_media
from modstream.localkafka import DEPLOY_DIR, LocalKafka
from modstream.stream.topics import ensure_topics

pytestmark = pytest.mark.kafka

SCRAM_USER, SCRAM_PASSWORD = "modstream-worker", f"scram-{uuid.uuid4().hex}"
PLAIN_USER, PLAIN_PASSWORD = "modstream-reader", f"plain-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory) -> Iterator[tuple[int, Path]]:
    """(SASL_SSL port, certificate folder); mutual TLS listens on the next port."""
    home = tmp_path_factory.mktemp("secure-kafka")
    certs = home / "certs"
    script = DEPLOY_DIR / "make-certs.sh"
    subprocess.run([str(script), str(certs)], check=True, stdout=subprocess.DEVNULL)
    port = free_ports(3)
    broker = LocalKafka.secure(
        home, port, certs, {SCRAM_USER: SCRAM_PASSWORD}, {PLAIN_USER: PLAIN_PASSWORD}
    )
    broker.start()
    try:
        yield port, certs
    finally:
        broker.stop()


def scram_env(port: int, certs: Path, **extra: str) -> dict[str, str]:
    return {
        "MODSTREAM_BROKER": f"127.0.0.1:{port}",
        "MODSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "MODSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "MODSTREAM_KAFKA_CA_FILE": str(certs / "ca.pem"),
        "MODSTREAM_KAFKA_USERNAME": SCRAM_USER,
        "MODSTREAM_KAFKA_PASSWORD": SCRAM_PASSWORD,
        **extra,
    }


def cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "modstream.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


async def test_a_worker_decides_through_sasl_ssl_and_clients_use_every_listener(
    secure_kafka, tmp_path
):
    port, certs = secure_kafka
    run = uuid.uuid4().hex[:8]
    common = {
        "MODSTREAM_TOPIC_PREFIX": f"s{run}.",
        "MODSTREAM_APP_ID": f"modstream-secure-{run}",
        "MODSTREAM_DATA_DIR": str(tmp_path / "data"),
        "MODSTREAM_PARTITIONS": "2",
        "MODSTREAM_HASH_WORKERS": "1",
        "MODSTREAM_LOG_FORMAT": "json",
    }
    password_file = tmp_path / "password"
    password_file.write_text(SCRAM_PASSWORD + "\n")
    env = scram_env(port, certs, **common)
    del env["MODSTREAM_KAFKA_PASSWORD"]
    env["MODSTREAM_KAFKA_PASSWORD_FILE"] = str(password_file)
    workers = Workers(tmp_path, env)
    await ensure_topics(workers.settings)

    # The bank goes in through the CLI over SCRAM.
    photo = encode(sample("rocket"), quality=90)
    pdq = hash_media("m", "image", photo, 10**8).signals["pdq"]["value"]
    bank_file = tmp_path / "bank.csv"
    bank_file.write_text(f"signal_type,signal,entry_id\npdq,{pdq},rocket\n")
    done = cli(env, "bank", "import", str(bank_file), "--bank", "tve")
    assert done.returncode == 0, done.stderr

    proc, web_port = workers.start()
    events = tmp_path / "events.jsonl"
    events.write_bytes(
        b"\n".join(
            upload(event_id, text=text)[1]
            for event_id, text in [("calm", "a walk by the river"), ("more", "hello again")]
        )
    )
    done = cli(env, "produce", str(events))
    assert done.returncode == 0, done.stderr
    inline = [{"media_id": "m1", "kind": "image", "data_b64": base64.b64encode(photo).decode()}]
    await send(workers, "uploads", [upload("banned", media=inline)])

    # Decisions read back over mutual TLS (the SSL listener, a client certificate).
    mtls = Workers(
        tmp_path,
        {
            **common,
            "MODSTREAM_BROKER": f"127.0.0.1:{port + 1}",
            "MODSTREAM_KAFKA_SECURITY_PROTOCOL": "SSL",
            "MODSTREAM_KAFKA_CA_FILE": str(certs / "ca.pem"),
            "MODSTREAM_KAFKA_CERT_FILE": str(certs / "client.pem"),
            "MODSTREAM_KAFKA_KEY_FILE": str(certs / "client.key"),
        },
    )
    decisions = await collect(mtls, "decisions", {"calm", "more", "banned"}, timeout=60)
    assert {k: v[0]["verdict"] for k, v in decisions.items()} == {
        "calm": "allow",
        "more": "allow",
        "banned": "takedown",
    }

    # And by a PLAIN user through the CLI.
    plain = {
        **scram_env(port, certs, **common),
        "MODSTREAM_KAFKA_SASL_MECHANISM": "PLAIN",
        "MODSTREAM_KAFKA_USERNAME": PLAIN_USER,
        "MODSTREAM_KAFKA_PASSWORD": PLAIN_PASSWORD,
    }
    done = cli(plain, "tail", "takedowns", "--max", "1", "--timeout", "20")
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout.splitlines()[0])["value"]["event_id"] == "banned"

    assert SCRAM_PASSWORD not in workers.log(web_port)
    workers.stop_all()
    assert proc.returncode == 0


@pytest.mark.parametrize("command", [["worker"], ["tail", "decisions", "--max", "1"]])
def test_a_wrong_password_is_a_clear_error_not_a_hang(secure_kafka, command):
    port, certs = secure_kafka
    wrong = f"wrong-{uuid.uuid4().hex}"
    env = scram_env(port, certs, MODSTREAM_KAFKA_PASSWORD=wrong)
    done = cli(env, *command, timeout=60)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("modstream: error: cannot reach Kafka")
    assert "invalid credentials" in last
    assert wrong not in done.stderr + done.stdout


def test_a_client_without_a_certificate_is_refused_by_the_tls_listener(secure_kafka):
    port, certs = secure_kafka
    env = {
        "MODSTREAM_BROKER": f"127.0.0.1:{port + 1}",
        "MODSTREAM_KAFKA_SECURITY_PROTOCOL": "SSL",
        "MODSTREAM_KAFKA_CA_FILE": str(certs / "ca.pem"),
    }
    done = cli(env, "topics")
    assert done.returncode == 2
    assert done.stderr.startswith("modstream: error: cannot reach Kafka")


def test_plaintext_clients_get_nothing_from_the_secure_broker(secure_kafka):
    port, _ = secure_kafka
    done = cli({"MODSTREAM_BROKER": f"127.0.0.1:{port}"}, "topics")
    assert done.returncode == 2


def test_the_settings_refuse_half_configured_security():
    from modstream.settings import Settings

    with pytest.raises(ValueError, match="USERNAME"):
        Settings.from_env({"MODSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})
    with pytest.raises(ValueError, match="must be one of"):
        Settings.from_env({"MODSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"})
    with pytest.raises(ValueError, match="go together"):
        Settings.from_env({"MODSTREAM_KAFKA_CERT_FILE": "/x.pem"})
    settings = Settings.from_env(
        {"MODSTREAM_KAFKA_PASSWORD": "hunter2", "MODSTREAM_KAFKA_USERNAME": "u"}
    )
    assert "hunter2" not in repr(settings) and "hunter2" not in repr(settings.kafka)
