"""One typed settings object, read from ``MODSTREAM_*`` environment variables.

Every knob of the pipeline lives here so that the README can document them in one table.
"""

from __future__ import annotations

import functools
import os
import socket
import ssl
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import orjson

from modstream.contracts import Verdict
from modstream.ingest.trust import platform_topic

if TYPE_CHECKING:
    from modstream.hashing.ocr import OcrPolicy
    from modstream.hashing.video import VideoSampling
    from modstream.ingest.fetch import FetchPolicy

_PREFIX = "MODSTREAM_"
ProcessingGuarantee = Literal["exactly_once", "at_least_once"]


def _default_workers() -> int:
    return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Settings:
    """Runtime configuration. Field ``foo_bar`` is read from ``MODSTREAM_FOO_BAR``."""

    broker: str = "127.0.0.1:9092"
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_ca_file: Path | None = None
    kafka_cert_file: Path | None = None
    kafka_key_file: Path | None = None
    kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    kafka_username: str = ""
    kafka_password: str = field(default="", repr=False)
    kafka_password_file: Path | None = None
    app_id: str = "modstream"
    topic_prefix: str = ""
    platforms: tuple[str, ...] = ()
    partitions: int = 4
    hash_workers: int = field(default_factory=_default_workers)
    batch_size: int = 256
    processing_guarantee: ProcessingGuarantee = "exactly_once"
    instance_id: str = ""
    session_timeout_s: float = 15.0
    drain_timeout_s: float = 10.0
    transaction_timeout_s: float = 10.0
    web_port: int = 6066
    web_host: str = "127.0.0.1"
    log_format: str = "json"
    log_level: str = "INFO"
    data_dir: Path = Path(".modstream")
    # Media
    media_root: Path | None = None
    fetch_allow: tuple[str, ...] = ()
    fetch_max_bytes: int = 20 * 1024 * 1024
    fetch_timeout_s: float = 10.0
    fetch_max_redirects: int = 3
    max_image_pixels: int = 64_000_000
    hash_memory_mb: int = 2048
    video_max_bytes: int = 1024 * 1024 * 1024
    video_fetch_timeout_s: float = 300.0
    video_seconds_per_frame: float = 1.0
    video_max_seconds: float = 1800.0
    video_max_frames: int = 100_000
    video_max_cpu_s: float = 300.0
    max_record_bytes: int = 900_000
    # Matching and policy
    pdq_min_quality: int = 50
    index_layout: str = "fast"
    bank_snapshot_interval_s: float = 300.0
    bank_replay_in_child_above: int = 20_000  # records; 0: always replay in place
    thresholds: dict[str, dict[str, float]] = field(default_factory=dict)
    text_model: Path | None = None
    text_lexicon: Path | None = None
    # Text inside images (hashing/ocr.py), off by default: Tesseract costs ~0.1-1 s per image
    ocr: bool = False
    ocr_languages: str = "eng"
    ocr_timeout_s: float = 10.0
    text_review_score: float = 0.5
    text_takedown_score: float = 0.995
    on_media_error: Verdict = "review"
    repeat_window_s: int = 24 * 3600
    repeat_strikes: int = 3
    max_remembered_strikes: int = 200_000  # per worker: the strike histories' memory bound
    # Flood quarantine (decide/flood.py): per worker
    flood_window_s: float = 60.0
    flood_min_matches: int = 50
    flood_factor: float = 10.0
    flood_baseline_s: float = 3600.0
    # Exchange sync (modstream exchange-sync): its metrics port, first retry delay (doubling
    # up to the exchange's interval), a page's time bound, exchanges synced at once
    exchange_sync_port: int = 6071
    exchange_retry_s: float = 30.0
    exchange_page_timeout_s: float = 300.0
    exchange_concurrency: int = 2
    # HTTP API (modstream serve): API keys (hashed, one JSON object a line), rate per key
    # (per address without keys): a trusted backend's; before a key is found, per address
    api_keys_file: Path | None = None
    api_rate_per_s: float = 1000.0
    api_burst: int = 2000
    api_prekey_rate_per_s: float = 50.0
    api_prekey_burst: int = 100
    api_exchange_files_dir: Path | None = None  # where local_file exchanges made over HTTP live
    api_credentials_dir: Path | None = None  # where credential files named over HTTP live
    api_tls_certfile: Path | None = None  # HTTPS with this certificate chain (PEM) and key
    api_tls_keyfile: Path | None = None
    api_allowed_hosts: tuple[
        str, ...
    ] = ()  # host names served besides loopback and the bind address
    api_hash_jobs_per_caller: int = 2  # fetch-and-hash jobs one key (or address) runs at once
    api_hash_types: str = "banked"  # what /h/hash answers: banked, hma or all (serve.backend)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``MODSTREAM_*`` variables; ``overrides`` win over the environment."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(_PREFIX + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _parse(f.name, str(f.type), raw)
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        self.kafka.validate()
        for platform in self.platforms:
            platform_topic(platform)  # raises on a name that cannot be a topic
        if self.on_media_error not in get_args(Verdict):
            raise ValueError("MODSTREAM_ON_MEDIA_ERROR must be review, allow or takedown")
        if self.index_layout not in ("fast", "compact"):
            raise ValueError("MODSTREAM_INDEX_LAYOUT must be fast or compact")
        if self.processing_guarantee not in get_args(ProcessingGuarantee):
            raise ValueError("MODSTREAM_PROCESSING_GUARANTEE must be exactly_once or at_least_once")
        if not 6 <= self.session_timeout_s <= 300 or not 0 <= self.drain_timeout_s <= 50:
            raise ValueError("MODSTREAM_SESSION_TIMEOUT_S must be 6..300, _DRAIN_TIMEOUT_S 0..50")
        if not 2 <= self.transaction_timeout_s <= 300:
            raise ValueError("MODSTREAM_TRANSACTION_TIMEOUT_S must be 2..300")
        if self.log_format not in ("json", "text"):
            raise ValueError("MODSTREAM_LOG_FORMAT must be json or text")
        if self.video_seconds_per_frame <= 0 or self.video_max_seconds <= 0:
            raise ValueError("MODSTREAM_VIDEO_SECONDS_PER_FRAME and _MAX_SECONDS must be > 0")
        if self.partitions < 1 or self.hash_workers < 1 or self.batch_size < 1:
            raise ValueError("partitions, hash_workers and batch_size must be >= 1")
        if 0 < self.hash_memory_mb < 768:
            raise ValueError("MODSTREAM_HASH_MEMORY_MB must be 0 (no limit) or >= 768")
        if self.video_max_frames < 1 or self.video_max_cpu_s <= 0:
            raise ValueError("MODSTREAM_VIDEO_MAX_FRAMES and _MAX_CPU_S must be > 0")
        if self.flood_window_s <= 0 or self.flood_baseline_s < 0 or self.flood_factor < 0:
            raise ValueError("MODSTREAM_FLOOD_WINDOW_S must be > 0, _BASELINE_S, _FACTOR >= 0")
        if self.max_remembered_strikes < 1:
            raise ValueError("MODSTREAM_MAX_REMEMBERED_STRIKES must be >= 1")
        if self.flood_min_matches < 0:
            raise ValueError("MODSTREAM_FLOOD_MIN_MATCHES must be >= 1, or 0 for no detection")
        if not (self.exchange_retry_s > 0 and self.exchange_page_timeout_s > 0
                and 1 <= self.exchange_concurrency <= 16):  # fmt: skip
            raise ValueError(
                "MODSTREAM_EXCHANGE_RETRY_S and _PAGE_TIMEOUT_S must be > 0, _CONCURRENCY 1..16"
            )
        if min(self.api_rate_per_s, self.api_burst, self.api_prekey_rate_per_s,
               self.api_prekey_burst) <= 0:  # fmt: skip
            raise ValueError("MODSTREAM_API_RATE_PER_S, _BURST, _PREKEY_* must be > 0")
        if self.api_hash_types not in ("banked", "hma", "all"):
            raise ValueError("MODSTREAM_API_HASH_TYPES must be banked, hma or all")
        if not 1 <= self.api_hash_jobs_per_caller <= 64:
            raise ValueError("MODSTREAM_API_HASH_JOBS_PER_CALLER must be 1..64")
        if (self.api_tls_certfile is None) != (self.api_tls_keyfile is None):
            raise ValueError("MODSTREAM_API_TLS_CERTFILE and _KEYFILE go together")
        if not 800_000 <= self.max_record_bytes <= 16 * 1024 * 1024:
            # the floor fits the longest text an event may carry, fully escaped
            raise ValueError("MODSTREAM_MAX_RECORD_BYTES must be 800000 .. 16777216")

    @property
    def group_instance_id(self) -> str:
        """This worker's static group membership id: stable across its restarts."""
        return self.instance_id or f"{self.app_id}-{socket.gethostname()}-{self.web_port}"

    @property
    def transactional_id(self) -> str:
        """The worker's one transactional id: a restart under the same instance id fences its
        former self at once; the app's prefix is what the ACLs grant."""
        return f"{self.app_id}-{self.instance_id}" if self.instance_id else self.group_instance_id

    @property
    def ocr_policy(self) -> OcrPolicy | None:
        """How to read text inside images, or None when OCR is off."""
        from modstream.hashing.ocr import OcrPolicy

        if not self.ocr:
            return None
        return OcrPolicy(languages=self.ocr_languages, timeout_s=self.ocr_timeout_s)

    @property
    def video_sampling(self) -> VideoSampling:
        from modstream.hashing.video import VideoSampling

        return VideoSampling(
            seconds_per_frame=self.video_seconds_per_frame,
            max_seconds=self.video_max_seconds,
            min_quality=self.pdq_min_quality,
            max_pixels=self.max_image_pixels,
            max_frames=self.video_max_frames,
            max_cpu_s=self.video_max_cpu_s,
        )

    @property
    def fetch_policy(self) -> FetchPolicy:
        from modstream.ingest.fetch import FetchPolicy

        return FetchPolicy(
            self.fetch_allow,
            self.fetch_max_bytes,
            self.fetch_timeout_s,
            self.fetch_max_redirects,
            self.video_max_bytes,
            self.video_fetch_timeout_s,
        )

    @property
    def hash_memory_limit(self) -> int | None:
        """Address-space limit of each hashing process, in bytes (None: unlimited)."""
        return self.hash_memory_mb * 1024 * 1024 if self.hash_memory_mb > 0 else None

    def topic(self, name: str) -> str:
        """The Kafka topic name for a logical topic, with the configured prefix."""
        return f"{self.topic_prefix}{name}"

    @functools.cached_property
    def kafka(self) -> KafkaAccess:
        """How every Kafka client of this process reaches and authenticates to the brokers."""
        password = self.kafka_password
        if self.kafka_password_file is not None:
            password = self.kafka_password_file.read_text().strip()
        return KafkaAccess(
            bootstrap=self.bootstrap,
            security_protocol=self.kafka_security_protocol.upper(),
            ca_file=self.kafka_ca_file,
            cert_file=self.kafka_cert_file,
            key_file=self.kafka_key_file,
            sasl_mechanism=self.kafka_sasl_mechanism.upper(),
            username=self.kafka_username,
            password=password,
        )

    @property
    def bootstrap(self) -> str:
        return self.broker.split("://", 1)[-1]


@dataclass(frozen=True)
class KafkaAccess:
    """The brokers' address and this process's credentials: what every Kafka client gets
    (the worker, the bank replica, the CLI, the benchmarks). The password never appears in a
    repr, and so in no log line."""

    bootstrap: str
    security_protocol: str = "PLAINTEXT"
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    sasl_mechanism: str = "SCRAM-SHA-512"
    username: str = ""
    password: str = field(default="", repr=False)

    PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_SSL")
    MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

    def validate(self) -> None:
        if self.security_protocol not in self.PROTOCOLS:
            # SASL_PLAINTEXT is left out on purpose: PLAIN would send the password in clear.
            raise ValueError(
                f"MODSTREAM_KAFKA_SECURITY_PROTOCOL must be one of {', '.join(self.PROTOCOLS)}"
            )
        if self.security_protocol == "SASL_SSL":
            if self.sasl_mechanism not in self.MECHANISMS:
                raise ValueError(
                    f"MODSTREAM_KAFKA_SASL_MECHANISM must be one of {', '.join(self.MECHANISMS)}"
                )
            if not self.username or not self.password:
                raise ValueError(
                    "SASL_SSL needs MODSTREAM_KAFKA_USERNAME and MODSTREAM_KAFKA_PASSWORD "
                    "(or MODSTREAM_KAFKA_PASSWORD_FILE)"
                )
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("MODSTREAM_KAFKA_CERT_FILE and MODSTREAM_KAFKA_KEY_FILE go together")

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.uses_tls:
            return None
        return _ssl_context(self.ca_file, self.cert_file, self.key_file)

    def options(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka's producer, consumer and admin client."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": self.security_protocol,
        }
        if self.uses_tls:
            options["ssl_context"] = self.ssl_context()
        if self.security_protocol == "SASL_SSL":
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.username
            options["sasl_plain_password"] = self.password
        return options


@functools.lru_cache(maxsize=8)
def _ssl_context(ca: Path | None, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    """Verifies the brokers' certificates and host names (against ``ca`` if given, else the
    system's roots), and presents a client certificate if one is configured."""
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    if cert is not None and key is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _parse(name: str, type_name: str, raw: str) -> Any:
    try:
        if type_name == "bool":  # before this, "false" was kept as a (truthy) string
            if raw.strip().lower() not in _TRUE + _FALSE:
                raise ValueError(f"expected one of {', '.join(_TRUE + _FALSE)}")
            return raw.strip().lower() in _TRUE
        if type_name == "int":
            return int(raw)
        if type_name == "float":
            return float(raw)
        if type_name.startswith("tuple"):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        if type_name.startswith("dict"):
            value = orjson.loads(raw)
            if not isinstance(value, dict):
                raise ValueError("expected a JSON object")
            return value
        if "Path" in type_name:
            return Path(raw)
        return raw
    except ValueError as exc:
        raise ValueError(f"{_PREFIX}{name.upper()}={raw!r}: {exc}") from exc
