"""The `api` process: uvicorn (uvloop, httptools; each response in one write: see
worker.api.onewrite) serving `make_app` with every route module.

    python -m worker.api [--host H] [--port P]      (`tokenworker api` runs the same)

No access log: the request line is all it would add, and nothing of a request's headers may
reach a log (an `Authorization: Bearer` key). uvicorn's own messages go through the project's
structlog pipeline (secrets redacted). On SIGTERM open event streams are asked to end first,
so a shutdown never waits on a client that keeps listening; whatever still runs after
GRACEFUL_SHUTDOWN seconds is cancelled.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from types import ModuleType

import uvicorn
from starlette.applications import Starlette

from config.settings import Settings
from worker.api import connect, connections, console, docs, events, proxy
from worker.api.app import make_app
from worker.api.onewrite import OneWriteHttpTools

# Route modules in mount order.
MODULES: tuple[ModuleType, ...] = (connections, connect, proxy, events, docs, console)
GRACEFUL_SHUTDOWN = 10


def build_app(settings: Settings, modules: Sequence[ModuleType] = MODULES) -> Starlette:
    return make_app(settings, modules)


class _Server(uvicorn.Server):
    """uvicorn's server, telling the app it is stopping before it waits for open requests."""

    def __init__(self, config: uvicorn.Config, stopping: Callable[[], None]) -> None:
        super().__init__(config)
        self._stopping = stopping

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._stopping()
        await super().shutdown(sockets)


def server(settings: Settings, host: str | None = None, port: int | None = None) -> uvicorn.Server:
    app = build_app(settings)
    config = uvicorn.Config(
        app,
        host=host or settings.api_host,
        port=settings.api_port if port is None else port,
        loop="uvloop",
        http=OneWriteHttpTools,
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
    )
    return _Server(config, lambda: events.stop_streams(app))


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    """Run the api until SIGINT/SIGTERM (blocking)."""
    server(settings, host, port).run()
