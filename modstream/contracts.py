"""The records modstream reads and writes on Kafka, with strict validation.

Every record carries ``schema: 1``. Records are plain dataclasses serialized with orjson;
parsing rejects unknown fields, wrong types and missing required fields with a message that
names the field, so a dead letter says exactly what was wrong.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any, Literal, Required, TypedDict, TypeVar

import orjson

SCHEMA_VERSION = 1
_T = TypeVar("_T")

# The topics, by their logical names (a deployment may prefix them: MODSTREAM_TOPIC_PREFIX).
UPLOADS_TOPIC = "uploads"
VIDEO_TOPIC = "uploads.video"  # events with a video, hashed apart so they never hold up the rest
HASHED_TOPIC = "uploads.hashed"
DECISIONS_TOPIC = "decisions"
TAKEDOWNS_TOPIC = "takedowns"
REVIEWS_TOPIC = "reviews"
DLQ_TOPIC = "uploads.dlq"
HASHBANK_TOPIC = "hashbank"
REVIEW_OUTCOMES_TOPIC = "review.outcomes"  # reviewers' verdicts in (public, any key)
REVIEW_ROUTED_TOPIC = "review.outcomes.routed"  # internal: by decision id, beside its case
REVIEW_CASES_TOPIC = "review.cases"  # internal, compacted: what an outcome acts on
HUMAN_VERDICTS_TOPIC = "review.verdicts"  # internal, compacted, on every worker: precedence
REINSTATEMENTS_TOPIC = "reinstatements"  # content a reviewer restored after a takedown
BANK_CONFIG_TOPIC = "bank.config"  # compacted, on every worker: bank and platform controls
ENTRY_OUTCOMES_TOPIC = "review.entry_outcomes"  # a reviewer's outcome on a match of an entry
EXCHANGE_CONFIG_TOPIC = "exchange.config"  # compacted: the exchanges banks are synced from
EXCHANGE_STATE_TOPIC = "exchange.state"  # compacted: each exchange's checkpoint and status
# A sane range for event times (2000-01-01 .. 2100-01-01 UTC, epoch seconds).
EARLIEST_TIME, LATEST_TIME = 946_684_800.0, 4_102_444_800.0
MEDIA_KINDS = ("image", "video")
#: What a decision does; also the action each piece of evidence alone calls for.
Verdict = Literal["allow", "review", "takedown"]
#: What a bank's matches may do (``BankConfig.action``): ``shadow`` records, never acts.
BankAction = Literal["takedown", "review", "shadow"]
EvidenceKind = Literal[
    "hash_match",
    "text_match",
    "text_score",
    "media_error",
    "video_cut",
    "repeat_uploader",
    "human_verdict",
    "suppressed_match",
    "shadow_match",
    "quarantined",
    "still_of_video",
    "image_in_video",
]
#: What a reviewer found: the content violates (``confirm``), it does not (``overturn``),
#: or someone more senior must look (``escalate``).
Outcome = Literal["confirm", "overturn", "escalate"]
OUTCOMES: tuple[Outcome, ...] = ("confirm", "overturn", "escalate")
Source = Literal["automated", "human"]
_DECISION_NAMESPACE = uuid.UUID("6f1c7a52-3b8e-4c4e-9d7a-6d6f64737472")


class ContractError(ValueError):
    """A record does not match its contract; the message names the offending field."""


class MediaError(Exception):
    """Media could not be processed; ``reason`` is a short label for metrics."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class TextScore:
    """A post's classifier score and the phrases that moved it."""

    score: float
    #: The phrases that moved the score, strongest first: ``{"term": ..., "weight": ...}``.
    parts: tuple[dict[str, float | str], ...]


def dumps(record: Any) -> bytes:
    """Serialize a contract dataclass (or plain dict) to JSON bytes (orjson reads dataclasses)."""
    return orjson.dumps(record)


def _loads_object(raw: bytes | str, what: str) -> dict[str, Any]:
    """A JSON object from untrusted bytes: strict JSON (orjson refuses NaN, invalid UTF-8 and
    lone surrogates) without duplicate keys, which parsers resolve differently (last wins
    here, first elsewhere) and so let one record mean two things."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ContractError(f"{what}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ContractError(f"{what}: expected a JSON object, got {type(value).__name__}")
    refuse_deep(value, what)
    try:  # orjson keeps the last of duplicate keys silently: parse again to find them
        _DUPLICATE_CHECK.decode(raw.decode() if isinstance(raw, bytes) else raw)
    except _DuplicateKey as exc:
        raise ContractError(f"{what}: duplicate key {exc}") from None
    return value


#: No record of ours nests past a few levels. orjson takes 1,024, and Python's own parser
#: (the duplicate-key check below) and every recursive walk after it would raise
#: RecursionError well before that: refuse deep records up front, as the record's own error.
MAX_JSON_DEPTH = 32


def refuse_deep(value: Any, what: str) -> None:
    """ContractError naming where ``value`` (parsed JSON) nests past ``MAX_JSON_DEPTH``."""
    too_deep = _deeper_than(value, MAX_JSON_DEPTH)
    if too_deep is not None:
        raise ContractError(f"{what}: {too_deep}: nested deeper than {MAX_JSON_DEPTH} levels")


def _deeper_than(value: Any, limit: int) -> str | None:
    """The path (``a.b[0]``) to the first value nested past ``limit`` levels, or None;
    walked with a stack, since recursion is what a deep record would break."""
    stack: list[tuple[Any, int, str]] = [(value, 1, "")]
    while stack:
        node, depth, path = stack.pop()
        pairs = node.items() if isinstance(node, dict) else enumerate(node)
        for name, child in pairs:
            if not isinstance(child, dict | list):
                continue
            child_path = f"{path}[{name}]" if isinstance(node, list) else f"{path}.{name}"
            if depth >= limit:
                return child_path.lstrip(".")[:120]
            stack.append((child, depth + 1, child_path))
    return None


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(repr(key))
            seen.add(key)
    return value


_DUPLICATE_CHECK = json.JSONDecoder(object_pairs_hook=_unique_keys)


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

    def text(self, name: str, *, max_len: int = 256) -> str:
        """A required, non-blank string field."""
        value: str = self.get(name, str)
        if not value.strip():
            raise ContractError(f"{self.path}.{name}: must not be empty")
        return self._within(name, value, max_len)

    def optional_text(self, name: str, *, max_len: int = 256) -> str | None:
        value: str | None = self.get(name, str, required=False)
        return None if value is None else self._within(name, value, max_len)

    def _within(self, name: str, value: str, max_len: int) -> str:
        if len(value) > max_len:
            raise ContractError(f"{self.path}.{name}: longer than {max_len} characters")
        return value

    def ident(self, name: str) -> str:
        """An id: printable characters only. Control, format (bidi overrides, zero-width)
        and separator characters make ids that look alike but differ, or that rewrite the
        logs and review screens they are shown in."""
        value = self.text(name)
        if not value.isprintable():
            raise ContractError(f"{self.path}.{name}: control or invisible characters")
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
            media_id=f.ident("media_id"),
            kind=f.text("kind"),
            url=f.optional_text("url", max_len=4096),
            data_b64=f.get("data_b64", str, required=False),
            path=f.optional_text("path", max_len=4096),
            mime=f.optional_text("mime"),
        )
        if ref.kind not in MEDIA_KINDS:
            raise ContractError(f"{path}.kind: must be one of {', '.join(MEDIA_KINDS)}")
        sources = [s for s in ("url", "data_b64", "path") if getattr(ref, s) is not None]
        if len(sources) != 1:
            raise ContractError(f"{path}: exactly one of url, data_b64, path is required")
        if ref.url is not None and not ref.url.lower().startswith(("http://", "https://")):
            raise ContractError(f"{path}.url: only http and https URLs are accepted")
        if ref.data_b64 is not None:
            _check_base64(ref.data_b64, f"{path}.data_b64")
        if ref.path is not None and (ref.path.endswith("/") or "\x00" in ref.path):
            raise ContractError(f"{path}.path: must name a file (no trailing '/', no NUL)")
        return ref

    @property
    def source(self) -> str:
        return "url" if self.url else "inline" if self.data_b64 is not None else "path"


_BASE64 = re.compile(r"[A-Za-z0-9+/]*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
# The last character before the padding carries spare bits, which canonical base64 leaves 0.
_ZERO_SPARE_BITS = {"==": frozenset("AQgw"), "=": frozenset("AEIMQUYcgkosw048")}


def _check_base64(value: str, path: str) -> None:
    """Canonical, non-empty base64: one encoding per content, so that padding or spare bits
    cannot make one upload look like another to anything that compares the text. Checked
    without decoding (the hash stage decodes it once, where it needs the bytes)."""
    if not value:
        raise ContractError(f"{path}: empty")
    if len(value) % 4 or not _BASE64.fullmatch(value):
        raise ContractError(f"{path}: not valid base64")
    padding = "==" if value.endswith("==") else "=" if value.endswith("=") else ""
    if padding and value[-len(padding) - 1] not in _ZERO_SPARE_BITS[padding]:
        raise ContractError(f"{path}: not canonical base64 (padding or trailing bits)")


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
            event_id=f.ident("event_id"),
            platform=f.ident("platform"),
            content_id=f.ident("content_id"),
            uploader_id=f.ident("uploader_id"),
            created_at=f.text("created_at"),
            text=f.optional_text("text", max_len=100_000),
            media=media,
        )
        if event.text is None and not event.media:
            raise ContractError("upload: needs text or media")
        if "/" in event.platform:  # the uploader key is platform/uploader: one way to split it
            raise ContractError("upload.platform: must not contain '/'")
        created = parse_time(event.created_at, "upload.created_at")
        if not EARLIEST_TIME <= created <= LATEST_TIME:
            raise ContractError("upload.created_at: outside 2000-01-01 .. 2100-01-01")
        return event

    @classmethod
    def trusted(cls, data: dict[str, Any]) -> UploadEvent:
        """Rebuild an event this pipeline serialized itself, validated when it came in."""
        media = tuple(MediaRef(**m) for m in data["media"]) if data["media"] else ()
        return _rebuilt(cls, {**data, "media": media})

    @property
    def uploader_key(self) -> str:
        """The key that co-partitions an uploader's events (for per-uploader state); scoped by
        platform, which has no '/', so two platforms' uploaders never share a key."""
        return f"{self.platform}/{self.uploader_id}"


@dataclass(frozen=True)
class BankEntry:
    """One known item in a bank. Kafka key: ``bank/signal_type/entry_id`` (compacted)."""

    bank: str
    entry_id: str
    signal_type: str
    signal: str
    labels: tuple[str, ...] = ()
    action_hint: Verdict = "takedown"
    added_at: str = ""
    #: Where the entry came from when not from a file: the review that banked it (decision
    #: id, reviewer), the false positive it records. Strings only, at most 16.
    provenance: dict[str, str] | None = field(default=None, hash=False)
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
        f = _Fields(data, "bank_entry", keys | {"action_hint", "added_at", "provenance"})
        f.schema()
        labels = f.get("labels", list, required=False) or []
        if not all(isinstance(label, str) for label in labels):
            raise ContractError("bank_entry.labels: expected a list of strings")
        provenance = f.get("provenance", dict, required=False)
        if provenance is not None and (
            len(provenance) > 16
            or not all(
                isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512
                for k, v in provenance.items()
            )
        ):
            raise ContractError("bank_entry.provenance: at most 16 short string values")
        entry = cls(
            bank=f.text("bank"),
            entry_id=f.text("entry_id"),
            signal_type=f.text("signal_type"),
            signal=f.text("signal", max_len=100_000),
            labels=tuple(labels),
            action_hint=_verdict(f.optional_text("action_hint") or "takedown"),
            added_at=f.optional_text("added_at") or "",
            provenance=provenance,
        )
        if "/" in entry.bank or "/" in entry.signal_type:
            raise ContractError("bank_entry: bank and signal_type must not contain '/'")
        return entry


#: ``allow`` is for entries of negative banks (allowlists): a match of one never acts.
_ACTION_HINTS: dict[str, Verdict] = {"takedown": "takedown", "review": "review", "allow": "allow"}
_OUTCOMES: dict[str, Outcome] = {o: o for o in OUTCOMES}
_BANK_ACTIONS: dict[str, BankAction] = {
    "takedown": "takedown",
    "review": "review",
    "shadow": "shadow",
}


@dataclass(frozen=True)
class BankConfig:
    """How a bank acts (``bank.config``, key ``bank/<name>``); the defaults are how a bank
    without a record acts.

    * ``enabled``: off, the bank's matches are not looked at; ``enabled_ratio``: the share of
      content it applies to, chosen by a hash of the bank and the content's signal, so the
      same content is always in or out (a gradual rollout).
    * ``action``: ``takedown`` or ``review`` caps what its matches can do (None: each
      entry's own hint); ``shadow`` decides and records (``shadow_match`` evidence, what it
      would have done) but never acts.
    * ``thresholds``: per signal type, ``{"takedown": d, "review": d}`` distances.
    * ``negative``: the bank lists content known *not* to violate; an item that matches it
      has its matches from the banks it ``suppresses`` (all positive banks when empty)
      turned into ``suppressed_match`` evidence, on the ``platforms`` it applies to (every
      platform when empty).
    """

    negative: bool = False
    platforms: tuple[str, ...] = ()
    suppresses: tuple[str, ...] = ()
    enabled: bool = True
    enabled_ratio: float = 1.0
    action: BankAction | None = None
    thresholds: dict[str, dict[str, int]] = field(default_factory=dict, hash=False)
    schema: int = SCHEMA_VERSION

    @classmethod
    def parse(cls, raw: bytes) -> BankConfig:
        f = _Fields(
            _loads_object(raw, "bank config"),
            "bank_config",
            {
                "schema",
                "negative",
                "platforms",
                "suppresses",
                "enabled",
                "enabled_ratio",
                "action",
                "thresholds",
            },
        )
        f.schema()
        enabled = f.get("enabled", bool, required=False)
        ratio = f.get("enabled_ratio", (int, float), required=False)
        if ratio is not None and not 0.0 <= ratio <= 1.0:
            raise ContractError("bank_config.enabled_ratio: must be between 0 and 1")
        action = f.optional_text("action")
        if action is not None and action not in _BANK_ACTIONS:
            raise ContractError("bank_config.action: must be takedown, review or shadow")
        thresholds = f.get("thresholds", dict, required=False) or {}
        for signal_type, pair in thresholds.items():
            if (
                not isinstance(pair, dict)
                or not set(pair) <= {"takedown", "review"}
                or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 10_000
                           for v in pair.values())
            ):  # fmt: skip
                raise ContractError(
                    f"bank_config.thresholds.{signal_type}: expected "
                    '{"takedown": distance, "review": distance}'
                )
        return cls(
            negative=bool(f.get("negative", bool, required=False)),
            platforms=_names(f, "platforms"),
            suppresses=_names(f, "suppresses"),
            enabled=True if enabled is None else enabled,
            enabled_ratio=1.0 if ratio is None else float(ratio),
            action=_BANK_ACTIONS[action] if action is not None else None,
            thresholds={k: dict(v) for k, v in thresholds.items()},
        )

    def to_json(self) -> bytes:
        return orjson.dumps(self)


@dataclass(frozen=True)
class EntryControl:
    """Controls on one bank entry (``bank.config``, key ``entry/<bank key>``).

    * ``disabled_until``: the entry is off until then (epoch seconds).
    * ``quarantined_at``: the entry's matches flooded (``decide.flood``); until a person
      releases it, they go to review with ``quarantined`` evidence instead of acting.
    * ``exempt_until``: after a release, no new quarantine before then.
    """

    disabled_until: float | None = None
    quarantined_at: float | None = None
    reason: str = ""
    exempt_until: float | None = None
    schema: int = SCHEMA_VERSION

    @classmethod
    def parse(cls, raw: bytes) -> EntryControl:
        f = _Fields(
            _loads_object(raw, "entry control"),
            "entry_control",
            {"schema", "disabled_until", "quarantined_at", "reason", "exempt_until"},
        )
        f.schema()
        return cls(
            disabled_until=f.get("disabled_until", (int, float), required=False),
            quarantined_at=f.get("quarantined_at", (int, float), required=False),
            reason=f.optional_text("reason", max_len=1000) or "",
            exempt_until=f.get("exempt_until", (int, float), required=False),
        )

    def to_json(self) -> bytes:
        return orjson.dumps(self)


@dataclass(frozen=True)
class PlatformPolicy:
    """``auto_bank``: the bank a ``confirm`` of unmatched content adds its signals to."""

    auto_bank: str | None = None
    schema: int = SCHEMA_VERSION

    @classmethod
    def parse(cls, raw: bytes) -> PlatformPolicy:
        f = _Fields(
            _loads_object(raw, "platform policy"), "platform_policy", {"schema", "auto_bank"}
        )
        f.schema()
        auto_bank = f.optional_text("auto_bank")
        if auto_bank is not None and ("/" in auto_bank or not auto_bank.strip()):
            raise ContractError("platform_policy.auto_bank: a bank name, without '/'")
        return cls(auto_bank=auto_bank)

    def to_json(self) -> bytes:
        return orjson.dumps(self)


#: The exchange APIs, as python-threatexchange names them (``SignalExchangeAPI.get_name``).
EXCHANGE_APIS = ("fb_threatexchange", "tat", "ncmec", "stop_ncii", "local_file", "sample")
#: Other spellings people use for them.
EXCHANGE_API_ALIASES = {
    "stopncii": "stop_ncii",
    "threatexchange": "fb_threatexchange",
    "tcap": "tat",
}
#: Settings whose names say they hold a secret: refused, credentials are referenced instead.
_SECRET_NAME = re.compile(r"pass|secret|token|(^|_)key$|credential", re.IGNORECASE)


def credential_reference(value: Any) -> dict[str, str] | None:
    """Where an exchange's credentials are, never what they are: ``{"file": PATH}`` or
    ``{"env": VARIABLE}``; None for anything else."""
    if (
        isinstance(value, dict)
        and len(value) == 1
        and set(value) <= {"file", "env"}
        and all(isinstance(v, str) and 0 < len(v) <= 1024 for v in value.values())
    ):
        return dict(value)
    return None


@dataclass(frozen=True)
class ExchangeConfig:
    """One exchange a bank is synced from (``exchange.config``, key ``exchange/<name>``).

    ``settings`` are the API's collaboration settings (``path`` of a ``local_file``, the
    ``privacy_group`` of a ThreatExchange collaboration, ``base_url`` of TCAP). Credentials
    are never in Kafka: ``credentials`` names a file (``{"file": PATH}``) or an environment
    variable (``{"env": NAME}``) on the machine of the sync service, holding what
    python-threatexchange reads for the API (``user:password`` for TCAP, a token for
    ThreatExchange). ``sync_requested_at``: ``exchange sync-now``, a sync out of turn.
    """

    name: str
    api: str
    bank: str
    interval_s: float = 3600.0
    enabled: bool = True
    settings: dict[str, str] = field(default_factory=dict, hash=False)
    credentials: dict[str, str] | None = field(default=None, hash=False)
    action_hint: Verdict = "takedown"
    sync_requested_at: float | None = None
    schema: int = SCHEMA_VERSION

    @property
    def key(self) -> str:
        return f"exchange/{self.name}"

    @classmethod
    def parse(cls, raw: bytes | str) -> ExchangeConfig:
        f = _Fields(
            _loads_object(raw, "exchange config"),
            "exchange_config",
            {
                "schema",
                "name",
                "api",
                "bank",
                "interval_s",
                "enabled",
                "settings",
                "credentials",
                "action_hint",
                "sync_requested_at",
            },
        )
        f.schema()
        name, bank, api = f.ident("name"), f.ident("bank"), f.text("api")
        api = EXCHANGE_API_ALIASES.get(api, api)
        for what, value in (("name", name), ("bank", bank)):
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", value):
                raise ContractError(
                    f"exchange_config.{what}: letters, digits, '_', '.', '-' (at most 64)"
                )
        if api not in EXCHANGE_APIS:
            raise ContractError(f"exchange_config.api: one of {', '.join(EXCHANGE_APIS)}")
        interval = f.get("interval_s", (int, float), required=False)
        if interval is not None and not 1 <= interval <= 30 * 24 * 3600:
            raise ContractError("exchange_config.interval_s: 1 second .. 30 days")
        settings = f.get("settings", dict, required=False) or {}
        if len(settings) > 32 or not all(
            isinstance(k, str) and isinstance(v, str) and 0 < len(k) <= 64 and len(v) <= 1024
            for k, v in settings.items()
        ):
            raise ContractError("exchange_config.settings: at most 32 short string values")
        secret = next((k for k in settings if _SECRET_NAME.search(k)), None)
        if secret is not None:
            raise ContractError(
                f"exchange_config.settings.{secret}: credentials are not stored in Kafka; "
                "reference a file or an environment variable (credentials)"
            )
        credentials = f.get("credentials", dict, required=False)
        if credentials is not None and credential_reference(credentials) is None:
            raise ContractError('exchange_config.credentials: {"file": PATH} or {"env": VARIABLE}')
        return cls(
            name=name,
            api=api,
            bank=bank,
            interval_s=3600.0 if interval is None else float(interval),
            enabled=f.get("enabled", bool, required=False) is not False,
            settings=dict(settings),
            credentials=dict(credentials) if credentials else None,
            action_hint=_verdict(f.optional_text("action_hint") or "takedown"),
            sync_requested_at=f.get("sync_requested_at", (int, float), required=False),
        )

    def to_json(self) -> bytes:
        return orjson.dumps(self)


@dataclass(frozen=True)
class ExchangeState:
    """Where an exchange's sync stands (``exchange.state``, key ``exchange/<name>``),
    written in the same transaction as the bank entries of each fetched page: a restarted
    sync resumes at ``checkpoint`` and publishes nothing twice.

    ``checkpoint`` is the API's own checkpoint (python-threatexchange's dataclass as a dict);
    ``progress_at`` the time it has fetched up to, where the API says (epoch seconds).
    Counts are totals since the exchange was added; ``error`` is the last failure's message
    (empty after a success) and ``failures`` how many attempts in a row failed.
    """

    api: str
    checkpoint: dict[str, Any] | None = field(default=None, hash=False)
    progress_at: float | None = None
    last_attempt_at: float | None = None
    last_success_at: float | None = None
    syncing: bool = False
    error: str = ""
    failures: int = 0
    fetched: int = 0
    published: int = 0
    deleted: int = 0
    unchanged: int = 0
    skipped: dict[str, int] = field(default_factory=dict, hash=False)
    schema: int = SCHEMA_VERSION

    @classmethod
    def parse(cls, raw: bytes | str) -> ExchangeState:
        data = _loads_object(raw, "exchange state")
        f = _Fields(data, "exchange_state", {k.name for k in fields(cls)})
        f.schema()
        counts = {
            k: f.get(k, int, required=False) or 0
            for k in ("failures", "fetched", "published", "deleted", "unchanged")
        }
        skipped = f.get("skipped", dict, required=False) or {}
        if not all(isinstance(k, str) and isinstance(v, int) for k, v in skipped.items()):
            raise ContractError("exchange_state.skipped: counts by signal type")
        return cls(
            api=f.text("api"),
            checkpoint=f.get("checkpoint", dict, required=False),
            progress_at=f.get("progress_at", (int, float), required=False),
            last_attempt_at=f.get("last_attempt_at", (int, float), required=False),
            last_success_at=f.get("last_success_at", (int, float), required=False),
            syncing=bool(f.get("syncing", bool, required=False)),
            error=f.optional_text("error", max_len=2000) or "",
            skipped=dict(skipped),
            **counts,
        )

    def to_json(self) -> bytes:
        return orjson.dumps(self)


def _names(f: _Fields, name: str) -> tuple[str, ...]:
    values = f.get(name, list, required=False) or []
    if len(values) > 256 or not all(isinstance(v, str) and v and "/" not in v for v in values):
        raise ContractError(f"{f.path}.{name}: at most 256 names without '/'")
    return tuple(values)


def _verdict(value: str) -> Verdict:
    if value not in _ACTION_HINTS:
        raise ContractError("bank_entry.action_hint: must be takedown, review or allow")
    return _ACTION_HINTS[value]


def _outcome(value: str) -> Outcome:
    if value not in _OUTCOMES:
        raise ContractError(f"review_outcome.outcome: must be one of {', '.join(OUTCOMES)}")
    return _OUTCOMES[value]


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


class ComputedSignal(TypedDict, total=False):
    """One signal of one media item as its signal type computed it: the value to match,
    and what else the type reports (PDQ's quality; vPDQ's frames and how much was hashed)."""

    value: Required[str]
    quality: int
    #: Extra query values of the same media (an image's other orientations, the picture
    #: inside its borders), by name: each is looked up like ``value``.
    variants: dict[str, str]
    frames: int
    duration: float
    hashed_seconds: float
    truncated: bool


@dataclass(frozen=True)
class MediaSignals:
    """What the hash stage learned about one piece of media: signals, or why it failed."""

    media_id: str
    kind: str
    signals: dict[str, ComputedSignal] = field(default_factory=dict)
    error: str | None = None
    error_reason: str | None = None


@dataclass(frozen=True)
class HashedUpload:
    """One event as the hash stage hands it to the decide stage: media signals, text score."""

    event: UploadEvent
    media: tuple[MediaSignals, ...]
    received_at: float
    text_score: TextScore | None = None
    #: The text as it is matched against known texts, normalised once in the hash stage.
    normalized_text: str | None = None
    #: ``event.created_at`` in epoch seconds, parsed once in the hash stage.
    created: float | None = None

    def to_json(self, max_bytes: int) -> bytes:
        """The record as JSON in at most ``max_bytes``, so that it fits in a Kafka record and
        the event is still decided: if it is larger, the largest media signals (long videos'
        vPDQ) are left out, largest first, each replaced by a ``too_large`` error for its item.
        Text (at most 100,000 characters) always fits in the smallest allowed record."""
        data = dumps(self)
        media = list(self.media)
        by_size = sorted(range(len(media)), key=lambda i: -len(dumps(media[i].signals)))
        for index in by_size:
            if len(data) <= max_bytes - _BATCH_OVERHEAD:
                break
            item = media[index]
            media[index] = MediaSignals(
                item.media_id,
                item.kind,
                {},
                "its signals are too large to hand to the decide stage",
                "too_large",
            )
            data = dumps(replace(self, media=tuple(media)))
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HashedUpload:
        score = data["text_score"]
        return _rebuilt(
            cls,
            {
                "event": UploadEvent.trusted(data["event"]),
                "media": tuple(MediaSignals(**m) for m in data["media"]),
                "received_at": data["received_at"],
                "text_score": TextScore(score["score"], tuple(score["parts"])) if score else None,
                "normalized_text": data["normalized_text"],
                "created": data["created"],
            },
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
        data = orjson.loads(raw)  # written by this pipeline: no untrusted-input checks
        return cls(uploads=tuple(HashedUpload.from_dict(u) for u in data["uploads"]))

    @staticmethod
    def records(uploads: Sequence[bytes], max_bytes: int) -> Iterator[bytes]:
        """Serialized uploads (``HashedUpload.to_json``) packed in order into batch records of
        at most ``max_bytes`` each."""
        part: list[bytes] = []
        size = _BATCH_OVERHEAD
        for upload in uploads:
            if part and size + len(upload) + 1 > max_bytes:
                yield _batch_record(part)
                part, size = [], _BATCH_OVERHEAD
            part.append(upload)
            size += len(upload) + 1
        if part:
            yield _batch_record(part)


def _batch_record(uploads: list[bytes]) -> bytes:
    return b'{"uploads":[' + b",".join(uploads) + b'],"schema":%d}' % SCHEMA_VERSION


_BATCH_OVERHEAD = len(_batch_record([]))


@dataclass(frozen=True)
class Evidence:
    """One reason behind a verdict. Fields that do not apply to ``kind`` stay None."""

    kind: EvidenceKind
    action: Verdict  # the verdict this evidence alone asks for
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
    verdict: Verdict
    evidence: tuple[Evidence, ...]
    policy_version: str
    decided_at: float
    media_errors: tuple[dict[str, str], ...] = ()
    #: ``human`` for a reviewer's decision, which supersedes the automated one it names.
    source: Source = "automated"
    supersedes: str | None = None
    review: ReviewNote | None = None
    schema: int = SCHEMA_VERSION

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def trusted(cls, data: dict[str, Any]) -> Decision:
        """Rebuild a decision this pipeline serialized itself."""
        review = data.get("review")
        return _rebuilt(
            cls,
            {
                "source": "automated",
                "supersedes": None,
                **data,
                "evidence": tuple(Evidence(**e) for e in data["evidence"]),
                "media_errors": tuple(data.get("media_errors", ())),
                "review": ReviewNote(**review) if review else None,
            },
        )


@dataclass(frozen=True)
class ReviewNote:
    """Who decided a human decision and why, from the review outcome."""

    outcome: Outcome
    reviewer: str
    reason: str = ""
    labels: tuple[str, ...] = ()
    reviewed_at: float = 0.0


@dataclass(frozen=True)
class EntryOutcome:
    """A reviewer's outcome on a decision that matched a bank entry (``review.entry_outcomes``,
    key: the entry's bank key), for whoever keeps the entry: the exchange it came from hears
    a confirm as a true positive and an overturn as a false positive. Who reviewed is not in
    it: an exchange does not need to know."""

    bank: str
    signal_type: str
    entry_id: str
    outcome: Outcome
    decision_id: str
    human_decision_id: str
    reviewed_at: float
    #: The entry's signal as the worker's bank had it (None if it was removed meanwhile).
    signal: str | None = None
    schema: int = SCHEMA_VERSION

    @property
    def key(self) -> str:
        return bank_key(self.bank, self.signal_type, self.entry_id)

    @classmethod
    def parse(cls, raw: bytes | str) -> EntryOutcome:
        f = _Fields(_loads_object(raw, "entry outcome"), "entry_outcome",
                    {k.name for k in fields(cls)})  # fmt: skip
        f.schema()
        return cls(
            bank=f.text("bank"),
            signal_type=f.text("signal_type"),
            entry_id=f.text("entry_id"),
            outcome=_outcome(f.text("outcome")),
            decision_id=f.text("decision_id"),
            human_decision_id=f.text("human_decision_id"),
            reviewed_at=float(f.get("reviewed_at", (int, float))),
            signal=f.optional_text("signal", max_len=100_000),
        )

    def to_json(self) -> bytes:
        return orjson.dumps(self)


@dataclass(frozen=True)
class ReviewOutcome:
    """A reviewer's verdict on an automated decision (``review.outcomes``), from a review
    tool or ``modstream review submit``. Kafka key: any (the decision id is usual)."""

    decision_id: str
    event_id: str
    platform: str
    content_id: str
    outcome: Outcome
    reviewer: str
    decided_at: str
    reason: str = ""
    labels: tuple[str, ...] = ()
    schema: int = SCHEMA_VERSION

    @classmethod
    def parse(cls, raw: bytes | str) -> ReviewOutcome:
        """Parse and validate JSON bytes; raises ContractError naming the bad field."""
        data = _loads_object(raw, "review outcome")
        keys = {"schema", "decision_id", "event_id", "platform", "content_id", "outcome"}
        f = _Fields(data, "review_outcome", keys | {"reviewer", "decided_at", "reason", "labels"})
        f.schema()
        labels = f.get("labels", list, required=False) or []
        if len(labels) > 32 or not all(isinstance(x, str) and 0 < len(x) <= 64 for x in labels):
            raise ContractError("review_outcome.labels: at most 32 strings of 1-64 characters")
        parsed = cls(
            decision_id=f.ident("decision_id"),
            event_id=f.ident("event_id"),
            platform=f.ident("platform"),
            content_id=f.ident("content_id"),
            outcome=_outcome(f.text("outcome")),
            reviewer=f.ident("reviewer"),
            decided_at=f.text("decided_at"),
            reason=f.optional_text("reason", max_len=2000) or "",
            labels=tuple(labels),
        )
        reviewed = parse_time(parsed.decided_at, "review_outcome.decided_at")
        if not EARLIEST_TIME <= reviewed <= LATEST_TIME:
            raise ContractError("review_outcome.decided_at: outside 2000-01-01 .. 2100-01-01")
        return parsed

    @property
    def reviewed_at(self) -> float:
        return parse_time(self.decided_at, "review_outcome.decided_at")


def _rebuilt(cls: type[_T], values: dict[str, Any]) -> _T:
    """An instance of a frozen dataclass from every field's value, as this pipeline wrote
    them itself, without running ``__init__`` (a fifth of the decide stage's time went to
    rebuilding hand-off records field by field)."""
    made = object.__new__(cls)
    made.__dict__.update(values)
    return made


def decision_id_for(platform: str, event_id: str, policy_version: str) -> str:
    """Deterministic id: the same event of the same platform under the same policy always gets
    the same id, and two platforms' events never share one (ids hold no NUL). A UUIDv5
    (``uuid.uuid5`` of the same name), formatted without building a UUID object."""
    name = f"{policy_version}\x00{platform}\x00{event_id}".encode()
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
