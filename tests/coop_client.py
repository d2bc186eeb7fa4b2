"""The calls ROOST's Coop makes to an HMA (its ``HmaService``, over its own ``fetchHTTP``), as
issue 25 measured them, so tests replay Coop against ``modstream serve`` without Node.

What Coop does and this keeps: the base URL is ``HMA_SERVICE_URL`` as configured, its default
ending in ``/``, and paths are appended to it (``${url}/c/...``: a double slash); JSON bodies
with ``Content-Type: application/json``; ``enabled_ratio`` as a string; no API key and no
``Origin`` (a server-to-server call); content added as a multipart ``photo``; per item, a
``getBank`` per bank, one ``/h/hash?url=`` and one ``/m/lookup`` per signal type the hash
returned. Any error while matching an item stores no hashes for it (``submitItems.ts``): no
match, nothing shown. A 404 from ``getBank`` means "deleted on the server" to Coop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import aiohttp

JSON = {"Content-Type": "application/json"}


class CoopError(Exception):
    """A non-2xx answer, as Coop's ``fetchHTTP`` throws it."""

    def __init__(self, status: int, body: object) -> None:
        super().__init__(f"{status}: {body}")
        self.status, self.body = status, body


@dataclass
class ItemResult:
    """What Coop stores for one item: its hashes and matches, or nothing after an error."""

    hashes: dict[str, str] = field(default_factory=dict)
    matches: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: list[int] = field(default_factory=list)


class HmaService:
    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self.session = session
        self.base_url = base_url  # as configured: "http://host:port/" (a trailing slash)

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        async with self.session.request(method, f"{self.base_url}{path}", **kwargs) as answer:
            body = await answer.json(content_type=None)
            if not 200 <= answer.status < 300:
                raise CoopError(answer.status, body)
            return body

    async def create_bank(self, name: str, enabled_ratio: float = 1.0) -> Any:
        body = {"name": name, "enabled_ratio": str(enabled_ratio)}
        return await self._call("POST", "/c/banks", json=body, headers=JSON)

    async def get_bank(self, name: str) -> Any:
        return await self._call("GET", f"/c/bank/{name}")

    async def update_bank(self, name: str, enabled_ratio: float) -> Any:
        body = {"enabled_ratio": str(enabled_ratio)}
        return await self._call("PUT", f"/c/bank/{name}", json=body, headers=JSON)

    async def delete_bank(self, name: str) -> Any:
        return await self._call("DELETE", f"/c/bank/{name}")

    async def add_content(self, bank: str, image: bytes) -> Any:
        form = aiohttp.FormData()
        form.add_field("photo", image, filename="image.jpg", content_type="image/jpeg")
        return await self._call("POST", f"/c/bank/{bank}/content", data=form)

    async def hash(self, url: str) -> dict[str, str]:
        return await self._call("GET", "/h/hash", params={"url": url})

    async def lookup(self, signal_type: str, signal: str) -> dict[str, Any]:
        params = {"signal_type": signal_type, "signal": signal}
        return await self._call("GET", "/m/lookup", params=params)

    async def match_item(self, banks: list[str], url: str) -> ItemResult:
        """Coop's matching of one image item: on any error, no hashes (and no match)."""
        try:
            for bank in banks:
                await self.get_bank(bank)
            hashes = await self.hash(url)
            matches = {}
            for signal_type, signal in hashes.items():
                if signal:
                    matches[signal_type] = await self.lookup(signal_type, signal)
            return ItemResult(hashes, matches)
        except CoopError as exc:
            return ItemResult(errors=[exc.status])

    async def match_batch(self, banks: list[str], urls: list[str]) -> list[ItemResult]:
        """A batch of items, all at once, as Coop's ``submitItems`` sends them."""
        return await asyncio.gather(*(self.match_item(banks, url) for url in urls))


def matched(result: ItemResult, bank: str) -> bool:
    return any(bank in found for found in result.matches.values())
