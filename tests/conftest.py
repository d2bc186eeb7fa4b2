"""Shared fixtures: real photos, a real local Kafka broker, real worker processes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from modstream.settings import Settings

BROKER = os.environ.get("MODSTREAM_BROKER", "127.0.0.1:9092")


FAULTS = Path(__file__).parent / "faults"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that needs a broker is in the ``kafka`` group, marked or not, so that
    ``make test-unit`` (``-m "not kafka"``) never starts one (nor needs Java): by fixture,
    by folder (the fault suite), by file name (``*_kafka.py``), or by starting a broker of
    its own (a module that imports ``LocalKafka``)."""
    for item in items:
        module = getattr(item, "module", None)
        if (
            {"kafka", "workers", "secure_kafka"} & set(getattr(item, "fixturenames", ()))
            or FAULTS in item.path.parents
            or item.path.name.endswith("_kafka.py")
            or (module is not None and "LocalKafka" in vars(module))
        ):
            item.add_marker(pytest.mark.kafka)


@pytest.fixture(scope="session")
def kafka() -> str:
    """A real broker: the local one, started if it is not running yet."""
    from modstream.localkafka import LocalKafka

    LocalKafka.from_env(BROKER).start()
    return BROKER


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_ports(count: int) -> int:
    """A port from which ``count`` consecutive ports are free."""
    for _ in range(50):
        base = free_port()
        if base + count < 65536 and all(_free(base + i) for i in range(1, count)):
            return base
    raise RuntimeError("no run of free ports")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Workers:
    """Starts pipeline workers as real processes on an isolated set of topics."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp = tmp
        self.env = env
        self.procs: list[tuple[subprocess.Popen, int]] = []
        self.settings = Settings.from_env(env)

    def worker_env(self, **extra_env: str) -> dict[str, str]:
        """The environment of this group's workers and CLI commands."""
        return {**os.environ, **self.env, **extra_env}

    def start(self, **extra_env: str) -> tuple[subprocess.Popen, int]:
        port = free_port()
        env = self.worker_env(**extra_env, MODSTREAM_WEB_PORT=str(port))
        log = open(self.tmp / f"worker-{port}.log", "ab")  # noqa: SIM115 - lives with the process
        proc = subprocess.Popen(
            [sys.executable, "-m", "modstream.cli", "worker"], env=env, stdout=log, stderr=log
        )
        self.procs.append((proc, port))
        self.wait_ready(proc, port)
        return proc, port

    def wait_ready(self, proc: subprocess.Popen, port: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"worker died: {self.log(port)[-3000:]}")
            if self.status(port).get("ready"):
                return
            time.sleep(0.3)
        raise AssertionError(f"worker not ready: {self.log(port)[-3000:]}")

    async def wait_split(self, topic: str, timeout: float = 60) -> None:
        """Wait until every worker owns some partition of ``topic`` and together they own all."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            owned = [
                {a for a in self.status(port).get("assigned", []) if a.rsplit(":", 1)[0] == topic}
                for _, port in self.procs
            ]
            union = set().union(*owned)
            if all(owned) and sum(map(len, owned)) == len(union) == self.settings.partitions:
                return
            await asyncio.sleep(0.5)
        raise AssertionError(f"partitions of {topic} not split over the workers: {owned}")

    def status(self, port: int) -> dict:
        """The worker's /ready body; empty while it does not answer or is not ready (503)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as r:
                return orjson.loads(r.read())
        except OSError:
            return {}

    def log(self, port: int) -> str:
        return (self.tmp / f"worker-{port}.log").read_text(errors="replace")

    def metrics(self, port: int) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return r.read().decode()

    def stop_all(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def workers(kafka: str, tmp_path: Path) -> Iterator[Workers]:
    """Workers on topics and a consumer group of their own, so tests never see each other."""
    run = uuid.uuid4().hex[:8]
    media_root = tmp_path / "media"
    media_root.mkdir()
    env = {
        "MODSTREAM_BROKER": kafka,
        "MODSTREAM_TOPIC_PREFIX": f"t{run}.",
        "MODSTREAM_APP_ID": f"modstream-test-{run}",
        "MODSTREAM_DATA_DIR": str(tmp_path / "data"),
        "MODSTREAM_PARTITIONS": "2",
        "MODSTREAM_HASH_WORKERS": "1",
        "MODSTREAM_FETCH_ALLOW": "127.0.0.1/32",
        "MODSTREAM_MEDIA_ROOT": str(media_root),
        "MODSTREAM_LOG_FORMAT": "json",
        # Tests send one banked item hundreds of times a second: flood quarantine would turn
        # its takedowns into reviews. The tests of the quarantine turn it on.
        "MODSTREAM_FLOOD_MIN_MATCHES": "0",
    }
    group = Workers(tmp_path, env)
    from modstream.stream.topics import delete_topics, ensure_topics

    asyncio.run(ensure_topics(group.settings))
    yield group
    group.stop_all()
    asyncio.run(delete_topics(group.settings))


def decode_json(value: bytes | None) -> dict:
    assert value is not None
    return orjson.loads(value)


class SyncServices:
    """``modstream exchange-sync`` processes on the test's topics."""

    def __init__(self, workers, tmp: Path) -> None:
        self.workers, self.tmp = workers, tmp
        self.procs: dict[int, subprocess.Popen] = {}

    def start(self) -> int:
        port = free_port()
        env = self.workers.worker_env(
            MODSTREAM_EXCHANGE_SYNC_PORT=str(port),
            MODSTREAM_EXCHANGE_RETRY_S="1",
            MODSTREAM_SESSION_TIMEOUT_S="6",
        )
        log = open(self.tmp / f"sync-{port}.log", "ab")  # noqa: SIM115 - lives with the process
        self.procs[port] = subprocess.Popen(
            [sys.executable, "-m", "modstream.cli", "exchange-sync"],
            env=env,
            stdout=log,
            stderr=log,
        )
        return port

    def role(self, port: int) -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as r:
                return orjson.loads(r.read())["role"]
        except OSError:
            return ""

    def wait_active(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for port, proc in self.procs.items():
                assert proc.poll() is None, self.log(port)[-3000:]
                if self.role(port) == "active":
                    return port
            time.sleep(0.3)
        raise AssertionError("no exchange sync became active")

    def metrics(self, port: int) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return r.read().decode()

    def log(self, port: int) -> str:
        return (self.tmp / f"sync-{port}.log").read_text(errors="replace")

    def kill(self, port: int) -> None:
        self.procs[port].kill()
        self.procs[port].wait()
        del self.procs[port]

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def sync_services(workers, tmp_path):
    services = SyncServices(workers, tmp_path)
    yield services
    services.stop_all()


def cli(workers, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "modstream.cli", *args],
        env=workers.worker_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def add_local_exchange(workers, path: Path, bank: str = "shared", name: str = "partner") -> None:
    """A python-threatexchange ``local_file`` exchange feeding ``bank`` from ``path``."""
    cli(workers, "exchange", "add", name, "--api", "local_file", "--bank", bank,
        "--set", f"path={path}")  # fmt: skip


def start_server(workers, tmp_path, ssl_context=None, **env: str):
    """A ``modstream serve`` process, once its bank is loaded; with ``ssl_context``, over
    HTTPS (``env`` then names the certificate)."""
    port = free_port()
    log = open(tmp_path / f"serve-{port}.log", "ab")  # noqa: SIM115 - lives with the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "modstream.cli", "serve", "--port", str(port)],
        env=workers.worker_env(MODSTREAM_HASH_WORKERS="1", **env), stdout=log, stderr=log,
    )  # fmt: skip
    url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, (tmp_path / f"serve-{port}.log").read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"{url}/status", timeout=2, context=ssl_context) as answer:
                if answer.status == 200:
                    break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        log_text = (tmp_path / f"serve-{port}.log").read_text()
        raise AssertionError(f"serve not up: {log_text[-3000:]}")
    return url, proc
