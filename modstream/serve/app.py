"""The HTTP application: HMA's endpoints (``serve.hma``), health, OpenAPI at
``/openapi.json`` with its page at ``/docs``.

FastAPI, because the API's contract is generated from the code that serves it: the request
models that validate a call are the OpenAPI document, and a call that does not fit them is a
422 naming the field (HMA's own flask-openapi3 answers the same way). Uvicorn runs it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from modstream.serve.access import AccessError, Gate, RateLimit
from modstream.serve.backend import LOADING_RETRY_AFTER_S, ApiError, Backend, needs_index
from modstream.serve.exchanges import ExchangeAdmin, add_exchange_routes
from modstream.serve.hma import add_hma_routes
from modstream.serve.limits import BodyLimit, declared_too_large
from modstream.serve.sites import SitePolicy
from modstream.serve.v1 import RecentDecisions, Submitter, add_v1_routes

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Statuses a client should come back after: each answer carries ``Retry-After``.
RETRY_STATUSES = frozenset({429, 503})
REPEATED_SLASHES = re.compile(r"//+")


class MergeSlashes:
    """``//c/bank/X`` is ``/c/bank/X``, as HMA (werkzeug) answers it: Coop's default base URL
    ends in ``/`` and it takes a 404 from ``getBank`` for "deleted". Outermost, so the
    site, size, key and role checks and the router all see the one same path."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and "//" in scope["path"]:
            path = REPEATED_SLASHES.sub("/", scope["path"])
            raw = REPEATED_SLASHES.sub("/", (scope.get("raw_path") or b"").decode("latin-1"))
            scope = dict(scope, path=path, raw_path=raw.encode("latin-1"))
        await self.app(scope, receive, send)


def retry_headers(status: int, retry_after: float | None) -> dict[str, str]:
    """``Retry-After`` for a refusal that passes (429, 503), at least one second."""
    if retry_after or status in RETRY_STATUSES:
        return {"Retry-After": str(max(1, int(retry_after or 1)))}
    return {}


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry = registry or CollectorRegistry()
        self.requests = Counter(
            "modstream_http_requests_total",
            "HTTP API requests by route (its template) and status",
            ["route", "status"],
            registry=registry,
        )
        self.seconds = Histogram(
            "modstream_http_request_seconds",
            "HTTP API request time by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )


def build_api(
    backend: Backend,
    gate: Gate | None = None,
    metrics: HttpMetrics | None = None,
    v1: tuple[Submitter, RecentDecisions] | None = None,
    exchanges: ExchangeAdmin | None = None,
    sites: SitePolicy | None = None,
    checks: Mapping[str, Callable[[], bool]] | None = None,
) -> FastAPI:
    """``gate`` None: no keys, a generous rate limit per client address (tests, loopback).
    ``sites`` None: only loopback names; ``checks``: what ``/ready`` reports besides the
    bank, each by name."""
    gate = gate or Gate(None, RateLimit(rate=1000.0, burst=2000.0))
    sites = sites or SitePolicy.for_server("127.0.0.1")
    checks = dict(checks or {})
    metrics = metrics or HttpMetrics()
    Gauge(
        "modstream_http_video_compares_running",
        "vPDQ comparisons of /m/compare running now (in threads, off the event loop)",
        registry=metrics.registry,
    ).set_function(lambda: backend.comparing)
    api = FastAPI(
        title="modstream",
        summary="Hash, match and curate banks; HMA-compatible",
        version="1",
        docs_url="/docs",
        redoc_url=None,
    )

    @api.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        extra = retry_headers(exc.status, exc.retry_after)
        return JSONResponse({"message": exc.message}, status_code=exc.status, headers=extra)

    @api.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        """A JSON array of what failed, each with its field path (``loc``), as HMA answers."""
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return JSONResponse(errors, status_code=422)

    @api.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        extra = retry_headers(exc.status_code, None) | dict(exc.headers or {})
        return JSONResponse({"message": str(exc.detail)}, exc.status_code, headers=extra)

    api.add_middleware(BodyLimit)  # inside the guard: its refusals are counted too

    @api.middleware("http")
    async def guard(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """Site, size, key, role and rate before anything else; every answer counted."""
        started = time.perf_counter()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            refused = sites.refusal(request.method, headers)
            if refused is not None:
                raise AccessError(*refused)
            limit = declared_too_large(
                request.method, request.url.path, headers.get("content-length")
            )
            if limit is not None:
                raise AccessError(413, f"request body larger than {limit} bytes")
            client = request.client.host if request.client else "unknown"
            key = gate.check(request.url.path, headers, client)
            request.state.api_key = key
            request.state.caller = f"key:{key.name}" if key else f"ip:{client}"
            if needs_index(request.url.path) and not backend.ready():
                raise AccessError(
                    503, "index not yet ready: the bank is loading", LOADING_RETRY_AFTER_S
                )
            response = await call_next(request)
        except AccessError as exc:
            extra = retry_headers(exc.status, exc.retry_after)
            if exc.status == 413:  # the body is left unread: the connection cannot go on
                extra["Connection"] = "close"
            response = JSONResponse({"message": exc.message}, exc.status, headers=extra)
        route = _template(request)
        metrics.requests.labels(route, str(response.status_code)).inc()
        metrics.seconds.labels(route).observe(time.perf_counter() - started)
        return response

    @api.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @api.get("/live", tags=["health"])
    async def live() -> dict[str, bool]:
        return {"live": True}

    @api.get("/ready", tags=["health"])
    async def ready() -> JSONResponse:
        """Ready when the bank is loaded and every other check (the decisions tail) holds;
        each named, so a 503 says which."""
        found = {"bank": backend.ready()} | {name: check() for name, check in checks.items()}
        is_ready = all(found.values())
        extra = {} if is_ready else {"Retry-After": str(LOADING_RETRY_AFTER_S)}
        return JSONResponse(
            {"ready": is_ready, **found}, status_code=200 if is_ready else 503, headers=extra
        )

    add_hma_routes(api, backend)
    if exchanges is not None:
        add_exchange_routes(api, exchanges)
    if v1 is not None:
        add_v1_routes(api, *v1)
    api.add_middleware(MergeSlashes)  # the last added is the outermost: before the guard
    return api


def _template(request: Request) -> str:
    """The route template a request is for (refused ones too): bounded metric labels."""
    for route in request.app.router.routes:
        matched, _ = route.matches(request.scope)
        if matched == Match.FULL:
            return str(getattr(route, "path", "unmatched"))
    return "unmatched"
