"""The HTTP application: HMA's endpoints (``serve.hma``), health, OpenAPI at
``/openapi.json`` with its page at ``/docs``.

FastAPI, because the API's contract is generated from the code that serves it: the request
models that validate a call are the OpenAPI document, and a call that does not fit them is a
422 naming the field (HMA's own flask-openapi3 answers the same way). Uvicorn runs it.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from modstream.serve.backend import ApiError, Backend
from modstream.serve.hma import hma_router


def build_api(backend: Backend) -> FastAPI:
    api = FastAPI(
        title="modstream",
        summary="Hash, match and curate banks; HMA-compatible",
        version="1",
        docs_url="/docs",
        redoc_url=None,
    )

    @api.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"message": exc.message}, status_code=exc.status)

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
        return JSONResponse({"message": str(exc.detail)}, status_code=exc.status_code)

    @api.get("/live", tags=["health"])
    async def live() -> dict[str, bool]:
        return {"live": True}

    @api.get("/ready", tags=["health"])
    async def ready() -> JSONResponse:
        is_ready = backend.ready()
        return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)

    api.include_router(hma_router(backend))
    return api
