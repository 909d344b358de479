"""Who is at the console, and the rules every console response follows.

- A session cookie (HttpOnly, SameSite=Strict, Path=/, Secure and `__Host-` named when
  TOKENWORKER_PUBLIC_URL is https) names a server-side session (worker.store.console_sessions).
- Signed out, every console URL answers 303 to the sign-in page.
- Every state-changing request carries the session's CSRF token (form field `csrf_token` or
  header `X-CSRF-Token`), compared in constant time; without it 403. Actions need an admin key.
- Every response carries a strict Content-Security-Policy (nothing inline, nothing from
  elsewhere, no framing), nosniff, no Referer, no caching.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs, quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from worker.api.console import html
from worker.store.apikeys import Scope
from worker.store.console_sessions import ConsoleSession, ConsoleSessions

MAX_FORM = 16 * 1024
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; object-src 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
Handler = Callable[[Request, ConsoleSession], Awaitable[Response]]


def secure(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def https(request: Request) -> bool:
    return str(request.app.state.settings.public_url).startswith("https://")


def cookie_name(request: Request) -> str:
    return "__Host-tw_console" if https(request) else "tw_console"


def sessions(request: Request) -> ConsoleSessions:
    store: ConsoleSessions | None = getattr(request.app.state, "console_sessions", None)
    if store is None:
        rt = request.app.state.runtime
        store = ConsoleSessions(rt.redis, request.app.state.settings.key_prefix)
        request.app.state.console_sessions = store
    return store


async def current(request: Request) -> ConsoleSession | None:
    return await sessions(request).get(request.cookies.get(cookie_name(request)))


async def form(request: Request) -> dict[str, str]:
    """An urlencoded form body (the only kind the console posts), first value of each field."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return {}
    body = await request.body()
    if len(body) > MAX_FORM:
        return {}
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in parsed.items()}


def safe_next(path: str | None) -> str:
    """Where to go after signing in: a console path only (never another site)."""
    if path and path.startswith("/console") and not path.startswith("//") and "\\" not in path:
        return path
    return "/console"


def to_sign_in(request: Request) -> Response:
    target = request.url.path
    if request.method == "GET" and request.url.query:
        target += "?" + request.url.query
    location = "/console/sign-in"
    if request.method == "GET" and target not in ("/console", "/console/"):
        location += "?next=" + quote(safe_next(target), safe="")
    return secure(RedirectResponse(location, status_code=303))


def wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def refuse(request: Request, status: int, code: str, message: str) -> Response:
    if wants_json(request):
        return secure(JSONResponse({"error": code, "message": message}, status_code=status))
    body = f'<h1>{html.esc(message)}</h1><p><a href="/console">Back to the console</a></p>'
    return secure(HTMLResponse(html.layout(message, body, None), status_code=status))


def page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A GET: signed in, or off to sign in."""

    async def endpoint(request: Request) -> Response:
        session = await current(request)
        if session is None:
            return to_sign_in(request)
        return secure(await handler(request, session))

    return endpoint


def change(
    handler: Handler, needs: Scope = Scope.ADMIN
) -> Callable[[Request], Awaitable[Response]]:
    """A state change: signed in, the CSRF token, and a key of scope `needs`."""

    async def endpoint(request: Request) -> Response:
        session = await current(request)
        if session is None:
            return to_sign_in(request)
        offered = request.headers.get("x-csrf-token")
        if offered is None:
            offered = (await form(request)).get("csrf_token")
        if not session.csrf_ok(offered):
            return refuse(request, 403, "csrf", "This request lacks the console's CSRF token.")
        if not session.scope.allows(needs):
            return refuse(
                request, 403, "forbidden", f"This needs an API key with scope {needs.value!r}."
            )
        return secure(await handler(request, session))

    return endpoint
