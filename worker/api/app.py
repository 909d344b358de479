"""The ASGI application: one Runtime per process, the route modules mounted, one error shape.

Starlette rather than FastAPI: the credentials read must stay cheap (a Redis read and a decrypt,
>= 3,000/s on two cores next to the worker), our errors have their own contract shape (FastAPI's
validation errors would need overriding everywhere), and the OpenAPI document is assembled from
what each route module declares, so no model layer (pydantic) is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Callable, Sequence
from types import ModuleType
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from config.settings import Settings
from worker.api.errors import ApiError
from worker.api.fastpath import FastPath
from worker.engine.runtime import Runtime
from worker.errors import (
    InputError,
    NotFoundError,
    ReauthRequired,
    SalesforceUnavailable,
    StoreError,
    TokenworkerError,
)
from worker.service import hotreads
from worker.store.apikeys import API_CACHE_TTL, ApiKeys
from worker.store.tracking import Tracking

log = structlog.get_logger("tokenworker.api")
RuntimeFactory = Callable[[Settings], Runtime]


def make_app(
    settings: Settings,
    modules: Sequence[ModuleType],
    open_runtime: RuntimeFactory = Runtime.open,
) -> Starlette:
    """The app serving `modules` (each exposes `routes()`, and may expose `fast_routes()`: see
    worker.api.fastpath), with a Runtime opened at startup."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        runtime = open_runtime(settings)
        app.state.runtime = runtime
        app.state.settings = settings
        app.state.api_keys = ApiKeys(runtime.redis, settings.key_prefix, API_CACHE_TTL)
        hot = _hot_reads(runtime, settings)
        tasks = []
        if hot is not None and settings.api_credentials_cache_tracking:
            listener = Tracking(settings.store_endpoint, hot.key_prefix, hot)
            tasks.append(asyncio.ensure_future(listener.run()))
            tasks.append(asyncio.ensure_future(hotreads.renew(hot, runtime.store.versions)))
        try:
            yield
        finally:
            if hot is not None:
                log.info("api.credentials_cache", **hot.stats())
            for task in tasks:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            for module in modules:
                shutdown = getattr(module, "shutdown", None)
                if shutdown is not None:
                    await shutdown(app)
            await runtime.close()

    routes: list[BaseRoute] = [route for module in modules for route in module.routes()]
    fast = [route for module in modules for route in getattr(module, "fast_routes", list)()]
    return Starlette(
        routes=routes,
        middleware=[Middleware(FastPath, routes=fast)] if fast else None,
        lifespan=lifespan,
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            TokenworkerError: _product_error,
        },
    )


def _hot_reads(runtime: Runtime, settings: Settings) -> hotreads.HotReads[Any] | None:
    """This process's credentials cache (worker.service.hotreads), unless set to 0."""
    if settings.api_credentials_cache_age <= 0:
        return None
    hot: hotreads.HotReads[Any] = hotreads.HotReads(
        settings.api_credentials_cache_age,
        settings.api_credentials_cache_entries,
        key_prefix=runtime.store.keys.conn(""),
    )
    hotreads.attach(runtime, hot)
    return hot


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


async def _api_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request")
    return error_response(ApiError(exc.status_code, code, str(exc.detail)))


async def _product_error(_: Request, exc: Exception) -> Response:
    """The one error tree mapped to statuses; the message is the error's own (never a secret)."""
    if isinstance(exc, InputError):
        return error_response(ApiError(400, "invalid_request", str(exc)))
    if isinstance(exc, NotFoundError):
        return error_response(ApiError(404, "not_found", str(exc)))
    if isinstance(exc, ReauthRequired):
        return error_response(ApiError(409, "reauth_required", str(exc), last_error=exc.last_error))
    if isinstance(exc, SalesforceUnavailable):
        return error_response(_unavailable(exc))
    if isinstance(exc, StoreError):
        log.error("api.store_error", problem=str(exc))
        return error_response(ApiError(503, "store_unavailable", "the store cannot be read"))
    log.error("api.error", error_type=type(exc).__name__, problem=str(exc))
    return error_response(ApiError(500, "internal_error", type(exc).__name__))


def _unavailable(exc: SalesforceUnavailable) -> ApiError:
    """503 with Retry-After (whole seconds, at least 1) and Salesforce's own words if any."""
    seconds = max(1, math.ceil(exc.retry_after))
    cause = exc.error.as_fields() if exc.error is not None else None
    return ApiError(
        503,
        "salesforce_unavailable",
        f"{exc}; retry in {seconds}s",
        headers={"Retry-After": str(seconds)},
        retry_after=seconds,
        last_error=cause,
    )


def json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(data, status_code=status, headers=headers)
