"""`/services/oauth2/authorize`: the login and consent page, and what its buttons do.

Plain HTML forms, no JavaScript. Stable hooks for browser tests: the form `#consent`
(POSTs back to the same path, the request's parameters in hidden fields), the username
field `username` (prefilled with the org's default user; a `datalist` offers the others),
and the submit buttons named `allow` and `deny`. Salesforce's own error page (unknown
client, unregistered redirect_uri) carries `#oauth-error` with `data-error="CODE"`.
"""

from __future__ import annotations

from html import escape
from urllib.parse import parse_qsl

from worker.dev.emulator.http import Request, Response
from worker.dev.emulator.records import OAuthError
from worker.dev.emulator.state import State
from worker.dev.emulator.webflow import (
    AUTHORIZE_FIELDS,
    AuthorizeRequest,
    PageError,
    issue_code,
    parse_authorize,
    redirect_location,
)

HTML = "text/html;charset=UTF-8"
AUTHORIZE_PATH = "/services/oauth2/authorize"
# Salesforce's login page wording for an unknown user.
LOGIN_ERROR = (
    "Please check your username and password. If you still can't log in, "
    "contact your Salesforce administrator."
)
_NO_STORE = [("Cache-Control", "no-cache,must-revalidate,max-age=0,no-store,private")]


class ConsentPage:
    def __init__(self, state: State) -> None:
        self.state = state

    def show(self, request: Request) -> Response:
        """GET: the page, Salesforce's error page, or a redirect carrying the error."""
        params = dict(parse_qsl(request.query, keep_blank_values=True))
        self.state.stats.authorize_calls += 1
        return self._handle(params, decision=None)

    def decide(self, request: Request) -> Response:
        """POST from the page: `allow` or `deny` (the button's name), plus `username`."""
        params = dict(parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True))
        if "allow" in params:
            decision = "allow"
        elif "deny" in params:
            decision = "deny"
        else:
            decision = None
        return self._handle(params, decision)

    def _handle(self, params: dict[str, str], decision: str | None) -> Response:
        entry = {name: params[name] for name in AUTHORIZE_FIELDS if name in params}
        entry["outcome"] = "shown" if decision is None else decision
        self.state.authorize_log.append(entry)
        try:
            parsed = parse_authorize(self.state, params)
        except PageError as exc:
            entry["outcome"] = f"error:{exc.error}"
            return _error_page(exc)
        except OAuthError as exc:
            entry["outcome"] = f"error:{exc.error}"
            return _redirect(
                params["redirect_uri"],
                {
                    "error": exc.error,
                    "error_description": exc.description,
                    "state": params.get("state"),
                },
            )
        if decision == "deny":
            self.state.stats.consents_denied += 1
            return _redirect(
                parsed.redirect_uri,
                {
                    "error": "access_denied",
                    "error_description": "end-user denied authorization",
                    "state": parsed.state,
                },
            )
        username = params.get("username", "").strip()
        if decision == "allow":
            user = self.state.users.get(username)
            if user is not None:
                entry["username"] = username
                self.state.stats.consents_allowed += 1
                code = issue_code(self.state, parsed, user)
                return _redirect(parsed.redirect_uri, {"code": code, "state": parsed.state})
            entry["outcome"] = "login_failed"
            return self._page(params, parsed, username, LOGIN_ERROR)
        return self._page(params, parsed, self.state.default_user.username, None)

    def _page(
        self, params: dict[str, str], parsed: AuthorizeRequest, username: str, error: str | None
    ) -> Response:
        hidden = "".join(
            f'<input type="hidden" name="{name}" value="{escape(params[name])}">'
            for name in AUTHORIZE_FIELDS
            if name in params
        )
        options = "".join(f'<option value="{escape(name)}">' for name in self.state.users)
        scopes = "".join(f"<li>{escape(scope)}</li>" for scope in parsed.scope.split())
        alert = f'<p id="login-error" role="alert">{escape(error)}</p>' if error else ""
        app = escape(parsed.client.client_id)
        body = (
            '<!DOCTYPE html><html><head><meta charset="utf-8"><title>Login | Salesforce'
            "</title></head><body><main>"
            f"<h1>Log in to Salesforce (emulated org {escape(self.state.org_id)})</h1>{alert}"
            f'<form id="consent" method="post" action="{AUTHORIZE_PATH}">{hidden}'
            '<label for="username">Username</label> '
            f'<input id="username" name="username" list="users" value="{escape(username)}" '
            'autocomplete="username" required>'
            f'<datalist id="users">{options}</datalist>'
            f'<h2>Allow access?</h2><p><b id="app-name">{app}</b> is asking to:</p>'
            f'<ul id="scopes">{scopes}</ul>'
            '<button type="submit" id="allow" name="allow" value="1">Allow</button> '
            '<button type="submit" id="deny" name="deny" value="1" formnovalidate>Deny'
            "</button></form></main></body></html>"
        )
        return Response(200, body.encode("utf-8"), HTML, list(_NO_STORE))


def _redirect(redirect_uri: str, fields: dict[str, str | None]) -> Response:
    location = redirect_location(redirect_uri, fields)
    return Response(302, b"", None, [("Location", location), *_NO_STORE])


def _error_page(exc: PageError) -> Response:
    # Salesforce's page shows the pair as a query-string-like line. Status assumed 400.
    body = (
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>Error | Salesforce</title>'
        f'</head><body><main id="oauth-error" data-error="{escape(exc.error)}">'
        "<h1>OAuth Error</h1><p>We can't authorize you because of an OAuth error. "
        "For more information, contact your Salesforce administrator.</p>"
        f"<p><code>error={escape(exc.error)}&amp;error_description="
        f"{escape(exc.description)}</code></p></main></body></html>"
    )
    return Response(400, body.encode("utf-8"), HTML, list(_NO_STORE))
