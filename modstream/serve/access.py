"""Who may call the HTTP API: API keys, each bound to roles and platforms, kept hashed in a
file that is re-read when it changes (keys rotate without a restart); and a rate limit per
key.

The file holds one JSON object a line: ``{"name": "coop", "sha256": "<hex of the key>",
"roles": ["lookup", "bank_admin"], "platforms": ["forum"]}``. ``modstream api-key create``
writes them and prints the key once. A request presents its key as ``Authorization: Bearer
KEY`` or ``X-API-Key: KEY``.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

ROLES = ("submit", "lookup", "bank_admin", "review")
#: The role each path needs (by prefix); other paths (health, status, docs) need none.
PATH_ROLES = (("/h/", "lookup"), ("/m/", "lookup"), ("/c/", "bank_admin"),
              ("/v1/uploads", "submit"), ("/v1/decisions", "submit"),
              ("/v1/review-outcomes", "review"))  # fmt: skip
MAX_KEYS_FILE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ApiKey:
    name: str
    roles: frozenset[str]
    platforms: frozenset[str] = frozenset()


class AccessError(Exception):
    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after


def role_for(path: str) -> str | None:
    return next((role for prefix, role in PATH_ROLES if path.startswith(prefix)), None)


def digest(key: str) -> str:
    """Keys are random (256 bits from ``new_key``): one SHA-256 is enough at rest."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return "msk_" + secrets.token_urlsafe(32)


def key_record(name: str, key: str, roles: Iterable[str], platforms: Iterable[str]) -> bytes:
    unknown = set(roles) - set(ROLES)
    if unknown or not roles:
        raise ValueError(f"roles: one or more of {', '.join(ROLES)}")
    record = {"name": name, "sha256": digest(key), "roles": sorted(set(roles)),
              "platforms": sorted(set(platforms))}  # fmt: skip
    return orjson.dumps(record)


class KeyRing:
    """The keys of a file, re-read at most once a second when its modification time or size
    changes. A file that does not parse keeps the keys it had (and says why, once)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._keys: dict[str, ApiKey] = {}
        self._seen: tuple[float, int] | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        self.error: str | None = None
        self._load()

    def find(self, presented: str) -> ApiKey | None:
        self._maybe_reload()
        wanted = digest(presented)
        for stored, key in self._keys.items():
            if hmac.compare_digest(stored, wanted):
                return key
        return None

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked < 1.0:
            return
        self._checked = now
        self._load()

    def _load(self) -> None:
        with self._lock:
            try:
                stat = os.stat(self.path)
            except OSError as exc:
                self.error = f"API keys file {self.path}: {exc.strerror}"
                return
            seen = (stat.st_mtime, stat.st_size)
            if seen == self._seen:
                return
            try:
                if stat.st_size > MAX_KEYS_FILE_BYTES:
                    raise ValueError("larger than 1 MiB")
                keys = {}
                for number, line in enumerate(self.path.read_bytes().splitlines(), 1):
                    if not line.strip():
                        continue
                    row = orjson.loads(line)
                    roles = frozenset(row["roles"])
                    if not roles or not roles <= set(ROLES):
                        raise ValueError(f"line {number}: roles must be some of {ROLES}")
                    keys[str(row["sha256"])] = ApiKey(
                        str(row["name"]), roles, frozenset(row.get("platforms") or ())
                    )
            except (OSError, ValueError, KeyError, TypeError) as exc:
                self.error = f"API keys file {self.path}: {exc}"
                return
            self._keys, self._seen, self.error = keys, seen, None


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class RateLimit:
    """A token bucket per caller: ``rate`` requests a second, bursts of ``burst``."""

    rate: float
    burst: float
    max_callers: int = 10_000
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def take(self, caller: str) -> float | None:
        """None if the request may go; else the seconds to wait (``Retry-After``)."""
        now = time.monotonic()
        bucket = self._buckets.get(caller)
        if bucket is None:
            if len(self._buckets) >= self.max_callers:  # bounded: forget the idlest
                del self._buckets[min(self._buckets, key=lambda k: self._buckets[k].at)]
            bucket = self._buckets[caller] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return (1.0 - bucket.tokens) / self.rate


class Gate:
    """The decision for one request: which key, whether its role allows the path, whether
    its rate allows it now."""

    def __init__(self, keys: KeyRing | None, limit: RateLimit) -> None:
        self.keys = keys
        self.limit = limit

    def check(self, path: str, headers: dict[str, str], client: str) -> ApiKey | None:
        role = role_for(path)
        if role is None:
            return None
        key = None
        if self.keys is not None:
            presented = _presented(headers)
            if not presented:
                raise AccessError(401, "an API key is required (Authorization: Bearer KEY)")
            key = self.keys.find(presented)
            if key is None:
                raise AccessError(401, "unknown API key")
            if role not in key.roles:
                raise AccessError(403, f"this API key lacks the role {role!r}")
        wait = self.limit.take(key.name if key else f"ip:{client}")
        if wait is not None:
            raise AccessError(429, "too many requests", retry_after=math.ceil(wait))
        return key


def _presented(headers: dict[str, str]) -> str:
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return headers.get("x-api-key", "").strip()
