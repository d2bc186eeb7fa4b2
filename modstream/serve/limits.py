"""Bounds on what one request's body may cost the server: its bytes (counted as they
arrive, whatever ``Content-Length`` says or whether there is one) and each part of a
multipart body while it streams. (Each caller's share of the hashing pool is
``backend.HashingShares``.)"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from modstream.serve.backend import ApiError

#: Largest upload accepted by the multipart media endpoints (HMA has no limit; a limit is
#: a choice), and the largest body of those endpoints: the upload and its framing.
MAX_UPLOAD_BYTES = 64 * 1024 * 1024
MAX_UPLOAD_BODY_BYTES = MAX_UPLOAD_BYTES + 1024 * 1024
#: Largest body of every other request (JSON, or /v1's multipart, whose event must fit a
#: Kafka record anyway): a vPDQ signal at its frame limit is ~350 kB of JSON.
MAX_BODY_BYTES = 2 * 1024 * 1024
#: The endpoints that take a media upload (POST only).
_UPLOAD_PATHS = re.compile(r"^/(h/hash|m/lookup|c/bank/[^/]+/content)$")


def body_limit(method: str, path: str) -> int:
    """The most bytes a request's body may have."""
    if method.upper() == "POST" and _UPLOAD_PATHS.match(path):
        return MAX_UPLOAD_BODY_BYTES
    return MAX_BODY_BYTES


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a body passes its limit. The answer closes the
    connection, so the rest of the body is never read."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413, f"request body larger than {limit} bytes", headers={"Connection": "close"}
        )


class BodyLimit:
    """ASGI middleware: counts the body's bytes as the application reads them and stops
    at the request's limit (``body_limit``). A declared ``Content-Length`` over it is
    refused before anything is read by the app's guard (``declared_too_large``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = body_limit(scope["method"], scope["path"])
        received = 0

        async def counted() -> Message:
            nonlocal received
            if received > limit:
                raise BodyTooLarge(limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)


def declared_too_large(method: str, path: str, content_length: str | None) -> int | None:
    """The limit a declared ``Content-Length`` passes, if it does (refused before reading)."""
    limit = body_limit(method, path)
    try:
        declared = int(content_length or 0)
    except ValueError:
        return None  # the server refuses a malformed length itself
    return limit if declared > limit else None


class _BoundedParser(MultiPartParser):
    """Starlette's multipart parser, with a bound on each file part too (its own bound
    covers fields only): a part over ``max_file_bytes`` stops the parse as it streams."""

    def __init__(self, request: Request, max_files: int, max_fields: int, max_file_bytes: int):
        super().__init__(
            request.headers, request.stream(), max_files=max_files, max_fields=max_fields,
            max_part_size=max_file_bytes,
        )  # fmt: skip
        self.max_file_bytes = max_file_bytes
        self._file_bytes = 0

    def on_part_begin(self) -> None:
        super().on_part_begin()
        self._file_bytes = 0

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._current_part.file is not None:
            self._file_bytes += end - start
            if self._file_bytes > self.max_file_bytes:
                raise ApiError(413, f"a file part larger than {self.max_file_bytes} bytes")
        super().on_part_data(data, start, end)


@asynccontextmanager
async def bounded_form(
    request: Request, max_files: int, max_fields: int, max_part_bytes: int
) -> AsyncIterator[FormData]:
    """The request's multipart form, each part (file or field) at most ``max_part_bytes``,
    its spooled files closed on leaving."""
    parser = _BoundedParser(request, max_files, max_fields, max_part_bytes)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise ApiError(400, exc.message) from None
    try:
        yield form
    finally:
        await form.close()
