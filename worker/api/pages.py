"""The few HTML pages a customer's browser sees in the connect flow: the My Domain form, the
success page and the error page. Everything shown is escaped; no token, code or state is
ever on a page; no script runs; the pages send no Referer (the callback URL carried a code).

Stable hooks for browser tests: `data-testid="connect-result"` with `data-status`
(`connected` or `error`) and `data-error` (the error code), `data-testid="domain-form"` whose
field is named `my_domain`, and `data-testid="domain-error"` for a refused domain.
"""

from __future__ import annotations

from html import escape

from starlette.responses import HTMLResponse, RedirectResponse, Response

from worker.service.connect import Landing

HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # No form-action: browsers apply it to the redirect after the My Domain form, whose
    # target (the customer's Salesforce host) is not known in advance.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"
    ),
}
_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:34rem;margin:4rem auto;padding:0 1rem;"
    "color:#1b1b1b}code{background:#f2f2f2;padding:0 .25rem}.error{color:#a4262c}"
)
STATUS_OF = {"unknown_session": 404, "session_expired": 410, "session_used": 409}


def render(landing: Landing) -> Response:
    if landing.location is not None:
        return RedirectResponse(landing.location, status_code=302, headers=HEADERS)
    if landing.kind == "ask_domain":
        return domain_form(landing)
    if landing.kind == "connected":
        return _page(
            "Connected",
            '<div data-testid="connect-result" data-status="connected">'
            "<h1>Connected to Salesforce</h1>"
            f"<p>Connection <code>{escape(landing.connection_id or '')}</code> is ready. "
            "You can close this window.</p></div>",
        )
    code = landing.error or "error"
    return _page(
        "Could not connect",
        f'<div data-testid="connect-result" data-status="error" data-error="{escape(code)}">'
        '<h1 class="error">Could not connect to Salesforce</h1>'
        f"<p>{escape(_sentence(landing.error_description or 'The connection was not made.'))}</p>"
        f"<p>Error: <code>{escape(code)}</code></p></div>",
        STATUS_OF.get(code, 400),
    )


def domain_form(landing: Landing) -> Response:
    problem = ""
    if landing.error == "invalid_domain":
        problem = (
            f'<p class="error" role="alert" data-testid="domain-error">'
            f"{escape(landing.error_description or '')}</p>"
        )
    body = (
        "<h1>Log in to Salesforce</h1>"
        "<p>Enter your company's My Domain, for example <code>acme.my.salesforce.com</code> "
        "(sandboxes: <code>acme--uat.sandbox.my.salesforce.com</code>).</p>"
        f"{problem}"
        '<form method="post" action="" data-testid="domain-form">'
        '<label for="my_domain">My Domain</label> '
        '<input id="my_domain" name="my_domain" autocomplete="url" required '
        'spellcheck="false" autocapitalize="none" maxlength="253">'
        ' <button type="submit">Continue</button></form>'
    )
    return _page("Your My Domain", body, 422 if problem else 200)


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    html = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main></body></html>"
    )
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def _sentence(text: str) -> str:
    """Salesforce's and our descriptions read as a sentence on a page a customer sees."""
    text = text.strip()
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."
