"""The endpoints of Meta's Hasher-Matcher-Actioner (HMA 2.x, OpenMediaMatch), answering the
same requests the same way (shapes and status codes as a running HMA answered them:
docs/http-api.md), so a client configured for HMA, ROOST's Coop among them, only changes the
host. Where modstream knows more (vPDQ, MD5 of photos, SHA-256, pHash) it adds keys without
changing HMA's.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Body, FastAPI, Request
from fastapi.responses import PlainTextResponse
from starlette.datastructures import UploadFile

from modstream.serve.access import bank_owners, may_see, request_key, require_bank_access
from modstream.serve.backend import CONTENT_TYPES, LOADING_RETRY_AFTER_S, ApiError, Backend
from modstream.serve.limits import MAX_UPLOAD_BYTES, bounded_form
from modstream.signals import registry


def add_hma_routes(api: FastAPI, backend: Backend) -> None:
    """On the app itself, not an included router: every route is then one of the app's
    (the site map, metrics by route template)."""

    @api.get("/status", response_class=PlainTextResponse, tags=["hma"])
    async def status() -> PlainTextResponse:
        """``I-AM-ALIVE`` once the bank is loaded, ``INDEX-NOT-LOADED`` (503) before."""
        if not backend.ready():
            return PlainTextResponse(
                "INDEX-NOT-LOADED", status_code=503,
                headers={"Retry-After": str(LOADING_RETRY_AFTER_S)},
            )  # fmt: skip
        return PlainTextResponse("I-AM-ALIVE")

    @api.get("/status/live", response_class=PlainTextResponse, tags=["hma"])
    async def status_live() -> PlainTextResponse:
        return PlainTextResponse("I-AM-ALIVE")

    @api.get("/site-map", tags=["hma"])
    async def site_map(request: Request) -> list[str]:
        return sorted(request.app.openapi()["paths"])

    # ---- hashing -------------------------------------------------------------------------

    @api.get("/h/hash", tags=["hma"])
    async def hash_url(
        request: Request, url: str, content_type: str | None = None, types: str | None = None
    ) -> dict[str, str]:
        """The signals of the media at ``url`` (fetched SSRF-safely): HMA's and those some
        bank holds (``MODSTREAM_API_HASH_TYPES``), or the ``types`` asked for."""
        kind, hashes = await backend.fetch_and_hash(url, content_type, _caller(request))
        return _only(hashes, types) if types else backend.answered(kind, hashes)

    @api.post("/h/hash", tags=["hma"])
    async def hash_upload(request: Request, types: str | None = None) -> dict[str, str]:
        """The signals of an uploaded ``photo`` or ``video`` (multipart)."""
        content_type, data = await _one_upload(request)
        hashes = await backend.hash(content_type, data, _caller(request))
        return _only(hashes, types) if types else backend.answered(content_type, hashes)

    # ---- matching ------------------------------------------------------------------------

    @api.get("/m/lookup", tags=["hma"])
    async def lookup_get(
        request: Request,
        signal: str | None = None,
        signal_type: str | None = None,
        url: str | None = None,
        content_type: str | None = None,
        banks: str | None = None,
        seed: str | None = None,
    ) -> dict[str, Any]:
        """Matches by bank of one signal, or by signal type and bank of the media at ``url``.
        As in HMA, ``bypass_coinflip`` is honoured only by ``POST``."""
        wanted = _names(banks)
        if url:
            _, hashes = await backend.fetch_and_hash(url, content_type, _caller(request))
            found = _lookup_all(backend, hashes, wanted, seed, False)
            return found.get(signal_type or "", found)
        if not signal or not signal_type:
            raise ApiError(400, "Either url or both signal and signal_type are required")
        return backend.lookup(signal_type, signal, wanted, seed)

    @api.post("/m/lookup", tags=["hma"])
    async def lookup_post(
        request: Request,
        banks: str | None = None,
        seed: str | None = None,
        bypass_coinflip: bool = False,
    ) -> dict[str, Any]:
        """Hash an uploaded ``photo`` or ``video`` and look each signal up."""
        content_type, data = await _one_upload(request)
        hashes = await backend.hash(content_type, data, _caller(request))
        return _lookup_all(backend, hashes, _names(banks), seed, bypass_coinflip)

    @api.get("/m/raw_lookup", tags=["hma"])
    async def raw_lookup(
        signal_type: str, signal: str, include_distance: bool = False
    ) -> dict[str, list[Any]]:
        """Every matching content id, ignoring disabled content and bank ratios."""
        matches = backend.raw_matches(signal_type, signal)
        if include_distance:
            return {
                "matches": [
                    {"bank_content_id": m.content_id, "distance": str(m.distance)} for m in matches
                ]
            }
        return {"matches": [m.content_id for m in matches]}

    @api.post("/m/compare", tags=["hma"])
    async def compare_signals(
        pairs: Annotated[dict[str, list[str]], Body()],
    ) -> dict[str, list[Any]]:
        """``{"pdq": [a, b]}`` -> ``{"pdq": [matches, {"distance": d}]}``."""
        found = {}
        for name, pair in pairs.items():
            if len(pair) != 2:
                raise ApiError(400, f"{name}: expected two signals to compare")
            found[name] = await backend.compare(name, pair)
        return found

    @api.get("/m/index/status", tags=["hma"])
    async def index_status(signal_type: str | None = None) -> dict[str, Any]:
        found = backend.index_status()
        if signal_type is not None:
            name = backend.signal_type(signal_type)
            return {signal_type: found[name]}
        return found

    # ---- curation ------------------------------------------------------------------------

    @api.get("/c/banks", tags=["hma"])
    async def banks(request: Request) -> list[dict[str, Any]]:
        """The banks the key may read: the shared ones and its platforms' own."""
        key, controls = request_key(request), backend.controls
        return [
            backend.bank_json(name)
            for name in backend.banks()
            if may_see(key, bank_owners(name, controls))
        ]

    @api.post("/c/banks", status_code=201, tags=["hma"])
    async def create_bank(
        request: Request,
        name: Annotated[str, Body()],
        enabled_ratio: Annotated[float | None, Body()] = None,
        enabled: Annotated[bool | None, Body()] = None,
    ) -> dict[str, Any]:
        require_bank_access(request, backend.controls, name)
        ratio = enabled_ratio if enabled_ratio is not None else (0.0 if enabled is False else 1.0)
        return await backend.create_bank(name, ratio)

    @api.get("/c/bank/{bank_name}", tags=["hma"])
    async def bank(request: Request, bank_name: str) -> dict[str, Any]:
        require_bank_access(request, backend.controls, bank_name, change=False)
        backend.require_bank(bank_name)
        return backend.bank_json(bank_name)

    @api.put("/c/bank/{bank_name}", tags=["hma"])
    async def update_bank(
        request: Request, bank_name: str, changes: Annotated[dict[str, Any], Body()]
    ) -> dict[str, Any]:
        require_bank_access(request, backend.controls, bank_name)
        return await backend.update_bank(bank_name, changes)

    @api.delete("/c/bank/{bank_name}", tags=["hma"])
    async def delete_bank(request: Request, bank_name: str) -> dict[str, str]:
        require_bank_access(request, backend.controls, bank_name)
        await backend.delete_bank(bank_name)
        return {"message": "Done"}

    @api.post("/c/bank/{bank_name}/signal", tags=["hma"])
    async def add_signal(
        request: Request, bank_name: str, signals: Annotated[dict[str, str], Body()]
    ) -> dict[str, Any]:
        """Add signals directly: ``{"pdq": "<hex>", ...}`` is one new content id."""
        require_bank_access(request, backend.controls, bank_name)
        note = str(signals.pop("note", "") or "")
        return await backend.add_signals(bank_name, signals, note)

    @api.post("/c/bank/{bank_name}/content", tags=["hma"])
    async def add_content(
        request: Request,
        bank_name: str,
        url: str | None = None,
        content_type: str | None = None,
    ) -> dict[str, Any]:
        """Add media by ``?url=`` or a multipart ``photo``/``video`` upload."""
        require_bank_access(request, backend.controls, bank_name)
        backend.require_bank(bank_name)
        if url:
            kind, hashes = await backend.fetch_and_hash(url, content_type, _caller(request))
        elif request.headers.get("content-type", "").startswith("multipart/form-data"):
            kind, data = await _one_upload(request)
            hashes = await backend.hash(kind, data, _caller(request))
        else:
            raise ApiError(400, "Neither `url` nor multipart file upload was received")
        return await backend.add_media(bank_name, kind, hashes)

    @api.get("/c/bank/{bank_name}/content/{content_id}", tags=["hma"])
    async def content(
        request: Request, bank_name: str, content_id: str, include_signals: bool = False
    ) -> dict[str, Any]:
        require_bank_access(request, backend.controls, bank_name, change=False)
        return backend.content_json(bank_name, content_id, include_signals)

    @api.put("/c/bank/{bank_name}/content/{content_id}", tags=["hma"])
    async def update_content(
        request: Request,
        bank_name: str,
        content_id: str,
        changes: Annotated[dict[str, Any], Body()],
    ) -> dict[str, Any]:
        """``{"disable_until_ts": epoch seconds}`` disables the content until then (a time
        in the past, or 1, enables it again), at once on every worker."""
        require_bank_access(request, backend.controls, bank_name)
        return await backend.update_content(bank_name, content_id, changes)

    @api.delete("/c/bank/{bank_name}/content/{content_id}", tags=["hma"])
    async def delete_content(request: Request, bank_name: str, content_id: str) -> dict[str, int]:
        require_bank_access(request, backend.controls, bank_name)
        return {"deleted": await backend.delete_content(bank_name, content_id)}

    @api.get("/c/signal_type", tags=["hma"])
    async def signal_types() -> list[dict[str, Any]]:
        return [
            {"name": name, "enabled_ratio": 1.0} for name in sorted(registry()) if name != "ocr"
        ]

    @api.get("/c/content_type", tags=["hma"])
    async def content_types() -> list[dict[str, Any]]:
        return [{"name": name, "enabled": True} for name in CONTENT_TYPES]


def _caller(request: Request) -> str:
    """Whom the request's hashing counts against (set by the app's guard)."""
    return str(getattr(request.state, "caller", "unknown"))


def _names(text: str | None) -> list[str]:
    return [name.strip() for name in (text or "").split(",") if name.strip()]


def _only(hashes: dict[str, str], types: str | None) -> dict[str, str]:
    wanted = _names(types)
    return {k: v for k, v in hashes.items() if k in wanted} if wanted else hashes


def _lookup_all(
    backend: Backend, hashes: dict[str, str], banks: list[str], seed: str | None, bypass: bool
) -> dict[str, Any]:
    found = {}
    for name, value in hashes.items():
        found[name] = backend.lookup(name, value, banks, seed, bypass) if value else {}
    return found


async def _one_upload(request: Request) -> tuple[str, bytes]:
    """HMA's multipart convention: one file, its field name the content type."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(400, "Missing multipart/form-data file upload")
    async with bounded_form(request, 2, 8, MAX_UPLOAD_BYTES) as form:
        files = [(n, value) for n, value in form.multi_items() if isinstance(value, UploadFile)]
        if not files:
            raise ApiError(400, "Missing multipart/form-data file upload")
        if len(files) > 1:
            raise ApiError(400, "Only one file allowed per request")
        name, upload = files[0]
        if name not in CONTENT_TYPES:
            raise ApiError(400, f"no such content_type: {name!r}")
        return name, await upload.read()
