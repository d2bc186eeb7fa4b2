"""Fetch media by URL without becoming a proxy into the private network (SSRF).

The URL is parsed and checked once (``urls.fetchable_url``) and that parsed URL is what the
client requests, so the host checked is the host connected to. Every address a name resolves
to is checked, and the connection goes to the checked address (no second lookup an attacker's
DNS could answer differently). Loopback, private, link-local, multicast, reserved and
unspecified addresses are refused unless allowlisted. Redirects are followed by hand so that
each hop is checked again. Size and time are capped. URLs in error messages are redacted.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver
from yarl import URL

from modstream.contracts import MediaError
from modstream.ingest.urls import (
    Network,
    address_allowed,
    fetchable_url,
    host_address,
    redact_url,
    redact_urls,
)


@dataclass(frozen=True)
class FetchPolicy:
    allow: tuple[str, ...] = ()
    max_bytes: int = 20 * 1024 * 1024
    timeout_s: float = 10.0
    max_redirects: int = 3
    #: Videos stream to a file instead of memory, with limits of their own.
    video_max_bytes: int = 1024 * 1024 * 1024
    video_timeout_s: float = 300.0

    def networks(self) -> list[Network]:
        return [ipaddress.ip_network(item, strict=False) for item in self.allow]


class _CheckingResolver(AbstractResolver):
    """Resolves with the system resolver, then drops every address the policy refuses."""

    def __init__(self, allow: list[Network]) -> None:
        self._inner = aiohttp.ThreadedResolver()
        self._allow = allow

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[Any]:
        answers = await self._inner.resolve(host, port, family)
        allowed = []
        for answer in answers:
            address = host_address(answer["host"])
            if address is not None and address_allowed(address, self._allow):
                allowed.append(answer)
        if not allowed:
            raise MediaError("blocked_address", f"{host} resolves only to refused addresses")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


class Fetcher:
    """One pooled HTTP client for the worker's lifetime."""

    def __init__(self, policy: FetchPolicy) -> None:
        self.policy = policy
        self._allow = policy.networks()
        self._session: aiohttp.ClientSession | None = None

    async def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(resolver=_CheckingResolver(self._allow), limit=64)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.policy.timeout_s),
                headers={"User-Agent": "modstream-fetcher/0.1"},
                auto_decompress=False,
            )
        return self._session

    async def fetch(self, url: str) -> bytes:
        """The body at ``url``; raises MediaError with a reason label on any refusal or failure."""
        body = bytearray()
        await self._fetch(url, body.extend, self.policy.max_bytes, self.policy.timeout_s)
        return bytes(body)

    async def fetch_to_file(self, url: str, path: Path) -> None:
        """Stream the body at ``url`` into ``path`` (a video: too big for memory), with the
        video limits. On failure the partial file is the caller's to remove."""
        with path.open("wb") as out:
            await self._fetch(
                url, out.write, self.policy.video_max_bytes, self.policy.video_timeout_s
            )

    async def _fetch(
        self, url: str, write: Callable[[bytes], object], limit: int, timeout_s: float
    ) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                await self._follow(url, write, limit)
        except MediaError:
            raise
        except TimeoutError:
            raise MediaError("timeout", f"fetch took over {timeout_s:g}s") from None
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, MediaError):
                raise exc.os_error from None
            message = redact_urls(f"cannot connect: {exc.os_error}")
            raise MediaError("unreachable", message) from None
        except aiohttp.ClientError as exc:
            raise MediaError("http_error", redact_urls(f"fetch failed: {exc}")) from None
        except ValueError as exc:  # what the client refuses to request (UnicodeError too)
            raise MediaError("bad_url", redact_urls(f"cannot request the URL: {exc}")) from None

    async def _follow(self, url: str, write: Callable[[bytes], object], limit: int) -> None:
        session = await self._client()
        target = fetchable_url(url, self._allow)  # the parsed URL is what gets requested
        for _ in range(self.policy.max_redirects + 1):
            async with session.get(target, allow_redirects=False) as response:
                shown = redact_url(str(target))
                if response.status in (301, 302, 303, 307, 308):
                    location = response.headers.get("Location")
                    if not location:
                        raise MediaError("http_error", f"redirect without Location from {shown}")
                    target = fetchable_url(target.join(URL(location)), self._allow)
                    continue
                if response.status != 200:
                    raise MediaError("http_status", f"HTTP {response.status} from {shown}")
                await self._read_capped(response, write, limit)
                return
        raise MediaError("too_many_redirects", f"more than {self.policy.max_redirects} redirects")

    async def _read_capped(
        self, response: aiohttp.ClientResponse, write: Callable[[bytes], object], limit: int
    ) -> None:
        if response.content_length is not None and response.content_length > limit:
            raise MediaError("too_large", f"Content-Length {response.content_length} > {limit}")
        size = 0
        async for chunk in response.content.iter_chunked(65536):
            size += len(chunk)
            if size > limit:
                raise MediaError("too_large", f"body exceeds {limit} bytes")
            write(chunk)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
