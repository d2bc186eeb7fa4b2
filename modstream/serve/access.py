"""Who may call the HTTP API: API keys, each bound to roles and platforms, kept hashed in a
file that is re-read when it changes (keys rotate without a restart); and a rate limit per
client address and per key.

The file holds one JSON object a line: ``{"name": "coop", "sha256": "<hex of the key>",
"roles": ["lookup", "bank_admin"], "platforms": ["forum"]}``, optionally with its own rate
limit (``"rate_per_s": 2000, "burst": 4000``). ``modstream api-key create`` writes them and
prints the key once. A bank belongs to platforms (``bank_owners``) or is
shared: ``bank_admin`` curates its platforms' banks, ``shared_bank_admin`` the shared ones.
A request presents its key as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``.
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
from starlette.requests import Request

from modstream.bank.controls import BankControls
from modstream.decide.review import false_positive_bank
from modstream.serve.backend import ApiError

ROLES = ("submit", "lookup", "bank_admin", "shared_bank_admin", "review")
#: ``bank_admin`` curates the banks its platforms own (``bank_owners``);
#: ``shared_bank_admin`` the shared ones, which act on every platform's content.
BANK_ROLES = frozenset({"bank_admin", "shared_bank_admin"})
#: The roles each path accepts (by prefix, any one of them); other paths (health, status,
#: docs) need none.
PATH_ROLES = (("/h/", frozenset({"lookup"})), ("/m/", frozenset({"lookup"})),
              ("/c/", BANK_ROLES), ("/v1/uploads", frozenset({"submit"})),
              ("/v1/decisions", frozenset({"submit"})),
              ("/v1/review-outcomes", frozenset({"review"})))  # fmt: skip
MAX_KEYS_FILE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ApiKey:
    """``rate_per_s``/``burst`` None: the server's default for a key."""

    name: str
    roles: frozenset[str]
    platforms: frozenset[str] = frozenset()
    rate_per_s: float | None = None
    burst: float | None = None


class AccessError(Exception):
    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after


def roles_for(path: str) -> frozenset[str] | None:
    return next((roles for prefix, roles in PATH_ROLES if path.startswith(prefix)), None)


def bank_owners(bank: str, controls: BankControls) -> frozenset[str]:
    """The platforms a bank belongs to: those its config names (a negative bank's, the
    false-positive banks review creates), the platform it is named for (``fp-<p>``, before
    review first writes its config) and those whose confirmed reviews feed it
    (``auto_bank``). Empty: a shared bank."""
    owners = set(controls.bank(bank).platforms)
    prefix = false_positive_bank("")
    if bank.startswith(prefix) and len(bank) > len(prefix):
        owners.add(bank[len(prefix) :])
    owners.update(p for p, policy in controls.platforms.items() if policy.auto_bank == bank)
    return frozenset(owners)


def may_curate(key: ApiKey | None, owners: frozenset[str]) -> bool:
    """Whether ``key`` may change a bank with these owners: a platform's bank by a
    ``bank_admin`` key holding every platform it belongs to, a shared bank by a
    ``shared_bank_admin`` key. No key (no keys file): anyone may."""
    if key is None:
        return True
    if owners:
        return "bank_admin" in key.roles and owners <= key.platforms
    return "shared_bank_admin" in key.roles


def may_see(key: ApiKey | None, owners: frozenset[str]) -> bool:
    """Whether ``key`` may read a bank: a shared one with either bank role, a platform's
    only as ``may_curate`` says (its entries are that platform's content)."""
    return not owners or may_curate(key, owners)


def request_key(request: Request) -> ApiKey | None:
    """The key the gate admitted the request with (None without a keys file)."""
    return getattr(request.state, "api_key", None)


def require_bank_access(
    request: Request, controls: BankControls, bank: str, change: bool = True
) -> None:
    """A 403 unless the request's key may change (or, ``change`` False, read) ``bank``."""
    key = request_key(request)
    owners = bank_owners(bank, controls)
    if not (may_curate(key, owners) if change else may_see(key, owners)):
        raise ApiError(403, f"this API key may not {'change' if change else 'read'} {bank!r}")


def require_shared_admin(request: Request) -> None:
    """A 403 unless the request's key curates the shared banks (what changes every shared
    bank at once: an exchange API's credentials)."""
    if not may_curate(request_key(request), frozenset()):
        raise ApiError(403, "this API key lacks the role 'shared_bank_admin'")


def digest(key: str) -> str:
    """Keys are random (256 bits from ``new_key``): one SHA-256 is enough at rest."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return "msk_" + secrets.token_urlsafe(32)


def key_record(
    name: str,
    key: str,
    roles: Iterable[str],
    platforms: Iterable[str],
    rate_per_s: float | None = None,
    burst: float | None = None,
) -> bytes:
    roles, platforms = set(roles), set(platforms)
    unknown = roles - set(ROLES)
    if unknown or not roles:
        raise ValueError(f"roles: one or more of {', '.join(ROLES)}")
    if "bank_admin" in roles and not platforms:
        raise ValueError(
            "bank_admin curates its platforms' banks: give --platform, or use "
            "shared_bank_admin for the shared banks"
        )
    record: dict[str, object] = {
        "name": name,
        "sha256": digest(key),
        "roles": sorted(roles),
        "platforms": sorted(platforms),
    }
    if rate_per_s is not None:
        record["rate_per_s"] = _positive("rate_per_s", rate_per_s)
    if burst is not None:
        record["burst"] = _positive("burst", burst)
    return orjson.dumps(record)


def _positive(name: str, value: object) -> float:
    """A key's own rate or burst: a finite number above zero (bool is not one)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    if not math.isfinite(value) or value <= 0 or value > 1_000_000:
        raise ValueError(f"{name} must be above 0 and at most 1000000")
    return float(value)


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
                    platforms = frozenset(row.get("platforms") or ())
                    rate, burst = (
                        None if row.get(f) is None else _positive(f, row[f])
                        for f in ("rate_per_s", "burst")
                    )
                    keys[str(row["sha256"])] = ApiKey(
                        str(row["name"]), legacy_roles(roles, platforms), platforms, rate, burst
                    )
            except (OSError, ValueError, KeyError, TypeError) as exc:
                self.error = f"API keys file {self.path}: {exc}"
                return
            self._keys, self._seen, self.error = keys, seen, None


def legacy_roles(roles: frozenset[str], platforms: frozenset[str]) -> frozenset[str]:
    """A ``bank_admin`` key without platforms, written before banks had owners, curated
    every bank: it keeps the shared ones (``shared_bank_admin``) and, holding no platform,
    loses the platforms' own (``api-key create`` no longer writes such a key)."""
    if "bank_admin" in roles and not platforms:
        return roles | {"shared_bank_admin"}
    return roles


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

    def take(
        self, caller: str, rate: float | None = None, burst: float | None = None
    ) -> float | None:
        """None if the request may go; else the seconds to wait (``Retry-After``).
        ``rate``/``burst``: this caller's own (a key's), else the limit's."""
        rate, burst = rate or self.rate, burst or self.burst
        now = time.monotonic()
        bucket = self._buckets.get(caller)
        if bucket is None:
            if len(self._buckets) >= self.max_callers:  # bounded: forget the idlest
                del self._buckets[min(self._buckets, key=lambda k: self._buckets[k].at)]
            bucket = self._buckets[caller] = _Bucket(burst, now)
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.at) * rate)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return (1.0 - bucket.tokens) / rate

    def give_back(self, caller: str) -> None:
        """Return the token ``take`` just took (the request turned out to be counted
        elsewhere)."""
        bucket = self._buckets.get(caller)
        if bucket is not None:
            bucket.tokens = min(self.burst, bucket.tokens + 1.0)


class Gate:
    """The decision for one request: which key, whether its role allows the path, whether
    its rate allows it now.

    With keys, every request first takes a token from its client address's ``pre_key``
    bucket (a low limit), before any key is looked up: requests with no key, a wrong key or
    for an open route (``/status``) are limited so, and guessing keys costs time. A request
    whose key is found gives that token back and is counted against its key instead, at
    ``limit`` or the key's own rate (a platform's backend, Coop, is one trusted caller
    making several calls per item; many keys may share one address, a proxy's). Without
    keys (loopback, ``--allow-anonymous``: a trusted deployment) each address has
    ``limit``."""

    def __init__(
        self, keys: KeyRing | None, limit: RateLimit, pre_key: RateLimit | None = None
    ) -> None:
        self.keys = keys
        self.limit = limit
        self.pre_key = pre_key or RateLimit(limit.rate, limit.burst)

    def check(self, path: str, headers: dict[str, str], client: str) -> ApiKey | None:
        by_client = f"ip:{client}"
        if self.keys is None:
            _admit(self.limit.take(by_client))
            return None
        _admit(self.pre_key.take(by_client))
        roles = roles_for(path)
        if roles is None:
            return None
        presented = _presented(headers)
        if not presented:
            raise AccessError(401, "an API key is required (Authorization: Bearer KEY)")
        key = self.keys.find(presented)
        if key is None:
            raise AccessError(401, "unknown API key")
        self.pre_key.give_back(by_client)
        if not roles & key.roles:
            raise AccessError(403, f"this API key lacks the role {min(roles)!r}")
        _admit(self.limit.take(f"key:{key.name}", key.rate_per_s, key.burst))
        return key


def _admit(wait: float | None) -> None:
    if wait is not None:
        raise AccessError(429, "too many requests", retry_after=max(1, math.ceil(wait)))


def _presented(headers: dict[str, str]) -> str:
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return headers.get("x-api-key", "").strip()
