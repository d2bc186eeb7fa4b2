"""modstream's own endpoints (``/v1``): uploads in (to the pipeline's topics), decisions
out, reviewers' outcomes in. Events are validated with the pipeline's own contracts, so a
bad event is a 400 naming the field here rather than a dead letter later."""

from __future__ import annotations

import asyncio
import base64
from collections import OrderedDict
from collections.abc import Callable
from typing import Annotated, Any, Protocol, TypeVar

import orjson
from fastapi import Body, FastAPI, Request
from fastapi.responses import JSONResponse

from modstream.contracts import ContractError, ReviewOutcome, UploadEvent, refuse_deep
from modstream.serve.access import ApiKey
from modstream.serve.backend import ApiError
from modstream.serve.limits import bounded_form

MAX_WAIT_S = 30.0
#: An event is one Kafka record on ``uploads`` (the broker's default limit is 1 MiB).
MAX_EVENT_BYTES = 1_000_000
#: Media parts of a multipart upload: the form's field name is the media kind (HMA's
#: ``photo`` is an image).
MEDIA_FIELDS = {"image": "image", "photo": "image", "video": "video"}
_UPLOAD_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {"type": "object", "description": "an UploadEvent"}},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["event"],
                "properties": {
                    "event": {"type": "string", "description": "the UploadEvent as JSON"},
                    "image": {"type": "string", "format": "binary"},
                    "video": {"type": "string", "format": "binary"},
                },
            }
        },
    },
}


class Submitter(Protocol):
    async def upload(self, event: UploadEvent, raw: bytes) -> None:
        """Publish the event where the pipeline reads it (its platform's topic if bound)."""

    async def review_outcome(self, outcome: ReviewOutcome, raw: bytes) -> None: ...


class RecentDecisions:
    """The decisions this process has seen on ``decisions`` since it started (the newest
    ``capacity`` of them), and the requests waiting for one."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._decisions: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        self._waiting: dict[tuple[str, str], list[asyncio.Future[dict[str, Any]]]] = {}

    def add(self, decision: dict[str, Any]) -> None:
        key = (str(decision.get("platform")), str(decision.get("event_id")))
        self._decisions[key] = decision  # a human decision replaces the automated one
        self._decisions.move_to_end(key)
        while len(self._decisions) > self.capacity:
            self._decisions.popitem(last=False)
        for waiter in self._waiting.pop(key, []):
            if not waiter.done():
                waiter.set_result(decision)

    def waiting(self) -> int:
        """How many requests wait for a decision."""
        return sum(map(len, self._waiting.values()))

    def get(self, platform: str, event_id: str) -> dict[str, Any] | None:
        return self._decisions.get((platform, event_id))

    async def wait(self, platform: str, event_id: str, timeout_s: float) -> dict[str, Any] | None:
        key = (platform, event_id)
        if key in self._decisions:
            return self._decisions[key]
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append(waiter)
        try:
            return await asyncio.wait_for(waiter, timeout_s)
        except TimeoutError:
            return None
        finally:
            waiters = self._waiting.get(key, [])
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._waiting.pop(key, None)


def add_v1_routes(api: FastAPI, submitter: Submitter, decisions: RecentDecisions) -> None:
    @api.post(
        "/v1/uploads", status_code=202, tags=["v1"], openapi_extra={"requestBody": _UPLOAD_BODY}
    )
    async def submit_upload(request: Request, wait: float = 0.0) -> Any:
        """Publish an UploadEvent (docs/events.md); 202 with its id, or with ``?wait=S``
        (up to 30) the decision itself if it comes within S seconds. As JSON, or as
        multipart: the event in the field ``event`` and each medium as a file in a field
        named by its kind (``image``, ``photo`` or ``video``), carried inline."""
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            event = await _multipart_event(request)
        else:
            event = _json_object(await request.body())
        upload, raw = _accepted(request, UploadEvent.parse, event)
        if len(raw) > MAX_EVENT_BYTES:
            raise ApiError(
                413,
                f"the event is {len(raw)} bytes, over the {MAX_EVENT_BYTES} a record may "
                "carry: give large media by url or path",
            )
        if not 0 <= wait <= MAX_WAIT_S:
            raise ApiError(400, f"wait: 0 .. {MAX_WAIT_S:g} seconds")
        waiting = (
            asyncio.ensure_future(decisions.wait(upload.platform, upload.event_id, wait))
            if wait
            else None
        )
        try:
            await submitter.upload(upload, raw)
        except BaseException:
            if waiting is not None:  # nobody will read it: stop waiting now
                waiting.cancel()
                await asyncio.gather(waiting, return_exceptions=True)
            raise
        if waiting is not None:
            decision = await waiting
            if decision is not None:
                return JSONResponse(decision, status_code=200)
        return {"event_id": upload.event_id, "platform": upload.platform, "status": "accepted"}

    @api.get("/v1/decisions/{platform}/{event_id}", tags=["v1"])
    async def decision(request: Request, platform: str, event_id: str) -> dict[str, Any]:
        """The latest decision on an event, among those this process has seen since it
        started (bounded); 404 otherwise (read the ``decisions`` topic for the rest)."""
        _may_speak_for(request, platform)
        found = decisions.get(platform, event_id)
        if found is None:
            raise ApiError(404, f"no decision on {platform}/{event_id} seen by this server")
        return found

    @api.post("/v1/review-outcomes", status_code=202, tags=["v1"])
    async def review_outcome(
        request: Request, outcome: Annotated[dict[str, Any], Body()]
    ) -> dict[str, str]:
        """Publish a ReviewOutcome (docs/review-loop.md) to ``review.outcomes``."""
        parsed, raw = _accepted(request, ReviewOutcome.parse, outcome)
        await submitter.review_outcome(parsed, raw)
        return {"decision_id": parsed.decision_id, "status": "accepted"}


async def _multipart_event(request: Request) -> dict[str, Any]:
    event: dict[str, Any] | None = None
    media: list[dict[str, Any]] = []
    async with bounded_form(request, 64, 80, MAX_EVENT_BYTES) as form:
        for name, value in form.multi_items():
            if isinstance(value, str):
                if name == "event":
                    event = _json_object(value.encode())
                continue
            if name not in MEDIA_FIELDS:
                raise ApiError(400, f"file field {name!r}: one of {', '.join(MEDIA_FIELDS)}")
            data = await value.read()
            media.append({
                "media_id": value.filename or f"m{len(media) + 1}",
                "kind": MEDIA_FIELDS[name],
                "data_b64": base64.b64encode(data).decode(),
                **({"mime": value.content_type} if value.content_type else {}),
            })  # fmt: skip
    if event is None:
        raise ApiError(400, "multipart upload without its `event` field (the UploadEvent JSON)")
    given = event.get("media") or []
    if not isinstance(given, list):
        raise ApiError(400, "upload_event.media: a list")
    if media:
        event["media"] = [*given, *media]
    return event


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        found = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"the body is not JSON: {exc}") from None
    if not isinstance(found, dict):
        raise ApiError(400, "the body must be a JSON object (an UploadEvent)")
    return found


class _ForPlatform(Protocol):
    @property
    def platform(self) -> str: ...


_R = TypeVar("_R", bound=_ForPlatform)


def _accepted(
    request: Request, parse: Callable[[bytes], _R], body: dict[str, Any]
) -> tuple[_R, bytes]:
    """The body as the pipeline's contract reads it (400 naming the field otherwise), for
    a platform the caller holds; with its bytes, as published."""
    try:
        refuse_deep(body, "body")  # before serialising it again, which would fail on it
        raw = orjson.dumps(body)
        record = parse(raw)
    except ContractError as exc:
        raise ApiError(400, str(exc)) from None
    _may_speak_for(request, record.platform)
    return record, raw


def _may_speak_for(request: Request, platform: str) -> None:
    """With API keys, a key acts only for the platforms it holds."""
    key: ApiKey | None = getattr(request.state, "api_key", None)
    if key is not None and platform not in key.platforms:
        raise ApiError(403, f"this API key does not hold platform {platform!r}")
