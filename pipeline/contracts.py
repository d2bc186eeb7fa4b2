"""The records modstream reads and writes on Kafka, with strict validation.

Every record carries ``schema: 1``. Records are plain dataclasses serialized with orjson;
parsing rejects unknown fields, wrong types and missing required fields with a message that
names the field, so a dead letter says exactly what was wrong.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from pipeline.text.scorer import TextScore

SCHEMA_VERSION = 1
MEDIA_KINDS = ("image", "video")
VERDICTS = ("allow", "review", "takedown")
_DECISION_NAMESPACE = uuid.UUID("6f1c7a52-3b8e-4c4e-9d7a-6d6f64737472")


class ContractError(ValueError):
    """A record does not match its contract; the message names the offending field."""


def dumps(record: Any) -> bytes:
    """Serialize a contract dataclass (or plain dict) to JSON bytes (orjson reads dataclasses)."""
    return orjson.dumps(record)


def _loads_object(raw: bytes | str, what: str) -> dict[str, Any]:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ContractError(f"{what}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ContractError(f"{what}: expected a JSON object, got {type(value).__name__}")
    return value


class _Fields:
    """Pulls typed fields out of a dict and reports the first problem by path."""

    def __init__(self, data: dict[str, Any], path: str, allowed: set[str]) -> None:
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ContractError(f"{path}: unknown field(s) {', '.join(unknown)}")
        self.data = data
        self.path = path

    def get(self, name: str, kind: type | tuple[type, ...], *, required: bool = True) -> Any:
        if name not in self.data or self.data[name] is None:
            if required:
                raise ContractError(f"{self.path}.{name}: required")
            return None
        value = self.data[name]
        if isinstance(value, bool) and kind is not bool and bool not in _as_tuple(kind):
            raise ContractError(f"{self.path}.{name}: expected {_kind_name(kind)}, got bool")
        if not isinstance(value, kind):
            raise ContractError(
                f"{self.path}.{name}: expected {_kind_name(kind)}, got {type(value).__name__}"
            )
        return value

    def text(self, name: str, *, required: bool = True, max_len: int = 256) -> str | None:
        value = self.get(name, str, required=required)
        if value is None:
            return None
        if required and not value.strip():
            raise ContractError(f"{self.path}.{name}: must not be empty")
        if len(value) > max_len:
            raise ContractError(f"{self.path}.{name}: longer than {max_len} characters")
        return value

    def schema(self) -> None:
        version = self.get("schema", int)
        if version != SCHEMA_VERSION:
            raise ContractError(f"{self.path}.schema: unsupported version {version}")


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in _as_tuple(kind))


@dataclass(frozen=True)
class MediaRef:
    """Where one piece of media is: exactly one of ``url``, ``data_b64`` or ``path``."""

    media_id: str
    kind: str
    url: str | None = None
    data_b64: str | None = None
    path: str | None = None
    mime: str | None = None

    @classmethod
    def from_dict(cls, data: Any, path: str) -> MediaRef:
        if not isinstance(data, dict):
            raise ContractError(f"{path}: expected an object")
        f = _Fields(data, path, {"media_id", "kind", "url", "data_b64", "path", "mime"})
        ref = cls(
            media_id=f.text("media_id"),
            kind=f.text("kind"),
            url=f.text("url", required=False, max_len=4096),
            data_b64=f.get("data_b64", str, required=False),
            path=f.text("path", required=False, max_len=4096),
            mime=f.text("mime", required=False),
        )
        if ref.kind not in MEDIA_KINDS:
            raise ContractError(f"{path}.kind: must be one of {', '.join(MEDIA_KINDS)}")
        sources = [s for s in ("url", "data_b64", "path") if getattr(ref, s) is not None]
        if len(sources) != 1:
            raise ContractError(f"{path}: exactly one of url, data_b64, path is required")
        if ref.url is not None and not ref.url.lower().startswith(("http://", "https://")):
            raise ContractError(f"{path}.url: only http and https URLs are accepted")
        if ref.data_b64 is not None:
            try:
                base64.b64decode(ref.data_b64, validate=True)
            except (binascii.Error, ValueError):
                raise ContractError(f"{path}.data_b64: not valid base64") from None
        return ref

    @property
    def source(self) -> str:
        return "url" if self.url else "inline" if self.data_b64 is not None else "path"


@dataclass(frozen=True)
class UploadEvent:
    """A platform's upload: text and/or media by one uploader. Kafka key: ``content_id``."""

    event_id: str
    platform: str
    content_id: str
    uploader_id: str
    created_at: str
    text: str | None = None
    media: tuple[MediaRef, ...] = ()
    schema: int = SCHEMA_VERSION

    @classmethod
    def parse(cls, raw: bytes | str) -> UploadEvent:
        """Parse and validate JSON bytes; raises ContractError naming the bad field."""
        return cls.from_dict(_loads_object(raw, "upload"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UploadEvent:
        keys = {"schema", "event_id", "platform", "content_id", "uploader_id", "created_at"}
        f = _Fields(data, "upload", keys | {"text", "media"})
        f.schema()
        media_raw = f.get("media", list, required=False) or []
        if len(media_raw) > 64:
            raise ContractError("upload.media: more than 64 items")
        media = tuple(MediaRef.from_dict(m, f"upload.media[{i}]") for i, m in enumerate(media_raw))
        ids = [m.media_id for m in media]
        if len(set(ids)) != len(ids):
            raise ContractError("upload.media: media_id values must be unique")
        event = cls(
            event_id=f.text("event_id"),
            platform=f.text("platform"),
            content_id=f.text("content_id"),
            uploader_id=f.text("uploader_id"),
            created_at=f.text("created_at"),
            text=f.text("text", required=False, max_len=100_000),
            media=media,
        )
        if event.text is None and not event.media:
            raise ContractError("upload: needs text or media")
        parse_time(event.created_at, "upload.created_at")
        return event

    @classmethod
    def trusted(cls, data: dict[str, Any]) -> UploadEvent:
        """Rebuild an event this pipeline serialized itself, validated when it came in."""
        media = tuple(MediaRef(**m) for m in data["media"])
        return cls(**{**data, "media": media})

    @property
    def uploader_key(self) -> str:
        """The key that co-partitions an uploader's events (for per-uploader state)."""
        return f"{self.platform}/{self.uploader_id}"


@dataclass(frozen=True)
class BankEntry:
    """One known item in a bank. Kafka key: ``bank/signal_type/entry_id`` (compacted)."""

    bank: str
    entry_id: str
    signal_type: str
    signal: str
    labels: tuple[str, ...] = ()
    action_hint: str = "takedown"
    added_at: str = ""
    schema: int = SCHEMA_VERSION

    @property
    def key(self) -> str:
        return bank_key(self.bank, self.signal_type, self.entry_id)

    @classmethod
    def parse(cls, raw: bytes | str) -> BankEntry:
        return cls.from_dict(_loads_object(raw, "bank entry"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BankEntry:
        keys = {"schema", "bank", "entry_id", "signal_type", "signal", "labels"}
        f = _Fields(data, "bank_entry", keys | {"action_hint", "added_at"})
        f.schema()
        labels = f.get("labels", list, required=False) or []
        if not all(isinstance(label, str) for label in labels):
            raise ContractError("bank_entry.labels: expected a list of strings")
        entry = cls(
            bank=f.text("bank"),
            entry_id=f.text("entry_id"),
            signal_type=f.text("signal_type"),
            signal=f.text("signal", max_len=100_000),
            labels=tuple(labels),
            action_hint=f.text("action_hint", required=False) or "takedown",
            added_at=f.text("added_at", required=False) or "",
        )
        if entry.action_hint not in ("takedown", "review"):
            raise ContractError("bank_entry.action_hint: must be takedown or review")
        if "/" in entry.bank or "/" in entry.signal_type:
            raise ContractError("bank_entry: bank and signal_type must not contain '/'")
        return entry


def parse_time(value: str, path: str = "time") -> float:
    """ISO 8601 with a UTC offset (``Z`` accepted) to epoch seconds."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ContractError(f"{path}: not an ISO 8601 time: {value!r}") from None
    if moment.tzinfo is None:
        raise ContractError(f"{path}: needs a UTC offset, e.g. 2026-01-01T00:00:00Z")
    return moment.timestamp()


def bank_key(bank: str, signal_type: str, entry_id: str) -> str:
    return f"{bank}/{signal_type}/{entry_id}"


def parse_bank_key(key: bytes | str) -> tuple[str, str, str]:
    """Split ``bank/signal_type/entry_id`` (entry ids may contain '/')."""
    text = key.decode() if isinstance(key, bytes) else key
    parts = text.split("/", 2)
    if len(parts) != 3 or not all(parts):
        raise ContractError(f"bank key {text!r}: expected bank/signal_type/entry_id")
    return parts[0], parts[1], parts[2]


@dataclass(frozen=True)
class MediaSignals:
    """What the hash stage learned about one piece of media: signals, or why it failed."""

    media_id: str
    kind: str
    signals: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None
    error_reason: str | None = None


@dataclass(frozen=True)
class HashedUpload:
    """One event as the hash stage hands it to the decide stage: media signals, text score."""

    event: UploadEvent
    media: tuple[MediaSignals, ...]
    received_at: float
    text_score: TextScore | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HashedUpload:
        score = data.get("text_score")
        return cls(
            event=UploadEvent.trusted(data["event"]),
            media=tuple(MediaSignals(**m) for m in data["media"]),
            received_at=data["received_at"],
            text_score=TextScore(score["score"], tuple(score["parts"])) if score else None,
        )


@dataclass(frozen=True)
class HashedBatch:
    """Internal record on ``uploads.hashed``: the events of one hash-stage batch whose uploaders
    fall in one partition. One record per partition and batch, not per event, so the decide
    stage pays Faust's per-record cost once per batch."""

    uploads: tuple[HashedUpload, ...]
    schema: int = SCHEMA_VERSION

    @classmethod
    def parse(cls, raw: bytes) -> HashedBatch:
        data = _loads_object(raw, "hashed batch")
        return cls(uploads=tuple(HashedUpload.from_dict(u) for u in data["uploads"]))


@dataclass(frozen=True)
class Evidence:
    """One reason behind a verdict. Fields that do not apply to ``kind`` stay None."""

    kind: str  # hash_match | text_match | text_score | media_error | repeat_uploader
    action: str  # the verdict this evidence alone asks for
    media_id: str | None = None
    signal_type: str | None = None
    bank: str | None = None
    entry_id: str | None = None
    labels: tuple[str, ...] = ()
    distance: int | None = None
    threshold: float | None = None
    score: float | None = None
    parts: tuple[dict[str, Any], ...] = ()
    detail: str | None = None


@dataclass(frozen=True)
class Decision:
    """The verdict for one upload with everything that led to it."""

    decision_id: str
    event_id: str
    content_id: str
    platform: str
    uploader_id: str
    verdict: str
    evidence: tuple[Evidence, ...]
    policy_version: str
    decided_at: float
    media_errors: tuple[dict[str, str], ...] = ()
    schema: int = SCHEMA_VERSION

    def to_json(self) -> bytes:
        return orjson.dumps(self)


def decision_id_for(event_id: str, policy_version: str) -> str:
    """Deterministic id: the same event under the same policy always gets the same id.
    A UUIDv5 (``uuid.uuid5`` of the same name), formatted without building a UUID object."""
    name = f"{policy_version}\x00{event_id}".encode()
    digest = bytearray(hashlib.sha1(_DECISION_NAMESPACE.bytes + name).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    x = digest.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


@dataclass(frozen=True)
class DeadLetter:
    """A record that could not be processed, kept whole so that nothing is lost."""

    original_b64: str
    original_key_b64: str | None
    error: str
    stage: str
    topic: str
    partition: int
    offset: int
    failed_at: float
    schema: int = SCHEMA_VERSION

    @classmethod
    def of(
        cls,
        value: bytes | None,
        key: bytes | None,
        error: str,
        *,
        stage: str,
        topic: str,
        partition: int,
        offset: int,
        failed_at: float,
    ) -> DeadLetter:
        return cls(
            original_b64=base64.b64encode(value or b"").decode(),
            original_key_b64=base64.b64encode(key).decode() if key is not None else None,
            error=error,
            stage=stage,
            topic=topic,
            partition=partition,
            offset=offset,
            failed_at=failed_at,
        )
