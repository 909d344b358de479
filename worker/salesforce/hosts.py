"""Login hosts, endpoint URLs, and which hosts may receive credentials or be stored.

Salesforce-owned domains come from Salesforce's "Allowlist Salesforce IP Addresses and Domains"
help page and the My Domain formats (`*.my.salesforce.com`, `*.sandbox.my.salesforce.com`,
`*.lightning.force.com`, `*.my.site.com`, Government Cloud `*.salesforce.mil`); keep the list
here and nowhere else. Plain http:// is accepted only for loopback hosts: the emulator and tests.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from worker.domain.models import Provider
from worker.errors import InputError

DEFAULT_LOGIN_URLS = {
    Provider.SALESFORCE: "https://login.salesforce.com",
    Provider.SANDBOX: "https://test.salesforce.com",
}

SALESFORCE_DOMAINS = (
    "salesforce.com",
    "force.com",
    "site.com",
    "cloudforce.com",
    "database.com",
    "visualforce.com",
    "salesforce-sites.com",
    "salesforce-setup.com",
    "salesforce.mil",
    "sfcrmproducts.cn",
    "sfcrmapps.cn",
)

TOKEN_PATH = "/services/oauth2/token"
INTROSPECT_PATH = "/services/oauth2/introspect"
REVOKE_PATH = "/services/oauth2/revoke"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_salesforce_host(host: str) -> bool:
    host = host.lower().rstrip(".")
    return any(host == domain or host.endswith("." + domain) for domain in SALESFORCE_DOMAINS)


def _origin(url: str) -> tuple[str, str, int | None]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InputError(f"{url!r} is not a valid URL") from None
    if parts.username or parts.password:
        raise InputError("URLs must not carry credentials")
    return parts.scheme, (parts.hostname or ""), port


def normalize_login_url(url: str) -> str:
    """Validate an integration's login URL and return its origin (no path, no slash).

    https:// on a Salesforce-owned domain, or http(s):// on a loopback host.
    """
    scheme, host, port = _origin(url.strip())
    if not host:
        raise InputError(f"login URL {url!r}: expected https://HOST")
    if (scheme == "https" and is_salesforce_host(host)) or (
        scheme in ("http", "https") and is_loopback(host)
    ):
        pass
    elif scheme == "http":
        raise InputError(
            f"login URL {url!r}: plain http:// is only allowed for loopback hosts; use https://"
        )
    else:
        raise InputError(
            f"login URL {url!r}: expected https:// on a Salesforce domain "
            "(login.salesforce.com, test.salesforce.com or a My Domain like "
            "https://acme.my.salesforce.com)"
        )
    shown_host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown_host}" + (f":{port}" if port else "")


def instance_url_problem(instance_url: str, login_url: str) -> str | None:
    """Why an instance_url from Salesforce must not be stored, or None when it is fine."""
    try:
        scheme, host, _ = _origin(instance_url)
    except InputError as error:
        return str(error)
    if not host:
        return "instance_url has no host"
    if scheme == "https" and is_salesforce_host(host):
        return None
    _, login_host, _ = _origin(login_url)
    if scheme in ("http", "https") and is_loopback(host) and is_loopback(login_host):
        return None
    return f"instance_url host {host!r} is not a Salesforce domain"


def endpoint(login_url: str, path: str) -> str:
    return login_url.rstrip("/") + path
