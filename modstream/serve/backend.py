"""What the HTTP API does, apart from HTTP: hash media, look signals up in the bank, change
banks and their content. The shell (``serve.server``) gives it a bank kept current by the
same replica the workers use and a publisher that waits until its own writes are applied
(HMA's new content matches after 16-76 s; here after the write is in the replica). Tests
give it an in-memory publisher.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from modstream.bank.bank import Bank
from modstream.bank.controls import BankControls
from modstream.contracts import (
    BANK_CONFIG_TOPIC,
    HASHBANK_TOPIC,
    BankConfig,
    BankEntry,
    ContractError,
    EntryControl,
    MediaSignals,
    bank_key,
    dumps,
)
from modstream.formats.vpdq import format_vpdq_json, parse_vpdq
from modstream.matching.video import compare as compare_videos
from modstream.signals import for_exchange_name, registry

#: HMA's content types, and the media kind each is.
CONTENT_TYPES = {"photo": "image", "video": "video"}
#: Signals banked for each media kind (HMA banks PDQ of photos and the MD5 of videos).
BANKED = {"image": ("pdq", "md5", "sha256"), "video": ("md5", "sha256", "vpdq")}
#: HMA's names for modstream's signal types where they differ, by media kind.
HMA_NAMES = {("video", "md5"): "video_md5"}
#: What HMA's ``/h/hash`` answers, by media kind.
HMA_TYPES = {"image": frozenset({"pdq"}), "video": frozenset({"video_md5"})}
#: What ``/h/hash`` answers (``MODSTREAM_API_HASH_TYPES``): ``hma`` as HMA; ``banked``
#: HMA's and any other type some bank holds (one lookup per type a client like Coop makes,
#: and each of them could match); ``all`` every type modstream computes.
HASH_TYPE_POLICIES = ("banked", "hma", "all")
#: Routes that answer from the bank or its controls: while it loads they answer 503, never
#: a false "no match" or a 404 that a client takes for "deleted" (Coop drops its bank).
INDEX_PREFIXES = ("/m/", "/c/")
OPEN_WHILE_LOADING = frozenset({"/m/compare", "/m/index/status", "/c/signal_type",
                                "/c/content_type"})  # fmt: skip
#: Seconds a client is told to wait while the bank loads.
LOADING_RETRY_AFTER_S = 2
BANK_NAME = re.compile(r"^[A-Z0-9_]+$")
#: Most frames a vPDQ signal given to the API may have: over an hour at HMA's one frame a
#: second. Comparing two videos costs the product of their frames (8k x 8k: 1.5 s of CPU).
MAX_VPDQ_FRAMES = 4096
#: CPU time one ``/m/compare`` of videos may take (off the event loop), and how many may
#: run at once; beyond that the server is busy (503).
COMPARE_BUDGET_S = 5.0
MAX_COMPARES = 2


class ApiError(Exception):
    """An error the API answers with ``{"message": ...}`` and ``status``."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


def needs_index(path: str) -> bool:
    """Whether the route at ``path`` answers from the bank (so not while it loads)."""
    return path.startswith(INDEX_PREFIXES) and path.rstrip("/") not in OPEN_WHILE_LOADING


@dataclass
class _Share:
    running: asyncio.Semaphore
    users: int = 0  # running and waiting


class HashingShares:
    """Each caller's share of the hashing pool: at most ``per_caller`` fetch-and-hash jobs
    at once, so one key (or one anonymous address) cannot queue the pool up for everyone.
    Up to ``waiting_per_caller`` more wait their turn, at most ``wait_s`` (a backend such
    as Coop sends a batch's items at once, and a refused hash is a lost match); beyond
    either, 429. Holds only callers with a job running or waiting."""

    def __init__(self, per_caller: int, waiting_per_caller: int = 64, wait_s: float = 30.0):
        self.per_caller = per_caller
        self.waiting_per_caller = waiting_per_caller
        self.wait_s = wait_s
        self._shares: dict[str, _Share] = {}

    def callers(self) -> int:
        """How many callers have a job running or waiting."""
        return len(self._shares)

    def held(self, caller: str) -> int:
        """How many of ``caller``'s jobs are running or waiting."""
        share = self._shares.get(caller)
        return share.users if share else 0

    @asynccontextmanager
    async def slot(self, caller: str) -> AsyncIterator[None]:
        share = self._shares.get(caller)
        if share is None:
            share = self._shares[caller] = _Share(asyncio.Semaphore(self.per_caller))
        if share.users >= self.per_caller + self.waiting_per_caller:
            raise ApiError(
                429, f"{share.users} hashing jobs of this caller are running or waiting",
                retry_after=1,
            )  # fmt: skip
        share.users += 1
        try:
            try:
                async with asyncio.timeout(self.wait_s):
                    await share.running.acquire()
            except TimeoutError:
                raise ApiError(
                    429, "this caller's hashing jobs are taking long: retry", retry_after=1
                ) from None
            try:
                yield
            finally:
                share.running.release()
        finally:
            share.users -= 1
            if not share.users:
                del self._shares[caller]


class Publisher(Protocol):
    async def publish(self, topic: str, records: list[tuple[bytes, bytes | None]]) -> None:
        """Write the records and return once this process's replicas have applied them."""


@dataclass(frozen=True)
class Match:
    bank: str
    content_id: int | str
    distance: int


def content_id_of(entry_id: str) -> int | str:
    """HMA's content ids are integers; entries from elsewhere keep their own ids."""
    return int(entry_id) if entry_id.isdigit() else entry_id


class Backend:
    def __init__(
        self,
        bank: Bank,
        controls: BankControls,
        publisher: Publisher,
        hasher: Callable[[str, bytes], Awaitable[MediaSignals]],
        fetch: Callable[[str], Awaitable[bytes]],
        ready: Callable[[], bool] = lambda: True,
        hash_jobs_per_caller: int = 2,
        hash_waiting_per_caller: int = 64,
        hash_types: str = "banked",
    ) -> None:
        if hash_types not in HASH_TYPE_POLICIES:
            raise ValueError(f"hash_types: one of {', '.join(HASH_TYPE_POLICIES)}")
        self.bank = bank
        self.controls = controls
        self.publisher = publisher
        self.hasher = hasher
        self.fetch = fetch
        self.ready = ready
        self.shares = HashingShares(hash_jobs_per_caller, hash_waiting_per_caller)
        self.hash_types = hash_types
        self._comparing = asyncio.Semaphore(MAX_COMPARES)
        self.comparing = 0  # video compares running now (a metric)

    # ---- hashing ---------------------------------------------------------------------

    async def hash(self, content_type: str, data: bytes, caller: str) -> dict[str, str]:
        """The signals HMA would give (``pdq`` of a photo, ``video_md5`` of a video) and
        modstream's others (``md5``/``sha256``/``phash``, ``vpdq`` in its JSON form), in
        one of ``caller``'s hashing slots."""
        async with self.shares.slot(caller):
            return await self._hash(content_type, data)

    async def _hash(self, content_type: str, data: bytes) -> dict[str, str]:
        kind = CONTENT_TYPES.get(content_type)
        if kind is None:
            raise ApiError(400, f"no such content_type: {content_type!r}")
        found = await self.hasher(kind, data)
        # Byte digests survive a decoding failure; without the picture's PDQ it is an error.
        if found.error and (not found.signals or (kind == "image" and "pdq" not in found.signals)):
            raise ApiError(400, f"could not hash the {content_type}: {found.error}")
        hashes = {}
        for name, computed in found.signals.items():
            if name == "ocr":
                continue
            value = computed["value"]
            if name == "vpdq":
                value = format_vpdq_json(parse_vpdq(value))
            if name == "pdq" and computed.get("quality", 100) < 50:
                value = ""  # as HMA: a flat image has no usable PDQ
            hashes[HMA_NAMES.get((kind, name), name)] = value
        return hashes

    async def fetch_and_hash(
        self, url: str, content_type: str | None, caller: str
    ) -> tuple[str, dict[str, str]]:
        """The content type and signals of the media at ``url``, fetched and hashed in one
        of ``caller``'s slots."""
        async with self.shares.slot(caller):
            data = await self.fetch(url)
            kind = content_type or sniff(data)
            return kind, await self._hash(kind, data)

    def answered(self, content_type: str, hashes: dict[str, str]) -> dict[str, str]:
        """The signals ``/h/hash`` answers with, by ``hash_types``: a client looks each one
        up (Coop: one ``/m/lookup`` per type), so types no bank holds are only cost."""
        if self.hash_types == "all":
            return hashes
        kind = CONTENT_TYPES[content_type]
        wanted = set(HMA_TYPES[kind])
        if self.hash_types == "banked":
            held = {signal_type for _, signal_type in self.bank.sizes()}
            wanted.update(HMA_NAMES.get((kind, name), name) for name in held)
        return {name: value for name, value in hashes.items() if name in wanted}

    # ---- matching --------------------------------------------------------------------

    def signal_type(self, name: str) -> str:
        kind = for_exchange_name(name)
        if kind is None or kind.name == "ocr":
            raise ApiError(400, f"No such SignalType {name!r}")
        return kind.name

    def normalized(self, signal_type: str, signal: str) -> str:
        kind = registry()[signal_type]
        if signal_type == "pdq" and not re.fullmatch(r"[0-9a-f]{64}", signal):
            raise ApiError(400, "invalid signal: invalid PDQ hash")
        # Three commas a frame in either vPDQ form: too many frames is refused unparsed.
        if signal_type == "vpdq" and signal.count(",") > 3 * MAX_VPDQ_FRAMES:
            raise ApiError(400, f"invalid signal: vpdq has over {MAX_VPDQ_FRAMES} frames")
        try:
            normalized = kind.normalize(signal)
        except ValueError as exc:
            raise ApiError(400, f"invalid signal: {exc}") from None
        if signal_type == "vpdq" and normalized.count("\n") > MAX_VPDQ_FRAMES:
            raise ApiError(400, f"invalid signal: vpdq has over {MAX_VPDQ_FRAMES} frames")
        return normalized

    async def compare(self, signal_type_name: str, pair: list[str]) -> list[Any]:
        """``/m/compare``: whether two signals match, and their distance. Videos are
        compared in a thread, within ``COMPARE_BUDGET_S``, ``MAX_COMPARES`` at a time."""
        signal_type = self.signal_type(signal_type_name)
        left, right = (self.normalized(signal_type, s) for s in pair)
        kind = registry()[signal_type]
        if signal_type != "vpdq":
            distance = kind.distance(left, right)
        else:
            if self._comparing.locked():
                raise ApiError(503, "busy comparing other videos: retry", retry_after=1)
            async with self._comparing:
                self.comparing += 1
                try:
                    distance = await asyncio.to_thread(video_distance, left, right)
                finally:
                    self.comparing -= 1
        return [distance <= kind.thresholds.takedown, {"distance": distance}]

    def raw_matches(self, signal_type_name: str, signal: str) -> list[Match]:
        """Every entry within its bank's takedown distance (HMA's threshold: PDQ 31)."""
        signal_type = self.signal_type(signal_type_name)
        value = self.normalized(signal_type, signal)
        (found,) = self.bank.match_many(signal_type, [value], within="takedown")
        return [
            Match(m.entry.bank, content_id_of(m.entry.entry_id), m.distance)
            for m in sorted(found, key=lambda m: m.distance)
        ]

    def lookup(
        self,
        signal_type_name: str,
        signal: str,
        banks: Iterable[str] = (),
        seed: str | None = None,
        bypass_coinflip: bool = False,
    ) -> dict[str, list[dict[str, Any]]]:
        """HMA's lookup: matches by bank, without disabled content or disabled banks, each
        bank in or out by its enabled ratio against one coin flip (``seed`` makes it
        repeatable)."""
        wanted = set(banks)
        coinflip = random.Random(seed).random() if seed is not None else random.random()
        now = time.time()
        found: dict[str, list[dict[str, Any]]] = {}
        for match in self.raw_matches(signal_type_name, signal):
            if wanted and match.bank not in wanted:
                continue
            config = self.controls.bank(match.bank)
            if not config.enabled:
                continue
            if not bypass_coinflip and config.enabled_ratio < coinflip:
                continue
            key = bank_key(match.bank, self.signal_type(signal_type_name), str(match.content_id))
            disabled = self.controls.entry(key).disabled_until
            if disabled is not None and disabled > now:
                continue
            found.setdefault(match.bank, []).append(
                {"bank_content_id": match.content_id, "distance": str(match.distance)}
            )
        return found

    def index_status(self) -> dict[str, dict[str, Any]]:
        sizes: dict[str, int] = {}
        for (_, signal_type), count in self.bank.sizes().items():
            sizes[signal_type] = sizes.get(signal_type, 0) + count
        return {
            name: {"built_to": int(time.time()) if self.ready() else -1,
                   "present": self.ready(), "size": sizes.get(name, 0)}
            for name in sorted(registry())
            if name != "ocr"
        }  # fmt: skip

    # ---- banks -----------------------------------------------------------------------

    def banks(self) -> list[str]:
        named = {bank for bank, _ in self.bank.sizes()} | set(self.controls.configured_banks())
        return sorted(named)

    def bank_json(self, name: str) -> dict[str, Any]:
        config = self.controls.bank(name)
        ratio = config.enabled_ratio if config.enabled else 0.0
        return {"matching_enabled_ratio": ratio, "name": name}

    def require_bank(self, name: str) -> None:
        if name not in self.banks():
            raise ApiError(404, f"bank {name!r} not found")

    async def create_bank(self, name: str, ratio: float) -> dict[str, Any]:
        if not BANK_NAME.match(name):
            raise ApiError(400, "Bank names must be UPPER_WITH_UNDERSCORE")
        if name in self.banks():
            raise ApiError(403, "Bank already exists")
        await self._configure(name, BankConfig(enabled_ratio=_ratio(ratio)))
        return self.bank_json(name)

    async def update_bank(self, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        self.require_bank(name)
        if "name" in changes and changes["name"] != name:
            raise ApiError(400, "renaming a bank is not supported (its entries are keyed by it)")
        config = self.controls.bank(name)
        ratio = config.enabled_ratio
        if "enabled" in changes:
            if not isinstance(changes["enabled"], bool):
                raise ApiError(400, "enabled must be true or false")
            ratio = 1.0 if changes["enabled"] else 0.0
        if "enabled_ratio" in changes:
            ratio = _ratio(changes["enabled_ratio"])
        await self._configure(name, dataclasses.replace(config, enabled=True, enabled_ratio=ratio))
        return self.bank_json(name)

    async def delete_bank(self, name: str) -> None:
        keys = self.bank.keys(name)
        if keys:
            await self.publisher.publish(HASHBANK_TOPIC, [(k.encode(), None) for k in keys])
        if name in self.controls.configured_banks():
            await self.publisher.publish(BANK_CONFIG_TOPIC, [(f"bank/{name}".encode(), None)])

    async def _configure(self, name: str, config: BankConfig) -> None:
        """Publish the config, once it is one every replica accepts (what they refuse
        would leave the bank as it was everywhere, after a 201 here)."""
        record = config.to_json()
        try:
            BankConfig.parse(record)
        except ContractError as exc:
            raise ApiError(400, str(exc)) from None
        await self.publisher.publish(BANK_CONFIG_TOPIC, [(f"bank/{name}".encode(), record)])

    # ---- content ---------------------------------------------------------------------

    async def add_signals(
        self, bank: str, signals: dict[str, str], note: str = "", kind: str | None = None
    ) -> dict:
        """One content id for the signals given (HMA's ``/signal`` and ``/content``)."""
        self.require_bank(bank)
        if not signals:
            raise ApiError(400, "No signals given")
        content_id = secrets.randbits(52)  # unique without coordination between servers
        entries, shown = [], {}
        for name, value in signals.items():
            try:
                signal_type = self.signal_type(name)
            except ApiError:
                raise ApiError(400, f"No such signal type {name}") from None
            try:
                normalized = self.normalized(signal_type, value)
            except ApiError:
                raise ApiError(400, f"Invalid {name} signal: invalid {name} hash") from None
            shown[name] = value
            provenance = {"source": "http_api"} | ({"note": note[:255]} if note else {})
            if kind is not None:
                provenance["kind"] = kind
            entries.append(
                BankEntry(bank, str(content_id), signal_type, normalized,
                          added_at=_now_iso(), provenance=provenance)
            )  # fmt: skip
        await self.publisher.publish(HASHBANK_TOPIC, [(e.key.encode(), dumps(e)) for e in entries])
        return {"id": content_id, "signals": shown}

    async def add_media(self, bank: str, content_type: str, hashes: dict[str, str]) -> dict:
        kind = CONTENT_TYPES[content_type]
        wanted = {HMA_NAMES.get((kind, name), name) for name in BANKED[kind]}
        chosen = {name: value for name, value in hashes.items() if name in wanted}
        if kind == "image" and not chosen.get("pdq"):
            raise ApiError(400, "Invalid pdq signal: invalid PDQ hash")
        return await self.add_signals(bank, chosen, kind=kind)

    def content(self, bank: str, content_id: str) -> list[BankEntry]:
        return [
            entry
            for name in registry()
            if (entry := self.bank.entry(bank_key(bank, name, content_id))) is not None
        ]

    def content_json(self, bank: str, content_id: str, include_signals: bool) -> dict[str, Any]:
        self.require_bank(bank)
        entries = self.content(bank, content_id)
        if not entries:
            raise ApiError(404, f"content {content_id!r} not found")
        disabled = self.controls.entry(entries[0].key).disabled_until
        found = {
            "bank": self.bank_json(bank),
            "disable_until_ts": int(disabled) if disabled else 1,
            "id": content_id_of(content_id),
            "original_media_uri": None,
        }
        if include_signals:
            found["signals"] = {_hma_name(e): _shown(e) for e in entries}
        return found

    async def update_content(self, bank: str, content_id: str, changes: dict) -> dict:
        entries = self.content(bank, content_id)
        if not entries:
            raise ApiError(404, f"content {content_id!r} not found")
        until = changes.get("disable_until_ts")
        if until is not None and not isinstance(until, int | float):
            raise ApiError(400, "disable_until_ts must be a number")
        control = EntryControl(disabled_until=float(until) if until and until > 1 else None)
        await self.publisher.publish(
            BANK_CONFIG_TOPIC,
            [(f"entry/{e.key}".encode(), control.to_json()) for e in entries],
        )
        found = self.content_json(bank, content_id, include_signals=False)
        found.update(collab_metadata={}, note=str(changes.get("note") or ""), user_metadata={})
        return found

    async def delete_content(self, bank: str, content_id: str) -> int:
        self.require_bank(bank)
        entries = self.content(bank, content_id)
        if entries:
            await self.publisher.publish(HASHBANK_TOPIC, [(e.key.encode(), None) for e in entries])
        return 1 if entries else 0


def sniff(data: bytes) -> str:
    """HMA's content type of fetched bytes by their first bytes: images by their magic
    numbers, anything else is tried as a video."""
    head = data[:16]
    images = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"II*\x00", b"MM\x00*")
    if head.startswith(images) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return "photo"
    return "video"


def video_distance(query: str, bank: str) -> int:
    """vPDQ's distance of two (normalized) videos, or a 400 past the time budget."""
    deadline = time.monotonic() + COMPARE_BUDGET_S
    try:
        found = compare_videos(parse_vpdq(query), parse_vpdq(bank), deadline=deadline)
    except TimeoutError:
        raise ApiError(400, f"comparing these videos takes over {COMPARE_BUDGET_S:g} s") from None
    return found.distance


def _hma_name(entry: BankEntry) -> str:
    if entry.signal_type == "md5" and entry.provenance and entry.provenance.get("kind") == "video":
        return "video_md5"
    return entry.signal_type


def _shown(entry: BankEntry) -> str:
    return (
        format_vpdq_json(parse_vpdq(entry.signal)) if entry.signal_type == "vpdq" else entry.signal
    )


def _ratio(value: Any) -> float:
    try:
        ratio = float(value)
    except (TypeError, ValueError):
        raise ApiError(400, "enabled_ratio must be a number between 0 and 1") from None
    if isinstance(value, bool) or not math.isfinite(ratio) or not 0.0 <= ratio <= 1.0:
        raise ApiError(400, "enabled_ratio must be a number between 0 and 1")
    return ratio


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
