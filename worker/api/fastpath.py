"""A fast path for the hottest routes, in front of Starlette's router.

A credentials read is a Redis read and a decrypt; Starlette's routing (a regex per route, in
mount order, for ~40 routes), its exception middleware and its per-request wrappers cost about
as much again. A `FastRoute` names a method and a path `prefix{id}suffix` (the id without `/`)
and the same endpoint the router mounts: a request that matches is served by that endpoint
directly, its errors answered by the app's own exception handlers, so status codes, headers
and error shapes are the router's. Everything else (HEAD, other methods, other paths, a
`root_path`) goes down the Starlette stack unchanged. Installed inside Starlette's
ServerErrorMiddleware: an unexpected exception still becomes its 500.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class FastRoute:
    method: str
    prefix: str  # up to the path parameter, e.g. "/connections/"
    suffix: str  # after it, e.g. "/credentials"
    param: str  # the path parameter's name in the router's route ("id")
    endpoint: Endpoint

    def match(self, path: str) -> str | None:
        """The path parameter when `path` is this route's, else None."""
        if not (path.startswith(self.prefix) and path.endswith(self.suffix)):
            return None
        value = path[len(self.prefix) : len(path) - len(self.suffix)]
        if not value or "/" in value:
            return None
        return value


class FastPath:
    """ASGI middleware serving `routes` directly (see the module docstring)."""

    def __init__(self, app: ASGIApp, routes: Sequence[FastRoute]) -> None:
        self.app = app
        self.routes = tuple(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            method, path = scope["method"], scope["path"]
            for route in self.routes:
                value = route.match(path) if method == route.method else None
                if value is not None:
                    scope["path_params"] = {route.param: value}
                    await self._serve(route, scope, receive, send)
                    return
        await self.app(scope, receive, send)

    @staticmethod
    async def _serve(route: FastRoute, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            response = await route.endpoint(request)
        except Exception as exc:
            handlers = scope["app"].exception_handlers
            handler = next((handlers[c] for c in type(exc).__mro__ if c in handlers), None)
            if handler is None:
                raise
            response = await handler(request, exc)
        await response(scope, receive, send)
