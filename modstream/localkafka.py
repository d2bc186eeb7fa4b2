"""A real Apache Kafka 4.x broker for local runs and tests, from Maven Central jars.

``start`` resolves the jars once with Maven (``deploy/kafka/pom.xml``) into a cache, formats
KRaft storage once, launches ``kafka.Kafka`` as one broker+controller and waits until it
answers. It is idempotent: a broker that is already up is left alone. ``stop`` ends it by PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEPLOY_DIR = Path(__file__).resolve().parent.parent / "deploy" / "kafka"


class KafkaError(RuntimeError):
    """The local broker could not be set up, started or stopped."""


@dataclass(frozen=True)
class LocalKafka:
    home: Path
    port: int = 9092
    heap: str = "512m"
    #: Where the jars are (default: ``home/libs``); brokers with other homes can share them.
    libs_dir: Path | None = None
    #: The server.properties template in deploy/kafka, and values for it beyond the ports.
    template: str = "server.properties"
    values: Mapping[str, str] = field(default_factory=dict)
    #: Extra arguments to the storage format (e.g. ``--add-scram``: users exist at start).
    format_args: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, bootstrap: str) -> LocalKafka:
        home = Path(os.environ.get("MODSTREAM_KAFKA_HOME", _default_home()))
        return cls(home=home, port=int(bootstrap.rsplit(":", 1)[-1]))

    @classmethod
    def secure(
        cls,
        home: Path,
        port: int,
        certs: Path,
        scram_users: Mapping[str, str],
        plain_users: Mapping[str, str],
    ) -> LocalKafka:
        """A broker with only encrypted, authenticated client listeners (secure.properties):
        SASL_SSL on ``port`` (SCRAM-SHA-512 and PLAIN users), mutual TLS on ``port + 1``;
        ``certs`` as written by deploy/kafka/make-certs.sh."""
        plain = " ".join(f'user_{name}="{password}"' for name, password in plain_users.items())
        scram = [
            f"--add-scram=SCRAM-SHA-512=[name={name},password={password}]"
            for name, password in scram_users.items()
        ]
        return cls(
            home=home,
            port=port,
            libs_dir=Path(os.environ.get("MODSTREAM_KAFKA_HOME", _default_home())) / "libs",
            template="secure.properties",
            values={
                "ssl_port": str(port + 1),
                "controller_port": str(port + 2),
                "keystore": str(certs / "broker-keystore.pem"),
                "truststore": str(certs / "ca.pem"),
                "plain_users": plain,
            },
            format_args=tuple(scram),
        )

    @property
    def libs(self) -> Path:
        return self.libs_dir or self.home / "libs"

    @property
    def pid_file(self) -> Path:
        return self.home / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "broker.log"

    @property
    def data_dir(self) -> Path:
        return self.home / f"kraft-{self.port}"

    def status(self) -> tuple[bool, int | None]:
        """(answering on the port, PID of the broker we started if it is alive)."""
        return _port_open(self.port), self._live_pid()

    def start(self, timeout_s: float = 90.0) -> str:
        answering, pid = self.status()
        if answering:
            return f"Kafka already running on 127.0.0.1:{self.port}" + (
                f" (pid {pid})" if pid else ""
            )
        if pid is not None:
            raise KafkaError(f"broker pid {pid} is alive but not answering; see {self.log_file}")
        self.home.mkdir(parents=True, exist_ok=True)
        self._resolve_jars()
        properties = self._write_properties()
        self._format(properties)
        log_start = self.log_file.stat().st_size if self.log_file.exists() else 0
        with open(self.log_file, "ab") as log:
            process = subprocess.Popen(
                [*self._java(), "kafka.Kafka", str(properties)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(str(process.pid))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise KafkaError(f"broker exited with {process.returncode}; see {self.log_file}")
            if _port_open(self.port) and _broker_ready(self.log_file, log_start):
                return f"Kafka started on 127.0.0.1:{self.port} (pid {process.pid})"
            time.sleep(0.3)
        raise KafkaError(f"broker did not answer within {timeout_s:g}s; see {self.log_file}")

    def stop(self, timeout_s: float = 30.0) -> str:
        pid = self._live_pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return "Kafka is not running (no broker started by modstream)"
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return f"Kafka stopped (pid {pid})"

    def _resolve_jars(self) -> None:
        if any(self.libs.glob("kafka_2.13-*.jar")):
            return
        if shutil.which("mvn") is None:
            raise KafkaError("Maven (mvn) is needed once to fetch the Kafka jars")
        self.home.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(DEPLOY_DIR / "pom.xml"),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={self.libs}",
                "-DincludeScope=runtime",
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise KafkaError(f"mvn could not resolve Kafka:\n{result.stdout}{result.stderr}")

    def _write_properties(self) -> Path:
        template = (DEPLOY_DIR / self.template).read_text()
        values = {"controller_port": str(self.port + 1), **self.values}
        text = template.format(port=self.port, log_dirs=self.data_dir, **values)
        path = self.home / f"server-{self.port}.properties"
        path.write_text(text)
        return path

    def _format(self, properties: Path) -> None:
        if (self.data_dir / "meta.properties").exists():
            return
        cluster_id = (
            subprocess.run(
                [*self._java(), "kafka.tools.StorageTool", "random-uuid"],
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        result = subprocess.run(
            [
                *self._java(),
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(properties),
                "--ignore-formatted",
                *self.format_args,
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise KafkaError(f"formatting KRaft storage failed:\n{result.stdout}{result.stderr}")

    def _java(self) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise KafkaError("Java 17+ is needed to run the local Kafka broker")
        return [
            java,
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            "-server",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.home}",
            f"-Dlog4j2.configurationFile={DEPLOY_DIR / 'log4j2.properties'}",
            "-cp",
            f"{self.libs}/*",
        ]

    def _live_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _alive(pid) else None


def _default_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "modstream" / "kafka"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie left by our own Popen counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (FileNotFoundError, IndexError):
        return True


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _broker_ready(log_file: Path, since: int) -> bool:
    """The broker logs this line once it serves requests (not just listens)."""
    try:
        with open(log_file, "rb") as log:
            log.seek(since)
            return b"Kafka Server started" in log.read()
    except FileNotFoundError:
        return False
